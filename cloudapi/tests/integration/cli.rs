//! The `agent` CLI against cloudapi (`--url` cloudapi's): `agent hosts ...` and `agent
//! instances list|get`, run as the real binary, with their output and exit codes.

use std::process::Command;

use reqwest::Method as M;
use serde_json::{json, Value};

use crate::common::*;

/// What a CLI run left: its exit code, stdout and stderr.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// `agent --url URL ARGS...`, with no connection settings from the test's environment.
fn agent_cli(url: &str, args: &[&str]) -> Run {
    let output = Command::new(agent_binary())
        .arg("--url")
        .arg(url)
        .args(args)
        .env_remove("AGENT_URL")
        .env_remove("AGENT_TOKEN")
        .env_remove("AGENT_USER")
        .output()
        .expect("the agent binary runs");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The row of a table whose first column is `first`, split into its columns (two spaces or
/// more apart; a column's own text has single spaces).
fn row(table: &str, first: &str) -> Option<Vec<String>> {
    table
        .lines()
        .find(|line| line.split("  ").next() == Some(first))
        .map(|line| line.split("  ").map(str::trim).filter(|c| !c.is_empty()).map(String::from).collect())
}

#[test]
fn the_agent_cli_lists_drains_and_removes_cloudapis_hosts() {
    for backend in backends() {
        the_agent_cli_lists_drains_and_removes_cloudapis_hosts_on(backend);
    }
}

fn the_agent_cli_lists_drains_and_removes_cloudapis_hosts_on(backend: Backend) {
    // A timeout long enough that a slow heartbeat does not make a host `unknown` by chance.
    let cloud = Cloud::start(backend, json!({"host_timeout_secs": 4}));
    let mut one = HostAgent::join(&cloud, "cli-1", |_| {});
    let mut two = HostAgent::join(&cloud, "cli-2", |_| {});
    let id_of = |name: &str| {
        let host = cloud.wait_for_host(name, "the host to join", |h| h["state"] == "running");
        host["id"].as_str().unwrap().to_string()
    };
    let (one_id, two_id) = (id_of("cli-1"), id_of("cli-2"));
    let url = cloud.server.url();
    let cli = |args: &[&str]| agent_cli(&url, args);
    let user = |args: &[&str]| agent_cli(&url, &[&["--token", TOKEN][..], args].concat());

    // An agent's URL is not cloudapi's: said so, as a usage error.
    let lone = agent_cli(&one.url, &["hosts", "list"]);
    assert_eq!(lone.code, Some(2), "{lone}");
    assert!(lone.stderr.contains("is an agent, not cloudapi"), "{lone}");

    let list = cli(&["hosts", "list"]);
    assert_eq!(list.code, Some(0), "{list}");
    for column in
        ["NAME", "STATE", "HYPERVISOR", "VCPUS", "MEMORY", "DISK FREE", "INSTANCES", "LAST HEARTBEAT"]
    {
        assert!(list.stdout.lines().next().unwrap().contains(column), "{column}: {list}");
    }
    for name in ["cli-1", "cli-2"] {
        let columns = row(&list.stdout, name).unwrap_or_else(|| panic!("{name}: {list}"));
        assert_eq!(&columns[1..3], ["running", "qemu"], "{list}");
        assert!(columns[3].starts_with("0/"), "no vCPUs allocated: {list}");
        assert_eq!(columns[6], "0", "no instances: {list}");
        assert!(columns[7].ends_with(" s ago"), "{list}");
    }
    let listed = cli(&["--json", "hosts", "list"]);
    let hosts: Value = serde_json::from_str(&listed.stdout).unwrap_or_else(|e| panic!("{e}: {listed}"));
    assert_eq!(hosts.as_array().map(Vec::len), Some(2), "{listed}");

    for id in ["cli-1", one_id.as_str()] {
        let got = cli(&["hosts", "get", id]);
        assert_eq!(got.code, Some(0), "{got}");
        for expected in
            [format!("id             {one_id}"), "name           cli-1".into(), "instances      0".into()]
        {
            assert!(got.stdout.contains(&expected), "{expected:?}: {got}");
        }
    }
    let missing = cli(&["hosts", "get", "nope"]);
    assert_eq!(missing.code, Some(3), "{missing}");
    assert!(missing.stderr.contains("no host with id or name \"nope\""), "{missing}");
    let missing = cli(&["hosts", "get", "0d8cf0a4-3a1b-4c5e-9d3e-1b2c3d4e5f60"]);
    assert_eq!(missing.code, Some(3), "{missing}");
    assert!(missing.stderr.contains("HostNotFound: "), "{missing}");

    // Draining is a user's: refused without a token, with the API's code.
    let refused = cli(&["hosts", "drain", "cli-1"]);
    assert_eq!(refused.code, Some(7), "{refused}");
    assert!(refused.stderr.contains("UnauthorizedError: "), "{refused}");
    let drained = user(&["hosts", "drain", "cli-1"]);
    assert_eq!(drained.code, Some(0), "{drained}");
    assert!(drained.stdout.starts_with("Host cli-1 is draining"), "{drained}");
    let list = cli(&["hosts", "list"]);
    assert_eq!(row(&list.stdout, "cli-1").map(|r| r[1].clone()).as_deref(), Some("draining"), "{list}");
    assert_eq!(row(&list.stdout, "cli-2").map(|r| r[1].clone()).as_deref(), Some("running"), "{list}");
    let undrained = user(&["--json", "hosts", "undrain", &one_id]);
    assert_eq!(undrained.code, Some(0), "{undrained}");
    let host: Value = serde_json::from_str(&undrained.stdout).unwrap_or_else(|e| panic!("{e}: {undrained}"));
    assert_eq!((host["name"].as_str(), host["state"].as_str()), (Some("cli-1"), Some("running")));

    // The fleet's instances: none yet, then one a host made by itself (adopted).
    let empty = cli(&["instances", "list"]);
    assert_eq!(empty.code, Some(0), "{empty}");
    assert_eq!(empty.stdout.lines().count(), 1, "the header alone: {empty}");
    assert!(empty.stdout.starts_with("UUID") && empty.stdout.contains("REASON"), "{empty}");
    assert_eq!(cli(&["--json", "instances", "list"]).stdout.trim(), "[]");
    let (status, made) = one.send(
        M::POST,
        "/instances",
        Some(json!({"alias": "pinned", "disk_mib": 64, "memory_mib": 64, "start": false})),
    );
    assert_eq!(status, 201, "{made:#}");
    let uuid = made["uuid"].as_str().unwrap().to_string();
    wait_until("cloudapi to adopt the instance", std::time::Duration::from_secs(20), || {
        match cloud.send(M::GET, &format!("/instances/{uuid}"), None, None) {
            (200, instance) => Ok(instance),
            (status, body) => Err(format!("{status} {body}")),
        }
    });
    let fleet = cli(&["instances", "list"]);
    assert_eq!(fleet.code, Some(0), "{fleet}");
    assert!(fleet.stdout.lines().next().unwrap().contains("  HOST  "), "{fleet}");
    let columns = row(&fleet.stdout, &uuid).unwrap_or_else(|| panic!("{fleet}"));
    assert_eq!(&columns[1..4], ["pinned", "cli-1", "stopped"], "{fleet}");
    let got = cli(&["instances", "get", "pinned"]);
    assert_eq!(got.code, Some(0), "{got}");
    for expected in
        [format!("host        cli-1 ({one_id})"), "adopted     true".into(), "state       stopped".into()]
    {
        assert!(got.stdout.contains(&expected), "{expected:?}: {got}");
    }

    // Removal, as the API decides: refused while a host has instances, even with --force
    // while it is up; a host without any goes.
    let in_use = user(&["hosts", "remove", "cli-1"]);
    assert_eq!(in_use.code, Some(4), "{in_use}");
    assert!(in_use.stderr.contains("HostInUse: "), "{in_use}");
    let forced = user(&["hosts", "remove", "cli-1", "--force"]);
    assert_eq!(forced.code, Some(4), "a running host is not forced out: {forced}");
    // Stopped first: a running agent would join again at once, as a new host.
    two.stop();
    let removed = user(&["hosts", "remove", "cli-2"]);
    assert_eq!(removed.code, Some(0), "{removed}");
    assert_eq!(removed.stdout.trim(), format!("Removed host cli-2 ({two_id})"), "{removed}");
    let list = cli(&["hosts", "list"]);
    assert!(row(&list.stdout, "cli-2").is_none() && row(&list.stdout, "cli-1").is_some(), "{list}");

    // A host gone silent with its instances: only --force removes it.
    one.stop();
    cloud.wait_for_host("cli-1", "the silent host to be unknown", |h| h["state"] == "unknown");
    let list = cli(&["hosts", "list"]);
    assert_eq!(row(&list.stdout, "cli-1").map(|r| r[1].clone()).as_deref(), Some("unknown"), "{list}");
    let in_use = user(&["hosts", "remove", "cli-1"]);
    assert_eq!(in_use.code, Some(4), "{in_use}");
    let forced = user(&["--json", "hosts", "remove", "cli-1", "--force"]);
    assert_eq!(forced.code, Some(0), "{forced}");
    assert_eq!(
        serde_json::from_str::<Value>(&forced.stdout).ok(),
        Some(json!({"id": one_id, "removed": true}))
    );
    assert_eq!(cli(&["hosts", "list"]).stdout.lines().count(), 1, "no hosts left");
    assert_eq!(cli(&["instances", "list"]).stdout.lines().count(), 1, "their instances forgotten");
}
