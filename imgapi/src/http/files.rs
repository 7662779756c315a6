//! Handlers for image files and icons. GetImageFile sends exact `Content-Length`,
//! `Content-MD5`, `ETag` and `Last-Modified`, answers HEAD, conditional and single-range
//! requests (so downloads can resume); AddImageFile streams the body through the hashing
//! upload pipeline and keeps nothing unless every check passes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::header::{self, HttpDate};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use uuid::Uuid;

use super::body::FileBody;
use super::error::ApiError;
use super::images::read_body;
use super::{image_response, is_head, params, reader, writer, AppState};
use crate::manifest::{etag_matches, parse_timestamp_ms, Compression};
use crate::service::actions::{FileUpload, ICON_TYPES, MAX_ICON_SIZE};
use crate::service::ImageError;
use crate::store::upload::{UploadError, UploadSink};

/// What a `Range` header asks of a file of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: send everything (RFC 9110 allows ignoring what we do not support).
    Full,
    /// Bytes `start..=end`.
    Partial {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

/// Parses a single `bytes=` range; multiple ranges and other units are served in full.
pub fn parse_range(value: &str, size: u64) -> RangeRequest {
    let Some(spec) = value.trim().strip_prefix("bytes=") else { return RangeRequest::Full };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return RangeRequest::Full };
    let (first, last) = (first.trim(), last.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    match (first.is_empty(), last.is_empty()) {
        (true, true) => RangeRequest::Full,
        (true, false) => match parse(last) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(n) if size > 0 => RangeRequest::Partial { start: size.saturating_sub(n), end: size - 1 },
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Full,
        },
        (false, _) => {
            let Some(start) = parse(first) else { return RangeRequest::Full };
            let end = if last.is_empty() { Some(u64::MAX) } else { parse(last) };
            match end {
                None => RangeRequest::Full,
                Some(end) if end < start => RangeRequest::Full,
                Some(_) if start >= size => RangeRequest::Unsatisfiable,
                Some(end) => RangeRequest::Partial { start, end: end.min(size - 1) },
            }
        }
    }
}

fn system_time(iso: &str) -> SystemTime {
    let ms = parse_timestamp_ms(iso).unwrap_or(0).max(0) as u64;
    // HTTP dates have whole seconds; compare at that resolution.
    UNIX_EPOCH + Duration::from_secs(ms / 1000)
}

fn header_str(req: &HttpRequest, name: header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Whether `If-None-Match` / `If-Modified-Since` say the client's copy is current.
fn not_modified(req: &HttpRequest, etag: &str, modified: SystemTime) -> bool {
    if let Some(list) = header_str(req, header::IF_NONE_MATCH) {
        return etag_matches(list, etag);
    }
    header_str(req, header::IF_MODIFIED_SINCE)
        .and_then(|v| v.parse::<HttpDate>().ok())
        .is_some_and(|since| modified <= SystemTime::from(since))
}

/// Whether an `If-Range` precondition (if any) still holds, so the range may be honoured.
fn if_range_holds(req: &HttpRequest, etag: &str, modified: SystemTime) -> bool {
    match header_str(req, header::IF_RANGE) {
        None => true,
        Some(v) if v.trim_start().starts_with('"') => v.trim() == etag,
        Some(v) => v.parse::<HttpDate>().is_ok_and(|d| SystemTime::from(d) == modified),
    }
}

/// Everything needed to serve one stored file.
struct Served<'a> {
    path: std::path::PathBuf,
    size: u64,
    etag: String,
    content_md5: &'a str,
    modified: SystemTime,
    content_type: &'a str,
}

async fn serve(req: &HttpRequest, state: &AppState, file: Served<'_>) -> Result<HttpResponse, ApiError> {
    let last_modified = HttpDate::from(file.modified);
    if not_modified(req, &file.etag, file.modified) {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, file.etag))
            .insert_header((header::LAST_MODIFIED, last_modified))
            .finish());
    }
    let range = match header_str(req, header::RANGE) {
        Some(v) if if_range_holds(req, &file.etag, file.modified) => parse_range(v, file.size),
        _ => RangeRequest::Full,
    };
    let mut response = match range {
        RangeRequest::Unsatisfiable => {
            return Ok(HttpResponse::RangeNotSatisfiable()
                .insert_header((header::CONTENT_RANGE, format!("bytes */{}", file.size)))
                .content_type("application/json")
                .body(super::to_json(&serde_json::json!({
                    "code": "RequestedRangeNotSatisfiable",
                    "message": format!("range not satisfiable for a file of {} bytes", file.size),
                }))))
        }
        RangeRequest::Partial { start, end } => {
            let mut r = HttpResponse::PartialContent();
            r.insert_header((header::CONTENT_RANGE, format!("bytes {start}-{end}/{}", file.size)));
            (r, start, end - start + 1)
        }
        RangeRequest::Full => {
            let mut r = HttpResponse::Ok();
            r.insert_header(("content-md5", file.content_md5));
            (r, 0, file.size)
        }
    };
    let (ref mut builder, offset, len) = response;
    builder
        .content_type(file.content_type)
        .insert_header((header::ETAG, file.etag))
        .insert_header((header::LAST_MODIFIED, last_modified))
        .insert_header((header::ACCEPT_RANGES, "bytes"));
    if is_head(req) {
        return Ok(builder.body(FileBody::head(len)));
    }
    let path = file.path;
    // Opening is disk I/O: off the async workers, on the file readers' pool (not the one
    // password checks and uploads use).
    let opened = super::body::read_pool()
        .spawn_blocking(move || std::fs::File::open(path))
        .await
        .map_err(|e| ApiError::internal("cannot open a stored file", &e))?;
    let handle = opened.map_err(|e| match e.kind() {
        // Replaced or deleted between the lookup and the open.
        std::io::ErrorKind::NotFound => {
            ApiError::new(StatusCode::NOT_FOUND, "ResourceNotFound", "the file changed; ask again")
        }
        _ => ApiError::internal("cannot open a stored file", &e),
    })?;
    let stall = std::time::Duration::from_secs(state.config.download_stall_timeout_secs);
    Ok(builder.body(FileBody::new(handle, offset, len, super::stall::watch(req, stall))))
}

/// GetImageFile (and HEAD).
pub async fn get_file(
    req: HttpRequest,
    path: web::Path<Uuid>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let params = params(&req);
    let caller = reader(&req, &state, &params).await?;
    let image = match super::find_or_pull(&state, &path, &caller).await? {
        super::Found::Local(image) => image,
        super::Found::Pulling(pull) => match super::pull::follow(&req, pull).await? {
            Some(response) => return Ok(response),
            None => state.service.find(&path, &caller, true)?,
        },
    };
    let index = params.get("index").unwrap_or("0");
    let file = image.file.as_ref().ok_or(ImageError::NoFile(image.uuid))?;
    if index.trim().parse::<u64>() != Ok(0) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("image \"{}\" has no file at index {index}", image.uuid),
        ));
    }
    serve(
        &req,
        &state,
        Served {
            path: state.service.store.path_of(&image.uuid, &file.path),
            size: file.size,
            etag: format!("\"{}\"", file.sha1),
            content_md5: &file.content_md5,
            modified: system_time(&file.mtime),
            content_type: "application/octet-stream",
        },
    )
    .await
}

/// AddImageFile: streams the body to disk, checking size and sha1.
pub async fn put_file(
    req: HttpRequest,
    path: web::Path<Uuid>,
    mut payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let uuid = path.into_inner();
    let params = params(&req);
    let caller = writer(&req, &state, &params).await?;
    if let Some(source) = params.get("source") {
        let image = state.service.add_file_from_source(uuid, source, &caller).await?;
        return Ok(image_response(&req, &image, false));
    }
    let compression = match params.get("compression") {
        None => {
            return Err(ImageError::invalid_param("missing \"compression\"", "compression", "Missing").into())
        }
        Some(c) => Compression::parse(c).ok_or_else(|| {
            ImageError::invalid_param(
                format!("invalid compression \"{c}\" (must be one of {})", Compression::ALL),
                "compression",
                "Invalid",
            )
        })?,
    };
    match params.get("storage") {
        None => {}
        Some(_) if caller.account.is_some() => {
            return Err(ImageError::InvalidParameter {
                message: "invalid \"storage\": cannot be specified by non-operators".into(),
                errors: vec![crate::manifest::validate::FieldError {
                    field: "storage".into(),
                    code: "NotAllowed".into(),
                    message: Some("Parameter cannot be specified by non-operators".into()),
                }],
            }
            .into())
        }
        // Manta is not available here; the reference falls back to local storage too.
        Some("local" | "manta") => {}
        Some(other) => {
            return Err(ImageError::invalid_param(
                format!("invalid storage \"{other}\""),
                "storage",
                "Invalid",
            )
            .into())
        }
    }
    let content_length = match header_str(&req, header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(v.trim().parse::<u64>().map_err(|_| {
            ApiError::new(StatusCode::BAD_REQUEST, "InvalidHeader", format!("invalid Content-Length: {v}"))
        })?),
    };
    let upload = FileUpload {
        compression,
        sha1: params.get("sha1").map(str::to_owned),
        dataset_guid: params.get("dataset_guid").map(str::to_owned),
        content_length,
    };
    let service = &state.service;
    service.precheck_file(&uuid, &caller, &upload)?;
    let temp = service.store.stage(&uuid).await?;
    let mut sink = UploadSink::start(temp, service.max_file_size)
        .map_err(|e| ApiError::internal("cannot start an upload", &e))?;
    while let Some(chunk) = payload.next().await {
        let written = match chunk {
            Ok(chunk) => sink.write(&chunk).await.map_err(upload_error),
            Err(e) => {
                Err(ImageError::Upload(format!("upload interrupted after {} bytes: {e}", sink.received()))
                    .into())
            }
        };
        if let Err(e) = written {
            sink.abort().await;
            return Err(e);
        }
    }
    let staged = sink.finish().await.map_err(upload_error)?;
    let image = service.commit_file(&uuid, &caller, upload, staged).await?;
    tracing::info!(image = %uuid, size = image.file.as_ref().map(|f| f.size), "image file stored");
    Ok(image_response(&req, &image, false))
}

fn upload_error(e: UploadError) -> ApiError {
    match e {
        UploadError::TooBig { .. } => ImageError::Upload(e.to_string()).into(),
        UploadError::Io(io) => crate::store::StoreError::from_io("write upload", io).into(),
    }
}

/// GetImageIcon (and HEAD).
pub async fn get_icon(
    req: HttpRequest,
    path: web::Path<Uuid>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let params = params(&req);
    let caller = reader(&req, &state, &params).await?;
    let image = state.service.find(&path, &caller, true)?;
    let icon = image.icon.as_ref().ok_or(ImageError::NoIcon(image.uuid))?;
    serve(
        &req,
        &state,
        Served {
            path: state.service.store.path_of(&image.uuid, &icon.path),
            size: icon.size,
            etag: format!("\"{}\"", icon.sha1),
            content_md5: &icon.content_md5,
            modified: system_time(&icon.mtime),
            content_type: &icon.content_type,
        },
    )
    .await
}

/// AddImageIcon: a JPEG, GIF or PNG of at most 128 KiB.
pub async fn put_icon(
    req: HttpRequest,
    path: web::Path<Uuid>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let params = params(&req);
    let caller = writer(&req, &state, &params).await?;
    let content_type = header_str(&req, header::CONTENT_TYPE).unwrap_or("").to_string();
    if !ICON_TYPES.contains(&content_type.as_str()) {
        return Err(ImageError::Upload(format!(
            "invalid content-type, {content_type}, must be one of {}",
            ICON_TYPES.join(", ")
        ))
        .into());
    }
    state.service.find_owned(&path, &caller)?;
    let body = read_body(&req, payload, MAX_ICON_SIZE as usize).await.map_err(|e| {
        if e.status == StatusCode::PAYLOAD_TOO_LARGE {
            ImageError::Upload(format!("icon is larger than the maximum of {MAX_ICON_SIZE} bytes")).into()
        } else {
            e
        }
    })?;
    if let Some(length) = header_str(&req, header::CONTENT_LENGTH).and_then(|v| v.trim().parse::<u64>().ok())
    {
        if length != body.len() as u64 {
            return Err(ImageError::Upload(format!(
                "\"Content-Length\" header, {length}, does not match uploaded size, {}",
                body.len()
            ))
            .into());
        }
    }
    if body.is_empty() {
        return Err(ImageError::Upload("icon is empty".into()).into());
    }
    let image = state.service.add_icon(&path, &caller, &content_type, body, params.get("sha1")).await?;
    Ok(image_response(&req, &image, false))
}

/// DeleteImageIcon.
pub async fn delete_icon(
    req: HttpRequest,
    path: web::Path<Uuid>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let params = params(&req);
    let caller = writer(&req, &state, &params).await?;
    let image = state.service.delete_icon(&path, &caller).await?;
    Ok(image_response(&req, &image, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeRequest::*;

    #[test]
    fn single_ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Partial { start: 0, end: 9 });
        assert_eq!(parse_range("bytes=90-", 100), Partial { start: 90, end: 99 });
        assert_eq!(parse_range("bytes=90-1000", 100), Partial { start: 90, end: 99 });
        assert_eq!(parse_range("bytes=-10", 100), Partial { start: 90, end: 99 });
        assert_eq!(parse_range("bytes=-1000", 100), Partial { start: 0, end: 99 });
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
    }

    #[test]
    fn what_we_do_not_support_is_served_in_full() {
        for v in ["bytes=0-1,5-6", "items=0-1", "bytes=5-1", "bytes=a-b", "bytes=-", "bytes=", "garbage"] {
            assert_eq!(parse_range(v, 100), Full, "{v}");
        }
    }
}
