//! Switches on FreeBSD: `if_bridge` bridges and `vlan(4)` interfaces, each created with
//! `ifconfig <type> create` and renamed to the switch's name for it (as vm-bhyve does), and
//! members added with `addm` (the commands are in `host::ifconfig`).

use std::path::PathBuf;
use std::sync::Arc;

use super::HostNetwork;
use crate::host::ifconfig::{
    add_member, bridge_create, destroy, list_bridges, list_interfaces, parse_created_interface,
    parse_members, rename, show, up, vlan_create,
};
use crate::host::runner::{CommandRunner, ExecError, HostCommand};

pub struct FreeBsdBridges {
    runner: Arc<dyn CommandRunner>,
    ifconfig: PathBuf,
}

impl FreeBsdBridges {
    pub fn new(runner: Arc<dyn CommandRunner>, ifconfig: PathBuf) -> Self {
        FreeBsdBridges { runner, ifconfig }
    }
}

impl HostNetwork for FreeBsdBridges {
    fn interfaces(&self) -> Result<Vec<String>, ExecError> {
        let output = self.runner.run(&list_interfaces(&self.ifconfig))?;
        Ok(output.stdout.split_whitespace().map(str::to_string).collect())
    }

    fn bridges(&self) -> Result<Vec<String>, ExecError> {
        let output = self.runner.run(&list_bridges(&self.ifconfig))?;
        Ok(output.stdout.split_whitespace().map(str::to_string).collect())
    }

    fn create_bridge(&self, name: &str) -> Result<(), ExecError> {
        self.create_named(&bridge_create(&self.ifconfig), name)
    }

    fn create_vlan(&self, parent: &str, vlan: u16, name: &str) -> Result<(), ExecError> {
        self.create_named(&vlan_create(&self.ifconfig, parent, vlan), name)
    }

    fn destroy_interface(&self, name: &str) -> Result<(), ExecError> {
        self.runner.run(&destroy(&self.ifconfig, name)).map(drop)
    }

    /// `addm` fails on a member already there, so membership is looked up first.
    fn add_member(&self, bridge: &str, member: &str) -> Result<(), ExecError> {
        let status = self.runner.run(&show(&self.ifconfig, bridge))?;
        if !parse_members(&status.stdout).iter().any(|m| m == member) {
            self.runner.run(&add_member(&self.ifconfig, bridge, member))?;
        }
        self.runner.run(&up(&self.ifconfig, member)).map(drop)
    }
}

impl FreeBsdBridges {
    /// Runs `create` (which prints the name the kernel chose), renames the interface to
    /// `name` and brings it up; whatever was created goes again if a step fails.
    fn create_named(&self, create: &HostCommand, name: &str) -> Result<(), ExecError> {
        let output = self.runner.run(create)?;
        let Some(created) = parse_created_interface(&output.stdout) else {
            return Err(ExecError::Failed {
                command: create.display(),
                status: "exit status 0".into(),
                stderr: format!("printed no interface name: {:?}", output.stdout),
            });
        };
        if created != name {
            if let Err(error) = self.runner.run(&rename(&self.ifconfig, &created, name)) {
                let _ = self.runner.run(&destroy(&self.ifconfig, &created));
                return Err(error);
            }
        }
        if let Err(error) = self.runner.run(&up(&self.ifconfig, name)) {
            let _ = self.runner.run(&destroy(&self.ifconfig, name));
            return Err(error);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::ifconfig::tests::BRIDGE_STATUS;
    use crate::host::runner::{RecordingRunner, Reply};

    fn bridges() -> (RecordingRunner, FreeBsdBridges) {
        let runner = RecordingRunner::new();
        (runner.clone(), FreeBsdBridges::new(Arc::new(runner), "/sbin/ifconfig".into()))
    }

    #[test]
    fn creates_and_renames_bridges_and_vlans() {
        let (runner, host) = bridges();
        runner.expect("/sbin/ifconfig -l", Reply::Ok("em0 lo0 bridge0\n".into()));
        runner.expect("/sbin/ifconfig bridge create", Reply::Ok("bridge1\n".into()));
        runner.expect("/sbin/ifconfig vlan create", Reply::Ok("vlan0\n".into()));
        runner.expect(
            "/sbin/ifconfig publicv10",
            Reply::Ok(BRIDGE_STATUS.replace("member: em0", "member: em1")),
        );
        assert_eq!(host.interfaces().unwrap(), ["em0", "lo0", "bridge0"]);
        host.create_bridge("publicv10").unwrap();
        host.create_vlan("em0", 10, "em0.10").unwrap();
        host.add_member("publicv10", "em0.10").unwrap();
        assert_eq!(
            runner.commands(),
            [
                "/sbin/ifconfig -l",
                "/sbin/ifconfig bridge create",
                "/sbin/ifconfig bridge1 name publicv10",
                "/sbin/ifconfig publicv10 up",
                "/sbin/ifconfig vlan create vlan 10 vlandev em0",
                "/sbin/ifconfig vlan0 name em0.10",
                "/sbin/ifconfig em0.10 up",
                "/sbin/ifconfig publicv10",
                "/sbin/ifconfig publicv10 addm em0.10",
                "/sbin/ifconfig em0.10 up",
            ]
        );
    }

    #[test]
    fn a_member_already_there_is_not_added_again() {
        let (runner, host) = bridges();
        runner.expect("/sbin/ifconfig bridge0", Reply::Ok(BRIDGE_STATUS.into()));
        host.add_member("bridge0", "em0").unwrap();
        assert_eq!(runner.commands(), ["/sbin/ifconfig bridge0", "/sbin/ifconfig em0 up"]);
    }

    #[test]
    fn a_bridge_that_cannot_be_renamed_is_destroyed() {
        let (runner, host) = bridges();
        runner.expect("/sbin/ifconfig bridge create", Reply::Ok("bridge3\n".into()));
        runner.expect(
            "/sbin/ifconfig bridge3 name",
            Reply::Fail("ifconfig: ioctl SIOCSIFNAME: File exists".into()),
        );
        assert!(host.create_bridge("public").is_err());
        // `public` existed already (someone else's): the new bridge3 is what goes.
        assert_eq!(runner.commands().last().unwrap(), "/sbin/ifconfig bridge3 destroy");
    }
}
