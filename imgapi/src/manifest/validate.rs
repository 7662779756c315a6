//! TEMPORARY STUB: replaced by the port of node-imgmanifest validation (helper in progress).
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub field: String,
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ValidationMode {
    pub channels_required: bool,
}

pub fn validate_full(_manifest: &Map<String, Value>, _mode: ValidationMode) -> Vec<FieldError> {
    Vec::new()
}

pub fn validate_minimal(_manifest: &Map<String, Value>) -> Vec<FieldError> {
    Vec::new()
}
