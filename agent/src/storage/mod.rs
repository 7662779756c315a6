//! Where imported images live on the host, behind one trait chosen once at start-up:
//! `zfs` (datasets and zvols under a parent dataset), `zfs-files` (the same datasets, raw disks
//! as files inside filesystem datasets: ZFS hosts running QEMU, and zfs-fuse) and `files`
//! (read-only raw files in a directory).
//!
//! An import writes the decompressed image through an [`ImageWriter`] into a *partial* place
//! (`<parent>/<uuid>-partial`, or a temp file) that no listing shows; only `commit` makes it an
//! image. Whatever fails, the partial is destroyed, and `recover` at start-up removes what a
//! killed agent left.

pub mod files;
pub mod zfs;

use std::io::Write;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error_code::ErrorCode;

/// What an image's decompressed bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ContentKind {
    /// A `zfs send` stream (full or incremental).
    ZfsStream,
    /// A raw disk image.
    RawDisk,
}

/// The first bytes of a ZFS send stream: a `DRR_BEGIN` record, whose `drr_magic` (offset 8,
/// little-endian on every platform that sends) is `0x2F5BACBAC`.
pub const ZFS_STREAM_MAGIC: [u8; 8] = [0xac, 0xcb, 0xba, 0xf5, 0x02, 0x00, 0x00, 0x00];

/// Bytes needed to classify a stream with [`detect_content`].
pub const DETECT_LEN: usize = 16;

/// Classifies decompressed image bytes by their start (never by what the manifest claims).
pub fn detect_content(head: &[u8]) -> ContentKind {
    let at = |offset: usize| head.get(offset..offset + 8) == Some(&ZFS_STREAM_MAGIC[..]);
    // drr_type (u32) and drr_payloadlen (u32) come first; accept a bare magic too.
    if at(8) || at(0) {
        ContentKind::ZfsStream
    } else {
        ContentKind::RawDisk
    }
}

/// The manifest fields the host keeps about an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImageMeta {
    pub uuid: Uuid,
    pub name: String,
    pub version: String,
    pub os: String,
    #[serde(rename = "type")]
    pub image_type: String,
    pub origin: Option<Uuid>,
    /// sha1 of the compressed file as downloaded.
    pub sha1: String,
    /// Size of the compressed file.
    pub size: u64,
    pub compression: String,
    /// `image_size` (MiB) for zvol images: the size of a raw disk.
    pub image_size_mib: Option<u64>,
    /// The IMGAPI source it came from (without credentials).
    pub source: String,
}

/// An image on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LocalImage {
    #[serde(flatten)]
    pub meta: ImageMeta,
    pub content: ContentKind,
    /// Where it is: a dataset name (`tank/images/<uuid>`) or a file path.
    pub location: String,
    /// Bytes of the decompressed image (the raw disk size, or the stream length).
    pub content_size: u64,
    /// When the import finished (RFC 3339).
    pub imported_at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("image {0} is not on this host")]
    NotFound(Uuid),
    #[error("image {0} is already on this host")]
    AlreadyExists(Uuid),
    /// Another image (`origin`) or an instance (a clone) still uses it.
    #[error("image {uuid} is in use by {users:?}")]
    InUse { uuid: Uuid, users: Vec<String> },
    /// An incremental image whose origin is not on this host.
    #[error("origin image {0} is not on this host")]
    MissingOrigin(Uuid),
    /// The decompressed bytes are not something this backend can store.
    #[error("cannot store this image: {0}")]
    Unsupported(String),
    /// The stream was received but is not what an image must be (e.g. not exactly one snapshot).
    #[error("invalid image content: {0}")]
    InvalidContent(String),
    #[error("no space left for the image")]
    NoSpace(#[source] std::io::Error),
    #[error("host command failed")]
    Command(#[from] crate::host::runner::ExecError),
    #[error("cannot parse the output of {what}: {message}")]
    Parse { what: String, message: String },
    #[error("storage I/O failed: {context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl StorageError {
    pub fn code(&self) -> ErrorCode {
        match self {
            StorageError::NotFound(_) => ErrorCode::ImageNotFound,
            StorageError::AlreadyExists(_) => ErrorCode::ImageAlreadyExists,
            StorageError::InUse { .. } => ErrorCode::ImageInUse,
            StorageError::MissingOrigin(_) => ErrorCode::MissingOrigin,
            StorageError::Unsupported(_) | StorageError::InvalidContent(_) => ErrorCode::UnsupportedImage,
            StorageError::NoSpace(_) => ErrorCode::InsufficientStorage,
            StorageError::Command(_) | StorageError::Parse { .. } | StorageError::Io { .. } => {
                ErrorCode::StorageError
            }
        }
    }
}

impl StorageError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        if matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) {
            StorageError::NoSpace(source)
        } else {
            StorageError::Io { context: context.into(), source }
        }
    }
}

/// Receives an image's decompressed bytes (through `Write`), then becomes an image or nothing.
pub trait ImageWriter: Write + Send {
    /// Makes the image visible. The partial place is gone whether this succeeds or fails.
    fn commit(self: Box<Self>) -> Result<LocalImage, StorageError>;
    /// Destroys everything written so far.
    fn abort(self: Box<Self>);
}

/// A place images live. Methods block (they run host commands or file I/O).
pub trait ImageStorage: Send + Sync {
    /// `zfs`, `zfs-files` or `files`.
    fn kind(&self) -> &'static str;
    /// Every complete image, sorted by uuid.
    fn list(&self) -> Result<Vec<LocalImage>, StorageError>;
    fn get(&self, uuid: &Uuid) -> Result<Option<LocalImage>, StorageError>;
    /// Starts an import. Fails with `AlreadyExists` if the image is here, `MissingOrigin` if its
    /// origin is not. A stale partial of the same uuid is destroyed first.
    fn begin(&self, meta: ImageMeta) -> Result<Box<dyn ImageWriter>, StorageError>;
    /// Deletes an image; `InUse` while another image has it as origin or an instance uses it.
    fn delete(&self, uuid: &Uuid) -> Result<(), StorageError>;
    /// Removes partial imports a crash left; returns what was removed (for the log).
    fn recover(&self) -> Result<Vec<String>, StorageError>;
    /// Bytes still free for images and the instances cloned from them.
    fn free_bytes(&self) -> Result<u64, StorageError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_zfs_streams_by_magic() {
        let mut begin = vec![0u8; 8];
        begin.extend_from_slice(&ZFS_STREAM_MAGIC);
        assert_eq!(detect_content(&begin), ContentKind::ZfsStream);
        assert_eq!(detect_content(&ZFS_STREAM_MAGIC), ContentKind::ZfsStream);
        assert_eq!(detect_content(b"\xebc\x90MBR-ish disk....."), ContentKind::RawDisk);
        assert_eq!(detect_content(&[]), ContentKind::RawDisk);
    }
}
