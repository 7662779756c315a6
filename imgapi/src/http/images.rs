//! Handlers for `/images` and `/images/:uuid`: listing, reading, creating, the `?action=`
//! verbs, ACLs and deletion. Each one parses the request, calls the service and renders.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use md5::{Digest, Md5};
use serde_json::Value;
use uuid::Uuid;

use super::error::ApiError;
use super::{image_response, json_response, params, reader, render_options, writer, AppState};
use crate::service::listing::ListQuery;
use crate::service::ImageError;

/// Largest JSON body accepted (manifests: tags may be 100 KiB, descriptions 10 KiB).
const MAX_JSON_BODY: usize = 1 << 20;

/// Reads a whole (small) request body, refusing more than `limit` bytes.
pub async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    use service_kit::body::BodyError;
    service_kit::body::read_limited(req, payload.into_inner(), limit).await.map_err(|e| match &e {
        BodyError::TooLarge { .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge", e.to_string())
        }
        BodyError::BadLength => ApiError::new(StatusCode::BAD_REQUEST, "InvalidHeader", e.to_string()),
        BodyError::Read(cause) => ApiError::invalid_content(format!("{e}: {cause}")),
    })
}

/// Parses a JSON request body whatever its `Content-Type` (curl's `-d` sends a form type),
/// checking `Content-MD5` when the client sent one. An empty body is `null`.
pub async fn json_body(req: &HttpRequest, payload: web::Payload) -> Result<Value, ApiError> {
    let body = read_body(req, payload, MAX_JSON_BODY).await?;
    if let Some(want) = req.headers().get("content-md5").and_then(|v| v.to_str().ok()) {
        let got = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&body));
        if want.trim() != got {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "BadDigest",
                format!("Content-MD5 '{want}' didn't match '{got}'"),
            ));
        }
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&body).map_err(|e| ApiError::invalid_content(format!("Invalid JSON: {e}")))
}

/// ListImages.
pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let params = params(&req);
    let caller = reader(&req, &state, &params).await?;
    let query = ListQuery::parse(&state.service, &caller, &params)?;
    let options = render_options(&req, query.admin_fields);
    let items: Vec<_> =
        state.service.list(&query, &caller).iter().map(|i| i.list_item_json(options)).collect();
    let body = crate::manifest::list_json(&items);
    Ok(HttpResponse::Ok().content_type("application/json").body(body))
}

/// GetImage (and HEAD).
pub async fn get(
    req: HttpRequest,
    path: web::Path<Uuid>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let params = params(&req);
    let caller = reader(&req, &state, &params).await?;
    let admin_fields = params.bool("inclAdminFields")?.unwrap_or(false);
    if admin_fields && caller.user.is_none() {
        return Err(ImageError::Unauthorized(
            "Unauthorized (auth required to use \"inclAdminFields\" parameter)".into(),
        )
        .into());
    }
    let image = match super::find_or_pull(&state, &path, &caller).await? {
        super::Found::Local(image) => image,
        // The upstream's manifest (active) while the copy runs; this server's once it is done.
        super::Found::Pulling(pull) => return Ok(json_response(StatusCode::OK, &pull.manifest)),
    };
    if let Some(list) = req.headers().get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        let etag = image.etag();
        if crate::manifest::etag_matches(list, &etag) {
            return Ok(HttpResponse::NotModified().insert_header((header::ETAG, etag)).finish());
        }
    }
    Ok(image_response(&req, &image, admin_fields))
}

/// `POST /images`: CreateImage, or one of Triton's image-creation actions.
pub async fn create_or_action(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let params = params(&req);
    match params.get("action") {
        None => {}
        Some(action @ ("create-from-vm" | "import-docker-image" | "import-lxd-image")) => {
            writer(&req, &state, &params).await?;
            return Err(ImageError::NotImplemented(format!(
                "action \"{action}\" needs Triton services (VMAPI, WFAPI, a Docker or LXD registry) that a standalone IMGAPI does not have"
            ))
            .into());
        }
        Some(other) => return Err(ApiError::invalid_action(other)),
    }
    let caller = writer(&req, &state, &params).await?;
    let body = json_body(&req, payload).await?;
    let image = state.service.create_image(&caller, body).await?;
    Ok(image_response(&req, &image, false))
}

/// `POST /images/:uuid?action=...`.
pub async fn action(
    req: HttpRequest,
    path: web::Path<Uuid>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let uuid = path.into_inner();
    let params = params(&req);
    let Some(action) = params.get("action") else {
        return Err(ImageError::invalid_param(
            "no image \"action\" was specified",
            "action",
            "MissingParameter",
        )
        .into());
    };
    let caller = writer(&req, &state, &params).await?;
    let service = &state.service;
    // Imports run before the lookup: their image does not exist yet.
    let image = match action {
        "import" => match params.get("source") {
            Some(source) => service.import_from_source(uuid, source, &caller).await?,
            None => service.import_image(uuid, &caller, json_body(&req, payload).await?).await?,
        },
        "import-remote" | "import-from-datacenter" | "change-stor" | "export" => {
            return Err(ImageError::NotImplemented(format!(
                "action \"{action}\" needs Triton services (WFAPI, Manta or other datacenters) that a standalone IMGAPI does not have"
            ))
            .into())
        }
        "activate" | "enable" | "disable" | "update" | "channel-add" => {
            if action == "channel-add" && service.channels.is_empty() {
                return Err(ApiError::invalid_action(action));
            }
            match action {
                "activate" => service.activate(&uuid, &caller).await?,
                "enable" => service.set_disabled(&uuid, &caller, false).await?,
                "disable" => service.set_disabled(&uuid, &caller, true).await?,
                "update" => service.update_image(&uuid, &caller, json_body(&req, payload).await?).await?,
                _ => service.channel_add(&uuid, &caller, json_body(&req, payload).await?).await?,
            }
        }
        other => return Err(ApiError::invalid_action(other)),
    };
    Ok(image_response(&req, &image, false))
}

/// DeleteImage: 204, or the image when it only left one of its channels.
pub async fn delete(
    req: HttpRequest,
    path: web::Path<Uuid>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let params = params(&req);
    let caller = writer(&req, &state, &params).await?;
    let force = params.bool("force_all_channels")?.unwrap_or(false);
    match state.service.delete_image(&path, &caller, force).await? {
        None => Ok(HttpResponse::NoContent().finish()),
        Some(image) => Ok(image_response(&req, &image, false)),
    }
}

/// AddImageAcl / RemoveImageAcl.
pub async fn acl(
    req: HttpRequest,
    path: web::Path<Uuid>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let params = params(&req);
    let add = match params.get("action") {
        None | Some("add") => true,
        Some("remove") => false,
        Some(other) => return Err(ApiError::invalid_action(other)),
    };
    let caller = writer(&req, &state, &params).await?;
    let body = json_body(&req, payload).await?;
    let image = state.service.change_acl(&path, &caller, body, add).await?;
    Ok(image_response(&req, &image, false))
}
