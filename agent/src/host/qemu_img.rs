//! The `qemu-img` command: the disks of `files` instances under QEMU (qcow2 overlays on an
//! image's raw disk, blank qcow2 disks), their internal snapshots, and their conversion to a
//! raw file for publishing; and the parser of `qemu-img info --output=json`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::host::runner::{CommandRunner, ExecError, HostCommand};

/// What a snapshot command does (`qemu-img snapshot -c|-a|-d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotOp {
    Create,
    /// Puts the disk back as it was at the snapshot.
    Apply,
    Delete,
}

#[derive(Debug, thiserror::Error)]
pub enum QemuImgError {
    #[error(transparent)]
    Command(#[from] ExecError),
    #[error("cannot read the output of qemu-img info: {0}")]
    Parse(String),
}

/// `qemu-img`, run through the command runner.
#[derive(Clone)]
pub struct QemuImg {
    runner: Arc<dyn CommandRunner>,
    binary: PathBuf,
}

impl QemuImg {
    pub fn new(runner: Arc<dyn CommandRunner>, binary: &Path) -> Self {
        QemuImg { runner, binary: binary.to_owned() }
    }

    fn command(&self) -> HostCommand {
        HostCommand::new(&self.binary)
    }

    /// A qcow2 overlay of `size` bytes at `disk`, backed by the raw image at `backing` (which it
    /// never writes).
    pub fn create_overlay(&self, backing: &Path, disk: &Path, size: u64) -> Result<(), ExecError> {
        let command = self
            .command()
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(backing)
            .arg(disk)
            .arg(size.to_string());
        self.runner.run(&command).map(drop)
    }

    /// A blank qcow2 disk of `size` bytes.
    pub fn create_blank(&self, disk: &Path, size: u64) -> Result<(), ExecError> {
        let command = self.command().args(["create", "-q", "-f", "qcow2"]).arg(disk).arg(size.to_string());
        self.runner.run(&command).map(drop)
    }

    /// The disk (an overlay and its backing image) flattened into the sparse raw file `to`.
    pub fn convert_to_raw(&self, disk: &Path, to: &Path) -> Result<(), ExecError> {
        self.runner.run(&self.command().args(["convert", "-O", "raw"]).arg(disk).arg(to)).map(drop)
    }

    /// Creates, applies or deletes the internal snapshot `name` of a qcow2 disk. The name has
    /// been checked (`instance::disks::check_snapshot_name`): it cannot pass for an option.
    pub fn snapshot(&self, op: SnapshotOp, name: &str, disk: &Path) -> Result<(), ExecError> {
        let flag = match op {
            SnapshotOp::Create => "-c",
            SnapshotOp::Apply => "-a",
            SnapshotOp::Delete => "-d",
        };
        self.runner.run(&self.command().args(["snapshot", flag, name]).arg(disk)).map(drop)
    }

    /// The internal snapshots of a qcow2 disk, oldest first.
    pub fn snapshots(&self, disk: &Path) -> Result<Vec<String>, QemuImgError> {
        let output = self.runner.run(&self.command().args(["info", "--output=json"]).arg(disk))?;
        parse_snapshots(&output.stdout).map_err(QemuImgError::Parse)
    }
}

/// The snapshot names in `qemu-img info --output=json` of a qcow2 file.
pub fn parse_snapshots(json: &str) -> Result<Vec<String>, String> {
    let info: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Ok(info["snapshots"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str().map(str::to_owned))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::runner::RecordingRunner;

    #[test]
    fn argv() {
        let runner = RecordingRunner::new();
        let qemu_img = QemuImg::new(Arc::new(runner.clone()), Path::new("/usr/bin/qemu-img"));
        qemu_img.create_overlay(Path::new("/i/u.raw"), Path::new("/d/disk0.qcow2"), 1 << 30).unwrap();
        qemu_img.create_blank(Path::new("/d/disk0.qcow2"), 1 << 20).unwrap();
        qemu_img.convert_to_raw(Path::new("/d/disk0.qcow2"), Path::new("/d/.export.raw")).unwrap();
        for op in [SnapshotOp::Create, SnapshotOp::Apply, SnapshotOp::Delete] {
            qemu_img.snapshot(op, "s1", Path::new("/d/disk0.qcow2")).unwrap();
        }
        assert_eq!(
            runner.commands(),
            [
                "/usr/bin/qemu-img create -q -f qcow2 -F raw -b /i/u.raw /d/disk0.qcow2 1073741824",
                "/usr/bin/qemu-img create -q -f qcow2 /d/disk0.qcow2 1048576",
                "/usr/bin/qemu-img convert -O raw /d/disk0.qcow2 /d/.export.raw",
                "/usr/bin/qemu-img snapshot -c s1 /d/disk0.qcow2",
                "/usr/bin/qemu-img snapshot -a s1 /d/disk0.qcow2",
                "/usr/bin/qemu-img snapshot -d s1 /d/disk0.qcow2",
            ]
        );
    }

    #[test]
    fn snapshots_from_qemu_img_info() {
        // `qemu-img info --output=json` of a qcow2 with two snapshots (QEMU 10.0), trimmed.
        let info = r#"{"children": [{"name": "file", "info": {"children": [], "virtual-size": 459264,
            "filename": "s.qcow2", "format": "file"}}],
            "snapshots": [{"icount": 0, "vm-clock-nsec": 0, "name": "first", "date-sec": 1795375958,
            "date-nsec": 931197000, "vm-clock-sec": 0, "id": "1", "vm-state-size": 0},
            {"icount": 0, "vm-clock-nsec": 0, "name": "second", "date-sec": 1795375958,
            "date-nsec": 939174000, "vm-clock-sec": 0, "id": "2", "vm-state-size": 0}],
            "virtual-size": 16777216, "filename": "s.qcow2", "cluster-size": 65536, "format": "qcow2"}"#;
        assert_eq!(parse_snapshots(info).unwrap(), ["first", "second"]);
        assert!(parse_snapshots(r#"{"format": "qcow2"}"#).unwrap().is_empty());
        assert!(parse_snapshots("qemu-img: Could not open").is_err());
    }
}
