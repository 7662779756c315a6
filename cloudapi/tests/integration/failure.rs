//! A host that goes away: `unknown` within the timeout, its instances listed with their last
//! known state and 503 `HostUnavailable` for anything that needs it, and, once it is back, its
//! instances reconciled with what changed while cloudapi could not see it.

use reqwest::Method as M;
use serde_json::json;

use crate::common::*;

#[test]
fn a_silent_host_is_unknown_answers_503_and_is_reconciled_when_back() {
    for backend in backends() {
        a_silent_host_is_unknown_answers_503_and_is_reconciled_when_back_on(backend);
    }
}

fn a_silent_host_is_unknown_answers_503_and_is_reconciled_when_back_on(backend: Backend) {
    let images = ImageServer::start();
    let image = images.publish("base", 64 << 10);
    let cloud = Cloud::start(backend, json!({"host_timeout_secs": 2, "sources": [images.server.url()]}));
    let mut host = HostAgent::join(&cloud, "a", |config| config["sources"] = json!([images.server.url()]));
    cloud.wait_for_host("a", "the host to join", |h| h["state"] == "running");
    let kept = cloud.create(json!({"image": image, "alias": "kept", "memory_mib": 128, "start": false}));
    let doomed = cloud.create(json!({"image": image, "alias": "doomed", "memory_mib": 128, "start": false}));
    let (kept, doomed) =
        (kept["uuid"].as_str().unwrap().to_string(), doomed["uuid"].as_str().unwrap().to_string());
    cloud.wait_for_host("a", "both instances reported", |h| h["instances"].as_array().unwrap().len() == 2);

    host.stop();
    cloud.wait_for_host("a", "the silent host to be unknown", |h| h["state"] == "unknown");
    let (_, listed) = cloud.send(M::GET, "/instances", None, None);
    for instance in listed.as_array().unwrap() {
        assert_eq!(instance["host_state"], "unknown", "{instance:#}");
        assert_eq!(instance["state"], "stopped", "the last known state: {instance:#}");
    }
    for (method, path) in [
        (M::DELETE, format!("/instances/{kept}")),
        (M::POST, format!("/instances/{kept}?action=start")),
        (M::GET, format!("/instances/{kept}/console")),
    ] {
        let (status, body) = cloud.send(method.clone(), &path, Some(TOKEN), None);
        assert_eq!(
            (status, body["code"].as_str()),
            (503, Some("HostUnavailable")),
            "{method} {path}: {body:#}"
        );
    }

    // While cloudapi cannot see it, the host loses one instance and gains another.
    host.start_alone();
    assert_eq!(host.send(M::DELETE, &format!("/instances/{doomed}"), None).0, 204);
    let (status, newcomer) = host.send(
        M::POST,
        "/instances",
        Some(json!({"image": image, "alias": "newcomer", "memory_mib": 64, "start": false})),
    );
    assert_eq!(status, 201, "{newcomer:#}");
    let newcomer = newcomer["uuid"].as_str().unwrap().to_string();
    host.stop();

    host.restart();
    cloud.wait_for_host("a", "the host to be back", |h| h["state"] == "running");
    let reconciled = wait_until("the instances to be reconciled", std::time::Duration::from_secs(45), || {
        let (_, listed) = cloud.send(M::GET, "/instances", None, None);
        let mut uuids: Vec<String> =
            listed.as_array().unwrap().iter().map(|i| i["uuid"].as_str().unwrap().to_string()).collect();
        uuids.sort();
        let mut wanted = vec![kept.clone(), newcomer.clone()];
        wanted.sort();
        (uuids == wanted).then_some(listed.clone()).ok_or_else(|| format!("{listed:#}"))
    });
    assert_reservations_match(&cloud.database);
    let adopted = reconciled.as_array().unwrap().iter().find(|i| i["uuid"] == newcomer.as_str()).unwrap();
    assert_eq!((adopted["adopted"].as_bool(), adopted["alias"].as_str()), (Some(true), Some("newcomer")));
    assert_eq!(adopted["host_state"], "running");

    // Back to normal: the host's instances answer again.
    assert_eq!(cloud.send(M::DELETE, &format!("/instances/{kept}"), Some(TOKEN), None).0, 204);
    assert_eq!(cloud.send(M::DELETE, &format!("/instances/{newcomer}"), Some(TOKEN), None).0, 204);
    assert_eq!(host.send(M::GET, "/instances", None).1, json!([]));
}
