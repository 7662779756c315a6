//! Instances through cloudapi on a fleet of three real agents (files storage, instances
//! created without booting): spread and pack, capacity refusals with every host's reason,
//! host tags, pinning, anti-affinity, image locality, dry runs, drain, and delete.

use reqwest::Method as M;
use serde_json::{json, Value};

use crate::common::*;

/// A cloudapi with `placement`, an image server as its source, and hosts a, b and c (tags
/// rack r1, r2, r2) heartbeating.
fn fleet(backend: Backend, placement: Value) -> (Cloud, ImageServer, Vec<HostAgent>, String) {
    let images = ImageServer::start();
    let image = images.publish("base", 256 << 10);
    let cloud = Cloud::start(backend, json!({"placement": placement, "sources": [images.server.url()]}));
    let agents: Vec<HostAgent> = [("a", "r1"), ("b", "r2"), ("c", "r2")]
        .into_iter()
        .map(|(name, rack)| {
            HostAgent::join(&cloud, name, |config| {
                config["cluster"]["tags"] = json!({"rack": rack});
                config["sources"] = json!([images.server.url()]);
            })
        })
        .collect();
    for name in ["a", "b", "c"] {
        cloud.wait_for_host(name, "the host to join", |h| h["state"] == "running");
    }
    (cloud, images, agents, image)
}

fn host_of(cloud: &Cloud, instance: &Value) -> String {
    let id = instance["host"].as_str().unwrap();
    cloud.hosts().iter().find(|h| h["id"] == id).unwrap()["name"].as_str().unwrap().to_string()
}

fn instance(image: &str, alias: &str) -> Value {
    json!({"image": image, "alias": alias, "memory_mib": 256, "start": false})
}

#[test]
fn placement_spreads_honours_tags_pins_and_anti_affinity_and_explains_refusals() {
    for backend in backends() {
        placement_spreads_honours_tags_pins_and_anti_affinity_and_explains_refusals_on(backend);
    }
}

fn placement_spreads_honours_tags_pins_and_anti_affinity_and_explains_refusals_on(backend: Backend) {
    let (cloud, images, agents, image) = fleet(backend, json!({"strategy": "spread"}));

    // A dry run explains and reserves nothing.
    let mut dry = instance(&image, "dry");
    dry["dry_run"] = json!(true);
    let (status, answer) = cloud.send(M::POST, "/instances", Some(TOKEN), Some(dry));
    assert_eq!(status, 200, "{answer:#}");
    assert_eq!(answer["placement"]["hosts"].as_array().unwrap().len(), 3);
    assert!(answer["host"].is_string(), "{answer:#}");
    assert_eq!(cloud.send(M::GET, "/instances", None, None).1, json!([]));

    // Spread: three anti-affine web instances, one per host; a fourth fits nowhere.
    let mut hosts_used = std::collections::BTreeSet::new();
    for n in 1..=3 {
        let mut body = instance(&image, &format!("web-{n}"));
        body["affinity"] = json!("instance!=web-*");
        let created = cloud.create(body);
        assert_eq!(created["progress"]["step"], "done");
        hosts_used.insert(host_of(&cloud, &created));
    }
    assert_eq!(hosts_used.len(), 3, "{hosts_used:?}");
    let mut fourth = instance(&image, "web-4");
    fourth["affinity"] = json!(["instance!=web-*"]);
    let (status, refused) = cloud.send(M::POST, "/instances", Some(TOKEN), Some(fourth));
    assert_eq!((status, refused["code"].as_str()), (422, Some("NoCapacity")), "{refused:#}");
    let message = refused["message"].as_str().unwrap();
    for name in ["a: affinity", "b: affinity", "c: affinity"] {
        assert!(message.contains(name), "{message}");
    }

    // Each agent has what cloudapi says it placed there.
    let listed = cloud.send(M::GET, "/instances", None, None).1;
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed:#}");
    for agent in &agents {
        let on_agent: Value =
            reqwest::blocking::get(format!("{}/api/v1/instances", agent.url)).unwrap().json().unwrap();
        assert_eq!(on_agent.as_array().unwrap().len(), 1, "{on_agent:#}");
    }

    // Too big for any host: 422 with each host's reason.
    let mut huge = instance(&image, "huge");
    huge["memory_mib"] = json!(1024 * 1024);
    let (status, refused) = cloud.send(M::POST, "/instances", Some(TOKEN), Some(huge));
    assert_eq!((status, refused["code"].as_str()), (422, Some("NoCapacity")), "{refused:#}");
    assert_eq!(refused["message"].as_str().unwrap().matches(": memory:").count(), 3, "{refused:#}");

    // Tags and pins.
    let mut tagged = instance(&image, "tagged");
    tagged["host_tags"] = json!({"rack": "r1"});
    assert_eq!(host_of(&cloud, &cloud.create(tagged)), "a");
    let mut pinned = instance(&image, "pinned");
    pinned["host"] = json!("c");
    assert_eq!(host_of(&cloud, &cloud.create(pinned)), "c");

    // Uuids and aliases are the fleet's: a second "pinned" is refused.
    let (status, taken) = cloud.send(M::POST, "/instances", Some(TOKEN), Some(instance(&image, "pinned")));
    assert_eq!((status, taken["code"].as_str()), (409, Some("InstanceExists")), "{taken:#}");

    // Image locality: a bigger image already on b (now the least loaded with a and c having
    // two each) wins there, and would anyway; move the load so that spread prefers a.
    let big = images.publish("big", 4 << 20);
    let b = &agents[1];
    let imported = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/images", b.url))
        .bearer_auth(AGENT_TOKEN)
        .json(&json!({"uuid": big}))
        .send()
        .unwrap();
    assert_eq!(imported.status(), 200);
    cloud.wait_for_host("b", "b to report the big image", |h| {
        h["images"].as_array().unwrap().iter().any(|i| i["uuid"] == big.as_str())
    });
    let mut dry = instance(&big, "local");
    dry["dry_run"] = json!(true);
    let (_, answer) = cloud.send(M::POST, "/instances", Some(TOKEN), Some(dry));
    let chosen = &answer["placement"]["hosts"][0];
    assert_eq!(chosen["name"], "b", "{answer:#}");
    let image_score = chosen["scores"].as_array().unwrap().iter().find(|s| s["weight"] == "image").unwrap();
    assert!(image_score["value"].as_f64().unwrap() > 0.0, "{answer:#}");

    // Drain: a drained host is refused by the state filter.
    let a_id = cloud.hosts().iter().find(|h| h["name"] == "a").unwrap()["id"].as_str().unwrap().to_string();
    let (status, drained) = cloud.send(M::POST, &format!("/hosts/{a_id}?action=drain"), Some(TOKEN), None);
    assert_eq!((status, drained["state"].as_str()), (200, Some("draining")));
    let mut on_a = instance(&image, "on-a");
    on_a["host"] = json!("a");
    let (status, refused) = cloud.send(M::POST, "/instances", Some(TOKEN), Some(on_a));
    assert_eq!(status, 422, "{refused:#}");
    assert!(refused["message"].as_str().unwrap().contains("a: state"), "{refused:#}");

    assert_reservations_match(&cloud.database);

    // Delete: gone from cloudapi and from the hosts.
    for instance in cloud.send(M::GET, "/instances", None, None).1.as_array().unwrap() {
        let path = format!("/instances/{}", instance["uuid"].as_str().unwrap());
        assert_eq!(cloud.send(M::DELETE, &path, None, None).0, 401);
        assert_eq!(cloud.send(M::DELETE, &path, Some(TOKEN), None).0, 204, "{instance:#}");
    }
    assert_eq!(cloud.send(M::GET, "/instances", None, None).1, json!([]));
    assert_reservations_match(&cloud.database);
    for agent in &agents {
        let on_agent: Value =
            reqwest::blocking::get(format!("{}/api/v1/instances", agent.url)).unwrap().json().unwrap();
        assert_eq!(on_agent, json!([]));
    }
}

#[test]
fn pack_fills_one_host_before_the_next() {
    let (cloud, _images, _agents, image) = fleet(Backend::Sqlite, json!({"strategy": "pack"}));
    let first = cloud.create(instance(&image, "p-1"));
    let second = cloud.create(instance(&image, "p-2"));
    assert_eq!(first["host"], second["host"]);
    let placement = &cloud
        .send(M::GET, &format!("/instances/{}", second["uuid"].as_str().unwrap()), None, None)
        .1["placement"];
    assert_eq!(placement["hosts"][0]["scores"][1]["weight"], "pack", "{placement:#}");
}
