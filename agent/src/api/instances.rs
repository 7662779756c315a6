//! `/api/v1/instances`: create (and start), list, get, start/stop/reboot, delete, and the
//! serial console. The routes of the seed's curl examples work as written: `POST` with
//! `{"ima","mem","cpu"}` creates and starts, `PUT /instances/:id` stops, `POST /instances/:id`
//! starts, `DELETE` stops (if needed) and destroys.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use imgapi_client::ErrorBody;
use serde::{Deserialize, Serialize};
use service_kit::openapi::Binary;
use uuid::Uuid;

use super::error::ApiError;
use super::{blocking, json_body, require_auth, AgentState};
use crate::error_code::ErrorCode;
use crate::guest::{GuestConfig, GuestUpdate};
use crate::hypervisor::Firmware;
use crate::instance::manager::{CreateRequest, Instances, SnapshotChange};
use crate::instance::record::{InstanceRecord, NicRecord, NicRequest, Transition};
use crate::instance::state::InstanceState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/instances", web::get().to(list))
        .route("/instances", web::post().to(create))
        .route("/instances/{id}", web::get().to(get))
        .route("/instances/{id}", web::post().to(action))
        .route("/instances/{id}", web::put().to(stop_seed))
        .route("/instances/{id}", web::delete().to(delete))
        .route("/instances/{id}/publish", web::post().to(publish))
        .route("/instances/{id}/snapshots", web::get().to(snapshots))
        .route("/instances/{id}/snapshots", web::post().to(snapshot_create))
        .route("/instances/{id}/snapshots/{name}", web::post().to(snapshot_action))
        .route("/instances/{id}/snapshots/{name}", web::delete().to(snapshot_delete))
        .route("/instances/{id}/guest", web::get().to(guest_get))
        .route("/instances/{id}/guest", web::patch().to(guest_update))
        .route("/instances/{id}/console", web::get().to(console_read))
        .route("/instances/{id}/console", web::post().to(console_write));
}

pub(super) fn instance_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text)
        .map_err(|_| ApiError::new(ErrorCode::InstanceNotFound, format!("{text:?} is not an instance uuid")))
}

pub(super) use service_kit::api_error::query;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Also list destroyed instances (from the history).
    #[serde(default)]
    destroyed: bool,
}

/// The instances.
#[utoipa::path(operation_id = "list_instances", get, path = "/api/v1/instances", tag = "instances", params(ListQuery),
    responses((status = 200, body = [InstanceView]), (status = "default", body = ErrorBody)))]
async fn list(req: HttpRequest, state: web::Data<AgentState>) -> Result<HttpResponse, ApiError> {
    let q: ListQuery = query(&req)?;
    let mut records = state.instances.list();
    if q.destroyed {
        records.extend(state.instances.destroyed());
    }
    Ok(HttpResponse::Ok().json(records.iter().map(InstanceView::of).collect::<Vec<_>>()))
}

/// One instance.
#[utoipa::path(operation_id = "get_instance", get, path = "/api/v1/instances/{id}", tag = "instances", params(("id" = Uuid, Path)),
    responses((status = 200, body = InstanceView), (status = "default", body = ErrorBody)))]
async fn get(path: web::Path<String>, state: web::Data<AgentState>) -> Result<HttpResponse, ApiError> {
    let uuid = instance_id(&path)?;
    Ok(HttpResponse::Ok().json(InstanceView::of(&state.instances.get(&uuid)?)))
}

/// A NIC of a create request: `<network>[,vlan=<id>][,mac=<mac>]` or the object.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // the schema of what `nic_request` reads
enum NicSpec {
    Short(String),
    Full(NicRequest),
}

/// The create body. The seed's short names (`ima`, `mem`, `cpu`) are accepted as aliases.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateInstance {
    /// The uuid to give the instance (for a caller that must be able to retry, such as
    /// cloudapi); a new one by default. 409 `InstanceExists` if it is taken.
    #[serde(default)]
    uuid: Option<Uuid>,
    /// Absent or null: a blank disk of `disk_mib` (for an install from an ISO).
    #[serde(default, alias = "ima")]
    image: Option<Uuid>,
    #[serde(default, alias = "mem", alias = "memory")]
    memory_mib: Option<u64>,
    #[serde(default, alias = "cpu")]
    vcpus: Option<u32>,
    #[serde(default)]
    alias: Option<String>,
    #[serde(default, alias = "disk")]
    disk_mib: Option<u64>,
    /// One entry per NIC: `{"network", "vlan", "mac"}` or its short form
    /// `<network>[,vlan=<id>][,mac=<mac>]`, where the network is `user`, `switch:<name>` or
    /// `bridge:<host bridge>`. Default: one `user` NIC under QEMU, none under bhyve (which has
    /// no user-mode network).
    #[serde(default)]
    #[schema(value_type = Option<Vec<NicSpec>>)]
    nics: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    firmware: Option<Firmware>,
    /// What the guest is told about itself (see [`GuestConfig`]).
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    ssh_keys: Vec<String>,
    #[serde(default)]
    user_data: Option<String>,
    #[serde(default)]
    network_config: Option<String>,
    #[serde(default)]
    metadata: std::collections::BTreeMap<String, String>,
    /// An installer ISO (by name) attached as a CD.
    #[serde(default)]
    cdrom: Option<String>,
    /// `disk` (default) or `cd`.
    #[serde(default)]
    boot: Option<String>,
    /// Start it once created (default).
    #[serde(default)]
    start: Option<bool>,
}

/// A NIC of a create request, in either of its forms.
fn nic_request(value: serde_json::Value) -> Result<NicRequest, ApiError> {
    let invalid = |message: String| ApiError::new(ErrorCode::InvalidParameter, format!("nics: {message}"));
    match value {
        serde_json::Value::String(text) => NicRequest::parse(&text).map_err(invalid),
        object @ serde_json::Value::Object(_) => {
            serde_json::from_value(object).map_err(|e| invalid(e.to_string()))
        }
        other => Err(invalid(format!("{other} is neither a string nor an object"))),
    }
}

/// Creates an instance (and starts it, unless `"start": false`).
#[utoipa::path(operation_id = "create_instance", post, path = "/api/v1/instances", tag = "instances", request_body = CreateInstance,
    security(("bearer" = []), ("basic" = [])),
    responses((status = 201, body = InstanceView), (status = "default", body = ErrorBody)))]
async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AgentState>,
) -> Result<HttpResponse, ApiError> {
    require_auth(&req, &state)?;
    let body = super::read_body(&req, payload).await?;
    let body: CreateInstance = json_body(&body, "instance request")?;
    let instances = state.instances.clone();
    let boot_from_cdrom = super::isos::parse_boot(body.boot.as_deref())?;
    let nics = match body.nics {
        Some(nics) => nics.into_iter().map(nic_request).collect::<Result<Vec<_>, _>>()?,
        None if instances.hypervisor_kind() == "qemu" => vec![NicRequest::on("user")],
        None => Vec::new(),
    };
    let request = CreateRequest {
        uuid: body.uuid,
        image: body.image,
        alias: body.alias,
        vcpus: body.vcpus.unwrap_or(1),
        memory_mib: body.memory_mib.unwrap_or(512),
        disk_mib: body.disk_mib,
        nics,
        firmware: body.firmware,
        guest: GuestConfig {
            hostname: body.hostname,
            ssh_keys: body.ssh_keys,
            user_data: body.user_data,
            network_config: body.network_config,
            metadata: body.metadata,
        },
        cdrom: body.cdrom,
        boot_from_cdrom,
        start: body.start.unwrap_or(true),
    };
    let record = blocking(move || instances.create(request)).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/instances/{}", record.uuid)))
        .json(InstanceView::of(&record)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ActionQuery {
    /// `start` (the default, as in the seed's `POST /instances/:id`), `stop` or `reboot`.
    #[serde(default)]
    #[param(inline)]
    action: Option<InstanceAction>,
    /// stop: power off at once; reboot: hard reset.
    #[serde(default)]
    force: bool,
    /// stop and reboot: wait until the instance is stopped, or running again after its reboot
    /// (default), or answer at once (202).
    #[serde(default)]
    wait: Option<bool>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
enum InstanceAction {
    Start,
    Stop,
    Reboot,
}

/// Starts (the default action), stops or reboots an instance. A stop waits until the instance
/// is stopped, a reboot until it runs again (200), unless `wait=false` (202).
#[utoipa::path(operation_id = "instance_action", post, path = "/api/v1/instances/{id}", tag = "instances", params(("id" = Uuid, Path), ActionQuery),
    security(("bearer" = []), ("basic" = [])),
    responses((status = 200, body = InstanceView), (status = 202, body = InstanceView),
              (status = "default", body = ErrorBody)))]
async fn action(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AgentState>,
) -> Result<HttpResponse, ApiError> {
    require_auth(&req, &state)?;
    let uuid = instance_id(&path)?;
    let q: ActionQuery = query(&req)?;
    let instances = state.instances.clone();
    match q.action.unwrap_or(InstanceAction::Start) {
        InstanceAction::Start => {
            Ok(HttpResponse::Ok().json(InstanceView::of(&blocking(move || instances.start(&uuid)).await?)))
        }
        InstanceAction::Stop => stop(instances, uuid, q.force, q.wait.unwrap_or(true)).await,
        InstanceAction::Reboot => reboot(instances, uuid, q.force, q.wait.unwrap_or(true)).await,
    }
}

/// Stops an instance and waits until it is stopped (the seed's `PUT`).
#[utoipa::path(operation_id = "stop_instance", put, path = "/api/v1/instances/{id}", tag = "instances", params(("id" = Uuid, Path)),
    security(("bearer" = []), ("basic" = [])),
    responses((status = 200, body = InstanceView), (status = "default", body = ErrorBody)))]
async fn stop_seed(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AgentState>,
) -> Result<HttpResponse, ApiError> {
    require_auth(&req, &state)?;
    let uuid = instance_id(&path)?;
    stop(state.instances.clone(), uuid, false, true).await
}

async fn stop(
    instances: Arc<Instances>,
    uuid: Uuid,
    force: bool,
    wait: bool,
) -> Result<HttpResponse, ApiError> {
    let stopping = instances.clone();
    let record = blocking(move || stopping.stop(&uuid, force)).await?;
    if !wait {
        return Ok(HttpResponse::Accepted().json(InstanceView::of(&record)));
    }
    let deadline = instances.stop_deadline();
    let record = blocking(move || instances.wait_while_running(&uuid, deadline)).await?;
    if record.state == InstanceState::Running {
        return Err(ApiError::new(
            ErrorCode::StopTimeout,
            format!("instance {uuid} is still running after {deadline:?}"),
        ));
    }
    Ok(HttpResponse::Ok().json(InstanceView::of(&record)))
}

/// How long the run after a reboot must last before the reboot counts as done.
const REBOOT_SETTLE: Duration = Duration::from_secs(2);

/// Reboots and, with `wait`, waits until the new run is up: the instance then, or why it is not
/// running again.
async fn reboot(
    instances: Arc<Instances>,
    uuid: Uuid,
    force: bool,
    wait: bool,
) -> Result<HttpResponse, ApiError> {
    let rebooting = instances.clone();
    let record = blocking(move || rebooting.reboot(&uuid, force)).await?;
    if !wait {
        return Ok(HttpResponse::Accepted().json(InstanceView::of(&record)));
    }
    // The stop (forced after the timeout), then the start of the new run.
    let deadline = instances.stop_deadline() + Duration::from_secs(30);
    let pid = record.pid;
    let after = blocking(move || {
        let after = instances.wait_for_reboot(&uuid, pid, deadline)?;
        if after.state != InstanceState::Running || after.pid == pid {
            return Ok(after);
        }
        // A hypervisor that cannot run the guest exits at once: the new run counts as up once
        // it has lasted a moment (QEMU is not waited for beyond its start).
        instances.wait_for_reboot(&uuid, after.pid, REBOOT_SETTLE)
    })
    .await?;
    match after.state {
        InstanceState::Running if after.pid != pid => Ok(HttpResponse::Ok().json(InstanceView::of(&after))),
        InstanceState::Running => Err(ApiError::new(
            ErrorCode::StopTimeout,
            format!("instance {uuid} has not rebooted after {deadline:?}"),
        )),
        state => Err(ApiError::new(
            ErrorCode::RebootFailed,
            format!(
                "instance {uuid} did not come back after its reboot: it is {} ({})",
                format!("{state:?}").to_lowercase(),
                after.reason
            ),
        )),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeleteQuery {
    /// Stop a running instance with the power button first (waiting for the guest, up to the
    /// stop timeout), instead of cutting its power: its disk is destroyed either way.
    #[serde(default)]
    graceful: bool,
}

/// Destroys an instance: its disk and record go, its image stays. A running instance is
/// powered off at once, unless `graceful=true`.
#[utoipa::path(operation_id = "delete_instance", delete, path = "/api/v1/instances/{id}", tag = "instances",
    params(("id" = Uuid, Path), DeleteQuery),
    security(("bearer" = []), ("basic" = [])),
    responses((status = 204), (status = "default", body = ErrorBody)))]
async fn delete(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AgentState>,
) -> Result<HttpResponse, ApiError> {
    require_auth(&req, &state)?;
    let uuid = instance_id(&path)?;
    let q: DeleteQuery = query(&req)?;
    let instances = state.instances.clone();
    instances.get(&uuid)?;
    // A task of its own: a client that goes away (a Ctrl-C during a graceful stop) does not
    // leave the instance stopped but not destroyed.
    let deleting = actix_web::rt::spawn(async move {
        // A running instance is stopped first: by force (its disk is about to go, and a booting
        // guest ignores the power button for as long as the stop timeout), or gracefully if asked.
        if instances.get(&uuid)?.state == InstanceState::Running {
            match stop(instances.clone(), uuid, !q.graceful, true).await {
                // It stopped on its own in between: fine.
                Err(e) if e.code == ErrorCode::InstanceNotRunning => {}
                Err(e) => return Err(e),
                Ok(_) => {}
            }
        }
        blocking(move || instances.destroy(&uuid)).await
    });
    deleting.await.map_err(|e| ApiError::from_error(ErrorCode::InternalError, &e))??;
    Ok(HttpResponse::NoContent().finish())
}

/// An instance as reads show it: user-data and network config often hold secrets (passwords,
/// tokens) and reads need no credentials, so only their sizes are shown; the whole guest
/// configuration is at `GET /instances/:id/guest`, with credentials.
#[derive(Serialize, utoipa::ToSchema)]
pub struct InstanceView {
    uuid: Uuid,
    alias: String,
    /// The image its disk was cloned from (none: a blank disk).
    image: Option<Uuid>,
    vcpus: u32,
    memory_mib: u64,
    disk_mib: u64,
    nics: Vec<NicRecord>,
    firmware: Firmware,
    /// The hypervisor's name for the VM.
    vm_name: String,
    state: InstanceState,
    /// Why it is in this state.
    reason: String,
    /// The hypervisor process, while running.
    pid: Option<u32>,
    created_at: String,
    /// The last state changes, oldest first.
    history: Vec<Transition>,
    guest: GuestSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    cdrom: Option<String>,
    boot_from_cdrom: bool,
}

/// The guest configuration without its values, which reads without credentials must not show
/// (a metadata entry is often a password): how many SSH keys, the sizes of user-data and
/// network config, the metadata keys. `GET /instances/:id/guest` (with credentials) has it all.
#[derive(Serialize, utoipa::ToSchema)]
pub struct GuestSummary {
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<String>,
    #[serde(skip_serializing_if = "is_zero")]
    ssh_key_count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_data_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    network_config_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    metadata_keys: Vec<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl InstanceView {
    fn of(record: &InstanceRecord) -> InstanceView {
        // Every field by name: a field added to the record must be placed in the view (or
        // kept out of it) on purpose, or this does not compile.
        let InstanceRecord {
            uuid,
            alias,
            image,
            vcpus,
            memory_mib,
            disk_mib,
            nics,
            firmware,
            vm_name,
            state,
            reason,
            pid,
            created_at,
            history,
            guest,
            cdrom,
            boot_from_cdrom,
        } = record.clone();
        InstanceView {
            uuid,
            alias,
            image,
            vcpus,
            memory_mib,
            disk_mib,
            nics,
            firmware,
            vm_name,
            state,
            reason,
            pid,
            created_at,
            history,
            guest: GuestSummary {
                hostname: guest.hostname,
                ssh_key_count: guest.ssh_keys.len(),
                user_data_bytes: guest.user_data.as_deref().map(str::len),
                network_config_bytes: guest.network_config.as_deref().map(str::len),
                metadata_keys: guest.metadata.into_keys().collect(),
            },
            cdrom,
            boot_from_cdrom,
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    name: String,
    version: String,
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    description: Option<String>,
    /// The URL of a configured source; default: the first one with credentials.
    #[serde(default)]
    source: Option<String>,
}

/// Publishes a stopped instance's disk as a new image on an IMGAPI source; answers the
/// image's manifest.
#[utoipa::path(operation_id = "publish_instance", post, path = "/api/v1/instances/{id}/publish", tag = "instances", params(("id" = Uuid, Path)),
    request_body = PublishBody, security(("bearer" = []), ("basic" = [])),
    responses((status = 201, body = Object, description = "the IMGAPI manifest of the new image"),
              (status = "default", body = ErrorBody)))]
async fn publish(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AgentState>,
) -> Result<HttpResponse, ApiError> {
    require_auth(&req, &state)?;
    let body = super::read_body(&req, payload).await?;
    let uuid = instance_id(&path)?;
    let body: PublishBody = json_body(&body, "publish request")?;
    let mut sources = state.importer.sources().sources();
    let source = match &body.source {
        Some(url) => sources.find(|s| s.base == url.trim_end_matches('/')),
        None => sources.find(|s| s.has_credentials()),
    }
    .cloned()
    .ok_or_else(|| {
        ApiError::new(
            ErrorCode::NoSources,
            "no configured source to publish to (one with credentials, or the \"source\" given)",
        )
    })?;
    let instances = state.instances.clone();
    let image = crate::publish::ImageInfo {
        name: body.name,
        version: body.version,
        os: body.os,
        description: body.description,
    };
    let manifest = blocking(move || instances.publish_image(&uuid, &source, &image)).await?;
    Ok(HttpResponse::Created().json(manifest))
}

/// The instance's disk snapshots, oldest first.
#[utoipa::path(operation_id = "list_snapshots", get, path = "/api/v1/instances/{id}/snapshots", tag = "instances", params(("id" = Uuid, Path)),
    responses((status = 200, body = [String]), (status = "default", body = ErrorBody)))]
async fn snapshots(path: web::Path<String>, state: web::Data<AgentState>) -> Result<HttpResponse, ApiError> {
    let uuid = instance_id(&path)?;
    let instances = state.instances.clone();
    let names = blocking(move || instances.snapshots(&uuid)).await?;
    Ok(HttpResponse::Ok().json(names))
}

async fn change_snapshot(
    state: &AgentState,
    id: &str,
    change: SnapshotChange,
    name: String,
) -> Result<Vec<String>, ApiError> {
    let uuid = instance_id(id)?;
    let instances = state.instances.clone();
    blocking(move || instances.change_snapshot(&uuid, change, &name)).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SnapshotBody {
    name: String,
}

/// Snapshots a stopped instance's disk; answers the snapshots.
#[utoipa::path(operation_id = "create_snapshot", post, path = "/api/v1/instances/{id}/snapshots", tag = "instances", params(("id" = Uuid, Path)),
    request_body = SnapshotBody, security(("bearer" = []), ("basic" = [])),
    responses((status = 201, body = [String]), (status = "default", body = ErrorBody)))]
async fn snapshot_create(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AgentState>,
) -> Result<HttpResponse, ApiError> {
    require_auth(&req, &state)?;
    let body = super::read_body(&req, payload).await?;
    let body: SnapshotBody = json_body(&body, "snapshot request")?;
    Ok(HttpResponse::Created().json(change_snapshot(&state, &path, SnapshotChange::Create, body.name).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct SnapshotActionQuery {
    #[param(inline)]
    action: SnapshotAction,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
enum SnapshotAction {
    /// Puts the disk back as it was at the snapshot.
    Rollback,
}

/// Rolls a stopped instance's disk back to a snapshot (`action=rollback`); answers the
/// snapshots.
#[utoipa::path(operation_id = "rollback_snapshot", post, path = "/api/v1/instances/{id}/snapshots/{name}", tag = "instances",
    params(("id" = Uuid, Path), ("name" = String, Path), SnapshotActionQuery),
    security(("bearer" = []), ("basic" = [])),
    responses((status = 200, body = [String]), (status = "default", body = ErrorBody)))]
async fn snapshot_action(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AgentState>,
) -> Result<HttpResponse, ApiError> {
    require_auth(&req, &state)?;
    let q: SnapshotActionQuery = query(&req)?;
    let SnapshotAction::Rollback = q.action;
    let (id, name) = path.into_inner();
    Ok(HttpResponse::Ok().json(change_snapshot(&state, &id, SnapshotChange::Rollback, name).await?))
}

/// Deletes a snapshot.
#[utoipa::path(operation_id = "delete_snapshot", delete, path = "/api/v1/instances/{id}/snapshots/{name}", tag = "instances",
    params(("id" = Uuid, Path), ("name" = String, Path)), security(("bearer" = []), ("basic" = [])),
    responses((status = 204), (status = "default", body = ErrorBody)))]
async fn snapshot_delete(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AgentState>,
) -> Result<HttpResponse, ApiError> {
    require_auth(&req, &state)?;
    let (id, name) = path.into_inner();
    change_snapshot(&state, &id, SnapshotChange::Delete, name).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The whole guest configuration (user-data included).
#[utoipa::path(operation_id = "get_guest", get, path = "/api/v1/instances/{id}/guest", tag = "instances", params(("id" = Uuid, Path)),
    security(("bearer" = []), ("basic" = [])),
    responses((status = 200, body = GuestConfig), (status = "default", body = ErrorBody)))]
async fn guest_get(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AgentState>,
) -> Result<HttpResponse, ApiError> {
    require_auth(&req, &state)?;
    let uuid = instance_id(&path)?;
    Ok(HttpResponse::Ok().json(state.instances.get(&uuid)?.guest))
}

/// Changes the guest configuration (merge: absent fields stay, `null` clears, metadata entries
/// set to `null` go). The guest sees it from its next start.
#[utoipa::path(operation_id = "update_guest", patch, path = "/api/v1/instances/{id}/guest", tag = "instances", params(("id" = Uuid, Path)),
    request_body = GuestUpdate, security(("bearer" = []), ("basic" = [])),
    responses((status = 200, body = GuestConfig), (status = "default", body = ErrorBody)))]
async fn guest_update(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AgentState>,
) -> Result<HttpResponse, ApiError> {
    require_auth(&req, &state)?;
    let body = super::read_body(&req, payload).await?;
    let uuid = instance_id(&path)?;
    let update: GuestUpdate = json_body(&body, "guest update")?;
    let instances = state.instances.clone();
    let record = blocking(move || instances.update_guest(&uuid, update)).await?;
    Ok(HttpResponse::Ok().json(record.guest))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ConsoleQuery {
    /// Keep the response open and stream new output as it comes.
    #[serde(default)]
    follow: bool,
}

/// The serial console: what the ring buffer holds, then (with `follow`) everything new, for as
/// long as the client stays. Any number of readers.
#[utoipa::path(operation_id = "read_console", get, path = "/api/v1/instances/{id}/console", tag = "instances", params(("id" = Uuid, Path), ConsoleQuery),
    security(("bearer" = []), ("basic" = [])),
    responses((status = 200, content_type = "application/octet-stream", body = Binary),
              (status = "default", body = ErrorBody)))]
async fn console_read(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AgentState>,
) -> Result<HttpResponse, ApiError> {
    require_auth(&req, &state)?;
    let uuid = instance_id(&path)?;
    let q: ConsoleQuery = query(&req)?;
    let console = state.instances.console(&uuid)?;
    let mut response = HttpResponse::Ok();
    response.content_type("application/octet-stream").insert_header((header::CACHE_CONTROL, "no-store"));
    if !q.follow {
        return Ok(response.body(console.snapshot()));
    }
    let (backlog, live) = console.subscribe();
    let stream = futures_util::stream::once(async move { web::Bytes::from(backlog) })
        .chain(live)
        .map(Ok::<_, actix_web::Error>);
    Ok(response.streaming(stream))
}

/// Input for the guest's serial console (the request body, as is).
#[utoipa::path(operation_id = "write_console", post, path = "/api/v1/instances/{id}/console", tag = "instances", params(("id" = Uuid, Path)),
    request_body(content = Binary, content_type = "application/octet-stream"),
    security(("bearer" = []), ("basic" = [])),
    responses((status = 204), (status = "default", body = ErrorBody)))]
async fn console_write(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AgentState>,
) -> Result<HttpResponse, ApiError> {
    require_auth(&req, &state)?;
    let body = super::read_body(&req, payload).await?;
    let uuid = instance_id(&path)?;
    let console = state.instances.console(&uuid)?;
    // A write to a socket or tty that the guest may not be reading: off the async workers.
    web::block(move || console.write_input(&body))
        .await
        .map_err(|e| ApiError::from_error(ErrorCode::InternalError, &e))?
        .map_err(|e| {
            ApiError::new(
                ErrorCode::ConsoleNotConnected,
                format!("instance {uuid}: {}", service_kit::ErrorChain(&e)),
            )
        })?;
    Ok(HttpResponse::NoContent().finish())
}
