//! What an importer reads in a manifest: its file entry (`files[0]`) and its origin. The rules
//! are imgmanifest's (`validateMinimalManifest`, which imgadm runs before every import): a
//! file has a 40-hex `sha1`, a size above zero and a `compression`; a missing compression is
//! an invalid manifest, not `none`.

use serde_json::Value;
use uuid::Uuid;

use crate::Compression;

/// `files[0]` of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Lower-case hex.
    pub sha1: String,
    /// Bytes of the (compressed) file.
    pub size: u64,
    pub compression: Compression,
    /// The ZFS dataset guid of a `zfs send` stream, when the publisher recorded it.
    pub dataset_guid: Option<String>,
}

/// What is wrong with a manifest, in the words of the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("it has no file")]
    NoFile,
    #[error("files[0].{field} is missing")]
    Missing { field: &'static str },
    #[error("files[0].{field} is invalid: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("origin is not a uuid")]
    BadOrigin,
}

impl FileEntry {
    /// The file entry of `manifest`, checked.
    pub fn of_manifest(manifest: &Value) -> Result<FileEntry, ManifestError> {
        let file = manifest.pointer("/files/0").ok_or(ManifestError::NoFile)?;
        let text = |field: &'static str| match file.get(field) {
            None | Some(Value::Null) => Err(ManifestError::Missing { field }),
            Some(Value::String(s)) => Ok(s.as_str()),
            Some(other) => Err(ManifestError::Invalid { field, message: format!("{other} is not a string") }),
        };
        let sha1 = text("sha1")?;
        if sha1.len() != 40 || !sha1.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ManifestError::Invalid { field: "sha1", message: format!("{sha1:?} is not a sha1") });
        }
        let size = match file.get("size") {
            None | Some(Value::Null) => return Err(ManifestError::Missing { field: "size" }),
            Some(size) => size.as_u64().filter(|s| *s > 0).ok_or_else(|| ManifestError::Invalid {
                field: "size",
                message: format!("{size} is not a size above zero"),
            })?,
        };
        let compression_name = text("compression")?;
        let compression = Compression::parse(compression_name).ok_or_else(|| ManifestError::Invalid {
            field: "compression",
            message: format!("{compression_name:?} is not one of {}", Compression::ALL),
        })?;
        let dataset_guid = file.get("dataset_guid").and_then(Value::as_str).map(str::to_owned);
        Ok(FileEntry { sha1: sha1.to_ascii_lowercase(), size, compression, dataset_guid })
    }
}

/// The manifest's `origin` (the image it is an incremental of), if any.
pub fn origin_of(manifest: &Value) -> Result<Option<Uuid>, ManifestError> {
    match manifest.get("origin") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_str().and_then(|s| Uuid::parse_str(s).ok()).map(Some).ok_or(ManifestError::BadOrigin),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SHA1: &str = "DB8EF7FDE4395A58B1A169E644BAC3804CCE62D9";

    #[test]
    fn a_complete_entry_parses_with_a_lower_case_sha1() {
        let m = json!({"files": [{"sha1": SHA1, "size": 379882274, "compression": "gzip",
                                  "dataset_guid": "123"}]});
        let file = FileEntry::of_manifest(&m).unwrap();
        assert_eq!(file.sha1, SHA1.to_ascii_lowercase());
        assert_eq!((file.size, file.compression), (379882274, Compression::Gzip));
        assert_eq!(file.dataset_guid.as_deref(), Some("123"));
    }

    #[test]
    fn each_fault_is_named() {
        let entry = |file: Value| FileEntry::of_manifest(&json!({"files": [file]})).unwrap_err().to_string();
        assert_eq!(FileEntry::of_manifest(&json!({"files": []})).unwrap_err(), ManifestError::NoFile);
        assert_eq!(FileEntry::of_manifest(&json!({})).unwrap_err(), ManifestError::NoFile);
        assert_eq!(entry(json!({"size": 1, "compression": "none"})), "files[0].sha1 is missing");
        assert!(entry(json!({"sha1": "abc", "size": 1, "compression": "none"})).contains("not a sha1"));
        assert_eq!(entry(json!({"sha1": SHA1, "compression": "none"})), "files[0].size is missing");
        assert!(entry(json!({"sha1": SHA1, "size": 0, "compression": "none"})).contains("above zero"));
        assert!(entry(json!({"sha1": SHA1, "size": -1, "compression": "none"})).contains("above zero"));
        // imgmanifest requires it: a missing compression is not "none".
        assert_eq!(entry(json!({"sha1": SHA1, "size": 1})), "files[0].compression is missing");
        assert!(
            entry(json!({"sha1": SHA1, "size": 1, "compression": "lz4"})).contains("gzip, bzip2, xz, none")
        );
        assert!(entry(json!({"sha1": SHA1, "size": 1, "compression": 5})).contains("not a string"));
    }

    #[test]
    fn origins() {
        assert_eq!(origin_of(&json!({})), Ok(None));
        assert_eq!(origin_of(&json!({"origin": null})), Ok(None));
        let uuid = Uuid::new_v4();
        assert_eq!(origin_of(&json!({"origin": uuid.to_string()})), Ok(Some(uuid)));
        assert_eq!(origin_of(&json!({"origin": "x"})), Err(ManifestError::BadOrigin));
    }
}
