//! The HTTP front: the route table, request context (who is calling, which API version) and
//! the JSON response helpers. Handlers live in one module per resource.

pub mod body;
pub mod error;
pub mod files;
pub mod images;
pub mod middleware;
pub mod misc;
pub mod openapi;
pub mod pull;
pub mod stall;

use std::sync::Arc;

use actix_web::http::header::{self, HeaderMap};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde::Serialize;

use crate::auth::signature::SignedRequest;
use crate::auth::Authenticator;
use crate::config::{AnonymousReads, Config};
use crate::manifest::{Image, RenderOptions};
use crate::params::Params;
use crate::service::{Caller, Service};
use error::ApiError;

/// Shared state of the running server.
pub struct AppState {
    pub service: Service,
    pub mirrors: Arc<crate::mirror::Mirrors>,
    /// Replaced as a whole by `POST /authkeys/reload`.
    pub auth: std::sync::RwLock<Arc<Authenticator>>,
    pub config: Arc<Config>,
    pub server_name: String,
    pub host_name: String,
}

/// A lower-case UUID path segment, as sdc-imgapi's routes require; anything else is a 404.
const UUID_SEGMENT: &str = "{uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}}";

/// Registers every route. Each resource answers other methods with 405 and `Allow`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
        web::resource(path).default_service(web::to(move |req: HttpRequest| async move {
            ApiError::method_not_allowed(req.method().as_str(), allow)
        }))
    }
    let image = |suffix: &str| format!("/images/{UUID_SEGMENT}{suffix}");
    cfg.service(resource("/ping", "GET").route(web::get().to(misc::ping)))
        .service(
            resource("/images", "GET, POST")
                .route(web::get().to(images::list))
                .route(web::post().to(images::create_or_action)),
        )
        .service(
            resource(&image(""), "GET, HEAD, POST, DELETE")
                .route(web::get().to(images::get))
                .route(web::head().to(images::get))
                .route(web::post().to(images::action))
                .route(web::delete().to(images::delete)),
        )
        .service(
            resource(&image("/file"), "GET, HEAD, PUT")
                .route(web::get().to(files::get_file))
                .route(web::head().to(files::get_file))
                .route(web::put().to(files::put_file)),
        )
        .service(resource(&image("/file/from-url"), "POST").route(web::post().to(misc::triton_only)))
        .service(
            resource(&image("/icon"), "GET, HEAD, PUT, DELETE")
                .route(web::get().to(files::get_icon))
                .route(web::head().to(files::get_icon))
                .route(web::put().to(files::put_icon))
                .route(web::delete().to(files::delete_icon)),
        )
        .service(resource(&image("/acl"), "POST").route(web::post().to(images::acl)))
        .service(resource(&image("/jobs"), "GET").route(web::get().to(misc::triton_only)))
        .service(resource(&image("/clone"), "POST").route(web::post().to(misc::triton_only)))
        .service(resource(&image("/push"), "POST").route(web::post().to(misc::triton_only)))
        .service(resource("/channels", "GET").route(web::get().to(misc::channels)))
        .service(resource("/datasets", "GET").route(web::get().to(misc::datasets)))
        .service(resource("/datasets/{arg}", "GET").route(web::get().to(misc::dataset)))
        .service(
            resource("/state", "GET, POST")
                .route(web::get().to(misc::get_state))
                .route(web::post().to(misc::post_state)),
        )
        .service(resource("/authkeys/reload", "POST").route(web::post().to(misc::reload_auth_keys)))
        .service(resource("/mirrors", "GET").route(web::get().to(misc::mirrors)))
        .service(resource("/openapi.json", "GET").route(web::get().to(openapi::document)))
        .default_service(web::to(|req: HttpRequest| async move { ApiError::no_route(req.path()) }));
}

/// Serialises a response body the way the reference does: 2-space indented JSON.
pub fn to_json(value: &impl Serialize) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("response bodies serialize");
    bytes.push(b'\n');
    bytes
}

pub fn json_response(status: StatusCode, value: &impl Serialize) -> HttpResponse {
    HttpResponse::build(status).content_type("application/json").body(to_json(value))
}

/// The API version a request negotiated (set by the middleware from `Accept-Version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiVersion(pub u64);

fn api_version(req: &HttpRequest) -> ApiVersion {
    req.extensions().get::<ApiVersion>().copied().unwrap_or(ApiVersion(1))
}

/// How to render images for this request.
pub fn render_options(req: &HttpRequest, admin_fields: bool) -> RenderOptions {
    RenderOptions { channels: api_version(req).0 >= 2, admin_fields }
}

/// A 200 with one manifest and its `ETag`.
pub fn image_response(req: &HttpRequest, image: &Image, admin_fields: bool) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::ETAG, image.etag()))
        .body(to_json(&image.to_api(render_options(req, admin_fields))))
}

/// The authenticated user, if the request carries valid credentials; bad credentials are a
/// 401 everywhere.
pub async fn identify(req: &HttpRequest, state: &AppState) -> Result<Option<String>, ApiError> {
    let authorization = match req.headers().get(header::AUTHORIZATION) {
        None => return Ok(None),
        Some(value) => {
            value.to_str().map_err(|_| ApiError::unauthorized("malformed Authorization header"))?.to_owned()
        }
    };
    let headers = req.headers().clone();
    let method = req.method().as_str().to_owned();
    let path_and_query = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
    let auth = state.auth.read().unwrap_or_else(|e| e.into_inner()).clone();
    // argon2/bcrypt and RSA take milliseconds: keep them off the async workers, which also
    // serve downloads.
    let verdict = actix_web::web::block(move || {
        let lookup = |name: &str| header_string(&headers, name);
        let signed = SignedRequest { method: &method, path_and_query: &path_and_query, header: &lookup };
        auth.authenticate(Some(&authorization), &signed)
    })
    .await
    .map_err(|e| ApiError::internal("the authentication worker failed", &e))?;
    Ok(verdict?)
}

fn header_string(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Context for a read: anonymous callers are let through unless the read policy is `none`.
/// What GetImage and GetImageFile serve: a local image, or a pull-through under way.
pub enum Found {
    Local(Arc<crate::manifest::Image>),
    Pulling(Arc<crate::service::remote::Pull>),
}

/// Whether `caller` may see an upstream's manifest: the rules of local images (account
/// scoping, the anonymous read policy) applied to it.
fn upstream_visible(state: &AppState, manifest: &serde_json::Value, caller: &Caller) -> bool {
    crate::manifest::Image::from_disk(manifest.clone())
        .is_ok_and(|image| state.service.visible(&image, caller))
}

/// GetImage's and GetImageFile's lookup: a local image, or, when a mirror pulls through, one
/// an upstream has, whose copy starts now.
pub async fn find_or_pull(state: &AppState, uuid: &uuid::Uuid, caller: &Caller) -> Result<Found, ApiError> {
    use crate::mirror::Pulled;
    match state.service.find(uuid, caller, true) {
        Err(crate::service::ImageError::NotFound(_)) if state.mirrors.has_pull_through() => {
            let may_see = |manifest: &serde_json::Value| upstream_visible(state, manifest, caller);
            match state.mirrors.pull_through(&state.service, *uuid, &may_see).await? {
                Some(Pulled::Here(_)) => Ok(Found::Local(state.service.find(uuid, caller, true)?)),
                Some(Pulled::Coming(pull)) if may_see(&pull.manifest) => Ok(Found::Pulling(pull)),
                Some(Pulled::Coming(_)) => Err(crate::service::ImageError::NotFound(*uuid).into()),
                None => Err(crate::service::ImageError::NotFound(*uuid).into()),
            }
        }
        // A copy that is still arriving shows as what the upstream has (active).
        Ok(image) if !image.activated => match state.mirrors.pull_under_way(uuid) {
            Some(pull) if upstream_visible(state, &pull.manifest, caller) => Ok(Found::Pulling(pull)),
            _ => Ok(Found::Local(image)),
        },
        other => Ok(Found::Local(other?)),
    }
}

pub async fn reader(req: &HttpRequest, state: &AppState, params: &Params) -> Result<Caller, ApiError> {
    let user = identify(req, state).await?;
    if user.is_none() && state.config.anonymous_reads == AnonymousReads::None {
        return Err(ApiError::unauthorized("Unauthorized"));
    }
    Ok(Caller::from_params(user, params)?)
}

/// Context for a write: credentials are required.
pub async fn writer(req: &HttpRequest, state: &AppState, params: &Params) -> Result<Caller, ApiError> {
    match identify(req, state).await? {
        Some(user) => {
            let mut caller = Caller::from_params(Some(user), params)?;
            // Checked by the service against the locked record, not here.
            caller.if_match =
                req.headers().get(header::IF_MATCH).and_then(|v| v.to_str().ok()).map(str::to_owned);
            Ok(caller)
        }
        None => Err(ApiError::unauthorized("Unauthorized")),
    }
}

/// The query parameters of a request.
pub fn params(req: &HttpRequest) -> Params {
    Params::parse(req.query_string())
}

/// True for HEAD requests (same headers as GET, no body).
pub fn is_head(req: &HttpRequest) -> bool {
    req.method() == Method::HEAD
}
