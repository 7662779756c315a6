//! The FreeBSD commands around a bhyve VM, as typed argv builders: `bhyve`, `bhyveload`,
//! `bhyvectl`, the `ifconfig` calls for taps on bridges, and `ps` to tell whether a recorded
//! pid is still a bhyve process. Nothing here runs anything; `hypervisor::bhyve` does.
//!
//! The `bhyve` command line follows shared/docs/bhyve-zfs-conventions.md (section 1), always in
//! this order, so that tests can compare whole lines:
//!
//! ```text
//! bhyve -c <vcpus> -m <mib>M -H -A -P -w -u -U <uuid>
//!       -s 0,hostbridge -s 31,lpc -l com1,<nmdm A side> [-l bootrom,<code>[,<vars>]]
//!       [-s 3:0,ahci-cd,<iso>,ro] [-s 4:0,virtio-blk,<boot disk>[,ro]]
//!       [-s 5:<f>,virtio-blk,<disk>[,ro]]... [-s 6:<f>,virtio-net,<tap>,mac=<mac>]... <name>
//! ```
//!
//! Options first, then devices by slot number (LPC devices right after the LPC bridge), the
//! VM name last. The slot map is SmartOS's: 0 host bridge, 3 CD, 4 boot disk, 5 the other
//! disks (one PCI function each), 6 the NICs (one function each), 31 LPC; Windows' AHCI driver
//! accepts only slots 3 to 6, and fixed slots keep a guest's device names stable when a disk
//! or NIC is added. A slot has 8 functions, hence at most 8 extra disks and 8 NICs.
//!
//! `-H` (yield on HLT) keeps an idle vCPU from spinning a host CPU; `-A` (ACPI tables) is what
//! makes SIGTERM a power-button press; `-P` exits on PAUSE; `-w` ignores unknown MSRs, which
//! Linux and Windows guests probe; `-u` keeps the RTC in UTC.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::runner::HostCommand;

/// Where the bhyve tools, firmware and devices are on the host, from the config
/// (`commands.bhyve` ... and `instances.bhyve`; see `Config::bhyve_paths`). The defaults are
/// FreeBSD's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BhyvePaths {
    pub bhyve: PathBuf,
    pub bhyvectl: PathBuf,
    pub bhyveload: PathBuf,
    pub ifconfig: PathBuf,
    /// `ps`, to check that an adopted pid is still a bhyve process (a VM outlives its bhyve
    /// process in `/dev/vmm` until it is destroyed, so the device alone does not say).
    pub ps: PathBuf,
    /// UEFI firmware (edk2-bhyve), for `Firmware::Uefi`.
    pub uefi_bootrom: PathBuf,
    /// UEFI firmware with the compatibility support module, for `Firmware::Bios`.
    pub uefi_csm_bootrom: PathBuf,
    /// One entry per VM that exists in the kernel (`/dev/vmm/<name>`).
    pub vmm_dir: PathBuf,
    /// Null-modem console pairs are `<prefix><name>A` (bhyve's side) and `<prefix><name>B`.
    pub nmdm_prefix: PathBuf,
}

impl Default for BhyvePaths {
    fn default() -> Self {
        BhyvePaths {
            bhyve: "/usr/sbin/bhyve".into(),
            bhyvectl: "/usr/sbin/bhyvectl".into(),
            bhyveload: "/usr/sbin/bhyveload".into(),
            ifconfig: "/sbin/ifconfig".into(),
            ps: "/bin/ps".into(),
            uefi_bootrom: "/usr/local/share/uefi-firmware/BHYVE_UEFI.fd".into(),
            uefi_csm_bootrom: "/usr/local/share/uefi-firmware/BHYVE_UEFI_CSM.fd".into(),
            vmm_dir: "/dev/vmm".into(),
            nmdm_prefix: "/dev/nmdm".into(),
        }
    }
}

impl BhyvePaths {
    /// `/dev/vmm/<name>`: present while the kernel holds the VM, whether or not a bhyve
    /// process runs it.
    pub fn vmm_entry(&self, vm: &str) -> PathBuf {
        self.vmm_dir.join(vm)
    }

    /// The nmdm side bhyve's COM1 is attached to.
    pub fn console_vm_side(&self, vm: &str) -> PathBuf {
        self.nmdm(vm, "A")
    }

    /// The nmdm side a user (or the agent's console reader) opens.
    pub fn console_user_side(&self, vm: &str) -> PathBuf {
        self.nmdm(vm, "B")
    }

    fn nmdm(&self, vm: &str, side: &str) -> PathBuf {
        let mut path = self.nmdm_prefix.as_os_str().to_owned();
        path.push(vm);
        path.push(side);
        PathBuf::from(path)
    }
}

/// A disk attached with virtio-blk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BhyveDisk {
    pub path: PathBuf,
    pub read_only: bool,
}

/// A virtio-net NIC on a tap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BhyveNic {
    pub tap: String,
    /// Pinned, because bhyve would otherwise derive it from the slot and the tap's name, and
    /// tap numbers change between runs.
    pub mac: String,
}

/// UEFI firmware (`-l bootrom,...`), with an optional per-VM variables file for boot entries
/// that must persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootrom {
    pub code: PathBuf,
    pub vars: Option<PathBuf>,
}

/// Everything the `bhyve` and `bhyveload` command lines depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BhyveVm {
    /// The kernel's name for the VM (`/dev/vmm/<name>`).
    pub name: String,
    /// The SMBIOS system uuid the guest sees.
    pub uuid: Uuid,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// The boot disk first.
    pub disks: Vec<BhyveDisk>,
    pub nics: Vec<BhyveNic>,
    /// An ISO attached read-only as an AHCI CD.
    pub cdrom: Option<PathBuf>,
    /// `None`: the guest was loaded by `bhyveload` (FreeBSD guests).
    pub bootrom: Option<Bootrom>,
    /// COM1's device, the A side of an nmdm pair (`BhyvePaths::console_vm_side`).
    pub console: PathBuf,
}

/// PCI slots of the fixed slot map.
const CD_SLOT: u32 = 3;
const BOOT_DISK_SLOT: u32 = 4;
const EXTRA_DISK_SLOT: u32 = 5;
const NIC_SLOT: u32 = 6;
/// Functions per PCI slot.
const FUNCTIONS_PER_SLOT: usize = 8;
/// FreeBSD 13 allows VM names of at most 31 bytes (`VM_MAX_NAMELEN` 32, with the NUL); 14
/// allows more, so 31 is the limit that works everywhere.
const MAX_VM_NAME_LEN: usize = 31;

/// A VM description that no `bhyve` command line can express.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BhyveArgvError {
    #[error("{count} disks after the boot disk; slot {EXTRA_DISK_SLOT} has room for {FUNCTIONS_PER_SLOT}")]
    TooManyDisks { count: usize },
    #[error("{count} NICs; slot {NIC_SLOT} has room for {FUNCTIONS_PER_SLOT}")]
    TooManyNics { count: usize },
    #[error("VM name {0:?} is not 1 to {MAX_VM_NAME_LEN} bytes without '/', ',' or whitespace")]
    BadName(String),
    /// bhyve splits device options at commas, so a comma in a value would become an option.
    #[error("{what} {value:?} contains a comma, which bhyve would read as an option separator")]
    Comma { what: &'static str, value: String },
    #[error("bhyveload needs a boot disk")]
    NoBootDisk,
}

impl BhyveVm {
    /// Checks what the command lines cannot express, without building them (so a caller can
    /// refuse a VM before it creates anything for it, such as taps).
    pub fn check(&self) -> Result<(), BhyveArgvError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= MAX_VM_NAME_LEN
            && !self.name.contains(['/', ','])
            && !self.name.contains(char::is_whitespace);
        if !name_ok {
            return Err(BhyveArgvError::BadName(self.name.clone()));
        }
        let extra_disks = self.disks.len().saturating_sub(1);
        if extra_disks > FUNCTIONS_PER_SLOT {
            return Err(BhyveArgvError::TooManyDisks { count: extra_disks });
        }
        if self.nics.len() > FUNCTIONS_PER_SLOT {
            return Err(BhyveArgvError::TooManyNics { count: self.nics.len() });
        }
        let mut values: Vec<(&'static str, &Path)> = vec![("console", &self.console)];
        values.extend(self.cdrom.iter().map(|iso| ("cdrom", iso.as_path())));
        values.extend(self.disks.iter().map(|d| ("disk", d.path.as_path())));
        if let Some(rom) = &self.bootrom {
            values.push(("bootrom", &rom.code));
            values.extend(rom.vars.iter().map(|v| ("bootrom vars", v.as_path())));
        }
        for nic in &self.nics {
            values.push(("tap", Path::new(&nic.tap)));
            values.push(("mac", Path::new(&nic.mac)));
        }
        match values.into_iter().find(|(_, v)| v.as_os_str().to_string_lossy().contains(',')) {
            Some((what, value)) => Err(BhyveArgvError::Comma { what, value: value.display().to_string() }),
            None => Ok(()),
        }
    }

    /// The `bhyve` argv (order in the module documentation).
    pub fn bhyve_command(&self, paths: &BhyvePaths) -> Result<HostCommand, BhyveArgvError> {
        self.check()?;
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |parts: &[&str]| args.extend(parts.iter().map(OsString::from));
        push(&["-c", &self.vcpus.to_string(), "-m", &format!("{}M", self.memory_mib)]);
        push(&["-H", "-A", "-P", "-w", "-u", "-U", &self.uuid.to_string()]);
        push(&["-s", "0,hostbridge", "-s", "31,lpc"]);
        push(&["-l", &format!("com1,{}", self.console.display())]);
        if let Some(rom) = &self.bootrom {
            let mut lpc = format!("bootrom,{}", rom.code.display());
            if let Some(vars) = &rom.vars {
                lpc.push_str(&format!(",{}", vars.display()));
            }
            push(&["-l", &lpc]);
        }
        if let Some(iso) = &self.cdrom {
            push(&["-s", &format!("{CD_SLOT}:0,ahci-cd,{},ro", iso.display())]);
        }
        let disk_slots = [BOOT_DISK_SLOT].into_iter().chain(std::iter::repeat(EXTRA_DISK_SLOT));
        let disk_functions = [0].into_iter().chain(0..);
        for ((disk, slot), function) in self.disks.iter().zip(disk_slots).zip(disk_functions) {
            let ro = if disk.read_only { ",ro" } else { "" };
            push(&["-s", &format!("{slot}:{function},virtio-blk,{}{ro}", disk.path.display())]);
        }
        for (function, nic) in self.nics.iter().enumerate() {
            push(&["-s", &format!("{NIC_SLOT}:{function},virtio-net,{},mac={}", nic.tap, nic.mac)]);
        }
        push(&[&self.name]);
        Ok(HostCommand { program: paths.bhyve.clone(), args })
    }

    /// `bhyveload`: creates the VM in the kernel and loads a FreeBSD kernel from the boot disk
    /// into it, talking on the console so the loader menu can be used. Needed before every
    /// `bhyve` start of a FreeBSD guest, including after a reboot. `-m` must equal bhyve's.
    pub fn bhyveload_command(&self, paths: &BhyvePaths) -> Result<HostCommand, BhyveArgvError> {
        self.check()?;
        let boot_disk = self.disks.first().ok_or(BhyveArgvError::NoBootDisk)?;
        Ok(HostCommand::new(&paths.bhyveload)
            .arg("-c")
            .arg(&self.console)
            .args(["-m".to_string(), format!("{}M", self.memory_mib)])
            .args(["-e".to_string(), format!("smbios.system.uuid={}", self.uuid)])
            .arg("-d")
            .arg(&boot_disk.path)
            .arg(&self.name))
    }
}

/// What `bhyvectl` does to a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BhyvectlAction {
    /// Removes the VM from the kernel (`/dev/vmm/<name>` disappears); ends its bhyve process if
    /// one still runs.
    Destroy,
    /// Powers off at once: bhyve exits with 1.
    ForcePoweroff,
    /// Resets at once: bhyve exits with 0, as after a guest reboot.
    ForceReset,
}

/// `bhyvectl --vm=<name> --destroy|--force-poweroff|--force-reset`.
pub fn bhyvectl(paths: &BhyvePaths, vm: &str, action: BhyvectlAction) -> HostCommand {
    let flag = match action {
        BhyvectlAction::Destroy => "--destroy",
        BhyvectlAction::ForcePoweroff => "--force-poweroff",
        BhyvectlAction::ForceReset => "--force-reset",
    };
    HostCommand::new(&paths.bhyvectl).args([format!("--vm={vm}"), flag.to_string()])
}

/// `ps -p <pid> -o comm=`: prints the command name of `pid` (nothing, and exit status 1, if
/// there is no such process). See [`is_bhyve_command_name`].
pub fn ps_command_name(paths: &BhyvePaths, pid: u32) -> HostCommand {
    HostCommand::new(&paths.ps).args(["-p".to_string(), pid.to_string(), "-o".into(), "comm=".into()])
}

/// Whether `ps -o comm=` printed bhyve's name (it is `bhyve` even though bhyve retitles
/// itself `bhyve: <vm>`, because `comm` is the executable's name, not the title).
pub fn is_bhyve_command_name(stdout: &str) -> bool {
    stdout.trim() == "bhyve"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linux_guest() -> BhyveVm {
        let paths = BhyvePaths::default();
        BhyveVm {
            name: "web-1".into(),
            uuid: Uuid::parse_str("6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b").unwrap(),
            vcpus: 2,
            memory_mib: 2048,
            disks: vec![
                BhyveDisk { path: "/dev/zvol/zones/web-1/disk0".into(), read_only: false },
                BhyveDisk { path: "/dev/zvol/zones/web-1/disk1".into(), read_only: true },
            ],
            nics: vec![
                BhyveNic { tap: "tap3".into(), mac: "58:9c:fc:00:00:01".into() },
                BhyveNic { tap: "tap4".into(), mac: "58:9c:fc:00:00:02".into() },
            ],
            cdrom: Some("/isos/debian.iso".into()),
            bootrom: Some(Bootrom { code: paths.uefi_bootrom.clone(), vars: None }),
            console: paths.console_vm_side("web-1"),
        }
    }

    #[test]
    fn uefi_linux_guest_argv_is_exactly_this() {
        let command = linux_guest().bhyve_command(&BhyvePaths::default()).unwrap();
        assert_eq!(
            command.display(),
            "/usr/sbin/bhyve -c 2 -m 2048M -H -A -P -w -u -U 6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b \
             -s 0,hostbridge -s 31,lpc -l com1,/dev/nmdmweb-1A \
             -l bootrom,/usr/local/share/uefi-firmware/BHYVE_UEFI.fd \
             -s 3:0,ahci-cd,/isos/debian.iso,ro \
             -s 4:0,virtio-blk,/dev/zvol/zones/web-1/disk0 \
             -s 5:0,virtio-blk,/dev/zvol/zones/web-1/disk1,ro \
             -s 6:0,virtio-net,tap3,mac=58:9c:fc:00:00:01 \
             -s 6:1,virtio-net,tap4,mac=58:9c:fc:00:00:02 web-1"
        );
        // Each option value is one argv element (no shell splits them later).
        assert_eq!(command.args.iter().filter(|a| *a == "-s").count(), 7);
    }

    #[test]
    fn bootrom_vars_and_extra_disk_functions() {
        let mut vm = linux_guest();
        vm.bootrom.as_mut().unwrap().vars = Some("/var/run/agent/web-1/vars.fd".into());
        vm.cdrom = None;
        vm.disks.push(BhyveDisk { path: "/dev/zvol/zones/web-1/disk2".into(), read_only: false });
        let line = vm.bhyve_command(&BhyvePaths::default()).unwrap().display();
        assert!(
            line.contains(
                "-l bootrom,/usr/local/share/uefi-firmware/BHYVE_UEFI.fd,/var/run/agent/web-1/vars.fd -s 4:0,"
            ),
            "{line}"
        );
        assert!(line.contains("-s 5:1,virtio-blk,/dev/zvol/zones/web-1/disk2 -s 6:0"), "{line}");
        assert!(!line.contains("ahci-cd"), "{line}");
    }

    #[test]
    fn bhyveload_guest_has_no_bootrom() {
        let mut vm = linux_guest();
        vm.bootrom = None;
        let line = vm.bhyve_command(&BhyvePaths::default()).unwrap().display();
        assert!(!line.contains("bootrom"), "{line}");
        assert!(line.contains("-l com1,/dev/nmdmweb-1A -s 3:0,"), "{line}");
    }

    #[test]
    fn bhyveload_argv_is_exactly_this() {
        let command = linux_guest().bhyveload_command(&BhyvePaths::default()).unwrap();
        assert_eq!(
            command.display(),
            "/usr/sbin/bhyveload -c /dev/nmdmweb-1A -m 2048M \
             -e smbios.system.uuid=6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b -d /dev/zvol/zones/web-1/disk0 web-1"
        );
        let mut diskless = linux_guest();
        diskless.disks.clear();
        assert_eq!(diskless.bhyveload_command(&BhyvePaths::default()), Err(BhyveArgvError::NoBootDisk));
    }

    #[test]
    fn slots_hold_eight_functions() {
        let paths = BhyvePaths::default();
        let mut vm = linux_guest();
        let disk = |i| BhyveDisk { path: format!("/dev/zvol/d{i}").into(), read_only: false };
        vm.disks = (0..9).map(disk).collect();
        let line = vm.bhyve_command(&paths).unwrap().display();
        assert!(line.contains("-s 5:7,virtio-blk,/dev/zvol/d8 "), "{line}");
        vm.disks.push(disk(9));
        assert_eq!(vm.bhyve_command(&paths), Err(BhyveArgvError::TooManyDisks { count: 9 }));

        let mut vm = linux_guest();
        let nic = |i| BhyveNic { tap: format!("tap{i}"), mac: format!("58:9c:fc:00:00:{i:02x}") };
        vm.nics = (0..8).map(nic).collect();
        assert!(vm.bhyve_command(&paths).unwrap().display().contains("-s 6:7,virtio-net,tap7,"));
        vm.nics.push(nic(8));
        assert_eq!(vm.bhyve_command(&paths), Err(BhyveArgvError::TooManyNics { count: 9 }));
    }

    #[test]
    fn values_bhyve_would_misread_are_refused() {
        let paths = BhyvePaths::default();
        let mut vm = linux_guest();
        vm.disks[1].path = "/images/a,b.img".into();
        assert_eq!(
            vm.bhyve_command(&paths),
            Err(BhyveArgvError::Comma { what: "disk", value: "/images/a,b.img".into() })
        );
        for name in ["", "a/b", "a b", "x".repeat(32).as_str()] {
            let mut vm = linux_guest();
            vm.name = name.to_string();
            assert_eq!(vm.check(), Err(BhyveArgvError::BadName(name.to_string())), "{name:?}");
        }
        let mut vm = linux_guest();
        vm.name = "x".repeat(31);
        vm.console = paths.console_vm_side(&vm.name);
        assert_eq!(vm.check(), Ok(()));
    }

    #[test]
    fn bhyvectl_argv() {
        let paths = BhyvePaths::default();
        let line = |action| bhyvectl(&paths, "web-1", action).display();
        assert_eq!(line(BhyvectlAction::Destroy), "/usr/sbin/bhyvectl --vm=web-1 --destroy");
        assert_eq!(line(BhyvectlAction::ForcePoweroff), "/usr/sbin/bhyvectl --vm=web-1 --force-poweroff");
        assert_eq!(line(BhyvectlAction::ForceReset), "/usr/sbin/bhyvectl --vm=web-1 --force-reset");
    }

    #[test]
    fn ps_argv_and_output() {
        let paths = BhyvePaths::default();
        assert_eq!(ps_command_name(&paths, 4242).display(), "/bin/ps -p 4242 -o comm=");
        assert!(is_bhyve_command_name("bhyve\n"));
        assert!(!is_bhyve_command_name(""));
        assert!(!is_bhyve_command_name("sshd\n"));
    }

    #[test]
    fn consoles_and_vmm_entries() {
        let paths = BhyvePaths::default();
        assert_eq!(paths.console_vm_side("web-1"), Path::new("/dev/nmdmweb-1A"));
        assert_eq!(paths.console_user_side("web-1"), Path::new("/dev/nmdmweb-1B"));
        assert_eq!(paths.vmm_entry("web-1"), Path::new("/dev/vmm/web-1"));
    }
}
