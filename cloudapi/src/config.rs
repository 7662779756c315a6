//! cloudapi's configuration file (JSON). Unknown keys are errors, naming the key, as in the
//! other two services. Without a file, the embedded default (`support-files/cloudapi.json`)
//! runs it on SQLite in `./data`, on 127.0.0.1:9000.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
pub use service_kit::auth::AuthConfig;
pub use service_kit::config::ConfigError;

/// The default config, shipped as `support-files/cloudapi.json`.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../support-files/cloudapi.json");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the API listens.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `sqlite://PATH` (relative paths are taken from the config file's directory) or
    /// `postgres://...`.
    #[serde(default = "default_database")]
    pub database: String,
    /// Who may change anything, as on the agent.
    #[serde(default)]
    pub auth: AuthConfig,
    /// What an agent shows to join the fleet (exchanged at registration for a credential of
    /// its own).
    #[serde(default)]
    pub join_tokens: Vec<String>,
    /// A host that sent no heartbeat for this long is `unknown`.
    #[serde(default = "default_host_timeout")]
    pub host_timeout_secs: u64,
    #[serde(default)]
    pub placement: PlacementConfig,
    /// IMGAPI servers whose images make the catalogue.
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default = "default_log_level")]
    pub log_level: String,
}

/// How instances are placed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementConfig {
    #[serde(default)]
    pub strategy: Strategy,
    /// vCPUs allocated per physical vCPU, at most.
    #[serde(default = "default_cpu_overcommit")]
    pub cpu_overcommit: f64,
    #[serde(default = "one")]
    pub memory_overcommit: f64,
    #[serde(default = "one")]
    pub disk_overcommit: f64,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        PlacementConfig {
            strategy: Strategy::default(),
            cpu_overcommit: default_cpu_overcommit(),
            memory_overcommit: 1.0,
            disk_overcommit: 1.0,
        }
    }
}

/// `spread`: the least allocated host first; `pack`: the most allocated that fits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    #[default]
    Spread,
    Pack,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9000))
}
fn default_database() -> String {
    "sqlite://data/cloudapi.db".into()
}
fn default_host_timeout() -> u64 {
    30
}
fn default_cpu_overcommit() -> f64 {
    4.0
}
fn one() -> f64 {
    1.0
}
fn default_log_level() -> String {
    "info".into()
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_json(&service_kit::config::read(path)?, path)
    }

    /// Parses and checks a config; `origin` names it in errors and anchors relative paths.
    pub fn from_json(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let mut config: Config = service_kit::config::parse(text, origin)?;
        let invalid = |message: String| ConfigError::invalid(origin, message);
        config.auth.check().map_err(invalid)?;
        if config.join_tokens.iter().any(|t| t.len() < 16) {
            return Err(invalid("join_tokens must be at least 16 characters long".into()));
        }
        if config.host_timeout_secs == 0 {
            return Err(invalid("host_timeout_secs must be positive".into()));
        }
        let p = &config.placement;
        for (key, ratio) in
            [("cpu", p.cpu_overcommit), ("memory", p.memory_overcommit), ("disk", p.disk_overcommit)]
        {
            if !(ratio.is_finite() && ratio > 0.0) {
                return Err(invalid(format!("placement.{key}_overcommit must be a positive number")));
            }
        }
        for source in &config.sources {
            imgapi_client::Source::parse(source)
                .map_err(|e| invalid(format!("sources: {}", service_kit::ErrorChain(&e))))?;
        }
        if let Some(path) = config.database.strip_prefix("sqlite://") {
            let path = Path::new(path);
            if path.is_relative() {
                let base = origin.parent().unwrap_or(Path::new(""));
                config.database = format!("sqlite://{}", base.join(path).display());
            }
        } else if !config.database.starts_with("postgres://") && !config.database.starts_with("postgresql://")
        {
            return Err(invalid(format!(
                "database must be sqlite://PATH or postgres://..., not {:?}",
                config.database
            )));
        }
        Ok(config)
    }

    /// The embedded default, relative to the current directory.
    pub fn embedded() -> Self {
        Self::from_json(EMBEDDED_DEFAULT, Path::new("cloudapi.json")).expect("the embedded default parses")
    }

    /// The SQLite file, when the database is one.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        self.database.strip_prefix("sqlite://").map(PathBuf::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_runs_on_sqlite_on_loopback() {
        let config = Config::embedded();
        assert_eq!(config.listen, default_listen());
        assert_eq!(config.sqlite_path(), Some(PathBuf::from("data/cloudapi.db")));
        assert_eq!(config.placement.strategy, Strategy::Spread);
        assert_eq!(config.host_timeout_secs, 30);
    }

    #[test]
    fn bad_configs_name_what_is_wrong() {
        for (text, expected) in [
            (r#"{"listen": "127.0.0.1:1", "nope": 1}"#, "nope"),
            (r#"{"database": "mysql://x"}"#, "database"),
            (r#"{"join_tokens": ["short"]}"#, "join_tokens"),
            (r#"{"host_timeout_secs": 0}"#, "host_timeout_secs"),
            (r#"{"placement": {"strategy": "random"}}"#, "strategy"),
            (r#"{"placement": {"memory_overcommit": 0}}"#, "memory_overcommit"),
            (r#"{"auth": {"tokens": ["short"]}}"#, "auth.tokens"),
        ] {
            let error = Config::from_json(text, Path::new("/etc/cloudapi.json")).unwrap_err();
            let text = service_kit::ErrorChain(&error).to_string();
            assert!(text.contains(expected), "{expected:?} not in {text:?}");
        }
        let relative =
            Config::from_json(r#"{"database": "sqlite://db/c.db"}"#, Path::new("/etc/cloudapi/c.json"))
                .unwrap();
        assert_eq!(relative.sqlite_path(), Some(PathBuf::from("/etc/cloudapi/db/c.db")));
    }
}
