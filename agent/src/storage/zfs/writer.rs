//! An import into a partial dataset: the stream received or the raw disk written (sparsely) as
//! it arrives, checked, snapshotted `@final`, given its properties and renamed into place; any
//! failure, abort or drop destroys the partial.

use super::*;

/// Marks a uuid as being imported by this process until dropped.
#[derive(Debug)]
pub(super) struct ImportGuard {
    set: Arc<Mutex<HashSet<Uuid>>>,
    uuid: Uuid,
}

impl ImportGuard {
    pub(super) fn claim(set: &Arc<Mutex<HashSet<Uuid>>>, uuid: Uuid) -> Result<Self, StorageError> {
        if !service_kit::lock(set).insert(uuid) {
            // Another writer of this process is importing it; its partial must survive.
            return Err(StorageError::AlreadyExists(uuid));
        }
        Ok(ImportGuard { set: set.clone(), uuid })
    }

    pub(super) fn is_claimed(set: &Mutex<HashSet<Uuid>>, uuid: Uuid) -> bool {
        service_kit::lock(set).contains(&uuid)
    }
}

impl Drop for ImportGuard {
    fn drop(&mut self) {
        service_kit::lock(&self.set).remove(&self.uuid);
    }
}

/// What the writer is doing with the bytes.
pub(super) enum State {
    /// Collecting the first bytes, to tell a stream from a raw disk.
    Head(Vec<u8>),
    Stream(Receive),
    Raw(SparseSink),
    /// A write failed; the partial is gone. `commit` returns this error.
    Failed(Option<StorageError>),
    /// Committed or aborted.
    Done,
}

pub(super) struct ZfsWriter {
    pub(super) zfs: Zfs,
    pub(super) mode: ZfsMode,
    pub(super) parent: String,
    pub(super) zvol_dir: PathBuf,
    pub(super) device_wait: Duration,
    pub(super) meta: ImageMeta,
    pub(super) target: String,
    pub(super) partial: String,
    pub(super) state: State,
    /// Whether the partial dataset may exist (created, or a receive started).
    pub(super) started: bool,
    /// Decompressed bytes accepted so far.
    pub(super) written: u64,
    pub(super) _guard: ImportGuard,
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
                tracing::warn!(dataset = %self.partial, error = %service_kit::ErrorChain(&error), "cannot destroy a failed import");
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
pub(super) fn check_stream_begin(head: &[u8], has_origin: bool) -> Result<(), String> {
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
pub(super) fn wait_for(device: &Path, wait: Duration) -> Result<(), StorageError> {
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
pub(super) struct SparseSink {
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
    pub(super) fn new(file: File, path: PathBuf, capacity: Option<u64>, device: bool) -> Self {
        SparseSink { file, path, block: Vec::with_capacity(BLOCK), position: 0, capacity, device }
    }

    pub(super) fn io(&self, error: io::Error) -> StorageError {
        StorageError::io(format!("writing {}", self.path.display()), error)
    }

    pub(super) fn write(&mut self, mut buf: &[u8]) -> Result<(), StorageError> {
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

    pub(super) fn put(&mut self, block: &[u8]) -> io::Result<()> {
        service_kit::sparse::write_sparse(&mut self.file, block).map(drop)
    }

    pub(super) fn flush_block(&mut self) -> Result<(), StorageError> {
        let block = std::mem::take(&mut self.block);
        let result = self.put(&block);
        self.block = block;
        self.block.clear();
        result.map_err(|e| self.io(e))
    }

    /// Writes the last block, gives the file its full length and syncs it to the pool.
    pub(super) fn finish(mut self) -> Result<(), StorageError> {
        if !self.block.is_empty() {
            self.flush_block()?;
        }
        if !self.device {
            self.file.set_len(self.position).map_err(|e| self.io(e))?;
        }
        self.file.sync_all().map_err(|e| self.io(e))
    }
}
