//! The agent's configuration file (JSON): where its API listens and who may change things,
//! the IMGAPI sources in lookup order, and the storage backend with the host commands it uses.
//! Unknown keys are refused by name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::source::{Source, SourceParseError};

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
    /// `{"url", "user", "password"}`.
    #[serde(default)]
    pub sources: Vec<SourceEntry>,
    pub storage: StorageConfig,
    /// Absolute paths of host commands.
    #[serde(default)]
    pub commands: Commands,
    #[serde(default = "default_log_level")]
    pub log_level: String,
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
    Detailed {
        url: String,
        #[serde(default)]
        user: Option<String>,
        #[serde(default)]
        password: Option<String>,
    },
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

/// Absolute paths of the host commands the agent may run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commands {
    #[serde(default = "default_zfs")]
    pub zfs: PathBuf,
}

impl Default for Commands {
    fn default() -> Self {
        Commands { zfs: default_zfs() }
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
fn default_zfs() -> PathBuf {
    if cfg!(target_os = "linux") {
        PathBuf::from("/usr/sbin/zfs")
    } else {
        PathBuf::from("/sbin/zfs")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.into(), source })?;
        Self::from_json(&text, path)
    }

    pub fn from_json(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let config: Config = serde_json::from_str(text)
            .map_err(|source| ConfigError::Parse { path: origin.into(), source })?;
        let invalid = |message: String| ConfigError::Invalid { path: origin.into(), message };
        config.sources().map_err(|e| invalid(e.to_string()))?;
        if !config.commands.zfs.is_absolute() {
            return Err(invalid(format!(
                "commands.zfs must be an absolute path, not {:?}",
                config.commands.zfs
            )));
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

    /// The sources, parsed, in lookup order.
    pub fn sources(&self) -> Result<Vec<Source>, SourceParseError> {
        self.sources
            .iter()
            .map(|entry| match entry {
                SourceEntry::Url(url) => Source::parse(url, None, None),
                SourceEntry::Detailed { url, user, password } => {
                    Source::parse(url, user.as_deref(), password.as_deref())
                }
            })
            .collect()
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
