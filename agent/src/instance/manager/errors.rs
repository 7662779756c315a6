//! What instance operations fail with, and the code each failure answers.

use super::*;

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("instance {0} does not exist")]
    NotFound(Uuid),
    #[error("instance {0} exists already")]
    Exists(Uuid),
    #[error("image {0} is not on this host (import it first)")]
    ImageNotFound(Uuid),
    /// An image no instance of this host can boot.
    #[error("{0}")]
    UnsupportedImage(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("image {image} is used by instances {instances:?}")]
    ImageInUse { image: Uuid, instances: Vec<Uuid> },
    #[error("instance disk: {0}")]
    Disk(Box<DiskError>),
    #[error("hypervisor: {0}")]
    Hypervisor(Box<HypervisorError>),
    #[error("image storage: {0}")]
    Storage(Box<StorageError>),
    #[error("{0}")]
    Console(String),
    #[error(transparent)]
    Iso(#[from] IsoError),
    #[error("instance {instance} has no snapshot named {name:?}")]
    SnapshotNotFound { instance: Uuid, name: String },
    #[error("instance {instance} already has a snapshot named {name:?}")]
    SnapshotExists { instance: Uuid, name: String },
    #[error("publishing failed")]
    Publish(#[from] crate::publish::PublishError),
    #[error(transparent)]
    Switch(#[from] SwitchError),
    #[error("switch {switch:?} has NICs of instances {instances:?}")]
    SwitchInUse { switch: String, instances: Vec<Uuid> },
}

impl InstanceError {
    pub fn code(&self) -> ErrorCode {
        use crate::hypervisor::HypervisorError;
        match self {
            InstanceError::NotFound(_) => ErrorCode::InstanceNotFound,
            InstanceError::Exists(_) => ErrorCode::InstanceExists,
            InstanceError::UnsupportedImage(_) => ErrorCode::UnsupportedImage,
            InstanceError::ImageNotFound(_) => ErrorCode::ImageNotFound,
            InstanceError::Invalid(_) => ErrorCode::InvalidParameter,
            InstanceError::Refused(refused) => refused.code(),
            InstanceError::ImageInUse { .. } => ErrorCode::ImageInUse,
            InstanceError::SwitchInUse { .. } => ErrorCode::SwitchInUse,
            InstanceError::Switch(switch) => switch.code(),
            InstanceError::SnapshotNotFound { .. } => ErrorCode::SnapshotNotFound,
            InstanceError::SnapshotExists { .. } => ErrorCode::SnapshotExists,
            InstanceError::Publish(publish) => publish.code(),
            InstanceError::Iso(iso) => iso.code(),
            InstanceError::Storage(storage) => storage.code(),
            InstanceError::Hypervisor(h) if matches!(**h, HypervisorError::Unsupported { .. }) => {
                ErrorCode::NotSupported
            }
            InstanceError::Disk(disk) if disk.is_no_space() => ErrorCode::InsufficientStorage,
            InstanceError::Disk(_) | InstanceError::Hypervisor(_) | InstanceError::Console(_) => {
                ErrorCode::InternalError
            }
        }
    }
}

// Boxed: these carry command output, and every `Result` of the manager would pay for them.
impl From<DiskError> for InstanceError {
    fn from(e: DiskError) -> Self {
        InstanceError::Disk(Box::new(e))
    }
}

impl From<HypervisorError> for InstanceError {
    fn from(e: HypervisorError) -> Self {
        InstanceError::Hypervisor(Box::new(e))
    }
}

impl From<StorageError> for InstanceError {
    fn from(e: StorageError) -> Self {
        InstanceError::Storage(Box::new(e))
    }
}
