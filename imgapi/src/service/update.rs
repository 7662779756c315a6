//! UpdateImage (`POST /images/:uuid?action=update`): which keys may change, by whom and when
//! (imgmanifest's `mutable` flags plus sdc-imgapi's operator-only and unactivated-only rules),
//! then the merged manifest is validated again. A `null` value removes the key.

use std::sync::Arc;

use serde_json::{Map, Value};
use uuid::Uuid;

use super::{Caller, ImageError, Service};
use crate::manifest::validate::FieldError;
use crate::manifest::Image;

/// Keys any owner may update.
const MUTABLE: &[&str] = &[
    "owner",
    "name",
    "version",
    "description",
    "homepage",
    "eula",
    "public",
    "os",
    "acl",
    "requirements",
    "users",
    "billing_tags",
    "traits",
    "tags",
    "generate_passwords",
    "inherited_directories",
    "nic_driver",
    "disk_driver",
    "cpu_type",
    "image_size",
    "channels",
];

/// Keys only operators (requests without `?account=`) may update.
const OPERATOR_ONLY: &[&str] = &["state", "error", "billing_tags", "traits", "files", "origin", "uuid"];

/// Keys that may change only while the image is unactivated.
const UNACTIVATED_ONLY: &[&str] = &["files", "origin", "uuid"];

fn not_allowed(field: &str, message: &str) -> FieldError {
    FieldError { field: field.into(), code: "NotAllowed".into(), message: Some(message.into()) }
}

impl Service {
    pub async fn update_image(
        &self,
        uuid: &Uuid,
        caller: &Caller,
        body: Value,
    ) -> Result<Arc<Image>, ImageError> {
        let Value::Object(changes) = body else {
            return Err(ImageError::ValidationFailed {
                message: "missing request body".into(),
                errors: vec![FieldError {
                    field: "body".into(),
                    code: "MissingParameter".into(),
                    message: None,
                }],
            });
        };
        if changes.is_empty() {
            return Err(ImageError::ValidationFailed {
                message: "invalid image update data: no parameters provided".into(),
                errors: Vec::new(),
            });
        }
        self.find_owned(uuid, caller)?;
        if let Some(Value::Array(channels)) = changes.get("channels") {
            for channel in channels {
                let name = channel.as_str().unwrap_or_default();
                if !self.channels.iter().any(|c| c.name == name) {
                    return Err(ImageError::ValidationFailed {
                        message: format!("unknown channel: {name}"),
                        errors: vec![FieldError {
                            field: "channels".into(),
                            code: "Invalid".into(),
                            message: None,
                        }],
                    });
                }
            }
        }
        let store = self.store.clone();
        self.change(uuid, caller, move |image| {
            // On the locked record: activation or an origin's deletion may have happened since.
            let refused = refused_keys(&changes, image, caller);
            if !refused.is_empty() {
                let fields: Vec<&str> = refused.iter().map(|e| e.field.as_str()).collect();
                return Err(ImageError::ValidationFailed {
                    message: format!("invalid image update data: {}", fields.join(", ")),
                    errors: refused,
                });
            }
            if let Some(origin) = changes.get("origin").filter(|o| !o.is_null()) {
                super::check_origin(&store, uuid, origin)?;
            }
            apply(image, changes);
            Ok(())
        })
        .await
    }
}

/// Every key of `changes` this caller may not change on this image, with the reason.
fn refused_keys(changes: &Map<String, Value>, image: &Image, caller: &Caller) -> Vec<FieldError> {
    let mut refused = Vec::new();
    for (key, value) in changes {
        let key = key.as_str();
        if !MUTABLE.contains(&key) && !OPERATOR_ONLY.contains(&key) {
            refused.push(not_allowed(key, "Parameter cannot be updated"));
        } else if caller.account.is_some() && OPERATOR_ONLY.contains(&key) {
            refused.push(not_allowed(key, "Can only be updated by operators"));
        } else if image.activated && UNACTIVATED_ONLY.contains(&key) {
            refused.push(not_allowed(key, "Can only be updated on unactivated images"));
        } else if (key == "uuid" && value.as_str() != Some(image.uuid.to_string().as_str()))
            || (key == "files" && *value != image.validation_view()["files"])
        {
            // Moving an image to another uuid, or rewriting its file record, would make the
            // stored file and the manifest disagree; re-upload instead.
            refused.push(not_allowed(key, "Parameter cannot be updated"));
        }
    }
    refused
}

/// Merges `changes` into the image: `null` removes a key.
fn apply(image: &mut Image, changes: Map<String, Value>) {
    for (key, value) in changes {
        match key.as_str() {
            // Server-managed parts: only identical values get past `refused_keys`.
            "uuid" | "files" => {}
            _ if value.is_null() => {
                image.fields.remove(&key);
            }
            _ => {
                image.fields.insert(key, value);
            }
        }
    }
}
