//! Server configuration: the JSON file of the Go `imgapi` (`datadir`, `port`, `host`, `userdb`)
//! plus what real deployments need. Unknown keys are refused, naming the key.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The example configuration shipped at the top of the repository, also used when no config
/// file exists at the default path (so `imgapi -s` works out of the box).
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config.example.json");

/// The reference server's `MAX_IMAGE_SIZE`: 20 GiB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 20 * 1024 * 1024 * 1024;

/// Everything the server reads from its config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Root of all stored state: one directory per image.
    pub datadir: PathBuf,
    /// TCP port to listen on (0 picks a free one; the chosen address is printed at start-up).
    #[serde(default = "default_port")]
    pub port: u16,
    /// The name clients use to reach the server. As in the Go server it does not choose the
    /// listening interface unless it is an IP address and `listen` is absent.
    #[serde(default)]
    pub host: Option<String>,
    /// IP address to bind. Default: `host` when that is an IP address, otherwise all interfaces
    /// (what the Go server did).
    #[serde(default)]
    pub listen: Option<IpAddr>,
    /// Users allowed to write. `password` is plain text (as in the Go server) or an argon2
    /// (`$argon2id$...`) or bcrypt (`$2b$...`) hash, which `imgapi hash-password` prints.
    #[serde(default)]
    pub userdb: Vec<UserEntry>,
    /// Serve with the example's `admin`/`secret` user on an address other machines can reach.
    /// Refused unless set: anyone who read the example could change the images.
    #[serde(default)]
    pub allow_example_credentials: bool,
    /// OpenSSH public keys per user name, for HTTP Signature auth (what Triton tools send).
    #[serde(default)]
    pub auth_keys: BTreeMap<String, Vec<String>>,
    /// What unauthenticated clients may read.
    #[serde(default)]
    pub anonymous_reads: AnonymousReads,
    /// Largest image file accepted by AddImageFile, in bytes.
    #[serde(default = "default_max_file_size")]
    pub max_file_size: u64,
    /// A download whose client took nothing for this long is cut off (its connection reset).
    #[serde(default = "default_download_stall_secs")]
    pub download_stall_timeout_secs: u64,
    /// `error`, `warn`, `info`, `debug` or `trace`, or any `tracing` filter directive.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    #[serde(default)]
    pub log_format: LogFormat,
    /// Image channels, as sdc-imgapi configures them. Empty: the server has no channels.
    #[serde(default)]
    pub channels: Vec<Channel>,
    /// Serve HTTPS directly with these PEM files.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Value of the `Server` response header.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Upstream IMGAPI servers this one mirrors (and may pull through from), in lookup order.
    #[serde(default)]
    pub mirrors: Vec<MirrorConfig>,
    /// The file this config was read from (for `POST /authkeys/reload`); not a config key.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// One `mirrors` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// The upstream: `http[s]://[user:pass@]host[:port][/prefix][?channel=NAME]`.
    pub url: String,
    /// Seconds between two syncs; 0: no periodic sync (pull-through only).
    #[serde(default = "default_mirror_interval")]
    pub interval_secs: u64,
    /// ListImages filters sent upstream (`os`, `type`, `name`, `owner`, `tag.KEY`...): only
    /// matching active images are mirrored.
    #[serde(default)]
    pub filter: BTreeMap<String, String>,
    /// Delete local copies of images that this mirror copied and the upstream no longer has.
    #[serde(default)]
    pub follow_deletes: bool,
    /// A GetImage/GetImageFile for an image this server lacks asks this upstream, copies the
    /// image and serves it.
    #[serde(default)]
    pub pull_through: bool,
}

fn default_mirror_interval() -> u64 {
    3600
}

/// One `userdb` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub name: String,
    pub password: String,
}

/// The read policy for requests without credentials.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnonymousReads {
    /// sdc-imgapi's behaviour: list active images, get any image or file by uuid.
    #[default]
    All,
    /// Only public, active images are visible.
    Public,
    /// Reads need credentials too (only `/ping` stays open).
    None,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A channel, emitted by `GET /channels` exactly as configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    pub name: String,
    pub description: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn default_port() -> u16 {
    8080
}
fn default_max_file_size() -> u64 {
    DEFAULT_MAX_FILE_SIZE
}
fn default_download_stall_secs() -> u64 {
    60
}
fn default_log_level() -> String {
    "info".to_string()
}

pub use service_kit::config::ConfigError;

impl Config {
    /// Reads and checks a config file. A relative `datadir` is taken relative to the file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = service_kit::config::read(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = Self::from_json(&text, path, base)?;
        config.source = Some(path.to_owned());
        Ok(config)
    }

    /// Parses config text; `origin` names it in errors and `base` anchors a relative `datadir`.
    pub fn from_json(text: &str, origin: &Path, base: &Path) -> Result<Self, ConfigError> {
        let mut config: Config = service_kit::config::parse(text, origin)?;
        if config.datadir.as_os_str().is_empty() {
            return Err(ConfigError::invalid(origin, "\"datadir\" must not be empty"));
        }
        if config.datadir.is_relative() && !base.as_os_str().is_empty() {
            config.datadir = base.join(&config.datadir);
        }
        config.check().map_err(|message| ConfigError::invalid(origin, message))?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        let mut names = std::collections::HashSet::new();
        for user in &self.userdb {
            if user.name.is_empty() || user.name.contains(':') {
                return Err(format!("userdb: invalid user name {:?}", user.name));
            }
            if !names.insert(&user.name) {
                return Err(format!("userdb: user {:?} is listed twice", user.name));
            }
        }
        if self.has_example_credentials() && !self.allow_example_credentials {
            let addr = self.listen_addr();
            if !addr.ip().is_loopback() {
                return Err(format!(
                    "userdb has the example user admin/secret and the server would listen on {addr}, \
                     where other machines reach it: anyone could change the images. Give admin a \
                     password of your own (`imgapi --hash-password` hashes it), listen on 127.0.0.1, \
                     or set \"allow_example_credentials\": true"
                ));
            }
        }
        let mut defaults = 0;
        let mut channel_names = std::collections::HashSet::new();
        for channel in &self.channels {
            if !is_channel_name(&channel.name) {
                return Err(format!(
                    "channels: invalid name {:?} (must match ^[a-z][a-z0-9_-]*$)",
                    channel.name
                ));
            }
            if !channel_names.insert(&channel.name) {
                return Err(format!("channels: {:?} is listed twice", channel.name));
            }
            defaults += usize::from(channel.default);
        }
        if defaults > 1 {
            return Err("channels: at most one channel may be the default".into());
        }
        for mirror in &self.mirrors {
            crate::service::remote::upstream(&mirror.url).map_err(|e| format!("mirrors: {e}"))?;
            if let Some(key) =
                mirror.filter.keys().find(|k| matches!(k.as_str(), "limit" | "marker" | "state"))
            {
                return Err(format!("mirrors: filter {key:?} is chosen by the mirror itself"));
            }
        }
        if self.max_file_size == 0 {
            return Err("\"max_file_size\" must be positive".into());
        }
        if self.download_stall_timeout_secs == 0 {
            return Err("\"download_stall_timeout_secs\" must be positive".into());
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .map_err(|e| format!("invalid \"log_level\" {:?}: {e}", self.log_level))?;
        Ok(())
    }

    /// Whether a writer is the example config's `admin`/`secret` (for a warning at start-up,
    /// and refused on a reachable address).
    pub fn has_example_credentials(&self) -> bool {
        self.userdb.iter().any(|u| u.name == "admin" && u.password == "secret")
    }

    /// The socket address to bind.
    pub fn listen_addr(&self) -> SocketAddr {
        let ip = self
            .listen
            .or_else(|| self.host.as_deref().and_then(|h| h.parse().ok()))
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        SocketAddr::new(ip, self.port)
    }

    /// The channel new images go to when a request names none.
    pub fn default_channel(&self) -> Option<&Channel> {
        self.channels.iter().find(|c| c.default)
    }
}

fn is_channel_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z')) && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_json(text, Path::new("test.json"), Path::new("/etc/imgapi"))
    }

    #[test]
    fn the_go_servers_config_works_unchanged() {
        let config = parse(
            r#"{ "datadir" : "/data/imgapi/files", "port" : 8080, "host" : "127.0.0.1",
                 "userdb" : [ { "name" : "admin", "password" : "secret" } ] }"#,
        )
        .unwrap();
        assert_eq!(config.datadir, Path::new("/data/imgapi/files"));
        assert_eq!(config.listen_addr(), "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.userdb[0].password, "secret");
        assert_eq!(config.anonymous_reads, AnonymousReads::All);
    }

    #[test]
    fn a_host_name_binds_all_interfaces_unless_listen_is_set() {
        let config = parse(r#"{"datadir": "d", "host": "images.example.com"}"#).unwrap();
        assert_eq!(config.listen_addr(), "0.0.0.0:8080".parse().unwrap());
        assert_eq!(config.datadir, Path::new("/etc/imgapi/d"));
        let config =
            parse(r#"{"datadir": "d", "host": "images.example.com", "listen": "::1", "port": 9}"#).unwrap();
        assert_eq!(config.listen_addr(), "[::1]:9".parse().unwrap());
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = service_kit::ErrorChain(&parse(r#"{"datadir": "d", "prot": 80}"#).unwrap_err()).to_string();
        assert!(err.contains("unknown field `prot`"), "{err}");
        let err = service_kit::ErrorChain(
            &parse(r#"{"datadir": "d", "userdb": [{"name": "a", "pasword": "x"}]}"#).unwrap_err(),
        )
        .to_string();
        assert!(err.contains("unknown field `pasword`"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        for (text, needle) in [
            (r#"{"datadir": ""}"#, "datadir"),
            (r#"{"datadir": "d", "userdb": [{"name":"a:b","password":"x"}]}"#, "user name"),
            (
                r#"{"datadir": "d", "userdb": [{"name":"a","password":"x"},{"name":"a","password":"y"}]}"#,
                "twice",
            ),
            (r#"{"datadir": "d", "channels": [{"name":"Dev","description":"x"}]}"#, "invalid name"),
            (
                r#"{"datadir": "d", "channels": [{"name":"a","description":"x","default":true},{"name":"b","description":"y","default":true}]}"#,
                "at most one",
            ),
            (r#"{"datadir": "d", "anonymous_reads": "some"}"#, "unknown variant"),
            (r#"{"datadir": "d", "max_file_size": 0}"#, "max_file_size"),
            (r#"{"datadir": "d", "log_level": "[[["}"#, "log_level"),
            (r#"{"datadir": "d", "port": 70000}"#, "port"),
        ] {
            let err = service_kit::ErrorChain(&parse(text).unwrap_err()).to_string();
            assert!(err.contains(needle) || err.contains("invalid value"), "{text}: {err}");
        }
    }

    #[test]
    fn the_shipped_example_parses() {
        let config = Config::from_json(EMBEDDED_DEFAULT, Path::new("embedded"), Path::new(""))
            .expect("config.example.json must stay valid");
        assert_eq!(config.listen_addr(), "127.0.0.1:8080".parse().unwrap());
    }

    #[test]
    fn the_example_credentials_stay_on_loopback_unless_allowed() {
        let example = r#"{"datadir": "d", "userdb": [{"name": "admin", "password": "secret"}]"#;
        let on = |rest: &str| parse(&format!("{example}{rest}}}"));
        assert!(on(r#", "host": "127.0.0.1""#).unwrap().has_example_credentials());
        assert!(on(r#", "listen": "::1""#).is_ok());
        for reachable in
            [r#", "host": "imgapi.example.com""#, r#", "listen": "0.0.0.0""#, r#", "host": "10.0.0.5""#]
        {
            let err = service_kit::ErrorChain(&on(reachable).unwrap_err()).to_string();
            assert!(
                err.contains("example user admin/secret") && err.contains("allow_example_credentials"),
                "{err}"
            );
        }
        assert!(on(r#", "listen": "0.0.0.0", "allow_example_credentials": true"#).is_ok());
        let own = parse(
            r#"{"datadir": "d", "listen": "0.0.0.0", "userdb": [{"name": "admin", "password": "mine"}]}"#,
        );
        assert!(!own.unwrap().has_example_credentials());
    }
}
