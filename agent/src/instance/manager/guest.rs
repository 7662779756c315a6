//! What the guest is told about itself: its configuration, and the NoCloud seed written from it
//! before every start.

use super::*;

impl Instances {
    /// Writes the instance's NoCloud seed from its current guest configuration.
    pub(super) fn write_seed(&self, record: &InstanceRecord, spec: &VmSpec) -> Result<(), InstanceError> {
        let hostname = record.guest.effective_hostname(&record.alias, &record.vm_name);
        let files = nocloud::seed_files(&record.uuid, &hostname, &record.guest);
        let path = spec.run_dir.join(SEED_FILE);
        nocloud::write_seed(&path, &files).map_err(|e| {
            HypervisorError::io(format!("cannot write the NoCloud seed {}", path.display()), e).into()
        })
    }

    /// Changes the guest configuration of an instance; the guest sees it from its next start.
    pub fn update_guest(&self, uuid: &Uuid, update: GuestUpdate) -> Result<InstanceRecord, InstanceError> {
        let slot = self.slot(uuid)?;
        let _op = lock(&slot.op);
        let mut record = slot.snapshot();
        let guest = record.guest.updated(update);
        guest.validate().map_err(InstanceError::Invalid)?;
        record.guest = guest;
        self.commit(&slot, record.clone())?;
        Ok(record)
    }
}
