//! cloudapi's REST API under `/api/v1` (and `GET /metrics` at the root, where Prometheus looks):
//! the routes, who may call each, and the handlers, which only translate between HTTP and the
//! domain ([`crate::hosts`], [`crate::instances`]).

pub mod error;
mod images;
mod instances;
pub mod openapi;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use imgapi_client::ErrorBody;
use serde::de::DeserializeOwned;
use service_kit::auth::Credentials;
use uuid::Uuid;

use crate::error_code::ErrorCode;
use crate::hosts::{Heartbeat, HostView, Hosts, Registered, Registration};
use error::ApiError;

/// Shared state of the API.
pub struct CloudState {
    pub hosts: Hosts,
    pub instances: std::sync::Arc<crate::instances::Instances>,
    /// Users and tokens of the config: everything that changes the fleet.
    pub users: Credentials,
    /// The join tokens: registration only.
    pub join: Credentials,
    /// `GET /metrics`'s gauges, read at each scrape.
    pub metrics: crate::metrics::FleetGauges,
}

/// The largest request body.
pub(crate) const MAX_BODY: usize = 4 << 20;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics));
    cfg.service(
        web::scope("/api/v1")
            .route("/ping", web::get().to(ping))
            .route("/openapi.json", web::get().to(openapi::document))
            .route("/hosts", web::get().to(list_hosts))
            .route("/hosts", web::post().to(register))
            .route("/hosts/{id}", web::get().to(get_host))
            .route("/hosts/{id}", web::post().to(host_action))
            .route("/hosts/{id}", web::delete().to(remove_host))
            .route("/hosts/{id}/heartbeat", web::put().to(heartbeat))
            .route("/images", web::get().to(images::list))
            .configure(instances::configure),
    )
    .default_service(web::to(|req: HttpRequest| async move {
        ApiError::new(ErrorCode::ResourceNotFound, format!("{} {} does not exist", req.method(), req.path()))
    }));
}

fn authorization(req: &HttpRequest) -> Option<&[u8]> {
    req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes())
}

/// A user or token of the config.
pub(crate) fn require_user(req: &HttpRequest, state: &CloudState) -> Result<(), ApiError> {
    state
        .users
        .check(authorization(req))
        .map_err(|refusal| ApiError::new(ErrorCode::UnauthorizedError, refusal.message()))
}

/// The bearer token of a request, if it has one.
fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The credential of host `id`.
async fn require_host(req: &HttpRequest, state: &CloudState, id: &Uuid) -> Result<(), ApiError> {
    let refused = || {
        ApiError::new(
            ErrorCode::UnauthorizedError,
            "this call needs the host's own credential (Authorization: Bearer)",
        )
    };
    let offered = bearer(req).ok_or_else(refused)?;
    if state.hosts.authenticate(id, offered).await? {
        Ok(())
    } else {
        Err(refused())
    }
}

/// A request body of at most [`MAX_BODY`] bytes; what was wrong with it otherwise.
pub(crate) async fn body(req: &HttpRequest, payload: web::Payload) -> Result<web::Bytes, ApiError> {
    use service_kit::body::BodyError;
    service_kit::body::read_limited(req, payload.into_inner(), MAX_BODY).await.map_err(|e| match &e {
        BodyError::TooLarge { .. } => ApiError::new(ErrorCode::PayloadTooLarge, e.to_string()),
        BodyError::BadLength => ApiError::invalid(e.to_string()),
        BodyError::Read(cause) => ApiError::new(ErrorCode::InvalidContent, format!("{e}: {cause}")),
    })
}

pub(crate) async fn json_body<T: DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
    what: &str,
) -> Result<T, ApiError> {
    let body = body(req, payload).await?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidContent, format!("invalid {what}: {e}")))
}

fn host_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text)
        .map_err(|_| ApiError::new(ErrorCode::HostNotFound, format!("{text:?} is not a host id")))
}

/// What `GET /ping` answers.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Ping {
    /// Always `pong`.
    ping: &'static str,
    /// Always true: this is a cloudapi.
    cloudapi: bool,
    version: &'static str,
}

/// cloudapi is up.
#[utoipa::path(get, path = "/api/v1/ping", tag = "cloudapi", responses((status = 200, body = Ping)))]
async fn ping() -> HttpResponse {
    HttpResponse::Ok().json(Ping { ping: "pong", cloudapi: true, version: env!("CARGO_PKG_VERSION") })
}

/// Prometheus metrics (OpenMetrics text).
///
/// Open to anyone, as Prometheus scrapes: no secrets in them, and only bounded label values
/// (states, phases, outcomes, route patterns). A scrape whose database read fails is a 500.
#[utoipa::path(get, path = "/metrics", tag = "cloudapi",
    responses((status = 200, body = String, content_type = "application/openmetrics-text"),
              (status = "default", body = ErrorBody)))]
async fn metrics(state: web::Data<CloudState>) -> Result<HttpResponse, ApiError> {
    Ok(state.metrics.scrape().await?)
}

/// Every host of the fleet, by name: state, capacity, allocations, cached images, instances,
/// last heartbeat.
#[utoipa::path(operation_id = "list_hosts", get, path = "/api/v1/hosts", tag = "hosts",
    responses((status = 200, body = [HostView]), (status = "default", body = ErrorBody)))]
async fn list_hosts(state: web::Data<CloudState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.hosts.list().await?))
}

/// One host.
#[utoipa::path(operation_id = "get_host", get, path = "/api/v1/hosts/{id}", tag = "hosts", params(("id" = Uuid, Path)),
    responses((status = 200, body = HostView), (status = "default", body = ErrorBody)))]
async fn get_host(path: web::Path<String>, state: web::Data<CloudState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.hosts.get(&host_id(&path)?).await?))
}

/// Registers a host: with a join token a new one (201), with a host's own credential that
/// host again (200).
///
/// A join token cannot register a name that is taken (409 `HostExists`); a credential that is
/// not the named host's is a 401.
#[utoipa::path(operation_id = "register_host", post, path = "/api/v1/hosts", tag = "hosts", request_body = Registration,
    security(("join_token" = []), ("host_credential" = [])),
    responses((status = 201, body = Registered, description = "a new host, with its credential"),
              (status = 200, body = Registered, description = "the host of the credential, registered again"),
              (status = "default", body = ErrorBody)))]
async fn register(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<CloudState>,
) -> Result<HttpResponse, ApiError> {
    let joining = state.join.check(authorization(&req)).is_ok();
    let Some(offered) = bearer(&req) else {
        return Err(ApiError::new(
            ErrorCode::UnauthorizedError,
            "registering needs a join token or the host's credential (Authorization: Bearer)",
        ));
    };
    let body: Registration = json_body(&req, payload, "registration").await?;
    let credential = (!joining).then_some(offered);
    let registered = state.hosts.register(&body, credential).await.map_err(|e| match e {
        // A credential that is no host's is as bad as no credential.
        crate::hosts::HostError::NotFound(_) | crate::hosts::HostError::Exists(_) if !joining => {
            ApiError::new(
                ErrorCode::UnauthorizedError,
                "the token is neither a join token nor this host's credential",
            )
        }
        other => other.into(),
    })?;
    tracing::info!(host = %registered.id, name = %body.name, url = %body.url, rejoined = !joining, "host registered");
    Ok(if joining { HttpResponse::Created() } else { HttpResponse::Ok() }.json(registered))
}

/// A host's heartbeat: its capacity, allocations, images and instances (which cloudapi
/// reconciles with its own table).
#[utoipa::path(operation_id = "heartbeat", put, path = "/api/v1/hosts/{id}/heartbeat", tag = "hosts",
    params(("id" = Uuid, Path)), request_body = Heartbeat, security(("host_credential" = [])),
    responses((status = 204), (status = "default", body = ErrorBody)))]
async fn heartbeat(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<CloudState>,
) -> Result<HttpResponse, ApiError> {
    let id = host_id(&path)?;
    require_host(&req, &state, &id).await?;
    let beat: Heartbeat = json_body(&req, payload, "heartbeat").await?;
    state.hosts.heartbeat(&id, &beat).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(serde::Deserialize)]
struct ActionQuery {
    action: String,
}

/// What `POST /hosts/:id` does.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // the schema of what `host_action` matches
enum HostAction {
    /// No new instances are placed on the host.
    Drain,
    /// New instances may be placed on it again.
    Undrain,
}

/// Drains a host (`action=drain`: no new instances go there) or takes it back (`undrain`).
#[utoipa::path(operation_id = "host_action", post, path = "/api/v1/hosts/{id}", tag = "hosts",
    params(("id" = Uuid, Path), ("action" = inline(HostAction), Query)),
    security(("bearer" = []), ("basic" = [])),
    responses((status = 200, body = HostView), (status = "default", body = ErrorBody)))]
async fn host_action(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<CloudState>,
) -> Result<HttpResponse, ApiError> {
    require_user(&req, &state)?;
    let id = host_id(&path)?;
    let query: ActionQuery = service_kit::api_error::query(&req)?;
    let draining = match query.action.as_str() {
        "drain" => true,
        "undrain" => false,
        other => return Err(ApiError::invalid(format!("unknown action {other:?}: drain or undrain"))),
    };
    Ok(HttpResponse::Ok().json(state.hosts.set_draining(&id, draining).await?))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct RemoveQuery {
    /// Remove an `unknown` host even though it has instances (they are forgotten).
    #[serde(default)]
    force: bool,
}

/// Removes a host and revokes its credential; refused (409 `HostInUse`) while it has
/// instances, unless it is `unknown` and `force=true`.
#[utoipa::path(operation_id = "remove_host", delete, path = "/api/v1/hosts/{id}", tag = "hosts",
    params(("id" = Uuid, Path), RemoveQuery), security(("bearer" = []), ("basic" = [])),
    responses((status = 204), (status = "default", body = ErrorBody)))]
async fn remove_host(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<CloudState>,
) -> Result<HttpResponse, ApiError> {
    require_user(&req, &state)?;
    let id = host_id(&path)?;
    let query: RemoveQuery = service_kit::api_error::query(&req)?;
    state.hosts.remove(&id, query.force).await?;
    Ok(HttpResponse::NoContent().finish())
}
