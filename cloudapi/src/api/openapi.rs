//! cloudapi's OpenAPI 3 document, generated from the handlers' `#[utoipa::path]` attributes and
//! the types they take and answer, so that it cannot drift from the code: served at
//! `GET /api/v1/openapi.json`, committed as `docs/openapi/cloudapi.json` (a test compares them;
//! `UPDATE_OPENAPI=1 cargo test -p cloudapi --lib openapi` rewrites the file), and fuzzed
//! against a live cloudapi by `.ci/run`.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cloudapi",
        description = "One API over every agent host: hosts that register and send heartbeats, \
                       instances placed on them (with the reasons of each placement), the calls \
                       to an instance passed on to its host, and the image catalogue. Errors are \
                       `{\"code\", \"message\"}` (see the ErrorCode schema); every answer has an \
                       `x-request-id`.",
    ),
    paths(
        super::ping,
        super::metrics,
        super::list_hosts,
        super::register,
        super::get_host,
        super::host_action,
        super::remove_host,
        super::heartbeat,
        super::images::list,
        super::instances::list,
        super::instances::create,
        super::instances::get,
        super::instances::action,
        super::instances::delete,
        super::instances::proxied::read_console,
        super::instances::proxied::write_console,
        super::instances::proxied::get_guest,
        super::instances::proxied::update_guest,
        super::instances::proxied::list_snapshots,
        super::instances::proxied::create_snapshot,
        super::instances::proxied::rollback_snapshot,
        super::instances::proxied::delete_snapshot,
        super::instances::proxied::publish_instance,
    ),
    components(schemas(crate::error_code::ErrorCode, service_kit::openapi::Binary)),
    modifiers(&Credentials),
    tags(
        (name = "cloudapi", description = "cloudapi itself"),
        (name = "hosts", description = "The hosts of the fleet: registration, heartbeats, drain, removal"),
        (name = "instances", description = "Instances: placement, provisioning, actions, and what is passed on to their hosts"),
        (name = "images", description = "The catalogue of the IMGAPI sources"),
    )
)]
pub struct ApiDoc;

/// Who calls: users (a token or Basic credentials of the config), and hosts (a join token or
/// a host's own credential).
struct Credentials;

impl Modify for Credentials {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| {
            let mut scheme = Http::new(HttpAuthScheme::Bearer);
            scheme.description = Some(description.to_string());
            SecurityScheme::Http(scheme)
        };
        components.add_security_scheme("bearer", bearer("A token of the config's `auth.tokens`: a user."));
        let mut basic = Http::new(HttpAuthScheme::Basic);
        basic.description = Some("A user of the config's `auth.users`.".into());
        components.add_security_scheme("basic", SecurityScheme::Http(basic));
        components.add_security_scheme(
            "join_token",
            bearer("A join token of the config's `join_tokens`: registers a new host."),
        );
        components.add_security_scheme(
            "host_credential",
            bearer("The host's own credential, which its first registration returned: registers it again, sends its heartbeats."),
        );
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
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi/cloudapi.json");
        service_kit::openapi::check_committed(
            &path,
            json(),
            "UPDATE_OPENAPI=1 cargo test -p cloudapi --lib openapi",
        )
        .unwrap();
    }

    #[test]
    fn every_operation_documents_its_errors_and_mutations_their_credentials() {
        let document: serde_json::Value = serde_json::from_str(json()).unwrap();
        let schemes = document["components"]["securitySchemes"].as_object().unwrap();
        let paths = document["paths"].as_object().unwrap();
        assert!(paths.len() >= 12, "{} paths", paths.len());
        for (path, operations) in paths {
            for (method, operation) in operations.as_object().unwrap() {
                let responses = operation["responses"].as_object().unwrap();
                // Reads are open, except what is passed on to a host (consoles, guests...).
                let proxied = path.starts_with("/api/v1/instances/{id}/");
                if method != "get" || proxied {
                    let security = operation["security"].as_array();
                    assert!(security.is_some_and(|s| !s.is_empty()), "{method} {path} needs credentials");
                    for requirement in security.unwrap() {
                        for scheme in requirement.as_object().unwrap().keys() {
                            assert!(schemes.contains_key(scheme), "{method} {path}: no scheme {scheme}");
                        }
                    }
                }
                if path != "/api/v1/ping" {
                    assert!(responses.contains_key("default"), "{method} {path}: no error response");
                }
            }
        }
        let register = &paths["/api/v1/hosts"]["post"]["security"];
        assert_eq!(register, &serde_json::json!([{"join_token": []}, {"host_credential": []}]));
    }

    /// The document is served, and every operation it declares has a route (no "does not
    /// exist" 404), so that it cannot name what cloudapi does not serve.
    #[test]
    fn the_document_is_served_and_every_operation_has_a_route() {
        let dir = tempfile::tempdir().unwrap();
        let token = "openapi-test-token-0123456789";
        let config = serde_json::json!({
            "listen": "127.0.0.1:0",
            "database": format!("sqlite://{}", dir.path().join("cloudapi.db").display()),
            "auth": {"tokens": [token]},
            "log_level": "warn",
        });
        let config =
            crate::config::Config::from_json(&config.to_string(), std::path::Path::new("test")).unwrap();
        let server = crate::start(config).unwrap();
        let base = format!("http://{}", server.addr);
        let client = reqwest::blocking::Client::new();
        let served: serde_json::Value =
            client.get(format!("{base}/api/v1/openapi.json")).send().unwrap().json().unwrap();
        let generated: serde_json::Value = serde_json::from_str(json()).unwrap();
        assert_eq!(served, generated);
        let mut checked = 0;
        for (path, methods) in generated["paths"].as_object().unwrap() {
            for method in methods.as_object().unwrap().keys() {
                let concrete =
                    path.replace("{id}", "6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b").replace("{name}", "absent");
                let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let mut request =
                    client.request(method.clone(), format!("{base}{concrete}")).bearer_auth(token);
                if matches!(method, reqwest::Method::POST | reqwest::Method::PUT | reqwest::Method::PATCH) {
                    // A body that nothing accepts: nothing is made, only the route answers.
                    request = request.json(&serde_json::json!({"x": 1}));
                }
                let response = request.send().unwrap();
                let status = response.status().as_u16();
                let answer: serde_json::Value = response.json().unwrap_or_default();
                let no_route = status == 404
                    && answer["code"] == "ResourceNotFound"
                    && answer["message"].as_str().is_some_and(|m| m.ends_with("does not exist"));
                assert!(!no_route, "{method} {path}: {status} {answer}");
                checked += 1;
            }
        }
        assert!(checked >= 20, "{checked} operations");
    }
}
