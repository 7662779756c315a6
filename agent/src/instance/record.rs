//! What the agent persists about an instance (JSON, in a file or a ZFS user property), and
//! the checks a create request goes through.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::state::InstanceState;
use crate::guest::GuestConfig;
use crate::hypervisor::Firmware;

/// How many state changes an instance remembers.
const HISTORY_LEN: usize = 16;

/// A NIC of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicRecord {
    /// Generated once at create, kept for the instance's life.
    pub mac: String,
    /// `user` (QEMU user-mode network) or `bridge:<name>`.
    pub network: String,
}

/// One state change, for the instance's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub at: String,
    pub state: InstanceState,
    pub reason: String,
}

/// An instance as the agent keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub uuid: Uuid,
    pub alias: String,
    /// The image the disk was cloned from; `None`: created blank (for an ISO install).
    pub image: Option<Uuid>,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// Size of the boot disk (at least the image's).
    pub disk_mib: u64,
    pub nics: Vec<NicRecord>,
    pub firmware: Firmware,
    /// The hypervisor's name for the VM: short (FreeBSD limits VM names) and unique.
    pub vm_name: String,
    pub state: InstanceState,
    /// Why it is in its state (e.g. "guest powered off", "exit status 3").
    pub reason: String,
    /// The hypervisor process of the current run, while running.
    pub pid: Option<u32>,
    pub created_at: String,
    /// Latest last.
    pub history: Vec<Transition>,
    /// What the guest is told about itself (records older than this field have none).
    #[serde(default)]
    pub guest: GuestConfig,
    /// The name of an installer ISO attached as a CD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdrom: Option<String>,
    /// Boot from the CD rather than the disk.
    #[serde(default)]
    pub boot_from_cdrom: bool,
}

impl InstanceRecord {
    /// The VM name for an instance uuid: `i-` and the first 12 hex digits.
    pub fn vm_name_for(uuid: &Uuid) -> String {
        format!("i-{}", &uuid.simple().to_string()[..12])
    }

    /// Moves to `state`, remembering when and why.
    pub fn set_state(&mut self, state: InstanceState, reason: impl Into<String>) {
        self.state = state;
        self.reason = reason.into();
        self.history.push(Transition { at: now(), state, reason: self.reason.clone() });
        if self.history.len() > HISTORY_LEN {
            self.history.drain(..self.history.len() - HISTORY_LEN);
        }
    }
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A MAC in the 58:9c:fc prefix bhyve uses for its own, with the last three bytes random; the
/// caller retries on a clash with an existing instance.
pub fn random_mac() -> String {
    let bytes = Uuid::new_v4().into_bytes();
    format!("58:9c:fc:{:02x}:{:02x}:{:02x}", bytes[0], bytes[1], bytes[2])
}

/// Parses a NIC network as given to the API: `user` or `bridge:<name>`.
pub fn parse_network(text: &str) -> Result<String, String> {
    match text.split_once(':') {
        None if text == "user" => Ok(text.to_string()),
        Some(("bridge", name))
            if !name.is_empty()
                && name.len() <= 15
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            Ok(text.to_string())
        }
        _ => Err(format!("network {text:?} must be \"user\" or \"bridge:<interface name>\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_macs_and_networks() {
        let uuid = Uuid::parse_str("6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b").unwrap();
        assert_eq!(InstanceRecord::vm_name_for(&uuid), "i-6de01e97d7ec");
        let mac = random_mac();
        assert!(mac.starts_with("58:9c:fc:") && mac.len() == 17, "{mac}");
        assert_ne!(random_mac(), random_mac());
        assert_eq!(parse_network("user").unwrap(), "user");
        assert_eq!(parse_network("bridge:br0").unwrap(), "bridge:br0");
        for bad in ["", "bridge:", "bridge:a b", "tap", "bridge:averyveryverylongname", "user:x"] {
            assert!(parse_network(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn history_is_bounded() {
        let mut record: InstanceRecord = serde_json::from_value(serde_json::json!({
            "uuid": Uuid::nil(), "alias": "a", "image": Uuid::nil(), "vcpus": 1, "memory_mib": 64,
            "disk_mib": 32, "nics": [], "firmware": "bios", "vm_name": "i-0", "state": "stopped",
            "reason": "", "pid": null, "created_at": "", "history": []
        }))
        .unwrap();
        for i in 0..40 {
            record.set_state(InstanceState::Running, format!("start {i}"));
        }
        assert_eq!(record.history.len(), HISTORY_LEN);
        assert_eq!(record.history.last().unwrap().reason, "start 39");
        assert_eq!(record.reason, "start 39");
    }
}
