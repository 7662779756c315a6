//! Switches on Linux with iproute2: plain bridges (no VLAN filtering, which some kernels
//! lack), members, and 802.1Q interfaces on uplinks.

use std::path::PathBuf;
use std::sync::Arc;

use super::HostNetwork;
use crate::host::iproute;
use crate::host::runner::{CommandRunner, ExecError};

pub struct LinuxBridges {
    runner: Arc<dyn CommandRunner>,
    /// iproute2's `ip`.
    ip: PathBuf,
}

impl LinuxBridges {
    pub fn new(runner: Arc<dyn CommandRunner>, ip: PathBuf) -> Self {
        LinuxBridges { runner, ip }
    }

    /// Brings up `name`, just created; removes it if that fails.
    fn up_or_remove(&self, name: &str) -> Result<(), ExecError> {
        if let Err(error) = self.runner.run(&iproute::set_up(&self.ip, name)) {
            let _ = self.runner.run(&iproute::link_del(&self.ip, name));
            return Err(error);
        }
        Ok(())
    }
}

impl HostNetwork for LinuxBridges {
    fn interfaces(&self) -> Result<Vec<String>, ExecError> {
        let output = self.runner.run(&iproute::link_list(&self.ip))?;
        Ok(iproute::parse_link_names(&output.stdout))
    }

    fn bridges(&self) -> Result<Vec<String>, ExecError> {
        let output = self.runner.run(&iproute::bridge_list(&self.ip))?;
        Ok(iproute::parse_link_names(&output.stdout))
    }

    fn create_bridge(&self, name: &str) -> Result<(), ExecError> {
        self.runner.run(&iproute::bridge_add(&self.ip, name))?;
        self.up_or_remove(name)
    }

    fn create_vlan(&self, parent: &str, vlan: u16, name: &str) -> Result<(), ExecError> {
        self.runner.run(&iproute::vlan_add(&self.ip, parent, vlan, name))?;
        self.up_or_remove(name)
    }

    fn destroy_interface(&self, name: &str) -> Result<(), ExecError> {
        self.runner.run(&iproute::link_del(&self.ip, name)).map(drop)
    }

    /// `ip link set master` succeeds when it is a member already.
    fn add_member(&self, bridge: &str, member: &str) -> Result<(), ExecError> {
        self.runner.run(&iproute::set_master(&self.ip, member, bridge))?;
        self.runner.run(&iproute::set_up(&self.ip, member)).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::runner::{RecordingRunner, Reply};

    fn bridges() -> (RecordingRunner, LinuxBridges) {
        let runner = RecordingRunner::new();
        let host = LinuxBridges::new(Arc::new(runner.clone()), "/usr/sbin/ip".into());
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
        runner.expect("/usr/sbin/ip -o link show type bridge", Reply::Ok("4: br0: <UP> mtu 1\n".into()));
        assert_eq!(host.bridges().unwrap(), ["br0"]);
        host.create_bridge("br-labv10").unwrap();
        host.create_vlan("eth1", 10, "eth1.10").unwrap();
        host.add_member("br-labv10", "eth1.10").unwrap();
        host.destroy_interface("br-labv10").unwrap();
        assert_eq!(
            runner.commands(),
            [
                "/usr/sbin/ip -o link show",
                "/usr/sbin/ip -o link show type bridge",
                "/usr/sbin/ip link add name br-labv10 type bridge",
                "/usr/sbin/ip link set dev br-labv10 up",
                "/usr/sbin/ip link add link eth1 name eth1.10 type vlan id 10",
                "/usr/sbin/ip link set dev eth1.10 up",
                "/usr/sbin/ip link set dev eth1.10 master br-labv10",
                "/usr/sbin/ip link set dev eth1.10 up",
                "/usr/sbin/ip link del dev br-labv10",
            ]
        );
    }

    #[test]
    fn an_interface_that_cannot_come_up_is_removed() {
        let (runner, host) = bridges();
        runner.expect("/usr/sbin/ip link set dev br-lab up", Reply::Fail("RTNETLINK answers: busy".into()));
        assert!(host.create_bridge("br-lab").is_err());
        assert_eq!(runner.commands().last().unwrap(), "/usr/sbin/ip link del dev br-lab");
    }
}
