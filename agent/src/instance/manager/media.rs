//! Installer ISOs attached as an instance's CD.

use super::*;

impl Instances {
    pub fn isos(&self) -> &Arc<IsoStore> {
        &self.isos
    }

    /// The instances that have the ISO `name` attached.
    pub fn iso_users(&self, name: &str) -> Vec<Uuid> {
        self.instances_where(|r| r.cdrom.as_deref() == Some(name))
    }

    /// Fails with `IsoInUse` while an instance has the ISO attached.
    pub fn check_iso_unused(&self, name: &str) -> Result<(), InstanceError> {
        let instances = self.iso_users(name);
        if instances.is_empty() {
            Ok(())
        } else {
            Err(InstanceError::IsoInUse { iso: name.to_string(), instances })
        }
    }

    pub(super) fn check_cdrom(
        &self,
        cdrom: Option<&str>,
        boot_from_cdrom: bool,
    ) -> Result<(), InstanceError> {
        match cdrom {
            Some(name) => self.isos.path(name).map(drop).map_err(InstanceError::from),
            None if boot_from_cdrom => {
                Err(InstanceError::Invalid("booting from the CD needs an ISO attached".into()))
            }
            None => Ok(()),
        }
    }

    /// Attaches an ISO as the instance's CD (or detaches it with `None`), and says whether to
    /// boot from it; the guest sees it from its next start.
    pub fn set_cdrom(
        &self,
        uuid: &Uuid,
        cdrom: Option<String>,
        boot_from_cdrom: bool,
    ) -> Result<InstanceRecord, InstanceError> {
        let slot = self.slot(uuid)?;
        let _op = lock(&slot.op);
        self.check_cdrom(cdrom.as_deref(), boot_from_cdrom)?;
        let mut record = slot.snapshot();
        record.cdrom = cdrom;
        record.boot_from_cdrom = boot_from_cdrom;
        self.commit(&slot, record.clone())?;
        Ok(record)
    }
}
