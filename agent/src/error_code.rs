//! Every error code the agent answers with (the `code` of its `{"code","message"}` bodies, of a
//! failed job's `error`, and what the CLI turns into exit codes), as one enum. Domain errors
//! name a variant (`fn code(&self) -> ErrorCode`); the HTTP status of each code is in one table,
//! `api/error.rs`.
//!
//! Some codes are *internal*: the host failed (a command, the disk, the network set-up), not
//! the request nor an image source. Their details (argv, stderr, paths) go to the log only;
//! clients get [`ErrorCode::internal_message`].

use service_kit::error_codes;

error_codes! {
    service(realm: "agent", log: "the agent's log", invalid: InvalidParameter,
            status: crate::api::error::status, internal: ErrorCode::internal_message);
    // The request itself.
    /// A request body that is not JSON of the expected shape.
    InvalidContent,
    /// A request body larger than any the API accepts (4 MiB).
    PayloadTooLarge,
    /// A parameter, query value or action that is not acceptable.
    InvalidParameter,
    /// No such route, or no such job.
    ResourceNotFound,
    /// No credentials, or wrong ones, for a call that needs them.
    UnauthorizedError,

    // Images and imports.
    /// Not on this host (delete, get, create an instance from it), or on no source (import).
    ImageNotFound,
    ImageAlreadyExists,
    /// Instances, or images whose origin it is, or a running import still use it.
    ImageInUse,
    /// An incremental image whose origin is not here.
    MissingOrigin,
    /// The image's content is not something this host's storage can run.
    UnsupportedImage,
    /// No IMGAPI source is configured (or none to publish to).
    NoSources,
    /// A source could not be reached or answered an error.
    SourceError,
    /// A source, or the image server published to, refused the agent's credentials for it.
    SourceUnauthorized,
    /// A source's manifest cannot be imported.
    InvalidManifest,
    /// The downloaded file is not the one the manifest describes (size, sha1, decompression).
    VerificationFailed,
    /// An origin of the image could not be imported.
    OriginFailed,

    // Instances.
    InstanceNotFound,
    InstanceProvisioning,
    InstanceAlreadyProvisioned,
    InstanceAlreadyRunning,
    InstanceNotRunning,
    InstanceRunning,
    InstanceDestroyed,
    /// The instance is still running after a stop and the forced poweroff.
    StopTimeout,
    /// The instance is not running again after its reboot (its `reason` says why).
    RebootFailed,
    /// The instance's serial console is not connected (not running).
    ConsoleNotConnected,
    /// This hypervisor cannot do what was asked (a firmware, a NIC kind).
    NotSupported,
    SnapshotNotFound,
    SnapshotExists,
    /// An instance of the uuid asked for exists already (cloudapi retrying a create).
    InstanceExists,
    /// The image server refused the published image, or could not be reached.
    PublishFailed,

    // ISOs.
    IsoNotFound,
    IsoExists,
    IsoInUse,
    /// The ISO's SHA-256 is not the one given.
    ChecksumMismatch,
    /// The ISO's URL could not be fetched.
    DownloadFailed,

    // Switches.
    SwitchNotFound,
    SwitchExists,
    /// Defined in the config file: change it there.
    SwitchFromConfig,
    SwitchInUse,

    // The host (internal: details in the log only).
    /// The host's disk is full.
    InsufficientStorage,
    /// The image storage failed (a zfs command, the image directory).
    StorageError,
    /// Setting up the host network failed (bridges, taps).
    NetworkError,
    /// Anything else on the host failed (the hypervisor, an instance's disk or console).
    InternalError,
}

impl ErrorCode {
    /// What clients are told of an internal failure, instead of its details; `None` for codes
    /// whose messages are for clients (they describe the request, an image or a source).
    pub fn internal_message(self) -> Option<&'static str> {
        Some(match self {
            ErrorCode::InsufficientStorage => "not enough space left on the host",
            ErrorCode::StorageError => "the image storage failed",
            ErrorCode::NetworkError => "setting up the host network failed",
            ErrorCode::InternalError => "the operation failed on the host",
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_serialise_as_the_name() {
        for &code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            assert_eq!(serde_json::to_value(code).unwrap(), serde_json::json!(code.as_str()));
        }
        assert_eq!(ErrorCode::parse("NoSuchCode"), None);
    }

    /// Codes are named by variant: a string literal elsewhere would escape the table.
    #[test]
    fn no_code_is_spelt_as_a_string_outside_this_file() {
        fn sources(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    sources(&path, found);
                } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("error_code.rs") {
                    found.push(path);
                }
            }
        }
        let mut files = Vec::new();
        sources(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
        assert!(files.len() > 20, "{files:?}");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for code in ErrorCode::ALL {
                let literal = format!("\"{code}\"");
                assert!(!text.contains(&literal), "{}: {literal}; use ErrorCode::{code}", file.display());
            }
        }
    }
}
