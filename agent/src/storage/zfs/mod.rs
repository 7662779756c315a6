//! The `zfs` and `zfs-files` image storages: one dataset per image, `<parent>/<uuid>`, with one
//! `@final` snapshot that instances clone, and the image's metadata in `imgagent:` user
//! properties (so `zfs get` alone can list what is here, as imgadm's `zfs list` does).
//!
//! An import goes to `<parent>/<uuid>-partial`, which listings skip; the first decompressed
//! bytes decide what it is (never the manifest):
//! - a ZFS send stream is piped into `zfs receive -u`; it must leave exactly one snapshot,
//!   renamed to `@final` if needed (imgadm's `ensureFinalSnapshot`). An incremental stream of a
//!   clone (`zfs send -i <origin>@final <image>@final`) becomes a clone of the origin's `@final`;
//! - a raw disk is written, as it arrives, into a zvol (`zfs` mode, through its device) or into
//!   `disk0.raw` in a filesystem dataset (`zfs-files` mode: QEMU hosts, and zfs-fuse, which has
//!   no zvols), then snapshotted `@final`.
//!
//! Then the properties are set and the partial is renamed to `<parent>/<uuid>`. Every failure,
//! an `abort` and a writer dropped unfinished destroy the partial.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::{
    detect_content, ContentKind, ImageMeta, ImageStorage, ImageWriter, LocalImage, StorageError, DETECT_LEN,
    ZFS_STREAM_MAGIC,
};
use crate::host::zfs::{DatasetType, Depth, Receive, Zfs, ZfsError};

mod properties;
#[cfg(test)]
mod tests;
mod writer;

use properties::{image_from_properties, properties_of};
use writer::{ImportGuard, State, ZfsWriter};

/// The vendor prefix of every user property this storage writes.
pub const PROPERTY_PREFIX: &str = "imgagent:";

/// The user properties of an image dataset, one per [`LocalImage`] field.
pub mod property {
    pub const UUID: &str = "imgagent:uuid";
    pub const NAME: &str = "imgagent:name";
    pub const VERSION: &str = "imgagent:version";
    pub const OS: &str = "imgagent:os";
    pub const TYPE: &str = "imgagent:type";
    pub const ORIGIN: &str = "imgagent:origin";
    pub const SHA1: &str = "imgagent:sha1";
    pub const SIZE: &str = "imgagent:size";
    pub const COMPRESSION: &str = "imgagent:compression";
    pub const IMAGE_SIZE_MIB: &str = "imgagent:image-size-mib";
    pub const SOURCE: &str = "imgagent:source";
    pub const CONTENT: &str = "imgagent:content";
    pub const CONTENT_SIZE: &str = "imgagent:content-size";
    pub const IMPORTED_AT: &str = "imgagent:imported-at";

    /// All of them, in the order they are set and asked for.
    pub const ALL: [&str; 14] = [
        UUID,
        NAME,
        VERSION,
        OS,
        TYPE,
        ORIGIN,
        SHA1,
        SIZE,
        COMPRESSION,
        IMAGE_SIZE_MIB,
        SOURCE,
        CONTENT,
        CONTENT_SIZE,
        IMPORTED_AT,
    ];
}

/// The snapshot every image has and instances clone.
pub const FINAL_SNAPSHOT: &str = "final";

/// The raw disk's file inside a `zfs-files` image dataset.
pub const DISK_FILE: &str = "disk0.raw";

/// Suffix of the dataset an import writes to until it is complete.
const PARTIAL_SUFFIX: &str = "-partial";

/// Longest user property value written, in bytes (after escaping). OpenZFS allows 8 KiB
/// including the terminating NUL; stay under it so no dialect truncates.
const MAX_VALUE_LEN: usize = 8000;

/// A `DRR_BEGIN` record up to and including `drr_fromguid`: what [`check_stream_begin`] reads.
const BEGIN_CHECK_LEN: usize = 56;

/// Bytes a raw disk is buffered and written in; an all-zero block is skipped (a hole).
const BLOCK: usize = 128 * 1024;

const MIB: u64 = 1024 * 1024;

/// Where raw disks go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZfsMode {
    /// `zfs`: a raw disk becomes a zvol (`volmode=dev`), for bhyve. Needs OpenZFS.
    Zvol,
    /// `zfs-files`: a raw disk becomes `disk0.raw` in a filesystem dataset (QEMU, zfs-fuse).
    Files,
}

impl ZfsMode {
    pub fn kind(self) -> &'static str {
        match self {
            ZfsMode::Zvol => "zfs",
            ZfsMode::Files => "zfs-files",
        }
    }
}

/// Images as datasets under one parent dataset.
#[derive(Debug)]
pub struct ZfsStorage {
    zfs: Zfs,
    parent: String,
    mode: ZfsMode,
    zvol_dir: PathBuf,
    device_wait: Duration,
    /// Uuids with a live writer in this process: a second `begin` must not destroy its
    /// partial, nor `recover` while it runs.
    importing: Arc<Mutex<HashSet<Uuid>>>,
}

impl ZfsStorage {
    /// Images live under `parent` (e.g. `tank/images`, created with `zfs create -p` by the
    /// first import if missing). Zvol devices are looked for under `/dev/zvol` (illumos:
    /// `/dev/zvol/rdsk`, see [`ZfsStorage::with_zvol_dir`]).
    pub fn new(zfs: Zfs, parent: impl Into<String>, mode: ZfsMode) -> Self {
        let parent = parent.into().trim_end_matches('/').to_string();
        ZfsStorage {
            zfs,
            parent,
            mode,
            zvol_dir: PathBuf::from("/dev/zvol"),
            device_wait: Duration::from_secs(30),
            importing: Arc::default(),
        }
    }

    /// The directory holding zvol devices by dataset name (`<dir>/<pool>/<dataset>`).
    pub fn with_zvol_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.zvol_dir = dir.into();
        self
    }

    /// How long to wait for a new zvol's device to appear (udev or devfs create it
    /// asynchronously).
    pub fn with_device_wait(mut self, wait: Duration) -> Self {
        self.device_wait = wait;
        self
    }

    pub fn parent(&self) -> &str {
        &self.parent
    }

    pub fn mode(&self) -> ZfsMode {
        self.mode
    }

    /// The dataset of an image.
    pub fn dataset(&self, uuid: &Uuid) -> String {
        format!("{}/{uuid}", self.parent)
    }

    fn partial(&self, uuid: &Uuid) -> String {
        format!("{}/{uuid}{PARTIAL_SUFFIX}", self.parent)
    }

    /// The last component of `dataset` if it is a direct child of the parent.
    fn child_name<'a>(&self, dataset: &'a str) -> Option<&'a str> {
        let rest = dataset.strip_prefix(&self.parent)?.strip_prefix('/')?;
        (!rest.is_empty() && !rest.contains(['/', '@', '#'])).then_some(rest)
    }

    /// Filesystems and volumes directly under the parent; `None` if there is no parent yet.
    fn children(&self) -> Result<Option<Vec<String>>, StorageError> {
        match self.zfs.list(&self.parent, "filesystem,volume", Depth::Children) {
            Ok(rows) => {
                Ok(Some(rows.into_iter().map(|r| r.name).filter(|n| self.child_name(n).is_some()).collect()))
            }
            Err(ZfsError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn read_images(&self, name: &str, depth: Depth) -> Result<Vec<LocalImage>, StorageError> {
        let rows = match self.zfs.get(name, &property::ALL, depth, Some("local")) {
            Ok(rows) => rows,
            Err(ZfsError::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut by_dataset: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for row in rows {
            if let Some(value) = row.value {
                by_dataset.entry(row.dataset).or_default().insert(row.property, value);
            }
        }
        let mut images = Vec::new();
        for (dataset, props) in by_dataset {
            let Some(child) = self.child_name(&dataset) else { continue };
            if child.ends_with(PARTIAL_SUFFIX) {
                continue;
            }
            match image_from_properties(&dataset, &props) {
                Ok(image) => images.push(image),
                // Not written by a finished import (created by hand, or by another tool):
                // not an image of ours. Logged, as it also blocks that uuid from being imported.
                Err(message) => {
                    tracing::warn!(%dataset, %message, "skipping dataset without image properties")
                }
            }
        }
        images.sort_by_key(|image| image.meta.uuid);
        Ok(images)
    }
}

impl ImageStorage for ZfsStorage {
    fn kind(&self) -> &'static str {
        self.mode.kind()
    }

    /// One `zfs get` of the `imgagent:` properties over the parent's children.
    fn list(&self) -> Result<Vec<LocalImage>, StorageError> {
        self.read_images(&self.parent, Depth::Children)
    }

    fn get(&self, uuid: &Uuid) -> Result<Option<LocalImage>, StorageError> {
        Ok(self.read_images(&self.dataset(uuid), Depth::Itself)?.into_iter().find(|i| i.meta.uuid == *uuid))
    }

    fn begin(&self, meta: ImageMeta) -> Result<Box<dyn ImageWriter>, StorageError> {
        check_meta(&meta)?;
        let guard = ImportGuard::claim(&self.importing, meta.uuid)?;
        let target = self.dataset(&meta.uuid);
        let partial = self.partial(&meta.uuid);
        let children = self.children()?;
        let exists = |name: &String| children.as_ref().is_some_and(|c| c.contains(name));
        if exists(&target) {
            return Err(StorageError::AlreadyExists(meta.uuid));
        }
        if let Some(origin) = meta.origin {
            if self.get(&origin)?.is_none() {
                return Err(StorageError::MissingOrigin(origin));
            }
        }
        if children.is_none() {
            self.zfs.create_filesystem(&self.parent, true, &[])?;
        }
        if exists(&partial) {
            tracing::info!(dataset = %partial, "destroying a stale partial import");
            destroy_if_exists(&self.zfs, &partial)?;
        }
        Ok(Box::new(ZfsWriter {
            zfs: self.zfs.clone(),
            mode: self.mode,
            parent: self.parent.clone(),
            zvol_dir: self.zvol_dir.clone(),
            device_wait: self.device_wait,
            meta,
            target,
            partial,
            state: State::Head(Vec::with_capacity(BEGIN_CHECK_LEN)),
            started: false,
            written: 0,
            _guard: guard,
        }))
    }

    /// `zfs destroy -r <parent>/<uuid>`, refused while another image names it as origin or its
    /// `@final` has clones (zfs names them: "has dependent clones").
    fn delete(&self, uuid: &Uuid) -> Result<(), StorageError> {
        let images = self.list()?;
        if !images.iter().any(|image| image.meta.uuid == *uuid) {
            return Err(StorageError::NotFound(*uuid));
        }
        let users: Vec<String> =
            images.iter().filter(|i| i.meta.origin == Some(*uuid)).map(|i| i.location.clone()).collect();
        if !users.is_empty() {
            return Err(StorageError::InUse { uuid: *uuid, users });
        }
        match self.zfs.destroy(&self.dataset(uuid), true) {
            Ok(()) => Ok(()),
            Err(ZfsError::HasClones { clones, .. }) => {
                Err(StorageError::InUse { uuid: *uuid, users: clones })
            }
            Err(ZfsError::NotFound { .. }) => Err(StorageError::NotFound(*uuid)),
            Err(e) => Err(e.into()),
        }
    }

    /// Destroys every `<parent>/*-partial` that no writer of this process is using.
    fn recover(&self) -> Result<Vec<String>, StorageError> {
        let mut removed = Vec::new();
        let mut first_error = None;
        for dataset in self.children()?.unwrap_or_default() {
            let Some(child) = self.child_name(&dataset) else { continue };
            let Some(uuid) = child.strip_suffix(PARTIAL_SUFFIX) else { continue };
            if Uuid::parse_str(uuid).is_ok_and(|u| ImportGuard::is_claimed(&self.importing, u)) {
                continue;
            }
            match destroy_if_exists(&self.zfs, &dataset) {
                Ok(()) => removed.push(dataset),
                Err(e) => {
                    tracing::warn!(%dataset, error = %service_kit::ErrorChain(&e), "cannot remove a partial import");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(removed),
        }
    }

    /// The parent's `available` (bytes, as `-p` prints it).
    fn free_bytes(&self) -> Result<u64, StorageError> {
        let rows = self.zfs.get(&self.parent, &["available"], Depth::Itself, None)?;
        let value = rows.into_iter().find(|row| row.property == "available").and_then(|row| row.value);
        value.as_deref().and_then(|v| v.parse().ok()).ok_or_else(|| StorageError::Parse {
            what: format!("zfs get available {}", self.parent),
            message: format!("expected a number of bytes, got {value:?}"),
        })
    }
}

impl From<ZfsError> for StorageError {
    fn from(error: ZfsError) -> Self {
        match error {
            ZfsError::InvalidStream { message, .. } => StorageError::InvalidContent(message),
            ZfsError::NoSpace { source, .. } => {
                StorageError::NoSpace(io::Error::new(io::ErrorKind::StorageFull, source.to_string()))
            }
            ZfsError::Unsupported { what, dialect } => {
                StorageError::Unsupported(format!("{what} are not supported by {dialect:?}"))
            }
            ZfsError::Parse { command, error } => {
                StorageError::Parse { what: command, message: error.to_string() }
            }
            ZfsError::NotFound { source, .. }
            | ZfsError::AlreadyExists { source, .. }
            | ZfsError::Busy { source, .. }
            | ZfsError::HasClones { source, .. }
            | ZfsError::HasChildren { source, .. }
            | ZfsError::NotMounted { source, .. }
            | ZfsError::Command(source) => StorageError::Command(source),
        }
    }
}

/// `zfs destroy -r`, where "does not exist" is success.
fn destroy_if_exists(zfs: &Zfs, dataset: &str) -> Result<(), StorageError> {
    match zfs.destroy(dataset, true) {
        Ok(()) | Err(ZfsError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Refuses metadata that cannot be stored as user properties, before anything is created.
fn check_meta(meta: &ImageMeta) -> Result<(), StorageError> {
    for (key, value) in properties_of(meta, ContentKind::RawDisk, 0, "") {
        if value.len() > MAX_VALUE_LEN {
            return Err(StorageError::Unsupported(format!(
                "{key} is {} bytes; a zfs user property holds at most {MAX_VALUE_LEN}",
                value.len()
            )));
        }
    }
    Ok(())
}
