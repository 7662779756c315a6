//! bhyve backend (FreeBSD): one run is one `bhyve` process, prepared by destroying a stale VM
//! of the same name, creating the run's taps on their bridges and, for FreeBSD guests, running
//! `bhyveload`. When the process ends, the VM is destroyed in the kernel and the taps with it,
//! so the next `start` (after a reboot, too) begins clean; this matters for `bhyveload`
//! guests, whose loader must run again before every boot.
//!
//! The command lines are built in `host::bhyve`; everything runs through the `CommandRunner`.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{
    ConsoleEndpoint, DiskFormat, Firmware, Hypervisor, HypervisorError, RunEnd, VmControl, VmNetwork, VmRun,
    VmSpec,
};
use crate::host::bhyve::{
    bhyvectl, is_bhyve_command_name, ps_command_name, BhyveArgvError, BhyveDisk, BhyveNic, BhyvePaths,
    BhyveVm, BhyvectlAction, Bootrom,
};
use crate::host::ifconfig;
use crate::host::runner::{CommandRunner, ExecError, HostCommand, Process, ProcessExit, Signal};

const KIND: &str = "bhyve";

/// How often the `wait` of an adopted run (not our child, so not waitable) looks for its end.
const DEFAULT_ADOPTED_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The bhyve backend.
pub struct Bhyve {
    host: Host,
    adopted_poll_interval: Duration,
}

impl Bhyve {
    pub fn new(runner: Arc<dyn CommandRunner>, paths: BhyvePaths) -> Self {
        Bhyve {
            host: Host { runner, paths: Arc::new(paths) },
            adopted_poll_interval: DEFAULT_ADOPTED_POLL_INTERVAL,
        }
    }

    /// Changes how often an adopted run is checked for its end (tests use milliseconds).
    pub fn with_adopted_poll_interval(mut self, interval: Duration) -> Self {
        self.adopted_poll_interval = interval;
        self
    }
}

/// The runner and the paths, shared by the backend, its runs and their controls.
#[derive(Clone)]
struct Host {
    runner: Arc<dyn CommandRunner>,
    paths: Arc<BhyvePaths>,
}

impl Host {
    fn run(&self, command: &HostCommand) -> Result<String, ExecError> {
        self.runner.run(command).map(|output| output.stdout)
    }

    /// Removes the VM from the kernel. Failures are only logged: this is cleanup, and the
    /// usual one is that the VM is already gone.
    fn destroy_vm(&self, vm: &str) {
        if let Err(error) = self.run(&bhyvectl(&self.paths, vm, BhyvectlAction::Destroy)) {
            tracing::warn!(vm, error = %service_kit::ErrorChain(&error), "bhyvectl --destroy failed (the VM may already be gone)");
        }
    }

    fn destroy_taps(&self, vm: &str, taps: &[String]) {
        for tap in taps {
            if let Err(error) = self.run(&ifconfig::destroy(&self.paths.ifconfig, tap)) {
                tracing::warn!(vm, tap = %tap, error = %service_kit::ErrorChain(&error), "cannot destroy a tap of the VM");
            }
        }
    }

    /// Whether `pid` is a running bhyve process. `Err` when `ps` itself could not run, which
    /// says nothing about the VM.
    fn is_bhyve_process(&self, pid: u32) -> Result<bool, ExecError> {
        match self.run(&ps_command_name(&self.paths, pid)) {
            Ok(stdout) => Ok(is_bhyve_command_name(&stdout)),
            // `ps -p` exits with 1 when there is no such process.
            Err(ExecError::Failed { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Polls an adopted run until its VM or its process is gone.
    fn poll_until_gone(&self, vm: &str, pid: u32, poll_interval: Duration) {
        loop {
            if !self.paths.vmm_entry(vm).exists() {
                return;
            }
            match self.is_bhyve_process(pid) {
                Ok(true) => {}
                Ok(false) => return,
                // Cannot tell; the VM still exists, so keep assuming it runs.
                Err(error) => {
                    tracing::warn!(vm, error = %service_kit::ErrorChain(&error), "cannot check the bhyve process")
                }
            }
            std::thread::sleep(poll_interval);
        }
    }
}

/// What `start` created so far, to undo if a later step fails.
#[derive(Default)]
struct Created {
    taps: Vec<String>,
    /// `bhyveload` or `bhyve` was started, either of which creates the VM in the kernel.
    vm: bool,
}

/// A spec turned into command lines, checked before anything is created on the host.
struct Plan {
    /// Tap names are empty until the taps exist.
    vm: BhyveVm,
    /// The bridge of each NIC, in NIC order.
    bridges: Vec<String>,
    bhyveload: Option<HostCommand>,
}

fn unsupported(what: impl Into<String>) -> HypervisorError {
    HypervisorError::Unsupported { hypervisor: KIND, what: what.into() }
}

fn argv_error(error: BhyveArgvError) -> HypervisorError {
    unsupported(error.to_string())
}

impl Bhyve {
    fn plan(&self, spec: &VmSpec) -> Result<Plan, HypervisorError> {
        let paths = &self.host.paths;
        let mut disks = Vec::with_capacity(spec.disks.len());
        for disk in &spec.disks {
            if disk.format != DiskFormat::Raw {
                return Err(unsupported(format!("{} disk {}", disk.format.as_str(), disk.path.display())));
            }
            disks.push(BhyveDisk { path: disk.path.clone(), read_only: disk.read_only });
        }
        let mut nics = Vec::with_capacity(spec.nics.len());
        let mut bridges = Vec::with_capacity(spec.nics.len());
        for (index, nic) in spec.nics.iter().enumerate() {
            match &nic.network {
                VmNetwork::Bridge(bridge) => bridges.push(bridge.clone()),
                VmNetwork::User => return Err(unsupported(format!("user-mode networking (NIC {index})"))),
            }
            nics.push(BhyveNic { tap: String::new(), mac: nic.mac.clone() });
        }
        // Every guest that bhyveload does not load boots from a bootrom: bhyve has no BIOS of
        // its own, so "BIOS" means UEFI with the compatibility module.
        if spec.boot_from_cdrom && spec.firmware == Firmware::Bhyveload {
            return Err(unsupported("booting from a CD with bhyveload (use firmware uefi or bios)"));
        }
        let bootrom = match spec.firmware {
            Firmware::Bios => Some(Bootrom { code: paths.uefi_csm_bootrom.clone(), vars: None }),
            Firmware::Uefi => Some(Bootrom { code: paths.uefi_bootrom.clone(), vars: None }),
            Firmware::Bhyveload => None,
        };
        let vm = BhyveVm {
            name: spec.name.clone(),
            uuid: spec.uuid,
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            disks,
            nics,
            // Slot 3, before the disks: UEFI tries the CD first whenever one is attached.
            cdrom: spec.cdrom.clone(),
            bootrom,
            console: paths.console_vm_side(&spec.name),
        };
        vm.check().map_err(argv_error)?;
        let bhyveload = match spec.firmware {
            Firmware::Bhyveload => Some(vm.bhyveload_command(paths).map_err(argv_error)?),
            Firmware::Bios | Firmware::Uefi => None,
        };
        Ok(Plan { vm, bridges, bhyveload })
    }

    /// The steps of `start` after planning; what they create is recorded in `created` as they
    /// go, so that the caller can undo it when one fails.
    fn bring_up(
        &self,
        spec: &VmSpec,
        mut plan: Plan,
        created: &mut Created,
    ) -> Result<Box<dyn Process>, HypervisorError> {
        let (host, paths) = (&self.host, &*self.host.paths);
        if paths.vmm_entry(&spec.name).exists() {
            // Left by a run nobody cleaned up (agent or host crash). bhyve would reuse it
            // instead of creating a fresh VM.
            tracing::info!(vm = %spec.name, "destroying a stale VM of the same name");
            host.run(&bhyvectl(paths, &spec.name, BhyvectlAction::Destroy))?;
        }
        for (index, bridge) in plan.bridges.iter().enumerate() {
            let stdout = host.run(&ifconfig::tap_create(&paths.ifconfig))?;
            let tap = ifconfig::parse_created_interface(&stdout).ok_or_else(|| {
                // If a tap was created, its name is unknown: it leaks (and the log shows the output).
                HypervisorError::io(
                    format!("`ifconfig tap create` printed no interface name: {stdout:?}"),
                    io::Error::from(io::ErrorKind::InvalidData),
                )
            })?;
            created.taps.push(tap.clone());
            host.run(&ifconfig::add_member(&paths.ifconfig, bridge, &tap))?;
            host.run(&ifconfig::tap_describe(&paths.ifconfig, &tap, &spec.name, index))?;
            host.run(&ifconfig::up(&paths.ifconfig, &tap))?;
            plan.vm.nics[index].tap = tap;
        }
        let bhyve = plan.vm.bhyve_command(paths).map_err(argv_error)?;
        created.vm = true;
        if let Some(bhyveload) = &plan.bhyveload {
            host.run(bhyveload)?;
        }
        Ok(host.runner.spawn_process(&bhyve, &spec.run_dir.join("hypervisor.log"))?)
    }
}

impl Hypervisor for Bhyve {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn start(&self, spec: &VmSpec) -> Result<Box<dyn VmRun>, HypervisorError> {
        let plan = self.plan(spec)?;
        let mut created = Created::default();
        match self.bring_up(spec, plan, &mut created) {
            Ok(process) => {
                let pid = process.pid();
                Ok(Box::new(BhyveRun::new(&self.host, spec, pid, Watch::Child(process), created.taps)))
            }
            Err(error) => {
                tracing::warn!(vm = %spec.name, error = %service_kit::ErrorChain(&error), "bhyve start failed; undoing its preparations");
                if created.vm {
                    self.host.destroy_vm(&spec.name);
                }
                self.host.destroy_taps(&spec.name, &created.taps);
                Err(error)
            }
        }
    }

    /// The VM is still going if the kernel still holds it *and* `pid` is still a bhyve
    /// process: after bhyve exits, the VM stays in `/dev/vmm` until someone destroys it. A VM
    /// without its process is left for the next `start`, which destroys it as stale.
    fn adopt(&self, spec: &VmSpec, pid: u32) -> Result<Option<Box<dyn VmRun>>, HypervisorError> {
        if !self.host.paths.vmm_entry(&spec.name).exists() || !self.host.is_bhyve_process(pid)? {
            return Ok(None);
        }
        // The taps the earlier agent created carry the VM's name in their descriptions
        // (`vmnet/<name>/<n>`): found again, they go when the adopted run ends.
        let taps = match self.host.run(&ifconfig::list_all(&self.host.paths.ifconfig)) {
            Ok(listing) => taps_of(&spec.name, &listing),
            Err(error) => {
                tracing::warn!(vm = %spec.name, error = %service_kit::ErrorChain(&error), "cannot list interfaces: the VM's taps stay when it ends");
                Vec::new()
            }
        };
        let watch = Watch::Adopted { poll_interval: self.adopted_poll_interval };
        Ok(Some(Box::new(BhyveRun::new(&self.host, spec, pid, watch, taps))))
    }
}

/// The taps of VM `vm` in a plain `ifconfig` listing, by their descriptions.
fn taps_of(vm: &str, listing: &str) -> Vec<String> {
    let prefix = format!("vmnet/{vm}/");
    ifconfig::parse_descriptions(listing)
        .into_iter()
        .filter(|(_, description)| {
            description.strip_prefix(&prefix).is_some_and(|n| n.parse::<usize>().is_ok())
        })
        .map(|(interface, _)| interface)
        .collect()
}

/// How a run learns that it ended.
enum Watch {
    /// Our child: waited for, with its exit status.
    Child(Box<dyn Process>),
    /// Started by an earlier agent process: polled, exit status unknown.
    Adopted { poll_interval: Duration },
}

struct BhyveRun {
    host: Host,
    name: String,
    pid: u32,
    console: ConsoleEndpoint,
    watch: Watch,
    taps: Vec<String>,
    control: Arc<BhyveControl>,
}

impl BhyveRun {
    fn new(host: &Host, spec: &VmSpec, pid: u32, watch: Watch, taps: Vec<String>) -> Self {
        let control = Arc::new(BhyveControl {
            host: host.clone(),
            name: spec.name.clone(),
            pid,
            ended: AtomicBool::new(false),
        });
        BhyveRun {
            host: host.clone(),
            name: spec.name.clone(),
            pid,
            console: ConsoleEndpoint::Device(host.paths.console_user_side(&spec.name)),
            watch,
            taps,
            control,
        }
    }
}

impl VmRun for BhyveRun {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn control(&self) -> Arc<dyn VmControl> {
        self.control.clone()
    }

    fn console(&self) -> ConsoleEndpoint {
        self.console.clone()
    }

    fn wait(self: Box<Self>) -> RunEnd {
        let BhyveRun { host, name, pid, watch, taps, control, .. } = *self;
        let end = match watch {
            Watch::Child(mut process) => match process.wait() {
                Ok(ProcessExit::Code(code)) => RunEnd::Exited(code),
                Ok(ProcessExit::Signal(signal)) => {
                    tracing::warn!(vm = %name, pid, signal, "bhyve was killed by a signal");
                    RunEnd::Signaled
                }
                Err(error) => {
                    tracing::error!(vm = %name, pid, error = %service_kit::ErrorChain(&error), "cannot wait for bhyve");
                    RunEnd::Unknown
                }
            },
            Watch::Adopted { poll_interval } => {
                host.poll_until_gone(&name, pid, poll_interval);
                RunEnd::Unknown
            }
        };
        control.ended.store(true, Ordering::SeqCst);
        // bhyve leaves the VM in the kernel when it exits: destroy it so the next start (and a
        // bhyveload before it) gets a fresh one.
        host.destroy_vm(&name);
        host.destroy_taps(&name, &taps);
        end
    }
}

/// The buttons of one run. Once the run has ended they do nothing: its pid may belong to
/// another process by then. (A button pressed in the instant between the process's end and
/// `wait` noticing it can still reach a new process with the same pid; for an adopted run,
/// noticed only by polling, that instant is up to one poll interval.)
struct BhyveControl {
    host: Host,
    name: String,
    pid: u32,
    ended: AtomicBool,
}

impl BhyveControl {
    fn has_ended(&self) -> bool {
        let ended = self.ended.load(Ordering::SeqCst);
        if ended {
            tracing::debug!(vm = %self.name, "button pressed after the run ended; ignored");
        }
        ended
    }

    fn signal(&self, signal: Signal) -> Result<(), HypervisorError> {
        self.host.runner.signal(self.pid, signal).map_err(|error| {
            HypervisorError::io(format!("cannot signal bhyve (pid {}) of VM {}", self.pid, self.name), error)
        })
    }
}

impl VmControl for BhyveControl {
    /// SIGTERM: bhyve presses the guest's ACPI power button and keeps running until the guest
    /// powers off.
    fn request_poweroff(&self) -> Result<(), HypervisorError> {
        if self.has_ended() {
            return Ok(());
        }
        self.signal(Signal::Term)
    }

    /// `bhyvectl --force-poweroff`, and SIGKILL if bhyvectl fails (a wedged VM must still be
    /// stoppable).
    fn force_poweroff(&self) -> Result<(), HypervisorError> {
        if self.has_ended() {
            return Ok(());
        }
        match self.host.run(&bhyvectl(&self.host.paths, &self.name, BhyvectlAction::ForcePoweroff)) {
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::warn!(vm = %self.name, error = %service_kit::ErrorChain(&error), "bhyvectl --force-poweroff failed; killing bhyve");
                self.signal(Signal::Kill)
            }
        }
    }

    fn reset(&self) -> Result<(), HypervisorError> {
        if self.has_ended() {
            return Ok(());
        }
        self.host.run(&bhyvectl(&self.host.paths, &self.name, BhyvectlAction::ForceReset))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::mpsc;

    use super::*;
    use crate::host::runner::{RecordingRunner, Reply};
    use crate::hypervisor::{VmDisk, VmNic};

    const BHYVE: &str = "/usr/sbin/bhyve -c";
    const TAP_CREATE: &str = "/sbin/ifconfig tap create";
    const DESTROY: &str = "/usr/sbin/bhyvectl --vm=web-1 --destroy";

    struct Fixture {
        runner: RecordingRunner,
        bhyve: Bhyve,
        dir: tempfile::TempDir,
    }

    impl Fixture {
        /// A backend whose `/dev/vmm` is an empty temporary directory.
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("vmm")).unwrap();
            let runner = RecordingRunner::new();
            let paths = BhyvePaths { vmm_dir: dir.path().join("vmm"), ..BhyvePaths::default() };
            let bhyve = Bhyve::new(Arc::new(runner.clone()), paths)
                .with_adopted_poll_interval(Duration::from_millis(5));
            Fixture { runner, bhyve, dir }
        }

        fn vmm_entry(&self) -> PathBuf {
            self.dir.path().join("vmm/web-1")
        }

        /// Makes the kernel "hold" VM web-1.
        fn create_vmm_entry(&self) {
            std::fs::write(self.vmm_entry(), b"").unwrap();
        }

        /// The two taps a two-NIC start gets.
        fn expect_taps(&self) {
            self.runner.expect(TAP_CREATE, Reply::Ok("tap3\n".into()));
            self.runner.expect(TAP_CREATE, Reply::Ok("tap4\n".into()));
        }

        /// A UEFI guest with two disks and two NICs on bridge0.
        fn spec(&self) -> VmSpec {
            let disk =
                |path: &str, read_only| VmDisk { path: path.into(), format: DiskFormat::Raw, read_only };
            let nic = |mac: &str| VmNic { mac: mac.into(), network: VmNetwork::Bridge("bridge0".into()) };
            VmSpec {
                uuid: uuid::Uuid::parse_str("6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b").unwrap(),
                name: "web-1".into(),
                vcpus: 2,
                memory_mib: 1024,
                disks: vec![disk("/dev/zvol/zones/web-1/disk0", false), disk("/dev/zvol/zones/seed", true)],
                nics: vec![nic("58:9c:fc:00:00:01"), nic("58:9c:fc:00:00:02")],
                firmware: Firmware::Uefi,
                run_dir: self.dir.path().to_path_buf(),
                cdrom: None,
                boot_from_cdrom: false,
                metadata_socket: None,
            }
        }

        /// Starts the standard spec with bhyve answering `bhyve`.
        fn start(&self, bhyve: Reply) -> Box<dyn VmRun> {
            self.expect_taps();
            self.runner.expect(BHYVE, bhyve);
            self.bhyve.start(&self.spec()).unwrap()
        }

        /// Commands recorded since the first `skip`.
        fn commands_after(&self, skip: usize) -> Vec<String> {
            self.runner.commands()[skip..].to_vec()
        }
    }

    const TAP_SETUP: [&str; 8] = [
        "/sbin/ifconfig tap create",
        "/sbin/ifconfig bridge0 addm tap3",
        "/sbin/ifconfig tap3 descr vmnet/web-1/0",
        "/sbin/ifconfig tap3 up",
        "/sbin/ifconfig tap create",
        "/sbin/ifconfig bridge0 addm tap4",
        "/sbin/ifconfig tap4 descr vmnet/web-1/1",
        "/sbin/ifconfig tap4 up",
    ];
    const CLEANUP: [&str; 3] = [DESTROY, "/sbin/ifconfig tap3 destroy", "/sbin/ifconfig tap4 destroy"];

    #[test]
    fn start_destroys_a_stale_vm_then_makes_taps_then_runs_bhyve() {
        let fx = Fixture::new();
        fx.create_vmm_entry();
        let run = fx.start(Reply::Runs { on_term: None });
        let commands = fx.runner.commands();
        assert_eq!(commands[0], DESTROY);
        assert_eq!(commands[1..9], TAP_SETUP);
        assert_eq!(
            commands[9..],
            ["/usr/sbin/bhyve -c 2 -m 1024M -H -A -P -w -u -U 6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b \
              -s 0,hostbridge -s 31,lpc -l com1,/dev/nmdmweb-1A \
              -l bootrom,/usr/local/share/uefi-firmware/BHYVE_UEFI.fd \
              -s 4:0,virtio-blk,/dev/zvol/zones/web-1/disk0 -s 5:0,virtio-blk,/dev/zvol/zones/seed,ro \
              -s 6:0,virtio-net,tap3,mac=58:9c:fc:00:00:01 \
              -s 6:1,virtio-net,tap4,mac=58:9c:fc:00:00:02 web-1"]
        );
        assert_eq!(fx.runner.live_processes(), [run.pid()]);
        assert_eq!(run.console(), ConsoleEndpoint::Device("/dev/nmdmweb-1B".into()));
    }

    #[test]
    fn bhyveload_guests_are_loaded_first_and_get_no_bootrom() {
        let fx = Fixture::new();
        let mut spec = fx.spec();
        spec.firmware = Firmware::Bhyveload;
        fx.expect_taps();
        fx.bhyve.start(&spec).unwrap();
        let commands = fx.runner.commands();
        assert_eq!(commands[..8], TAP_SETUP, "no stale VM to destroy");
        assert_eq!(
            commands[8],
            "/usr/sbin/bhyveload -c /dev/nmdmweb-1A -m 1024M \
             -e smbios.system.uuid=6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b -d /dev/zvol/zones/web-1/disk0 web-1"
        );
        assert!(commands[9].starts_with(BHYVE) && !commands[9].contains("bootrom"), "{}", commands[9]);
        assert_eq!(commands.len(), 10);
    }

    #[test]
    fn bios_guests_boot_the_csm_bootrom() {
        let fx = Fixture::new();
        let mut spec = fx.spec();
        spec.firmware = Firmware::Bios;
        spec.nics.clear();
        fx.bhyve.start(&spec).unwrap();
        let commands = fx.runner.commands();
        assert_eq!(commands.len(), 1, "{commands:?}");
        assert!(
            commands[0].contains(" -l bootrom,/usr/local/share/uefi-firmware/BHYVE_UEFI_CSM.fd "),
            "{}",
            commands[0]
        );
    }

    #[test]
    fn a_failed_bhyve_start_undoes_the_taps_and_the_vm() {
        let fx = Fixture::new();
        fx.expect_taps();
        fx.runner.expect(BHYVE, Reply::Fail("exec format error".into()));
        let error = fx.bhyve.start(&fx.spec()).err().expect("start fails");
        assert!(matches!(error, HypervisorError::Command(ExecError::Start { .. })), "{error}");
        assert_eq!(fx.commands_after(9), CLEANUP);
    }

    #[test]
    fn a_failed_bhyveload_undoes_the_taps_and_the_vm_and_runs_no_bhyve() {
        let fx = Fixture::new();
        let mut spec = fx.spec();
        spec.firmware = Firmware::Bhyveload;
        fx.expect_taps();
        fx.runner.expect("/usr/sbin/bhyveload", Reply::Fail("no bootable partition".into()));
        assert!(fx.bhyve.start(&spec).is_err());
        assert!(fx.commands_after(8)[0].starts_with("/usr/sbin/bhyveload "));
        assert_eq!(fx.commands_after(9), CLEANUP);
    }

    #[test]
    fn a_failed_tap_setup_destroys_the_taps_made_so_far_and_nothing_else() {
        let fx = Fixture::new();
        fx.expect_taps();
        fx.runner.expect("/sbin/ifconfig bridge0 addm tap4", Reply::Fail("no such bridge".into()));
        assert!(fx.bhyve.start(&fx.spec()).is_err());
        assert_eq!(
            fx.commands_after(5),
            [
                "/sbin/ifconfig bridge0 addm tap4",
                "/sbin/ifconfig tap3 destroy",
                "/sbin/ifconfig tap4 destroy"
            ]
        );
    }

    #[test]
    fn unparsable_tap_names_fail_the_start() {
        let fx = Fixture::new();
        fx.runner.expect(TAP_CREATE, Reply::Ok(String::new()));
        let error = fx.bhyve.start(&fx.spec()).err().expect("start fails");
        assert!(error.to_string().contains("printed no interface name"), "{error}");
        assert_eq!(fx.runner.commands(), [TAP_CREATE]);
    }

    #[test]
    fn unsupported_specs_fail_before_touching_the_host() {
        let fx = Fixture::new();
        fx.create_vmm_entry();
        let mut qcow2 = fx.spec();
        qcow2.disks[1].format = DiskFormat::Qcow2;
        let mut user_net = fx.spec();
        user_net.nics[1].network = VmNetwork::User;
        let mut many_nics = fx.spec();
        many_nics.nics = vec![many_nics.nics[0].clone(); 9];
        let mut diskless_freebsd = fx.spec();
        diskless_freebsd.firmware = Firmware::Bhyveload;
        diskless_freebsd.disks.clear();
        for spec in [qcow2, user_net, many_nics, diskless_freebsd] {
            let error = fx.bhyve.start(&spec).err().expect("start fails");
            assert!(matches!(error, HypervisorError::Unsupported { hypervisor: "bhyve", .. }), "{error}");
        }
        assert_eq!(fx.runner.commands(), Vec::<String>::new());
    }

    #[test]
    fn wait_maps_exits_and_always_cleans_up() {
        let cases = [
            (ProcessExit::Code(0), RunEnd::Exited(0)),
            (ProcessExit::Code(1), RunEnd::Exited(1)),
            (ProcessExit::Code(2), RunEnd::Exited(2)),
            (ProcessExit::Code(3), RunEnd::Exited(3)),
            (ProcessExit::Code(4), RunEnd::Exited(4)),
            (ProcessExit::Signal(libc::SIGSEGV), RunEnd::Signaled),
        ];
        for (exit, expected) in cases {
            let fx = Fixture::new();
            let run = fx.start(Reply::Exits(exit));
            assert_eq!(run.wait(), expected);
            assert_eq!(fx.commands_after(9), CLEANUP, "{exit:?}");
        }
    }

    #[test]
    fn wait_destroys_the_taps_even_when_the_vm_is_already_gone() {
        let fx = Fixture::new();
        let run = fx.start(Reply::Exits(ProcessExit::Code(1)));
        fx.runner.expect(DESTROY, Reply::Fail("vm_open: web-1 could not be opened".into()));
        assert_eq!(run.wait(), RunEnd::Exited(1));
        assert_eq!(fx.commands_after(9), CLEANUP);
    }

    #[test]
    fn request_poweroff_presses_the_power_button() {
        let fx = Fixture::new();
        let run = fx.start(Reply::Runs { on_term: Some(ProcessExit::Code(1)) });
        let pid = run.pid();
        assert_eq!(fx.runner.live_processes(), [pid]);
        run.control().request_poweroff().unwrap();
        assert_eq!(fx.commands_after(9), [format!("kill -TERM {pid}")]);
        assert_eq!(fx.runner.live_processes(), Vec::<u32>::new());
        assert_eq!(run.wait(), RunEnd::Exited(1));
    }

    #[test]
    fn force_poweroff_ends_a_guest_that_ignores_the_button() {
        let fx = Fixture::new();
        let run = fx.start(Reply::Runs { on_term: None });
        let control = run.control();
        control.request_poweroff().unwrap();
        assert_eq!(fx.runner.live_processes(), [run.pid()], "the guest ignores the button");
        fx.runner.expect(
            "/usr/sbin/bhyvectl --vm=web-1 --force-poweroff",
            Reply::EndsProcess(ProcessExit::Code(1)),
        );
        control.force_poweroff().unwrap();
        assert_eq!(fx.runner.live_processes(), Vec::<u32>::new());
        assert_eq!(fx.commands_after(10), ["/usr/sbin/bhyvectl --vm=web-1 --force-poweroff"]);
        assert_eq!(run.wait(), RunEnd::Exited(1));
    }

    #[test]
    fn force_poweroff_kills_bhyve_when_bhyvectl_fails() {
        let fx = Fixture::new();
        let run = fx.start(Reply::Runs { on_term: None });
        let pid = run.pid();
        fx.runner
            .expect("/usr/sbin/bhyvectl --vm=web-1 --force-poweroff", Reply::Fail("ioctl failed".into()));
        run.control().force_poweroff().unwrap();
        assert_eq!(
            fx.commands_after(9),
            ["/usr/sbin/bhyvectl --vm=web-1 --force-poweroff".to_string(), format!("kill -KILL {pid}")]
        );
        assert_eq!(run.wait(), RunEnd::Signaled);
        assert_eq!(fx.commands_after(11), CLEANUP);
    }

    #[test]
    fn reset_ends_the_run_as_a_reboot() {
        let fx = Fixture::new();
        let run = fx.start(Reply::Runs { on_term: None });
        fx.runner
            .expect("/usr/sbin/bhyvectl --vm=web-1 --force-reset", Reply::EndsProcess(ProcessExit::Code(0)));
        run.control().reset().unwrap();
        assert_eq!(fx.commands_after(9), ["/usr/sbin/bhyvectl --vm=web-1 --force-reset"]);
        assert_eq!(run.wait(), RunEnd::Exited(0));
    }

    #[test]
    fn buttons_of_an_ended_run_do_nothing() {
        let fx = Fixture::new();
        let run = fx.start(Reply::Exits(ProcessExit::Code(1)));
        let control = run.control();
        assert_eq!(run.wait(), RunEnd::Exited(1));
        let recorded = fx.runner.commands().len();
        control.request_poweroff().unwrap();
        control.force_poweroff().unwrap();
        control.reset().unwrap();
        assert_eq!(fx.runner.commands().len(), recorded, "{:?}", fx.commands_after(recorded));
    }

    #[test]
    fn adopt_needs_the_vm_in_the_kernel() {
        let fx = Fixture::new();
        fx.runner.expect("/bin/ps -p 4242", Reply::Ok("bhyve\n".into()));
        assert!(fx.bhyve.adopt(&fx.spec(), 4242).unwrap().is_none());
        assert_eq!(fx.runner.commands(), Vec::<String>::new());
    }

    #[test]
    fn adopt_needs_the_bhyve_process() {
        let fx = Fixture::new();
        fx.create_vmm_entry();
        fx.runner.expect("/bin/ps -p 4242", Reply::Fail(String::new()));
        assert!(fx.bhyve.adopt(&fx.spec(), 4242).unwrap().is_none(), "no such process");
        fx.runner.expect("/bin/ps -p 4242", Reply::Ok("sshd\n".into()));
        assert!(fx.bhyve.adopt(&fx.spec(), 4242).unwrap().is_none(), "the pid was reused");
        assert_eq!(fx.runner.commands(), ["/bin/ps -p 4242 -o comm=", "/bin/ps -p 4242 -o comm="]);
    }

    #[test]
    fn an_adopted_run_ends_when_its_vm_is_gone() {
        let fx = Fixture::new();
        fx.create_vmm_entry();
        for _ in 0..10_000 {
            fx.runner.expect("/bin/ps -p 4242", Reply::Ok("bhyve\n".into()));
        }
        let listing = "tap3: flags=1008943<UP> metric 0 mtu 1500\n\tdescription: vmnet/web-1/0\n\
                       tap5: flags=1008943<UP> metric 0 mtu 1500\n\tdescription: vmnet/web-10/0\n\
                       tap4: flags=1008943<UP> metric 0 mtu 1500\n\tdescription: vmnet/web-1/1\n";
        fx.runner.expect("/sbin/ifconfig", Reply::Ok(listing.into()));
        let run = fx.bhyve.adopt(&fx.spec(), 4242).unwrap().expect("adopted");
        assert_eq!(run.pid(), 4242);
        assert_eq!(run.console(), ConsoleEndpoint::Device("/dev/nmdmweb-1B".into()));
        let (sender, receiver) = mpsc::channel();
        let waiter = std::thread::spawn(move || sender.send(run.wait()).unwrap());
        assert!(receiver.recv_timeout(Duration::from_millis(100)).is_err(), "still running");
        std::fs::remove_file(fx.vmm_entry()).unwrap();
        assert_eq!(receiver.recv_timeout(Duration::from_secs(10)).unwrap(), RunEnd::Unknown);
        waiter.join().unwrap();
        let commands = fx.runner.commands();
        assert!(commands.len() > 2, "polled the process: {commands:?}");
        assert_eq!(
            commands[commands.len() - 3..],
            [DESTROY, "/sbin/ifconfig tap3 destroy", "/sbin/ifconfig tap4 destroy"],
            "the taps found by their descriptions go, another VM's stays"
        );
    }

    #[test]
    fn an_adopted_run_ends_when_its_process_is_gone() {
        let fx = Fixture::new();
        fx.create_vmm_entry();
        fx.runner.expect("/bin/ps -p 4242", Reply::Ok("bhyve\n".into()));
        fx.runner.expect("/bin/ps -p 4242", Reply::Ok("bhyve\n".into()));
        fx.runner.expect("/bin/ps -p 4242", Reply::Fail(String::new()));
        let run = fx.bhyve.adopt(&fx.spec(), 4242).unwrap().expect("adopted");
        assert_eq!(run.wait(), RunEnd::Unknown);
        assert_eq!(
            fx.runner.commands()[1..],
            ["/sbin/ifconfig", "/bin/ps -p 4242 -o comm=", "/bin/ps -p 4242 -o comm=", DESTROY]
        );
    }
}
