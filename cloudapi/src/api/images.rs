//! `GET /images`: the catalogue of the IMGAPI sources, each image with the hosts that already
//! hold it (an instance of it starts there without a download).

use actix_web::{web, HttpResponse};
use serde_json::Value;

use super::error::ApiError;
use super::CloudState;

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
