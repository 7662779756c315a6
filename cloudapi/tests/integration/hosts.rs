//! Hosts: registration with a join token, a credential of each host's own, heartbeats, the
//! unknown state after the timeout, drain, removal and revocation.

use reqwest::Method as M;
use serde_json::json;

use crate::common::*;

#[test]
fn a_host_joins_heartbeats_and_is_listed_without_its_credential() {
    for backend in backends() {
        a_host_joins_heartbeats_and_is_listed_without_its_credential_on(backend);
    }
}

fn a_host_joins_heartbeats_and_is_listed_without_its_credential_on(backend: Backend) {
    let cloud = Cloud::start(backend, json!({}));
    let (status, body) =
        cloud.send(M::POST, "/hosts", Some(JOIN), Some(registration("h1", "http://127.0.0.2:9090")));
    assert_eq!(status, 201, "{body}");
    let (id, credential) =
        (body["id"].as_str().unwrap().to_string(), body["credential"].as_str().unwrap().to_string());
    assert!(credential.len() >= 64, "{credential}");

    let beat = json!({"capacity": {"vcpus": 8, "memory_mib": 16384, "disk_free_mib": 90000},
                      "allocated": {"vcpus": 2, "memory_mib": 1024, "disk_mib": 2048},
                      "images": [{"uuid": "0d8cf0a4-3a1b-4c5e-9d3e-1b2c3d4e5f60", "size": 1048576}],
                      "instances": [{"uuid": "7e57a1b2-0000-4000-8000-000000000001", "alias": "web-1", "state": "running",
                                     "vcpus": 2, "memory_mib": 1024, "disk_mib": 2048}]});
    let path = format!("/hosts/{id}/heartbeat");
    assert_eq!(cloud.send(M::PUT, &path, Some(&credential), Some(beat.clone())).0, 204);
    // Only the host's own credential may heartbeat.
    for wrong in [None, Some(TOKEN), Some(JOIN), Some("0".repeat(64).as_str())] {
        assert_eq!(cloud.send(M::PUT, &path, wrong, Some(beat.clone())).0, 401, "{wrong:?}");
    }

    let (status, list) = cloud.send(M::GET, "/hosts", None, None);
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let host = &list[0];
    assert_eq!((host["name"].as_str(), host["state"].as_str()), (Some("h1"), Some("running")));
    assert_eq!(host["capacity"]["disk_free_mib"], 90000);
    assert_eq!(host["allocated"]["memory_mib"], 1024);
    assert_eq!(host["instances"][0]["alias"], "web-1");
    assert_eq!(host["tags"], json!({"rack": "a"}));
    assert!(!list.to_string().contains(&credential), "a read shows the credential");
    assert_eq!(cloud.send(M::GET, &format!("/hosts/{id}"), None, None).1["id"], id.as_str());
}

#[test]
fn registration_needs_a_join_token_or_the_hosts_own_credential() {
    for backend in backends() {
        registration_needs_a_join_token_or_the_hosts_own_credential_on(backend);
    }
}

fn registration_needs_a_join_token_or_the_hosts_own_credential_on(backend: Backend) {
    let cloud = Cloud::start(backend, json!({}));
    let body = registration("h1", "http://127.0.0.2:9090");
    for wrong in [None, Some(TOKEN), Some("not-a-join-token-at-all")] {
        assert_eq!(cloud.send(M::POST, "/hosts", wrong, Some(body.clone())).0, 401, "{wrong:?}");
    }
    let (_, first) = cloud.send(M::POST, "/hosts", Some(JOIN), Some(body.clone()));
    // The same name again with a join token: refused, the first host stays.
    let (status, again) = cloud.send(M::POST, "/hosts", Some(JOIN), Some(body.clone()));
    assert_eq!((status, again["code"].as_str()), (409, Some("HostExists")), "{again}");
    // A restarted agent re-registers with its credential: same id, same credential, new URL.
    let credential = first["credential"].as_str().unwrap();
    let moved = registration("h1", "http://127.0.0.3:9090");
    let (status, rejoined) = cloud.send(M::POST, "/hosts", Some(credential), Some(moved));
    assert_eq!(status, 200, "{rejoined}");
    assert_eq!((&rejoined["id"], &rejoined["credential"]), (&first["id"], &first["credential"]));
    let (_, host) = cloud.send(M::GET, &format!("/hosts/{}", first["id"].as_str().unwrap()), None, None);
    assert_eq!(host["url"], "http://127.0.0.3:9090");
    // Bad registrations say what is wrong.
    for (bad, what) in [
        (registration("h 2", "http://x"), "host name"),
        (registration("h2", "ftp://x"), "url"),
        (json!({"name": "h2"}), "registration"),
    ] {
        let (status, answer) = cloud.send(M::POST, "/hosts", Some(JOIN), Some(bad));
        assert!(matches!(status, 400 | 422), "{answer}");
        assert!(answer["message"].as_str().unwrap().contains(what), "{answer}");
    }
}

#[test]
fn a_silent_host_becomes_unknown_and_can_only_be_forced_out() {
    for backend in backends() {
        a_silent_host_becomes_unknown_and_can_only_be_forced_out_on(backend);
    }
}

fn a_silent_host_becomes_unknown_and_can_only_be_forced_out_on(backend: Backend) {
    let cloud = Cloud::start(backend, json!({"host_timeout_secs": 1}));
    let (_, joined) =
        cloud.send(M::POST, "/hosts", Some(JOIN), Some(registration("h1", "http://127.0.0.2:9090")));
    let (id, credential) = (joined["id"].as_str().unwrap(), joined["credential"].as_str().unwrap());
    let beat = json!({"capacity": {"vcpus": 8, "memory_mib": 16384, "disk_free_mib": 90000},
                      "instances": [{"uuid": "7e57a1b2-0000-4000-8000-000000000001", "alias": "web-1", "state": "running",
                                     "vcpus": 2, "memory_mib": 1024, "disk_mib": 2048}]});
    assert_eq!(
        cloud.send(M::PUT, &format!("/hosts/{id}/heartbeat"), Some(credential), Some(beat.clone())).0,
        204
    );
    let path = format!("/hosts/{id}");
    // Drain and undrain need a user.
    assert_eq!(cloud.send(M::POST, &format!("{path}?action=drain"), None, None).0, 401);
    let (status, drained) = cloud.send(M::POST, &format!("{path}?action=drain"), Some(TOKEN), None);
    assert_eq!((status, drained["state"].as_str()), (200, Some("draining")));
    assert_eq!(
        cloud.send(M::POST, &format!("{path}?action=undrain"), Some(TOKEN), None).1["state"],
        "running"
    );
    assert_eq!(cloud.send(M::POST, &format!("{path}?action=explode"), Some(TOKEN), None).0, 422);
    // With instances it cannot go, even forced, while it is alive.
    assert_eq!(
        cloud.send(M::DELETE, &format!("{path}?force=true"), Some(TOKEN), None).1["code"],
        "HostInUse"
    );
    std::thread::sleep(std::time::Duration::from_millis(2200));
    assert_eq!(cloud.send(M::GET, &path, None, None).1["state"], "unknown");
    assert_eq!(cloud.send(M::DELETE, &path, Some(TOKEN), None).1["code"], "HostInUse");
    assert_eq!(cloud.send(M::DELETE, &format!("{path}?force=true"), None, None).0, 401);
    assert_eq!(cloud.send(M::DELETE, &format!("{path}?force=true"), Some(TOKEN), None).0, 204);
    // Its credential is revoked with it.
    assert_eq!(cloud.send(M::PUT, &format!("/hosts/{id}/heartbeat"), Some(credential), Some(beat)).0, 401);
    assert_eq!(cloud.send(M::GET, &path, None, None).1["code"], "HostNotFound");
}
