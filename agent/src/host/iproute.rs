//! iproute2 (`ip`) commands for QEMU's taps on Linux bridges: argv builders only;
//! `hypervisor::qemu` runs them through the command runner.

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
}
