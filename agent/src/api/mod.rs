//! The agent's REST API (`/api/v1`): images on this host, import jobs, sources and instances;
//! and `GET /metrics` at the root, where Prometheus looks. Reads are open (the API listens on
//! loopback by default), except instance consoles; every mutating call needs a bearer token or
//! Basic credentials from the config, compared in constant time.

pub mod error;
mod instances;
mod isos;
pub mod openapi;
mod switches;

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use imgapi_client::ErrorBody;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error_code::ErrorCode;
use crate::import::{Importer, JobStatus};
use crate::storage::LocalImage;
use error::ApiError;

/// Shared state of the agent's API.
pub struct AgentState {
    pub importer: Arc<Importer>,
    pub instances: Arc<crate::instance::manager::Instances>,
    pub auth: Credentials,
    /// The host's own credential in its fleet (cloudapi calls with it).
    pub host_credential: crate::cluster::HostCredential,
    /// `GET /metrics`'s gauges, set at each scrape.
    pub metrics: crate::metrics::HostGauges,
}

pub use service_kit::auth::{Credentials, Refusal};

pub(crate) fn require_auth(req: &HttpRequest, state: &AgentState) -> Result<(), ApiError> {
    let header = req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes());
    match state.auth.check(header) {
        Err(_) if state.host_credential.accepts(header) => Ok(()),
        result => result.map_err(|refusal| ApiError::new(ErrorCode::UnauthorizedError, refusal.message())),
    }
}

fn parse_uuid(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text)
        .map_err(|_| ApiError::new(ErrorCode::ImageNotFound, format!("{text:?} is not an image uuid")))
}

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics));
    cfg.service(
        web::scope("/api/v1")
            .route("/ping", web::get().to(ping))
            .route("/openapi.json", web::get().to(openapi::document))
            .route("/sources", web::get().to(sources))
            .route("/images", web::get().to(list_images))
            .route("/images", web::post().to(import_image))
            .route("/images/{uuid}", web::get().to(get_image))
            .route("/images/{uuid}", web::delete().to(delete_image))
            .route("/jobs", web::get().to(list_jobs))
            .route("/jobs/{id}", web::get().to(get_job))
            .configure(instances::configure)
            .configure(isos::configure)
            .configure(switches::configure),
    )
    .default_service(web::to(|req: HttpRequest| async move {
        ApiError::new(ErrorCode::ResourceNotFound, format!("{} {} does not exist", req.method(), req.path()))
    }));
}

/// What `GET /ping` answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Ping {
    /// Always true: this is an agent.
    agent: bool,
    version: &'static str,
    /// The storage backend: `files`, `zfs` or `zfs-files`.
    storage: &'static str,
    /// `qemu` or `bhyve`.
    hypervisor: &'static str,
    /// How long a guest gets to power off after the power button before it is forced off.
    stop_timeout_secs: u64,
}

/// The agent is up.
#[utoipa::path(get, path = "/api/v1/ping", tag = "agent", responses((status = 200, body = Ping)))]
async fn ping(state: web::Data<AgentState>) -> HttpResponse {
    HttpResponse::Ok().json(Ping {
        agent: true,
        version: env!("CARGO_PKG_VERSION"),
        storage: state.importer.storage().kind(),
        hypervisor: state.instances.hypervisor_kind(),
        stop_timeout_secs: state.instances.stop_timeout().as_secs(),
    })
}

/// Prometheus metrics (OpenMetrics text).
///
/// HTTP requests by route pattern, imports, instances by state, images. Open, as Prometheus
/// scrapes: no secrets in them, and only bounded label values.
#[utoipa::path(get, path = "/metrics", tag = "agent",
    responses((status = 200, body = String, content_type = "application/openmetrics-text"),
              (status = "default", body = ErrorBody)))]
async fn metrics(state: web::Data<AgentState>) -> Result<HttpResponse, ApiError> {
    // Listed as `GET /images` lists them (on ZFS, one `zfs list`), once per scrape.
    let storage = state.importer.storage().clone();
    let images = blocking(move || storage.list()).await?.len();
    Ok(state.metrics.scrape(&state.instances.list(), images))
}

/// An IMGAPI source, as `GET /sources` shows it: never its credentials.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SourceView {
    url: String,
    /// The channel sent with every request.
    channel: Option<String>,
    /// Whether requests carry credentials.
    credentials: bool,
}

/// The IMGAPI sources, in lookup order.
#[utoipa::path(get, path = "/api/v1/sources", tag = "images", responses((status = 200, body = [SourceView])))]
async fn sources(state: web::Data<AgentState>) -> HttpResponse {
    let list: Vec<SourceView> = state
        .importer
        .sources()
        .sources()
        .map(|s| SourceView {
            url: s.base.clone(),
            channel: s.channel.clone(),
            credentials: s.has_credentials(),
        })
        .collect();
    HttpResponse::Ok().json(list)
}

/// Runs blocking work (host commands, file I/O) off the async workers; its domain error
/// becomes the API's.
/// A JSON request body, or a 400 that says what was wrong with it.
/// The largest request body: every documented limit of a create at once (64 KiB of user-data,
/// 64 metadata values of 4 KiB, 32 SSH keys of 16 KiB) fits, even with every byte escaped.
pub(crate) const MAX_BODY: usize = 4 << 20;

/// The whole request body, at most [`MAX_BODY`]; read after the credentials were checked, so
/// that an anonymous client cannot make the agent buffer anything.
pub(crate) async fn read_body(req: &HttpRequest, payload: web::Payload) -> Result<web::Bytes, ApiError> {
    use service_kit::body::BodyError;
    service_kit::body::read_limited(req, payload.into_inner(), MAX_BODY).await.map_err(|e| match &e {
        BodyError::TooLarge { .. } => ApiError::new(ErrorCode::PayloadTooLarge, e.to_string()),
        BodyError::BadLength => ApiError::new(ErrorCode::InvalidParameter, e.to_string()),
        BodyError::Read(cause) => ApiError::new(ErrorCode::InvalidContent, format!("{e}: {cause}")),
    })
}

pub(crate) fn json_body<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidContent, format!("invalid {what}: {e}")))
}

pub(crate) async fn blocking<T: Send + 'static, E: Send + 'static>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError>
where
    ApiError: From<E>,
{
    web::block(work)
        .await
        .map_err(|e| ApiError::from_error(ErrorCode::InternalError, &e))?
        .map_err(ApiError::from)
}

/// The images on this host.
#[utoipa::path(get, path = "/api/v1/images", tag = "images",
    responses((status = 200, body = [LocalImage]), (status = "default", body = ErrorBody)))]
async fn list_images(state: web::Data<AgentState>) -> Result<HttpResponse, ApiError> {
    let storage = state.importer.storage().clone();
    Ok(HttpResponse::Ok().json(blocking(move || storage.list()).await?))
}

/// An image on this host.
#[utoipa::path(get, path = "/api/v1/images/{uuid}", tag = "images", params(("uuid" = Uuid, Path)),
    responses((status = 200, body = LocalImage), (status = "default", body = ErrorBody)))]
async fn get_image(path: web::Path<String>, state: web::Data<AgentState>) -> Result<HttpResponse, ApiError> {
    let uuid = parse_uuid(&path)?;
    let storage = state.importer.storage().clone();
    match blocking(move || storage.get(&uuid)).await? {
        Some(image) => Ok(HttpResponse::Ok().json(image)),
        None => Err(ApiError::new(ErrorCode::ImageNotFound, format!("image {uuid} is not on this host"))),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ImportRequest {
    uuid: Uuid,
    /// Wait for the import to finish (default) or return the job at once (202).
    #[serde(default = "default_true")]
    wait: bool,
}

fn default_true() -> bool {
    true
}

/// Imports an image from the sources (its origins first): the image (200) once imported, or,
/// with `"wait": false`, the job at once (202).
#[utoipa::path(post, path = "/api/v1/images", tag = "images", request_body = ImportRequest,
    security(("bearer" = []), ("basic" = [])),
    responses((status = 200, body = LocalImage), (status = 202, body = JobStatus),
              (status = "default", body = ErrorBody)))]
async fn import_image(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AgentState>,
) -> Result<HttpResponse, ApiError> {
    require_auth(&req, &state)?;
    let body = read_body(&req, payload).await?;
    let request: ImportRequest = json_body(&body, "import request")?;
    let importer = &state.importer;
    let storage = importer.storage().clone();
    let uuid = request.uuid;
    if let Some(image) = blocking(move || storage.get(&uuid)).await? {
        return Ok(HttpResponse::Ok().json(image));
    }
    let job = importer.start(uuid, None);
    if !request.wait {
        return Ok(HttpResponse::Accepted()
            .insert_header((header::LOCATION, format!("/api/v1/jobs/{}", job.id)))
            .json(job));
    }
    match importer.wait(&job.id).await {
        Some(Ok(image)) => Ok(HttpResponse::Ok().json(image)),
        Some(Err(e)) => Err(ApiError::from_error(e.code(), e.as_ref())),
        None => Err(ApiError::new(ErrorCode::InternalError, "the import job vanished")),
    }
}

/// Deletes an image from this host (refused while instances or images use it).
#[utoipa::path(delete, path = "/api/v1/images/{uuid}", tag = "images", params(("uuid" = Uuid, Path)),
    security(("bearer" = []), ("basic" = [])),
    responses((status = 204), (status = "default", body = ErrorBody)))]
async fn delete_image(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AgentState>,
) -> Result<HttpResponse, ApiError> {
    require_auth(&req, &state)?;
    let uuid = parse_uuid(&path)?;
    state.instances.check_image_unused(&uuid)?;
    state.importer.delete(uuid).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Import jobs, running and recent.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "images", responses((status = 200, body = [JobStatus])))]
async fn list_jobs(state: web::Data<AgentState>) -> HttpResponse {
    HttpResponse::Ok().json(state.importer.jobs())
}

/// One import job.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "images", params(("id" = Uuid, Path)),
    responses((status = 200, body = JobStatus), (status = "default", body = ErrorBody)))]
async fn get_job(path: web::Path<String>, state: web::Data<AgentState>) -> Result<HttpResponse, ApiError> {
    let id = Uuid::parse_str(&path).map_err(|_| ApiError::new(ErrorCode::ResourceNotFound, "no such job"))?;
    state
        .importer
        .job(&id)
        .map(|job| HttpResponse::Ok().json(job))
        .ok_or_else(|| ApiError::new(ErrorCode::ResourceNotFound, format!("no job {id}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthConfig, User};
    use base64::Engine;

    #[test]
    fn tokens_and_basic_credentials() {
        let creds = Credentials::new(&AuthConfig {
            tokens: vec!["0123456789abcdef-token".into()],
            users: vec![User { name: "admin".into(), password: "pw:with:colons".into() }],
        });
        let basic = |s: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s));
        assert!(creds.accepts("Bearer 0123456789abcdef-token"));
        assert!(!creds.accepts("Bearer 0123456789abcdef-toke"));
        assert!(creds.accepts(&basic("admin:pw:with:colons")));
        assert!(!creds.accepts(&basic("admin:pw")));
        assert!(!creds.accepts(&basic("nobody:pw:with:colons")));
        for bad in ["", "Bearer", "Basic !!!", "Basic", "Digest x", &basic("nocolon")] {
            assert!(!creds.accepts(bad), "{bad}");
        }
    }
}
