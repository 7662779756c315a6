//! The instance routes: the fleet's list, create (placement, dry runs), get, actions and
//! delete, and everything under `/instances/:id/` (console, guest, snapshots, publish)
//! proxied to the owning host with the host's credential.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::error::ApiError;
use super::{json_body, require_user, CloudState};
use crate::error_code::ErrorCode;
use crate::instances::{CreateOutcome, CreateRequest, InstanceError, Phase};
use crate::remote::RemoteError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/instances", web::get().to(list))
        .route("/instances", web::post().to(create))
        .route("/instances/{id}", web::get().to(get))
        .route("/instances/{id}", web::post().to(action))
        .route("/instances/{id}", web::delete().to(delete))
        .route("/instances/{id}/{rest:.*}", web::to(proxy));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only the instances of this host (its id).
    #[serde(default)]
    host: Option<Uuid>,
}

async fn list(req: HttpRequest, state: web::Data<CloudState>) -> Result<HttpResponse, ApiError> {
    let query: ListQuery = service_kit::api_error::query(&req)?;
    Ok(HttpResponse::Ok().json(state.instances.list(query.host).await?))
}

async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<CloudState>,
) -> Result<HttpResponse, ApiError> {
    require_user(&req, &state)?;
    let body: Value = json_body(&req, payload, "instance request").await?;
    let request = CreateRequest::parse(body)?;
    Ok(match state.instances.create(request).await? {
        CreateOutcome::DryRun(decision) => HttpResponse::Ok().json(json!({
            "dry_run": true,
            "host": decision.chosen,
            "placement": decision,
        })),
        CreateOutcome::Placed(instance) => HttpResponse::Accepted()
            .insert_header((header::LOCATION, format!("/api/v1/instances/{}", instance.uuid)))
            .json(instance),
    })
}

async fn get(path: web::Path<String>, state: web::Data<CloudState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.instances.get(&path).await?))
}

/// An answer of the agent, passed on as it is (its codes mean what they mean on the agent).
fn passed_on(status: reqwest::StatusCode, body: &Value) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(status.as_u16())
        .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY);
    if body.is_null() {
        HttpResponse::build(status).finish()
    } else {
        HttpResponse::build(status).json(body)
    }
}

fn unreachable(e: RemoteError) -> ApiError {
    InstanceError::Remote(e).into()
}

/// `?action=start|stop|reboot`, on the owning host.
async fn action(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<CloudState>,
) -> Result<HttpResponse, ApiError> {
    require_user(&req, &state)?;
    let (instance, host) = state.instances.owner(&path).await?;
    if instance.phase != Phase::Created {
        return Err(provisioning(&instance.uuid, instance.phase));
    }
    let query = req.query_string();
    let target =
        format!("/api/v1/instances/{}{}{query}", instance.uuid, if query.is_empty() { "" } else { "?" });
    let answer =
        state.instances.remote().call(&host, Method::POST, &target, None).await.map_err(unreachable)?;
    if let (true, Some(now)) = (answer.status.is_success(), answer.body["state"].as_str()) {
        state.instances.note_state(&instance.uuid, now).await?;
    }
    Ok(passed_on(answer.status, &answer.body))
}

fn provisioning(uuid: &Uuid, phase: Phase) -> ApiError {
    let message = match phase {
        Phase::Failed => format!("instance {uuid} failed to be created: only DELETE applies"),
        _ => format!("instance {uuid} is still being created"),
    };
    ApiError::new(ErrorCode::InstanceProvisioning, message)
}

/// Destroys the instance on its host, then forgets it. A failed create is only forgotten.
async fn delete(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<CloudState>,
) -> Result<HttpResponse, ApiError> {
    require_user(&req, &state)?;
    let instance = state.instances.get(&path).await?;
    match instance.phase {
        Phase::Failed => {
            state.instances.forget(&instance.uuid).await?;
            return Ok(HttpResponse::NoContent().finish());
        }
        Phase::Provisioning => return Err(provisioning(&instance.uuid, instance.phase)),
        Phase::Created => {}
    }
    let (instance, host) = state.instances.owner(&path).await?;
    let target = format!("/api/v1/instances/{}", instance.uuid);
    let answer =
        state.instances.remote().call(&host, Method::DELETE, &target, None).await.map_err(unreachable)?;
    let gone = answer.status.is_success() || answer.code() == Some("InstanceNotFound");
    if !gone {
        return Ok(passed_on(answer.status, &answer.body));
    }
    state.instances.forget(&instance.uuid).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Hop-by-hop headers, which a proxy must not pass on (RFC 9110 7.6.1), and what reqwest sets.
const NOT_PASSED: [&str; 7] =
    ["connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host", "authorization"];

/// Anything under `/instances/:id/`, on the owning host: the request body (4 MiB at most)
/// forwarded, the answer streamed back as it comes (a console that follows never ends).
async fn proxy(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    state: web::Data<CloudState>,
) -> Result<HttpResponse, ApiError> {
    require_user(&req, &state)?;
    let (id, rest) = path.into_inner();
    let (instance, host) = state.instances.owner(&id).await?;
    let body = service_kit::body::read_limited(&req, payload.into_inner(), super::MAX_BODY)
        .await
        .map_err(|e| ApiError::new(ErrorCode::PayloadTooLarge, e.to_string()))?;
    let query = req.query_string();
    let target = format!(
        "/api/v1/instances/{}/{rest}{}{query}",
        instance.uuid,
        if query.is_empty() { "" } else { "?" }
    );
    let method = Method::from_bytes(req.method().as_str().as_bytes())
        .map_err(|_| ApiError::invalid(format!("method {} cannot be proxied", req.method())))?;
    let remote = state.instances.remote();
    let mut request = remote.stream_request(&host, method, &target);
    for (name, value) in req.headers() {
        if !NOT_PASSED.contains(&name.as_str()) {
            request = request.header(name.as_str(), value.as_bytes());
        }
    }
    let response = remote.send(&host, request.body(body.to_vec())).await.map_err(unreachable)?;
    let status = actix_web::http::StatusCode::from_u16(response.status().as_u16())
        .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY);
    let mut answer = HttpResponse::build(status);
    for (name, value) in response.headers() {
        // The length is the stream's; the request id is this request's own.
        if !NOT_PASSED.contains(&name.as_str()) && !matches!(name.as_str(), "content-length" | "x-request-id")
        {
            answer.insert_header((name.as_str(), value.as_bytes()));
        }
    }
    Ok(answer.streaming(response.bytes_stream()))
}
