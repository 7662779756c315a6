//! End to end through cloudapi, for real: the test guest is published to an image server,
//! placed on one of two agents, imported there, booted under QEMU (TCG), its console read and
//! followed through cloudapi's proxy, stopped and deleted. Needs `AGENT_TEST_GUEST`.

use std::io::Read;
use std::time::{Duration, Instant};

use reqwest::Method as M;
use serde_json::{json, Value};

use crate::common::*;

const BOOT_LIMIT: Duration = Duration::from_secs(120);

#[test]
fn the_test_guest_boots_through_cloudapi_and_its_console_is_proxied() {
    let Some(guest) = test_guest() else { return };
    let disk = std::fs::read(guest.join("disk.raw")).unwrap();
    let disk_mib = (disk.len() as u64).div_ceil(1 << 20);
    let images = ImageServer::start();
    let image = images.publish_file("test-guest", disk, disk_mib);
    let cloud = Cloud::start(Backend::Sqlite, json!({"sources": [images.server.url()]}));
    let agents: Vec<HostAgent> = ["qemu-1", "qemu-2"]
        .into_iter()
        .map(|name| {
            HostAgent::join(&cloud, name, |config| {
                config["sources"] = json!([images.server.url()]);
                config["instances"]["stop_timeout_secs"] = json!(30);
                config["instances"]["qemu"] = json!({"accel": "tcg", "metadata_proxy": agent_binary()});
            })
        })
        .collect();
    for name in ["qemu-1", "qemu-2"] {
        cloud.wait_for_host(name, "the host to join", |h| h["state"] == "running");
    }

    let (status, placed) = cloud.send(
        M::POST,
        "/instances",
        Some(TOKEN),
        Some(json!({"image": image, "alias": "web-1", "memory_mib": 256, "hostname": "web-1"})),
    );
    assert_eq!(status, 202, "{placed:#}");
    let id = placed["uuid"].as_str().unwrap().to_string();
    assert_eq!(placed["state"], "provisioning");
    let running = wait_until("the instance to run", BOOT_LIMIT, || {
        let (_, instance) = cloud.send(M::GET, &format!("/instances/{id}"), None, None);
        (instance["state"] == "running").then(|| instance.clone()).ok_or_else(|| format!("{instance:#}"))
    });
    assert_eq!(running["phase"], "created");
    // The image was imported onto the host it went to, and only there (as the next heartbeat
    // says: the running state came with the create's answer).
    wait_until("the host to report the image", Duration::from_secs(20), || {
        let holders: Vec<String> = cloud
            .hosts()
            .iter()
            .filter(|h| h["images"].as_array().unwrap().iter().any(|i| i["uuid"] == image.as_str()))
            .map(|h| h["id"].as_str().unwrap().to_string())
            .collect();
        (holders == [running["host"].as_str().unwrap()]).then_some(()).ok_or_else(|| format!("{holders:?}"))
    });

    // The console, read and followed through cloudapi.
    let console = |query: &str| {
        reqwest::blocking::Client::new()
            .get(cloud.url(&format!("/instances/{id}/console{query}")))
            .bearer_auth(TOKEN)
            .send()
            .unwrap()
    };
    assert_eq!(console("").status(), 200);
    let text = wait_until("the boot marker on the proxied console", BOOT_LIMIT, || {
        let text = console("").text().unwrap();
        text.contains("GUEST-BOOT-OK").then(|| text.clone()).ok_or(text)
    });
    assert!(text.contains("GUEST-META local-hostname=web-1"), "{text}");
    let mut follow = console("?follow=true");
    let mut seen = Vec::new();
    let started = Instant::now();
    while !String::from_utf8_lossy(&seen).contains("GUEST-BOOT-OK") && started.elapsed() < BOOT_LIMIT {
        let mut buffer = [0u8; 4096];
        let n = follow.read(&mut buffer).unwrap();
        assert!(n > 0, "the followed console ended");
        seen.extend_from_slice(&buffer[..n]);
    }
    drop(follow);
    let unauthenticated = reqwest::blocking::get(cloud.url(&format!("/instances/{id}/console"))).unwrap();
    assert_eq!(unauthenticated.status(), 401);

    // Stop and delete, through cloudapi.
    let (status, _) = cloud.send(M::POST, &format!("/instances/{id}?action=stop"), Some(TOKEN), None);
    assert_eq!(status, 200);
    wait_until("the instance to stop", BOOT_LIMIT, || {
        let (_, instance) = cloud.send(M::GET, &format!("/instances/{id}"), None, None);
        (instance["state"] == "stopped").then_some(()).ok_or_else(|| format!("{instance:#}"))
    });
    assert_eq!(cloud.send(M::DELETE, &format!("/instances/{id}"), Some(TOKEN), None).0, 204);
    assert_eq!(cloud.send(M::GET, "/instances", None, None).1, json!([]));
    for agent in &agents {
        assert_eq!(agent.send(M::GET, "/instances", None).1, Value::Array(Vec::new()));
    }
}
