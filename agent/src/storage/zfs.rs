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
                    tracing::warn!(%dataset, error = %e, "cannot remove a partial import");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(removed),
        }
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

/// Marks a uuid as being imported by this process until dropped.
#[derive(Debug)]
struct ImportGuard {
    set: Arc<Mutex<HashSet<Uuid>>>,
    uuid: Uuid,
}

impl ImportGuard {
    fn claim(set: &Arc<Mutex<HashSet<Uuid>>>, uuid: Uuid) -> Result<Self, StorageError> {
        if !service_kit::lock(set).insert(uuid) {
            // Another writer of this process is importing it; its partial must survive.
            return Err(StorageError::AlreadyExists(uuid));
        }
        Ok(ImportGuard { set: set.clone(), uuid })
    }

    fn is_claimed(set: &Mutex<HashSet<Uuid>>, uuid: Uuid) -> bool {
        service_kit::lock(set).contains(&uuid)
    }
}

impl Drop for ImportGuard {
    fn drop(&mut self) {
        service_kit::lock(&self.set).remove(&self.uuid);
    }
}

/// What the writer is doing with the bytes.
enum State {
    /// Collecting the first bytes, to tell a stream from a raw disk.
    Head(Vec<u8>),
    Stream(Receive),
    Raw(SparseSink),
    /// A write failed; the partial is gone. `commit` returns this error.
    Failed(Option<StorageError>),
    /// Committed or aborted.
    Done,
}

struct ZfsWriter {
    zfs: Zfs,
    mode: ZfsMode,
    parent: String,
    zvol_dir: PathBuf,
    device_wait: Duration,
    meta: ImageMeta,
    target: String,
    partial: String,
    state: State,
    /// Whether the partial dataset may exist (created, or a receive started).
    started: bool,
    /// Decompressed bytes accepted so far.
    written: u64,
    _guard: ImportGuard,
}

impl ZfsWriter {
    fn accept(&mut self, buf: &[u8]) -> Result<(), StorageError> {
        match &mut self.state {
            State::Head(head) => {
                let take = (BEGIN_CHECK_LEN - head.len().min(BEGIN_CHECK_LEN)).min(buf.len());
                head.extend_from_slice(&buf[..take]);
                let ready = head.len() >= BEGIN_CHECK_LEN
                    || (head.len() >= DETECT_LEN && detect_content(head) == ContentKind::RawDisk);
                if ready {
                    let head = std::mem::take(head);
                    self.start(head)?;
                    self.accept(&buf[take..])?;
                }
                Ok(())
            }
            State::Stream(receive) => match receive.stdin().write_all(buf) {
                Ok(()) => Ok(()),
                // zfs receive stopped reading: it exited, and its stderr says why.
                Err(write_error) => Err(self.stream_broke(write_error)),
            },
            State::Raw(sink) => sink.write(buf),
            State::Failed(_) | State::Done => Err(StorageError::io(
                format!("writing to {}", self.partial),
                io::Error::other("the import has already failed or finished"),
            )),
        }
    }

    /// Classifies the image by its first bytes and creates the partial for it.
    fn start(&mut self, head: Vec<u8>) -> Result<(), StorageError> {
        match detect_content(&head) {
            ContentKind::ZfsStream => {
                check_stream_begin(&head, self.meta.origin.is_some())
                    .map_err(StorageError::InvalidContent)?;
                self.started = true;
                self.state = State::Stream(self.zfs.receive(&self.partial)?);
            }
            ContentKind::RawDisk => {
                let sink = self.create_raw()?;
                self.state = State::Raw(sink);
            }
        }
        if head.is_empty() {
            Ok(())
        } else {
            self.accept(&head)
        }
    }

    /// The zvol or `disk0.raw` a raw disk is written to.
    fn create_raw(&mut self) -> Result<SparseSink, StorageError> {
        match self.mode {
            ZfsMode::Zvol => {
                let Some(mib) = self.meta.image_size_mib.filter(|&m| m > 0) else {
                    return Err(StorageError::Unsupported(
                        "a raw disk image without image_size cannot become a zvol".into(),
                    ));
                };
                self.started = true;
                self.zfs.create_volume(&self.partial, mib)?;
                let device = self.zvol_dir.join(&self.partial);
                wait_for(&device, self.device_wait)?;
                let file = File::options()
                    .write(true)
                    .open(&device)
                    .map_err(|e| StorageError::io(format!("opening {}", device.display()), e))?;
                Ok(SparseSink::new(file, device, Some(mib.saturating_mul(MIB)), true))
            }
            ZfsMode::Files => {
                self.started = true;
                self.zfs.create_filesystem(&self.partial, false, &[])?;
                let dir = self.mountpoint()?;
                let path = dir.join(DISK_FILE);
                let file = File::options()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| StorageError::io(format!("creating {}", path.display()), e))?;
                Ok(SparseSink::new(file, path, None, false))
            }
        }
    }

    /// Where the partial filesystem is mounted, mounting it if `zfs create` did not.
    fn mountpoint(&self) -> Result<PathBuf, StorageError> {
        let rows = self.zfs.get(&self.partial, &["mountpoint", "mounted"], Depth::Itself, None)?;
        let value = |p: &str| rows.iter().find(|r| r.property == p).and_then(|r| r.value.clone());
        let mountpoint = value("mountpoint").unwrap_or_default();
        if !mountpoint.starts_with('/') {
            return Err(StorageError::Unsupported(format!(
                "{} has mountpoint {mountpoint:?}; zfs-files needs the parent's datasets mounted",
                self.partial
            )));
        }
        if value("mounted").as_deref() != Some("yes") {
            self.zfs.mount(&self.partial)?;
        }
        Ok(PathBuf::from(mountpoint))
    }

    /// The receive's own error when writing to it failed.
    fn stream_broke(&mut self, write_error: io::Error) -> StorageError {
        let State::Stream(receive) = std::mem::replace(&mut self.state, State::Failed(None)) else {
            return StorageError::io("writing to zfs receive", write_error);
        };
        match receive.finish() {
            Err(e) => e.into(),
            Ok(()) => StorageError::io(format!("writing to zfs receive {}", self.partial), write_error),
        }
    }

    /// Stops whatever runs and destroys the partial. Errors are logged: `recover` retries.
    fn discard(&mut self) {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Stream(receive) => receive.abort(),
            // Closed before the destroy: an open file keeps the dataset busy.
            State::Raw(sink) => drop(sink),
            _ => {}
        }
        if std::mem::take(&mut self.started) {
            if let Err(error) = destroy_if_exists(&self.zfs, &self.partial) {
                tracing::warn!(dataset = %self.partial, %error, "cannot destroy a failed import");
            }
        }
    }

    /// Makes the partial an image: checks, properties, `@final`, rename.
    fn finish(&mut self) -> Result<LocalImage, StorageError> {
        let content = match std::mem::replace(&mut self.state, State::Done) {
            State::Head(head) => {
                if head.is_empty() {
                    return Err(StorageError::InvalidContent("the image is empty".into()));
                }
                // Shorter than a stream's begin record: classify what there is.
                self.start(head)?;
                return self.finish();
            }
            State::Failed(error) => {
                return Err(error.unwrap_or_else(|| StorageError::InvalidContent("the import failed".into())));
            }
            State::Done => {
                return Err(StorageError::InvalidContent("the import has already finished".into()))
            }
            State::Stream(receive) => {
                receive.finish()?;
                self.check_received()?;
                ContentKind::ZfsStream
            }
            State::Raw(sink) => {
                sink.finish()?;
                ContentKind::RawDisk
            }
        };
        let image = LocalImage {
            meta: self.meta.clone(),
            content,
            location: self.target.clone(),
            content_size: self.written,
            imported_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        for (key, value) in properties_of(&image.meta, content, image.content_size, &image.imported_at) {
            self.zfs.set(&self.partial, key, &value)?;
        }
        if content == ContentKind::RawDisk {
            self.zfs.snapshot(&format!("{}@{FINAL_SNAPSHOT}", self.partial))?;
            if self.mode == ZfsMode::Files {
                // Images are never used mounted; unmounted, zfs-fuse can rename them.
                match self.zfs.unmount(&self.partial) {
                    Ok(()) | Err(ZfsError::NotMounted { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        match self.zfs.rename(&self.partial, &self.target) {
            Ok(()) => {}
            Err(ZfsError::AlreadyExists { .. }) => return Err(StorageError::AlreadyExists(self.meta.uuid)),
            Err(e) => return Err(e.into()),
        }
        self.started = false;
        Ok(image)
    }

    /// After `zfs receive`: one dataset, exactly one snapshot (made `@final`), and if it is a
    /// clone, a clone of its origin image's `@final`.
    fn check_received(&self) -> Result<(), StorageError> {
        let rows = match self.zfs.list(&self.partial, "all", Depth::All) {
            Ok(rows) => rows,
            Err(ZfsError::NotFound { .. }) => {
                return Err(StorageError::InvalidContent(format!("zfs receive created no {}", self.partial)))
            }
            Err(e) => return Err(e.into()),
        };
        let datasets: Vec<_> =
            rows.iter().filter(|r| matches!(r.kind, DatasetType::Filesystem | DatasetType::Volume)).collect();
        if datasets.len() != 1 || datasets[0].name != self.partial {
            let names: Vec<&str> = datasets.iter().map(|r| r.name.as_str()).collect();
            return Err(StorageError::InvalidContent(format!(
                "the stream must hold one dataset, it holds {}: {}",
                names.len(),
                names.join(", ")
            )));
        }
        let prefix = format!("{}@", self.partial);
        let snapshots: Vec<&str> = rows
            .iter()
            .filter(|r| r.kind == DatasetType::Snapshot && r.name.starts_with(&prefix))
            .map(|r| r.name.as_str())
            .collect();
        let [snapshot] = snapshots[..] else {
            return Err(StorageError::InvalidContent(format!(
                "the stream must hold exactly one snapshot, it holds {}: {}",
                snapshots.len(),
                snapshots.join(", ")
            )));
        };
        let expected = self.meta.origin.map(|o| format!("{}/{o}@{FINAL_SNAPSHOT}", self.parent));
        if let Some(origin) = &datasets[0].origin {
            if Some(origin) != expected.as_ref() {
                return Err(StorageError::InvalidContent(format!(
                    "the stream was received as a clone of {origin}, not of {}",
                    expected.as_deref().unwrap_or("nothing (the manifest has no origin)")
                )));
            }
        }
        let final_name = format!("{prefix}{FINAL_SNAPSHOT}");
        if snapshot != final_name {
            self.zfs.rename(snapshot, &final_name)?;
        }
        Ok(())
    }
}

impl Write for ZfsWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self.accept(buf) {
            Ok(()) => {
                self.written += buf.len() as u64;
                Ok(buf.len())
            }
            Err(error) => {
                let kind = match &error {
                    StorageError::NoSpace(_) => io::ErrorKind::StorageFull,
                    _ => io::ErrorKind::Other,
                };
                let message = error.to_string();
                self.discard();
                self.state = State::Failed(Some(error));
                Err(io::Error::new(kind, message))
            }
        }
    }

    /// Bytes are handed on as they come; the raw disk's last block waits for `commit`.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ImageWriter for ZfsWriter {
    fn commit(mut self: Box<Self>) -> Result<LocalImage, StorageError> {
        let result = self.finish();
        if result.is_err() {
            self.discard();
        }
        result
    }

    fn abort(mut self: Box<Self>) {
        self.discard();
    }
}

impl Drop for ZfsWriter {
    /// A writer dropped without `commit` or `abort` (a panic, a dropped future) leaves nothing.
    fn drop(&mut self) {
        self.discard();
    }
}

/// Refuses a stream zfs would mis-receive. `head` is the start of a stream (at least
/// [`BEGIN_CHECK_LEN`] bytes unless the stream is shorter). The `DRR_BEGIN` record: `drr_type`
/// u32, `drr_payloadlen` u32, then `drr_magic` u64 at 8, `drr_versioninfo` u64 at 16 (low two
/// bits: 1 = a single stream, 2 = a compound `send -R` stream), `drr_creation_time` at 24,
/// `drr_type` u32 at 32, `drr_flags` u32 at 36 (bit 0: `DRR_FLAG_CLONE`), `drr_toguid` at 40,
/// `drr_fromguid` at 48 (0 for a full stream). Little-endian, as `detect_content` demands.
fn check_stream_begin(head: &[u8], has_origin: bool) -> Result<(), String> {
    if head.get(8..16) != Some(&ZFS_STREAM_MAGIC[..]) {
        // Not a begin record where zfs writes one (a bare magic): zfs receive judges it.
        return Ok(());
    }
    let u64_at = |at: usize| head.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    let u32_at = |at: usize| head.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
    let (Some(versioninfo), Some(flags), Some(fromguid)) = (u64_at(16), u32_at(36), u64_at(48)) else {
        // Too short to be a stream: zfs receive says what is wrong with it.
        return Ok(());
    };
    let single = versioninfo & 0b11 == 1;
    let clone = flags & 1 == 1;
    if single && fromguid != 0 && !clone {
        // `zfs send -i fs@a fs@b`: received into a new name, zfs-fuse applies it to whichever
        // dataset holds `fs@a`, an existing image, and OpenZFS refuses it.
        return Err("an incremental stream that is not of a clone; an image with an origin must be \
                    `zfs send -i <origin>@final <image>@final` of a clone of the origin"
            .into());
    }
    if single && fromguid != 0 && !has_origin {
        return Err("an incremental stream for an image whose manifest has no origin".into());
    }
    Ok(())
}

/// Waits for a new zvol's device node.
fn wait_for(device: &Path, wait: Duration) -> Result<(), StorageError> {
    let started = Instant::now();
    while !device.exists() {
        if started.elapsed() >= wait {
            return Err(StorageError::io(
                format!("waiting {wait:?} for {}", device.display()),
                io::Error::from(io::ErrorKind::NotFound),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Writes a raw disk in [`BLOCK`]s, seeking over all-zero ones so a mostly empty disk costs
/// neither space nor time (a zvol and a new file read zeros there). Holds at most one block.
struct SparseSink {
    file: File,
    path: PathBuf,
    block: Vec<u8>,
    /// Bytes accepted, buffered ones included.
    position: u64,
    /// A zvol's size: a larger disk is refused rather than cut.
    capacity: Option<u64>,
    /// A device has a fixed size; a file is extended over its trailing zeros at the end.
    device: bool,
}

impl SparseSink {
    fn new(file: File, path: PathBuf, capacity: Option<u64>, device: bool) -> Self {
        SparseSink { file, path, block: Vec::with_capacity(BLOCK), position: 0, capacity, device }
    }

    fn io(&self, error: io::Error) -> StorageError {
        StorageError::io(format!("writing {}", self.path.display()), error)
    }

    fn write(&mut self, mut buf: &[u8]) -> Result<(), StorageError> {
        let end = self.position.saturating_add(buf.len() as u64);
        if let Some(capacity) = self.capacity.filter(|&c| end > c) {
            return Err(StorageError::InvalidContent(format!(
                "the raw disk is larger than its image_size ({} MiB)",
                capacity / MIB
            )));
        }
        while !buf.is_empty() {
            if self.block.is_empty() && buf.len() >= BLOCK {
                // Whole blocks straight from the caller's buffer, without a copy.
                let (block, rest) = buf.split_at(BLOCK);
                self.put(block).map_err(|e| self.io(e))?;
                buf = rest;
            } else {
                let take = (BLOCK - self.block.len()).min(buf.len());
                self.block.extend_from_slice(&buf[..take]);
                buf = &buf[take..];
                if self.block.len() == BLOCK {
                    self.flush_block()?;
                }
            }
        }
        self.position = end;
        Ok(())
    }

    fn put(&mut self, block: &[u8]) -> io::Result<()> {
        service_kit::sparse::write_sparse(&mut self.file, block).map(drop)
    }

    fn flush_block(&mut self) -> Result<(), StorageError> {
        let block = std::mem::take(&mut self.block);
        let result = self.put(&block);
        self.block = block;
        self.block.clear();
        result.map_err(|e| self.io(e))
    }

    /// Writes the last block, gives the file its full length and syncs it to the pool.
    fn finish(mut self) -> Result<(), StorageError> {
        if !self.block.is_empty() {
            self.flush_block()?;
        }
        if !self.device {
            self.file.set_len(self.position).map_err(|e| self.io(e))?;
        }
        self.file.sync_all().map_err(|e| self.io(e))
    }
}

/// The user properties of an image, as set: escaped values, nothing for empty or absent ones
/// (zfs-fuse cannot set an empty value; reading an unset one back gives "").
fn properties_of(
    meta: &ImageMeta,
    content: ContentKind,
    content_size: u64,
    imported_at: &str,
) -> Vec<(&'static str, String)> {
    let content = match content {
        ContentKind::ZfsStream => "zfs-stream",
        ContentKind::RawDisk => "raw-disk",
    };
    let values = [
        (property::UUID, meta.uuid.to_string()),
        (property::NAME, meta.name.clone()),
        (property::VERSION, meta.version.clone()),
        (property::OS, meta.os.clone()),
        (property::TYPE, meta.image_type.clone()),
        (property::ORIGIN, meta.origin.map(|o| o.to_string()).unwrap_or_default()),
        (property::SHA1, meta.sha1.clone()),
        (property::SIZE, meta.size.to_string()),
        (property::COMPRESSION, meta.compression.clone()),
        (property::IMAGE_SIZE_MIB, meta.image_size_mib.map(|m| m.to_string()).unwrap_or_default()),
        (property::SOURCE, meta.source.clone()),
        (property::CONTENT, content.to_string()),
        (property::CONTENT_SIZE, content_size.to_string()),
        (property::IMPORTED_AT, imported_at.to_string()),
    ];
    values.into_iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k, encode_value(&v))).collect()
}

/// Rebuilds an image from its dataset's `imgagent:` properties (raw, as `zfs get` printed them).
fn image_from_properties(dataset: &str, props: &BTreeMap<String, String>) -> Result<LocalImage, String> {
    let text = |key: &str| props.get(key).map(|v| decode_value(v)).unwrap_or_default();
    let required = |key: &str| props.get(key).map(|v| decode_value(v)).ok_or_else(|| format!("no {key}"));
    let number = |key: &str| -> Result<u64, String> {
        required(key)?.parse().map_err(|_| format!("{key} is not a number"))
    };
    let uuid: Uuid =
        required(property::UUID)?.parse().map_err(|_| format!("{} is not a uuid", property::UUID))?;
    if !dataset.ends_with(&format!("/{uuid}")) {
        return Err(format!("{} {uuid} does not match the dataset name", property::UUID));
    }
    let origin = match props.get(property::ORIGIN) {
        None => None,
        Some(v) => Some(decode_value(v).parse().map_err(|_| format!("{} is not a uuid", property::ORIGIN))?),
    };
    let image_size_mib = match props.get(property::IMAGE_SIZE_MIB) {
        None => None,
        Some(v) => Some(
            decode_value(v).parse().map_err(|_| format!("{} is not a number", property::IMAGE_SIZE_MIB))?,
        ),
    };
    let content = match required(property::CONTENT)?.as_str() {
        "zfs-stream" => ContentKind::ZfsStream,
        "raw-disk" => ContentKind::RawDisk,
        other => return Err(format!("unknown {} {other:?}", property::CONTENT)),
    };
    Ok(LocalImage {
        meta: ImageMeta {
            uuid,
            name: text(property::NAME),
            version: text(property::VERSION),
            os: text(property::OS),
            image_type: text(property::TYPE),
            origin,
            sha1: text(property::SHA1),
            size: number(property::SIZE)?,
            compression: text(property::COMPRESSION),
            image_size_mib,
            source: text(property::SOURCE),
        },
        content,
        location: dataset.to_string(),
        content_size: number(property::CONTENT_SIZE)?,
        imported_at: required(property::IMPORTED_AT)?,
    })
}

/// Escapes what `zfs get -H` output cannot carry (line breaks, tabs and other control
/// characters) and `%` itself as `%XX`; everything else stays readable in `zfs get`.
fn encode_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c == '%' || c.is_ascii_control() {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

fn decode_value(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::runner::{RecordingRunner, Reply};
    use crate::host::zfs::Dialect;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/zfs");
    const PARENT: &str = "tank/images";
    const ZFS: &str = "/sbin/zfs";

    fn uuid(n: u8) -> Uuid {
        Uuid::from_bytes([n; 16])
    }

    fn meta(n: u8) -> ImageMeta {
        ImageMeta {
            uuid: uuid(n),
            name: "debian-12".into(),
            version: "20241122".into(),
            os: "linux".into(),
            image_type: "zvol".into(),
            origin: None,
            sha1: "0123456789abcdef0123456789abcdef01234567".into(),
            size: 1234,
            compression: "gzip".into(),
            image_size_mib: Some(1),
            source: "https://images.example.com".into(),
        }
    }

    struct Setup {
        runner: RecordingRunner,
        storage: ZfsStorage,
        zvols: tempfile::TempDir,
    }

    fn setup(mode: ZfsMode, dialect: Dialect) -> Setup {
        let runner = RecordingRunner::new();
        let zvols = tempfile::tempdir().unwrap();
        let zfs = Zfs::new(Arc::new(runner.clone()), ZFS, dialect);
        let storage = ZfsStorage::new(zfs, PARENT, mode)
            .with_zvol_dir(zvols.path())
            .with_device_wait(Duration::from_millis(200));
        Setup { runner, storage, zvols }
    }

    impl Setup {
        /// The file standing in for the zvol device udev would create.
        fn device(&self, n: u8) -> PathBuf {
            let path = self.zvols.path().join(PARENT).join(format!("{}-partial", uuid(n)));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"").unwrap();
            path
        }

        /// Commands after `skip`, without the program path.
        fn commands_from(&self, skip: usize) -> Vec<String> {
            self.runner.commands()[skip..]
                .iter()
                .map(|c| c.strip_prefix("/sbin/zfs ").unwrap().to_string())
                .collect()
        }
    }

    fn raw_disk() -> Vec<u8> {
        // Data, a run of zeros longer than a block (a hole), data again.
        let mut disk: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8 + 1).collect();
        disk.extend(std::iter::repeat_n(0u8, 3 * BLOCK));
        disk.extend((0..50_000u32).map(|i| (i % 13) as u8 + 1));
        disk
    }

    fn stream(flags: u32, fromguid: u64) -> Vec<u8> {
        let mut s = vec![0u8; 8];
        s.extend_from_slice(&ZFS_STREAM_MAGIC);
        s.extend_from_slice(&1u64.to_le_bytes()); // versioninfo: a single stream
        s.extend_from_slice(&[0u8; 8]); // creation time
        s.extend_from_slice(&2u32.to_le_bytes()); // objset type
        s.extend_from_slice(&flags.to_le_bytes());
        s.extend_from_slice(&7u64.to_le_bytes()); // toguid
        s.extend_from_slice(&fromguid.to_le_bytes());
        s.extend_from_slice(&[0x55; 4000]);
        s
    }

    fn set_commands(dataset: &str, image: &LocalImage) -> Vec<String> {
        properties_of(&image.meta, image.content, image.content_size, &image.imported_at)
            .into_iter()
            .map(|(k, v)| format!("set {k}={v} {dataset}"))
            .collect()
    }

    #[test]
    fn zvol_mode_writes_a_raw_disk_through_the_device_then_snapshots_and_renames() {
        let s = setup(ZfsMode::Zvol, Dialect::OpenZfs);
        let device = s.device(1);
        let mut writer = s.storage.begin(meta(1)).unwrap();
        let disk = raw_disk();
        for chunk in disk.chunks(7000) {
            writer.write_all(chunk).unwrap();
        }
        let image = writer.commit().unwrap();
        assert_eq!(image.content, ContentKind::RawDisk);
        assert_eq!(image.content_size, disk.len() as u64);
        assert_eq!(image.location, format!("{PARENT}/{}", uuid(1)));
        let partial = format!("{PARENT}/{}-partial", uuid(1));
        let mut expected = vec![
            format!("list -H -o name,type,origin -t filesystem,volume -d 1 {PARENT}"),
            format!("create -V 1M -o volmode=dev {partial}"),
        ];
        expected.extend(set_commands(&partial, &image));
        expected.push(format!("snapshot {partial}@final"));
        expected.push(format!("rename {partial} {PARENT}/{}", uuid(1)));
        assert_eq!(s.commands_from(0), expected);
        // A device keeps its size: the bytes are there, the zero run was skipped, not written.
        let written = std::fs::read(&device).unwrap();
        assert_eq!(&written[..], &disk[..written.len()]);
        assert_eq!(written.len(), disk.len());
    }

    #[test]
    fn a_failed_snapshot_destroys_the_partial() {
        let s = setup(ZfsMode::Zvol, Dialect::OpenZfs);
        s.device(2);
        s.runner.expect("/sbin/zfs snapshot", Reply::Fail("cannot create snapshot: out of space\n".into()));
        let mut writer = s.storage.begin(meta(2)).unwrap();
        writer.write_all(&raw_disk()[..100_000]).unwrap();
        let err = writer.commit().unwrap_err();
        assert!(matches!(err, StorageError::NoSpace(_)), "{err:?}");
        let commands = s.commands_from(0);
        let partial = format!("{PARENT}/{}-partial", uuid(2));
        assert_eq!(commands.last().unwrap(), &format!("destroy -r {partial}"));
        assert!(!commands.iter().any(|c| c.starts_with("rename")));
    }

    #[test]
    fn a_raw_disk_larger_than_image_size_fails_on_write_and_is_destroyed() {
        let s = setup(ZfsMode::Zvol, Dialect::OpenZfs);
        s.device(3);
        let mut writer = s.storage.begin(meta(3)).unwrap();
        writer.write_all(&vec![1u8; MIB as usize]).unwrap();
        let err = writer.write_all(b"one byte too many").unwrap_err();
        assert!(err.to_string().contains("larger than its image_size"), "{err}");
        assert!(matches!(writer.commit(), Err(StorageError::InvalidContent(_))));
        let commands = s.commands_from(0);
        assert_eq!(commands.iter().filter(|c| c.starts_with("destroy")).count(), 1, "{commands:?}");
        assert_eq!(commands.last().unwrap(), &format!("destroy -r {PARENT}/{}-partial", uuid(3)));
    }

    #[test]
    fn zvol_mode_needs_image_size_and_openzfs_for_raw_disks() {
        let s = setup(ZfsMode::Zvol, Dialect::OpenZfs);
        let mut writer = s.storage.begin(ImageMeta { image_size_mib: None, ..meta(4) }).unwrap();
        assert!(writer.write_all(&raw_disk()).is_err());
        assert!(matches!(writer.commit(), Err(StorageError::Unsupported(_))));
        assert!(!s.runner.commands().iter().any(|c| c.contains("create") || c.contains("destroy")));

        let s = setup(ZfsMode::Zvol, Dialect::ZfsFuse);
        let mut writer = s.storage.begin(meta(4)).unwrap();
        assert!(writer.write_all(&raw_disk()).is_err());
        assert!(matches!(writer.commit(), Err(StorageError::Unsupported(m)) if m.contains("zvols")));
    }

    #[test]
    fn the_zvol_device_must_appear() {
        let s = setup(ZfsMode::Zvol, Dialect::OpenZfs);
        let mut writer = s.storage.begin(meta(5)).unwrap();
        let err = writer.write_all(&raw_disk()).unwrap_err();
        assert!(err.to_string().contains("storage I/O failed"), "{err}");
        writer.abort();
        assert_eq!(s.commands_from(0).last().unwrap(), &format!("destroy -r {PARENT}/{}-partial", uuid(5)));
    }

    #[test]
    fn a_stream_is_piped_to_receive_and_its_one_snapshot_becomes_final() {
        let s = setup(ZfsMode::Zvol, Dialect::OpenZfs);
        let partial = format!("{PARENT}/{}-partial", uuid(6));
        s.runner.expect(
            "/sbin/zfs list -H -o name,type,origin -t all -r",
            Reply::Ok(format!("{partial}\tvolume\t-\n{partial}@2024\tsnapshot\t-\n")),
        );
        let mut writer = s.storage.begin(meta(6)).unwrap();
        let bytes = stream(0, 0);
        // Byte by byte at first: detection must wait for the begin record.
        for b in &bytes[..100] {
            writer.write_all(std::slice::from_ref(b)).unwrap();
        }
        writer.write_all(&bytes[100..]).unwrap();
        let image = writer.commit().unwrap();
        assert_eq!(image.content, ContentKind::ZfsStream);
        assert_eq!(image.content_size, bytes.len() as u64);
        let commands = s.commands_from(1);
        assert_eq!(commands[0], format!("receive -u {partial}"));
        assert_eq!(s.runner.stdin_of(1), bytes);
        assert_eq!(commands[1], format!("list -H -o name,type,origin -t all -r {partial}"));
        assert_eq!(commands[2], format!("rename {partial}@2024 {partial}@final"));
        assert_eq!(commands[3..commands.len() - 1], set_commands(&partial, &image)[..]);
        assert_eq!(commands.last().unwrap(), &format!("rename {partial} {PARENT}/{}", uuid(6)));
    }

    #[test]
    fn a_stream_with_two_snapshots_is_invalid_and_destroyed() {
        let s = setup(ZfsMode::Zvol, Dialect::OpenZfs);
        let partial = format!("{PARENT}/{}-partial", uuid(7));
        s.runner.expect(
            "/sbin/zfs list -H -o name,type,origin -t all -r",
            Reply::Ok(format!("{partial}\tvolume\t-\n{partial}@a\tsnapshot\t-\n{partial}@b\tsnapshot\t-\n")),
        );
        let mut writer = s.storage.begin(meta(7)).unwrap();
        writer.write_all(&stream(0, 0)).unwrap();
        let err = writer.commit().unwrap_err();
        assert!(
            matches!(&err, StorageError::InvalidContent(m) if m.contains("exactly one snapshot")),
            "{err}"
        );
        assert_eq!(s.commands_from(0).last().unwrap(), &format!("destroy -r {partial}"));
    }

    #[test]
    fn a_clone_of_the_wrong_snapshot_is_invalid() {
        let s = setup(ZfsMode::Zvol, Dialect::OpenZfs);
        let partial = format!("{PARENT}/{}-partial", uuid(8));
        s.runner.expect(
            "/sbin/zfs list -H -o name,type,origin -t all -r",
            Reply::Ok(format!("{partial}\tvolume\ttank/other@final\n{partial}@final\tsnapshot\t-\n")),
        );
        let origin_props = format!(
            "{PARENT}/{o}\timgagent:uuid\t{o}\tlocal\n{PARENT}/{o}\timgagent:size\t1\tlocal\n\
             {PARENT}/{o}\timgagent:content\tzfs-stream\tlocal\n{PARENT}/{o}\timgagent:content-size\t1\tlocal\n\
             {PARENT}/{o}\timgagent:imported-at\t2024-11-22T00:00:00Z\tlocal\n",
            o = uuid(9)
        );
        s.runner.expect("/sbin/zfs get", Reply::Ok(origin_props));
        let mut writer = s.storage.begin(ImageMeta { origin: Some(uuid(9)), ..meta(8) }).unwrap();
        writer.write_all(&stream(1, 42)).unwrap();
        let err = writer.commit().unwrap_err();
        assert!(matches!(&err, StorageError::InvalidContent(m) if m.contains("tank/other@final")), "{err}");
        assert_eq!(s.commands_from(0).last().unwrap(), &format!("destroy -r {partial}"));
    }

    #[test]
    fn incremental_streams_that_zfs_would_misplace_are_refused_before_receive() {
        let s = setup(ZfsMode::Files, Dialect::ZfsFuse);
        let mut writer = s.storage.begin(meta(10)).unwrap();
        // Not a clone stream (flags 0) but incremental: zfs-fuse would apply it to the dataset
        // holding the from-snapshot.
        assert!(writer.write_all(&stream(0, 42)).is_err());
        assert!(matches!(writer.commit(), Err(StorageError::InvalidContent(_))));
        // A clone stream for an image without origin.
        let mut writer = s.storage.begin(meta(10)).unwrap();
        assert!(writer.write_all(&stream(1, 42)).is_err());
        writer.abort();
        assert!(!s.runner.commands().iter().any(|c| c.contains("receive")), "{:?}", s.runner.commands());
    }

    #[test]
    fn a_failing_receive_reports_zfs_and_destroys_the_partial() {
        let s = setup(ZfsMode::Files, Dialect::OpenZfs);
        s.runner.expect(
            "/sbin/zfs receive",
            Reply::Fail(
                "cannot receive new filesystem stream: checksum mismatch or incomplete stream\n".into(),
            ),
        );
        let mut writer = s.storage.begin(meta(11)).unwrap();
        writer.write_all(&stream(0, 0)).unwrap();
        let err = writer.commit().unwrap_err();
        assert!(matches!(&err, StorageError::InvalidContent(m) if m.contains("incomplete stream")), "{err}");
        assert_eq!(s.commands_from(0).last().unwrap(), &format!("destroy -r {PARENT}/{}-partial", uuid(11)));
    }

    #[test]
    fn begin_checks_the_image_its_origin_and_stale_partials() {
        let s = setup(ZfsMode::Files, Dialect::OpenZfs);
        let listing =
            format!("{PARENT}/{}\tfilesystem\t-\n{PARENT}/{}-partial\tfilesystem\t-\n", uuid(12), uuid(13));
        s.runner.expect("/sbin/zfs list", Reply::Ok(listing.clone()));
        assert!(matches!(s.storage.begin(meta(12)), Err(StorageError::AlreadyExists(u)) if u == uuid(12)));

        s.runner.expect("/sbin/zfs list", Reply::Ok(listing.clone()));
        let child = ImageMeta { origin: Some(uuid(14)), ..meta(13) };
        assert!(matches!(s.storage.begin(child), Err(StorageError::MissingOrigin(u)) if u == uuid(14)));

        let before = s.runner.commands().len();
        s.runner.expect("/sbin/zfs list", Reply::Ok(listing));
        let writer = s.storage.begin(meta(13)).unwrap();
        // A second import of the same uuid in this process must not destroy the first's partial.
        assert!(matches!(s.storage.begin(meta(13)), Err(StorageError::AlreadyExists(_))));
        drop(writer);
        let commands = s.commands_from(before);
        assert_eq!(commands[1], format!("destroy -r {PARENT}/{}-partial", uuid(13)));
        // Dropped before any byte: nothing was created, nothing to destroy.
        assert_eq!(commands.iter().filter(|c| c.starts_with("destroy")).count(), 1, "{commands:?}");
    }

    #[test]
    fn begin_creates_a_missing_parent() {
        let s = setup(ZfsMode::Files, Dialect::OpenZfs);
        let missing = format!("cannot open '{PARENT}': dataset does not exist\n");
        s.runner.expect("/sbin/zfs list", Reply::Fail(missing));
        drop(s.storage.begin(meta(15)).unwrap());
        assert_eq!(s.commands_from(1), [format!("create -p {PARENT}")]);
    }

    #[test]
    fn lists_images_from_one_zfs_get_skipping_partials_and_strangers() {
        let s = setup(ZfsMode::Files, Dialect::ZfsFuse);
        let text = std::fs::read_to_string(format!("{FIXTURES}/get-images-zfs-fuse.txt")).unwrap();
        s.runner.expect("/sbin/zfs get", Reply::Ok(text.clone()));
        let images = s.storage.list().unwrap();
        assert_eq!(
            s.runner.commands()[0],
            format!(
                "/sbin/zfs get -H -p -o name,property,value,source -d 1 -s local {} {PARENT}",
                property::ALL.join(",")
            )
        );
        // The fixture was captured under another parent: nothing matches this one.
        assert!(images.is_empty());

        let parent = text.lines().next().unwrap().split('\t').next().unwrap();
        let parent = &parent[..parent.rfind('/').unwrap()];
        let zfs = Zfs::new(Arc::new(s.runner.clone()), ZFS, Dialect::ZfsFuse);
        let storage = ZfsStorage::new(zfs, parent, ZfsMode::Files);
        s.runner.expect("/sbin/zfs get", Reply::Ok(text));
        let images = storage.list().unwrap();
        assert_eq!(images.len(), 2, "{images:?}");
        assert!(images.windows(2).all(|w| w[0].meta.uuid < w[1].meta.uuid));
        let child = images.iter().find(|i| i.meta.origin.is_some()).unwrap();
        let base = images.iter().find(|i| i.meta.origin.is_none()).unwrap();
        assert_eq!(child.meta.origin, Some(base.meta.uuid));
        assert_eq!(base.content, ContentKind::RawDisk);
        assert_eq!(child.content, ContentKind::ZfsStream);
        assert!(images.iter().all(|i| !i.location.ends_with("-partial")));
        assert_eq!(base.meta.name, "name with\ttab, 100% and\nnewline");
    }

    #[test]
    fn get_of_a_missing_image_is_none() {
        let s = setup(ZfsMode::Files, Dialect::OpenZfs);
        s.runner.expect("/sbin/zfs get", Reply::Fail("cannot open 'x': dataset does not exist\n".into()));
        assert!(s.storage.get(&uuid(16)).unwrap().is_none());
        // Exists but has no properties of ours.
        assert!(s.storage.get(&uuid(16)).unwrap().is_none());
    }

    fn image_listing(images: &[(u8, Option<u8>)]) -> String {
        let mut out = String::new();
        for (n, origin) in images {
            let image = LocalImage {
                meta: ImageMeta { origin: origin.map(uuid), ..meta(*n) },
                content: ContentKind::ZfsStream,
                location: String::new(),
                content_size: 10,
                imported_at: "2024-11-22T00:00:00Z".into(),
            };
            for (k, v) in properties_of(&image.meta, image.content, 10, &image.imported_at) {
                out.push_str(&format!("{PARENT}/{}\t{k}\t{v}\tlocal\n", uuid(*n)));
            }
        }
        out
    }

    #[test]
    fn delete_is_refused_while_an_image_or_a_clone_uses_it() {
        let s = setup(ZfsMode::Files, Dialect::OpenZfs);
        s.runner.expect("/sbin/zfs get", Reply::Ok(image_listing(&[(20, None), (21, Some(20))])));
        match s.storage.delete(&uuid(20)) {
            Err(StorageError::InUse { users, .. }) => assert_eq!(users, [format!("{PARENT}/{}", uuid(21))]),
            other => panic!("{other:?}"),
        }
        assert!(!s.runner.commands().iter().any(|c| c.contains("destroy")));

        s.runner.expect("/sbin/zfs get", Reply::Ok(image_listing(&[(20, None)])));
        s.runner.expect(
            "/sbin/zfs destroy",
            Reply::Fail(
                std::fs::read_to_string(format!("{FIXTURES}/stderr-destroy-clones-zfs-fuse.txt")).unwrap(),
            ),
        );
        match s.storage.delete(&uuid(20)) {
            Err(StorageError::InUse { users, .. }) => assert_eq!(users, ["agenttest/exp/b"]),
            other => panic!("{other:?}"),
        }

        s.runner.expect("/sbin/zfs get", Reply::Ok(image_listing(&[(20, None)])));
        s.storage.delete(&uuid(20)).unwrap();
        assert_eq!(
            s.runner.commands().last().unwrap(),
            &format!("/sbin/zfs destroy -r {PARENT}/{}", uuid(20))
        );
        assert!(matches!(s.storage.delete(&uuid(20)), Err(StorageError::NotFound(_))));
    }

    #[test]
    fn recover_destroys_partials_only() {
        let s = setup(ZfsMode::Files, Dialect::OpenZfs);
        s.runner.expect(
            "/sbin/zfs list",
            Reply::Ok(format!(
                "{PARENT}\tfilesystem\t-\n{PARENT}/{a}\tfilesystem\t-\n{PARENT}/{a}-partial\tfilesystem\t-\n\
                 {PARENT}/junk-partial\tvolume\t-\n",
                a = uuid(22)
            )),
        );
        let removed = s.storage.recover().unwrap();
        assert_eq!(removed, [format!("{PARENT}/{}-partial", uuid(22)), format!("{PARENT}/junk-partial")]);
        assert_eq!(
            s.commands_from(1),
            [
                format!("destroy -r {PARENT}/{}-partial", uuid(22)),
                format!("destroy -r {PARENT}/junk-partial")
            ]
        );
    }

    #[test]
    fn property_values_round_trip_and_are_checked() {
        for text in ["plain", "a\tb\nc\r%41%", "-", "ünï ✓", ""] {
            assert_eq!(decode_value(&encode_value(text)), text);
            assert!(!encode_value(text).contains(['\t', '\n']));
        }
        assert_eq!(encode_value("100%\n"), "100%25%0A");
        assert_eq!(decode_value("%zz%4"), "%zz%4");
        let long = ImageMeta { source: "x".repeat(MAX_VALUE_LEN + 1), ..meta(23) };
        let s = setup(ZfsMode::Files, Dialect::OpenZfs);
        assert!(matches!(s.storage.begin(long), Err(StorageError::Unsupported(_))));
        assert!(s.runner.commands().is_empty());
    }

    #[test]
    fn properties_missing_or_wrong_make_no_image() {
        let image = |props: &[(&str, &str)]| {
            let map = props.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            image_from_properties(&format!("{PARENT}/{}", uuid(24)), &map)
        };
        let u = uuid(24).to_string();
        let full = [
            (property::UUID, u.as_str()),
            (property::SIZE, "5"),
            (property::CONTENT, "raw-disk"),
            (property::CONTENT_SIZE, "9"),
            (property::IMPORTED_AT, "2024-11-22T00:00:00Z"),
        ];
        let ok = image(&full).unwrap();
        assert_eq!((ok.meta.name.as_str(), ok.meta.origin, ok.meta.image_size_mib), ("", None, None));
        for drop in 0..full.len() {
            let fewer: Vec<_> =
                full.iter().enumerate().filter(|(i, _)| *i != drop).map(|(_, p)| *p).collect();
            assert!(image(&fewer).is_err(), "without {}", full[drop].0);
        }
        let other = uuid(25).to_string();
        let mut wrong = full;
        wrong[0] = (property::UUID, other.as_str());
        assert!(image(&wrong).is_err());
        let mut bad = full.to_vec();
        bad.push((property::ORIGIN, "not-a-uuid"));
        assert!(image(&bad).is_err());
    }

    #[test]
    fn sparse_sink_skips_zero_blocks_and_keeps_the_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        let file = File::create(&path).unwrap();
        let mut sink = SparseSink::new(file, path.clone(), None, false);
        let mut disk = vec![0u8; BLOCK + 10];
        disk.extend_from_slice(&[9u8; 100]);
        disk.extend(vec![0u8; 2 * BLOCK + 5]);
        for chunk in disk.chunks(BLOCK / 3) {
            sink.write(chunk).unwrap();
        }
        sink.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), disk);
    }
}
