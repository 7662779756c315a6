//! The instance manager: creates, starts, stops, reboots and destroys instances, runs one
//! supervisor thread per running instance, and at start-up reconciles the persisted records
//! with the VMs really running. Every state change goes through the transition table in
//! `state.rs` and is persisted before it is visible.
//!
//! Here: the table of instances and what every operation shares (slots, specs, commits). Each
//! kind of operation has a module of its own:
//!
//! - `create`: checking a request and provisioning the instance;
//! - `lifecycle`: start, stop, reboot and destroy, and the stop timeout;
//! - `supervisor`: the thread that watches a run, restarts on a guest reboot and records how
//!   the instance ended;
//! - `guest`: the guest configuration and its NoCloud seed;
//! - `media`: installer ISOs attached as CDs;
//! - `networks`: switches the NICs are on;
//! - `snapshots`: disk snapshots, rollback, and publishing the disk as an image;
//! - `history`: destroyed instances, kept for listings;
//! - `errors`: [`InstanceError`].

mod create;
mod errors;
mod guest;
mod history;
mod lifecycle;
mod media;
mod networks;
mod snapshots;
mod supervisor;

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

pub use create::CreateRequest;
pub use errors::InstanceError;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Stop,
    Reboot,
}

/// How the agent ended a run itself, rather than the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forced {
    /// Powered off at once, as asked (`force`).
    OnRequest,
    /// Reset at once, as asked (a forced reboot).
    Reset,
    /// The guest had the power button pressed and did not power off within this long.
    AfterTimeout(Duration),
    /// The VM did not take the power button at all.
    ButtonRefused,
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
    /// How the agent cut the current run short, if it did: for the reason recorded.
    forced: Mutex<Option<Forced>>,
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
    history: Mutex<history::History>,
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
        let history_path = settings.state_dir.join("destroyed.jsonl");
        let instances = Arc::new(Instances {
            disks,
            hypervisor,
            images,
            isos,
            switches,
            settings,
            table: Mutex::new(BTreeMap::new()),
            history: Mutex::new(history::History::open(history_path, history::KEEP)),
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
                        tracing::warn!(%uuid, error = %service_kit::ErrorChain(&error), "cannot adopt a running VM");
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
            forced: Mutex::new(None),
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
            Err(error) => {
                tracing::warn!(dir = %run_dir.display(), error = %service_kit::ErrorChain(&error), "no metadata service")
            }
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
}
