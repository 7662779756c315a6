//! Per-request work around every handler: `Accept-Version` negotiation, the standard response
//! headers (`Server`, `x-request-id`, `x-response-time`, `x-server-name`) and the access log.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, ResponseError};

use super::error::ApiError;
use super::{ApiVersion, AppState};

/// API versions this server speaks (sdc-imgapi advertises the same two).
const VERSIONS: [(u64, semver::Version); 2] =
    [(2, semver::Version::new(2, 0, 0)), (1, semver::Version::new(1, 0, 0))];

/// The highest supported version matching an `Accept-Version` range. No header means `~1`,
/// as in the reference server.
fn negotiate(accept_version: Option<&str>) -> Option<ApiVersion> {
    let Some(range) = accept_version.map(str::trim) else { return Some(ApiVersion(1)) };
    let req = semver::VersionReq::parse(range).ok()?;
    VERSIONS.iter().find(|(_, v)| req.matches(v)).map(|(major, _)| ApiVersion(*major))
}

pub async fn standard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let request_id = service_kit::request_id::of_request(req.headers());
    let (server_name, host_name) = req
        .app_data::<web::Data<AppState>>()
        .map(|s| (s.server_name.clone(), s.host_name.clone()))
        .unwrap_or_default();
    let method = req.method().clone();
    let path = req.path().to_owned();
    let accept_version =
        req.headers().get("accept-version").map(|v| v.to_str().unwrap_or("\u{0}").to_owned());

    let mut response = match negotiate(accept_version.as_deref()) {
        Some(version) => {
            req.extensions_mut().insert(version);
            service_kit::request_id::scope(request_id.clone(), next.call(req)).await?.map_into_left_body()
        }
        None => {
            let error = ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidVersion",
                format!("{} is not supported by {method} {path}", accept_version.unwrap_or_default()),
            );
            req.into_response(error.error_response()).map_into_right_body()
        }
    };

    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    set("server", &server_name);
    set("x-request-id", &request_id);
    set("x-server-name", &host_name);
    let elapsed = start.elapsed();
    set("x-response-time", &elapsed.as_millis().to_string());
    let status = response.status().as_u16();
    tracing::info!(
        target: "imgapi::access",
        req_id = %request_id,
        %method,
        %path,
        status,
        ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_version_ranges() {
        assert_eq!(negotiate(None), Some(ApiVersion(1)));
        assert_eq!(negotiate(Some("~2")), Some(ApiVersion(2)));
        assert_eq!(negotiate(Some("*")), Some(ApiVersion(2)));
        assert_eq!(negotiate(Some("~1")), Some(ApiVersion(1)));
        assert_eq!(negotiate(Some(">=1")), Some(ApiVersion(2)));
        assert_eq!(negotiate(Some("2.0.0")), Some(ApiVersion(2)));
        assert_eq!(negotiate(Some("~99")), None);
        assert_eq!(negotiate(Some("garbage!")), None);
    }
}
