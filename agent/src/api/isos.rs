//! `/api/v1/isos`: installer ISOs (list, fetch from a URL, upload, rename, delete) and
//! `/api/v1/instances/:id/cdrom` (attach one as an instance's CD).

use std::io::{self, Read};
use tokio::sync::mpsc;

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::instances::{instance_id, query};
use super::{blocking, json_body, require_auth, AgentState};
use crate::error_code::ErrorCode;
use crate::iso::IsoInfo;

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
fn with_users(state: &AgentState, info: IsoInfo) -> serde_json::Value {
    let users = state.instances.iso_users(&info.name);
    let mut value = serde_json::to_value(info).expect("ISO records serialise");
    value["attached_to"] = json!(users);
    value
}

async fn list(state: web::Data<AgentState>) -> Result<HttpResponse, ApiError> {
    let isos = state.instances.isos().clone();
    let list = blocking(move || isos.list()).await?;
    Ok(HttpResponse::Ok().json(list.into_iter().map(|i| with_users(&state, i)).collect::<Vec<_>>()))
}

async fn get(path: web::Path<String>, state: web::Data<AgentState>) -> Result<HttpResponse, ApiError> {
    let isos = state.instances.isos().clone();
    let info = blocking(move || isos.get(&path)).await?;
    Ok(HttpResponse::Ok().json(with_users(&state, info)))
}

async fn fetches(state: web::Data<AgentState>) -> HttpResponse {
    HttpResponse::Ok().json(state.instances.isos().fetches())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchBody {
    url: String,
    /// Default: the last part of the URL's path.
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
}

/// Starts fetching an ISO; progress is at `GET /isos/fetches`.
async fn fetch(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AgentState>,
) -> Result<HttpResponse, ApiError> {
    require_auth(&req, &state)?;
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadQuery {
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

/// Uploads an ISO (the request body), streamed to disk; `?sha256=` is checked when given.
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenameQuery {
    action: String,
    to: String,
}

/// `POST /isos/:name?action=rename&to=NEW`; refused while attached (the instance would lose it).
async fn rename(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AgentState>,
) -> Result<HttpResponse, ApiError> {
    require_auth(&req, &state)?;
    let q: RenameQuery = query(&req)?;
    if q.action != "rename" {
        return Err(ApiError::invalid(format!("unknown action {:?} (rename)", q.action)));
    }
    state.instances.check_iso_unused(&path)?;
    let isos = state.instances.isos().clone();
    let info = blocking(move || isos.rename(&path, &q.to)).await?;
    Ok(HttpResponse::Ok().json(with_users(&state, info)))
}

async fn delete(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AgentState>,
) -> Result<HttpResponse, ApiError> {
    require_auth(&req, &state)?;
    state.instances.check_iso_unused(&path)?;
    let isos = state.instances.isos().clone();
    blocking(move || isos.remove(&path)).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CdromBody {
    /// The ISO's name, or `null` to detach.
    iso: Option<String>,
    /// `cd` or `disk` (default).
    #[serde(default)]
    boot: Option<String>,
}

/// Attaches an ISO as an instance's CD (from its next start).
async fn set_cdrom(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AgentState>,
) -> Result<HttpResponse, ApiError> {
    require_auth(&req, &state)?;
    let uuid = instance_id(&path)?;
    let body: CdromBody = json_body(&body, "cdrom request")?;
    let boot_from_cdrom = parse_boot(body.boot.as_deref())?;
    let instances = state.instances.clone();
    let record = blocking(move || instances.set_cdrom(&uuid, body.iso, boot_from_cdrom)).await?;
    Ok(HttpResponse::Ok()
        .json(json!({"uuid": record.uuid, "cdrom": record.cdrom, "boot_from_cdrom": record.boot_from_cdrom})))
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
