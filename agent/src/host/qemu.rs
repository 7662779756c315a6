//! The `qemu-system-x86_64` command line for an instance, built from a typed description.
//!
//! Choices, from linux-test-backends.md: `-no-reboot` so that a guest reboot ends the process
//! and the supervisor decides (as with bhyve); a QMP socket for powerdown, reset and status; the
//! serial console on a Unix socket the agent reads and logs, with `wait=on` so that QEMU does
//! not start the guest before the agent listens (no boot output lost); the QMP socket comes
//! first, so it exists while QEMU waits for the console; KVM only when the caller has checked
//! that it really works, TCG otherwise.

use std::ffi::OsString;
use std::path::PathBuf;

use super::runner::HostCommand;

/// Acceleration: KVM where `/dev/kvm` really runs guests, TCG (software) otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

/// A disk of the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub path: PathBuf,
    /// `raw` or `qcow2`.
    pub format: &'static str,
    pub read_only: bool,
}

/// How a NIC reaches the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NicBackend {
    /// A tap device on a host bridge.
    Tap(String),
    /// QEMU's user-mode network (no privileges), isolated from the host's network.
    User,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub mac: String,
    pub backend: NicBackend,
}

/// Everything the command line depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuVm {
    pub name: String,
    /// The SMBIOS system uuid the guest sees (stable across restarts).
    pub uuid: uuid::Uuid,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub accel: Accel,
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    /// An ISO attached as a CD.
    pub cdrom: Option<PathBuf>,
    pub boot_from_cdrom: bool,
    /// UEFI firmware code (OVMF) for `-bios`; `None`: SeaBIOS.
    pub uefi_firmware: Option<PathBuf>,
    pub qmp_socket: PathBuf,
    pub serial_socket: PathBuf,
    /// What QEMU runs for each guest connection to the metadata address (169.254.169.254:80)
    /// on the first user-mode NIC; its stdin and stdout are the connection.
    pub metadata_command: Option<String>,
}

impl QemuVm {
    /// The argv, with `program` the absolute path of `qemu-system-x86_64`.
    pub fn command(&self, program: impl Into<PathBuf>) -> HostCommand {
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |parts: &[&str]| args.extend(parts.iter().map(OsString::from));
        push(&["-name", &format!("guest={},debug-threads=on", self.name)]);
        push(&["-machine", "q35"]);
        push(&[
            "-accel",
            match self.accel {
                Accel::Kvm => "kvm",
                Accel::Tcg => "tcg",
            },
        ]);
        if self.accel == Accel::Kvm {
            push(&["-cpu", "host"]);
        }
        push(&["-smp", &self.vcpus.to_string()]);
        push(&["-m", &format!("{}M", self.memory_mib)]);
        push(&["-smbios", &format!("type=1,uuid={}", self.uuid)]);
        if let Some(firmware) = &self.uefi_firmware {
            push(&["-bios", &firmware.display().to_string()]);
        }
        push(&["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"]);
        push(&["-qmp", &format!("unix:{},server=on,wait=off", self.qmp_socket.display())]);
        push(&[
            "-chardev",
            &format!("socket,id=serial0,path={},server=on,wait=on", self.serial_socket.display()),
        ]);
        push(&["-serial", "chardev:serial0"]);
        for (i, disk) in self.disks.iter().enumerate() {
            let mut drive = format!("file={},if=virtio,format={}", disk.path.display(), disk.format);
            if disk.read_only {
                // Small generated disks (the NoCloud seed) may sit on a tmpfs, which older
                // kernels cannot open with O_DIRECT: the page cache is fine for them.
                drive.push_str(",readonly=on");
            } else {
                drive.push_str(",cache=none,aio=threads");
            }
            if i == 0 && !self.boot_from_cdrom {
                drive.push_str(",index=0");
            }
            push(&["-drive", &drive]);
        }
        if let Some(iso) = &self.cdrom {
            push(&["-drive", &format!("file={},media=cdrom,readonly=on,if=ide", iso.display())]);
        }
        push(&["-boot", if self.boot_from_cdrom { "order=d" } else { "order=c" }]);
        let metadata_nic = self.nics.iter().position(|n| n.backend == NicBackend::User);
        for (i, nic) in self.nics.iter().enumerate() {
            let netdev = match (&nic.backend, &self.metadata_command) {
                (NicBackend::Tap(tap), _) => format!("tap,id=net{i},ifname={tap},script=no,downscript=no"),
                // The link-local network the metadata address belongs to (as on EC2), and
                // the metadata address forwarded to this instance's own service.
                (NicBackend::User, Some(command)) if metadata_nic == Some(i) => format!(
                    "user,id=net{i},restrict=on,net=169.254.0.0/16,host=169.254.0.2,dhcpstart=169.254.0.15,\
                     guestfwd=tcp:169.254.169.254:80-cmd:{command}"
                ),
                (NicBackend::User, _) => format!("user,id=net{i},restrict=on"),
            };
            push(&["-netdev", &netdev]);
            push(&["-device", &format!("virtio-net-pci,netdev=net{i},mac={}", nic.mac)]);
        }
        HostCommand { program: program.into(), args }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm() -> QemuVm {
        QemuVm {
            name: "web-1".into(),
            uuid: uuid::Uuid::parse_str("6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b").unwrap(),
            vcpus: 2,
            memory_mib: 512,
            accel: Accel::Tcg,
            disks: vec![Disk {
                path: "/var/lib/agent/i/disk0.qcow2".into(),
                format: "qcow2",
                read_only: false,
            }],
            nics: vec![Nic { mac: "58:9c:fc:00:00:01".into(), backend: NicBackend::Tap("tap3".into()) }],
            cdrom: None,
            boot_from_cdrom: false,
            uefi_firmware: None,
            qmp_socket: "/run/agent/web-1.qmp".into(),
            serial_socket: "/run/agent/web-1.serial".into(),
            metadata_command: None,
        }
    }

    #[test]
    fn tcg_argv_is_exactly_this() {
        let line = vm().command("/usr/bin/qemu-system-x86_64").display();
        assert_eq!(
            line,
            "/usr/bin/qemu-system-x86_64 -name guest=web-1,debug-threads=on -machine q35 -accel tcg -smp 2 -m 512M \
             -smbios type=1,uuid=6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b -nodefaults -no-user-config -display none \
             -no-reboot -qmp unix:/run/agent/web-1.qmp,server=on,wait=off \
             -chardev socket,id=serial0,path=/run/agent/web-1.serial,server=on,wait=on -serial chardev:serial0 \
             -drive file=/var/lib/agent/i/disk0.qcow2,if=virtio,format=qcow2,cache=none,aio=threads,index=0 \
             -boot order=c -netdev tap,id=net0,ifname=tap3,script=no,downscript=no \
             -device virtio-net-pci,netdev=net0,mac=58:9c:fc:00:00:01"
        );
    }

    #[test]
    fn kvm_cdrom_boot_and_user_networking() {
        let mut vm = vm();
        vm.accel = Accel::Kvm;
        vm.cdrom = Some("/isos/debian.iso".into());
        vm.boot_from_cdrom = true;
        vm.uefi_firmware = Some("/usr/share/OVMF/OVMF_CODE.fd".into());
        vm.nics[0].backend = NicBackend::User;
        let line = vm.command("/usr/bin/qemu-system-x86_64").display();
        assert!(line.contains("-accel kvm -cpu host"), "{line}");
        assert!(line.contains("cb4eafdb7c8b -bios /usr/share/OVMF/OVMF_CODE.fd -nodefaults"), "{line}");
        assert!(
            line.contains("-drive file=/isos/debian.iso,media=cdrom,readonly=on,if=ide -boot order=d"),
            "{line}"
        );
        assert!(line.contains("-netdev user,id=net0,restrict=on"), "{line}");
        assert!(!line.contains("index=0"), "{line}");
    }

    #[test]
    fn the_seed_disk_and_the_metadata_forward() {
        let mut vm = vm();
        vm.disks.push(Disk { path: "/run/agent/u/cidata.img".into(), format: "raw", read_only: true });
        vm.nics = vec![
            Nic { mac: "58:9c:fc:00:00:01".into(), backend: NicBackend::Tap("tap3".into()) },
            Nic { mac: "58:9c:fc:00:00:02".into(), backend: NicBackend::User },
            Nic { mac: "58:9c:fc:00:00:03".into(), backend: NicBackend::User },
        ];
        vm.metadata_command = Some("/usr/local/bin/agent metadata-proxy /run/agent/u/metadata.sock".into());
        let line = vm.command("/usr/bin/qemu-system-x86_64").display();
        // Read-only and through the page cache (no O_DIRECT: the run dir may be a tmpfs).
        assert!(
            line.contains("-drive file=/run/agent/u/cidata.img,if=virtio,format=raw,readonly=on -boot"),
            "{line}"
        );
        // Only the first user-mode NIC carries the metadata address.
        assert!(
            line.contains(
                "-netdev user,id=net1,restrict=on,net=169.254.0.0/16,host=169.254.0.2,dhcpstart=169.254.0.15,\
                 guestfwd=tcp:169.254.169.254:80-cmd:/usr/local/bin/agent metadata-proxy /run/agent/u/metadata.sock \
                 -device"
            ),
            "{line}"
        );
        assert!(line.contains("-netdev user,id=net2,restrict=on -device"), "{line}");
    }
}
