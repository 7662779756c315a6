//! `GET /metrics` of a live cloudapi with one host: hosts by state and instances by phase (read
//! from the database at the scrape), placements by outcome, the image bytes the host downloaded
//! for a create, and the HTTP requests by route pattern, without credentials.

use reqwest::Method as M;
use serde_json::json;
use service_kit::metrics::{sample, OPENMETRICS_CONTENT_TYPE};

use crate::common::*;

#[test]
fn metrics_count_hosts_instances_placements_and_imports() {
    for backend in backends() {
        metrics_count_hosts_instances_placements_and_imports_on(backend);
    }
}

fn metrics_count_hosts_instances_placements_and_imports_on(backend: Backend) {
    let images = ImageServer::start();
    let image = images.publish("x", 1024);
    let cloud = Cloud::start(backend, json!({"sources": [images.server.url()]}));
    let _host = HostAgent::join(&cloud, "a", |config| config["sources"] = json!([images.server.url()]));
    cloud.wait_for_host("a", "the host to join", |h| h["state"] == "running");

    let dry = json!({"image": image, "memory_mib": 256, "start": false, "dry_run": true});
    let (status, answer) = cloud.send(M::POST, "/instances", Some(TOKEN), Some(dry));
    assert_eq!(status, 200, "{answer:#}");
    let huge = json!({"image": image, "memory_mib": 1_048_576, "start": false});
    let (status, refused) = cloud.send(M::POST, "/instances", Some(TOKEN), Some(huge));
    assert_eq!((status, refused["code"].as_str()), (422, Some("NoCapacity")), "{refused:#}");
    // Placed: the host imports the image first.
    let created = cloud.create(json!({"image": image, "alias": "m", "memory_mib": 256, "start": false}));

    // No credentials: Prometheus scrapes as anyone.
    let response = reqwest::blocking::get(format!("{}/metrics", cloud.server.url())).unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], OPENMETRICS_CONTENT_TYPE);
    let text = response.text().unwrap();
    let value = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));

    assert_eq!(value(r#"cloudapi_hosts{state="running"}"#), 1.0);
    assert_eq!(value(r#"cloudapi_hosts{state="draining"}"#), 0.0);
    assert_eq!(value(r#"cloudapi_hosts{state="unknown"}"#), 0.0);
    assert_eq!(value(r#"cloudapi_instances{phase="created"}"#), 1.0);
    assert_eq!(value(r#"cloudapi_instances{phase="provisioning"}"#), 0.0);
    for outcome in ["dry_run", "no_capacity", "placed"] {
        assert_eq!(value(&format!(r#"cloudapi_placements_total{{outcome="{outcome}"}}"#)), 1.0, "{outcome}");
    }
    assert!(value("cloudapi_import_bytes_total") >= 1024.0, "{text}");
    let requests = |route: &str, method: &str, status: u16| {
        value(&format!(r#"http_requests_total{{route="{route}",method="{method}",status="{status}"}}"#))
    };
    assert_eq!(requests("/api/v1/instances", "POST", 422), 1.0);
    assert_eq!(requests("/api/v1/instances", "POST", 202), 1.0);
    assert!(requests("/api/v1/instances/{id}", "GET", 200) >= 1.0, "{text}");
    // Bounded labels and no secrets: no raw path, no credential.
    for leak in [created["uuid"].as_str().unwrap(), image.as_str(), TOKEN, JOIN] {
        assert!(!text.contains(leak), "{leak:?} in:\n{text}");
    }
}
