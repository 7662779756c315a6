//! `GET /images`: the catalogue of the IMGAPI sources, each image with the hosts that already
//! hold it (an instance of it starts there without a download).

use actix_web::{web, HttpResponse};
use imgapi_client::ErrorBody;
use serde_json::Value;
use uuid::Uuid;

use super::error::ApiError;
use super::CloudState;

/// An image of the catalogue: its IMGAPI manifest as its source answers it (every field of
/// it), with `hosts`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // the schema of what `list` answers
pub struct CatalogueImage {
    uuid: Uuid,
    /// The hosts that hold it already (an instance of it starts there without a download).
    hosts: Vec<Holder>,
}

/// A host that holds an image.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct Holder {
    id: Uuid,
    name: String,
}

/// The images of every IMGAPI source of the config (the first source that lists an image
/// wins), each with the hosts that hold it. 503 `SourceUnavailable` when a source fails.
#[utoipa::path(operation_id = "list_images", get, path = "/api/v1/images", tag = "images",
    responses((status = 200, body = [CatalogueImage]), (status = "default", body = ErrorBody)))]
pub async fn list(state: web::Data<CloudState>) -> Result<HttpResponse, ApiError> {
    let mut images =
        state.instances.catalogue().list().await.map_err(crate::instances::InstanceError::from)?;
    let hosts = state.hosts.list().await?;
    for image in &mut images {
        let uuid = image.get("uuid").and_then(Value::as_str).unwrap_or_default().to_string();
        let holders: Vec<Value> = hosts
            .iter()
            .filter(|h| h.images.iter().any(|i| i.uuid.to_string() == uuid))
            .map(|h| serde_json::json!({"id": h.id, "name": h.name}))
            .collect();
        if let Some(object) = image.as_object_mut() {
            object.insert("hosts".into(), Value::Array(holders));
        }
    }
    Ok(HttpResponse::Ok().json(images))
}
