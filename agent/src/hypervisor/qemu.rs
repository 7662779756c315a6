//! The QEMU backend (Linux hosts): one `qemu-system-x86_64` process per run, driven over QMP.
//!
//! QEMU runs with `-no-reboot`, so every guest reboot ends the process, as with bhyve, and its
//! exit status (0 for both a poweroff and a reboot) says little: how the run ended comes from
//! the QMP `SHUTDOWN` reason, translated to bhyve's exit codes (see [`run_end`]).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use super::{
    ConsoleEndpoint, Firmware, Hypervisor, HypervisorError, RunEnd, VmControl, VmNetwork, VmRun, VmSpec,
};
use crate::config::AccelChoice;
use crate::host::iproute;
use crate::host::qemu::{Accel, Disk, Nic, NicBackend, QemuVm};
use crate::host::qmp::Qmp;
use crate::host::runner::{CommandRunner, ProcessExit, Signal};

/// What the QEMU backend needs, from the config (`commands.qemu`, `commands.ip` and
/// `instances.qemu`; see `Config::qemu_settings`).
#[derive(Debug, Clone)]
pub struct QemuSettings {
    /// Absolute path of `qemu-system-x86_64`.
    pub binary: PathBuf,
    /// `auto` (KVM when it really works here, else TCG), `kvm` or `tcg`.
    pub accel: AccelChoice,
    /// UEFI firmware (OVMF) for instances with `firmware: uefi`.
    pub uefi_firmware: PathBuf,
    /// Absolute path of iproute2's `ip`, for switches' bridges and the taps of their NICs.
    pub ip: PathBuf,
    /// The `agent` executable QEMU runs (`metadata-proxy SOCKET`) for each connection of a
    /// guest to its metadata service. Default: the running agent's own executable.
    pub metadata_proxy: Option<PathBuf>,
}

/// Whether KVM can run guests: `/dev/kvm` must open, and the CPU must have VMX or SVM. The
/// second check matters: some nested hosts offer a `/dev/kvm` (PVM) on which QEMU starts but
/// stock guests never run (linux-test-backends.md, section 1).
pub fn kvm_usable(cpuinfo: &str, dev_kvm_opens: bool) -> bool {
    dev_kvm_opens
        && cpuinfo.lines().any(|line| {
            line.starts_with("flags") && line.split_whitespace().any(|flag| flag == "vmx" || flag == "svm")
        })
}

fn probe_accel(choice: AccelChoice) -> Accel {
    match choice {
        AccelChoice::Kvm => Accel::Kvm,
        AccelChoice::Tcg => Accel::Tcg,
        AccelChoice::Auto => {
            let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            let opens = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
            if kvm_usable(&cpuinfo, opens) {
                Accel::Kvm
            } else {
                Accel::Tcg
            }
        }
    }
}

/// Translates how QEMU ended into bhyve's terms. `reason` is the last QMP `SHUTDOWN` reason.
pub fn run_end(exit: Option<ProcessExit>, reason: Option<&str>) -> RunEnd {
    match (exit, reason) {
        (Some(ProcessExit::Signal(_)), _) => RunEnd::Signaled,
        (Some(ProcessExit::Code(code)), _) if code != 0 => RunEnd::Exited(4),
        // A guest or QMP reset under -no-reboot: bhyve's "rebooted".
        (_, Some("guest-reset" | "host-qmp-system-reset" | "guest-panic")) => RunEnd::Exited(0),
        (_, Some("guest-shutdown" | "host-qmp-quit" | "host-ui")) => RunEnd::Exited(1),
        // SIGTERM/SIGINT/SIGHUP from outside: QEMU quits at once, like a pulled plug.
        (_, Some("host-signal")) => RunEnd::Signaled,
        (_, Some(_)) => RunEnd::Exited(4),
        // The connection ended without a SHUTDOWN event: killed (SIGKILL) or crashed.
        (Some(ProcessExit::Code(_)) | None, None) => RunEnd::Signaled,
    }
}

pub struct Qemu {
    runner: Arc<dyn CommandRunner>,
    settings: QemuSettings,
    accel: Accel,
    /// The agent's own executable: QEMU runs `<it> metadata-proxy <socket>` per metadata
    /// connection of a guest.
    metadata_proxy: Option<PathBuf>,
}

impl Qemu {
    /// Probes KVM once (with `accel: auto`).
    pub fn new(runner: Arc<dyn CommandRunner>, settings: QemuSettings) -> Self {
        let accel = probe_accel(settings.accel);
        tracing::info!(?accel, "QEMU acceleration");
        let metadata_proxy = settings.metadata_proxy.clone().or_else(|| std::env::current_exe().ok());
        Qemu { runner, settings, accel, metadata_proxy }
    }

    /// QEMU's `guestfwd=...-cmd:` runs its command through `/bin/sh`, and a comma would end
    /// the option: the command is only built from paths of plain characters.
    fn metadata_command(&self, spec: &VmSpec) -> Option<String> {
        let (proxy, socket) = (self.metadata_proxy.as_ref()?, spec.metadata_socket.as_ref()?);
        let plain = |p: &Path| {
            p.to_str().is_some_and(|s| s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+".contains(&b)))
        };
        if !(plain(proxy) && plain(socket)) {
            tracing::warn!(
                proxy = %proxy.display(), socket = %socket.display(),
                "no metadata service for this instance: paths with special characters cannot go on QEMU's command line"
            );
            return None;
        }
        Some(format!("{} metadata-proxy {}", proxy.display(), socket.display()))
    }

    fn command_line(&self, spec: &VmSpec) -> Result<QemuVm, HypervisorError> {
        let unsupported = |what: &str| HypervisorError::Unsupported { hypervisor: "qemu", what: what.into() };
        let uefi_firmware = match spec.firmware {
            Firmware::Bios => None,
            Firmware::Uefi => Some(self.settings.uefi_firmware.clone()),
            Firmware::Bhyveload => return Err(unsupported("bhyveload (FreeBSD's bhyve loader)")),
        };
        let nics = spec
            .nics
            .iter()
            .enumerate()
            .map(|(i, nic)| Nic {
                mac: nic.mac.clone(),
                backend: match &nic.network {
                    VmNetwork::User => NicBackend::User,
                    // The tap `start` creates and adds to the bridge (see `Taps`).
                    VmNetwork::Bridge(_) => NicBackend::Tap(iproute::tap_name(&spec.name, i)),
                },
            })
            .collect();
        Ok(QemuVm {
            name: spec.name.clone(),
            uuid: spec.uuid,
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            accel: self.accel,
            disks: spec
                .disks
                .iter()
                .map(|d| Disk { path: d.path.clone(), format: d.format.as_str(), read_only: d.read_only })
                .collect(),
            nics,
            cdrom: spec.cdrom.clone(),
            boot_from_cdrom: spec.boot_from_cdrom,
            uefi_firmware,
            qmp_socket: qmp_socket(&spec.run_dir),
            serial_socket: serial_socket(&spec.run_dir),
            metadata_command: self.metadata_command(spec),
        })
    }
}

fn qmp_socket(run_dir: &Path) -> PathBuf {
    run_dir.join("qmp.sock")
}

fn serial_socket(run_dir: &Path) -> PathBuf {
    run_dir.join("console.sock")
}

impl Hypervisor for Qemu {
    fn kind(&self) -> &'static str {
        "qemu"
    }

    fn start(&self, spec: &VmSpec) -> Result<Box<dyn VmRun>, HypervisorError> {
        let vm = self.command_line(spec)?;
        let taps = Taps::create(self.runner.clone(), &self.settings.ip, spec)?;
        for socket in [&vm.qmp_socket, &vm.serial_socket] {
            match std::fs::remove_file(socket) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(HypervisorError::io(format!("cannot remove {}", socket.display()), e))
                }
                _ => {}
            }
        }
        let command = vm.command(&self.settings.binary);
        // On failure the taps go with `taps` (dropped).
        let mut process = self.runner.spawn_process(&command, &spec.run_dir.join("hypervisor.log"))?;
        let pid = process.pid();
        // The process is reaped on its own thread; QMP gives up connecting once it is gone.
        let (exit_tx, exit_rx) = mpsc::channel();
        let gone = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let gone_flag = gone.clone();
        std::thread::spawn(move || {
            let exit = process.wait().ok();
            gone_flag.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = exit_tx.send(exit);
        });
        let qmp = Qmp::connect(&vm.qmp_socket, move || gone.load(std::sync::atomic::Ordering::SeqCst));
        Ok(Box::new(QemuRun {
            pid,
            exit: Some(exit_rx),
            qmp: qmp.clone(),
            control: Arc::new(QemuControl { pid, qmp, runner: self.runner.clone() }),
            console: serial_socket(&spec.run_dir),
            taps,
        }))
    }

    fn adopt(&self, spec: &VmSpec, pid: u32) -> Result<Option<Box<dyn VmRun>>, HypervisorError> {
        if !is_qemu(pid) {
            return Ok(None);
        }
        let Some(qmp) = Qmp::connect_existing(&qmp_socket(&spec.run_dir)) else { return Ok(None) };
        Ok(Some(Box::new(QemuRun {
            pid,
            exit: None,
            qmp: qmp.clone(),
            control: Arc::new(QemuControl { pid, qmp, runner: self.runner.clone() }),
            console: serial_socket(&spec.run_dir),
            // The names are derived from the VM's: the taps of an adopted run go when it ends.
            taps: Taps::adopted(self.runner.clone(), &self.settings.ip, spec),
        })))
    }
}

/// Whether `pid` is a QEMU process (pids are reused: never signal a stranger).
fn is_qemu(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        cmdline.split(|b| *b == 0).next().is_some_and(|argv0| argv0.ends_with(b"qemu-system-x86_64"))
    })
}

struct QemuRun {
    pid: u32,
    /// How the process exited, when this agent started it.
    exit: Option<mpsc::Receiver<Option<ProcessExit>>>,
    qmp: Arc<Qmp>,
    control: Arc<QemuControl>,
    console: PathBuf,
    taps: Taps,
}

/// The taps of one run's bridged NICs: created before QEMU starts, removed when the run ends
/// (or when a start fails), so none is left behind.
struct Taps {
    runner: Arc<dyn CommandRunner>,
    ip: PathBuf,
    names: Vec<String>,
    /// An agent that stops lets go of the taps with the VM.
    detached: bool,
}

impl Taps {
    fn bridged(spec: &VmSpec) -> impl Iterator<Item = (String, &str)> {
        spec.nics.iter().enumerate().filter_map(|(i, nic)| match &nic.network {
            VmNetwork::Bridge(bridge) => Some((iproute::tap_name(&spec.name, i), bridge.as_str())),
            VmNetwork::User => None,
        })
    }

    fn create(runner: Arc<dyn CommandRunner>, ip: &Path, spec: &VmSpec) -> Result<Taps, HypervisorError> {
        let mut taps = Taps { runner, ip: ip.to_owned(), names: Vec::new(), detached: false };
        for (tap, bridge) in Self::bridged(spec) {
            // A tap of this name can only be a leftover of this VM (a crash of the host's agent).
            let _ = taps.runner.run(&iproute::link_del(ip, &tap));
            taps.runner.run(&iproute::tap_add(ip, &tap))?;
            taps.names.push(tap.clone());
            taps.runner.run(&iproute::set_master(ip, &tap, bridge))?;
            taps.runner.run(&iproute::set_up(ip, &tap))?;
        }
        Ok(taps)
    }

    fn adopted(runner: Arc<dyn CommandRunner>, ip: &Path, spec: &VmSpec) -> Taps {
        Taps {
            runner,
            ip: ip.to_owned(),
            names: Self::bridged(spec).map(|(tap, _)| tap).collect(),
            detached: false,
        }
    }
}

impl Drop for Taps {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        for tap in &self.names {
            if let Err(error) = self.runner.run(&iproute::link_del(&self.ip, tap)) {
                tracing::warn!(%tap, error = %service_kit::ErrorChain(&error), "cannot remove a tap");
            }
        }
    }
}

impl VmRun for QemuRun {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn control(&self) -> Arc<dyn VmControl> {
        self.control.clone()
    }

    fn console(&self) -> ConsoleEndpoint {
        ConsoleEndpoint::UnixSocket(self.console.clone())
    }

    fn wait(mut self: Box<Self>) -> RunEnd {
        self.qmp.wait_closed(None);
        if self.qmp.is_detached() {
            // The VM goes on without this agent, and keeps its taps.
            self.taps.detached = true;
            return RunEnd::Detached;
        }
        let exit = match &self.exit {
            // QMP closes as QEMU exits; the reaper answers right after.
            Some(exit) => exit.recv_timeout(Duration::from_secs(30)).ok().flatten(),
            None => {
                // Not our child: wait for the pid to go (a few ms after QMP closes).
                for _ in 0..100 {
                    if !is_qemu(self.pid) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                None
            }
        };
        run_end(exit, self.qmp.shutdown_reason().as_deref())
    }
}

struct QemuControl {
    pid: u32,
    qmp: Arc<Qmp>,
    runner: Arc<dyn CommandRunner>,
}

impl QemuControl {
    fn execute(&self, command: &str) -> Result<(), HypervisorError> {
        self.qmp.execute(command).map(drop).map_err(HypervisorError::Control)
    }
}

impl VmControl for QemuControl {
    fn request_poweroff(&self) -> Result<(), HypervisorError> {
        self.execute("system_powerdown")
    }

    fn force_poweroff(&self) -> Result<(), HypervisorError> {
        match self.execute("quit") {
            Ok(()) => Ok(()),
            Err(error) => {
                tracing::warn!(pid = self.pid, error = %service_kit::ErrorChain(&error), "QMP quit failed; killing QEMU");
                if is_qemu(self.pid) {
                    self.runner.signal(self.pid, Signal::Kill).map_err(|e| {
                        HypervisorError::io(format!("cannot kill QEMU (pid {})", self.pid), e)
                    })?;
                }
                Ok(())
            }
        }
    }

    fn reset(&self) -> Result<(), HypervisorError> {
        self.execute("system_reset")
    }

    fn detach(&self) {
        self.qmp.detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_needs_the_device_and_the_cpu_flag() {
        let vmx = "processor\t: 0\nflags\t\t: fpu vme sse2 vmx ssse3\n";
        let none = "processor\t: 0\nflags\t\t: fpu vme sse2 hypervisor\n";
        assert!(kvm_usable(vmx, true));
        assert!(kvm_usable("flags : svm", true));
        assert!(!kvm_usable(vmx, false));
        assert!(!kvm_usable(none, true), "a /dev/kvm without VMX/SVM (PVM) runs no stock guest");
    }

    #[test]
    fn shutdown_reasons_become_bhyve_exit_codes() {
        let ok = Some(ProcessExit::Code(0));
        assert_eq!(run_end(ok, Some("guest-shutdown")), RunEnd::Exited(1));
        assert_eq!(run_end(ok, Some("guest-reset")), RunEnd::Exited(0));
        assert_eq!(run_end(ok, Some("host-qmp-system-reset")), RunEnd::Exited(0));
        assert_eq!(run_end(ok, Some("host-qmp-quit")), RunEnd::Exited(1));
        assert_eq!(run_end(ok, Some("host-signal")), RunEnd::Signaled);
        assert_eq!(run_end(ok, None), RunEnd::Signaled);
        assert_eq!(run_end(Some(ProcessExit::Signal(9)), None), RunEnd::Signaled);
        assert_eq!(run_end(Some(ProcessExit::Code(1)), None), RunEnd::Exited(4));
        assert_eq!(run_end(None, Some("guest-shutdown")), RunEnd::Exited(1));
        assert_eq!(run_end(None, None), RunEnd::Signaled);
    }

    #[test]
    fn the_metadata_command_is_built_from_plain_paths_only() {
        let settings = QemuSettings {
            accel: AccelChoice::Tcg,
            metadata_proxy: Some("/usr/local/bin/agent".into()),
            ..Default::default()
        };
        let qemu = Qemu::new(Arc::new(crate::host::runner::RecordingRunner::new()), settings);
        let mut spec = VmSpec {
            uuid: uuid::Uuid::nil(),
            name: "i-0".into(),
            vcpus: 1,
            memory_mib: 64,
            disks: vec![],
            nics: vec![],
            firmware: Firmware::Bios,
            run_dir: "/run/agent/x".into(),
            cdrom: None,
            boot_from_cdrom: false,
            metadata_socket: Some("/run/agent/x/metadata.sock".into()),
        };
        assert_eq!(
            qemu.metadata_command(&spec).as_deref(),
            Some("/usr/local/bin/agent metadata-proxy /run/agent/x/metadata.sock")
        );
        // QEMU runs it through /bin/sh, and a comma would end the netdev option.
        for bad in ["/run/a b/metadata.sock", "/run/a,b/metadata.sock", "/run/$(id)/m.sock", "/run/a;b/m"] {
            spec.metadata_socket = Some(bad.into());
            assert_eq!(qemu.metadata_command(&spec), None, "{bad}");
        }
        spec.metadata_socket = None;
        assert_eq!(qemu.metadata_command(&spec), None);
    }

    fn bridged_spec(run_dir: &Path) -> VmSpec {
        VmSpec {
            uuid: uuid::Uuid::nil(),
            name: "i-6de01e97d7ec".into(),
            vcpus: 1,
            memory_mib: 64,
            disks: vec![],
            nics: vec![
                crate::hypervisor::VmNic { mac: "58:9c:fc:00:00:01".into(), network: VmNetwork::User },
                crate::hypervisor::VmNic {
                    mac: "58:9c:fc:00:00:02".into(),
                    network: VmNetwork::Bridge("br0".into()),
                },
                crate::hypervisor::VmNic {
                    mac: "58:9c:fc:00:00:03".into(),
                    network: VmNetwork::Bridge("br0v10".into()),
                },
            ],
            firmware: Firmware::Bios,
            run_dir: run_dir.to_owned(),
            cdrom: None,
            boot_from_cdrom: false,
            metadata_socket: None,
        }
    }

    #[test]
    fn bridged_nics_get_taps_that_go_when_the_run_ends() {
        use crate::host::runner::{RecordingRunner, Reply};
        let dir = tempfile::tempdir().unwrap();
        let runner = Arc::new(RecordingRunner::new());
        let qemu = Qemu::new(runner.clone(), QemuSettings { accel: AccelChoice::Tcg, ..Default::default() });
        runner.expect("/usr/bin/qemu-system-x86_64", Reply::Exits(ProcessExit::Code(0)));
        let run = qemu.start(&bridged_spec(dir.path())).unwrap();
        let commands = runner.commands();
        assert_eq!(
            commands[..8],
            [
                "/usr/sbin/ip link del dev vt6de01e97d7ec1",
                "/usr/sbin/ip tuntap add dev vt6de01e97d7ec1 mode tap",
                "/usr/sbin/ip link set dev vt6de01e97d7ec1 master br0",
                "/usr/sbin/ip link set dev vt6de01e97d7ec1 up",
                "/usr/sbin/ip link del dev vt6de01e97d7ec2",
                "/usr/sbin/ip tuntap add dev vt6de01e97d7ec2 mode tap",
                "/usr/sbin/ip link set dev vt6de01e97d7ec2 master br0v10",
                "/usr/sbin/ip link set dev vt6de01e97d7ec2 up",
            ]
        );
        assert!(
            commands[8].contains("-netdev tap,id=net1,ifname=vt6de01e97d7ec1,script=no,downscript=no"),
            "{}",
            commands[8]
        );
        run.wait();
        assert_eq!(
            runner.commands()[9..],
            ["/usr/sbin/ip link del dev vt6de01e97d7ec1", "/usr/sbin/ip link del dev vt6de01e97d7ec2"]
        );
    }

    #[test]
    fn a_failed_tap_setup_removes_the_tap_and_starts_nothing() {
        use crate::host::runner::{RecordingRunner, Reply};
        let dir = tempfile::tempdir().unwrap();
        let runner = Arc::new(RecordingRunner::new());
        let qemu = Qemu::new(runner.clone(), QemuSettings { accel: AccelChoice::Tcg, ..Default::default() });
        runner.expect(
            "/usr/sbin/ip link set dev vt6de01e97d7ec1 master",
            Reply::Fail("Cannot find device \"br0\"".into()),
        );
        assert!(qemu.start(&bridged_spec(dir.path())).is_err());
        let commands = runner.commands();
        assert_eq!(commands.last().unwrap(), "/usr/sbin/ip link del dev vt6de01e97d7ec1");
        assert!(!commands.iter().any(|c| c.contains("qemu-system")), "{commands:?}");
    }
}
