//! FreeBSD `ifconfig` commands for bridges, VLAN interfaces and bhyve's taps: argv builders
//! and parsers of `ifconfig` output, pure functions tested on captured text;
//! `hypervisor::bhyve` and `network::freebsd` run them through the command runner.

use std::path::Path;

use super::runner::HostCommand;
use super::MAX_INTERFACE_NAME_LEN;

/// `ifconfig tap create`: creates the next free tap and prints its name (see
/// [`parse_created_interface`]).
pub fn tap_create(ifconfig: &Path) -> HostCommand {
    HostCommand::new(ifconfig).args(["tap", "create"])
}

/// The interface name `ifconfig <type> create` printed (`"tap3\n"`), if the output is one
/// plausible interface name and nothing else: it ends up in argv and in bhyve's device options.
pub fn parse_created_interface(stdout: &str) -> Option<String> {
    let name = stdout.trim();
    let plausible = !name.is_empty()
        && name.len() <= MAX_INTERFACE_NAME_LEN
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    plausible.then(|| name.to_string())
}

/// The description a VM's tap carries, `vmnet/<vm>/<nic index>` (as vm-bhyve does), so that
/// `ifconfig` shows whose it is and a leaked tap can be traced to its VM.
pub fn tap_description(vm: &str, nic_index: usize) -> String {
    format!("vmnet/{vm}/{nic_index}")
}

/// `ifconfig <tap> descr vmnet/<vm>/<n>`.
pub fn tap_describe(ifconfig: &Path, tap: &str, vm: &str, nic_index: usize) -> HostCommand {
    HostCommand::new(ifconfig).args([tap.to_string(), "descr".into(), tap_description(vm, nic_index)])
}

/// `ifconfig -l`: the names of every interface on one line.
pub fn list_interfaces(ifconfig: &Path) -> HostCommand {
    HostCommand::new(ifconfig).arg("-l")
}

/// `ifconfig`: every interface with its status (see [`parse_descriptions`]).
pub fn list_all(ifconfig: &Path) -> HostCommand {
    HostCommand::new(ifconfig)
}

/// `ifconfig -g bridge`: the bridges, one per line (renamed ones stay in the group).
pub fn list_bridges(ifconfig: &Path) -> HostCommand {
    HostCommand::new(ifconfig).args(["-g", "bridge"])
}

/// `ifconfig bridge create`: prints the new bridge's name (`bridge0`).
pub fn bridge_create(ifconfig: &Path) -> HostCommand {
    HostCommand::new(ifconfig).args(["bridge", "create"])
}

/// `ifconfig vlan create vlan VLAN vlandev PARENT`: prints the new interface's name (`vlan0`).
pub fn vlan_create(ifconfig: &Path, parent: &str, vlan: u16) -> HostCommand {
    HostCommand::new(ifconfig).args(["vlan", "create", "vlan", &vlan.to_string(), "vlandev", parent])
}

/// `ifconfig IF name NEW`.
pub fn rename(ifconfig: &Path, interface: &str, new_name: &str) -> HostCommand {
    HostCommand::new(ifconfig).args([interface, "name", new_name])
}

/// `ifconfig BRIDGE`: its status, with a `member:` line per member.
pub fn show(ifconfig: &Path, interface: &str) -> HostCommand {
    HostCommand::new(ifconfig).arg(interface)
}

/// `ifconfig BRIDGE addm MEMBER`.
pub fn add_member(ifconfig: &Path, bridge: &str, member: &str) -> HostCommand {
    HostCommand::new(ifconfig).args([bridge, "addm", member])
}

/// `ifconfig IF up` / `ifconfig IF destroy`.
pub fn up(ifconfig: &Path, interface: &str) -> HostCommand {
    HostCommand::new(ifconfig).args([interface, "up"])
}
pub fn destroy(ifconfig: &Path, interface: &str) -> HostCommand {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn ifconfig_argv() {
        let ifconfig = Path::new("/sbin/ifconfig");
        assert_eq!(tap_create(ifconfig).display(), "/sbin/ifconfig tap create");
        assert_eq!(add_member(ifconfig, "bridge0", "tap3").display(), "/sbin/ifconfig bridge0 addm tap3");
        let describe = tap_describe(ifconfig, "tap3", "web-1", 1);
        assert_eq!(describe.display(), "/sbin/ifconfig tap3 descr vmnet/web-1/1");
        assert_eq!(describe.args.len(), 3, "the description is one argument");
        assert_eq!(up(ifconfig, "tap3").display(), "/sbin/ifconfig tap3 up");
        assert_eq!(destroy(ifconfig, "tap3").display(), "/sbin/ifconfig tap3 destroy");
    }

    #[test]
    fn created_tap_names_are_parsed() {
        assert_eq!(parse_created_interface("tap3\n").as_deref(), Some("tap3"));
        assert_eq!(parse_created_interface("  tap12 \n").as_deref(), Some("tap12"));
        assert_eq!(parse_created_interface(""), None);
        assert_eq!(parse_created_interface("\n"), None);
        assert_eq!(parse_created_interface("tap3\ntap4\n"), None);
        assert_eq!(parse_created_interface("ifconfig: SIOCIFCREATE2: File exists"), None);
        assert_eq!(parse_created_interface("tap3,mac=00:00:00:00:00:00"), None);
        assert_eq!(parse_created_interface("tap0123456789abcd"), None);
    }

    // `ifconfig bridge0` on FreeBSD 14, with em0 and a vm-bhyve tap as members.
    pub(crate) const BRIDGE_STATUS: &str =
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
}
