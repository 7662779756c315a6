//! Request ids: every request runs with an id (the client's own `x-request-id` when it sent a
//! sane one, else a new uuid), answered in `x-request-id` and written in every log line about
//! it, so that a client's report ("request 6f1c...") leads to the log lines, error chains
//! included, that the client was not shown.

use std::future::Future;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request being handled (`-` outside one).
pub fn current() -> String {
    CURRENT.try_with(String::clone).unwrap_or_else(|_| "-".into())
}

/// The id a request carries (`x-request-id`, `request-id`: printable, at most 200 bytes), or a
/// new one.
pub fn of_request(headers: &HeaderMap) -> String {
    ["x-request-id", "request-id"]
        .iter()
        .find_map(|h| headers.get(*h))
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Runs `future` as the handling of request `id`.
pub async fn scope<F: Future>(id: String, future: F) -> F::Output {
    CURRENT.scope(id, future).await
}

/// Middleware (`actix_web::middleware::from_fn`): runs each request in its id's scope, answers
/// the id in `x-request-id` and logs the request (target `access`).
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let id = of_request(req.headers());
    let (method, path) = (req.method().clone(), req.path().to_owned());
    let mut response = scope(id.clone(), next.call(req)).await?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HeaderName::from_static("x-request-id"), value);
    }
    tracing::info!(target: "access", req_id = %id, %method, %path, status = response.status().as_u16(),
                   ms = start.elapsed().as_secs_f64() * 1000.0, "request");
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sane_client_id_is_kept_and_anything_else_replaced() {
        let mut headers = HeaderMap::new();
        assert_eq!(of_request(&headers).len(), 36);
        headers.insert(HeaderName::from_static("x-request-id"), HeaderValue::from_static("abc-1"));
        assert_eq!(of_request(&headers), "abc-1");
        headers.insert(
            HeaderName::from_static("x-request-id"),
            HeaderValue::from_str(&"x".repeat(201)).unwrap(),
        );
        assert_eq!(of_request(&headers).len(), 36);
    }

    #[tokio::test]
    async fn the_id_is_current_inside_its_scope_only() {
        assert_eq!(current(), "-");
        assert_eq!(scope("r1".into(), async { current() }).await, "r1");
        assert_eq!(current(), "-");
    }
}
