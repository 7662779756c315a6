//! Switches on FreeBSD: `if_bridge` bridges and `vlan(4)` interfaces, each created with
//! `ifconfig <type> create` and renamed to the switch's name for it (as vm-bhyve does), and
//! members added with `addm`. Argv builders and parsers of `ifconfig` output are pure
//! functions, tested on captured text.

use std::path::PathBuf;
use std::sync::Arc;

use super::HostNetwork;
use crate::host::runner::{CommandRunner, ExecError, HostCommand};

/// `ifconfig -l`: the names of every interface on one line.
pub fn list_interfaces(ifconfig: &PathBuf) -> HostCommand {
    HostCommand::new(ifconfig).arg("-l")
}

/// `ifconfig`: every interface with its status (see [`parse_descriptions`]).
pub fn list_all(ifconfig: &PathBuf) -> HostCommand {
    HostCommand::new(ifconfig)
}

/// `ifconfig -g bridge`: the bridges, one per line (renamed ones stay in the group).
pub fn list_bridges(ifconfig: &PathBuf) -> HostCommand {
    HostCommand::new(ifconfig).args(["-g", "bridge"])
}

/// `ifconfig bridge create`: prints the new bridge's name (`bridge0`).
pub fn bridge_create(ifconfig: &PathBuf) -> HostCommand {
    HostCommand::new(ifconfig).args(["bridge", "create"])
}

/// `ifconfig vlan create vlan VLAN vlandev PARENT`: prints the new interface's name (`vlan0`).
pub fn vlan_create(ifconfig: &PathBuf, parent: &str, vlan: u16) -> HostCommand {
    HostCommand::new(ifconfig).args(["vlan", "create", "vlan", &vlan.to_string(), "vlandev", parent])
}

/// `ifconfig IF name NEW`.
pub fn rename(ifconfig: &PathBuf, interface: &str, new_name: &str) -> HostCommand {
    HostCommand::new(ifconfig).args([interface, "name", new_name])
}

/// `ifconfig BRIDGE`: its status, with a `member:` line per member.
pub fn show(ifconfig: &PathBuf, interface: &str) -> HostCommand {
    HostCommand::new(ifconfig).arg(interface)
}

/// `ifconfig BRIDGE addm MEMBER`.
pub fn add_member(ifconfig: &PathBuf, bridge: &str, member: &str) -> HostCommand {
    HostCommand::new(ifconfig).args([bridge, "addm", member])
}

/// `ifconfig IF up` / `ifconfig IF destroy`.
pub fn up(ifconfig: &PathBuf, interface: &str) -> HostCommand {
    HostCommand::new(ifconfig).args([interface, "up"])
}
pub fn destroy(ifconfig: &PathBuf, interface: &str) -> HostCommand {
    HostCommand::new(ifconfig).args([interface, "destroy"])
}

/// The members of a bridge in `ifconfig BRIDGE` output (`\tmember: em0 flags=...`).
pub fn parse_members(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("member: "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The interfaces and their descriptions in plain `ifconfig` output: each interface starts
/// a line (`tap0: flags=...`), its `description:` line is indented below it.
pub fn parse_descriptions(stdout: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut current: Option<&str> = None;
    for line in stdout.lines() {
        if !line.starts_with([' ', '\t']) {
            current = line
                .split_once(": flags=")
                .map(|(name, _)| name)
                .filter(|name| !name.is_empty() && !name.contains(char::is_whitespace));
        } else if let (Some(name), Some(description)) = (current, line.trim().strip_prefix("description: ")) {
            found.push((name.to_string(), description.to_string()));
        }
    }
    found
}

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
        let Some(created) = crate::host::bhyve::parse_created_interface(&output.stdout) else {
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
    use crate::host::runner::{RecordingRunner, Reply};

    // `ifconfig bridge0` on FreeBSD 14, with em0 and a vm-bhyve tap as members.
    const BRIDGE_STATUS: &str =
        "bridge0: flags=1008843<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST,LOWER_UP> metric 0 mtu 1500
\toptions=0
\tether 58:9c:fc:10:ff:b6
\tid 00:00:00:00:00:00 priority 32768 hellotime 2 fwddelay 15
\tmaxage 20 holdcnt 6 proto rstp maxaddr 2000 timeout 1200
\troot id 00:00:00:00:00:00 priority 32768 ifcost 0 port 0
\tmember: tap0 flags=143<LEARNING,DISCOVER,AUTOEDGE,AUTOPTP>
\t        ifmaxaddr 0 port 4 priority 128 path cost 2000000
\tmember: em0 flags=143<LEARNING,DISCOVER,AUTOEDGE,AUTOPTP>
\t        ifmaxaddr 0 port 1 priority 128 path cost 20000
\tgroups: bridge vm-switch viid-4c918@
\tnd6 options=9<PERFORMNUD,IFDISABLED>
";

    const IFCONFIG: &str =
        "em0: flags=1008843<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST,LOWER_UP> metric 0 mtu 1500
\toptions=4e524bb<RXCSUM,TXCSUM,VLAN_MTU,VLAN_HWTAGGING,JUMBO_MTU>
\tether 08:00:27:aa:bb:cc
\tinet 192.168.1.20 netmask 0xffffff00 broadcast 192.168.1.255
tap0: flags=1008943<UP,BROADCAST,RUNNING,PROMISC,SIMPLEX,MULTICAST,LOWER_UP> metric 0 mtu 1500
\tdescription: vmnet/i-6de01e97d7ec/0
\toptions=80000<LINKSTATE>
\tether 58:9c:fc:10:2b:01
tap1: flags=1008902<BROADCAST,PROMISC,SIMPLEX,MULTICAST,LOWER_UP> metric 0 mtu 1500
\toptions=80000<LINKSTATE>
bridge0: flags=1008843<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST,LOWER_UP> metric 0 mtu 1500
\tdescription: vm-public
";

    #[test]
    fn parses_members_and_descriptions() {
        assert_eq!(parse_members(BRIDGE_STATUS), ["tap0", "em0"]);
        assert!(parse_members("lo0: flags=8049<UP,LOOPBACK> metric 0 mtu 16384\n").is_empty());
        assert_eq!(
            parse_descriptions(IFCONFIG),
            [
                ("tap0".to_string(), "vmnet/i-6de01e97d7ec/0".to_string()),
                ("bridge0".to_string(), "vm-public".to_string())
            ]
        );
    }

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
