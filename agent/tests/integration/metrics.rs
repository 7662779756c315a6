//! `GET /metrics` of a live agent after an import: the import's bytes and outcome, the images,
//! and the HTTP requests by route pattern (never by raw path), without credentials.

use service_kit::metrics::{sample, OPENMETRICS_CONTENT_TYPE};

use crate::common::{compress, Agent, Imgapi, TOKEN};

#[test]
fn metrics_count_an_import_the_images_and_the_requests_by_route() {
    let imgapi = Imgapi::start();
    let raw: Vec<u8> = (0..2u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let file = compress(&raw, "gzip");
    let uuid = imgapi.publish("metered", &file, "gzip", None);
    let agent = Agent::start(&[format!("http://admin:secret@{}", imgapi.server.addr)]);

    let imported = agent.import(&uuid);
    assert_eq!(imported.status(), 200, "{}", imported.text().unwrap());
    for path in ["/images".to_string(), format!("/images/{uuid}"), "/nothing/here".to_string()] {
        agent.send(reqwest::Method::GET, &path, None);
    }

    // No credentials: Prometheus scrapes as anyone.
    let response = reqwest::blocking::get(format!("{}/metrics", agent.base())).unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], OPENMETRICS_CONTENT_TYPE);
    let text = response.text().unwrap();
    let value = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));

    assert!(value("agent_import_bytes_total") >= file.len() as f64, "{} bytes:\n{text}", file.len());
    assert_eq!(value(r#"agent_imports_total{outcome="succeeded"}"#), 1.0);
    assert_eq!(sample(&text, r#"agent_imports_total{outcome="failed"}"#), None, "{text}");
    assert_eq!(value("agent_images"), 1.0);
    assert_eq!(value(r#"agent_instances{state="running"}"#), 0.0);
    let requests = |route: &str, method: &str, status: u16| {
        value(&format!(r#"http_requests_total{{route="{route}",method="{method}",status="{status}"}}"#))
    };
    assert_eq!(requests("/api/v1/images", "GET", 200), 1.0);
    assert_eq!(requests("/api/v1/images", "POST", 200), 1.0);
    assert_eq!(requests("/api/v1/images/{uuid}", "GET", 200), 1.0);
    assert_eq!(requests("unmatched", "GET", 404), 1.0);
    assert_eq!(value(r#"http_request_duration_seconds_count{route="/api/v1/images",method="POST"}"#), 1.0);
    // Bounded labels and no secrets: no raw path, no credential.
    for leak in [uuid.as_str(), "/nothing", "secret", TOKEN] {
        assert!(!text.contains(leak), "{leak:?} in:\n{text}");
    }
}
