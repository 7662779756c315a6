//! Disk snapshots and rollback of stopped instances, and publishing a stopped instance's disk as
//! an image.

use super::*;

impl Instances {
    /// Publishes a stopped instance's disk as a new image on `source`; returns its manifest.
    /// Blocking, for as long as compressing and uploading the disk takes.
    pub fn publish_image(
        &self,
        uuid: &Uuid,
        source: &crate::source::Source,
        info: &crate::publish::ImageInfo,
    ) -> Result<serde_json::Value, InstanceError> {
        let slot = self.slot(uuid)?;
        // Held throughout: the instance cannot start (and change its disk) while it is read.
        let _op = lock(&slot.op);
        let record = slot.snapshot();
        require_stopped(&record)?;
        let export = self.disks.export_raw(&record)?;
        let published = crate::publish::publish(source, info, &export.path, record.disk_mib);
        if export.temporary {
            let _ = fs::remove_file(&export.path);
        }
        let manifest = published?;
        tracing::info!(%uuid, image = %manifest["uuid"], source = %source.base, "instance published as an image");
        Ok(manifest)
    }

    /// The instance's disk snapshots, oldest first.
    pub fn snapshots(&self, uuid: &Uuid) -> Result<Vec<String>, InstanceError> {
        let record = self.slot(uuid)?.snapshot();
        Ok(self.disks.snapshots(&record)?)
    }

    /// Snapshots, rolls back to or deletes a snapshot of a stopped instance's disk.
    pub fn change_snapshot(
        &self,
        uuid: &Uuid,
        change: SnapshotChange,
        name: &str,
    ) -> Result<Vec<String>, InstanceError> {
        let slot = self.slot(uuid)?;
        let _op = lock(&slot.op);
        let record = slot.snapshot();
        require_stopped(&record)?;
        check_snapshot_name(name).map_err(|e| InstanceError::Invalid(e.to_string()))?;
        let exists = self.disks.snapshots(&record)?.iter().any(|s| s == name);
        let (instance, name_owned) = (record.uuid, name.to_string());
        match (change, exists) {
            (SnapshotChange::Create, true) => {
                return Err(InstanceError::SnapshotExists { instance, name: name_owned })
            }
            (SnapshotChange::Rollback | SnapshotChange::Delete, false) => {
                return Err(InstanceError::SnapshotNotFound { instance, name: name_owned })
            }
            (SnapshotChange::Create, false) => self.disks.snapshot(&record, name)?,
            (SnapshotChange::Rollback, true) => self.disks.rollback(&record, name)?,
            (SnapshotChange::Delete, true) => self.disks.delete_snapshot(&record, name)?,
        }
        tracing::info!(%uuid, ?change, snapshot = name, "instance snapshot changed");
        Ok(self.disks.snapshots(&record)?)
    }
}
