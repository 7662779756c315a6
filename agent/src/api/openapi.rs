//! The agent's OpenAPI 3 document, generated from the handlers' `#[utoipa::path]` attributes and
//! the types they take and answer, so that it cannot drift from the code: served at
//! `GET /api/v1/openapi.json`, committed as `docs/openapi/agent.json` (a test compares them;
//! `UPDATE_OPENAPI=1 cargo test -p agent openapi` rewrites the file), and fuzzed against a live
//! agent by `.ci/run`.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "agent",
        description = "The hypervisor host agent: images imported from IMGAPI sources, and the \
                       bhyve or QEMU instances run from them. Errors are `{\"code\", \"message\"}` \
                       (see the ErrorCode schema); every answer has an `x-request-id`.",
    ),
    paths(
        super::ping,
        super::metrics,
        super::sources,
        super::list_images,
        super::import_image,
        super::get_image,
        super::delete_image,
        super::list_jobs,
        super::get_job,
        super::instances::list,
        super::instances::create,
        super::instances::get,
        super::instances::action,
        super::instances::stop_seed,
        super::instances::delete,
        super::instances::publish,
        super::instances::snapshots,
        super::instances::snapshot_create,
        super::instances::snapshot_action,
        super::instances::snapshot_delete,
        super::instances::guest_get,
        super::instances::guest_update,
        super::instances::console_read,
        super::instances::console_write,
        super::isos::list,
        super::isos::fetch,
        super::isos::fetches,
        super::isos::get,
        super::isos::upload,
        super::isos::rename,
        super::isos::delete,
        super::isos::set_cdrom,
        super::switches::list,
        super::switches::create,
        super::switches::get,
        super::switches::delete,
    ),
    components(schemas(crate::error_code::ErrorCode, service_kit::openapi::Binary)),
    modifiers(&Credentials),
    tags(
        (name = "agent", description = "The agent itself"),
        (name = "images", description = "Images on this host, their sources and import jobs"),
        (name = "instances", description = "Instances: lifecycle, guest configuration, snapshots, console"),
        (name = "isos", description = "Installer ISOs and instances' CDs"),
        (name = "switches", description = "Named switches NICs join"),
    )
)]
pub struct ApiDoc;

/// The two kinds of credentials every mutating call takes.
struct Credentials;

impl Modify for Credentials {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        components.add_security_scheme("basic", SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)));
    }
}

/// The document as served and committed (pretty JSON, with a final newline).
pub fn json() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| service_kit::openapi::render(ApiDoc::openapi()))
}

/// `GET /api/v1/openapi.json`.
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(json())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_sound_and_the_committed_copy_is_the_generated_one() {
        assert_eq!(service_kit::openapi::problems(json()), Vec::<String>::new());
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi/agent.json");
        service_kit::openapi::check_committed(&path, json(), "UPDATE_OPENAPI=1 cargo test -p agent openapi")
            .unwrap();
    }

    #[test]
    fn every_operation_documents_its_errors_and_mutations_their_credentials() {
        let document: serde_json::Value = serde_json::from_str(json()).unwrap();
        let paths = document["paths"].as_object().unwrap();
        assert!(paths.len() >= 15, "{} paths", paths.len());
        for (path, operations) in paths {
            for (method, operation) in operations.as_object().unwrap() {
                let responses = operation["responses"].as_object().unwrap();
                let reads = method == "get";
                let open = reads && !path.ends_with("/console") && !path.ends_with("/guest");
                if !open {
                    assert!(operation.get("security").is_some(), "{method} {path} needs credentials");
                }
                let infallible = ["/api/v1/ping", "/api/v1/sources", "/api/v1/jobs", "/api/v1/isos/fetches"];
                if !infallible.contains(&path.as_str()) {
                    assert!(responses.contains_key("default"), "{method} {path}: no error response");
                }
            }
        }
    }
}
