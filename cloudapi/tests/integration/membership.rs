//! Agents as members of the fleet: an agent with a `cluster` section joins by itself, keeps
//! its identity (mode 0600) across restarts, answers cloudapi's calls made with its
//! credential, and joins anew once it was removed (its credential revoked).

use std::os::unix::fs::PermissionsExt;

use reqwest::Method as M;
use serde_json::json;

use crate::common::*;

#[test]
fn an_agent_joins_by_itself_and_stays_the_same_host_across_restarts() {
    for backend in backends() {
        an_agent_joins_by_itself_and_stays_the_same_host_across_restarts_on(backend);
    }
}

fn an_agent_joins_by_itself_and_stays_the_same_host_across_restarts_on(backend: Backend) {
    let cloud = Cloud::start(backend, json!({}));
    let mut member = HostAgent::join(&cloud, "host-a", |config| {
        config["cluster"]["tags"] = json!({"rack": "r1"});
    });
    let host = cloud.wait_for_host("host-a", "the agent to join and heartbeat", |h| {
        h["state"] == "running" && h["capacity"]["vcpus"].as_u64() > Some(0)
    });
    assert_eq!(host["url"], member.url.as_str());
    assert_eq!(host["hypervisor"], "qemu");
    assert_eq!(host["tags"], json!({"rack": "r1"}));
    assert!(host["capacity"]["memory_mib"].as_u64() > Some(0), "{host}");
    assert!(host["capacity"]["disk_free_mib"].as_u64() > Some(0), "{host}");

    // The identity: only its owner reads it.
    let identity = member.identity();
    assert_eq!(identity["id"], host["id"]);
    let mode = std::fs::metadata(member.identity_file()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // The agent takes the host's credential as it takes its own tokens; nothing else new.
    let credential = identity["credential"].as_str().unwrap().to_string();
    let client = reqwest::blocking::Client::new();
    let agent_url = member.url.clone();
    let delete = |bearer: &str| {
        let url = format!("{agent_url}/api/v1/images/{}", uuid::Uuid::new_v4());
        client.delete(url).bearer_auth(bearer).send().unwrap().status().as_u16()
    };
    assert_eq!(delete(&credential), 404, "the credential is accepted: the image is missing");
    assert_eq!(delete(JOIN), 401, "a join token is not a credential of the agent");

    // A restart keeps the identity, and the host registers again as itself.
    member.restart();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let again =
        cloud.wait_for_host("host-a", "the restarted agent to heartbeat", |h| h["state"] == "running");
    assert_eq!(again["id"], host["id"]);
    assert_eq!(cloud.hosts().len(), 1);
    assert_eq!(member.identity(), identity);
    assert_eq!(delete(&credential), 404, "the credential still works after the restart");

    // Removing the host revokes the credential; the agent joins anew with the join token.
    let path = format!("/hosts/{}", host["id"].as_str().unwrap());
    assert_eq!(cloud.send(M::DELETE, &path, Some(TOKEN), None).0, 204);
    let rejoined =
        cloud.wait_for_host("host-a", "the removed agent to join again", |h| h["id"] != host["id"]);
    wait_until("the new identity on disk", std::time::Duration::from_secs(10), || {
        let now = member.identity();
        (now["id"] == rejoined["id"]).then_some(()).ok_or_else(|| now.to_string())
    });
    assert_eq!(delete(&credential), 401, "the revoked credential is refused by the agent too");
}
