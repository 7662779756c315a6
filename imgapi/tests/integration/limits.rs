//! Request bodies: the documented limits are accepted, and a larger body is a
//! `{"code","message"}` 413 on every route that reads JSON, announced or sent in chunks.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;
use crate::raw_http::{exchange, Answer};

/// The largest JSON body (`MAX_JSON_BODY`).
const LIMIT: usize = 1 << 20;

fn assert_too_large(answer: &Answer, what: &str) {
    assert_eq!(answer.status, 413, "{what}: {answer:?}");
    assert_eq!(answer.content_type, "application/json", "{what}: {answer:?}");
    let body: Value =
        serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("{what}: {e}: {answer:?}"));
    assert_eq!(body["code"], "RequestEntityTooLarge", "{what}: {body}");
}

#[test]
fn a_json_body_over_the_limit_is_a_json_413_on_every_route() {
    let env = Env::start();
    let uuid = uuid_of(&env.create(manifest("limits")));
    let credentials = "Authorization: Basic YWRtaW46c2VjcmV0"; // admin:secret
    let routes = [
        "POST /images".to_string(),
        format!("POST /images/{uuid}?action=update"),
        format!("POST /images/{}?action=import", uuid::Uuid::new_v4()),
        format!("POST /images/{uuid}/acl?action=add"),
        format!("POST /images/{uuid}/acl?action=remove"),
    ];
    for route in &routes {
        let head = format!(
            "{route} HTTP/1.1\r\n{credentials}\r\nContent-Type: application/json\r\nContent-Length: {}",
            LIMIT + 1
        );
        assert_too_large(&exchange(&env.url, &head, b""), &format!("{route}, announced"));
        let mut body = Vec::new();
        for _ in 0..(LIMIT / 65536 + 1) {
            body.extend_from_slice(b"10000\r\n");
            body.extend_from_slice(&[b' '; 65536]);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        let head = format!("{route} HTTP/1.1\r\n{credentials}\r\nTransfer-Encoding: chunked");
        assert_too_large(&exchange(&env.url, &head, &body), &format!("{route}, chunked"));
    }
    // The documented field limits fit in a body: tags of nearly 100 KiB, a 10 KiB description.
    let mut big = manifest("big");
    big["description"] = json!("d".repeat(10 * 1024 - 1));
    big["tags"] = json!({"blob": "t".repeat(100 * 1024 - 64)});
    let created = env.admin(Method::POST, "/images").json(&big).send().unwrap();
    assert_eq!(created.status(), 200, "{}", created.text().unwrap());
}
