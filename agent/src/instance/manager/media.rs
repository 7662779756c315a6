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

    /// Runs `attach` (a change that gives an instance the CD `cdrom`) while that ISO exists
    /// and cannot be renamed or deleted, once the CD settings are checked.
    pub(super) fn with_cdrom<T>(
        &self,
        cdrom: Option<&str>,
        boot_from_cdrom: bool,
        attach: impl FnOnce() -> Result<T, InstanceError>,
    ) -> Result<T, InstanceError> {
        if cdrom.is_none() && boot_from_cdrom {
            return Err(InstanceError::Invalid("booting from the CD needs an ISO attached".into()));
        }
        self.isos.while_present(cdrom, attach)
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
        self.with_cdrom(cdrom.clone().as_deref(), boot_from_cdrom, || {
            let mut record = slot.snapshot();
            record.cdrom = cdrom;
            record.boot_from_cdrom = boot_from_cdrom;
            self.commit(&slot, record.clone())?;
            Ok(record)
        })
    }
}
