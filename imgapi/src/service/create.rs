//! CreateImage (`POST /images`) and AdminImportImage (`POST /images/:uuid?action=import`): the
//! body rules of sdc-imgapi's `apiCreateImage` / `apiAdminImportImage`, then full manifest
//! validation, then a new unactivated image in the store.

use std::sync::Arc;

use serde_json::{Map, Value};
use uuid::Uuid;

use super::{check_origin, quoted_list, Caller, ChannelScope, ImageError, Service};
use crate::manifest::upgrade::upgrade_manifest;
use crate::manifest::validate::{validate_full, FieldError};
use crate::manifest::{Image, ImageState, ZERO_OWNER};
use crate::params::{json_str, parse_lower_uuid};
use crate::store::Store;

/// Body keys CreateImage accepts (sdc-imgapi `apiCreateImage`).
pub(super) const CREATE_KEYS: &[&str] = &[
    "v",
    "owner",
    "name",
    "version",
    "description",
    "homepage",
    "eula",
    "icon",
    "type",
    "os",
    "origin",
    "public",
    "disabled",
    "acl",
    "error",
    "requirements",
    "users",
    "traits",
    "tags",
    "billing_tags",
    "generate_passwords",
    "inherited_directories",
    "channels",
    "files",
    "state",
];

/// Extra keys an import may carry, preserved from the source.
pub(super) const IMPORT_KEYS: &[&str] = &["uuid", "published_at", "urn"];

/// Keys allowed only when `type` is `zvol`.
pub(super) const ZVOL_KEYS: &[&str] = &["nic_driver", "disk_driver", "cpu_type", "image_size"];

/// Keys accepted in a body but never stored: the server manages them.
pub(super) const DROPPED_KEYS: &[&str] = &["files", "icon", "channels", "state"];

impl Service {
    /// CreateImage: a new unactivated image with a server-chosen uuid.
    pub async fn create_image(&self, caller: &Caller, body: Value) -> Result<Arc<Image>, ImageError> {
        let body = upgrade_if_old(object_body(body)?);
        if body.contains_key("state") {
            return Err(ImageError::ValidationFailed {
                message: "invalid image data: \"state\"".into(),
                errors: vec![FieldError {
                    field: "state".into(),
                    code: "NotAllowed".into(),
                    message: Some("Parameter cannot be set".into()),
                }],
            });
        }
        check_keys(&body, &[])?;
        let owner = resolve_owner(&body, caller)?;
        self.store_new(Uuid::new_v4(), body, owner, caller).await
    }

    /// AdminImportImage: the client's manifest, keeping its uuid and `published_at`.
    pub async fn import_image(
        &self,
        uuid: Uuid,
        caller: &Caller,
        body: Value,
    ) -> Result<Arc<Image>, ImageError> {
        if caller.account.is_some() {
            return Err(ImageError::OperatorOnly);
        }
        let mut body = upgrade_if_old(object_body(body)?);
        let body_uuid = body.get("uuid").and_then(Value::as_str).unwrap_or("undefined");
        if body_uuid != uuid.to_string() {
            return Err(ImageError::invalid_param(
                format!("URL UUID, \"{uuid}\" and body UUID, \"{body_uuid}\" do not match"),
                "uuid",
                "Invalid",
            ));
        }
        body.remove("uuid");
        if self.store.get(&uuid).is_some() {
            return Err(ImageError::UuidExists(uuid));
        }
        check_keys(&body, IMPORT_KEYS)?;
        let owner = resolve_owner(&body, caller)?;
        self.store_new(uuid, body, owner, caller).await
    }

    async fn store_new(
        &self,
        uuid: Uuid,
        mut body: Map<String, Value>,
        owner: String,
        caller: &Caller,
    ) -> Result<Arc<Image>, ImageError> {
        for key in DROPPED_KEYS {
            body.remove(*key);
        }
        // The reference coerces `image_size` with Number(); keep numeric strings working.
        if let Some(Value::String(s)) = body.get("image_size") {
            if let Ok(n) = s.trim().parse::<u64>() {
                body.insert("image_size".into(), Value::from(n));
            }
        }
        let mut fields = Map::new();
        fields.insert("v".into(), body.remove("v").unwrap_or(Value::from(2)));
        fields.insert("uuid".into(), Value::from(uuid.to_string()));
        fields.insert("owner".into(), Value::from(owner));
        fields.insert("state".into(), Value::from(ImageState::Unactivated.as_str()));
        fields.insert("disabled".into(), body.remove("disabled").unwrap_or(Value::Bool(false)));
        fields.insert("public".into(), body.remove("public").unwrap_or(Value::Bool(false)));
        fields.extend(body);
        if let ChannelScope::One(channel) = self.channel_scope(caller, false)? {
            fields.insert("channels".into(), Value::from(vec![channel]));
        }
        let image =
            Image { uuid, fields, activated: false, file: None, icon: None, rendered: Default::default() };
        let errors = validate_full(&image.validation_view(), self.validation_mode());
        if !errors.is_empty() {
            return Err(ImageError::validation(errors));
        }
        let origin = image.fields.get("origin").filter(|o| !o.is_null()).cloned();
        self.store
            .create(image, |store: &Store| match &origin {
                Some(origin) => check_origin(store, &uuid, origin),
                None => Ok(()),
            })
            .await
            .map_err(|e| match e {
                ImageError::Store(crate::store::StoreError::Exists(uuid)) => ImageError::UuidExists(uuid),
                other => other,
            })
    }
}

/// As sdc-imgapi: a body whose `v` is falsy goes through imgmanifest's upgrade (DSAPI-era
/// manifests); when that fails the body is used as it is and validation reports the problems.
fn upgrade_if_old(body: Map<String, Value>) -> Map<String, Value> {
    if body.get("v").is_some_and(crate::manifest::validate::js::truthy) {
        return body;
    }
    upgrade_manifest(body.clone()).unwrap_or(body)
}

fn object_body(body: Value) -> Result<Map<String, Value>, ImageError> {
    match body {
        Value::Object(map) => Ok(map),
        _ => Err(ImageError::ValidationFailed {
            message: "missing request body".into(),
            errors: vec![FieldError { field: "body".into(), code: "MissingParameter".into(), message: None }],
        }),
    }
}

/// `invalid extra parameters` for every key outside the allowed set (zvol keys only for zvols).
fn check_keys(body: &Map<String, Value>, also_allowed: &[&str]) -> Result<(), ImageError> {
    let is_zvol = body.get("type").and_then(Value::as_str) == Some("zvol");
    let extra: Vec<&str> = body
        .keys()
        .map(String::as_str)
        .filter(|k| {
            !(CREATE_KEYS.contains(k) || also_allowed.contains(k) || (is_zvol && ZVOL_KEYS.contains(k)))
        })
        .collect();
    if extra.is_empty() {
        return Ok(());
    }
    Err(ImageError::InvalidParameter {
        message: format!("invalid extra parameters: {}", quoted_list(extra.iter().copied())),
        errors: extra
            .iter()
            .map(|k| FieldError { field: (*k).into(), code: "Invalid".into(), message: None })
            .collect(),
    })
}

/// The owner of a new image: the body's, else `?account=`, else the zero uuid.
fn resolve_owner(body: &Map<String, Value>, caller: &Caller) -> Result<String, ImageError> {
    let given = match body.get("owner") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if parse_lower_uuid(s).is_some() => Some(s.clone()),
        Some(other) => {
            let shown = other.as_str().map(json_str).unwrap_or_else(|| other.to_string());
            return Err(ImageError::invalid_param(
                format!("invalid owner: {shown} is not a UUID"),
                "owner",
                "Invalid",
            ));
        }
    };
    match (given, caller.account) {
        (Some(owner), Some(account)) if owner != account.to_string() => Err(ImageError::invalid_param(
            format!("invalid owner: given owner, \"{owner}\", does not match account, \"{account}\""),
            "owner",
            "Invalid",
        )),
        (Some(owner), _) => Ok(owner),
        (None, Some(account)) => Ok(account.to_string()),
        (None, None) => Ok(ZERO_OWNER.to_string()),
    }
}
