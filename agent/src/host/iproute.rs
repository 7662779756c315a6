//! iproute2 (`ip`) commands for Linux bridges, 802.1Q interfaces and QEMU's taps: argv
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

/// `ip -o link show type bridge`: the bridges only.
pub fn bridge_list(ip: &Path) -> HostCommand {
    HostCommand::new(ip).args(["-o", "link", "show", "type", "bridge"])
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
            (!name.is_empty() && !name.contains(char::is_whitespace)).then(|| name.to_string())
        })
        .collect()
}

/// `ip link add name BRIDGE type bridge`.
pub fn bridge_add(ip: &Path, bridge: &str) -> HostCommand {
    HostCommand::new(ip).args(["link", "add", "name", bridge, "type", "bridge"])
}

/// `ip link add link PARENT name NAME type vlan id VLAN`: the 802.1Q interface of `parent`.
pub fn vlan_add(ip: &Path, parent: &str, vlan: u16, name: &str) -> HostCommand {
    HostCommand::new(ip).args([
        "link",
        "add",
        "link",
        parent,
        "name",
        name,
        "type",
        "vlan",
        "id",
        &vlan.to_string(),
    ])
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
        assert!(parse_link_names("garbage\nnot: an interface\n4: two words: <UP>\n").is_empty());
    }

    #[test]
    fn bridge_and_vlan_commands() {
        let ip = Path::new("/usr/sbin/ip");
        assert_eq!(bridge_add(ip, "br-lab").display(), "/usr/sbin/ip link add name br-lab type bridge");
        assert_eq!(
            vlan_add(ip, "eth1", 10, "eth1.10").display(),
            "/usr/sbin/ip link add link eth1 name eth1.10 type vlan id 10"
        );
    }
}
