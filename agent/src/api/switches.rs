//! `/api/v1/switches`: the named switches NICs join (`switch:<name>`): list and show them
//! with whether their bridge exists on the host and which NICs are on them; create and delete
//! the ones made through the API.

use actix_web::{web, HttpRequest, HttpResponse};
use imgapi_client::ErrorBody;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::ApiError;
use super::{blocking, json_body, require_auth, AgentState};
use crate::instance::record::{InstanceRecord, NicNetwork};
use crate::network::{Switch, SwitchConfig};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/switches", web::get().to(list))
        .route("/switches", web::post().to(create))
        .route("/switches/{name}", web::get().to(get))
        .route("/switches/{name}", web::delete().to(delete));
}

/// A switch with its state on the host and the NICs on it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SwitchView {
    #[serde(flatten)]
    switch: Switch,
    /// Whether its bridge exists on the host (`null`: the interfaces could not be listed).
    bridge_present: Option<bool>,
    nics: Vec<SwitchNic>,
}

/// A NIC on a switch.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SwitchNic {
    instance: Uuid,
    mac: String,
    vlan: Option<u16>,
}

/// A switch with its state on the host (`None`: the interfaces could not be listed) and the
/// NICs of `instances` on it.
fn view(switch: Switch, interfaces: Option<&[String]>, instances: &[InstanceRecord]) -> SwitchView {
    let mut nics = Vec::new();
    for record in instances {
        for nic in record.nics.iter().filter(|n| n.target() == NicNetwork::Switch(&switch.name)) {
            nics.push(SwitchNic { instance: record.uuid, mac: nic.mac.clone(), vlan: nic.vlan });
        }
    }
    let bridge_present = interfaces.map(|all| all.contains(&switch.bridge));
    SwitchView { switch, bridge_present, nics }
}

/// The host's interfaces; a failure to list them is logged and shown as unknown.
async fn interfaces(state: &web::Data<AgentState>) -> Option<Vec<String>> {
    let switches = state.instances.switches().clone();
    match web::block(move || switches.host_interfaces()).await {
        Ok(Ok(list)) => Some(list),
        Ok(Err(error)) => {
            tracing::warn!(error = %service_kit::ErrorChain(&error), "cannot list the host's interfaces");
            None
        }
        Err(_) => None,
    }
}

/// The switches.
#[utoipa::path(operation_id = "list_switchs", get, path = "/api/v1/switches", tag = "switches",
    responses((status = 200, body = [SwitchView]), (status = "default", body = ErrorBody)))]
async fn list(state: web::Data<AgentState>) -> Result<HttpResponse, ApiError> {
    let interfaces = interfaces(&state).await;
    let switches = state.instances.switches().list();
    let instances = state.instances.list();
    let views: Vec<SwitchView> =
        switches.into_iter().map(|s| view(s, interfaces.as_deref(), &instances)).collect();
    Ok(HttpResponse::Ok().json(views))
}

/// One switch.
#[utoipa::path(operation_id = "get_switch", get, path = "/api/v1/switches/{name}", tag = "switches", params(("name" = String, Path)),
    responses((status = 200, body = SwitchView), (status = "default", body = ErrorBody)))]
async fn get(path: web::Path<String>, state: web::Data<AgentState>) -> Result<HttpResponse, ApiError> {
    let switch = state.instances.switches().get(&path)?;
    let interfaces = interfaces(&state).await;
    Ok(HttpResponse::Ok().json(view(switch, interfaces.as_deref(), &state.instances.list())))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateSwitch {
    name: String,
    #[serde(default)]
    bridge: Option<String>,
    #[serde(default)]
    uplink: Option<String>,
}

/// Creates a switch (and its bridge, when missing).
#[utoipa::path(operation_id = "create_switch", post, path = "/api/v1/switches", tag = "switches", request_body = CreateSwitch,
    security(("bearer" = []), ("basic" = [])),
    responses((status = 201, body = SwitchView), (status = "default", body = ErrorBody)))]
async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AgentState>,
) -> Result<HttpResponse, ApiError> {
    require_auth(&req, &state)?;
    let body = super::read_body(&req, payload).await?;
    let body: CreateSwitch = json_body(&body, "switch")?;
    let switches = state.instances.switches().clone();
    let config = SwitchConfig { bridge: body.bridge, uplink: body.uplink };
    let switch = blocking(move || switches.create(&body.name, &config)).await?;
    let interfaces = interfaces(&state).await;
    Ok(HttpResponse::Created().json(view(switch, interfaces.as_deref(), &state.instances.list())))
}

/// Deletes a switch made through the API (refused while NICs are on it).
#[utoipa::path(operation_id = "delete_switch", delete, path = "/api/v1/switches/{name}", tag = "switches", params(("name" = String, Path)),
    security(("bearer" = []), ("basic" = [])),
    responses((status = 204), (status = "default", body = ErrorBody)))]
async fn delete(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AgentState>,
) -> Result<HttpResponse, ApiError> {
    require_auth(&req, &state)?;
    let instances = state.instances.clone();
    let name = path.into_inner();
    blocking(move || instances.delete_switch(&name)).await?;
    Ok(HttpResponse::NoContent().finish())
}
