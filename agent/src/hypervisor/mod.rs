//! The hypervisors instances run on, behind one trait chosen once at start-up: `bhyve`
//! (FreeBSD) and `qemu` (Linux). A backend knows how to start one *run* of a VM (one
//! hypervisor process, from power-on to exit), how to press its buttons, and how a run ended,
//! in bhyve's exit codes. What to do next (restart on reboot, stop, fail) is the supervisor's
//! business, shared by both (`instance::manager::supervisor`).

pub mod bhyve;
pub mod qemu;

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::host::runner::ExecError;

/// How the guest boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// Legacy BIOS boot (QEMU: SeaBIOS; bhyve: the UEFI-CSM bootrom), what most disk images
    /// with an MBR boot loader need.
    #[default]
    Bios,
    /// UEFI firmware.
    Uefi,
    /// bhyve only: FreeBSD's `bhyveload` loads the guest kernel from its disk.
    Bhyveload,
}

/// A disk as the hypervisor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDisk {
    pub path: PathBuf,
    pub format: DiskFormat,
    pub read_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// A raw file or a block device (zvol).
    Raw,
    /// A qcow2 overlay (QEMU only).
    Qcow2,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

/// How a NIC reaches a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmNetwork {
    /// A tap device created for this run and added to this host bridge.
    Bridge(String),
    /// QEMU user-mode networking, isolated from the host (`restrict=on`); no privileges needed.
    User,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmNic {
    /// `xx:xx:xx:xx:xx:xx`, stable for the instance's life.
    pub mac: String,
    pub network: VmNetwork,
}

/// Everything a backend needs to run an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// The instance uuid; also the SMBIOS system uuid the guest sees.
    pub uuid: Uuid,
    /// The hypervisor's name for the VM (`/dev/vmm/<name>` on FreeBSD): short and unique.
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// The boot disk first.
    pub disks: Vec<VmDisk>,
    pub nics: Vec<VmNic>,
    pub firmware: Firmware,
    /// A per-instance directory for sockets, pid files and the hypervisor's own output
    /// (`hypervisor.log`); it exists and survives agent restarts.
    pub run_dir: PathBuf,
    /// An ISO attached as a CD, and whether to boot from it.
    pub cdrom: Option<PathBuf>,
    pub boot_from_cdrom: bool,
    /// The Unix socket of the instance's metadata service, for backends that can forward the
    /// guest's connections to 169.254.169.254:80 there (QEMU user-mode networking).
    pub metadata_socket: Option<PathBuf>,
}

/// Where the serial console of a run is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleEndpoint {
    /// A Unix socket to connect to (QEMU `-chardev socket,server=on`).
    UnixSocket(PathBuf),
    /// A tty device to open read-write (the B side of a FreeBSD nmdm pair).
    Device(PathBuf),
}

/// How a run ended, in bhyve's terms (QEMU's QMP `SHUTDOWN` reasons are translated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// bhyve exit status: 0 rebooted, 1 powered off, 2 halted, 3 triple fault, 4 error.
    Exited(i32),
    /// Killed by a signal (a crash, or from outside).
    Signaled,
    /// Gone, but how is unknown (a run adopted from an earlier agent process, which was its
    /// parent).
    Unknown,
    /// The agent let go of the run (it is shutting down); the VM goes on.
    Detached,
}

#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    #[error(transparent)]
    Command(#[from] ExecError),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The VM's control channel (QMP) misbehaved.
    #[error("control channel: {0}")]
    Control(String),
    /// The spec asks for something this backend cannot do.
    #[error("not supported by {hypervisor}: {what}")]
    Unsupported { hypervisor: &'static str, what: String },
}

impl HypervisorError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        HypervisorError::Io { context: context.into(), source }
    }
}

/// The buttons of a running VM. Cheap to share; usable while another thread waits for the run.
pub trait VmControl: Send + Sync {
    /// Presses the ACPI power button (bhyve: SIGTERM; QEMU: `system_powerdown`). The guest
    /// decides what to do; the run ends when it powers off.
    fn request_poweroff(&self) -> Result<(), HypervisorError>;
    /// Powers off at once (bhyve: `bhyvectl --force-poweroff`; QEMU: `quit`), killing the
    /// process if that does not work.
    fn force_poweroff(&self) -> Result<(), HypervisorError>;
    /// Resets at once (bhyve: `bhyvectl --force-reset`; QEMU: `system_reset`): the run ends as
    /// a reboot.
    fn reset(&self) -> Result<(), HypervisorError>;
    /// Lets go of the VM without touching it, because the agent is stopping: a `wait` in
    /// progress returns [`RunEnd::Detached`] where the backend can interrupt it, and control
    /// channels close so that the next agent process can take them.
    fn detach(&self) {}
}

/// One run of a VM: one hypervisor process.
pub trait VmRun: Send {
    fn pid(&self) -> u32;
    fn control(&self) -> Arc<dyn VmControl>;
    fn console(&self) -> ConsoleEndpoint;
    /// Blocks until the run ends, cleans up after it (bhyve: `bhyvectl --destroy`, taps), and
    /// says how it ended.
    fn wait(self: Box<Self>) -> RunEnd;
}

/// A hypervisor backend.
pub trait Hypervisor: Send + Sync {
    /// `bhyve` or `qemu`.
    fn kind(&self) -> &'static str;
    /// Starts a run: whatever must precede it (bhyve: a stale VM destroyed, taps created,
    /// `bhyveload`), then the VM process. Fails without leaving anything behind.
    fn start(&self, spec: &VmSpec) -> Result<Box<dyn VmRun>, HypervisorError>;
    /// The run of `spec` that an earlier agent process started, if it is still going; `pid` is
    /// what that process recorded.
    fn adopt(&self, spec: &VmSpec, pid: u32) -> Result<Option<Box<dyn VmRun>>, HypervisorError>;
}
