//! Switches on Linux: a bridge per switch (iproute2), VLAN filtering on it, and the uplink as
//! a member carrying the VLANs its NICs use.

use std::path::PathBuf;
use std::sync::Arc;

use super::HostNetwork;
use crate::host::iproute;
use crate::host::runner::{CommandRunner, ExecError};

pub struct LinuxBridges {
    runner: Arc<dyn CommandRunner>,
    /// iproute2's `ip` and `bridge`.
    ip: PathBuf,
    bridge_tool: PathBuf,
}

impl LinuxBridges {
    pub fn new(runner: Arc<dyn CommandRunner>, ip: PathBuf, bridge_tool: PathBuf) -> Self {
        LinuxBridges { runner, ip, bridge_tool }
    }
}

impl HostNetwork for LinuxBridges {
    fn interfaces(&self) -> Result<Vec<String>, ExecError> {
        let output = self.runner.run(&iproute::link_list(&self.ip))?;
        Ok(iproute::parse_link_names(&output.stdout))
    }

    fn create_bridge(&self, name: &str) -> Result<(), ExecError> {
        self.runner.run(&iproute::bridge_add(&self.ip, name))?;
        if let Err(error) = self.runner.run(&iproute::set_up(&self.ip, name)) {
            let _ = self.runner.run(&iproute::link_del(&self.ip, name));
            return Err(error);
        }
        Ok(())
    }

    fn destroy_bridge(&self, name: &str) -> Result<(), ExecError> {
        self.runner.run(&iproute::link_del(&self.ip, name)).map(drop)
    }

    /// `ip link set master` and `bridge vlan add` both succeed when already done.
    fn attach_uplink(&self, bridge: &str, uplink: &str, vlans: &[u16]) -> Result<(), ExecError> {
        self.runner.run(&iproute::set_master(&self.ip, uplink, bridge))?;
        self.runner.run(&iproute::set_up(&self.ip, uplink))?;
        for vlan in vlans {
            self.runner.run(&iproute::port_vlan_add(&self.bridge_tool, uplink, *vlan, false))?;
        }
        Ok(())
    }

    fn enable_vlans(&self, bridge: &str) -> Result<(), ExecError> {
        self.runner.run(&iproute::bridge_vlan_filtering(&self.ip, bridge)).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::runner::{RecordingRunner, Reply};

    fn bridges() -> (RecordingRunner, LinuxBridges) {
        let runner = RecordingRunner::new();
        let host =
            LinuxBridges::new(Arc::new(runner.clone()), "/usr/sbin/ip".into(), "/usr/sbin/bridge".into());
        (runner, host)
    }

    #[test]
    fn argv_of_each_step() {
        let (runner, host) = bridges();
        runner.expect(
            "/usr/sbin/ip -o link show",
            Reply::Ok("1: lo: <LOOPBACK> mtu 1\n3: eth1: <UP> mtu 1\n".into()),
        );
        assert_eq!(host.interfaces().unwrap(), ["lo", "eth1"]);
        host.create_bridge("br-lab").unwrap();
        host.attach_uplink("br-lab", "eth1", &[10, 20]).unwrap();
        host.enable_vlans("br0").unwrap();
        host.destroy_bridge("br-lab").unwrap();
        assert_eq!(
            runner.commands(),
            [
                "/usr/sbin/ip -o link show",
                "/usr/sbin/ip link add name br-lab type bridge vlan_filtering 1",
                "/usr/sbin/ip link set dev br-lab up",
                "/usr/sbin/ip link set dev eth1 master br-lab",
                "/usr/sbin/ip link set dev eth1 up",
                "/usr/sbin/bridge vlan add dev eth1 vid 10",
                "/usr/sbin/bridge vlan add dev eth1 vid 20",
                "/usr/sbin/ip link set dev br0 type bridge vlan_filtering 1",
                "/usr/sbin/ip link del dev br-lab",
            ]
        );
    }

    #[test]
    fn a_bridge_that_cannot_come_up_is_removed() {
        let (runner, host) = bridges();
        runner.expect("/usr/sbin/ip link set dev br-lab up", Reply::Fail("RTNETLINK answers: busy".into()));
        assert!(host.create_bridge("br-lab").is_err());
        assert_eq!(runner.commands().last().unwrap(), "/usr/sbin/ip link del dev br-lab");
    }
}
