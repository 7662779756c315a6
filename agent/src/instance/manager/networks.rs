//! The switches an instance's NICs are on: brought up before it starts, and deleted only while
//! no NIC is on them.

use super::*;

impl Instances {
    /// Makes the switches of the instance's NICs ready on the host: their bridges and those
    /// of the NICs' VLANs exist, linked to the uplink.
    pub(super) fn bring_up_networks(&self, record: &InstanceRecord) -> Result<(), InstanceError> {
        let mut switches: BTreeMap<&str, Vec<u16>> = BTreeMap::new();
        for nic in &record.nics {
            match nic.target() {
                NicNetwork::Switch(name) => switches.entry(name).or_default().extend(nic.vlan),
                NicNetwork::Bridge(_) | NicNetwork::User => {}
            }
        }
        for (name, mut vlans) in switches {
            vlans.sort_unstable();
            vlans.dedup();
            self.switches.bring_up(name, &vlans)?;
        }
        Ok(())
    }

    pub fn switches(&self) -> &Arc<Switches> {
        &self.switches
    }

    /// The instances with a NIC on the switch `name`.
    pub fn switch_users(&self, name: &str) -> Vec<Uuid> {
        self.instances_where(|r| on_switch(r, name))
    }

    /// Deletes an API-made switch, refused while a NIC is on it.
    pub fn delete_switch(&self, name: &str) -> Result<(), InstanceError> {
        // Under the table lock: no instance can be created on the switch meanwhile.
        let table = lock(&self.table);
        let instances: Vec<Uuid> =
            table.values().map(|s| s.snapshot()).filter(|r| on_switch(r, name)).map(|r| r.uuid).collect();
        if !instances.is_empty() {
            return Err(InstanceError::SwitchInUse { switch: name.to_string(), instances });
        }
        self.switches.delete(name)?;
        drop(table);
        Ok(())
    }
}
