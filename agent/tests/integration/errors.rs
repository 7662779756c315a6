//! Error answers: an internal failure answers a curated message naming the request, never the
//! host command's argv, its stderr or host paths, which go to the agent's log instead.

use serde_json::{json, Value};

use crate::common::{compress, Agent, Imgapi};

/// A "qemu-img" that fails the way a real command fails: it says a lot on stderr.
fn failing_command(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("failing-qemu-img");
    std::fs::write(
        &path,
        "#!/bin/sh\necho 'qemu-img: SECRET-STDERR /srv/private/disk: Permission denied' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn a_failed_host_command_answers_500_without_its_argv_or_stderr() {
    let imgapi = Imgapi::start();
    let disk: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let image = imgapi.publish("errors", &compress(&disk, "gzip"), "gzip", None);
    let dir = tempfile::tempdir().unwrap();
    let qemu_img = failing_command(dir.path());
    let agent = Agent::start_in(dir.path(), &[imgapi.server.url()], |config| {
        config["commands"] = json!({"qemu_img": qemu_img});
    });
    assert_eq!(agent.import(&image).status(), 200);

    let response = agent
        .client
        .post(agent.url("/instances"))
        .bearer_auth(crate::common::TOKEN)
        .header("x-request-id", "req-errors-1")
        .json(&json!({"image": image, "start": false}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(response.headers()["x-request-id"], "req-errors-1");
    let body: Value = response.json().unwrap();
    assert_eq!(body["code"], "InternalError", "{body}");
    let message = body["message"].as_str().unwrap();
    for secret in ["SECRET-STDERR", "/srv/private", "failing-qemu-img", "qcow2", dir.path().to_str().unwrap()]
    {
        assert!(!message.contains(secret), "{secret:?} in {message:?}");
    }
    assert!(message.contains("req-errors-1"), "the message names the request: {message}");
    // Nothing was created.
    assert_eq!(agent.send(reqwest::Method::GET, "/instances", None).1, json!([]));
}

#[test]
fn every_answer_carries_a_request_id() {
    let agent = Agent::start(&[]);
    let response = agent.client.get(agent.url("/ping")).send().unwrap();
    let id = response.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 36, "a uuid: {id}");
    let missing = agent.client.get(agent.url("/no/such/route")).send().unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.headers().contains_key("x-request-id"));
}

#[test]
fn a_create_with_a_uuid_that_is_taken_answers_409_and_changes_nothing() {
    let imgapi = Imgapi::start();
    let disk: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let image = imgapi.publish("uuids", &compress(&disk, "gzip"), "gzip", None);
    let agent = Agent::start(&[imgapi.server.url()]);
    assert_eq!(agent.import(&image).status(), 200);
    let uuid = uuid::Uuid::new_v4().to_string();
    let body = json!({"uuid": uuid, "image": image, "alias": "first", "start": false});
    let (status, created) = agent.send(reqwest::Method::POST, "/instances", Some(body));
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["uuid"], uuid.as_str());
    // A retry (cloudapi after a crash) or a clash: refused, and the first one is untouched.
    let again = json!({"uuid": uuid, "image": image, "alias": "second", "start": false});
    let (status, refused) = agent.send(reqwest::Method::POST, "/instances", Some(again));
    assert_eq!((status, refused["code"].as_str()), (409, Some("InstanceExists")), "{refused}");
    let (_, list) = agent.send(reqwest::Method::GET, "/instances", None);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["alias"], "first");
}
