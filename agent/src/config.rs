//! The agent's configuration file (JSON): where its API listens and who may change things,
//! the IMGAPI sources in lookup order, and the storage backend with the host commands it uses.
//! Unknown keys are refused by name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use imgapi_client::Auth;

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
    /// Absolute paths of host commands.
    #[serde(default)]
    pub commands: Commands,
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Instances: the hypervisor and where their state lives.
    #[serde(default)]
    pub instances: InstancesConfig,
    /// Named switches NICs can join (`switch:<name>`), by name: `{"bridge", "uplink"}`. More
    /// can be added through the API.
    #[serde(default)]
    pub switches: std::collections::BTreeMap<String, crate::network::SwitchConfig>,
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
    pub qemu: crate::hypervisor::qemu::QemuSettings,
    pub bhyve: crate::host::bhyve::BhyvePaths,
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
            dir: PathBuf::from("/var/lib/agent/instances"),
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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Bearer tokens (`Authorization: Bearer <token>`).
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Basic credentials.
    #[serde(default)]
    pub users: Vec<User>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub password: String,
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

/// Absolute paths of the host commands the agent may run (the hypervisors' own are in
/// `instances.qemu` and `instances.bhyve`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commands {
    #[serde(default = "default_zfs")]
    pub zfs: PathBuf,
    /// Makes the qcow2 overlays of `files` instances under QEMU.
    #[serde(default = "default_qemu_img")]
    pub qemu_img: PathBuf,
}

impl Default for Commands {
    fn default() -> Self {
        Commands { zfs: default_zfs(), qemu_img: default_qemu_img() }
    }
}

fn default_qemu_img() -> PathBuf {
    PathBuf::from("/usr/bin/qemu-img")
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
fn default_zfs() -> PathBuf {
    if cfg!(target_os = "linux") {
        PathBuf::from("/usr/sbin/zfs")
    } else {
        PathBuf::from("/sbin/zfs")
    }
}

pub use service_kit::config::ConfigError;

impl Config {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_json(&service_kit::config::read(path)?, path)
    }

    pub fn from_json(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let config: Config = service_kit::config::parse(text, origin)?;
        let invalid = |message: String| ConfigError::invalid(origin, message);
        config.sources().map_err(|e| invalid(service_kit::ErrorChain(&e).to_string()))?;
        for (key, path) in [
            ("commands.zfs", &config.commands.zfs),
            ("commands.qemu_img", &config.commands.qemu_img),
            ("instances.qemu.binary", &config.instances.qemu.binary),
            ("instances.qemu.ip", &config.instances.qemu.ip),
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
        if config.auth.tokens.iter().any(|t| t.len() < 16) {
            return Err(invalid("auth.tokens must be at least 16 characters long".into()));
        }
        Ok(config)
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
    fn the_shipped_example_parses() {
        let text = include_str!("../../support-files/agent.example.json");
        let config = Config::from_json(text, Path::new("agent.example.json")).unwrap();
        assert_eq!(config.sources().unwrap().len(), 2);
        assert!(matches!(config.storage, StorageConfig::Zfs { .. }));
        assert!(config.listen.ip().is_loopback());
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
        ] {
            let err = Config::from_json(text, Path::new("t")).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
