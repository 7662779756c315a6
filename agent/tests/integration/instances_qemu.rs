//! Instances for real under QEMU (TCG): the test guest of `tests/guest/` is published to a
//! real `imgapi` server, imported by the agent, and run through its whole life over the REST
//! API: boot (marker on the console), graceful stop via QMP, start, reboot, an agent restart
//! while it runs, a kill from outside, and destroy. Needs `AGENT_TEST_GUEST` (see
//! `tests/guest/README.md`); skipped without it, except in CI, where that is a failure.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::{compress, wait_until, Agent, Imgapi, TOKEN};
use serde_json::{json, Value};

const BOOT_LIMIT: Duration = Duration::from_secs(120);

const SSH_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGz3Fq0iHZ1gkqYQ0f9o7Y1C6oWkPxV2bOe1yXh3u9m5 test@agent";

pub(crate) fn guest_dir() -> Option<PathBuf> {
    match std::env::var_os("AGENT_TEST_GUEST") {
        Some(dir) => Some(PathBuf::from(dir)),
        None if std::env::var_os("CI").is_some() => panic!("AGENT_TEST_GUEST is not set in CI"),
        None => {
            eprintln!("skipping: AGENT_TEST_GUEST is not set (see agent/tests/guest/README.md)");
            None
        }
    }
}

impl Agent {
    fn instance(&self, uuid: &str) -> Value {
        let (status, body) = self.send(reqwest::Method::GET, &format!("/instances/{uuid}"), None);
        assert_eq!(status, 200, "{body}");
        body
    }

    fn console(&self, uuid: &str) -> String {
        let response = self
            .client
            .get(self.url(&format!("/instances/{uuid}/console")))
            .bearer_auth(TOKEN)
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
        String::from_utf8_lossy(&response.bytes().unwrap()).into_owned()
    }

    /// Waits until the console shows `marker` `count` times.
    fn wait_console(&self, uuid: &str, marker: &str, count: usize) -> String {
        wait_until(&format!("{count}x {marker} on the console of {uuid}"), BOOT_LIMIT, || {
            let text = self.console(uuid);
            if text.matches(marker).count() >= count {
                Ok(text)
            } else {
                Err(text)
            }
        })
    }

    fn wait_state(&self, uuid: &str, state: &str) -> Value {
        wait_until(&format!("instance {uuid} {state}"), Duration::from_secs(60), || {
            let instance = self.instance(uuid);
            if instance["state"] == state {
                Ok(instance)
            } else {
                Err(instance.to_string())
            }
        })
    }
}

impl Agent {
    /// Follows the console stream until `marker` shows up in what arrives after the backlog.
    fn follow_until(&self, uuid: &str, marker: &'static str) -> std::thread::JoinHandle<String> {
        use std::io::Read;
        let url = self.url(&format!("/instances/{uuid}/console?follow=true"));
        let client = self.client.clone();
        std::thread::spawn(move || {
            let mut response = client.get(url).bearer_auth(TOKEN).send().unwrap();
            assert_eq!(response.status(), 200);
            let mut seen = Vec::new();
            let mut buffer = [0u8; 4096];
            let started = Instant::now();
            while started.elapsed() < BOOT_LIMIT {
                let n = response.read(&mut buffer).unwrap();
                assert!(n > 0, "the stream ended");
                seen.extend_from_slice(&buffer[..n]);
                if String::from_utf8_lossy(&seen).matches(marker).count() >= 2 {
                    break;
                }
            }
            String::from_utf8_lossy(&seen).into_owned()
        })
    }
}

fn is_alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
}

#[test]
fn a_guest_boots_stops_starts_reboots_survives_an_agent_restart_and_is_destroyed() {
    let Some(guest) = guest_dir() else { return };
    let disk = std::fs::read(guest.join("disk.raw")).unwrap();
    let imgapi = Imgapi::start();
    let image = imgapi.publish("test-guest", &compress(&disk, "gzip"), "gzip", None);
    let dir = tempfile::tempdir().unwrap();
    let mut agent =
        Agent::start_in(dir.path(), &[format!("http://admin:secret@{}", imgapi.server.addr)], |_| {});
    use reqwest::Method as M;

    let (status, body) = agent.send(M::POST, "/images", Some(json!({"uuid": image})));
    assert_eq!(status, 200, "{body}");

    // Bad requests first: nothing is created.
    let (status, body) = agent.send(M::POST, "/instances", Some(json!({"ima": image, "mem": 8})));
    assert_eq!((status, body["code"].as_str()), (422, Some("InvalidParameter")), "{body}");
    let (status, body) = agent.send(M::POST, "/instances", Some(json!({"ima": image, "disk_mib": 1})));
    assert_eq!(status, 422, "disk smaller than the image: {body}");
    // An image that is not on this host is not found, as everywhere else (it was a 422 here).
    let (status, body) = agent.send(M::POST, "/instances", Some(json!({"ima": uuid::Uuid::new_v4()})));
    assert_eq!((status, body["code"].as_str()), (404, Some("ImageNotFound")), "{body}");
    let unauthorized =
        agent.client.post(agent.url("/instances")).json(&json!({"ima": image})).send().unwrap();
    assert_eq!(unauthorized.status(), 401);
    assert_eq!(agent.send(M::GET, "/instances", None).1, json!([]));

    let (status, body) =
        agent.send(M::POST, "/instances", Some(json!({"ima": image, "hostname": "not_a_hostname"})));
    assert_eq!((status, body["code"].as_str()), (422, Some("InvalidParameter")), "{body}");

    // The seed's create: {"ima","mem","cpu"} creates and starts; with what the guest is told.
    let (status, created) = agent.send(
        M::POST,
        "/instances",
        Some(json!({"ima": image, "mem": 256, "cpu": 1, "disk_mib": 64, "hostname": "web-1",
                    "ssh_keys": [SSH_KEY], "user_data": "#cloud-config\npassword: secret\n",
                    "metadata": {"role": "web"}})),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["uuid"].as_str().unwrap().to_string();
    assert_eq!(created["state"], "running");
    let mac = created["nics"][0]["mac"].clone();
    let console = agent.wait_console(&id, "GUEST-BOOT-OK", 1);
    // The guest read its NoCloud seed (a FAT disk labelled CIDATA).
    for line in [
        format!("GUEST-META instance-id={id}"),
        "GUEST-META local-hostname=web-1".to_string(),
        format!("GUEST-META public-key={SSH_KEY}"),
    ] {
        assert!(console.contains(&line), "{line:?} not in the console:\n{console}");
    }
    // ... and asked the HTTP metadata service (169.254.169.254, forwarded by QEMU to this
    // instance's own socket).
    for line in [
        "GUEST-HTTP local-hostname=web-1".to_string(),
        format!("GUEST-HTTP public-keys/0/openssh-key={SSH_KEY}"),
    ] {
        assert!(console.contains(&line), "{line:?} not in the console:\n{console}");
    }
    // A second guest, asking the same address the same way, is told about itself only. (Its
    // disk has the default size: the image's manifest says 8 MiB for a 32 MiB disk, and the
    // instance still gets all of it.)
    let (status, other) =
        agent.send(M::POST, "/instances", Some(json!({"ima": image, "mem": 256, "hostname": "other-guest"})));
    assert_eq!(status, 201, "{other}");
    let other_id = other["uuid"].as_str().unwrap().to_string();
    let other_console = agent.wait_console(&other_id, "GUEST-BOOT-OK", 1);
    assert!(other_console.contains("GUEST-HTTP local-hostname=other-guest"), "{other_console}");
    assert!(!other_console.contains("web-1") && !other_console.contains("openssh-key"), "{other_console}");
    let (status, _) = agent.send(M::DELETE, &format!("/instances/{other_id}"), None);
    assert_eq!(status, 204);

    // Reads need no credentials: they show the user-data's size, never its content.
    assert_eq!(created["guest"]["user_data_bytes"], 31);
    assert!(created["guest"].get("user_data").is_none() && !created.to_string().contains("secret"));
    let anonymous = agent.client.get(agent.url(&format!("/instances/{id}/guest"))).send().unwrap();
    assert_eq!(anonymous.status(), 401);
    let (status, guest) = agent.send(M::GET, &format!("/instances/{id}/guest"), None);
    assert_eq!((status, guest["user_data"].as_str()), (200, Some("#cloud-config\npassword: secret\n")));
    assert_eq!(guest["metadata"], json!({"role": "web"}));
    let console_log = dir.path().join("instances").join(format!("{id}.log"));
    assert!(std::fs::read_to_string(&console_log).unwrap().contains("GUEST-BOOT-OK"), "console log on disk");
    let qcow2 = dir.path().join("instances").join(&id).join("disk0.qcow2");
    assert!(qcow2.exists(), "a qcow2 overlay, not a copy");

    // Two readers follow the console at once; each gets the backlog and new output.
    let readers = [agent.follow_until(&id, "GUEST-ALIVE"), agent.follow_until(&id, "GUEST-ALIVE")];
    for reader in readers {
        let seen = reader.join().unwrap();
        assert!(seen.contains("GUEST-BOOT-OK") && seen.matches("GUEST-ALIVE").count() >= 2, "{seen}");
    }
    let response = agent
        .client
        .post(agent.url(&format!("/instances/{id}/console")))
        .bearer_auth(TOKEN)
        .body("\r")
        .send()
        .unwrap();
    assert_eq!(response.status(), 204, "input reaches the serial port");

    // The CLI: a table for people, JSON for scripts, consoles by alias.
    let listed = agent.cli(&["instances", "list"]);
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success() && table.contains(&id) && table.contains("running"), "{table}");
    let got = agent.cli(&["--json", "instances", "get", created["alias"].as_str().unwrap()]);
    let got: Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!(got["uuid"], id.as_str());
    let console = agent.cli(&["console", &id]);
    assert!(String::from_utf8_lossy(&console.stdout).contains("GUEST-BOOT-OK"));
    let refused = agent.cli(&["instances", "start", &id]);
    assert_eq!(refused.status.code(), Some(4), "conflict exit code");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("InstanceAlreadyRunning"));

    // Refused transitions are 409s that say why; the image cannot go while used.
    let (status, body) = agent.send(M::POST, &format!("/instances/{id}?action=start"), None);
    assert_eq!((status, body["code"].as_str()), (409, Some("InstanceAlreadyRunning")));
    let (status, body) = agent.send(M::DELETE, &format!("/images/{image}"), None);
    assert_eq!((status, body["code"].as_str()), (409, Some("ImageInUse")));

    // Graceful stop through QMP (the seed's PUT): the guest sees the power button.
    let (status, stopped) = agent.send(M::PUT, &format!("/instances/{id}"), None);
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["state"], "stopped");
    assert!(stopped["reason"].as_str().unwrap().contains("powered off"), "{stopped}");
    agent.wait_console(&id, "GUEST-POWEROFF", 1);
    let (status, body) = agent.send(M::PUT, &format!("/instances/{id}"), None);
    assert_eq!((status, body["code"].as_str()), (409, Some("InstanceNotRunning")));

    // A new hostname, from the CLI; a bad one is refused and changes nothing.
    let (status, body) =
        agent.send(M::PATCH, &format!("/instances/{id}/guest"), Some(json!({"hostname": "-bad"})));
    assert_eq!((status, body["code"].as_str()), (422, Some("InvalidParameter")), "{body}");
    let updated = agent.cli(&["instances", "update", &id, "--hostname", "web-2", "--unset", "role"]);
    assert!(updated.status.success(), "{}", String::from_utf8_lossy(&updated.stderr));
    let (_, guest) = agent.send(M::GET, &format!("/instances/{id}/guest"), None);
    assert_eq!((guest["hostname"].as_str(), guest.get("metadata")), (Some("web-2"), None), "{guest}");

    // Start again (the seed's POST); output of the earlier run is still there, and the guest
    // is told its new name.
    let (status, body) = agent.send(M::POST, &format!("/instances/{id}"), None);
    assert_eq!((status, body["state"].as_str()), (200, Some("running")), "{body}");
    let console = agent.wait_console(&id, "GUEST-BOOT-OK", 2);
    assert!(console.contains("GUEST-META local-hostname=web-2"), "{console}");

    // Reboot: powered off and started again by the supervisor; the answer waits for the new
    // run and shows it.
    let (status, body) = agent.send(M::POST, &format!("/instances/{id}?action=reboot"), None);
    assert_eq!((status, body["state"].as_str()), (200, Some("running")), "{body}");
    assert!(body["reason"].as_str().unwrap().starts_with("rebooted on request"), "{body}");
    agent.wait_console(&id, "GUEST-BOOT-OK", 3);
    let instance = agent.wait_state(&id, "running");
    let history: Vec<&str> =
        instance["history"].as_array().unwrap().iter().map(|t| t["reason"].as_str().unwrap()).collect();
    assert!(history.iter().any(|r| r.contains("rebooted on request")), "{history:?}");

    // Agent restart while it runs: found running, same pid, console still flowing, stop works.
    let pid = instance["pid"].as_u64().unwrap();
    agent.restart();
    let adopted = agent.instance(&id);
    assert_eq!((adopted["state"].as_str(), adopted["pid"].as_u64()), (Some("running"), Some(pid)));
    assert_eq!(adopted["nics"][0]["mac"], mac, "the MAC is kept");
    let alive_before = agent.console(&id).matches("GUEST-ALIVE").count();
    agent.wait_console(&id, "GUEST-ALIVE", alive_before + 2);
    let (status, stopped) = agent.send(M::POST, &format!("/instances/{id}?action=stop"), None);
    assert_eq!((status, stopped["state"].as_str()), (200, Some("stopped")), "{stopped}");
    assert!(!is_alive(pid), "qemu {pid} is gone");

    // Killed from outside: never stuck in running.
    let (_, started) = agent.send(M::POST, &format!("/instances/{id}?action=start"), None);
    agent.wait_console(&id, "GUEST-BOOT-OK", 4);
    let pid = started["pid"].as_u64().unwrap();
    use agent::host::runner::{CommandRunner, HostRunner, Signal};
    HostRunner.signal(pid as u32, Signal::Kill).unwrap();
    let failed = agent.wait_state(&id, "failed");
    assert!(failed["reason"].as_str().unwrap().contains("killed"), "{failed}");

    // Destroy (the seed's DELETE, on a running instance: stopped first, then destroyed): the
    // overlay and record are gone, the image stays.
    let (_, started) = agent.send(M::POST, &format!("/instances/{id}"), None);
    assert_eq!(started["state"], "running");
    agent.wait_console(&id, "GUEST-BOOT-OK", 5);
    let pid = started["pid"].as_u64().unwrap();
    let (status, _) = agent.send(M::DELETE, &format!("/instances/{id}"), None);
    assert_eq!(status, 204);
    assert!(!is_alive(pid));
    assert!(!dir.path().join("instances").join(&id).exists());
    assert!(!console_log.exists());
    let (status, _) = agent.send(M::GET, &format!("/instances/{id}"), None);
    assert_eq!(status, 404);
    let (status, _) = agent.send(M::GET, &format!("/images/{image}"), None);
    assert_eq!(status, 200);
    let (_, history) = agent.send(M::GET, "/instances?destroyed=true", None);
    assert_eq!(history[0]["state"], "destroyed");
}

/// A network namespace made by a test, deleted (with every interface in it) when dropped.
struct Netns {
    name: String,
}

impl Netns {
    /// `None` (the test is skipped) where namespaces cannot be made, except in CI.
    fn create() -> Option<Netns> {
        let name = format!("agent-test-{}", std::process::id());
        #[allow(clippy::disallowed_methods)] // test set-up, outside the agent
        let made = std::process::Command::new("/usr/sbin/ip").args(["netns", "add", &name]).status();
        match made {
            Ok(status) if status.success() => Some(Netns { name }),
            _ if std::env::var_os("CI").is_some() => panic!("cannot create a network namespace in CI"),
            _ => {
                eprintln!("skipping: cannot create a network namespace (needs root)");
                None
            }
        }
    }

    /// `ip -n <ns> args...`, its output.
    fn ip(&self, args: &[&str]) -> String {
        #[allow(clippy::disallowed_methods)] // test checks, outside the agent
        let output =
            std::process::Command::new("/usr/sbin/ip").arg("-n").arg(&self.name).args(args).output().unwrap();
        assert!(output.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Scripts that run `ip` and QEMU inside the namespace: the agent under test uses them as
    /// its commands, and so makes its bridges and taps, and runs its guests, in there.
    fn wrappers(&self, dir: &Path) -> (PathBuf, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let qemu = agent::hypervisor::qemu::QemuSettings::default().binary;
        let write = |name: &str, body: String| {
            let path = dir.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            path
        };
        (
            write("ip-in-netns", format!("exec /usr/sbin/ip -n {} \"$@\"", self.name)),
            write(
                "qemu-in-netns",
                format!("exec /usr/sbin/ip netns exec {} {} \"$@\"", self.name, qemu.display()),
            ),
        )
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        #[allow(clippy::disallowed_methods)] // test clean-up
        let _ = std::process::Command::new("/usr/sbin/ip").args(["netns", "del", &self.name]).status();
    }
}

#[test]
fn guests_on_one_vlan_of_a_switch_reach_each_other_and_a_guest_on_another_vlan_does_not() {
    let Some(guest) = guest_dir() else { return };
    let Some(netns) = Netns::create() else { return };
    let disk = std::fs::read(guest.join("disk.raw")).unwrap();
    let imgapi = Imgapi::start();
    let image = imgapi.publish("test-guest", &compress(&disk, "gzip"), "gzip", None);
    let dir = tempfile::tempdir().unwrap();
    let (ip, qemu) = netns.wrappers(dir.path());
    let agent =
        Agent::start_in(dir.path(), &[format!("http://admin:secret@{}", imgapi.server.addr)], |config| {
            config["switches"] = json!({"lab": {}});
            config["commands"] = json!({"ip": ip, "qemu": qemu});
        });
    use reqwest::Method as M;
    let (status, body) = agent.send(M::POST, "/images", Some(json!({"uuid": image})));
    assert_eq!(status, 200, "{body}");

    // The config's switch exists before any bridge does.
    let (status, switches) = agent.send(M::GET, "/switches", None);
    assert_eq!(status, 200);
    assert_eq!(switches[0]["name"], "lab");
    assert_eq!(switches[0]["bridge_present"], false, "{switches}");

    let guest_on = |name: &str, vlan: u16, address: &str, ping: &str, tries: &str| {
        let network_config =
            format!("version: 2\nethernets:\n  eth0:\n    addresses:\n      - {address}/24\n");
        let (status, body) = agent.send(
            M::POST,
            "/instances",
            Some(
                json!({"image": image, "mem": 192, "alias": name, "nics": [format!("switch:lab,vlan={vlan}")],
                        "network_config": network_config, "metadata": {"ping": ping, "ping-tries": tries}}),
            ),
        );
        assert_eq!(status, 201, "{body}");
        body["uuid"].as_str().unwrap().to_string()
    };
    let a = guest_on("a", 10, "10.0.0.1", "10.0.0.2", "90");
    let b = guest_on("b", 10, "10.0.0.2", "10.0.0.1", "90");
    agent.wait_console(&a, "GUEST-NET eth0=10.0.0.1/24", 1);
    agent.wait_console(&a, "GUEST-PING-OK 10.0.0.2", 1);
    agent.wait_console(&b, "GUEST-PING-OK 10.0.0.1", 1);

    // The bridge of VLAN 10 was made in the namespace, with both taps on it.
    let members = netns.ip(&["-o", "link", "show", "master", "labv10"]);
    assert_eq!(members.lines().count(), 2, "{members}");

    // A third guest, on VLAN 20 of the same switch, with an address on the same subnet: it
    // pings `a` while `a` is up and answering `b`, and never gets an answer.
    let c = guest_on("c", 20, "10.0.0.3", "10.0.0.1", "10");
    let started = Instant::now();
    let console = loop {
        let console = agent.console(&c);
        if console.contains("GUEST-PING-FAIL 10.0.0.1") || console.contains("GUEST-PING-OK") {
            break console;
        }
        assert!(started.elapsed() < BOOT_LIMIT, "c never finished pinging:\n{console}");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(!console.contains("GUEST-PING-OK"), "VLAN 20 reached VLAN 10:\n{console}");
    assert!(agent.console(&a).contains("GUEST-ALIVE"), "a is still up");

    let (_, switch) = agent.send(M::GET, "/switches/lab", None);
    assert_eq!(switch["bridge_present"], true, "{switch}");
    assert_eq!(switch["nics"].as_array().unwrap().len(), 3, "{switch}");
    assert_eq!(switch["vlans"], json!([10, 20]), "{switch}");
    let (status, body) = agent.send(M::DELETE, "/switches/lab", None);
    assert_eq!((status, body["code"].as_str()), (409, Some("SwitchInUse")), "{body}");

    // Destroyed instances take their taps with them.
    for uuid in [&a, &b, &c] {
        let (status, body) = agent.send(M::DELETE, &format!("/instances/{uuid}"), None);
        assert!(status < 300, "{body}");
    }
    let links = netns.ip(&["-o", "link", "show"]);
    assert!(!links.contains(": vt"), "taps left behind:\n{links}");
    assert!(links.contains(": labv20:"), "{links}");

    // Switches through the CLI: one made and deleted with its bridge; the config's stays.
    let output = agent.cli(&["switches", "create", "spare", "--bridge", "br-spare"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(netns.ip(&["-o", "link", "show"]).contains(": br-spare:"));
    let output = agent.cli(&["switches", "create", "spare"]);
    assert_eq!(output.status.code(), Some(4), "exists: {}", String::from_utf8_lossy(&output.stderr));
    let output = agent.cli(&["switches", "create", "other", "--uplink", "eth9"]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("not an interface of this host"));
    let list = String::from_utf8_lossy(&agent.cli(&["switches", "list"]).stdout).into_owned();
    assert!(list.contains("spare") && list.contains("br-spare") && list.contains("lab"), "{list}");
    let output = agent.cli(&["switches", "delete", "spare"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(!netns.ip(&["-o", "link", "show"]).contains(": br-spare:"));
    let output = agent.cli(&["switches", "delete", "lab"]);
    assert_eq!(output.status.code(), Some(4), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains("config file"));
}

/// What the CLI wrote to stderr so far, and the thread that reads it (it ends with the CLI).
type Stderr = (std::sync::Arc<std::sync::Mutex<String>>, std::thread::JoinHandle<()>);

/// Runs the CLI against `agent` in the background; what it writes to stderr is in the buffer
/// as it arrives.
fn cli_in_background(agent: &Agent, args: &[&str]) -> (std::process::Child, Stderr) {
    use std::process::{Command, Stdio};
    #[allow(clippy::disallowed_methods)] // the test runs the agent binary as a user would
    let mut child = Command::new(env!("CARGO_BIN_EXE_agent"))
        .env("AGENT_URL", agent.base())
        .env("AGENT_TOKEN", TOKEN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut stderr = child.stderr.take().unwrap();
    let sink = seen.clone();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut buffer = [0u8; 1024];
        while let Ok(n @ 1..) = stderr.read(&mut buffer) {
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    });
    (child, (seen, reader))
}

#[test]
fn a_booting_guest_is_deleted_at_once_and_a_stop_says_what_it_waits_for() {
    let Some(guest) = guest_dir() else { return };
    let disk = std::fs::read(guest.join("disk.raw")).unwrap();
    let imgapi = Imgapi::start();
    let image = imgapi.publish("test-guest", &compress(&disk, "gzip"), "gzip", None);
    let agent = Agent::start(&[format!("http://admin:secret@{}", imgapi.server.addr)]);
    use reqwest::Method as M;
    let (status, body) = agent.send(M::POST, "/images", Some(json!({"uuid": image})));
    assert_eq!(status, 200, "{body}");
    let timeout = agent.config.instances.stop_timeout_secs;

    // Stop right after start: the booting guest ignores the power button. The CLI says what
    // it waits for and how to stop waiting; a Ctrl-C leaves the stop to the agent.
    let (_, created) = agent.send(M::POST, "/instances", Some(json!({"image": image, "memory_mib": 256})));
    let id = created["uuid"].as_str().unwrap().to_string();
    assert_eq!(created["state"], "running", "{created}");
    let (child, (stderr, reader)) = cli_in_background(&agent, &["instances", "stop", &id]);
    let waiting = format!("Waiting up to {timeout} s for {id} to power off");
    wait_until("the CLI says it waits", Duration::from_secs(20), || {
        let seen = stderr.lock().unwrap().clone();
        if seen.contains(&waiting) && seen.contains("--force cuts the power now") {
            Ok(())
        } else {
            Err(seen)
        }
    });
    #[allow(clippy::disallowed_methods)] // a Ctrl-C to the CLI this test started
    let sent =
        std::process::Command::new("/bin/kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let output = child.wait_with_output().unwrap();
    reader.join().unwrap();
    let said = stderr.lock().unwrap().clone();
    assert_eq!(output.status.code(), Some(130), "{said}");
    assert!(
        said.contains(&format!(
            "the stop goes on on the agent; `agent instances get {id}` shows how it ends"
        )),
        "{said}"
    );
    assert_eq!(agent.instance(&id)["state"], "running", "the guest still has its grace period");

    // --force does not wait for the guest, and the reason says it was forced.
    let forced = agent.cli(&["instances", "stop", &id, "--force"]);
    let printed = String::from_utf8_lossy(&forced.stdout);
    assert!(forced.status.success(), "{}", String::from_utf8_lossy(&forced.stderr));
    assert!(printed.contains("stopped on request (forced off)"), "{printed}");

    // Delete right after start: powered off at once, not after the grace period.
    let (_, started) = agent.send(M::POST, &format!("/instances/{id}?action=start"), None);
    assert_eq!(started["state"], "running", "{started}");
    let asked = Instant::now();
    let deleted = agent.cli(&["instances", "delete", &id]);
    let took = asked.elapsed();
    assert!(deleted.status.success(), "{}", String::from_utf8_lossy(&deleted.stderr));
    // A bound on behaviour (forced, not graceful), far under the 30 s grace period.
    assert!(took < Duration::from_secs(5), "delete of a booting guest took {took:?}");
    let (status, _) = agent.send(M::GET, &format!("/instances/{id}"), None);
    assert_eq!(status, 404);
    eprintln!("delete of a booting guest: {took:?} (stop timeout {timeout} s)");
}

#[test]
fn a_reboot_that_does_not_come_back_is_reported() {
    let Some(guest) = guest_dir() else { return };
    let disk = std::fs::read(guest.join("disk.raw")).unwrap();
    let imgapi = Imgapi::start();
    let image = imgapi.publish("test-guest", &compress(&disk, "gzip"), "gzip", None);
    let dir = tempfile::tempdir().unwrap();
    // QEMU that runs once: the run after the reboot cannot start.
    let wrapper = dir.path().join("qemu-once");
    let qemu = agent::hypervisor::qemu::QemuSettings::default().binary;
    let started = dir.path().join("started");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ -e {0} ]; then echo 'qemu: no second run' >&2; exit 1; fi\ntouch {0}\nexec {1} \"$@\"\n",
            started.display(),
            qemu.display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let agent = Agent::start_in(dir.path(), &[format!("http://admin:secret@{}", imgapi.server.addr)], |c| {
        c["commands"] = json!({"qemu": wrapper});
    });
    use reqwest::Method as M;
    let (status, body) = agent.send(M::POST, "/images", Some(json!({"uuid": image})));
    assert_eq!(status, 200, "{body}");
    let (_, created) = agent.send(M::POST, "/instances", Some(json!({"image": image, "memory_mib": 256})));
    let id = created["uuid"].as_str().unwrap().to_string();
    assert_eq!(created["state"], "running", "{created}");

    // A hard reset ends the run at once; the new one fails to start, and the answer says so.
    let output = agent.cli(&["instances", "reboot", &id, "--force"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}\n{}", agent.instance(&id));
    assert!(
        stderr.contains("RebootFailed") && stderr.contains("did not come back after its reboot"),
        "{stderr}"
    );
    let instance = agent.instance(&id);
    assert_eq!(instance["state"], "failed", "{instance}");
}
