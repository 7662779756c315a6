//! The instance manager: creates, starts, stops, reboots and destroys instances, runs one
//! supervisor thread per running instance, and at start-up reconciles the persisted records
//! with the VMs really running. Every state change goes through the transition table in
//! `state.rs` and is persisted before it is visible.

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use service_kit::lock;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::error_code::ErrorCode;

use super::console::{self, Console};
use super::disks::{check_snapshot_name, DiskError, InstanceDisks};
use super::record::{self, InstanceRecord, NicNetwork, NicRecord, NicRequest};
use super::state::{exit_event, Event, InstanceState, Refused};
use crate::guest::listener::{Lookup, MetadataListener};
use crate::guest::{nocloud, GuestConfig, GuestUpdate};
use crate::hypervisor::{
    DiskFormat, Firmware, Hypervisor, HypervisorError, RunEnd, VmControl, VmDisk, VmNetwork, VmNic, VmRun,
    VmSpec,
};
use crate::iso::{IsoError, IsoStore};
use crate::network::{SwitchError, Switches};
use crate::storage::{ContentKind, ImageStorage, LocalImage, StorageError};

/// Reboots allowed within [`CRASH_LOOP_WINDOW`] before a rebooting instance is marked failed.
const CRASH_LOOP_LIMIT: usize = 5;
const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(60);
/// After a forced poweroff, how long to wait for the process before killing it.
const FORCE_GRACE: Duration = Duration::from_secs(10);
const MIB: u64 = 1024 * 1024;

/// Instance-related settings from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Per-instance runtime directories (sockets, hypervisor output): `<run_dir>/<uuid>`.
    pub run_dir: PathBuf,
    /// Console logs (`<uuid>.log`) and the record of destroyed instances.
    pub state_dir: PathBuf,
    /// How long a guest gets to power off after the ACPI button before it is forced.
    pub stop_timeout: Duration,
    pub console_ring_bytes: usize,
    pub console_log_max_bytes: u64,
    /// Installer ISOs instances can boot from.
    pub iso_dir: PathBuf,
}

/// What [`Instances::change_snapshot`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotChange {
    Create,
    Rollback,
    Delete,
}

/// The NoCloud seed disk, in the instance's run directory.
const SEED_FILE: &str = "cidata.img";
/// The metadata service's socket, in the instance's run directory.
const METADATA_SOCKET: &str = "metadata.sock";

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("instance {0} does not exist")]
    NotFound(Uuid),
    #[error("image {0} is not on this host (import it first)")]
    ImageNotFound(Uuid),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Refused(#[from] Refused),
    #[error("image {image} is used by instances {instances:?}")]
    ImageInUse { image: Uuid, instances: Vec<Uuid> },
    #[error("instance disk: {0}")]
    Disk(Box<DiskError>),
    #[error("hypervisor: {0}")]
    Hypervisor(Box<HypervisorError>),
    #[error("image storage: {0}")]
    Storage(Box<StorageError>),
    #[error("{0}")]
    Console(String),
    #[error("{0}")]
    Iso(#[from] IsoError),
    #[error("instance {instance} has no snapshot named {name:?}")]
    SnapshotNotFound { instance: Uuid, name: String },
    #[error("instance {instance} already has a snapshot named {name:?}")]
    SnapshotExists { instance: Uuid, name: String },
    #[error("publishing: {0}")]
    Publish(#[from] crate::publish::PublishError),
    #[error("ISO {iso:?} is attached to instances {instances:?}")]
    IsoInUse { iso: String, instances: Vec<Uuid> },
    #[error("{0}")]
    Switch(#[from] SwitchError),
    #[error("switch {switch:?} has NICs of instances {instances:?}")]
    SwitchInUse { switch: String, instances: Vec<Uuid> },
}

impl InstanceError {
    pub fn code(&self) -> ErrorCode {
        use crate::hypervisor::HypervisorError;
        match self {
            InstanceError::NotFound(_) => ErrorCode::InstanceNotFound,
            InstanceError::ImageNotFound(_) => ErrorCode::ImageNotFound,
            InstanceError::Invalid(_) => ErrorCode::InvalidParameter,
            InstanceError::Refused(refused) => refused.code(),
            InstanceError::ImageInUse { .. } => ErrorCode::ImageInUse,
            InstanceError::IsoInUse { .. } => ErrorCode::IsoInUse,
            InstanceError::SwitchInUse { .. } => ErrorCode::SwitchInUse,
            InstanceError::Switch(switch) => switch.code(),
            InstanceError::SnapshotNotFound { .. } => ErrorCode::SnapshotNotFound,
            InstanceError::SnapshotExists { .. } => ErrorCode::SnapshotExists,
            InstanceError::Publish(publish) => publish.code(),
            InstanceError::Iso(iso) => iso.code(),
            InstanceError::Storage(storage) => storage.code(),
            InstanceError::Hypervisor(h) if matches!(**h, HypervisorError::Unsupported { .. }) => {
                ErrorCode::NotSupported
            }
            InstanceError::Disk(disk) if disk.is_no_space() => ErrorCode::InsufficientStorage,
            InstanceError::Disk(_) | InstanceError::Hypervisor(_) | InstanceError::Console(_) => {
                ErrorCode::InternalError
            }
        }
    }
}

// Boxed: these carry command output, and every `Result` of the manager would pay for them.
impl From<DiskError> for InstanceError {
    fn from(e: DiskError) -> Self {
        InstanceError::Disk(Box::new(e))
    }
}

impl From<HypervisorError> for InstanceError {
    fn from(e: HypervisorError) -> Self {
        InstanceError::Hypervisor(Box::new(e))
    }
}

impl From<StorageError> for InstanceError {
    fn from(e: StorageError) -> Self {
        InstanceError::Storage(Box::new(e))
    }
}

/// What `create` is asked for.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// `None`: a blank disk of `disk_mib` (for an install from an ISO).
    pub image: Option<Uuid>,
    pub alias: Option<String>,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// `None`: the image's size.
    pub disk_mib: Option<u64>,
    /// One per NIC.
    pub nics: Vec<NicRequest>,
    pub firmware: Option<Firmware>,
    pub guest: GuestConfig,
    /// An installer ISO attached as a CD, and whether to boot from it.
    pub cdrom: Option<String>,
    pub boot_from_cdrom: bool,
    pub start: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Stop,
    Reboot,
}

/// The current run of a running instance.
struct RunHandle {
    control: Arc<dyn VmControl>,
    generation: u64,
}

struct Slot {
    record: Mutex<InstanceRecord>,
    changed: Condvar,
    run: Mutex<Option<RunHandle>>,
    /// What the API asked of the current run, and whether by force.
    request: Mutex<Option<(Request, bool)>>,
    console: Arc<Console>,
    /// Serialises start, stop and destroy decisions on this instance.
    op: Mutex<()>,
    /// The instance's metadata service, for as long as the instance exists.
    metadata: Mutex<Option<MetadataListener>>,
}

/// Disk operations need the VM stopped: the disk would change under the guest otherwise, and a
/// running guest's disk is not consistent to copy.
fn require_stopped(record: &InstanceRecord) -> Result<(), InstanceError> {
    match record.state {
        InstanceState::Stopped | InstanceState::Failed => Ok(()),
        InstanceState::Running => Err(Refused::Running.into()),
        InstanceState::Provisioning => Err(Refused::Provisioning.into()),
        InstanceState::Destroyed => Err(Refused::Destroyed.into()),
    }
}

/// Whether the instance has a NIC on the switch `name`.
fn on_switch(record: &InstanceRecord, name: &str) -> bool {
    record.nics.iter().any(|n| n.target() == NicNetwork::Switch(name))
}

impl Slot {
    fn snapshot(&self) -> InstanceRecord {
        lock(&self.record).clone()
    }
}

pub struct Instances {
    disks: Arc<dyn InstanceDisks>,
    hypervisor: Arc<dyn Hypervisor>,
    images: Arc<dyn ImageStorage>,
    settings: Settings,
    table: Mutex<BTreeMap<Uuid, Arc<Slot>>>,
    isos: Arc<IsoStore>,
    switches: Arc<Switches>,
    /// Set when the agent stops: supervisors let go of their VMs without acting.
    detached: AtomicBool,
    generations: AtomicU64,
}

impl Instances {
    /// Loads every instance and reconciles it with the hypervisor: a `running` instance whose
    /// VM still runs is adopted (its supervisor restarts), one whose VM is gone is `stopped`.
    pub fn open(
        disks: Arc<dyn InstanceDisks>,
        hypervisor: Arc<dyn Hypervisor>,
        images: Arc<dyn ImageStorage>,
        switches: Arc<Switches>,
        settings: Settings,
    ) -> Result<Arc<Self>, InstanceError> {
        for dir in [&settings.run_dir, &settings.state_dir] {
            fs::create_dir_all(dir)
                .map_err(|e| InstanceError::Console(format!("cannot create {}: {e}", dir.display())))?;
        }
        let isos = IsoStore::open(&settings.iso_dir)?;
        let instances = Arc::new(Instances {
            disks,
            hypervisor,
            images,
            isos,
            switches,
            settings,
            table: Mutex::new(BTreeMap::new()),
            detached: AtomicBool::new(false),
            generations: AtomicU64::new(0),
        });
        for record in instances.disks.load_all()? {
            instances.reconcile(record)?;
        }
        Ok(instances)
    }

    fn reconcile(self: &Arc<Self>, mut record: InstanceRecord) -> Result<(), InstanceError> {
        let uuid = record.uuid;
        let slot = self.new_slot(record.clone())?;
        lock(&self.table).insert(uuid, slot.clone());
        let adopted = match (record.state, record.pid) {
            (InstanceState::Running, Some(pid)) => {
                let spec = self.spec(&record)?;
                match self.hypervisor.adopt(&spec, pid) {
                    Ok(Some(run)) => Some((spec, run)),
                    Ok(None) => None,
                    Err(error) => {
                        tracing::warn!(%uuid, %error, "cannot adopt a running VM");
                        None
                    }
                }
            }
            _ => None,
        };
        match adopted {
            Some((spec, run)) => {
                tracing::info!(%uuid, pid = run.pid(), "adopted a running instance");
                self.supervise(slot, spec, run);
            }
            None if matches!(record.state, InstanceState::Running | InstanceState::Provisioning) => {
                tracing::info!(%uuid, "instance was not running when the agent started");
                record.pid = None;
                record.set_state(InstanceState::Stopped, "not running when the agent started");
                self.disks.save(&record)?;
                *lock(&slot.record) = record;
            }
            None => {}
        }
        Ok(())
    }

    fn new_slot(&self, record: InstanceRecord) -> Result<Arc<Slot>, InstanceError> {
        let log = self.settings.state_dir.join(format!("{}.log", record.uuid));
        let console =
            Console::open(&log, self.settings.console_ring_bytes, self.settings.console_log_max_bytes)
                .map_err(|e| InstanceError::Console(format!("cannot open {}: {e}", log.display())))?;
        let run_dir = self.settings.run_dir.join(record.uuid.to_string());
        let slot = Arc::new(Slot {
            record: Mutex::new(record),
            changed: Condvar::new(),
            run: Mutex::new(None),
            request: Mutex::new(None),
            console,
            op: Mutex::new(()),
            metadata: Mutex::new(None),
        });
        // The service answers from the record as it is at each request; a weak reference,
        // so that the listener (owned by the slot) does not keep its slot alive.
        let weak = Arc::downgrade(&slot);
        let lookup: Lookup = Arc::new(move || {
            let record = weak.upgrade()?.snapshot();
            let hostname = record.guest.effective_hostname(&record.alias, &record.vm_name);
            Some((record.uuid, hostname, record.guest))
        });
        let listener = fs::create_dir_all(&run_dir)
            .and_then(|()| MetadataListener::start(&run_dir.join(METADATA_SOCKET), lookup));
        match listener {
            Ok(listener) => *lock(&slot.metadata) = Some(listener),
            // Not fatal: the guest still has its NoCloud seed.
            Err(error) => tracing::warn!(dir = %run_dir.display(), %error, "no metadata service"),
        }
        Ok(slot)
    }

    fn slot(&self, uuid: &Uuid) -> Result<Arc<Slot>, InstanceError> {
        lock(&self.table).get(uuid).cloned().ok_or(InstanceError::NotFound(*uuid))
    }

    pub fn hypervisor_kind(&self) -> &'static str {
        self.hypervisor.kind()
    }

    pub fn list(&self) -> Vec<InstanceRecord> {
        lock(&self.table).values().map(|slot| slot.snapshot()).collect()
    }

    pub fn get(&self, uuid: &Uuid) -> Result<InstanceRecord, InstanceError> {
        Ok(self.slot(uuid)?.snapshot())
    }

    pub fn console(&self, uuid: &Uuid) -> Result<Arc<Console>, InstanceError> {
        Ok(self.slot(uuid)?.console.clone())
    }

    /// The instances created from `image`.
    pub fn users_of(&self, image: &Uuid) -> Vec<Uuid> {
        self.instances_where(|r| r.image == Some(*image))
    }

    fn instances_where(&self, keep: impl Fn(&InstanceRecord) -> bool) -> Vec<Uuid> {
        lock(&self.table).values().map(|s| s.snapshot()).filter(|r| keep(r)).map(|r| r.uuid).collect()
    }

    /// Fails with `ImageInUse` while instances use `image`.
    pub fn check_image_unused(&self, image: &Uuid) -> Result<(), InstanceError> {
        let instances = self.users_of(image);
        if instances.is_empty() {
            Ok(())
        } else {
            Err(InstanceError::ImageInUse { image: *image, instances })
        }
    }

    fn validate(&self, request: &CreateRequest, image: Option<&LocalImage>) -> Result<u64, InstanceError> {
        let invalid = |m: String| Err(InstanceError::Invalid(m));
        if !(1..=64).contains(&request.vcpus) {
            return invalid(format!("vcpus must be between 1 and 64, not {}", request.vcpus));
        }
        if !(32..=1024 * 1024).contains(&request.memory_mib) {
            return invalid(format!("memory must be between 32 and 1048576 MiB, not {}", request.memory_mib));
        }
        if let Some(alias) = &request.alias {
            if alias.is_empty() || alias.len() > 64 || alias.chars().any(|c| c.is_control()) {
                return invalid("alias must be 1 to 64 printable characters".into());
            }
        }
        if request.nics.len() > 8 {
            return invalid("at most 8 NICs".into());
        }
        // MACs and switches are checked against the other instances and switches in `create`,
        // under the table lock.
        for nic in &request.nics {
            nic.check().map_err(InstanceError::Invalid)?;
        }
        request.guest.validate().map_err(InstanceError::Invalid)?;
        self.check_cdrom(request.cdrom.as_deref(), request.boot_from_cdrom)?;
        // The larger of the manifest's `image_size` and the raw disk really stored: a manifest
        // that understates its disk must not give instances a truncated copy of it.
        let Some(image) = image else {
            return match request.disk_mib {
                Some(disk) if (1..=64 * 1024 * 1024).contains(&disk) => Ok(disk),
                Some(_) => invalid("disk must be between 1 MiB and 64 TiB".into()),
                None => {
                    invalid("an instance without an image needs disk_mib: the size of its blank disk".into())
                }
            };
        };
        let stored_mib = (image.content == ContentKind::RawDisk).then(|| image.content_size.div_ceil(MIB));
        let image_mib = image.meta.image_size_mib.max(stored_mib).unwrap_or(0);
        match request.disk_mib {
            Some(disk) if disk < image_mib => {
                invalid(format!("disk must be at least the image's {image_mib} MiB, not {disk} MiB"))
            }
            Some(disk) if disk > 64 * 1024 * 1024 => invalid("disk must be at most 64 TiB".into()),
            Some(disk) => Ok(disk),
            None => Ok(image_mib),
        }
    }

    /// Creates an instance (and starts it when asked). Blocking.
    pub fn create(self: &Arc<Self>, request: CreateRequest) -> Result<InstanceRecord, InstanceError> {
        let image = match request.image {
            Some(uuid) => Some(self.images.get(&uuid)?.ok_or(InstanceError::ImageNotFound(uuid))?),
            None => None,
        };
        let disk_mib = self.validate(&request, image.as_ref())?;
        let (uuid, record, slot) = {
            let mut table = lock(&self.table);
            let existing: Vec<InstanceRecord> = table.values().map(|s| s.snapshot()).collect();
            let mut uuid = Uuid::new_v4();
            while existing.iter().any(|r| r.vm_name == InstanceRecord::vm_name_for(&uuid)) {
                uuid = Uuid::new_v4();
            }
            let owner_of = |mac: &str| existing.iter().find(|r| r.nics.iter().any(|n| n.mac == mac));
            let mut nics: Vec<NicRecord> = Vec::new();
            for nic in &request.nics {
                if let NicNetwork::Switch(name) = nic.target() {
                    // Under the table lock, which a switch's deletion holds.
                    self.switches.get(name).map_err(|e| InstanceError::Invalid(e.to_string()))?;
                }
                let mac = match nic.check().map_err(InstanceError::Invalid)? {
                    Some(mac) if nics.iter().any(|n| n.mac == mac) => {
                        return Err(InstanceError::Invalid(format!("MAC {mac} is given to two NICs")));
                    }
                    Some(mac) => match owner_of(&mac) {
                        Some(owner) => {
                            return Err(InstanceError::Invalid(format!(
                                "MAC {mac} is taken by instance {}",
                                owner.uuid
                            )));
                        }
                        None => mac,
                    },
                    None => {
                        let asked = |mac: &str| {
                            request
                                .nics
                                .iter()
                                .any(|n| n.mac.as_deref().is_some_and(|m| m.eq_ignore_ascii_case(mac)))
                        };
                        let mut mac = record::random_mac();
                        while owner_of(&mac).is_some() || nics.iter().any(|n| n.mac == mac) || asked(&mac) {
                            mac = record::random_mac();
                        }
                        mac
                    }
                };
                nics.push(NicRecord { mac, network: nic.network.clone(), vlan: nic.vlan });
            }
            let mut record = InstanceRecord {
                uuid,
                alias: request.alias.clone().unwrap_or_else(|| InstanceRecord::vm_name_for(&uuid)),
                image: image.as_ref().map(|i| i.meta.uuid),
                vcpus: request.vcpus,
                memory_mib: request.memory_mib,
                disk_mib,
                nics,
                firmware: request.firmware.unwrap_or_default(),
                vm_name: InstanceRecord::vm_name_for(&uuid),
                state: InstanceState::Provisioning,
                reason: String::new(),
                pid: None,
                created_at: record::now(),
                history: Vec::new(),
                guest: request.guest.clone(),
                cdrom: request.cdrom.clone(),
                boot_from_cdrom: request.boot_from_cdrom,
            };
            let from = match &image {
                Some(image) => format!("creating from image {}", image.meta.uuid),
                None => format!("creating with a blank {disk_mib} MiB disk"),
            };
            record.set_state(InstanceState::Provisioning, from);
            let slot = self.new_slot(record.clone())?;
            table.insert(uuid, slot.clone());
            (uuid, record, slot)
        };
        let mut provisioned = record;
        let next = provisioned.state.apply(Event::Provisioned)?;
        provisioned.set_state(next, "created");
        if let Err(error) = self.disks.create(&provisioned, image.as_ref()) {
            lock(&self.table).remove(&uuid);
            slot.console.close();
            lock(&slot.metadata).take();
            let _ = fs::remove_dir_all(self.settings.run_dir.join(uuid.to_string()));
            let _ = fs::remove_file(self.settings.state_dir.join(format!("{uuid}.log")));
            return Err(error.into());
        }
        self.publish(&slot, provisioned.clone());
        tracing::info!(%uuid, image = ?provisioned.image, "instance created");
        if request.start {
            return self.start(&uuid);
        }
        Ok(provisioned)
    }

    fn publish(&self, slot: &Slot, record: InstanceRecord) {
        *lock(&slot.record) = record;
        slot.changed.notify_all();
    }

    /// Saves, then makes visible.
    fn commit(&self, slot: &Slot, record: InstanceRecord) -> Result<(), InstanceError> {
        self.disks.save(&record)?;
        self.publish(slot, record);
        Ok(())
    }

    fn spec(&self, record: &InstanceRecord) -> Result<VmSpec, InstanceError> {
        let run_dir = self.settings.run_dir.join(record.uuid.to_string());
        fs::create_dir_all(&run_dir)
            .map_err(|e| HypervisorError::io(format!("cannot create {}", run_dir.display()), e))?;
        let mut nics = Vec::with_capacity(record.nics.len());
        for nic in &record.nics {
            let network = match nic.target() {
                NicNetwork::User => VmNetwork::User,
                NicNetwork::Bridge(bridge) => VmNetwork::Bridge(bridge.to_string()),
                NicNetwork::Switch(name) => VmNetwork::Bridge(self.switches.get(name)?.bridge_for(nic.vlan)),
            };
            nics.push(VmNic { mac: nic.mac.clone(), network });
        }
        Ok(VmSpec {
            uuid: record.uuid,
            name: record.vm_name.clone(),
            vcpus: record.vcpus,
            memory_mib: record.memory_mib,
            disks: {
                let mut disks = self.disks.disks(record)?;
                // The NoCloud seed, written by `start` (read-only: the guest cannot change
                // what it is told).
                disks.push(VmDisk {
                    path: run_dir.join(SEED_FILE),
                    format: DiskFormat::Raw,
                    read_only: true,
                });
                disks
            },
            nics,
            firmware: record.firmware,
            cdrom: record.cdrom.as_deref().map(|name| self.isos.path(name)).transpose()?,
            boot_from_cdrom: record.boot_from_cdrom,
            metadata_socket: Some(run_dir.join(METADATA_SOCKET)),
            run_dir,
        })
    }

    /// Starts a stopped or failed instance. Blocking; returns once the VM process runs.
    pub fn start(self: &Arc<Self>, uuid: &Uuid) -> Result<InstanceRecord, InstanceError> {
        let slot = self.slot(uuid)?;
        let _op = lock(&slot.op);
        let mut record = slot.snapshot();
        let next = record.state.apply(Event::Start)?;
        let spec = self.spec(&record)?;
        self.write_seed(&record, &spec)?;
        self.bring_up_networks(&record)?;
        *lock(&slot.request) = None;
        let run = self.hypervisor.start(&spec)?;
        record.pid = Some(run.pid());
        record.set_state(next, "started");
        if let Err(error) = self.commit(&slot, record.clone()) {
            // Not persisted means not started: a restarted agent would not know the VM.
            let _ = run.control().force_poweroff();
            std::thread::spawn(move || run.wait());
            return Err(error);
        }
        tracing::info!(%uuid, pid = run.pid(), "instance started");
        self.supervise(slot.clone(), spec, run);
        Ok(record)
    }

    /// Makes the switches of the instance's NICs ready on the host: their bridges and those
    /// of the NICs' VLANs exist, linked to the uplink.
    fn bring_up_networks(&self, record: &InstanceRecord) -> Result<(), InstanceError> {
        let mut switches: BTreeMap<&str, Vec<u16>> = BTreeMap::new();
        for nic in &record.nics {
            match nic.target() {
                NicNetwork::Switch(name) => switches.entry(name).or_default().extend(nic.vlan),
                NicNetwork::Bridge(_) | NicNetwork::User => {}
            }
        }
        for (name, mut vlans) in switches {
            vlans.sort_unstable();
            vlans.dedup();
            self.switches.bring_up(name, &vlans)?;
        }
        Ok(())
    }

    pub fn switches(&self) -> &Arc<Switches> {
        &self.switches
    }

    /// The instances with a NIC on the switch `name`.
    pub fn switch_users(&self, name: &str) -> Vec<Uuid> {
        self.instances_where(|r| on_switch(r, name))
    }

    /// Deletes an API-made switch, refused while a NIC is on it.
    pub fn delete_switch(&self, name: &str) -> Result<(), InstanceError> {
        // Under the table lock: no instance can be created on the switch meanwhile.
        let table = lock(&self.table);
        let instances: Vec<Uuid> =
            table.values().map(|s| s.snapshot()).filter(|r| on_switch(r, name)).map(|r| r.uuid).collect();
        if !instances.is_empty() {
            return Err(InstanceError::SwitchInUse { switch: name.to_string(), instances });
        }
        self.switches.delete(name)?;
        drop(table);
        Ok(())
    }

    /// Writes the instance's NoCloud seed from its current guest configuration.
    fn write_seed(&self, record: &InstanceRecord, spec: &VmSpec) -> Result<(), InstanceError> {
        let hostname = record.guest.effective_hostname(&record.alias, &record.vm_name);
        let files = nocloud::seed_files(&record.uuid, &hostname, &record.guest);
        let path = spec.run_dir.join(SEED_FILE);
        nocloud::write_seed(&path, &files).map_err(|e| {
            HypervisorError::io(format!("cannot write the NoCloud seed {}", path.display()), e).into()
        })
    }

    pub fn isos(&self) -> &Arc<IsoStore> {
        &self.isos
    }

    /// The instances that have the ISO `name` attached.
    pub fn iso_users(&self, name: &str) -> Vec<Uuid> {
        self.instances_where(|r| r.cdrom.as_deref() == Some(name))
    }

    /// Fails with `IsoInUse` while an instance has the ISO attached.
    pub fn check_iso_unused(&self, name: &str) -> Result<(), InstanceError> {
        let instances = self.iso_users(name);
        if instances.is_empty() {
            Ok(())
        } else {
            Err(InstanceError::IsoInUse { iso: name.to_string(), instances })
        }
    }

    fn check_cdrom(&self, cdrom: Option<&str>, boot_from_cdrom: bool) -> Result<(), InstanceError> {
        match cdrom {
            Some(name) => self.isos.path(name).map(drop).map_err(InstanceError::from),
            None if boot_from_cdrom => {
                Err(InstanceError::Invalid("booting from the CD needs an ISO attached".into()))
            }
            None => Ok(()),
        }
    }

    /// Attaches an ISO as the instance's CD (or detaches it with `None`), and says whether to
    /// boot from it; the guest sees it from its next start.
    pub fn set_cdrom(
        &self,
        uuid: &Uuid,
        cdrom: Option<String>,
        boot_from_cdrom: bool,
    ) -> Result<InstanceRecord, InstanceError> {
        let slot = self.slot(uuid)?;
        let _op = lock(&slot.op);
        self.check_cdrom(cdrom.as_deref(), boot_from_cdrom)?;
        let mut record = slot.snapshot();
        record.cdrom = cdrom;
        record.boot_from_cdrom = boot_from_cdrom;
        self.commit(&slot, record.clone())?;
        Ok(record)
    }

    /// Publishes a stopped instance's disk as a new image on `source`; returns its manifest.
    /// Blocking, for as long as compressing and uploading the disk takes.
    pub fn publish_image(
        &self,
        uuid: &Uuid,
        source: &crate::source::Source,
        info: &crate::publish::ImageInfo,
    ) -> Result<serde_json::Value, InstanceError> {
        let slot = self.slot(uuid)?;
        // Held throughout: the instance cannot start (and change its disk) while it is read.
        let _op = lock(&slot.op);
        let record = slot.snapshot();
        require_stopped(&record)?;
        let export = self.disks.export_raw(&record)?;
        let published = crate::publish::publish(source, info, &export.path, record.disk_mib);
        if export.temporary {
            let _ = fs::remove_file(&export.path);
        }
        let manifest = published?;
        tracing::info!(%uuid, image = %manifest["uuid"], source = %source.base, "instance published as an image");
        Ok(manifest)
    }

    /// The instance's disk snapshots, oldest first.
    pub fn snapshots(&self, uuid: &Uuid) -> Result<Vec<String>, InstanceError> {
        let record = self.slot(uuid)?.snapshot();
        Ok(self.disks.snapshots(&record)?)
    }

    /// Snapshots, rolls back to or deletes a snapshot of a stopped instance's disk.
    pub fn change_snapshot(
        &self,
        uuid: &Uuid,
        change: SnapshotChange,
        name: &str,
    ) -> Result<Vec<String>, InstanceError> {
        let slot = self.slot(uuid)?;
        let _op = lock(&slot.op);
        let record = slot.snapshot();
        require_stopped(&record)?;
        check_snapshot_name(name).map_err(|e| InstanceError::Invalid(e.to_string()))?;
        let exists = self.disks.snapshots(&record)?.iter().any(|s| s == name);
        let (instance, name_owned) = (record.uuid, name.to_string());
        match (change, exists) {
            (SnapshotChange::Create, true) => {
                return Err(InstanceError::SnapshotExists { instance, name: name_owned })
            }
            (SnapshotChange::Rollback | SnapshotChange::Delete, false) => {
                return Err(InstanceError::SnapshotNotFound { instance, name: name_owned })
            }
            (SnapshotChange::Create, false) => self.disks.snapshot(&record, name)?,
            (SnapshotChange::Rollback, true) => self.disks.rollback(&record, name)?,
            (SnapshotChange::Delete, true) => self.disks.delete_snapshot(&record, name)?,
        }
        tracing::info!(%uuid, ?change, snapshot = name, "instance snapshot changed");
        Ok(self.disks.snapshots(&record)?)
    }

    /// Changes the guest configuration of an instance; the guest sees it from its next start.
    pub fn update_guest(&self, uuid: &Uuid, update: GuestUpdate) -> Result<InstanceRecord, InstanceError> {
        let slot = self.slot(uuid)?;
        let _op = lock(&slot.op);
        let mut record = slot.snapshot();
        let guest = record.guest.updated(update);
        guest.validate().map_err(InstanceError::Invalid)?;
        record.guest = guest;
        self.commit(&slot, record.clone())?;
        Ok(record)
    }

    /// Asks a running instance to power off (ACPI), forcing it after the stop timeout; `force`
    /// powers it off at once. Returns without waiting (see [`Instances::wait_while_running`]).
    pub fn stop(self: &Arc<Self>, uuid: &Uuid, force: bool) -> Result<InstanceRecord, InstanceError> {
        self.request(uuid, Request::Stop, force)
    }

    /// Reboots a running instance: ACPI poweroff and start again (`force`: a hard reset).
    pub fn reboot(self: &Arc<Self>, uuid: &Uuid, force: bool) -> Result<InstanceRecord, InstanceError> {
        self.request(uuid, Request::Reboot, force)
    }

    fn request(
        self: &Arc<Self>,
        uuid: &Uuid,
        request: Request,
        force: bool,
    ) -> Result<InstanceRecord, InstanceError> {
        let slot = self.slot(uuid)?;
        let _op = lock(&slot.op);
        let record = slot.snapshot();
        // Both are changes of a running instance: the table decides (stop is the test).
        record.state.apply(Event::Stopped)?;
        // The request is recorded and the run looked up under the request lock, which the
        // supervisor also holds while it registers a run: exactly one of the two presses the
        // button (pressed twice, the second press finds the guest on its way out and forces it).
        let run = {
            let mut pending = lock(&slot.request);
            *pending = Some((request, force));
            lock(&slot.run).as_ref().map(|r| (r.control.clone(), r.generation))
        };
        // No run: the supervisor is between two runs and acts on the request itself.
        if let Some((control, generation)) = run {
            self.press(&slot, control, generation, request, force);
        }
        Ok(record)
    }

    /// Presses the button for `request` on the run `generation`, and arms the stop timeout.
    fn press(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        control: Arc<dyn VmControl>,
        generation: u64,
        request: Request,
        force: bool,
    ) {
        let uuid = slot.snapshot().uuid;
        let pressed = match (request, force) {
            (Request::Reboot, true) => control.reset(),
            (_, true) => control.force_poweroff(),
            (_, false) => control.request_poweroff(),
        };
        if let Err(error) = pressed {
            tracing::warn!(%uuid, %error, "the VM did not take the request; forcing it off");
            if let Err(error) = control.force_poweroff() {
                tracing::warn!(%uuid, %error, "cannot force the VM off");
            }
            return;
        }
        if force {
            return;
        }
        let timeout = self.settings.stop_timeout;
        let slot = slot.clone();
        std::thread::spawn(move || {
            let same_run = |slot: &Slot| lock(&slot.run).as_ref().is_some_and(|r| r.generation == generation);
            std::thread::sleep(timeout);
            if same_run(&slot) {
                tracing::warn!(%uuid, ?timeout, "the guest did not power off in time; forcing it");
                if let Err(error) = control.force_poweroff() {
                    tracing::warn!(%uuid, %error, "cannot force the VM off");
                }
            }
        });
    }

    /// Blocks until the instance is no longer `running` or `timeout` passes; returns it.
    pub fn wait_while_running(
        &self,
        uuid: &Uuid,
        timeout: Duration,
    ) -> Result<InstanceRecord, InstanceError> {
        let slot = self.slot(uuid)?;
        let record = lock(&slot.record);
        let (record, _) = slot
            .changed
            .wait_timeout_while(record, timeout, |r| r.state == InstanceState::Running)
            .unwrap_or_else(|e| e.into_inner());
        Ok(record.clone())
    }

    /// How long a stop may take, forced poweroff included.
    pub fn stop_deadline(&self) -> Duration {
        self.settings.stop_timeout + FORCE_GRACE + Duration::from_secs(5)
    }

    /// Destroys a stopped or failed instance: its disk, record and console log.
    pub fn destroy(&self, uuid: &Uuid) -> Result<(), InstanceError> {
        let slot = self.slot(uuid)?;
        let _op = lock(&slot.op);
        let mut record = slot.snapshot();
        let next = record.state.apply(Event::Destroy)?;
        self.disks.destroy(uuid)?;
        record.set_state(next, "destroyed");
        lock(&self.table).remove(uuid);
        self.publish(&slot, record.clone());
        slot.console.close();
        lock(&slot.metadata).take();
        let _ = fs::remove_file(self.settings.state_dir.join(format!("{uuid}.log")));
        let _ = fs::remove_file(self.settings.state_dir.join(format!("{uuid}.log.1")));
        let _ = fs::remove_dir_all(self.settings.run_dir.join(uuid.to_string()));
        self.remember_destroyed(&record);
        tracing::info!(%uuid, "instance destroyed");
        Ok(())
    }

    /// Appends a destroyed instance to `destroyed.jsonl`, the history of instances gone.
    fn remember_destroyed(&self, record: &InstanceRecord) {
        use std::io::Write;
        let path = self.settings.state_dir.join("destroyed.jsonl");
        let line = serde_json::to_string(record).unwrap_or_default();
        let written = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(error) = written {
            tracing::warn!(path = %path.display(), %error, "cannot record a destroyed instance");
        }
    }

    /// Destroyed instances, oldest first.
    pub fn destroyed(&self) -> Vec<InstanceRecord> {
        let text = fs::read_to_string(self.settings.state_dir.join("destroyed.jsonl")).unwrap_or_default();
        text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
    }

    /// The agent is stopping: supervisors let go of their VMs, which go on running, and
    /// control channels close so that the next agent process can adopt them.
    pub fn detach_all(&self) {
        self.detached.store(true, Ordering::SeqCst);
        for slot in lock(&self.table).values() {
            if let Some(run) = lock(&slot.run).as_ref() {
                run.control.detach();
            }
        }
    }

    fn supervise(self: &Arc<Self>, slot: Arc<Slot>, spec: VmSpec, run: Box<dyn VmRun>) {
        let instances = self.clone();
        let name = format!("supervise-{}", spec.name);
        let spawned =
            std::thread::Builder::new().name(name).spawn(move || instances.supervisor(slot, spec, run));
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start a supervisor thread");
        }
    }

    /// One instance's supervisor: watches each run, restarts on a guest reboot, and records
    /// how the instance ended.
    fn supervisor(self: Arc<Self>, slot: Arc<Slot>, spec: VmSpec, mut run: Box<dyn VmRun>) {
        let uuid = spec.uuid;
        let mut reboots: VecDeque<Instant> = VecDeque::new();
        loop {
            let generation = self.generations.fetch_add(1, Ordering::SeqCst);
            let control = run.control();
            let pending = {
                let pending = lock(&slot.request);
                *lock(&slot.run) = Some(RunHandle { control: control.clone(), generation });
                *pending
            };
            let pump_stop = Arc::new(AtomicBool::new(false));
            console::spawn_pump(slot.console.clone(), run.console(), pump_stop.clone());
            // A request that came while no run was up (between two runs) is acted on now.
            if let Some((request, force)) = pending {
                self.press(&slot, control, generation, request, force);
            }
            let end = run.wait();
            pump_stop.store(true, Ordering::SeqCst);
            *lock(&slot.run) = None;
            if self.detached.load(Ordering::SeqCst) {
                return;
            }
            let request = lock(&slot.request).take().map(|(request, _)| request);
            let Some(mut event) = exit_event(end, request == Some(Request::Stop)) else { return };
            if request == Some(Request::Reboot) && event == Event::Stopped {
                event = Event::Rebooted;
            }
            let mut reason = describe(end, request);
            if event == Event::Rebooted {
                let now = Instant::now();
                if request != Some(Request::Reboot) {
                    reboots.push_back(now);
                }
                while reboots.front().is_some_and(|t| now.duration_since(*t) > CRASH_LOOP_WINDOW) {
                    reboots.pop_front();
                }
                if reboots.len() > CRASH_LOOP_LIMIT {
                    event = Event::Faulted;
                    reason =
                        format!("rebooted more than {CRASH_LOOP_LIMIT} times within {CRASH_LOOP_WINDOW:?}");
                } else {
                    match self.hypervisor.start(&spec) {
                        Ok(next) => {
                            let mut record = slot.snapshot();
                            record.pid = Some(next.pid());
                            record.set_state(InstanceState::Running, reason);
                            if let Err(error) = self.commit(&slot, record) {
                                tracing::warn!(%uuid, %error, "cannot persist a reboot");
                            }
                            tracing::info!(%uuid, pid = next.pid(), "instance rebooted");
                            run = next;
                            continue;
                        }
                        Err(error) => {
                            event = Event::Faulted;
                            reason = format!("cannot start again after a reboot: {error}");
                        }
                    }
                }
            }
            let mut record = slot.snapshot();
            let next = record.state.apply(event).unwrap_or(InstanceState::Failed);
            record.pid = None;
            record.set_state(next, reason);
            tracing::info!(%uuid, state = ?record.state, reason = %record.reason, "instance run ended");
            if let Err(error) = self.commit(&slot, record.clone()) {
                tracing::error!(%uuid, %error, "cannot persist the end of a run");
                self.publish(&slot, record);
            }
            return;
        }
    }
}

/// Why a run ended, for people.
fn describe(end: RunEnd, request: Option<Request>) -> String {
    let what = match end {
        RunEnd::Exited(0) => "guest rebooted".to_string(),
        RunEnd::Exited(1) => "guest powered off".to_string(),
        RunEnd::Exited(2) => "guest halted".to_string(),
        RunEnd::Exited(3) => "guest triple fault (exit status 3)".to_string(),
        RunEnd::Exited(code) => format!("hypervisor error (exit status {code})"),
        RunEnd::Signaled => "hypervisor process killed".to_string(),
        RunEnd::Unknown => "VM ended while adopted by a restarted agent (exit status unknown)".to_string(),
        RunEnd::Detached => "agent let go".to_string(),
    };
    match request {
        Some(Request::Stop) => format!("stopped on request ({what})"),
        Some(Request::Reboot) => format!("rebooted on request ({what})"),
        None => what,
    }
}
