//! The image server's OpenAPI 3 document, generated from the code: the operations are declared
//! here, one `#[utoipa::path]` each, next to the route table they must match (a test sends a
//! request to every operation and checks that a route answers it), and the manifest's schema
//! follows the manifest rules of `manifest::validate`. Served at `GET /openapi.json`,
//! committed as `docs/openapi/imgapi.json` (a test compares them; `UPDATE_OPENAPI=1 cargo test
//! -p imgapi openapi` rewrites it), and fuzzed against a live server by `.ci/run`.
//!
//! Every error is IMGAPI's `{"code", "message"[, "errors"]}` (the `default` response of each
//! operation). Reads need no credentials unless `anonymous_reads` says otherwise; writes need
//! Basic credentials or an HTTP Signature.

use std::borrow::Cow;
use std::sync::OnceLock;

use actix_web::HttpResponse;
use imgapi_client::ErrorBody;
use serde_json::json;
use service_kit::openapi::Binary;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

/// A schema written as JSON (the manifest's fields have union types a derive cannot say).
fn schema(value: serde_json::Value) -> RefOr<Schema> {
    serde_json::from_value(value).expect("a valid schema")
}

/// A boolean, which manifests may also give as the string `"true"` or `"false"`.
fn loose_bool() -> serde_json::Value {
    json!({"oneOf": [{"type": "boolean"}, {"type": "string", "enum": ["true", "false"]}]})
}

/// An image manifest as the server answers it: sdc-imgapi's fields, in its key order.
pub struct Manifest;

impl PartialSchema for Manifest {
    fn schema() -> RefOr<Schema> {
        // Typed where the manifest rules type the field; the rest (description, tags, the zvol
        // drivers...) are whatever imgmanifest lets through, which is sometimes any JSON value.
        let uuid = json!({"type": "string", "format": "uuid"});
        let any = json!({"type": ["object", "array", "string", "number", "boolean", "null"]});
        schema(json!({
            "type": "object",
            "description": "An image manifest (see the IMGAPI documentation for each field).",
            "required": ["uuid", "files"],
            "properties": {
                "v": any, "uuid": uuid, "owner": any, "name": any, "version": any,
                "state": {"type": "string", "enum": ["active", "unactivated", "disabled", "creating", "failed"]},
                "disabled": loose_bool(), "public": loose_bool(), "published_at": any, "type": any, "os": any,
                "files": {"type": "array", "items": {"$ref": "#/components/schemas/ManifestFile"}},
                "acl": any, "description": any, "homepage": any, "eula": any, "icon": any, "urn": any,
                "requirements": any, "users": any, "generate_passwords": any, "inherited_directories": any,
                "origin": any, "nic_driver": any, "disk_driver": any, "cpu_type": any, "image_size": any,
                "tags": any, "billing_tags": any, "traits": any, "error": any, "channels": any,
            }
        }))
    }
}

impl ToSchema for Manifest {}

/// What CreateImage takes: the manifest's own fields (the server sets uuid, state and the
/// file). These are the ones every image needs; the others of [`Manifest`] may be given too.
pub struct NewImage;

impl PartialSchema for NewImage {
    fn schema() -> RefOr<Schema> {
        let word =
            json!({"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[A-Za-z0-9._-]+$"});
        schema(json!({
            "type": "object",
            "required": ["name", "version", "type", "os"],
            "properties": {
                "name": word,
                "version": word,
                "type": {"type": "string", "enum": ["zone-dataset", "lx-dataset", "docker", "other"]},
                "os": {"type": "string", "enum": ["smartos", "linux", "windows", "bsd", "illumos", "other"]},
                "description": {"type": "string", "maxLength": 512},
                "public": {"type": "boolean"},
                "tags": {"type": "object"},
            }
        }))
    }
}

impl ToSchema for NewImage {}

/// The file of an image (`files[0]`).
pub struct ManifestFile;

impl PartialSchema for ManifestFile {
    fn schema() -> RefOr<Schema> {
        schema(json!({
            "type": "object",
            "required": ["sha1", "size", "compression"],
            "properties": {
                "sha1": {"type": "string"},
                "size": {"type": "integer", "minimum": 0},
                "compression": {"type": "string", "enum": ["gzip", "bzip2", "xz", "none"]},
                "dataset_guid": {"type": "string"},
                "stor": {"type": "string", "description": "with `inclAdminFields=true`"},
            }
        }))
    }
}

impl ToSchema for ManifestFile {}

/// What `GET /ping` answers.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // rendered by `misc::ping`
pub struct Ping {
    /// `pong`.
    ping: String,
    version: String,
    /// Always true (imgadm requires it).
    imgapi: bool,
    pid: u32,
    /// The authenticated user, when the request carried credentials.
    user: Option<String>,
}

/// A channel, as configured.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // rendered from `config::Channel`
pub struct Channel {
    name: String,
    description: String,
    default: Option<bool>,
}

#[utoipa::path(get, path = "/ping", tag = "server", operation_id = "Ping",
    security((), ("basic" = []), ("signature" = [])),
    responses((status = 200, body = Ping), (status = "default", body = ErrorBody)))]
#[allow(dead_code)]
fn ping() {}

#[utoipa::path(get, path = "/images", tag = "images", operation_id = "ListImages", description = "Reads need no credentials unless `anonymous_reads` says otherwise.",
    security((), ("basic" = []), ("signature" = [])),
    params(
        ("owner" = Option<Uuid>, Query), ("state" = Option<String>, Query, description = "`active` (default), `unactivated`, `disabled`, `all`..."),
        ("name" = Option<String>, Query, description = "exact, or `~substring`"),
        ("version" = Option<String>, Query, description = "exact, or `~substring`"),
        ("public" = Option<bool>, Query), ("os" = Option<String>, Query),
        ("type" = Option<String>, Query, description = "exact, or `!type`"),
        ("billing_tag" = Option<String>, Query), ("account" = Option<Uuid>, Query),
        ("channel" = Option<String>, Query), ("limit" = Option<u32>, Query, description = "at most 1000"),
        ("marker" = Option<String>, Query, description = "a uuid or a `published_at`: where the page starts"),
        ("sort" = Option<String>, Query, description = "`published_at` or `name`, with `.asc` or `.desc`"),
        ("inclAdminFields" = Option<bool>, Query),
    ),
    responses((status = 200, body = [Manifest]), (status = "default", body = ErrorBody)))]
#[allow(dead_code)]
fn list_images() {}

#[utoipa::path(post, path = "/images", tag = "images", operation_id = "CreateImage",
    security(("basic" = []), ("signature" = [])),
    params(("channel" = Option<String>, Query), ("account" = Option<Uuid>, Query)),
    request_body(content = NewImage, description = "the manifest's fields (the server picks the uuid)"),
    responses((status = 200, body = Manifest, links(
        ("GetImage" = (operation_id = "GetImage", parameters(("uuid" = "$response.body#/uuid")))),
        ("AddImageFile" = (operation_id = "AddImageFile", parameters(("uuid" = "$response.body#/uuid")))),
        ("ImageAction" = (operation_id = "ImageAction", parameters(("uuid" = "$response.body#/uuid")))),
        ("AddImageIcon" = (operation_id = "AddImageIcon", parameters(("uuid" = "$response.body#/uuid")))),
        ("ImageAcl" = (operation_id = "ImageAcl", parameters(("uuid" = "$response.body#/uuid")))),
        ("DeleteImage" = (operation_id = "DeleteImage", parameters(("uuid" = "$response.body#/uuid")))),
    )), (status = "default", body = ErrorBody)))]
#[allow(dead_code)]
fn create_image() {}

#[utoipa::path(get, path = "/images/{uuid}", tag = "images", operation_id = "GetImage", description = "Reads need no credentials unless `anonymous_reads` says otherwise.",
    security((), ("basic" = []), ("signature" = [])),
    params(("uuid" = Uuid, Path), ("inclAdminFields" = Option<bool>, Query),
           ("channel" = Option<String>, Query), ("account" = Option<Uuid>, Query)),
    responses((status = 200, body = Manifest), (status = 304, description = "the ETag matched If-None-Match"),
              (status = "default", body = ErrorBody)))]
#[allow(dead_code)]
fn get_image() {}

#[utoipa::path(post, path = "/images/{uuid}", tag = "images", operation_id = "ImageAction",
    description = "`activate`, `enable`, `disable`, `update` (the body is the fields to change), `channel-add` (`{\"channel\"}`), or `import` (AdminImportImage: the body is the whole manifest, or `source` names an IMGAPI server to copy it from).",
    security(("basic" = []), ("signature" = [])),
    params(("uuid" = Uuid, Path),
           ("action" = String, Query, description = "activate, enable, disable, update, channel-add, import"),
           ("source" = Option<String>, Query, description = "import: the IMGAPI server to copy from"),
           ("channel" = Option<String>, Query), ("account" = Option<Uuid>, Query)),
    request_body(content = Object, description = "update, channel-add and import: JSON"),
    responses((status = 200, body = Manifest), (status = "default", body = ErrorBody)))]
#[allow(dead_code)]
fn image_action() {}

#[utoipa::path(delete, path = "/images/{uuid}", tag = "images", operation_id = "DeleteImage",
    security(("basic" = []), ("signature" = [])),
    params(("uuid" = Uuid, Path), ("force_all_channels" = Option<bool>, Query),
           ("channel" = Option<String>, Query), ("account" = Option<Uuid>, Query)),
    responses((status = 204, description = "deleted"),
              (status = 200, body = Manifest, description = "removed from one of its channels only"),
              (status = "default", body = ErrorBody)))]
#[allow(dead_code)]
fn delete_image() {}

#[utoipa::path(get, path = "/images/{uuid}/file", tag = "files", operation_id = "GetImageFile", description = "Reads need no credentials unless `anonymous_reads` says otherwise.",
    security((), ("basic" = []), ("signature" = [])),
    params(("uuid" = Uuid, Path), ("index" = Option<u32>, Query), ("channel" = Option<String>, Query),
           ("account" = Option<Uuid>, Query), ("range" = Option<String>, Header, description = "one range, `bytes=START-[END]`")),
    responses((status = 200, content_type = "application/octet-stream", body = Binary),
              (status = 206, content_type = "application/octet-stream", body = Binary, description = "the range asked for"),
              (status = 304, description = "not modified"),
              (status = "default", body = ErrorBody)))]
#[allow(dead_code)]
fn get_image_file() {}

#[utoipa::path(put, path = "/images/{uuid}/file", tag = "files", operation_id = "AddImageFile",
    description = "Streams the body to disk; a `sha1` or `Content-Length` that does not match is refused and nothing is kept. With `source`, the file is copied from that IMGAPI server instead.",
    security(("basic" = []), ("signature" = [])),
    params(("uuid" = Uuid, Path),
           ("compression" = Option<String>, Query, description = "gzip, bzip2, xz or none (required unless `source`)"),
           ("sha1" = Option<String>, Query), ("dataset_guid" = Option<String>, Query),
           ("storage" = Option<String>, Query), ("source" = Option<String>, Query),
           ("channel" = Option<String>, Query), ("account" = Option<Uuid>, Query)),
    request_body(content = Binary, content_type = "application/octet-stream"),
    responses((status = 200, body = Manifest), (status = "default", body = ErrorBody)))]
#[allow(dead_code)]
fn add_image_file() {}

#[utoipa::path(post, path = "/images/{uuid}/file/from-url", tag = "files", operation_id = "AddImageFileFromUrl",
    description = "Needs Triton services: always `400 NotImplemented`.",
    security(("basic" = []), ("signature" = [])), params(("uuid" = Uuid, Path)),
    responses((status = "default", body = ErrorBody)))]
#[allow(dead_code)]
fn add_image_file_from_url() {}

#[utoipa::path(get, path = "/images/{uuid}/icon", tag = "files", operation_id = "GetImageIcon", description = "Reads need no credentials unless `anonymous_reads` says otherwise.",
    security((), ("basic" = []), ("signature" = [])),
    params(("uuid" = Uuid, Path), ("channel" = Option<String>, Query), ("account" = Option<Uuid>, Query)),
    responses((status = 200, content((Binary = "image/png"), (Binary = "image/jpeg"), (Binary = "image/gif"))),
              (status = 206, content((Binary = "image/png"), (Binary = "image/jpeg"), (Binary = "image/gif"))),
              (status = 304, description = "not modified"),
              (status = "default", body = ErrorBody)))]
#[allow(dead_code)]
fn get_image_icon() {}

#[utoipa::path(put, path = "/images/{uuid}/icon", tag = "files", operation_id = "AddImageIcon",
    description = "A PNG, JPEG or GIF of at most 128 KiB (the `Content-Type` says which).",
    security(("basic" = []), ("signature" = [])),
    params(("uuid" = Uuid, Path), ("channel" = Option<String>, Query), ("account" = Option<Uuid>, Query)),
    request_body(content((Binary = "image/png"), (Binary = "image/jpeg"), (Binary = "image/gif"))),
    responses((status = 200, body = Manifest), (status = "default", body = ErrorBody)))]
#[allow(dead_code)]
fn add_image_icon() {}

#[utoipa::path(delete, path = "/images/{uuid}/icon", tag = "files", operation_id = "DeleteImageIcon",
    security(("basic" = []), ("signature" = [])),
    params(("uuid" = Uuid, Path), ("channel" = Option<String>, Query), ("account" = Option<Uuid>, Query)),
    responses((status = 200, body = Manifest), (status = "default", body = ErrorBody)))]
#[allow(dead_code)]
fn delete_image_icon() {}

#[utoipa::path(post, path = "/images/{uuid}/acl", tag = "images", operation_id = "ImageAcl",
    description = "Adds (the default) or removes accounts from the image's ACL.",
    security(("basic" = []), ("signature" = [])),
    params(("uuid" = Uuid, Path), ("action" = Option<String>, Query, description = "add or remove"),
           ("channel" = Option<String>, Query), ("account" = Option<Uuid>, Query)),
    request_body(content = Vec<Uuid>, description = "the accounts"),
    responses((status = 200, body = Manifest), (status = "default", body = ErrorBody)))]
#[allow(dead_code)]
fn image_acl() {}

#[utoipa::path(get, path = "/images/{uuid}/jobs", tag = "images", operation_id = "ListImageJobs",
    description = "Needs Triton services: always `400 NotImplemented`.",
    security((), ("basic" = []), ("signature" = [])), params(("uuid" = Uuid, Path)),
    responses((status = "default", body = ErrorBody)))]
#[allow(dead_code)]
fn list_image_jobs() {}

#[utoipa::path(post, path = "/images/{uuid}/clone", tag = "images", operation_id = "CloneImage",
    description = "Needs Triton services: always `400 NotImplemented`.",
    security(("basic" = []), ("signature" = [])), params(("uuid" = Uuid, Path)),
    responses((status = "default", body = ErrorBody)))]
#[allow(dead_code)]
fn clone_image() {}

#[utoipa::path(post, path = "/images/{uuid}/push", tag = "images", operation_id = "AdminPushDockerImage",
    description = "Needs Triton services: always `400 NotImplemented`.",
    security(("basic" = []), ("signature" = [])), params(("uuid" = Uuid, Path)),
    responses((status = "default", body = ErrorBody)))]
#[allow(dead_code)]
fn push_image() {}

#[utoipa::path(get, path = "/channels", tag = "server", operation_id = "ListChannels",
    description = "The configured channels (a 404 when the server has none).",
    security((), ("basic" = []), ("signature" = [])),
    responses((status = 200, body = [Channel]), (status = "default", body = ErrorBody)))]
#[allow(dead_code)]
fn list_channels() {}

#[utoipa::path(get, path = "/datasets", tag = "server", operation_id = "ListDatasets",
    description = "DSAPI's listing: a redirect to `/images`.",
    responses((status = 301, description = "to /images", headers(("location" = String)))))]
#[allow(dead_code)]
fn list_datasets() {}

#[utoipa::path(get, path = "/datasets/{arg}", tag = "server", operation_id = "GetDataset",
    description = "A DSAPI dataset (a uuid, `name:version` or a URN): a redirect to the image or a filtered listing.",
    params(("arg" = String, Path)),
    responses((status = 301, description = "to the image or a listing", headers(("location" = String)))))]
#[allow(dead_code)]
fn get_dataset() {}

#[utoipa::path(get, path = "/state", tag = "server", operation_id = "AdminGetState",
    security(("basic" = []), ("signature" = [])),
    responses((status = 200, body = Object, description = "a summary for operators"),
              (status = "default", body = ErrorBody)))]
#[allow(dead_code)]
fn get_state() {}

#[utoipa::path(post, path = "/state", tag = "server", operation_id = "AdminUpdateState",
    security(("basic" = []), ("signature" = [])),
    params(("action" = String, Query, description = "dropcaches")),
    responses((status = 202, description = "done"), (status = "default", body = ErrorBody)))]
#[allow(dead_code)]
fn post_state() {}

#[utoipa::path(post, path = "/authkeys/reload", tag = "server", operation_id = "AdminReloadAuthKeys",
    description = "Reads `userdb` and `auth_keys` from the config file again.",
    security(("basic" = []), ("signature" = [])),
    responses((status = 200, body = Object), (status = "default", body = ErrorBody)))]
#[allow(dead_code)]
fn reload_auth_keys() {}

#[utoipa::path(get, path = "/mirrors", tag = "server", operation_id = "ListMirrors",
    description = "What each mirror did last.",
    security(("basic" = []), ("signature" = [])),
    responses((status = 200, body = [crate::mirror::MirrorStatus]), (status = "default", body = ErrorBody)))]
#[allow(dead_code)]
fn list_mirrors() {}

#[utoipa::path(get, path = "/openapi.json", tag = "server", operation_id = "GetOpenApi",
    responses((status = 200, body = Object, description = "this document")))]
#[allow(dead_code)]
fn openapi_json() {}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "imgapi",
        description = "An IMGAPI server (the Joyent/Triton image API): SmartOS `imgadm`, Triton's \
                       `sdc-clients` and the agent use it. Errors are `{\"code\", \"message\"[, \"errors\"]}`.",
    ),
    paths(
        ping, list_images, create_image, get_image, image_action, delete_image, get_image_file,
        add_image_file, add_image_file_from_url, get_image_icon, add_image_icon, delete_image_icon,
        image_acl, list_image_jobs, clone_image, push_image, list_channels, list_datasets, get_dataset,
        get_state, post_state, reload_auth_keys, list_mirrors, openapi_json,
    ),
    components(schemas(Manifest, ManifestFile, NewImage, Binary)),
    modifiers(&Credentials),
    tags(
        (name = "server", description = "The server itself"),
        (name = "images", description = "Image manifests"),
        (name = "files", description = "Image files and icons"),
    )
)]
pub struct ApiDoc;

/// Basic credentials, or Joyent HTTP Signatures (`Authorization: Signature keyId=...`).
struct Credentials;

impl Modify for Credentials {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("basic", SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)));
        components.add_security_scheme(
            "signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "Joyent HTTP Signature: `Signature keyId=\"USER\",algorithm=\"rsa-sha256\",signature=\"...\"` over the `Date` header",
            ))),
        );
    }
}

/// The document as served and committed (pretty JSON, with a final newline).
pub fn json() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| service_kit::openapi::render(ApiDoc::openapi()))
}

/// `GET /openapi.json`.
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(json())
}

/// The operations the document declares: method and path (with `{uuid}`-style parameters).
pub fn operations() -> Vec<(String, String)> {
    let document: serde_json::Value = serde_json::from_str(json()).expect("the document is JSON");
    let mut operations = Vec::new();
    for (path, methods) in document["paths"].as_object().into_iter().flatten() {
        for method in methods.as_object().into_iter().flatten().map(|(m, _)| m) {
            operations.push((method.to_uppercase(), path.clone()));
        }
    }
    operations
}

impl ToSchema for crate::mirror::MirrorStatus {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("MirrorStatus")
    }
}

impl PartialSchema for crate::mirror::MirrorStatus {
    fn schema() -> RefOr<Schema> {
        let text = json!({"type": "string"});
        let nullable_text = json!({"type": ["string", "null"]});
        let count = json!({"type": "integer", "minimum": 0});
        schema(json!({
            "type": "object",
            "properties": {
                "url": text, "interval_secs": count, "pull_through": {"type": "boolean"},
                "follow_deletes": {"type": "boolean"}, "state": {"type": "string", "enum": ["idle", "syncing"]},
                "copying": {"type": ["string", "null"], "format": "uuid"}, "syncs": count,
                "last_started": nullable_text, "last_finished": nullable_text,
                "last_result": {"type": ["string", "null"], "enum": ["ok", "partial", "error", null]},
                "last_error": nullable_text, "upstream_images": count, "copied": count, "present": count,
                "failed": count, "deleted": count, "consecutive_failures": count, "pulled_through": count,
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_sound_and_the_committed_copy_is_the_generated_one() {
        assert_eq!(service_kit::openapi::problems(json()), Vec::<String>::new());
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi/imgapi.json");
        service_kit::openapi::check_committed(&path, json(), "UPDATE_OPENAPI=1 cargo test -p imgapi openapi")
            .unwrap();
    }

    #[test]
    fn every_operation_answers_errors() {
        let document: serde_json::Value = serde_json::from_str(json()).unwrap();
        let mut count = 0;
        for (path, methods) in document["paths"].as_object().unwrap() {
            for (method, operation) in methods.as_object().unwrap() {
                count += 1;
                let responses = operation["responses"].as_object().unwrap();
                let redirect_or_self = path.starts_with("/datasets") || path == "/openapi.json";
                assert!(redirect_or_self || responses.contains_key("default"), "{method} {path}");
            }
        }
        assert!(count >= 24, "{count} operations");
    }
}
