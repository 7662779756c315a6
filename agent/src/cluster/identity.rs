//! The host's identity in its fleet: the id and credential cloudapi gave it when it joined,
//! kept in a file only root reads (mode 0600, written durably), so that a restarted agent is the
//! same host and never needs the join token again.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// The cloudapi that issued it: joining another fleet needs the join token again.
    pub cloudapi: String,
    pub id: Uuid,
    pub name: String,
    pub credential: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not an identity file: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The identity in `path`; `None` if there is none yet.
pub fn load(path: &Path) -> Result<Option<Identity>, IdentityError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(IdentityError::Read { path: path.into(), source }),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| IdentityError::Invalid { path: path.into(), message: e.to_string() })
}

/// Replaces the identity in `path`, durably. The temp file it is renamed from is created 0600
/// (tempfile's default), so the credential is never readable by others, not even for a moment.
pub fn save(path: &Path, identity: &Identity) -> Result<(), IdentityError> {
    let write = |source| IdentityError::Write { path: path.into(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(write)?;
    }
    let text = serde_json::to_vec_pretty(identity).expect("identities serialise");
    service_kit::durable::write_file(path, &text).map_err(write)
}

/// Forgets the identity (the credential was revoked).
pub fn remove(path: &Path) -> Result<(), IdentityError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(IdentityError::Write { path: path.into(), source: e })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn an_identity_is_kept_readable_by_its_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/cluster-identity.json");
        assert_eq!(load(&path).unwrap(), None);
        let identity = Identity {
            cloudapi: "http://127.0.0.1:9000".into(),
            id: Uuid::new_v4(),
            name: "host-1".into(),
            credential: "c".repeat(64),
        };
        save(&path, &identity).unwrap();
        assert_eq!(load(&path).unwrap(), Some(identity));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(load(&path), Err(IdentityError::Invalid { .. })));
        remove(&path).unwrap();
        remove(&path).unwrap();
        assert_eq!(load(&path).unwrap(), None);
    }
}
