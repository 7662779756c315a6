//! `/api/v1/isos`: installer ISOs (list, fetch from a URL, upload, rename, delete) and
//! `/api/v1/instances/:id/cdrom` (attach one as an instance's CD).

use std::io::{self, Read};
use tokio::sync::mpsc;

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use imgapi_client::ErrorBody;
use serde::{Deserialize, Serialize};
use service_kit::openapi::Binary;
use uuid::Uuid;

use super::error::ApiError;
use super::instances::{instance_id, query};
use super::{blocking, json_body, require_auth, AgentState};
use crate::error_code::ErrorCode;
use crate::iso::{FetchStatus, IsoInfo};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/isos", web::get().to(list))
        .route("/isos", web::post().to(fetch))
        .route("/isos/fetches", web::get().to(fetches))
        .route("/isos/{name}", web::get().to(get))
        .route("/isos/{name}", web::put().to(upload))
        .route("/isos/{name}", web::post().to(rename))
        .route("/isos/{name}", web::delete().to(delete))
        .route("/instances/{id}/cdrom", web::put().to(set_cdrom));
}

/// An ISO with the instances that have it attached.
#[derive(Serialize, utoipa::ToSchema)]
pub struct IsoView {
    #[serde(flatten)]
    info: IsoInfo,
    attached_to: Vec<Uuid>,
}

fn with_users(state: &AgentState, info: IsoInfo) -> IsoView {
    IsoView { attached_to: state.instances.iso_users(&info.name), info }
}

/// The installer ISOs.
#[utoipa::path(operation_id = "list_isos", get, path = "/api/v1/isos", tag = "isos",
    responses((status = 200, body = [IsoView]), (status = "default", body = ErrorBody)))]
async fn list(state: web::Data<AgentState>) -> Result<HttpResponse, ApiError> {
    let isos = state.instances.isos().clone();
    let list = blocking(move || isos.list()).await?;
    Ok(HttpResponse::Ok().json(list.into_iter().map(|i| with_users(&state, i)).collect::<Vec<_>>()))
}

/// One ISO.
#[utoipa::path(operation_id = "get_iso", get, path = "/api/v1/isos/{name}", tag = "isos", params(("name" = String, Path)),
    responses((status = 200, body = IsoView), (status = "default", body = ErrorBody)))]
async fn get(path: web::Path<String>, state: web::Data<AgentState>) -> Result<HttpResponse, ApiError> {
    let isos = state.instances.isos().clone();
    let info = blocking(move || isos.get(&path)).await?;
    Ok(HttpResponse::Ok().json(with_users(&state, info)))
}

/// Fetches from URLs, running and done, with their progress.
#[utoipa::path(operation_id = "list_iso_fetches", get, path = "/api/v1/isos/fetches", tag = "isos", responses((status = 200, body = [FetchStatus])))]
async fn fetches(state: web::Data<AgentState>) -> HttpResponse {
    HttpResponse::Ok().json(state.instances.isos().fetches())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct FetchBody {
    url: String,
    /// Default: the last part of the URL's path.
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
}

/// Starts fetching an ISO from a URL (202); progress is at `GET /isos/fetches`.
#[utoipa::path(operation_id = "fetch_iso", post, path = "/api/v1/isos", tag = "isos", request_body = FetchBody,
    security(("bearer" = []), ("basic" = [])),
    responses((status = 202, body = FetchStatus), (status = "default", body = ErrorBody)))]
async fn fetch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AgentState>,
) -> Result<HttpResponse, ApiError> {
    require_auth(&req, &state)?;
    let body = super::read_body(&req, payload).await?;
    let body: FetchBody = json_body(&body, "fetch request")?;
    let name = match body.name {
        Some(name) => name,
        None => url::Url::parse(&body.url)
            .ok()
            .and_then(|u| u.path_segments().and_then(|mut s| s.next_back().map(str::to_owned)))
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::invalid(format!("no file name in {:?}: give \"name\"", body.url)))?,
    };
    let isos = state.instances.isos().clone();
    let status = blocking(move || isos.fetch(&body.url, &name, body.sha256.as_deref())).await?;
    Ok(HttpResponse::Accepted().json(status))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct UploadQuery {
    /// Checked before the ISO is kept.
    #[serde(default)]
    sha256: Option<String>,
}

/// The request body, handed from the async side to the thread that writes the ISO.
struct BodyReader {
    chunks: mpsc::Receiver<io::Result<web::Bytes>>,
    current: web::Bytes,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Uploads an ISO (the request body), streamed to disk; `sha256` is checked when given.
#[utoipa::path(operation_id = "upload_iso", put, path = "/api/v1/isos/{name}", tag = "isos", params(("name" = String, Path), UploadQuery),
    request_body(content = Binary, content_type = "application/octet-stream"),
    security(("bearer" = []), ("basic" = [])),
    responses((status = 201, body = IsoView), (status = "default", body = ErrorBody)))]
async fn upload(
    req: HttpRequest,
    path: web::Path<String>,
    mut payload: web::Payload,
    state: web::Data<AgentState>,
) -> Result<HttpResponse, ApiError> {
    require_auth(&req, &state)?;
    let q: UploadQuery = query(&req)?;
    let name = path.into_inner();
    crate::iso::check_name(&name)?;
    // A few chunks in flight: memory stays flat whatever the ISO's size.
    let (tx, rx) = mpsc::channel(8);
    let isos = state.instances.isos().clone();
    let writer = tokio::task::spawn_blocking(move || {
        let mut reader = BodyReader { chunks: rx, current: web::Bytes::new() };
        isos.add(&name, &mut reader, q.sha256.as_deref(), None, |_| {})
    });
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| io::Error::other(format!("upload interrupted: {e}")));
        let failed = chunk.is_err();
        // The writer gone means it failed: its result says why.
        if tx.send(chunk).await.is_err() || failed {
            break;
        }
    }
    drop(tx);
    let info = writer.await.map_err(|e| ApiError::from_error(ErrorCode::InternalError, &e))??;
    Ok(HttpResponse::Created().json(with_users(&state, info)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RenameQuery {
    #[param(inline)]
    action: IsoAction,
    to: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
enum IsoAction {
    Rename,
}

/// Renames an ISO (`action=rename&to=NEW`); refused while attached (the instance would lose it).
#[utoipa::path(operation_id = "rename_iso", post, path = "/api/v1/isos/{name}", tag = "isos", params(("name" = String, Path), RenameQuery),
    security(("bearer" = []), ("basic" = [])),
    responses((status = 200, body = IsoView), (status = "default", body = ErrorBody)))]
async fn rename(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AgentState>,
) -> Result<HttpResponse, ApiError> {
    require_auth(&req, &state)?;
    let q: RenameQuery = query(&req)?;
    let IsoAction::Rename = q.action;
    let instances = state.instances.clone();
    let info =
        blocking(move || instances.isos().rename(&path, &q.to, &|name| instances.iso_users(name))).await?;
    Ok(HttpResponse::Ok().json(with_users(&state, info)))
}

/// Deletes an ISO; refused while attached.
#[utoipa::path(operation_id = "delete_iso", delete, path = "/api/v1/isos/{name}", tag = "isos", params(("name" = String, Path)),
    security(("bearer" = []), ("basic" = [])),
    responses((status = 204), (status = "default", body = ErrorBody)))]
async fn delete(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AgentState>,
) -> Result<HttpResponse, ApiError> {
    require_auth(&req, &state)?;
    let instances = state.instances.clone();
    blocking(move || instances.isos().remove(&path, &|name| instances.iso_users(name))).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CdromBody {
    /// The ISO's name, or `null` to detach.
    iso: Option<String>,
    /// `cd` or `disk` (default).
    #[serde(default)]
    boot: Option<String>,
}

/// An instance's CD.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CdromView {
    uuid: Uuid,
    cdrom: Option<String>,
    boot_from_cdrom: bool,
}

/// Attaches an ISO as an instance's CD, or ejects it (from its next start).
#[utoipa::path(operation_id = "set_cdrom", put, path = "/api/v1/instances/{id}/cdrom", tag = "isos", params(("id" = Uuid, Path)),
    request_body = CdromBody, security(("bearer" = []), ("basic" = [])),
    responses((status = 200, body = CdromView), (status = "default", body = ErrorBody)))]
async fn set_cdrom(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AgentState>,
) -> Result<HttpResponse, ApiError> {
    require_auth(&req, &state)?;
    let body = super::read_body(&req, payload).await?;
    let uuid = instance_id(&path)?;
    let body: CdromBody = json_body(&body, "cdrom request")?;
    let boot_from_cdrom = parse_boot(body.boot.as_deref())?;
    let instances = state.instances.clone();
    let record = blocking(move || instances.set_cdrom(&uuid, body.iso, boot_from_cdrom)).await?;
    Ok(HttpResponse::Ok().json(CdromView {
        uuid: record.uuid,
        cdrom: record.cdrom,
        boot_from_cdrom: record.boot_from_cdrom,
    }))
}

/// `"cd"` or `"disk"` (the default) as the boot device.
pub fn parse_boot(boot: Option<&str>) -> Result<bool, ApiError> {
    match boot {
        None | Some("disk") => Ok(false),
        Some("cd") => Ok(true),
        Some(other) => Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!("boot {other:?} must be \"cd\" or \"disk\""),
        )),
    }
}
