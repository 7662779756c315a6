//! The agent's configuration file (JSON), every section of it: where its API listens and who
//! may change things, the IMGAPI sources in lookup order, the storage backend, the host
//! commands it runs (one `commands` table), the hypervisor and the switches. Unknown keys are
//! refused by name; keys that moved are still read, with a warning (see
//! [`Config::deprecations`]).

pub use service_kit::auth::{AuthConfig, User};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use imgapi_client::Auth;

use crate::host::bhyve::BhyvePaths;
use crate::hypervisor::qemu::QemuSettings;

use crate::source::{Source, SourceSetupError};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address of the agent's REST API. Loopback by default: the API runs host commands.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Credentials for mutating API calls.
    #[serde(default)]
    pub auth: AuthConfig,
    /// IMGAPI sources, in lookup order: `"http://[user:pass@]host[:port][/prefix]"` or
    /// `{"url", "user", "password"}` (Basic auth) or `{"url", "user", "key"}` (HTTP Signature
    /// auth with the SSH private key file `key`).
    #[serde(default)]
    pub sources: Vec<SourceEntry>,
    pub storage: StorageConfig,
    /// Absolute paths of the host commands, as given (see [`Config::commands`]).
    #[serde(default, rename = "commands")]
    commands_given: CommandsConfig,
    /// Every host command's path: given or default, old keys applied.
    #[serde(skip)]
    pub commands: Commands,
    /// Old keys found in the file, with what replaces them.
    #[serde(skip)]
    deprecated: Vec<String>,
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Instances: the hypervisor and where their state lives.
    #[serde(default)]
    pub instances: InstancesConfig,
    /// Named switches NICs can join (`switch:<name>`), by name: `{"bridge", "uplink"}`. More
    /// can be added through the API.
    #[serde(default)]
    pub switches: std::collections::BTreeMap<String, SwitchConfig>,
    /// Membership of a fleet run by cloudapi; absent: a lone agent.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
}

/// The `cluster` section: which cloudapi this host joins, and how it is known there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// cloudapi's base URL (`http://cloud.example:9000`).
    pub url: String,
    /// One of cloudapi's `join_tokens`: exchanged, once, for this host's own credential.
    pub join_token: String,
    /// Where cloudapi reaches this agent's API: `listen` must answer there.
    pub advertise_url: String,
    /// The host's name in the fleet; the system's host name by default.
    #[serde(default)]
    pub name: Option<String>,
    /// Tags that placement can ask for (`host_tags`).
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
    /// Seconds between heartbeats.
    #[serde(default = "default_heartbeat_secs")]
    pub heartbeat_secs: u64,
    /// Where the host's id and credential are kept (mode 0600); `cluster-identity.json` in
    /// `instances.dir` by default.
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
}

fn default_heartbeat_secs() -> u64 {
    5
}

impl ClusterConfig {
    fn check(&self) -> Result<(), String> {
        for (key, value) in [("cluster.url", &self.url), ("cluster.advertise_url", &self.advertise_url)] {
            let url = url::Url::parse(value).map_err(|e| format!("{key} {value:?}: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                return Err(format!("{key} {value:?} must be an http:// or https:// URL with a host"));
            }
        }
        if self.join_token.trim().is_empty() {
            return Err("cluster.join_token must not be empty".into());
        }
        if !(1..=60).contains(&self.heartbeat_secs) {
            return Err("cluster.heartbeat_secs must be 1 to 60".into());
        }
        if let Some(path) = &self.identity_file {
            if !path.is_absolute() {
                return Err(format!("cluster.identity_file must be an absolute path, not {path:?}"));
            }
        }
        Ok(())
    }
}

/// The `instances` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InstancesConfig {
    /// `qemu` or `bhyve`; the default follows the OS (bhyve on FreeBSD).
    pub hypervisor: HypervisorKind,
    /// Instance disks and records of the `files` storage backend, console logs and the
    /// record of destroyed instances.
    pub dir: PathBuf,
    /// Per-instance sockets and hypervisor output (emptied by a host reboot, which is fine:
    /// the VMs are gone too).
    pub run_dir: PathBuf,
    /// ZFS backends: the parent dataset of instance clones (default: `instances` next to
    /// `storage.parent`, e.g. `tank/images` -> `tank/instances`).
    pub zfs_parent: Option<String>,
    /// Seconds a guest gets to power off after the ACPI button, before it is forced off.
    pub stop_timeout_secs: u64,
    /// Bytes of console output kept in memory per instance (what a reader gets first).
    pub console_ring_bytes: usize,
    /// Size at which a console log is rotated (one older file is kept).
    pub console_log_max_bytes: u64,
    /// Installer ISOs (default: `isos` under `dir`).
    pub iso_dir: Option<PathBuf>,
    pub qemu: QemuConfig,
    pub bhyve: BhyveConfig,
}

/// `instances.qemu`: how QEMU runs guests (its path is `commands.qemu`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QemuConfig {
    /// `auto` (KVM when it really works here, else TCG), `kvm` or `tcg`.
    pub accel: AccelChoice,
    /// UEFI firmware (OVMF) for instances with `firmware: uefi`.
    pub uefi_firmware: PathBuf,
    /// The `agent` executable QEMU runs (`metadata-proxy SOCKET`) for each connection of a
    /// guest to its metadata service. Default: the running agent's own executable.
    pub metadata_proxy: Option<PathBuf>,
    /// Deprecated: `commands.qemu`.
    binary: Option<PathBuf>,
    /// Deprecated: `commands.ip`.
    ip: Option<PathBuf>,
}

impl Default for QemuConfig {
    fn default() -> Self {
        QemuConfig {
            accel: AccelChoice::Auto,
            uefi_firmware: PathBuf::from("/usr/share/OVMF/OVMF_CODE.fd"),
            metadata_proxy: None,
            binary: None,
            ip: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelChoice {
    #[default]
    Auto,
    Kvm,
    Tcg,
}

fn qemu_settings(commands: &Commands, qemu: &QemuConfig) -> QemuSettings {
    QemuSettings {
        binary: commands.qemu.clone(),
        accel: qemu.accel,
        uefi_firmware: qemu.uefi_firmware.clone(),
        ip: commands.ip.clone(),
        metadata_proxy: qemu.metadata_proxy.clone(),
    }
}

/// The settings of a config that says nothing about QEMU.
impl Default for QemuSettings {
    fn default() -> Self {
        qemu_settings(&Commands::default(), &QemuConfig::default())
    }
}

/// `instances.bhyve`: bhyve's firmware and devices (its tools are in `commands`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BhyveConfig {
    /// UEFI firmware (edk2-bhyve), for `firmware: uefi`.
    pub uefi_bootrom: PathBuf,
    /// UEFI firmware with the compatibility support module, for `firmware: bios`.
    pub uefi_csm_bootrom: PathBuf,
    /// One entry per VM that exists in the kernel (`/dev/vmm/<name>`).
    pub vmm_dir: PathBuf,
    /// Null-modem console pairs are `<prefix><name>A` (bhyve's side) and `<prefix><name>B`.
    pub nmdm_prefix: PathBuf,
    /// Deprecated: `commands.bhyve`, `commands.bhyvectl`, ...
    bhyve: Option<PathBuf>,
    bhyvectl: Option<PathBuf>,
    bhyveload: Option<PathBuf>,
    ifconfig: Option<PathBuf>,
    ps: Option<PathBuf>,
}

impl Default for BhyveConfig {
    fn default() -> Self {
        let paths = BhyvePaths::default();
        BhyveConfig {
            uefi_bootrom: paths.uefi_bootrom,
            uefi_csm_bootrom: paths.uefi_csm_bootrom,
            vmm_dir: paths.vmm_dir,
            nmdm_prefix: paths.nmdm_prefix,
            bhyve: None,
            bhyvectl: None,
            bhyveload: None,
            ifconfig: None,
            ps: None,
        }
    }
}

/// A switch as the config file (or a `POST /switches`) gives it; the key is its name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchConfig {
    /// The host bridge (default: the switch's name). Created when missing.
    #[serde(default)]
    pub bridge: Option<String>,
    /// A host interface added to the bridge, linking the switch to the outside network.
    #[serde(default)]
    pub uplink: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HypervisorKind {
    Qemu,
    Bhyve,
}

impl Default for InstancesConfig {
    fn default() -> Self {
        InstancesConfig {
            hypervisor: if cfg!(target_os = "freebsd") {
                HypervisorKind::Bhyve
            } else {
                HypervisorKind::Qemu
            },
            dir: PathBuf::from(DEFAULT_INSTANCES_DIR),
            run_dir: PathBuf::from("/var/run/agent"),
            zfs_parent: None,
            stop_timeout_secs: 60,
            console_ring_bytes: 256 * 1024,
            console_log_max_bytes: 8 << 20,
            iso_dir: None,
            qemu: Default::default(),
            bhyve: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SourceEntry {
    Url(String),
    Detailed(DetailedSource),
}

/// A source with its credentials apart from the URL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetailedSource {
    pub url: String,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// An SSH private key (RSA) to sign requests with, as Triton's tools do.
    #[serde(default)]
    pub key: Option<PathBuf>,
}

impl SourceEntry {
    /// The source, with its credentials: explicit ones win over the URL's.
    fn source(&self) -> Result<Source, SourceSetupError> {
        let (url, user, password, key) = match self {
            SourceEntry::Url(url) => return Ok(Source::parse(url)?),
            SourceEntry::Detailed(DetailedSource { url, user, password, key }) => (url, user, password, key),
        };
        let source = Source::parse(url)?;
        let auth = match (user, password, key) {
            (_, Some(_), Some(_)) => {
                return Err(SourceSetupError::Key {
                    url: source.base,
                    source: imgapi_client::KeyError::Unsupported("give a password or a key, not both".into()),
                })
            }
            (Some(user), _, Some(key)) => {
                let key = imgapi_client::SigningKey::from_file(key).map_err(|source_error| {
                    SourceSetupError::Key { url: source.base.clone(), source: source_error }
                })?;
                Auth::Signature { user: user.clone(), key: std::sync::Arc::new(key) }
            }
            (None, _, Some(_)) => {
                return Err(SourceSetupError::Key {
                    url: source.base,
                    source: imgapi_client::KeyError::Unsupported(
                        "a key needs the user it belongs to (\"user\")".into(),
                    ),
                })
            }
            (Some(user), password, None) => Auth::Basic { user: user.clone(), password: password.clone() },
            (None, _, None) => return Ok(source),
        };
        Ok(source.with_auth(auth))
    }
}

/// The storage backend and its settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "backend", deny_unknown_fields)]
pub enum StorageConfig {
    /// Images as read-only raw files in `dir`.
    #[serde(rename = "files")]
    Files { dir: PathBuf },
    /// Images as datasets and zvols under `parent` (FreeBSD/illumos with bhyve).
    #[serde(rename = "zfs")]
    Zfs {
        parent: String,
        #[serde(default = "default_zvol_dir")]
        zvol_dir: PathBuf,
        #[serde(default)]
        dialect: ZfsDialectConfig,
    },
    /// Images as datasets under `parent`, raw disks as files inside them (ZFS hosts with QEMU,
    /// zfs-fuse).
    #[serde(rename = "zfs-files")]
    ZfsFiles {
        parent: String,
        #[serde(default)]
        dialect: ZfsDialectConfig,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ZfsDialectConfig {
    #[default]
    Openzfs,
    ZfsFuse,
}

/// `commands`: the absolute path of every host command the agent runs. Absent ones have the
/// usual path on the agent's OS.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct CommandsConfig {
    zfs: Option<PathBuf>,
    qemu_img: Option<PathBuf>,
    qemu: Option<PathBuf>,
    ip: Option<PathBuf>,
    bhyve: Option<PathBuf>,
    bhyvectl: Option<PathBuf>,
    bhyveload: Option<PathBuf>,
    ifconfig: Option<PathBuf>,
    ps: Option<PathBuf>,
    sysctl: Option<PathBuf>,
}

/// The host commands the agent runs, each an absolute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commands {
    pub zfs: PathBuf,
    /// Makes the qcow2 overlays of `files` instances under QEMU.
    pub qemu_img: PathBuf,
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// iproute2's `ip`, for switches' bridges and the taps of QEMU's NICs.
    pub ip: PathBuf,
    pub bhyve: PathBuf,
    pub bhyvectl: PathBuf,
    pub bhyveload: PathBuf,
    /// FreeBSD's `ifconfig`, for switches' bridges and the taps of bhyve's NICs.
    pub ifconfig: PathBuf,
    /// `ps`, to check that an adopted pid is still a bhyve process.
    pub ps: PathBuf,
    /// FreeBSD's `sysctl`, for the memory a host reports to cloudapi.
    pub sysctl: PathBuf,
}

impl Default for Commands {
    fn default() -> Self {
        let bhyve = BhyvePaths::default();
        Commands {
            zfs: if cfg!(target_os = "linux") { "/usr/sbin/zfs".into() } else { "/sbin/zfs".into() },
            qemu_img: "/usr/bin/qemu-img".into(),
            qemu: "/usr/bin/qemu-system-x86_64".into(),
            ip: "/usr/sbin/ip".into(),
            bhyve: bhyve.bhyve,
            bhyvectl: bhyve.bhyvectl,
            bhyveload: bhyve.bhyveload,
            ifconfig: bhyve.ifconfig,
            ps: bhyve.ps,
            sysctl: "/sbin/sysctl".into(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}
fn default_log_level() -> String {
    "info".into()
}
fn default_zvol_dir() -> PathBuf {
    PathBuf::from("/dev/zvol")
}

pub use service_kit::config::ConfigError;

/// Where `agent serve` reads its config when given none: the path the platform's service file
/// (rc.d on FreeBSD, systemd on Linux) passes too.
#[cfg(target_os = "freebsd")]
pub const DEFAULT_PATH: &str = "/usr/local/etc/agent/config.json";
#[cfg(not(target_os = "freebsd"))]
pub const DEFAULT_PATH: &str = "/etc/agent/config.json";

/// Where instance records, console logs and `files` disks go by default: FreeBSD keeps such
/// state in /var/db (hier(7)), Linux in /var/lib.
#[cfg(target_os = "freebsd")]
pub const DEFAULT_INSTANCES_DIR: &str = "/var/db/agent/instances";
#[cfg(not(target_os = "freebsd"))]
pub const DEFAULT_INSTANCES_DIR: &str = "/var/lib/agent/instances";

impl Config {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_json(&service_kit::config::read(path)?, path)
    }

    pub fn from_json(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let mut config: Config = service_kit::config::parse(text, origin)?;
        let invalid = |message: String| ConfigError::invalid(origin, message);
        config.resolve_commands().map_err(invalid)?;
        config.sources().map_err(|e| invalid(service_kit::ErrorChain(&e).to_string()))?;
        let commands = &config.commands;
        for (key, path) in [
            ("commands.zfs", &commands.zfs),
            ("commands.qemu_img", &commands.qemu_img),
            ("commands.qemu", &commands.qemu),
            ("commands.ip", &commands.ip),
            ("commands.bhyve", &commands.bhyve),
            ("commands.bhyvectl", &commands.bhyvectl),
            ("commands.bhyveload", &commands.bhyveload),
            ("commands.ifconfig", &commands.ifconfig),
            ("commands.ps", &commands.ps),
            ("commands.sysctl", &commands.sysctl),
            ("instances.dir", &config.instances.dir),
            ("instances.run_dir", &config.instances.run_dir),
        ] {
            if !path.is_absolute() {
                return Err(invalid(format!("{key} must be an absolute path, not {path:?}")));
            }
        }
        for (name, switch) in &config.switches {
            crate::network::Switch::new(name, switch, crate::network::SwitchOrigin::Config)
                .map_err(|e| invalid(format!("switches.{name}: {e}")))?;
        }
        if let Some(parent) = &config.instances.zfs_parent {
            if parent.is_empty() || parent.starts_with('/') || parent.ends_with('/') || parent.contains('@') {
                return Err(invalid(format!("instances.zfs_parent {parent:?} is not a dataset name")));
            }
        }
        if let StorageConfig::Zfs { parent, .. } | StorageConfig::ZfsFiles { parent, .. } = &config.storage {
            let Some(instances) = config.instances_zfs_parent() else {
                return Err(invalid(format!(
                    "storage.parent {parent:?} is a pool: set instances.zfs_parent to a dataset outside it \
                     (images are the parent's direct children)"
                )));
            };
            if instances == *parent || instances.starts_with(&format!("{parent}/")) {
                return Err(invalid(format!(
                    "instances.zfs_parent {instances:?} must not be inside storage.parent {parent:?}"
                )));
            }
        }
        if config.instances.stop_timeout_secs == 0 || config.instances.console_ring_bytes == 0 {
            return Err(invalid("instances.stop_timeout_secs and console_ring_bytes must be above 0".into()));
        }
        if let StorageConfig::Zfs { parent, .. } | StorageConfig::ZfsFiles { parent, .. } = &config.storage {
            if parent.is_empty() || parent.starts_with('/') || parent.ends_with('/') || parent.contains('@') {
                return Err(invalid(format!("storage.parent {parent:?} is not a dataset name")));
            }
        }
        config.auth.check().map_err(invalid)?;
        if let Some(cluster) = &config.cluster {
            cluster.check().map_err(invalid)?;
        }
        Ok(config)
    }

    /// Applies the old places of command paths (`instances.qemu.binary`, `instances.qemu.ip`,
    /// `instances.bhyve.<tool>`) where `commands` does not name the command, and notes each as
    /// deprecated; both at once is an error.
    fn resolve_commands(&mut self) -> Result<(), String> {
        let given = &self.commands_given;
        let (qemu, bhyve) = (&self.instances.qemu, &self.instances.bhyve);
        let defaults = Commands::default();
        let mut deprecated = Vec::new();
        let mut pick = |key: &str,
                        new: &Option<PathBuf>,
                        old_key: &str,
                        old: &Option<PathBuf>,
                        default: PathBuf| {
            match (new, old) {
                (Some(new), Some(old)) if new != old => {
                    Err(format!("commands.{key} and {old_key} disagree: keep commands.{key} only"))
                }
                (Some(new), old) => {
                    if old.is_some() {
                        deprecated
                            .push(format!("{old_key} is deprecated and ignored: commands.{key} is set"));
                    }
                    Ok(new.clone())
                }
                (None, Some(old)) => {
                    deprecated.push(format!("{old_key} is deprecated: move it to commands.{key}"));
                    Ok(old.clone())
                }
                (None, None) => Ok(default),
            }
        };
        let commands = Commands {
            zfs: given.zfs.clone().unwrap_or(defaults.zfs),
            qemu_img: given.qemu_img.clone().unwrap_or(defaults.qemu_img),
            qemu: pick("qemu", &given.qemu, "instances.qemu.binary", &qemu.binary, defaults.qemu)?,
            ip: pick("ip", &given.ip, "instances.qemu.ip", &qemu.ip, defaults.ip)?,
            bhyve: pick("bhyve", &given.bhyve, "instances.bhyve.bhyve", &bhyve.bhyve, defaults.bhyve)?,
            bhyvectl: pick(
                "bhyvectl",
                &given.bhyvectl,
                "instances.bhyve.bhyvectl",
                &bhyve.bhyvectl,
                defaults.bhyvectl,
            )?,
            bhyveload: pick(
                "bhyveload",
                &given.bhyveload,
                "instances.bhyve.bhyveload",
                &bhyve.bhyveload,
                defaults.bhyveload,
            )?,
            ifconfig: pick(
                "ifconfig",
                &given.ifconfig,
                "instances.bhyve.ifconfig",
                &bhyve.ifconfig,
                defaults.ifconfig,
            )?,
            ps: pick("ps", &given.ps, "instances.bhyve.ps", &bhyve.ps, defaults.ps)?,
            sysctl: given.sysctl.clone().unwrap_or(defaults.sysctl),
        };
        self.commands = commands;
        self.deprecated = deprecated;
        Ok(())
    }

    /// Where the cluster identity is kept: `cluster.identity_file`, or `cluster-identity.json`
    /// in `instances.dir`.
    pub fn cluster_identity_file(&self) -> PathBuf {
        let given = self.cluster.as_ref().and_then(|c| c.identity_file.clone());
        given.unwrap_or_else(|| self.instances.dir.join("cluster-identity.json"))
    }

    /// The old keys this config used, each with what replaces it: for warnings at start-up.
    pub fn deprecations(&self) -> &[String] {
        &self.deprecated
    }

    /// What in this config can never work, for the log at start-up: no credentials (every
    /// change refused), or a host command this config needs that `exists` cannot find.
    pub fn warnings(&self, exists: impl Fn(&Path) -> bool) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.auth.tokens.is_empty() && self.auth.users.is_empty() {
            warnings.push(
                "auth has no tokens and no users: every change (import, create, stop...) will be refused \
                 with 401; add a token to auth.tokens"
                    .to_string(),
            );
        }
        let c = &self.commands;
        let mut needed: Vec<(&str, &PathBuf, &str)> = Vec::new();
        match &self.storage {
            StorageConfig::Files { .. } => {}
            StorageConfig::Zfs { .. } | StorageConfig::ZfsFiles { .. } => {
                needed.push(("zfs", &c.zfs, "images cannot be imported"))
            }
        }
        match self.instances.hypervisor {
            HypervisorKind::Qemu => {
                needed.push(("qemu", &c.qemu, "instances cannot start"));
                needed.push(("ip", &c.ip, "NICs on switches and bridges cannot be made"));
                if matches!(self.storage, StorageConfig::Files { .. }) {
                    needed.push(("qemu_img", &c.qemu_img, "instances cannot be created"));
                }
            }
            HypervisorKind::Bhyve => {
                needed.push(("bhyve", &c.bhyve, "instances cannot start"));
                needed.push(("bhyvectl", &c.bhyvectl, "instances cannot start or stop"));
                needed.push(("ifconfig", &c.ifconfig, "NICs cannot be made"));
            }
        }
        for (key, path, consequence) in needed {
            if !exists(path) {
                warnings.push(format!(
                    "commands.{key}: {} does not exist: {consequence} (install it or set commands.{key})",
                    path.display()
                ));
            }
        }
        warnings
    }

    /// What the QEMU backend runs with.
    pub fn qemu_settings(&self) -> QemuSettings {
        qemu_settings(&self.commands, &self.instances.qemu)
    }

    /// Where bhyve's tools, firmware and devices are.
    pub fn bhyve_paths(&self) -> BhyvePaths {
        let (bhyve, commands) = (&self.instances.bhyve, &self.commands);
        BhyvePaths {
            bhyve: commands.bhyve.clone(),
            bhyvectl: commands.bhyvectl.clone(),
            bhyveload: commands.bhyveload.clone(),
            ifconfig: commands.ifconfig.clone(),
            ps: commands.ps.clone(),
            uefi_bootrom: bhyve.uefi_bootrom.clone(),
            uefi_csm_bootrom: bhyve.uefi_csm_bootrom.clone(),
            vmm_dir: bhyve.vmm_dir.clone(),
            nmdm_prefix: bhyve.nmdm_prefix.clone(),
        }
    }

    /// Where instance clones go on the ZFS backends: `instances.zfs_parent`, or `instances`
    /// next to `storage.parent`. `None` for the `files` backend, and when `storage.parent` is
    /// a pool and nothing is configured (refused by validation).
    pub fn instances_zfs_parent(&self) -> Option<String> {
        let (StorageConfig::Zfs { parent, .. } | StorageConfig::ZfsFiles { parent, .. }) = &self.storage
        else {
            return None;
        };
        match (&self.instances.zfs_parent, parent.rsplit_once('/')) {
            (Some(explicit), _) => Some(explicit.clone()),
            (None, Some((above, _))) => Some(format!("{above}/instances")),
            (None, None) => None,
        }
    }

    /// The sources, parsed, in lookup order.
    pub fn sources(&self) -> Result<Vec<Source>, SourceSetupError> {
        self.sources.iter().map(SourceEntry::source).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_examples_parse_and_state_the_defaults() {
        let text = include_str!("../../support-files/agent.freebsd.json");
        let freebsd = Config::from_json(text, Path::new("agent.freebsd.json")).unwrap();
        assert_eq!(freebsd.sources().unwrap().len(), 2);
        assert!(
            matches!(&freebsd.storage, StorageConfig::Zfs { zvol_dir, .. } if zvol_dir == &default_zvol_dir())
        );
        assert_eq!(freebsd.instances.hypervisor, HypervisorKind::Bhyve);
        assert_eq!(freebsd.instances.dir, Path::new("/var/db/agent/instances"), "FreeBSD's default");
        assert!(freebsd.listen.ip().is_loopback());

        let text = include_str!("../../support-files/agent.linux.json");
        let linux = Config::from_json(text, Path::new("agent.linux.json")).unwrap();
        assert!(matches!(linux.storage, StorageConfig::Files { .. }));
        assert_eq!(linux.instances.hypervisor, HypervisorKind::Qemu);
        assert_eq!(linux.instances.dir, Path::new("/var/lib/agent/instances"), "Linux's default");
        assert_eq!(linux.commands, Commands::default(), "Debian's paths, the defaults");
        assert!(linux.switches.contains_key("lab"));
        assert!(linux.listen.ip().is_loopback());
        for config in [&freebsd, &linux] {
            assert_eq!(config.instances.run_dir, InstancesConfig::default().run_dir);
            assert_eq!(config.warnings(|_| true), Vec::<String>::new(), "nothing to warn about");
        }
    }

    #[test]
    fn minimal_config_and_defaults() {
        let config =
            Config::from_json(r#"{"storage": {"backend": "files", "dir": "/var/lib/x"}}"#, Path::new("t"))
                .unwrap();
        assert_eq!(config.listen, "127.0.0.1:9090".parse().unwrap());
        assert!(config.sources.is_empty());
    }

    #[test]
    fn sources_take_basic_or_signature_credentials() {
        let key = concat!(env!("CARGO_MANIFEST_DIR"), "/../imgapi/tests/fixtures/keys/tester_rsa");
        let with = |source: serde_json::Value| {
            let text = serde_json::json!({"storage": {"backend": "files", "dir": "/x"}, "sources": [source]});
            Config::from_json(&text.to_string(), Path::new("t"))
        };
        let config = with(serde_json::json!({"url": "http://h/", "user": "tester", "key": key})).unwrap();
        assert!(matches!(config.sources().unwrap()[0].auth, Auth::Signature { .. }));
        let config = with(serde_json::json!({"url": "http://a:b@h/", "user": "u", "password": "p"})).unwrap();
        assert!(matches!(&config.sources().unwrap()[0].auth, Auth::Basic { user, .. } if user == "u"));
        for (source, needle) in [
            (serde_json::json!({"url": "http://h/", "user": "u", "password": "p", "key": key}), "not both"),
            (serde_json::json!({"url": "http://h/", "key": key}), "needs the user"),
            (
                serde_json::json!({"url": "http://h/", "user": "u", "key": "/nonexistent/key"}),
                "/nonexistent/key",
            ),
        ] {
            let e = with(source).unwrap_err();
            let e = service_kit::ErrorChain(&e).to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn one_commands_table_and_the_old_keys_with_a_warning() {
        let parse = |extra: &str| {
            let text = format!(r#"{{"storage": {{"backend": "files", "dir": "/x"}}{extra}}}"#);
            Config::from_json(&text, Path::new("t"))
        };
        let config = parse("").unwrap();
        assert_eq!(config.commands.qemu, Path::new("/usr/bin/qemu-system-x86_64"));
        assert!(config.deprecations().is_empty());
        let config =
            parse(r#", "commands": {"qemu": "/opt/q", "ip": "/opt/ip", "ifconfig": "/opt/ifc"}"#).unwrap();
        assert_eq!(config.qemu_settings().binary, Path::new("/opt/q"));
        assert_eq!(config.qemu_settings().ip, Path::new("/opt/ip"));
        assert_eq!(config.bhyve_paths().ifconfig, Path::new("/opt/ifc"));
        assert!(config.deprecations().is_empty());
        // The old places still work, and say where to move.
        let old = r#", "instances": {"qemu": {"binary": "/old/q", "ip": "/old/ip"},
                      "bhyve": {"bhyvectl": "/old/bc", "vmm_dir": "/tmp/vmm"}}"#;
        let config = parse(old).unwrap();
        assert_eq!(config.commands.qemu, Path::new("/old/q"));
        assert_eq!(config.bhyve_paths().bhyvectl, Path::new("/old/bc"));
        assert_eq!(config.bhyve_paths().vmm_dir, Path::new("/tmp/vmm"));
        assert_eq!(config.deprecations().len(), 3, "{:?}", config.deprecations());
        assert!(config.deprecations()[0].contains("move it to commands.qemu"));
        // Both, disagreeing: which one is meant?
        let both = r#", "commands": {"qemu": "/new/q"}, "instances": {"qemu": {"binary": "/old/q"}}"#;
        assert!(service_kit::ErrorChain(&parse(both).unwrap_err()).to_string().contains("disagree"));
        for bad in [r#", "commands": {"qemu": "q"}"#, r#", "instances": {"bhyve": {"ps": "ps"}}"#] {
            assert!(
                service_kit::ErrorChain(&parse(bad).unwrap_err()).to_string().contains("absolute path"),
                "{bad}"
            );
        }
        assert!(service_kit::ErrorChain(&parse(r#", "commands": {"qemu_system": "/q"}"#).unwrap_err())
            .to_string()
            .contains("unknown field"));
    }

    #[test]
    fn errors_name_the_problem() {
        for (text, needle) in [
            (r#"{"storage": {"backend": "files", "dir": "/x"}, "sauces": []}"#, "unknown field `sauces`"),
            (r#"{"storage": {"backend": "lvm"}}"#, "unknown variant `lvm`"),
            (r#"{"storage": {"backend": "files", "dir": "/x"}, "sources": ["ftp://x"]}"#, "ftp"),
            (r#"{"storage": {"backend": "zfs", "parent": "/tank"}}"#, "not a dataset name"),
            (r#"{"storage": {"backend": "files", "dir": "/x"}, "commands": {"zfs": "zfs"}}"#, "absolute"),
            (
                r#"{"storage": {"backend": "files", "dir": "/x"}, "auth": {"tokens": ["short"]}}"#,
                "16 characters",
            ),
            (
                r#"{"storage": {"backend": "files", "dir": "/x"}, "cluster": {"url": "ftp://c", "join_token": "j", "advertise_url": "http://h:9090"}}"#,
                "cluster.url \"ftp://c\" must be an http",
            ),
            (
                r#"{"storage": {"backend": "files", "dir": "/x"}, "cluster": {"url": "http://c", "join_token": "j", "advertise_url": "http://h", "heartbeat_secs": 0}}"#,
                "heartbeat_secs must be 1 to 60",
            ),
            (
                r#"{"storage": {"backend": "files", "dir": "/x"}, "cluster": {"url": "http://c", "join_token": "j"}}"#,
                "missing field `advertise_url`",
            ),
            (
                r#"{"storage": {"backend": "files", "dir": "/x"}, "cluster": {"url": "http://c", "join_token": "", "advertise_url": "http://h"}}"#,
                "join_token must not be empty",
            ),
        ] {
            let err =
                service_kit::ErrorChain(&Config::from_json(text, Path::new("t")).unwrap_err()).to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn a_config_that_cannot_work_is_warned_about() {
        let config = Config::from_json(
            r#"{"storage": {"backend": "files", "dir": "/x"}, "instances": {"hypervisor": "qemu"}}"#,
            Path::new("t"),
        )
        .unwrap();
        let warnings = config.warnings(|path| path != Path::new("/usr/bin/qemu-system-x86_64"));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("every change") && warnings[0].contains("401"), "{warnings:?}");
        assert!(
            warnings[1].starts_with(
                "commands.qemu: /usr/bin/qemu-system-x86_64 does not exist: instances cannot start"
            ),
            "{warnings:?}"
        );
        let config = Config::from_json(
            r#"{"storage": {"backend": "files", "dir": "/x"}, "auth": {"tokens": ["0123456789abcdef"]},
                "instances": {"hypervisor": "qemu"}}"#,
            Path::new("t"),
        )
        .unwrap();
        assert_eq!(config.warnings(|_| true), Vec::<String>::new());
    }
}
