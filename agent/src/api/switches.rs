//! `/api/v1/switches`: the named switches NICs join (`switch:<name>`): list and show them
//! with whether their bridge exists on the host and which NICs are on them; create and delete
//! the ones made through the API.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

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

/// A switch with its state on the host (`None`: the interfaces could not be listed) and the
/// NICs of `instances` on it.
fn view(switch: Switch, interfaces: Option<&[String]>, instances: &[InstanceRecord]) -> Value {
    let mut nics = Vec::new();
    for record in instances {
        for nic in record.nics.iter().filter(|n| n.target() == NicNetwork::Switch(&switch.name)) {
            nics.push(json!({"instance": record.uuid, "mac": nic.mac, "vlan": nic.vlan}));
        }
    }
    let present = interfaces.map(|all| all.contains(&switch.bridge));
    let mut value = serde_json::to_value(switch).expect("switches serialise");
    value["bridge_present"] = json!(present);
    value["nics"] = json!(nics);
    value
}

/// The host's interfaces; a failure to list them is logged and shown as unknown.
async fn interfaces(state: &web::Data<AgentState>) -> Option<Vec<String>> {
    let switches = state.instances.switches().clone();
    match web::block(move || switches.host_interfaces()).await {
        Ok(Ok(list)) => Some(list),
        Ok(Err(error)) => {
            tracing::warn!(%error, "cannot list the host's interfaces");
            None
        }
        Err(_) => None,
    }
}

async fn list(state: web::Data<AgentState>) -> Result<HttpResponse, ApiError> {
    let interfaces = interfaces(&state).await;
    let switches = state.instances.switches().list();
    let instances = state.instances.list();
    let views: Vec<Value> =
        switches.into_iter().map(|s| view(s, interfaces.as_deref(), &instances)).collect();
    Ok(HttpResponse::Ok().json(views))
}

async fn get(path: web::Path<String>, state: web::Data<AgentState>) -> Result<HttpResponse, ApiError> {
    let switch = state.instances.switches().get(&path)?;
    let interfaces = interfaces(&state).await;
    Ok(HttpResponse::Ok().json(view(switch, interfaces.as_deref(), &state.instances.list())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default)]
    bridge: Option<String>,
    #[serde(default)]
    uplink: Option<String>,
}

async fn create(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AgentState>,
) -> Result<HttpResponse, ApiError> {
    require_auth(&req, &state)?;
    let body: CreateBody = json_body(&body, "switch")?;
    let switches = state.instances.switches().clone();
    let config = SwitchConfig { bridge: body.bridge, uplink: body.uplink };
    let switch = blocking(move || switches.create(&body.name, &config)).await?;
    let interfaces = interfaces(&state).await;
    Ok(HttpResponse::Created().json(view(switch, interfaces.as_deref(), &state.instances.list())))
}

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
