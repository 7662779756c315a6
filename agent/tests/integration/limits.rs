//! Request bodies: every documented limit is accepted, a larger body is a `{"code","message"}`
//! 413 on every route that reads one (never actix's plain-text one), and credentials are checked
//! before a byte of the body is read.

use serde_json::{json, Value};

use crate::common::{Agent, TOKEN};
use crate::raw_http::exchange;

/// Every route that reads a body, with a path that names nothing (the body is refused first).
const BODY_ROUTES: &[(&str, &str)] = &[
    ("POST", "/images"),
    ("POST", "/instances"),
    ("POST", "/instances/nope/publish"),
    ("POST", "/instances/nope/snapshots"),
    ("PATCH", "/instances/nope/guest"),
    ("POST", "/instances/nope/console"),
    ("POST", "/isos"),
    ("PUT", "/instances/nope/cdrom"),
    ("POST", "/switches"),
];

const LIMIT: usize = 4 << 20;

fn assert_too_large(answer: &crate::raw_http::Answer, what: &str) {
    assert_eq!(answer.status, 413, "{what}: {answer:?}");
    assert_eq!(answer.content_type, "application/json", "{what}: {answer:?}");
    let body: Value =
        serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("{what}: {e}: {answer:?}"));
    assert_eq!(body["code"], "PayloadTooLarge", "{what}: {body}");
    assert!(body["message"].as_str().unwrap().contains("4194304 bytes"), "{what}: {body}");
}

#[test]
fn the_largest_documented_create_is_accepted() {
    let agent = Agent::start(&[]);
    // 64 KiB of user-data and 64 metadata values of 4 KiB, each value all quotes: 8 KiB once
    // escaped, 576 KiB in all (actix's default limit was 256 KiB).
    let metadata: serde_json::Map<String, Value> =
        (0..64).map(|i| (format!("key-{i}"), json!("\"".repeat(4096)))).collect();
    let body = json!({
        "image": uuid::Uuid::new_v4(), "user_data": "u".repeat(64 * 1024), "metadata": metadata,
    });
    assert!(body.to_string().len() > 512 * 1024);
    let (status, answer) = agent.send(reqwest::Method::POST, "/instances", Some(body));
    assert_eq!((status, answer["code"].as_str()), (404, Some("ImageNotFound")), "{answer}");
}

#[test]
fn a_body_over_the_limit_is_a_json_413_on_every_route_and_only_after_the_credentials() {
    let agent = Agent::start(&[]);
    for (method, path) in BODY_ROUTES {
        let head = format!(
            "{method} /api/v1{path} HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}",
            LIMIT + 1
        );
        assert_too_large(&exchange(&agent.base(), &head, b""), &format!("{method} {path}, announced"));
    }
    // Sent in chunks with no length announced: cut off as it passes the limit.
    let chunk = vec![b' '; 64 * 1024];
    let mut body = Vec::new();
    for _ in 0..(LIMIT / chunk.len() + 1) {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(&chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let head = format!(
        "POST /api/v1/instances HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked"
    );
    assert_too_large(&exchange(&agent.base(), &head, &body), "chunked");
    // Without credentials the body is never read: 401, whatever its size.
    let head = format!("POST /api/v1/instances HTTP/1.1\r\nContent-Length: {}", LIMIT + 1);
    let answer = exchange(&agent.base(), &head, b"");
    assert_eq!(answer.status, 401, "{answer:?}");
}
