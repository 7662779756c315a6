//! What an instance's guest is told about itself: hostname, SSH keys, user-data, network
//! config and key/value metadata, checked once here and delivered by `nocloud` (a seed disk).

pub mod imds;
pub mod listener;
pub mod nocloud;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Largest user-data accepted (EC2 allows 16 KiB; cloud-config with embedded files is larger).
pub const MAX_USER_DATA: usize = 64 * 1024;
/// Largest network config accepted.
pub const MAX_NETWORK_CONFIG: usize = 16 * 1024;
/// At most this many metadata entries, keys of at most 128 bytes and values of at most 4 KiB.
pub const MAX_METADATA_ENTRIES: usize = 64;
const MAX_METADATA_KEY: usize = 128;
const MAX_METADATA_VALUE: usize = 4096;
const MAX_SSH_KEYS: usize = 32;
const MAX_SSH_KEY: usize = 16 * 1024;

/// The guest configuration of one instance, as stored in its record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GuestConfig {
    /// The guest's hostname; the instance alias when not set (if that is a valid hostname).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// OpenSSH public keys, one line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_keys: Vec<String>,
    /// Given to the guest as it is (`#cloud-config`, a script, a MIME multipart ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// cloud-init network config (version 1 or 2 YAML), as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_config: Option<String>,
    /// Arbitrary key/value pairs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// A change to a guest configuration: absent fields stay as they are; `metadata` entries
/// are merged, and an entry whose value is `null` is removed.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GuestUpdate {
    #[serde(default, deserialize_with = "present")]
    pub hostname: Option<Option<String>>,
    #[serde(default)]
    pub ssh_keys: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    pub user_data: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub network_config: Option<Option<String>>,
    #[serde(default)]
    pub metadata: BTreeMap<String, Option<String>>,
}

/// Tells "absent" (outer `None`, from `default`) from "null" (`Some(None)`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

impl GuestConfig {
    /// Checks every field; the message names the field and the rule.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(hostname) = &self.hostname {
            check_hostname(hostname)?;
        }
        if self.ssh_keys.len() > MAX_SSH_KEYS {
            return Err(format!("at most {MAX_SSH_KEYS} SSH keys"));
        }
        for key in &self.ssh_keys {
            check_ssh_key(key)?;
        }
        if let Some(user_data) = &self.user_data {
            if user_data.len() > MAX_USER_DATA {
                return Err(format!("user-data is {} bytes; the limit is {MAX_USER_DATA}", user_data.len()));
            }
        }
        if let Some(network_config) = &self.network_config {
            if network_config.len() > MAX_NETWORK_CONFIG {
                return Err(format!(
                    "network config is {} bytes; the limit is {MAX_NETWORK_CONFIG}",
                    network_config.len()
                ));
            }
        }
        if self.metadata.len() > MAX_METADATA_ENTRIES {
            return Err(format!("at most {MAX_METADATA_ENTRIES} metadata entries"));
        }
        for (key, value) in &self.metadata {
            let key_ok = !key.is_empty()
                && key.len() <= MAX_METADATA_KEY
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
            if !key_ok {
                return Err(format!(
                    "metadata key {key:?} must be 1 to {MAX_METADATA_KEY} of A-Z a-z 0-9 - _ . :"
                ));
            }
            if value.len() > MAX_METADATA_VALUE {
                return Err(format!("metadata value of {key:?} is over {MAX_METADATA_VALUE} bytes"));
            }
        }
        Ok(())
    }

    /// This configuration with `update` applied (not yet validated).
    pub fn updated(&self, update: GuestUpdate) -> GuestConfig {
        let mut next = self.clone();
        if let Some(hostname) = update.hostname {
            next.hostname = hostname;
        }
        if let Some(keys) = update.ssh_keys {
            next.ssh_keys = keys;
        }
        if let Some(user_data) = update.user_data {
            next.user_data = user_data;
        }
        if let Some(network_config) = update.network_config {
            next.network_config = network_config;
        }
        for (key, value) in update.metadata {
            match value {
                Some(value) => next.metadata.insert(key, value),
                None => next.metadata.remove(&key),
            };
        }
        next
    }

    /// The hostname the guest gets: the configured one, else the alias when it is a valid
    /// hostname, else the VM name (always valid).
    pub fn effective_hostname(&self, alias: &str, vm_name: &str) -> String {
        match &self.hostname {
            Some(hostname) => hostname.clone(),
            None if check_hostname(alias).is_ok() => alias.to_string(),
            None => vm_name.to_string(),
        }
    }
}

/// RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens.
pub fn check_hostname(name: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() <= 253 && name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!("hostname {name:?} is not a valid host name (RFC 1123)"))
    }
}

/// One OpenSSH public key line: a known key type, base64 data, an optional comment.
fn check_ssh_key(key: &str) -> Result<(), String> {
    const TYPES: &[&str] = &[
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
        "ssh-dss",
    ];
    let bad = |why: &str| {
        let shown: String = key.chars().take(40).collect();
        Err(format!("SSH key {shown:?}...: {why}"))
    };
    if key.len() > MAX_SSH_KEY {
        return bad("longer than 16 KiB");
    }
    if key.chars().any(|c| c.is_control()) {
        return bad("must be one line");
    }
    let mut parts = key.split_whitespace();
    let (Some(kind), Some(data)) = (parts.next(), parts.next()) else {
        return bad("expected \"TYPE BASE64 [COMMENT]\"");
    };
    if !TYPES.contains(&kind) {
        return bad("unknown key type");
    }
    use base64::Engine;
    match base64::engine::general_purpose::STANDARD.decode(data) {
        Ok(blob) if blob.len() > 4 => Ok(()),
        _ => bad("the key data is not base64"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGz3Fq0iHZ1gkqYQ0f9o7Y1C6oWkPxV2bOe1yXh3u9m5 me@host";

    #[test]
    fn hostnames() {
        for good in ["web-1", "a", "db.example.org", "x1-y2", &"a".repeat(63)] {
            assert!(check_hostname(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "a_b", "a..b", "a b", "é", &"a".repeat(64), "a.", ".a"] {
            assert!(check_hostname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ssh_keys() {
        assert!(check_ssh_key(KEY).is_ok());
        assert!(check_ssh_key(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGz3Fq0iHZ1gkqYQ0f9o7Y1C6oWkPxV2bOe1yXh3u9m5"
        )
        .is_ok());
        for bad in
            ["", "ssh-ed25519", "ssh-foo AAAA", "ssh-ed25519 not*base64", &format!("{KEY}\nssh-rsa AAAA")]
        {
            assert!(check_ssh_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_and_metadata_keys() {
        let mut config = GuestConfig { ssh_keys: vec![KEY.into()], ..Default::default() };
        config.metadata.insert("role".into(), "web".into());
        assert!(config.validate().is_ok());
        config.metadata.insert("bad key".into(), "x".into());
        assert!(config.validate().unwrap_err().contains("bad key"));
        config.metadata.remove("bad key");
        config.user_data = Some("x".repeat(MAX_USER_DATA + 1));
        assert!(config.validate().unwrap_err().contains("user-data"));
    }

    #[test]
    fn updates_merge_and_null_removes() {
        let config = GuestConfig {
            hostname: Some("a".into()),
            user_data: Some("#cloud-config\n".into()),
            metadata: [("k".to_string(), "v".to_string()), ("gone".into(), "x".into())].into(),
            ..Default::default()
        };
        let update: GuestUpdate =
            serde_json::from_str(r#"{"user_data": null, "metadata": {"gone": null, "new": "1"}}"#).unwrap();
        let next = config.updated(update);
        assert_eq!(next.hostname.as_deref(), Some("a"), "absent fields stay");
        assert_eq!(next.user_data, None, "null clears");
        assert_eq!(next.metadata, [("k".to_string(), "v".to_string()), ("new".into(), "1".into())].into());
        assert!(serde_json::from_str::<GuestUpdate>(r#"{"nope": 1}"#).is_err());
    }

    #[test]
    fn effective_hostname_falls_back_to_a_valid_name() {
        let mut config = GuestConfig::default();
        assert_eq!(config.effective_hostname("web-1", "i-0123"), "web-1");
        assert_eq!(config.effective_hostname("my web server", "i-0123"), "i-0123");
        config.hostname = Some("db".into());
        assert_eq!(config.effective_hostname("web-1", "i-0123"), "db");
    }
}
