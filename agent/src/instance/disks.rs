//! Where instances live: their boot disk, cloned from an image, and their persisted record.
//! `zfs`/`zfs-files`: a `zfs clone` of the image's `@final` under the instances parent, with
//! the record in the `imgagent:instance` user property of the clone. `files`: a directory per
//! instance holding a qcow2 overlay on the image (QEMU) or a sparse copy (bhyve), and
//! `instance.json`. Creating is atomic in both: a crash leaves a complete instance or a
//! leftover that `load_all` removes.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::record::InstanceRecord;
use crate::host::qemu_img::{QemuImg, QemuImgError, SnapshotOp};
use crate::host::runner::ExecError;
use crate::host::zfs::{Depth, Zfs, ZfsError};
use crate::hypervisor::{DiskFormat, VmDisk};
use crate::storage::zfs::{ZfsMode, DISK_FILE, FINAL_SNAPSHOT};
use crate::storage::{ContentKind, LocalImage};

/// The ZFS user property holding an instance's record (compact JSON).
pub const RECORD_PROPERTY: &str = "imgagent:instance";
/// zfs limits user property values to 8 KiB.
const MAX_RECORD_LEN: usize = 8000;
const MIB: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{0}")]
    Zfs(Box<ZfsError>),
    #[error(transparent)]
    Command(#[from] ExecError),
    #[error(transparent)]
    QemuImg(#[from] QemuImgError),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl DiskError {
    /// Whether the disk (or pool) is full.
    pub fn is_no_space(&self) -> bool {
        matches!(self, DiskError::Io { source, .. } if service_kit::durable::is_no_space(source))
    }
}

impl From<ZfsError> for DiskError {
    fn from(e: ZfsError) -> Self {
        DiskError::Zfs(Box::new(e))
    }
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> DiskError {
    let context = context.into();
    move |source| DiskError::Io { context, source }
}

/// Instance disks and records. Methods block (host commands, file I/O).
pub trait InstanceDisks: Send + Sync {
    /// Creates the instance's disk: a copy-on-write clone of `image`, or blank (`None`, for an
    /// install from an ISO), of `record.disk_mib`; and persists the record with it.
    fn create(&self, record: &InstanceRecord, image: Option<&LocalImage>) -> Result<(), DiskError>;
    /// Persists a changed record.
    fn save(&self, record: &InstanceRecord) -> Result<(), DiskError>;
    /// Every persisted instance; removes what an interrupted create left.
    fn load_all(&self) -> Result<Vec<InstanceRecord>, DiskError>;
    /// The disks the hypervisor gets, boot disk first.
    fn disks(&self, record: &InstanceRecord) -> Result<Vec<VmDisk>, DiskError>;
    /// Destroys the disk and the record.
    fn destroy(&self, uuid: &Uuid) -> Result<(), DiskError>;
    /// Snapshots the disk (the instance is stopped) under a name checked by `check_snapshot_name`.
    /// The manager checks that the name is free (or, below, that the snapshot exists) first.
    fn snapshot(&self, record: &InstanceRecord, name: &str) -> Result<(), DiskError>;
    /// Puts the disk back as it was at the snapshot; later snapshots are kept where the
    /// backend can (qcow2, copies) and destroyed where it cannot (ZFS).
    fn rollback(&self, record: &InstanceRecord, name: &str) -> Result<(), DiskError>;
    /// The disk's snapshots, oldest first.
    fn snapshots(&self, record: &InstanceRecord) -> Result<Vec<String>, DiskError>;
    fn delete_snapshot(&self, record: &InstanceRecord, name: &str) -> Result<(), DiskError>;
    /// The disk as raw bytes to read (the instance is stopped): the disk itself, or a raw
    /// conversion made for the purpose, which the caller removes (`temporary`).
    fn export_raw(&self, record: &InstanceRecord) -> Result<RawExport, DiskError>;
}

/// A raw view of an instance's disk, from [`InstanceDisks::export_raw`].
pub struct RawExport {
    pub path: PathBuf,
    pub temporary: bool,
}

/// Snapshot names: they go on command lines (`dataset@name`, `qemu-img snapshot -c name`) and
/// into file names, so plain characters only, and never a leading dash.
pub fn check_snapshot_name(name: &str) -> Result<(), DiskError> {
    let ok = (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !name.starts_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(DiskError::Invalid(format!(
            "snapshot name {name:?} must be 1 to 64 of A-Z a-z 0-9 . _ -, not starting with - or ."
        )))
    }
}

/// `files` backend instances: `<dir>/<uuid>/{disk0.qcow2|disk0.raw, instance.json}`.
pub struct FileDisks {
    dir: PathBuf,
    qemu_img: QemuImg,
    /// qcow2 overlays (QEMU) rather than full copies (bhyve reads raw only).
    overlay: bool,
}

impl FileDisks {
    pub fn new(dir: &Path, qemu_img: QemuImg, overlay: bool) -> Result<Self, DiskError> {
        fs::create_dir_all(dir).map_err(io_error(format!("create {}", dir.display())))?;
        Ok(FileDisks { dir: dir.to_owned(), qemu_img, overlay })
    }

    fn instance_dir(&self, uuid: &Uuid) -> PathBuf {
        self.dir.join(uuid.to_string())
    }

    fn snapshot_dir(&self, uuid: &Uuid) -> PathBuf {
        self.instance_dir(uuid).join("snapshots")
    }

    fn disk_name(&self) -> &'static str {
        if self.overlay {
            "disk0.qcow2"
        } else {
            "disk0.raw"
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DiskError> {
    service_kit::durable::write_file(path, bytes).map_err(io_error(format!("write {}", path.display())))
}

/// A sparse raw disk of `size` bytes, all zeros.
fn blank_file(path: &Path, size: u64) -> Result<(), DiskError> {
    let file = File::create(path).map_err(io_error(format!("create {}", path.display())))?;
    file.set_len(size).map_err(io_error("size the disk"))?;
    file.sync_all().map_err(io_error("sync the disk"))
}

/// Copies a raw disk, leaving holes where the source has zeros, then sizes it to `size`.
fn sparse_copy(from: &Path, to: &Path, size: u64) -> Result<(), DiskError> {
    service_kit::sparse::copy_sparse(from, to, size).map_err(io_error(format!(
        "copy {} to {}",
        from.display(),
        to.display()
    )))
}

impl InstanceDisks for FileDisks {
    fn create(&self, record: &InstanceRecord, image: Option<&LocalImage>) -> Result<(), DiskError> {
        if image.is_some_and(|image| image.content != ContentKind::RawDisk) {
            return Err(DiskError::Invalid("the files backend runs raw disk images only".into()));
        }
        let partial = self.dir.join(format!(".partial-{}", record.uuid));
        let _ = fs::remove_dir_all(&partial);
        fs::create_dir(&partial).map_err(io_error(format!("create {}", partial.display())))?;
        let result = (|| {
            let disk = partial.join(self.disk_name());
            let size = record.disk_mib * MIB;
            match (image, self.overlay) {
                (Some(image), true) => {
                    self.qemu_img.create_overlay(Path::new(&image.location), &disk, size)?
                }
                (Some(image), false) => sparse_copy(Path::new(&image.location), &disk, size)?,
                (None, true) => self.qemu_img.create_blank(&disk, size)?,
                (None, false) => blank_file(&disk, size)?,
            }
            let json = serde_json::to_vec_pretty(record).map_err(|e| DiskError::Invalid(e.to_string()))?;
            write_atomically(&partial.join("instance.json"), &json)?;
            fs::rename(&partial, self.instance_dir(&record.uuid))
                .map_err(io_error("rename the instance dir"))?;
            service_kit::durable::sync_dir(&self.dir).map_err(io_error("sync the instances dir"))
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&partial);
        }
        result
    }

    fn save(&self, record: &InstanceRecord) -> Result<(), DiskError> {
        let json = serde_json::to_vec_pretty(record).map_err(|e| DiskError::Invalid(e.to_string()))?;
        write_atomically(&self.instance_dir(&record.uuid).join("instance.json"), &json)
    }

    fn load_all(&self) -> Result<Vec<InstanceRecord>, DiskError> {
        let mut records = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_error("list instances"))? {
            let entry = entry.map_err(io_error("list instances"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".partial-") || name.starts_with(".destroying-") {
                tracing::info!(path = %entry.path().display(), "removing an unfinished instance");
                let _ = fs::remove_dir_all(entry.path());
                continue;
            }
            if Uuid::parse_str(&name).is_err() {
                continue;
            }
            let path = entry.path().join("instance.json");
            let text = fs::read(&path).map_err(io_error(format!("read {}", path.display())))?;
            let record: InstanceRecord = serde_json::from_slice(&text)
                .map_err(|e| DiskError::Invalid(format!("{}: {e}", path.display())))?;
            records.push(record);
        }
        records.sort_by_key(|r| r.uuid);
        Ok(records)
    }

    fn disks(&self, record: &InstanceRecord) -> Result<Vec<VmDisk>, DiskError> {
        let format = if self.overlay { DiskFormat::Qcow2 } else { DiskFormat::Raw };
        let path = self.instance_dir(&record.uuid).join(self.disk_name());
        Ok(vec![VmDisk { path, format, read_only: false }])
    }

    fn destroy(&self, uuid: &Uuid) -> Result<(), DiskError> {
        let dir = self.instance_dir(uuid);
        let doomed = self.dir.join(format!(".destroying-{uuid}"));
        // Out of the namespace first: a crash halfway leaves a leftover, not half an instance.
        fs::rename(&dir, &doomed).map_err(io_error(format!("remove {}", dir.display())))?;
        fs::remove_dir_all(&doomed).map_err(io_error(format!("remove {}", doomed.display())))
    }

    fn export_raw(&self, record: &InstanceRecord) -> Result<RawExport, DiskError> {
        let disk = self.instance_dir(&record.uuid).join(self.disk_name());
        if !self.overlay {
            return Ok(RawExport { path: disk, temporary: false });
        }
        // The overlay and its image flattened into one sparse raw file.
        let path = self.instance_dir(&record.uuid).join(".export.raw");
        self.qemu_img.convert_to_raw(&disk, &path)?;
        Ok(RawExport { path, temporary: true })
    }

    // qcow2 overlays keep internal snapshots (`qemu-img snapshot`); raw disks (bhyve) get
    // sparse copies in `snapshots/`, written aside and renamed into place.
    fn snapshot(&self, record: &InstanceRecord, name: &str) -> Result<(), DiskError> {
        check_snapshot_name(name)?;
        let disk = self.instance_dir(&record.uuid).join(self.disk_name());
        if self.overlay {
            return Ok(self.qemu_img.snapshot(SnapshotOp::Create, name, &disk)?);
        }
        let dir = self.snapshot_dir(&record.uuid);
        fs::create_dir_all(&dir).map_err(io_error(format!("create {}", dir.display())))?;
        let partial = dir.join(format!(".partial-{name}"));
        let size = fs::metadata(&disk).map_err(io_error("stat the disk"))?.len();
        sparse_copy(&disk, &partial, size)?;
        fs::rename(&partial, dir.join(format!("{name}.raw"))).map_err(io_error("store the snapshot"))
    }

    fn rollback(&self, record: &InstanceRecord, name: &str) -> Result<(), DiskError> {
        check_snapshot_name(name)?;
        let disk = self.instance_dir(&record.uuid).join(self.disk_name());
        if self.overlay {
            return Ok(self.qemu_img.snapshot(SnapshotOp::Apply, name, &disk)?);
        }
        let copy = self.snapshot_dir(&record.uuid).join(format!("{name}.raw"));
        let partial = self.instance_dir(&record.uuid).join(".partial-disk");
        let size = fs::metadata(&copy).map_err(io_error("stat the snapshot"))?.len();
        sparse_copy(&copy, &partial, size)?;
        fs::rename(&partial, &disk).map_err(io_error("put the disk back"))
    }

    fn snapshots(&self, record: &InstanceRecord) -> Result<Vec<String>, DiskError> {
        if self.overlay {
            let disk = self.instance_dir(&record.uuid).join(self.disk_name());
            return Ok(self.qemu_img.snapshots(&disk)?);
        }
        let dir = self.snapshot_dir(&record.uuid);
        let mut found = Vec::new();
        for entry in fs::read_dir(&dir).into_iter().flatten() {
            let entry = entry.map_err(io_error("list snapshots"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(name) = name.strip_suffix(".raw").filter(|n| check_snapshot_name(n).is_ok()) {
                let modified =
                    entry.metadata().and_then(|m| m.modified()).map_err(io_error("stat a snapshot"))?;
                found.push((modified, name.to_string()));
            }
        }
        found.sort();
        Ok(found.into_iter().map(|(_, name)| name).collect())
    }

    fn delete_snapshot(&self, record: &InstanceRecord, name: &str) -> Result<(), DiskError> {
        check_snapshot_name(name)?;
        if self.overlay {
            let disk = self.instance_dir(&record.uuid).join(self.disk_name());
            return Ok(self.qemu_img.snapshot(SnapshotOp::Delete, name, &disk)?);
        }
        let copy = self.snapshot_dir(&record.uuid).join(format!("{name}.raw"));
        fs::remove_file(&copy).map_err(io_error(format!("remove {}", copy.display())))
    }
}

/// `zfs`/`zfs-files` backend instances: clones under `parent`.
pub struct ZfsDisks {
    zfs: Zfs,
    parent: String,
    mode: ZfsMode,
    zvol_dir: PathBuf,
}

impl ZfsDisks {
    pub fn new(zfs: Zfs, parent: &str, mode: ZfsMode, zvol_dir: &Path) -> Self {
        ZfsDisks {
            zfs,
            parent: parent.trim_end_matches('/').to_string(),
            mode,
            zvol_dir: zvol_dir.to_owned(),
        }
    }

    fn dataset(&self, uuid: &Uuid) -> String {
        format!("{}/{uuid}", self.parent)
    }

    fn encode(record: &InstanceRecord) -> Result<String, DiskError> {
        let json = serde_json::to_string(record).map_err(|e| DiskError::Invalid(e.to_string()))?;
        if json.len() > MAX_RECORD_LEN {
            return Err(DiskError::Invalid(format!(
                "instance record too long for a zfs property ({} bytes)",
                json.len()
            )));
        }
        Ok(json)
    }

    fn mountpoint(&self, dataset: &str) -> Result<PathBuf, DiskError> {
        let rows = self.zfs.get(dataset, &["mountpoint", "mounted"], Depth::Itself, None)?;
        let value = |p: &str| rows.iter().find(|r| r.property == p).and_then(|r| r.value.clone());
        let mountpoint = value("mountpoint").unwrap_or_default();
        if !mountpoint.starts_with('/') {
            return Err(DiskError::Invalid(format!("{dataset} has mountpoint {mountpoint:?}, not a path")));
        }
        if value("mounted").as_deref() != Some("yes") {
            self.zfs.mount(dataset)?;
        }
        Ok(PathBuf::from(mountpoint))
    }

    fn grow(&self, dataset: &str, size_mib: u64) -> Result<(), DiskError> {
        match self.mode {
            ZfsMode::Zvol => {
                // Only ever grow: a smaller volsize would cut the guest's disk.
                let rows = self.zfs.get(dataset, &["volsize"], Depth::Itself, None)?;
                let current =
                    rows.first().and_then(|r| r.value.as_deref()).and_then(|v| v.parse::<u64>().ok());
                if current.is_some_and(|bytes| bytes < size_mib * MIB) {
                    self.zfs.set(dataset, "volsize", &format!("{size_mib}M"))?;
                }
            }
            ZfsMode::Files => {
                let disk = self.mountpoint(dataset)?.join(DISK_FILE);
                let file = fs::OpenOptions::new()
                    .write(true)
                    .open(&disk)
                    .map_err(io_error(format!("open {}", disk.display())))?;
                let size = size_mib * MIB;
                if file.metadata().map_err(io_error("stat the disk"))?.len() < size {
                    file.set_len(size).map_err(io_error("grow the disk"))?;
                }
            }
        }
        Ok(())
    }
}

impl InstanceDisks for ZfsDisks {
    fn create(&self, record: &InstanceRecord, image: Option<&LocalImage>) -> Result<(), DiskError> {
        let json = Self::encode(record)?;
        if !self.zfs.exists(&self.parent)? {
            self.zfs.create_filesystem(&self.parent, true, &[])?;
        }
        let dataset = self.dataset(&record.uuid);
        match (image, self.mode) {
            (Some(image), _) => {
                self.zfs.clone_snapshot(&format!("{}@{FINAL_SNAPSHOT}", image.location), &dataset)?
            }
            (None, ZfsMode::Zvol) => self.zfs.create_volume(&dataset, record.disk_mib)?,
            (None, ZfsMode::Files) => self.zfs.create_filesystem(&dataset, false, &[])?,
        }
        // The record goes last: a clone without it is a leftover `load_all` removes.
        let sized = match (image, self.mode) {
            (None, ZfsMode::Files) => self
                .mountpoint(&dataset)
                .and_then(|dir| blank_file(&dir.join(DISK_FILE), record.disk_mib * MIB)),
            _ => self.grow(&dataset, record.disk_mib),
        };
        let result =
            sized.and_then(|()| self.zfs.set(&dataset, RECORD_PROPERTY, &json).map_err(DiskError::from));
        if result.is_err() {
            if let Err(error) = self.zfs.destroy(&dataset, true) {
                tracing::warn!(%dataset, error = %service_kit::ErrorChain(&error), "cannot remove a failed instance clone");
            }
        }
        result
    }

    fn save(&self, record: &InstanceRecord) -> Result<(), DiskError> {
        Ok(self.zfs.set(&self.dataset(&record.uuid), RECORD_PROPERTY, &Self::encode(record)?)?)
    }

    fn load_all(&self) -> Result<Vec<InstanceRecord>, DiskError> {
        let rows = match self.zfs.get(&self.parent, &[RECORD_PROPERTY], Depth::Children, None) {
            Ok(rows) => rows,
            Err(ZfsError::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut by_dataset: BTreeMap<String, Option<String>> = BTreeMap::new();
        for row in rows {
            let is_child = row
                .dataset
                .strip_prefix(&self.parent)
                .and_then(|r| r.strip_prefix('/'))
                .is_some_and(|r| !r.contains(['/', '@']));
            if is_child && row.property == RECORD_PROPERTY {
                by_dataset.insert(row.dataset, row.value.filter(|v| v != "-"));
            }
        }
        let mut records = Vec::new();
        for (dataset, value) in by_dataset {
            match value.map(|v| serde_json::from_str::<InstanceRecord>(&v)) {
                Some(Ok(record)) => records.push(record),
                Some(Err(error)) => {
                    tracing::warn!(%dataset, error = %service_kit::ErrorChain(&error), "skipping an unreadable instance record")
                }
                None => {
                    tracing::info!(%dataset, "removing an unfinished instance clone");
                    if let Err(error) = self.zfs.destroy(&dataset, true) {
                        tracing::warn!(%dataset, error = %service_kit::ErrorChain(&error), "cannot remove an unfinished instance clone");
                    }
                }
            }
        }
        records.sort_by_key(|r| r.uuid);
        Ok(records)
    }

    fn disks(&self, record: &InstanceRecord) -> Result<Vec<VmDisk>, DiskError> {
        let dataset = self.dataset(&record.uuid);
        let path = match self.mode {
            ZfsMode::Zvol => self.zvol_dir.join(&dataset),
            ZfsMode::Files => self.mountpoint(&dataset)?.join(DISK_FILE),
        };
        Ok(vec![VmDisk { path, format: DiskFormat::Raw, read_only: false }])
    }

    fn destroy(&self, uuid: &Uuid) -> Result<(), DiskError> {
        match self.zfs.destroy(&self.dataset(uuid), true) {
            Ok(()) | Err(ZfsError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn export_raw(&self, record: &InstanceRecord) -> Result<RawExport, DiskError> {
        // The zvol's device or the clone's disk file: raw already.
        let path = self.disks(record)?.remove(0).path;
        Ok(RawExport { path, temporary: false })
    }

    fn snapshot(&self, record: &InstanceRecord, name: &str) -> Result<(), DiskError> {
        check_snapshot_name(name)?;
        Ok(self.zfs.snapshot(&format!("{}@{name}", self.dataset(&record.uuid)))?)
    }

    fn rollback(&self, record: &InstanceRecord, name: &str) -> Result<(), DiskError> {
        check_snapshot_name(name)?;
        Ok(self.zfs.rollback(&format!("{}@{name}", self.dataset(&record.uuid)))?)
    }

    fn snapshots(&self, record: &InstanceRecord) -> Result<Vec<String>, DiskError> {
        let dataset = self.dataset(&record.uuid);
        let prefix = format!("{dataset}@");
        Ok(self
            .zfs
            .list_snapshots(&dataset)?
            .into_iter()
            .filter_map(|s| s.strip_prefix(&prefix).map(str::to_owned))
            .collect())
    }

    fn delete_snapshot(&self, record: &InstanceRecord, name: &str) -> Result<(), DiskError> {
        check_snapshot_name(name)?;
        Ok(self.zfs.destroy(&format!("{}@{name}", self.dataset(&record.uuid)), false)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::host::runner::{RecordingRunner, Reply};
    use crate::host::zfs::Dialect;
    use crate::storage::ImageMeta;

    fn record(disk_mib: u64) -> InstanceRecord {
        let uuid = Uuid::parse_str("6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b").unwrap();
        serde_json::from_value(serde_json::json!({
            "uuid": uuid, "alias": "a", "image": Uuid::nil(), "vcpus": 1, "memory_mib": 64,
            "disk_mib": disk_mib, "nics": [], "firmware": "bios", "vm_name": "i-6de01e97d7ec",
            "state": "stopped", "reason": "created", "pid": null, "created_at": "", "history": []
        }))
        .unwrap()
    }

    fn image(location: &str, content: ContentKind) -> LocalImage {
        LocalImage {
            meta: ImageMeta {
                uuid: Uuid::nil(),
                name: "img".into(),
                version: "1".into(),
                os: "linux".into(),
                image_type: "zvol".into(),
                origin: None,
                sha1: String::new(),
                size: 1,
                compression: "none".into(),
                image_size_mib: Some(10),
                source: String::new(),
            },
            content,
            location: location.into(),
            content_size: 10 << 20,
            imported_at: String::new(),
        }
    }

    #[test]
    fn zvol_instances_are_grown_clones_with_the_record_set_last() {
        let runner = RecordingRunner::new();
        runner.expect(
            "/sbin/zfs get -H -p -o name,property,value,source volsize",
            Reply::Ok("tank/instances/6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b\tvolsize\t10485760\t-\n".into()),
        );
        let zfs = Zfs::new(Arc::new(runner.clone()), "/sbin/zfs", Dialect::OpenZfs);
        let disks = ZfsDisks::new(zfs, "tank/instances", ZfsMode::Zvol, Path::new("/dev/zvol"));
        let record = record(20);
        disks.create(&record, Some(&image("tank/images/x", ContentKind::ZfsStream))).unwrap();
        let commands = runner.commands();
        let clone = "tank/instances/6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b";
        assert_eq!(commands[0], "/sbin/zfs list -H -o name -t all tank/instances");
        assert_eq!(commands[1], format!("/sbin/zfs clone tank/images/x@final {clone}"));
        assert_eq!(commands[3], format!("/sbin/zfs set volsize=20M {clone}"));
        assert!(
            commands[4].starts_with(&format!("/sbin/zfs set {RECORD_PROPERTY}={{\"uuid\"")),
            "{}",
            commands[4]
        );
        assert_eq!(commands.len(), 5);
        let disk = disks.disks(&record).unwrap().remove(0);
        assert_eq!(disk.path, Path::new("/dev/zvol").join(clone));
    }

    #[test]
    fn a_failed_clone_setup_destroys_the_clone_and_volumes_never_shrink() {
        let runner = RecordingRunner::new();
        runner.expect("/sbin/zfs get", Reply::Ok("tank/instances/x\tvolsize\t52428800\t-\n".into()));
        runner.expect("/sbin/zfs set imgagent:instance", Reply::Fail("out of space".into()));
        let zfs = Zfs::new(Arc::new(runner.clone()), "/sbin/zfs", Dialect::OpenZfs);
        let disks = ZfsDisks::new(zfs, "tank/instances", ZfsMode::Zvol, Path::new("/dev/zvol"));
        assert!(disks.create(&record(20), Some(&image("tank/images/x", ContentKind::RawDisk))).is_err());
        let commands = runner.commands();
        assert!(!commands.iter().any(|c| c.contains("volsize=")), "50 MiB is not cut to 20: {commands:?}");
        assert!(commands.last().unwrap().starts_with("/sbin/zfs destroy -r tank/instances/"), "{commands:?}");
    }

    #[test]
    fn file_instances_are_overlays_or_sparse_copies_created_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("image.raw");
        let mut bytes = vec![0u8; 3 << 20];
        bytes[..4].copy_from_slice(b"boot");
        bytes[(2 << 20) + 5] = 7;
        fs::write(&raw, &bytes).unwrap();
        let runner = RecordingRunner::new();
        let overlays = FileDisks::new(
            &dir.path().join("q"),
            QemuImg::new(Arc::new(runner.clone()), Path::new("/usr/bin/qemu-img")),
            true,
        )
        .unwrap();
        let record = record(8);
        overlays.create(&record, Some(&image(raw.to_str().unwrap(), ContentKind::RawDisk))).unwrap();
        assert_eq!(
            runner.commands()[0],
            format!(
                "/usr/bin/qemu-img create -q -f qcow2 -F raw -b {} {}/q/.partial-{}/disk0.qcow2 {}",
                raw.display(),
                dir.path().display(),
                record.uuid,
                8 << 20
            )
        );
        assert_eq!(overlays.load_all().unwrap(), std::slice::from_ref(&record));
        assert_eq!(overlays.disks(&record).unwrap()[0].format, DiskFormat::Qcow2);

        let copies = FileDisks::new(
            &dir.path().join("c"),
            QemuImg::new(Arc::new(RecordingRunner::new()), Path::new("/x")),
            false,
        )
        .unwrap();
        copies.create(&record, Some(&image(raw.to_str().unwrap(), ContentKind::RawDisk))).unwrap();
        let disk = &copies.disks(&record).unwrap()[0].path;
        let copied = fs::read(disk).unwrap();
        assert_eq!(copied.len(), 8 << 20);
        assert_eq!(&copied[..bytes.len()], &bytes[..]);
        use std::os::unix::fs::MetadataExt;
        assert!(fs::metadata(disk).unwrap().blocks() * 512 < 3 << 20, "zero runs stay holes");
        assert!(copies.create(&record, Some(&image("/x", ContentKind::ZfsStream))).is_err());

        // A create cut short leaves a .partial- dir that loading removes; destroy removes all.
        fs::create_dir(dir.path().join("c/.partial-x")).unwrap();
        assert_eq!(copies.load_all().unwrap().len(), 1);
        assert!(!dir.path().join("c/.partial-x").exists());
        copies.destroy(&record.uuid).unwrap();
        assert!(copies.load_all().unwrap().is_empty());
        assert_eq!(fs::read_dir(dir.path().join("c")).unwrap().count(), 0);
    }

    #[test]
    fn snapshot_names_are_plain() {
        for good in ["clean", "before-upgrade", "v1.2_3"] {
            assert!(check_snapshot_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-r", ".x", "a b", "a@b", "a/b", &"a".repeat(65)] {
            assert!(check_snapshot_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn raw_disk_snapshots_are_sparse_copies_put_back_on_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("image.raw");
        fs::write(&raw, vec![1u8; 1 << 20]).unwrap();
        let disks = FileDisks::new(
            &dir.path().join("c"),
            QemuImg::new(Arc::new(RecordingRunner::new()), Path::new("/x")),
            false,
        )
        .unwrap();
        let record = record(4);
        disks.create(&record, Some(&image(raw.to_str().unwrap(), ContentKind::RawDisk))).unwrap();
        let disk = disks.disks(&record).unwrap()[0].path.clone();
        disks.snapshot(&record, "first").unwrap();
        fs::write(&disk, b"changed by the guest").unwrap();
        disks.snapshot(&record, "second").unwrap();
        assert_eq!(disks.snapshots(&record).unwrap(), ["first", "second"]);
        disks.rollback(&record, "first").unwrap();
        let back = fs::read(&disk).unwrap();
        assert!(back.len() == 4 << 20 && back[..1 << 20].iter().all(|b| *b == 1), "the disk as it was");
        assert_eq!(disks.snapshots(&record).unwrap(), ["first", "second"], "later snapshots stay");
        disks.rollback(&record, "second").unwrap();
        assert_eq!(fs::read(&disk).unwrap(), b"changed by the guest");
        disks.delete_snapshot(&record, "first").unwrap();
        assert_eq!(disks.snapshots(&record).unwrap(), ["second"]);
        let leftovers: Vec<_> = fs::read_dir(disk.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".partial"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
