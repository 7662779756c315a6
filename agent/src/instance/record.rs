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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NicRecord {
    /// Generated once at create, kept for the instance's life.
    pub mac: String,
    /// `user` (QEMU user-mode network), `switch:<name>` or `bridge:<host bridge>`.
    pub network: String,
    /// The VLAN of its switch the NIC is on (untagged, as on an access port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
}

/// What a NIC's network string names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicNetwork<'a> {
    User,
    Switch(&'a str),
    /// A host bridge the agent does not manage.
    Bridge(&'a str),
}

/// What a network string names (checked by [`parse_network`]).
fn network_target(network: &str) -> NicNetwork<'_> {
    match network.split_once(':') {
        Some(("switch", name)) => NicNetwork::Switch(name),
        Some(("bridge", name)) => NicNetwork::Bridge(name),
        _ => NicNetwork::User,
    }
}

impl NicRecord {
    pub fn target(&self) -> NicNetwork<'_> {
        network_target(&self.network)
    }
}

/// A NIC as a create request asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NicRequest {
    /// `user`, `switch:<name>` or `bridge:<host bridge>`.
    pub network: String,
    #[serde(default)]
    pub vlan: Option<u16>,
    /// Default: generated.
    #[serde(default)]
    pub mac: Option<String>,
}

impl NicRequest {
    pub fn target(&self) -> NicNetwork<'_> {
        network_target(&self.network)
    }

    pub fn on(network: &str) -> NicRequest {
        NicRequest { network: network.to_string(), vlan: None, mac: None }
    }

    /// The short form the CLI and the API take: `<network>[,vlan=<id>][,mac=<mac>]`.
    pub fn parse(text: &str) -> Result<NicRequest, String> {
        let mut parts = text.split(',');
        let mut nic = NicRequest::on(parts.next().unwrap_or_default());
        for option in parts {
            match option.split_once('=') {
                Some(("vlan", id)) if nic.vlan.is_none() => {
                    nic.vlan =
                        Some(id.parse().map_err(|_| format!("NIC {text:?}: vlan {id:?} is not a number"))?)
                }
                Some(("mac", mac)) if nic.mac.is_none() => nic.mac = Some(mac.to_string()),
                _ => {
                    return Err(format!(
                        "NIC {text:?}: options are vlan=<1-4094> and mac=<xx:xx:xx:xx:xx:xx>, each once"
                    ))
                }
            }
        }
        Ok(nic)
    }

    /// Checks it; returns the MAC asked for, normalised.
    pub fn check(&self) -> Result<Option<String>, String> {
        parse_network(&self.network)?;
        if let Some(vlan) = self.vlan {
            if !(1..=4094).contains(&vlan) {
                return Err(format!("vlan must be between 1 and 4094, not {vlan}"));
            }
            if !matches!(self.target(), NicNetwork::Switch(_)) {
                return Err("only a NIC on a switch can have a VLAN".into());
            }
        }
        self.mac.as_deref().map(check_mac).transpose()
    }
}

/// A unicast MAC address, written `xx:xx:xx:xx:xx:xx`; returned in lower case.
pub fn check_mac(text: &str) -> Result<String, String> {
    let invalid = || format!("MAC {text:?} must be six hex bytes, xx:xx:xx:xx:xx:xx");
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| if b.len() == 2 { u8::from_str_radix(b, 16).ok() } else { None })
        .collect::<Option<_>>()
        .ok_or_else(invalid)?;
    if bytes.len() != 6 {
        return Err(invalid());
    }
    if bytes[0] & 1 == 1 || bytes.iter().all(|b| *b == 0) {
        return Err(format!("MAC {text:?} is not a unicast address"));
    }
    Ok(text.to_ascii_lowercase())
}

/// One state change, for the instance's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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

/// Checks a NIC network as given to the API: `user`, `switch:<name>` or `bridge:<name>`.
pub fn parse_network(text: &str) -> Result<String, String> {
    let ok = match text.split_once(':') {
        None => text == "user",
        Some(("switch", name)) => crate::network::check_switch_name(name).is_ok(),
        Some(("bridge", name)) => crate::network::check_interface_name("bridge", name).is_ok(),
        Some(_) => false,
    };
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!(
            "network {text:?} must be \"user\", \"switch:<switch name>\" or \"bridge:<host bridge interface>\""
        ))
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
        assert_eq!(parse_network("switch:lab").unwrap(), "switch:lab");
        for bad in [
            "",
            "bridge:",
            "bridge:a b",
            "tap",
            "bridge:averyveryverylongname",
            "user:x",
            "switch:",
            "switch:a/b",
        ] {
            assert!(parse_network(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nic_requests() {
        let nic = NicRequest::parse("switch:lab,vlan=10,mac=58:9C:FC:00:00:01").unwrap();
        assert_eq!(nic.vlan, Some(10));
        assert_eq!(nic.check().unwrap().as_deref(), Some("58:9c:fc:00:00:01"));
        assert_eq!(NicRequest::parse("user").unwrap(), NicRequest::on("user"));
        for bad in ["switch:lab,vlan=x", "switch:lab,speed=1", "switch:lab,vlan=1,vlan=2"] {
            assert!(NicRequest::parse(bad).is_err(), "{bad}");
        }
        for bad in [
            "user,vlan=10",
            "bridge:br0,vlan=10",
            "switch:lab,vlan=0",
            "switch:lab,vlan=4095",
            "switch:lab,mac=01:00:5e:00:00:01",
            "switch:lab,mac=00:00:00:00:00:00",
            "switch:lab,mac=58:9c:fc:00:00",
            "switch:lab,mac=58-9c-fc-00-00-01",
            "switch:lab,mac=58:9c:fc:00:00:0g",
        ] {
            assert!(NicRequest::parse(bad).unwrap().check().is_err(), "{bad}");
        }
        let record = NicRecord { mac: "58:9c:fc:00:00:01".into(), network: "switch:lab".into(), vlan: None };
        assert_eq!(record.target(), NicNetwork::Switch("lab"));
        let old: NicRecord =
            serde_json::from_str(r#"{"mac":"58:9c:fc:00:00:01","network":"bridge:br0"}"#).unwrap();
        assert_eq!((old.target(), old.vlan), (NicNetwork::Bridge("br0"), None));
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
