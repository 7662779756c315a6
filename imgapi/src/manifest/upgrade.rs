//! TEMPORARY STUB: replaced by the v1 -> v2 manifest upgrade (helper in progress).
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UpgradeError {
    #[error("manifest has no \"v\"")]
    NoVersion,
}

pub fn upgrade_manifest(manifest: Map<String, Value>) -> Result<Map<String, Value>, UpgradeError> {
    Ok(manifest)
}
