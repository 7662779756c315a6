//! Named switches: the host bridges instance NICs join, defined in the config file or through
//! the API (kept in `switches.json`), checked in one place, and brought up on the host on
//! demand through a [`HostNetwork`] (iproute2 on Linux, `ifconfig` on FreeBSD).
//!
//! A VLAN of a switch is a bridge of its own (`<bridge>v<id>`), with the uplink's 802.1Q
//! interface for that VLAN (`<uplink>.<id>`) as its way out: NICs on the VLAN join that bridge
//! untagged, and their frames leave the host tagged. This is how vm-bhyve and Proxmox's
//! classic bridges do it; unlike VLAN-filtering bridges, it needs nothing from the kernel but
//! bridges (and 802.1Q only for an uplink), on Linux and on every FreeBSD release.

pub mod freebsd;
pub mod linux;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use service_kit::lock;

use crate::error_code::ErrorCode;

use serde::{Deserialize, Serialize};

use crate::host::runner::ExecError;

use crate::host::MAX_INTERFACE_NAME_LEN;

/// The host side of switches: bridges, their members and 802.1Q interfaces.
pub trait HostNetwork: Send + Sync {
    /// The names of the host's network interfaces.
    fn interfaces(&self) -> Result<Vec<String>, ExecError>;
    /// The names of those that are bridges.
    fn bridges(&self) -> Result<Vec<String>, ExecError>;
    /// Creates the bridge `name` and brings it up.
    fn create_bridge(&self, name: &str) -> Result<(), ExecError>;
    /// Creates `name`, the 802.1Q interface of `parent` for `vlan`, and brings it up.
    fn create_vlan(&self, parent: &str, vlan: u16, name: &str) -> Result<(), ExecError>;
    fn destroy_interface(&self, name: &str) -> Result<(), ExecError>;
    /// Makes `member` a member of `bridge` (if it is not one yet) and brings it up.
    fn add_member(&self, bridge: &str, member: &str) -> Result<(), ExecError>;
}

/// `base` with `suffix`, `base` cut so that the name fits an interface name.
fn suffixed(base: &str, suffix: &str) -> String {
    let keep = MAX_INTERFACE_NAME_LEN.saturating_sub(suffix.len()).min(base.len());
    format!("{}{suffix}", &base[..keep])
}

/// The bridge of VLAN `vlan` of a switch whose bridge is `bridge`: `br-labv10`.
pub fn vlan_bridge_name(bridge: &str, vlan: u16) -> String {
    suffixed(bridge, &format!("v{vlan}"))
}

/// The 802.1Q interface of `uplink` for `vlan`: `eth1.10`.
pub fn vlan_interface_name(uplink: &str, vlan: u16) -> String {
    suffixed(uplink, &format!(".{vlan}"))
}

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("switch {0:?} does not exist")]
    NotFound(String),
    #[error("switch {0:?} already exists")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("switch {0:?} is defined in the config file: change it there")]
    FromConfig(String),
    #[error("switch {switch:?}")]
    Host {
        switch: String,
        #[source]
        source: ExecError,
    },
    #[error("cannot save {path}")]
    Save {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {message}")]
    Load { path: PathBuf, message: String },
}

impl SwitchError {
    pub fn code(&self) -> ErrorCode {
        match self {
            SwitchError::NotFound(_) => ErrorCode::SwitchNotFound,
            SwitchError::Exists(_) => ErrorCode::SwitchExists,
            SwitchError::FromConfig(_) => ErrorCode::SwitchFromConfig,
            SwitchError::Invalid(_) => ErrorCode::InvalidParameter,
            SwitchError::Host { .. } | SwitchError::Save { .. } | SwitchError::Load { .. } => {
                ErrorCode::NetworkError
            }
        }
    }
}

pub use crate::config::SwitchConfig;

/// Where a switch was defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SwitchOrigin {
    Config,
    Api,
}

/// A switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Switch {
    pub name: String,
    /// The host bridge interface.
    pub bridge: String,
    #[serde(default)]
    pub uplink: Option<String>,
    pub origin: SwitchOrigin,
    /// The agent created the bridge (an API switch's bridge then goes with the switch).
    #[serde(default)]
    pub created_bridge: bool,
    /// The VLANs whose bridges (and uplink interfaces) the agent created.
    #[serde(default)]
    pub vlans: Vec<u16>,
}

/// Switch names: what `switch:<name>` in a NIC refers to.
pub fn check_switch_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("switch name {name:?} must be 1 to 32 letters, digits, '-' or '_', starting with a letter or digit"))
    }
}

/// Host interface names (bridges, uplinks): what Linux and FreeBSD both accept.
pub fn check_interface_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_INTERFACE_NAME_LEN
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {name:?} must be an interface name: 1 to {MAX_INTERFACE_NAME_LEN} letters, digits, \
             '-', '_' or '.', starting with a letter"
        ))
    }
}

impl Switch {
    pub fn new(name: &str, config: &SwitchConfig, origin: SwitchOrigin) -> Result<Switch, String> {
        check_switch_name(name)?;
        let bridge = config.bridge.clone().unwrap_or_else(|| name.to_string());
        check_interface_name("bridge", &bridge)?;
        if let Some(uplink) = &config.uplink {
            check_interface_name("uplink", uplink)?;
            if *uplink == bridge {
                return Err(format!("switch {name:?}: the uplink cannot be the bridge itself"));
            }
        }
        Ok(Switch {
            name: name.to_string(),
            bridge,
            uplink: config.uplink.clone(),
            origin,
            created_bridge: false,
            vlans: Vec::new(),
        })
    }

    /// The bridge NICs on `vlan` (`None`: untagged) join.
    pub fn bridge_for(&self, vlan: Option<u16>) -> String {
        match vlan {
            Some(vlan) => vlan_bridge_name(&self.bridge, vlan),
            None => self.bridge.clone(),
        }
    }
}

/// A switch's bridge is either missing (it is then created) or a bridge: NICs cannot join any
/// other kind of interface.
fn check_bridge(interfaces: &[String], bridges: &[String], name: &str) -> Result<(), SwitchError> {
    if interfaces.iter().any(|i| i == name) && !bridges.iter().any(|b| b == name) {
        return Err(SwitchError::Invalid(format!(
            "interface {name:?} exists on this host and is not a bridge"
        )));
    }
    Ok(())
}

/// The switches of this host: those of the config file (fixed) and those made through the
/// API (saved atomically in `switches.json` under the instance state directory).
pub struct Switches {
    host: Arc<dyn HostNetwork>,
    path: PathBuf,
    state: Mutex<BTreeMap<String, Switch>>,
    /// Serialises bringing switches up, so two starts never both create a bridge.
    host_lock: Mutex<()>,
}

impl Switches {
    /// The config's switches plus the saved API ones. A saved switch whose name the config now
    /// uses gives way to the config's.
    pub fn open(
        host: Arc<dyn HostNetwork>,
        config: &BTreeMap<String, SwitchConfig>,
        state_dir: &Path,
    ) -> Result<Switches, SwitchError> {
        let path = state_dir.join("switches.json");
        let mut switches = BTreeMap::new();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let saved: Vec<Switch> = serde_json::from_slice(&bytes)
                    .map_err(|e| SwitchError::Load { path: path.clone(), message: e.to_string() })?;
                for switch in saved {
                    switches.insert(switch.name.clone(), Switch { origin: SwitchOrigin::Api, ..switch });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SwitchError::Load { path, message: e.to_string() }),
        }
        for (name, entry) in config {
            let switch = Switch::new(name, entry, SwitchOrigin::Config).map_err(SwitchError::Invalid)?;
            switches.insert(name.clone(), switch);
        }
        Ok(Switches { host, path, state: Mutex::new(switches), host_lock: Mutex::new(()) })
    }

    pub fn list(&self) -> Vec<Switch> {
        lock(&self.state).values().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Result<Switch, SwitchError> {
        lock(&self.state).get(name).cloned().ok_or_else(|| SwitchError::NotFound(name.to_string()))
    }

    /// The host's network interfaces (to tell which bridges exist).
    pub fn host_interfaces(&self) -> Result<Vec<String>, ExecError> {
        self.host.interfaces()
    }

    /// Adds a switch through the API: its uplink must exist; its bridge is brought up now, so
    /// that a mistake shows here rather than at an instance's start.
    pub fn create(&self, name: &str, config: &SwitchConfig) -> Result<Switch, SwitchError> {
        let mut switch = Switch::new(name, config, SwitchOrigin::Api).map_err(SwitchError::Invalid)?;
        let _host = lock(&self.host_lock);
        {
            let state = lock(&self.state);
            if state.contains_key(name) {
                return Err(SwitchError::Exists(name.to_string()));
            }
            if let Some(taken) = state.values().find(|s| s.bridge == switch.bridge) {
                return Err(SwitchError::Invalid(format!(
                    "bridge {:?} already belongs to switch {:?}",
                    switch.bridge, taken.name
                )));
            }
        }
        let host_error = |source| SwitchError::Host { switch: name.to_string(), source };
        let interfaces = self.host.interfaces().map_err(host_error)?;
        let bridges = self.host.bridges().map_err(host_error)?;
        check_bridge(&interfaces, &bridges, &switch.bridge)?;
        if let Some(uplink) = &switch.uplink {
            if !interfaces.contains(uplink) {
                return Err(SwitchError::Invalid(format!(
                    "uplink {uplink:?} is not an interface of this host"
                )));
            }
        }
        if !interfaces.contains(&switch.bridge) {
            self.host.create_bridge(&switch.bridge).map_err(host_error)?;
            switch.created_bridge = true;
        }
        let attached = match &switch.uplink {
            Some(uplink) => self.host.add_member(&switch.bridge, uplink),
            None => Ok(()),
        };
        let saved = attached.map_err(host_error).and_then(|()| {
            let mut state = lock(&self.state);
            state.insert(name.to_string(), switch.clone());
            self.save(&state).inspect_err(|_| {
                state.remove(name);
            })
        });
        if let Err(error) = saved {
            if switch.created_bridge {
                let _ = self.host.destroy_interface(&switch.bridge);
            }
            return Err(error);
        }
        tracing::info!(switch = name, bridge = %switch.bridge, "switch created");
        Ok(switch)
    }

    /// Removes an API switch (the caller has checked that no NIC uses it), and its bridge if
    /// the agent created it.
    pub fn delete(&self, name: &str) -> Result<(), SwitchError> {
        let _host = lock(&self.host_lock);
        let mut state = lock(&self.state);
        let switch = state.get(name).cloned().ok_or_else(|| SwitchError::NotFound(name.to_string()))?;
        if switch.origin == SwitchOrigin::Config {
            return Err(SwitchError::FromConfig(name.to_string()));
        }
        state.remove(name);
        if let Err(error) = self.save(&state) {
            state.insert(name.to_string(), switch);
            return Err(error);
        }
        drop(state);
        let present = self.host.interfaces().unwrap_or_default();
        let mut created: Vec<String> = Vec::new();
        for vlan in &switch.vlans {
            created.push(vlan_bridge_name(&switch.bridge, *vlan));
            created.extend(switch.uplink.as_deref().map(|uplink| vlan_interface_name(uplink, *vlan)));
        }
        created.extend(switch.created_bridge.then(|| switch.bridge.clone()));
        for interface in created.iter().filter(|i| present.contains(i)) {
            if let Err(error) = self.host.destroy_interface(interface) {
                tracing::warn!(switch = name, %interface, error = %service_kit::ErrorChain(&error), "cannot destroy an interface of the switch");
            }
        }
        tracing::info!(switch = name, "switch deleted");
        Ok(())
    }

    /// Makes the switch ready for NICs on `vlans` (none: untagged only): its bridge and those
    /// of the VLANs exist (created if missing), the uplink and its 802.1Q interfaces are
    /// their members.
    pub fn bring_up(&self, name: &str, vlans: &[u16]) -> Result<(), SwitchError> {
        let switch = self.get(name)?;
        let _host = lock(&self.host_lock);
        let host_error = |source| SwitchError::Host { switch: name.to_string(), source };
        let interfaces = self.host.interfaces().map_err(host_error)?;
        let bridges = self.host.bridges().map_err(host_error)?;
        check_bridge(&interfaces, &bridges, &switch.bridge)?;
        for &vlan in vlans {
            check_bridge(&interfaces, &bridges, &vlan_bridge_name(&switch.bridge, vlan))?;
        }
        if let Some(uplink) = switch.uplink.as_ref().filter(|u| !interfaces.contains(u)) {
            return Err(SwitchError::Invalid(format!(
                "uplink {uplink:?} of switch {name:?} is not an interface of this host"
            )));
        }
        if !interfaces.contains(&switch.bridge) {
            tracing::info!(switch = name, bridge = %switch.bridge, "creating the switch's bridge");
            self.host.create_bridge(&switch.bridge).map_err(host_error)?;
        }
        if let Some(uplink) = &switch.uplink {
            self.host.add_member(&switch.bridge, uplink).map_err(host_error)?;
        }
        let mut created = Vec::new();
        for &vlan in vlans {
            let bridge = vlan_bridge_name(&switch.bridge, vlan);
            if !interfaces.contains(&bridge) {
                tracing::info!(switch = name, vlan, %bridge, "creating the bridge of a VLAN");
                self.host.create_bridge(&bridge).map_err(host_error)?;
                created.push(vlan);
            }
            if let Some(uplink) = &switch.uplink {
                let tagged = vlan_interface_name(uplink, vlan);
                if !interfaces.contains(&tagged) {
                    self.host.create_vlan(uplink, vlan, &tagged).map_err(host_error)?;
                }
                self.host.add_member(&bridge, &tagged).map_err(host_error)?;
            }
        }
        if !created.is_empty() {
            let mut state = lock(&self.state);
            if let Some(entry) = state.get_mut(name) {
                entry.vlans.extend(created);
                entry.vlans.sort_unstable();
                entry.vlans.dedup();
                if entry.origin == SwitchOrigin::Api {
                    self.save(&state)?;
                }
            }
        }
        Ok(())
    }

    fn save(&self, state: &BTreeMap<String, Switch>) -> Result<(), SwitchError> {
        let api: Vec<&Switch> = state.values().filter(|s| s.origin == SwitchOrigin::Api).collect();
        let bytes = serde_json::to_vec_pretty(&api).expect("switches serialise");
        service_kit::durable::write_file(&self.path, &bytes)
            .map_err(|source| SwitchError::Save { path: self.path.clone(), source })
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A host network in memory, for tests of the logic above it.
    use super::*;

    #[derive(Default)]
    pub struct FakeNetwork {
        pub interfaces: Mutex<Vec<String>>,
        pub bridges: Mutex<Vec<String>>,
        pub calls: Mutex<Vec<String>>,
    }

    impl FakeNetwork {
        /// A host with these interfaces; those whose names start with `br` are bridges.
        pub fn with(interfaces: &[&str]) -> Arc<FakeNetwork> {
            let fake = FakeNetwork::default();
            *lock(&fake.interfaces) = interfaces.iter().map(|s| s.to_string()).collect();
            *lock(&fake.bridges) =
                interfaces.iter().filter(|s| s.starts_with("br")).map(|s| s.to_string()).collect();
            Arc::new(fake)
        }
        pub fn calls(&self) -> Vec<String> {
            lock(&self.calls).clone()
        }
    }

    impl HostNetwork for FakeNetwork {
        fn interfaces(&self) -> Result<Vec<String>, ExecError> {
            Ok(lock(&self.interfaces).clone())
        }
        fn bridges(&self) -> Result<Vec<String>, ExecError> {
            Ok(lock(&self.bridges).clone())
        }
        fn create_bridge(&self, name: &str) -> Result<(), ExecError> {
            lock(&self.calls).push(format!("bridge {name}"));
            lock(&self.interfaces).push(name.to_string());
            lock(&self.bridges).push(name.to_string());
            Ok(())
        }
        fn create_vlan(&self, parent: &str, vlan: u16, name: &str) -> Result<(), ExecError> {
            lock(&self.calls).push(format!("vlan {name} on {parent} id {vlan}"));
            lock(&self.interfaces).push(name.to_string());
            Ok(())
        }
        fn destroy_interface(&self, name: &str) -> Result<(), ExecError> {
            lock(&self.calls).push(format!("destroy {name}"));
            lock(&self.interfaces).retain(|i| i != name);
            lock(&self.bridges).retain(|i| i != name);
            Ok(())
        }
        fn add_member(&self, bridge: &str, member: &str) -> Result<(), ExecError> {
            lock(&self.calls).push(format!("member {member} of {bridge}"));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeNetwork;
    use super::*;

    fn config(entries: &[(&str, Option<&str>, Option<&str>)]) -> BTreeMap<String, SwitchConfig> {
        entries
            .iter()
            .map(|(name, bridge, uplink)| {
                let entry =
                    SwitchConfig { bridge: bridge.map(str::to_string), uplink: uplink.map(str::to_string) };
                (name.to_string(), entry)
            })
            .collect()
    }

    #[test]
    fn names_are_checked() {
        for good in ["lab", "public-1", "a_b", "9"] {
            assert!(check_switch_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-lab", "a b", "a/b", "..", &"x".repeat(33)] {
            assert!(check_switch_name(bad).is_err(), "{bad}");
        }
        assert!(check_interface_name("bridge", "br-lab.10").is_ok());
        for bad in ["", "1br", "averyverylongname", "br lab", "br/x"] {
            assert!(check_interface_name("bridge", bad).is_err(), "{bad}");
        }
        let uplink_is_bridge = SwitchConfig { bridge: Some("br0".into()), uplink: Some("br0".into()) };
        assert!(Switch::new("lab", &uplink_is_bridge, SwitchOrigin::Api).is_err());
    }

    #[test]
    fn api_switches_are_saved_and_config_switches_are_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let host = FakeNetwork::with(&["lo", "eth0", "br-old"]);
        let cfg = config(&[("public", Some("br-old"), Some("eth0"))]);
        let switches = Switches::open(host.clone(), &cfg, dir.path()).unwrap();

        let lab =
            switches.create("lab", &SwitchConfig { bridge: None, uplink: Some("eth0".into()) }).unwrap();
        assert_eq!((lab.bridge.as_str(), lab.created_bridge), ("lab", true));
        assert_eq!(host.calls(), ["bridge lab", "member eth0 of lab"]);
        assert!(matches!(switches.create("lab", &SwitchConfig::default()), Err(SwitchError::Exists(_))));
        let bad_uplink = SwitchConfig { bridge: None, uplink: Some("eth9".into()) };
        assert!(matches!(switches.create("x", &bad_uplink), Err(SwitchError::Invalid(_))));
        let same_bridge = SwitchConfig { bridge: Some("br-old".into()), uplink: None };
        assert!(matches!(switches.create("y", &same_bridge), Err(SwitchError::Invalid(_))));
        assert!(matches!(switches.delete("public"), Err(SwitchError::FromConfig(_))));
        let not_a_bridge = SwitchConfig { bridge: Some("eth0".into()), uplink: None };
        let error = switches.create("z", &not_a_bridge).unwrap_err();
        assert!(error.to_string().contains("is not a bridge"), "{error}");

        // Reopened: the API switch is back, the config one comes from the config again.
        let again = Switches::open(host.clone(), &cfg, dir.path()).unwrap();
        let names: Vec<_> = again.list().into_iter().map(|s| (s.name, s.origin)).collect();
        assert_eq!(
            names,
            [("lab".to_string(), SwitchOrigin::Api), ("public".to_string(), SwitchOrigin::Config)]
        );

        // A VLAN brought up on it is remembered (saved), and goes with the switch.
        again.bring_up("lab", &[7]).unwrap();
        let reopened = Switches::open(host.clone(), &cfg, dir.path()).unwrap();
        assert_eq!(reopened.get("lab").unwrap().vlans, [7]);
        reopened.delete("lab").unwrap();
        let calls = host.calls();
        assert_eq!(calls[calls.len() - 3..], ["destroy labv7", "destroy eth0.7", "destroy lab"]);
        let again = reopened;
        assert!(matches!(again.delete("lab"), Err(SwitchError::NotFound(_))));
        let reopened = Switches::open(host, &cfg, dir.path()).unwrap();
        assert_eq!(reopened.list().len(), 1);
    }

    #[test]
    fn bringing_up_creates_what_is_missing_once() {
        let dir = tempfile::tempdir().unwrap();
        let host = FakeNetwork::with(&["lo", "eth1"]);
        let cfg = config(&[("public", Some("br-pub"), Some("eth1")), ("lab", None, None)]);
        let switches = Switches::open(host.clone(), &cfg, dir.path()).unwrap();
        switches.bring_up("public", &[10, 20]).unwrap();
        switches.bring_up("public", &[10]).unwrap();
        switches.bring_up("lab", &[5]).unwrap();
        assert_eq!(
            host.calls(),
            [
                "bridge br-pub",
                "member eth1 of br-pub",
                "bridge br-pubv10",
                "vlan eth1.10 on eth1 id 10",
                "member eth1.10 of br-pubv10",
                "bridge br-pubv20",
                "vlan eth1.20 on eth1 id 20",
                "member eth1.20 of br-pubv20",
                // Again: only memberships are made sure of.
                "member eth1 of br-pub",
                "member eth1.10 of br-pubv10",
                // No uplink: VLAN bridges without a way out.
                "bridge lab",
                "bridge labv5",
            ]
        );
        assert_eq!(switches.get("public").unwrap().bridge_for(Some(10)), "br-pubv10");
        assert_eq!(switches.get("public").unwrap().bridge_for(None), "br-pub");
        assert!(matches!(switches.bring_up("nope", &[]), Err(SwitchError::NotFound(_))));
        let wrong = config(&[("not-a-bridge", Some("eth1"), None), ("no-uplink", None, Some("eth7"))]);
        let switches = Switches::open(host.clone(), &wrong, dir.path()).unwrap();
        let calls = host.calls().len();
        for name in ["not-a-bridge", "no-uplink"] {
            assert!(matches!(switches.bring_up(name, &[]), Err(SwitchError::Invalid(_))), "{name}");
        }
        assert_eq!(host.calls().len(), calls, "nothing done on the host");
    }

    #[test]
    fn vlan_names_fit_interface_names() {
        assert_eq!(vlan_bridge_name("br0", 10), "br0v10");
        assert_eq!(vlan_bridge_name("averylongbridge", 4094), "averylongbv4094");
        assert_eq!(vlan_bridge_name("averylongbridge", 4094).len(), 15);
        assert_eq!(vlan_interface_name("enp0s31f6", 4094), "enp0s31f6.4094");
        assert_eq!(vlan_interface_name("enx001122334455", 10), "enx001122334.10");
    }

    #[test]
    fn a_damaged_switch_file_is_an_error_not_an_empty_list() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("switches.json"), b"{not json").unwrap();
        let result = Switches::open(FakeNetwork::with(&[]), &BTreeMap::new(), dir.path());
        assert!(matches!(result, Err(SwitchError::Load { .. })));
    }
}
