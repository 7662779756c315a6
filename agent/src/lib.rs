//! The hypervisor host agent: imports images from IMGAPI sources into ZFS or disk files and
//! runs instances from them on bhyve or QEMU. `main.rs` only parses arguments; this builds the
//! daemon so that tests run exactly what production runs.

pub mod api;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod error_code;
pub mod guest;
pub mod host;
pub mod hypervisor;
pub mod import;
pub mod instance;
pub mod iso;
pub mod metrics;
pub mod network;
pub mod publish;
pub mod source;
pub mod storage;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::web;

use api::{AgentState, Credentials};
use config::{Config, HypervisorKind, StorageConfig, ZfsDialectConfig};
use host::runner::{CommandRunner, HostRunner};
use import::Importer;
use instance::disks::{FileDisks, InstanceDisks, ZfsDisks};
use instance::manager::{Instances, Settings};
pub use service_kit::Bound;
use source::SourceClient;
use storage::ImageStorage;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid sources")]
    Sources(#[from] source::SourceSetupError),
    #[error("cannot open the image storage")]
    Storage(#[from] storage::StorageError),
    #[error("cannot load the instances")]
    Instances(#[from] instance::manager::InstanceError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// The storage backend the config names, ready to use (crash leftovers removed).
pub fn open_storage(
    config: &Config,
    runner: Arc<dyn CommandRunner>,
) -> Result<Arc<dyn ImageStorage>, StartError> {
    let dialect = zfs_dialect;
    let storage: Arc<dyn ImageStorage> = match &config.storage {
        StorageConfig::Files { dir } => Arc::new(storage::files::FilesStorage::new(dir)?),
        StorageConfig::Zfs { parent, zvol_dir, dialect: d } => {
            let zfs = host::zfs::Zfs::new(runner, &config.commands.zfs, dialect(*d));
            Arc::new(
                storage::zfs::ZfsStorage::new(zfs, parent.clone(), storage::zfs::ZfsMode::Zvol)
                    .with_zvol_dir(zvol_dir),
            )
        }
        StorageConfig::ZfsFiles { parent, dialect: d } => {
            let zfs = host::zfs::Zfs::new(runner, &config.commands.zfs, dialect(*d));
            Arc::new(storage::zfs::ZfsStorage::new(zfs, parent.clone(), storage::zfs::ZfsMode::Files))
        }
    };
    for leftover in storage.recover()? {
        tracing::info!(leftover = %leftover, "removed an unfinished import");
    }
    Ok(storage)
}

fn zfs_dialect(d: ZfsDialectConfig) -> host::zfs::Dialect {
    match d {
        ZfsDialectConfig::Openzfs => host::zfs::Dialect::OpenZfs,
        ZfsDialectConfig::ZfsFuse => host::zfs::Dialect::ZfsFuse,
    }
}

/// The hypervisor and instance disks the config names, with every instance loaded and
/// reconciled with the VMs really running.
pub fn open_instances(
    config: &Config,
    runner: Arc<dyn CommandRunner>,
    images: Arc<dyn ImageStorage>,
) -> Result<Arc<Instances>, StartError> {
    let settings = &config.instances;
    let hypervisor: Arc<dyn hypervisor::Hypervisor> = match settings.hypervisor {
        HypervisorKind::Qemu => Arc::new(hypervisor::qemu::Qemu::new(runner.clone(), config.qemu_settings())),
        HypervisorKind::Bhyve => {
            Arc::new(hypervisor::bhyve::Bhyve::new(runner.clone(), config.bhyve_paths()))
        }
    };
    let disk_error = |e: instance::disks::DiskError| StartError::Instances(e.into());
    let disks: Arc<dyn InstanceDisks> = match &config.storage {
        StorageConfig::Files { .. } => Arc::new(
            FileDisks::new(
                &settings.dir,
                host::qemu_img::QemuImg::new(runner.clone(), &config.commands.qemu_img),
                settings.hypervisor == HypervisorKind::Qemu,
            )
            .map_err(disk_error)?,
        ),
        StorageConfig::Zfs { zvol_dir, dialect, .. } => Arc::new(ZfsDisks::new(
            host::zfs::Zfs::new(runner.clone(), &config.commands.zfs, zfs_dialect(*dialect)),
            &config.instances_zfs_parent().expect("validated with the config"),
            storage::zfs::ZfsMode::Zvol,
            zvol_dir,
        )),
        StorageConfig::ZfsFiles { dialect, .. } => Arc::new(ZfsDisks::new(
            host::zfs::Zfs::new(runner.clone(), &config.commands.zfs, zfs_dialect(*dialect)),
            &config.instances_zfs_parent().expect("validated with the config"),
            storage::zfs::ZfsMode::Files,
            std::path::Path::new("/dev/zvol"),
        )),
    };
    let host_network: Arc<dyn network::HostNetwork> = match settings.hypervisor {
        HypervisorKind::Qemu => {
            Arc::new(network::linux::LinuxBridges::new(runner.clone(), config.commands.ip.clone()))
        }
        HypervisorKind::Bhyve => {
            Arc::new(network::freebsd::FreeBsdBridges::new(runner.clone(), config.commands.ifconfig.clone()))
        }
    };
    // Only read here; `Instances::open` creates the directory before anything is saved.
    let switches = Arc::new(
        network::Switches::open(host_network, &config.switches, &settings.dir)
            .map_err(|e| StartError::Instances(e.into()))?,
    );
    let settings = Settings {
        run_dir: settings.run_dir.clone(),
        state_dir: settings.dir.clone(),
        stop_timeout: std::time::Duration::from_secs(settings.stop_timeout_secs),
        console_ring_bytes: settings.console_ring_bytes,
        console_log_max_bytes: settings.console_log_max_bytes,
        iso_dir: settings.iso_dir.clone().unwrap_or_else(|| settings.dir.join("isos")),
    };
    Ok(Instances::open(disks, hypervisor, images, switches, settings)?)
}

/// Opens storage, recovers from a crash, loads the instances, and binds the API. Once the
/// server has stopped, the instances are let go of: the VMs go on, and the next agent adopts
/// them.
pub fn bind(config: Config) -> Result<Bound, StartError> {
    for deprecation in config.deprecations() {
        tracing::warn!("config: {deprecation}");
    }
    for warning in config.warnings(std::path::Path::exists) {
        tracing::warn!("config: {warning}");
    }
    let runner: Arc<dyn CommandRunner> = Arc::new(HostRunner);
    let storage = open_storage(&config, runner.clone())?;
    let instances = open_instances(&config, runner.clone(), storage.clone())?;
    let registry = Arc::new(service_kit::metrics::Metrics::new());
    let import_counters = metrics::ImportCounters::register(&registry);
    let importer = Importer::new(SourceClient::new(config.sources()?)?, storage.clone(), import_counters);
    let host_credential = cluster::HostCredential::default();
    let state = web::Data::new(AgentState {
        importer,
        instances: instances.clone(),
        auth: Credentials::new(&config.auth),
        host_credential: host_credential.clone(),
        metrics: metrics::HostGauges::register(registry.clone()),
    });
    let addr = config.listen;
    let bound = service_kit::server::bind_api(addr, state, registry, api::configure, Box::new(|| {}))
        .map_err(|source| StartError::Bind { addr, source })?;
    // Joins once the socket is bound: cloudapi's first call back waits in its backlog.
    let member = config.cluster.clone().map(|cluster| {
        cluster::Member::start(cluster::Parts {
            identity_file: config.cluster_identity_file(),
            config: cluster,
            hypervisor: instances.hypervisor_kind(),
            meter: cluster::capacity::Meter::new(runner, config.commands.sysctl.clone(), storage.clone()),
            storage,
            instances: instances.clone(),
            credential: host_credential,
        })
    });
    Ok(Bound {
        after_stop: Box::new(move || {
            drop(member);
            instances.detach_all()
        }),
        ..bound
    })
}

/// An agent running on its own thread (see [`start`]). Stops when dropped; its VMs go on.
pub type RunningAgent = service_kit::ServerThread;

/// Binds and starts `config` on a thread of its own, for tests.
pub fn start(config: Config) -> Result<RunningAgent, StartError> {
    RunningAgent::start(move || bind(config))
}
