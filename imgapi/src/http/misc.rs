//! Small endpoints: Ping, ListChannels, the legacy `/datasets` redirects, the operator `/state`
//! endpoints, auth-key reload, and the answer for Triton-only routes.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::error::ApiError;
use super::{json_response, params, reader, writer, AppState};
use crate::auth::Authenticator;
use crate::config::Config;
use crate::params::parse_lower_uuid;
use crate::service::ImageError;

/// Ping. `imgadm sources -a` requires `imgapi: true`. `?error=NAME` answers that error, as
/// the reference does for clients testing their error handling.
pub async fn ping(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let params = params(&req);
    if let Some(name) = params.get("error") {
        return Err(sample_error(name));
    }
    let user = super::identify(&req, &state).await?;
    let mut body = json!({
        "ping": "pong",
        "version": env!("CARGO_PKG_VERSION"),
        "imgapi": true,
        // The Go server always sent it; sdc-imgapi's test runner stops a server by it.
        "pid": std::process::id(),
    });
    if let Some(user) = user {
        body["user"] = json!(user);
    }
    Ok(json_response(StatusCode::OK, &body))
}

fn sample_error(name: &str) -> ApiError {
    let code = name.strip_suffix("Error").filter(|c| !c.is_empty()).unwrap_or(name);
    let (status, code) = match code {
        "ValidationFailed" => (StatusCode::UNPROCESSABLE_ENTITY, "ValidationFailed"),
        "InvalidParameter" => (StatusCode::UNPROCESSABLE_ENTITY, "InvalidParameter"),
        "ResourceNotFound" => (StatusCode::NOT_FOUND, "ResourceNotFound"),
        "InternalError" | "Internal" => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        "Unauthorized" => (StatusCode::UNAUTHORIZED, "UnauthorizedError"),
        "ImageUuidAlreadyExists" => (StatusCode::CONFLICT, "ImageUuidAlreadyExists"),
        "StorageIsDown" => (StatusCode::SERVICE_UNAVAILABLE, "StorageIsDown"),
        "Upload" => (StatusCode::BAD_REQUEST, "Upload"),
        "Download" => (StatusCode::BAD_REQUEST, "Download"),
        _ => {
            return ApiError {
                errors: Some(vec![crate::manifest::validate::FieldError {
                    field: "error".into(),
                    code: "Missing".into(),
                    message: None,
                }]),
                ..ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "InvalidParameter",
                    format!("unknown error: {name}"),
                )
            }
        }
    };
    let with_list = matches!(code, "ValidationFailed" | "InvalidParameter");
    ApiError { errors: with_list.then(Vec::new), ..ApiError::new(status, code, "boom") }
}

/// ListChannels: only mounted when channels are configured (a 404 like any unknown path
/// otherwise, as the reference).
pub async fn channels(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.service.channels.is_empty() {
        return Err(ApiError::no_route(req.path()));
    }
    super::reader(&req, &state, &params(&req)).await?;
    Ok(json_response(StatusCode::OK, &state.service.channels))
}

fn redirect(location: String) -> HttpResponse {
    HttpResponse::MovedPermanently().insert_header((header::LOCATION, location)).finish()
}

/// `GET /datasets` (DSAPI) -> `/images`.
pub async fn datasets() -> HttpResponse {
    redirect("/images".into())
}

/// `GET /datasets/:arg`: a uuid, `name:version`, or a DSAPI URN.
pub async fn dataset(path: web::Path<String>) -> HttpResponse {
    let arg = path.into_inner();
    if parse_lower_uuid(&arg).is_some() {
        return redirect(format!("/images/{arg}"));
    }
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let parts: Vec<&str> = arg.split(':').collect();
    let query = match parts.as_slice() {
        [name, version] => format!("name={}&version={}", enc(name), enc(version)),
        [_, _, name] => format!("name={}", enc(name)),
        [_, _, name, version] => format!("name={}&version={}", enc(name), enc(version)),
        _ => format!("name={}", enc(&arg)),
    };
    redirect(format!("/images/?{query}"))
}

/// AdminGetState: a summary for operators (not the raw records the reference leaks).
/// `GET /mirrors`: what each mirror did last (operators only).
pub async fn mirrors(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    writer(&req, &state, &params(&req)).await?;
    Ok(json_response(StatusCode::OK, &json!(state.mirrors.statuses())))
}

pub async fn get_state(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    writer(&req, &state, &params(&req)).await?;
    let store = &state.service.store;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "datadir": store.root(),
            "images": store.len(),
            "storageTypes": ["local"],
            "channels": state.service.channels,
        }),
    ))
}

/// AdminUpdateState: `dropcaches` is accepted (this server keeps no stale caches: every
/// write updates the in-memory index at once).
pub async fn post_state(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let params = params(&req);
    writer(&req, &state, &params).await?;
    match params.get("action") {
        Some("dropcaches") => Ok(HttpResponse::Accepted().finish()),
        None => Err(ApiError::new(StatusCode::CONFLICT, "MissingParameter", "\"action\" is required")),
        Some(other) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "InvalidArgument",
            format!("\"{other}\" is not a valid action"),
        )),
    }
}

/// AdminReloadAuthKeys: re-reads `userdb` and `auth_keys` from the config file, so that
/// passwords and keys can change without a restart. Other settings need a restart.
pub async fn reload_auth_keys(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    writer(&req, &state, &params(&req)).await?;
    let Some(path) = state.config.source.clone() else {
        return Err(
            ImageError::NotImplemented("this server was not started from a config file".into()).into()
        );
    };
    let fresh = web::block(move || Config::from_file(&path))
        .await
        .map_err(|e| ApiError::internal("cannot reload the config", &e))?
        .map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "InvalidConfig",
                super::error::ErrorChain(&e).to_string(),
            )
        })?;
    let auth = Authenticator::from_config(&fresh).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "InvalidConfig",
            super::error::ErrorChain(&e).to_string(),
        )
    })?;
    *state.auth.write().unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::new(auth);
    tracing::info!(users = fresh.userdb.len(), key_users = fresh.auth_keys.len(), "credentials reloaded");
    Ok(json_response(StatusCode::OK, &json!({})))
}

/// Routes of Triton's IMGAPI that need Triton services (workflow jobs, cloning, Docker push,
/// adding a file from a URL). Credentials are checked first, as on every other route: the
/// writes among them need credentials, and bad credentials are refused anywhere.
pub async fn triton_only(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let params = params(&req);
    if req.method() == actix_web::http::Method::GET {
        reader(&req, &state, &params).await?;
    } else {
        writer(&req, &state, &params).await?;
    }
    Err(ImageError::NotImplemented(format!(
        "{} {} is not available on a standalone IMGAPI (it needs Triton services)",
        req.method(),
        req.path()
    ))
    .into())
}
