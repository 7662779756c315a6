//! iproute2 (`ip`, `bridge`) commands for Linux bridges, their VLANs and QEMU's taps: argv
//! builders and the parser of `ip -o link show`; `hypervisor::qemu` and `network::linux` run
//! them through the command runner.

use std::path::Path;

use super::runner::HostCommand;

/// The tap of NIC `index` of the VM `vm_name` (`i-` + 12 hex digits): `vt` + the hex digits +
/// the index, 15 characters, the longest Linux interface name. Derived, not stored: an agent
/// that adopts a running VM finds its taps again and removes them when the VM ends.
pub fn tap_name(vm_name: &str, index: usize) -> String {
    let id: String =
        vm_name.trim_start_matches("i-").chars().filter(char::is_ascii_alphanumeric).take(12).collect();
    format!("vt{id}{index}")
}

/// `ip tuntap add dev TAP mode tap`.
pub fn tap_add(ip: &Path, tap: &str) -> HostCommand {
    HostCommand::new(ip).args(["tuntap", "add", "dev", tap, "mode", "tap"])
}

/// `ip link set dev TAP master BRIDGE`.
pub fn set_master(ip: &Path, tap: &str, bridge: &str) -> HostCommand {
    HostCommand::new(ip).args(["link", "set", "dev", tap, "master", bridge])
}

/// `ip link set dev DEV up`.
pub fn set_up(ip: &Path, dev: &str) -> HostCommand {
    HostCommand::new(ip).args(["link", "set", "dev", dev, "up"])
}

/// `ip link del dev DEV`.
pub fn link_del(ip: &Path, dev: &str) -> HostCommand {
    HostCommand::new(ip).args(["link", "del", "dev", dev])
}

/// `ip -o link show`: one line per interface (see [`parse_link_names`]).
pub fn link_list(ip: &Path) -> HostCommand {
    HostCommand::new(ip).args(["-o", "link", "show"])
}

/// The interface names in `ip -o link show` output: `2: eth0: <...> ...`, where a veth or
/// VLAN shows as `eth0.10@eth0` (the part after `@` is its peer or parent, not its name).
pub fn parse_link_names(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|line| {
            let (index, rest) = line.split_once(": ")?;
            index.trim().parse::<u32>().ok()?;
            let (name, _) = rest.split_once(':')?;
            let name = name.split('@').next()?.trim();
            (!name.is_empty()).then(|| name.to_string())
        })
        .collect()
}

/// `ip link add name BRIDGE type bridge vlan_filtering 1`: with VLAN filtering on from the
/// start, untagged members share VLAN 1 as on any bridge, and tagged NICs need no change.
pub fn bridge_add(ip: &Path, bridge: &str) -> HostCommand {
    HostCommand::new(ip).args(["link", "add", "name", bridge, "type", "bridge", "vlan_filtering", "1"])
}

/// `ip link set dev BRIDGE type bridge vlan_filtering 1`, for a bridge made elsewhere.
pub fn bridge_vlan_filtering(ip: &Path, bridge: &str) -> HostCommand {
    HostCommand::new(ip).args(["link", "set", "dev", bridge, "type", "bridge", "vlan_filtering", "1"])
}

/// `bridge vlan add dev PORT vid VLAN [pvid untagged]`: an access port (`untagged`: frames
/// leave it without the tag, and untagged frames entering it join `vlan`) or a trunk port
/// carrying `vlan` tagged.
pub fn port_vlan_add(bridge_tool: &Path, port: &str, vlan: u16, access: bool) -> HostCommand {
    let command = HostCommand::new(bridge_tool).args(["vlan", "add", "dev", port, "vid", &vlan.to_string()]);
    if access {
        command.args(["pvid", "untagged"])
    } else {
        command
    }
}

/// `bridge vlan del dev PORT vid VLAN`: a port put on another VLAN leaves the default VLAN 1.
pub fn port_vlan_del(bridge_tool: &Path, port: &str, vlan: u16) -> HostCommand {
    HostCommand::new(bridge_tool).args(["vlan", "del", "dev", port, "vid", &vlan.to_string()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_names_fit_linux_interface_names() {
        assert_eq!(tap_name("i-6de01e97d7ec", 0), "vt6de01e97d7ec0");
        assert_eq!(tap_name("i-6de01e97d7ec", 7).len(), 15);
        assert_eq!(
            set_master(Path::new("/usr/sbin/ip"), "vt6de01e97d7ec0", "br0").display(),
            "/usr/sbin/ip link set dev vt6de01e97d7ec0 master br0"
        );
    }

    #[test]
    fn link_names_from_captured_output() {
        // Captured on Debian 12 (iproute2 6.1), with a veth pair and a VLAN added.
        let captured = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT \
group default qlen 1000\\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00
2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc fq_codel state UP mode DEFAULT group default \
qlen 1000\\    link/ether 52:54:00:12:34:56 brd ff:ff:ff:ff:ff:ff
5: vtest1@vtest0: <BROADCAST,MULTICAST,M-DOWN> mtu 1500 qdisc noop state DOWN mode DEFAULT group default \
qlen 1000\\    link/ether 6a:1e:47:9b:0a:11 brd ff:ff:ff:ff:ff:ff
7: eth0.10@eth0: <BROADCAST,MULTICAST> mtu 1500 qdisc noop state DOWN mode DEFAULT group default qlen 1000\
\\    link/ether 52:54:00:12:34:56 brd ff:ff:ff:ff:ff:ff
8: br-lab: <NO-CARRIER,BROADCAST,MULTICAST,UP> mtu 1500 qdisc noqueue state DOWN mode DEFAULT group default \
qlen 1000\\    link/ether 2e:5b:4c:7d:aa:01 brd ff:ff:ff:ff:ff:ff
";
        assert_eq!(parse_link_names(captured), ["lo", "eth0", "vtest1", "eth0.10", "br-lab"]);
        assert!(parse_link_names("").is_empty());
        assert!(parse_link_names("garbage\nnot: an interface\n").is_empty());
    }

    #[test]
    fn vlan_commands() {
        let tool = Path::new("/usr/sbin/bridge");
        assert_eq!(
            port_vlan_add(tool, "vt1", 10, true).display(),
            "/usr/sbin/bridge vlan add dev vt1 vid 10 pvid untagged"
        );
        assert_eq!(
            port_vlan_add(tool, "eth1", 10, false).display(),
            "/usr/sbin/bridge vlan add dev eth1 vid 10"
        );
        assert_eq!(port_vlan_del(tool, "vt1", 1).display(), "/usr/sbin/bridge vlan del dev vt1 vid 1");
        assert_eq!(
            bridge_add(Path::new("/usr/sbin/ip"), "br-lab").display(),
            "/usr/sbin/ip link add name br-lab type bridge vlan_filtering 1"
        );
    }
}
