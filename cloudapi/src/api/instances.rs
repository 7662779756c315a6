//! The instance routes: the fleet's list, create (placement, dry runs), get, actions and
//! delete, and everything under `/instances/:id/` (console, guest, snapshots, publish)
//! proxied to the owning host with the host's credential.

use actix_web::http::header;
use std::collections::BTreeMap;

use actix_web::{web, HttpRequest, HttpResponse};
use imgapi_client::ErrorBody;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::error::ApiError;
use super::{json_body, require_user, CloudState};
use crate::error_code::ErrorCode;
use crate::instances::{CreateOutcome, CreateRequest, InstanceError, InstanceView, Phase};
use crate::placement::Decision;
use crate::remote::RemoteError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/instances", web::get().to(list))
        .route("/instances", web::post().to(create))
        .route("/instances/{id}", web::get().to(get))
        .route("/instances/{id}", web::post().to(action))
        .route("/instances/{id}", web::delete().to(delete))
        .route("/instances/{id}/{rest:.*}", web::to(proxy));
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only the instances of this host (its id).
    #[serde(default)]
    host: Option<Uuid>,
}

/// Every instance of the fleet (adopted ones included), oldest first, each with where it is
/// and what its host last reported of it.
#[utoipa::path(operation_id = "list_instances", get, path = "/api/v1/instances", tag = "instances", params(ListQuery),
    responses((status = 200, body = [InstanceView]), (status = "default", body = ErrorBody)))]
async fn list(req: HttpRequest, state: web::Data<CloudState>) -> Result<HttpResponse, ApiError> {
    let query: ListQuery = service_kit::api_error::query(&req)?;
    Ok(HttpResponse::Ok().json(state.instances.list(query.host).await?))
}

/// A NIC of a create request: `<network>[,vlan=<id>][,mac=<mac>]` or the object (the agent's
/// `NicSpec`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // the schema of what the agent reads
enum NicSpec {
    Short(String),
    Full(Nic),
}

/// A NIC as a create request asks for it (the agent's `NicRequest`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Nic {
    /// `user`, `switch:<name>` or `bridge:<host bridge>`.
    network: String,
    vlan: Option<u16>,
    /// Default: generated.
    mac: Option<String>,
}

/// How the guest boots (the agent's `Firmware`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum Firmware {
    /// Legacy BIOS boot (the default).
    Bios,
    Uefi,
    /// bhyve only: `bhyveload` loads the guest kernel from its disk.
    Bhyveload,
}

/// One affinity rule, or a list of them.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum Affinities {
    One(String),
    Many(Vec<String>),
}

/// The create body: the agent's (`POST /api/v1/instances` of the agent, its `CreateInstance`:
/// the seed's short names `ima`, `mem`, `cpu` and `disk` are aliases), and cloudapi's own
/// `host`, `host_tags`, `affinity` and `dry_run`. Every key but cloudapi's goes to the agent as
/// it is, with the instance's `uuid` and `alias` set.
#[derive(Deserialize, utoipa::ToSchema)]
#[allow(dead_code)] // the schema of what `CreateRequest::parse` and the agent read
struct CreateInstance {
    /// The uuid to give the instance (unique in the fleet); a new one by default.
    uuid: Option<Uuid>,
    /// Absent or null: a blank disk of `disk_mib`. A `zvol` image of a source, or one a host
    /// holds.
    image: Option<Uuid>,
    /// Default 1.
    #[schema(minimum = 1, maximum = 64)]
    vcpus: Option<u32>,
    /// Default 512.
    #[schema(minimum = 32, maximum = 1048576)]
    memory_mib: Option<u64>,
    /// Default: the image's size; needed without an image.
    disk_mib: Option<u64>,
    /// Printable, unique in the fleet; default `i-` and the uuid's first 12 digits.
    #[schema(min_length = 1, max_length = 64)]
    alias: Option<String>,
    /// One entry per NIC. Default: one `user` NIC under QEMU, none under bhyve.
    nics: Option<Vec<NicSpec>>,
    firmware: Option<Firmware>,
    /// What the guest is told about itself.
    hostname: Option<String>,
    #[serde(default)]
    ssh_keys: Vec<String>,
    user_data: Option<String>,
    network_config: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    /// An installer ISO of the host (by name) attached as a CD.
    cdrom: Option<String>,
    /// `disk` (default) or `cd`.
    boot: Option<String>,
    /// Start it once created (default).
    start: Option<bool>,
    /// Pin it to this host: its id or its name.
    host: Option<String>,
    /// Only hosts that have every one of these tags, with these values.
    host_tags: Option<BTreeMap<String, String>>,
    /// Triton's rules: `instance==NAME`, `instance!=NAME`, and `==~`/`!=~` for soft ones; NAME
    /// is an alias, a uuid or a glob with `*`.
    affinity: Option<Affinities>,
    /// Only say where it would go: nothing is reserved or created (200).
    dry_run: Option<bool>,
}

/// A dry run's answer.
#[derive(Serialize, utoipa::ToSchema)]
struct DryRun {
    /// Always true.
    dry_run: bool,
    /// The host it would go to; null when no host can take it.
    #[schema(required = true)]
    host: Option<Uuid>,
    /// Why: every host's verdict.
    placement: Decision,
}

/// Creates an instance: placed and reserved at once, then provisioned in the background (202,
/// with its `placement`; follow its `phase` and `progress`). With `"dry_run": true`, only where
/// it would go (200). 422 `NoCapacity` when no host can take it, with each host's reason.
#[utoipa::path(operation_id = "create_instance", post, path = "/api/v1/instances", tag = "instances",
    request_body = CreateInstance, security(("bearer" = []), ("basic" = [])),
    responses((status = 202, body = InstanceView, description = "placed; being provisioned",
               headers(("location" = String, description = "the instance's URL"))),
              (status = 200, body = DryRun, description = "a dry run: where it would go"),
              (status = "default", body = ErrorBody)))]
async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<CloudState>,
) -> Result<HttpResponse, ApiError> {
    require_user(&req, &state)?;
    let body: Value = json_body(&req, payload, "instance request").await?;
    let request = CreateRequest::parse(body)?;
    Ok(match state.instances.create(request).await? {
        CreateOutcome::DryRun(decision) => {
            HttpResponse::Ok().json(DryRun { dry_run: true, host: decision.chosen, placement: decision })
        }
        CreateOutcome::Placed(instance) => HttpResponse::Accepted()
            .insert_header((header::LOCATION, format!("/api/v1/instances/{}", instance.uuid)))
            .json(instance),
    })
}

/// One instance, by uuid or alias, with its placement decision.
#[utoipa::path(operation_id = "get_instance", get, path = "/api/v1/instances/{id}", tag = "instances",
    params(("id" = String, Path, description = "the instance's uuid or alias")),
    responses((status = 200, body = InstanceView), (status = "default", body = ErrorBody)))]
async fn get(path: web::Path<String>, state: web::Data<CloudState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.instances.get(&path).await?))
}

/// An answer of the agent, passed on as it is (its codes mean what they mean on the agent).
fn passed_on(status: reqwest::StatusCode, body: &Value) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(status.as_u16())
        .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY);
    if body.is_null() {
        HttpResponse::build(status).finish()
    } else {
        HttpResponse::build(status).json(body)
    }
}

fn unreachable(e: RemoteError) -> ApiError {
    InstanceError::Remote(e).into()
}

/// What `POST /instances/:id` does on the owning host.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // passed on to the agent, which reads it
enum InstanceAction {
    Start,
    Stop,
    Reboot,
}

/// The query of an action: the agent's, passed on as it is.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct ActionQuery {
    /// `start` (the default), `stop` or `reboot`.
    #[param(inline)]
    action: Option<InstanceAction>,
    /// stop: power off at once; reboot: hard reset.
    force: Option<bool>,
    /// stop and reboot: wait until the instance is stopped, or running again (default), or
    /// answer at once (202).
    wait: Option<bool>,
}

/// `?action=start|stop|reboot`, on the owning host: the agent's answer is passed on (its
/// instance, as the agent shows it).
#[utoipa::path(operation_id = "instance_action", post, path = "/api/v1/instances/{id}", tag = "instances",
    params(("id" = String, Path, description = "the instance's uuid or alias"), ActionQuery),
    security(("bearer" = []), ("basic" = [])),
    responses((status = 200, body = Object, description = "the agent's answer: its instance"),
              (status = 202, body = Object, description = "the agent's answer (`wait=false`): its instance"),
              (status = "default", body = ErrorBody)))]
async fn action(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<CloudState>,
) -> Result<HttpResponse, ApiError> {
    require_user(&req, &state)?;
    let (instance, host) = state.instances.owner(&path).await?;
    if instance.phase != Phase::Created {
        return Err(provisioning(&instance.uuid, instance.phase));
    }
    let query = req.query_string();
    let target =
        format!("/api/v1/instances/{}{}{query}", instance.uuid, if query.is_empty() { "" } else { "?" });
    let answer =
        state.instances.remote().call(&host, Method::POST, &target, None).await.map_err(unreachable)?;
    if let (true, Some(now)) = (answer.status.is_success(), answer.body["state"].as_str()) {
        state.instances.note_state(&instance.uuid, now).await?;
    }
    Ok(passed_on(answer.status, &answer.body))
}

fn provisioning(uuid: &Uuid, phase: Phase) -> ApiError {
    let message = match phase {
        Phase::Failed => format!("instance {uuid} failed to be created: only DELETE applies"),
        _ => format!("instance {uuid} is still being created"),
    };
    ApiError::new(ErrorCode::InstanceProvisioning, message)
}

/// Destroys the instance on its host, then forgets it. A failed create is only forgotten.
#[utoipa::path(operation_id = "delete_instance", delete, path = "/api/v1/instances/{id}", tag = "instances",
    params(("id" = String, Path, description = "the instance's uuid or alias")),
    security(("bearer" = []), ("basic" = [])),
    responses((status = 204), (status = "default", body = ErrorBody)))]
async fn delete(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<CloudState>,
) -> Result<HttpResponse, ApiError> {
    require_user(&req, &state)?;
    let instance = state.instances.get(&path).await?;
    match instance.phase {
        Phase::Failed => {
            state.instances.forget(&instance.uuid).await?;
            return Ok(HttpResponse::NoContent().finish());
        }
        Phase::Provisioning => return Err(provisioning(&instance.uuid, instance.phase)),
        Phase::Created => {}
    }
    let (instance, host) = state.instances.owner(&path).await?;
    let target = format!("/api/v1/instances/{}", instance.uuid);
    let answer =
        state.instances.remote().call(&host, Method::DELETE, &target, None).await.map_err(unreachable)?;
    let gone = answer.status.is_success() || answer.code() == Some("InstanceNotFound");
    if !gone {
        return Ok(passed_on(answer.status, &answer.body));
    }
    state.instances.forget(&instance.uuid).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Hop-by-hop headers, which a proxy must not pass on (RFC 9110 7.6.1), and what reqwest sets.
const NOT_PASSED: [&str; 7] =
    ["connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host", "authorization"];

/// Anything under `/instances/:id/`, on the owning host: the request body (4 MiB at most)
/// forwarded, the answer streamed back as it comes (a console that follows never ends).
async fn proxy(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    state: web::Data<CloudState>,
) -> Result<HttpResponse, ApiError> {
    require_user(&req, &state)?;
    let (id, rest) = path.into_inner();
    let (instance, host) = state.instances.owner(&id).await?;
    let body = super::body(&req, payload).await?;
    let query = req.query_string();
    let target = format!(
        "/api/v1/instances/{}/{rest}{}{query}",
        instance.uuid,
        if query.is_empty() { "" } else { "?" }
    );
    let method = Method::from_bytes(req.method().as_str().as_bytes())
        .map_err(|_| ApiError::invalid(format!("method {} cannot be proxied", req.method())))?;
    let remote = state.instances.remote();
    let mut request = remote.stream_request(&host, method, &target);
    for (name, value) in req.headers() {
        if !NOT_PASSED.contains(&name.as_str()) {
            request = request.header(name.as_str(), value.as_bytes());
        }
    }
    let response = remote.send(&host, request.body(body.to_vec())).await.map_err(unreachable)?;
    let status = actix_web::http::StatusCode::from_u16(response.status().as_u16())
        .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY);
    let mut answer = HttpResponse::build(status);
    for (name, value) in response.headers() {
        // The length is the stream's; the request id is this request's own.
        if !NOT_PASSED.contains(&name.as_str()) && !matches!(name.as_str(), "content-length" | "x-request-id")
        {
            answer.insert_header((name.as_str(), value.as_bytes()));
        }
    }
    Ok(answer.streaming(response.bytes_stream()))
}

/// The routes [`proxy`] serves: the agent's, under `/instances/:id/`, each passed on to the
/// owning host and its answer streamed back as it is (the agent's document describes them).
/// Only their documentation is here.
#[allow(dead_code)]
pub(super) mod proxied {
    use imgapi_client::ErrorBody;
    use service_kit::openapi::Binary;

    /// A snapshot's name (the agent's `SnapshotBody`).
    #[derive(utoipa::ToSchema)]
    struct SnapshotBody {
        name: String,
    }

    /// What `POST /instances/:id/snapshots/:name` does.
    #[derive(utoipa::ToSchema)]
    #[schema(rename_all = "lowercase")]
    enum SnapshotAction {
        /// Puts the disk back as it was at the snapshot.
        Rollback,
    }

    /// The serial console, from the owning host: what its ring buffer holds, then (with
    /// `follow`) everything new, for as long as the client stays.
    #[utoipa::path(operation_id = "read_console", get, path = "/api/v1/instances/{id}/console", tag = "instances",
        params(("id" = String, Path, description = "the instance's uuid or alias"),
               ("follow" = Option<bool>, Query, description = "keep the response open and stream new output")),
        security(("bearer" = []), ("basic" = [])),
        responses((status = 200, content_type = "application/octet-stream", body = Binary),
                  (status = "default", body = ErrorBody)))]
    fn read_console() {}

    /// Input for the guest's serial console (the request body, as is).
    #[utoipa::path(operation_id = "write_console", post, path = "/api/v1/instances/{id}/console", tag = "instances",
        params(("id" = String, Path, description = "the instance's uuid or alias")),
        request_body(content = Binary, content_type = "application/octet-stream"),
        security(("bearer" = []), ("basic" = [])),
        responses((status = 204), (status = "default", body = ErrorBody)))]
    fn write_console() {}

    /// The whole guest configuration (the agent's `GuestConfig`).
    #[utoipa::path(operation_id = "get_guest", get, path = "/api/v1/instances/{id}/guest", tag = "instances",
        params(("id" = String, Path, description = "the instance's uuid or alias")),
        security(("bearer" = []), ("basic" = [])),
        responses((status = 200, body = Object, description = "the agent's `GuestConfig`"),
                  (status = "default", body = ErrorBody)))]
    fn get_guest() {}

    /// Changes the guest configuration (the agent's `GuestUpdate`: a merge; absent fields stay,
    /// `null` clears). The guest sees it from its next start.
    #[utoipa::path(operation_id = "update_guest", patch, path = "/api/v1/instances/{id}/guest", tag = "instances",
        params(("id" = String, Path, description = "the instance's uuid or alias")),
        request_body(content = Object, description = "the agent's `GuestUpdate`"),
        security(("bearer" = []), ("basic" = [])),
        responses((status = 200, body = Object, description = "the agent's `GuestConfig`"),
                  (status = "default", body = ErrorBody)))]
    fn update_guest() {}

    /// The instance's disk snapshots, oldest first.
    #[utoipa::path(operation_id = "list_snapshots", get, path = "/api/v1/instances/{id}/snapshots", tag = "instances",
        params(("id" = String, Path, description = "the instance's uuid or alias")),
        security(("bearer" = []), ("basic" = [])),
        responses((status = 200, body = [String]), (status = "default", body = ErrorBody)))]
    fn list_snapshots() {}

    /// Snapshots a stopped instance's disk; answers the snapshots.
    #[utoipa::path(operation_id = "create_snapshot", post, path = "/api/v1/instances/{id}/snapshots", tag = "instances",
        params(("id" = String, Path, description = "the instance's uuid or alias")),
        request_body = SnapshotBody, security(("bearer" = []), ("basic" = [])),
        responses((status = 201, body = [String]), (status = "default", body = ErrorBody)))]
    fn create_snapshot() {}

    /// Rolls a stopped instance's disk back to a snapshot (`action=rollback`); answers the
    /// snapshots.
    #[utoipa::path(operation_id = "rollback_snapshot", post, path = "/api/v1/instances/{id}/snapshots/{name}", tag = "instances",
        params(("id" = String, Path, description = "the instance's uuid or alias"), ("name" = String, Path),
               ("action" = inline(SnapshotAction), Query)),
        security(("bearer" = []), ("basic" = [])),
        responses((status = 200, body = [String]), (status = "default", body = ErrorBody)))]
    fn rollback_snapshot() {}

    /// Deletes a snapshot.
    #[utoipa::path(operation_id = "delete_snapshot", delete, path = "/api/v1/instances/{id}/snapshots/{name}", tag = "instances",
        params(("id" = String, Path, description = "the instance's uuid or alias"), ("name" = String, Path)),
        security(("bearer" = []), ("basic" = [])),
        responses((status = 204), (status = "default", body = ErrorBody)))]
    fn delete_snapshot() {}

    /// Publishes a stopped instance's disk as a new image on one of the owning agent's IMGAPI
    /// sources; answers the image's manifest.
    #[utoipa::path(operation_id = "publish_instance", post, path = "/api/v1/instances/{id}/publish", tag = "instances",
        params(("id" = String, Path, description = "the instance's uuid or alias")),
        request_body(content = Object, description = "the agent's `PublishBody`: `{\"name\", \"version\", \"os\", \"description\", \"source\"}`"),
        security(("bearer" = []), ("basic" = [])),
        responses((status = 201, body = Object, description = "the IMGAPI manifest of the new image"),
                  (status = "default", body = ErrorBody)))]
    fn publish_instance() {}
}
