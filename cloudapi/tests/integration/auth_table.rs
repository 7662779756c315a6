//! Auth table: every route of cloudapi that changes the fleet, or reads what needs
//! credentials (consoles, guest data), refuses missing, wrong and malformed credentials with a
//! 401 `UnauthorizedError`, and gets past the check with a user's; the host routes take only
//! the host's own credential (or, to join, a join token), never a user's.

use base64::Engine;
use reqwest::Method as M;
use serde_json::{json, Value};

use crate::common::*;

/// Routes that need a user, each with a body it would otherwise take.
fn user_routes(host: &str, instance: &str) -> Vec<(M, String, Option<Value>)> {
    vec![
        (M::POST, "/instances".into(), Some(json!({"image": instance, "dry_run": true}))),
        (M::POST, format!("/instances/{instance}?action=start"), None),
        (M::DELETE, format!("/instances/{instance}"), None),
        (M::GET, format!("/instances/{instance}/console"), None),
        (M::POST, format!("/instances/{instance}/console"), Some(json!("root\n"))),
        (M::GET, format!("/instances/{instance}/guest"), None),
        (M::PATCH, format!("/instances/{instance}/guest"), Some(json!({"hostname": "x"}))),
        (M::POST, format!("/instances/{instance}/snapshots"), Some(json!({"name": "s"}))),
        (M::POST, format!("/hosts/{host}?action=drain"), None),
        (M::DELETE, format!("/hosts/{host}"), None),
    ]
}

fn basic(text: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(text))
}

#[test]
fn every_route_that_needs_credentials_refuses_missing_and_wrong_ones() {
    let cloud = Cloud::start(
        Backend::Sqlite,
        json!({"auth": {"tokens": [TOKEN], "users": [{"name": "ops", "password": "ops-password"}]}}),
    );
    let (_, joined) =
        cloud.send(M::POST, "/hosts", Some(JOIN), Some(registration("h1", "http://127.0.0.1:9")));
    let (host, credential) =
        (joined["id"].as_str().unwrap().to_string(), joined["credential"].as_str().unwrap().to_string());
    let instance = uuid::Uuid::new_v4().to_string();
    let client = reqwest::blocking::Client::new();
    let call = |method: &M, path: &str, authorization: Option<String>, body: &Option<Value>| {
        let mut request = client.request(method.clone(), cloud.url(path));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().unwrap();
        (response.status().as_u16(), response.json::<Value>().unwrap_or(Value::Null))
    };
    let wrong = [
        None,
        Some("Bearer not-the-token-at-all".to_string()),
        Some(format!("Bearer {JOIN}")),
        Some(format!("Bearer {credential}")),
        Some(basic("ops:wrong")),
        Some(basic("nobody:ops-password")),
        Some("Digest x".to_string()),
        Some("Bearer".to_string()),
    ];
    // The host routes: its own credential only.
    let beat = Some(json!({"capacity": {"vcpus": 1, "memory_mib": 1024, "disk_free_mib": 1024}}));
    let heartbeat = format!("/hosts/{host}/heartbeat");
    for authorization in [
        None,
        Some(format!("Bearer {TOKEN}")),
        Some(format!("Bearer {JOIN}")),
        Some(basic("ops:ops-password")),
    ] {
        let (status, answer) = call(&M::PUT, &heartbeat, authorization.clone(), &beat);
        assert_eq!(status, 401, "heartbeat with {authorization:?}: {answer}");
    }
    assert_eq!(call(&M::PUT, &heartbeat, Some(format!("Bearer {credential}")), &beat).0, 204);
    let join = Some(registration("h2", "http://127.0.0.1:9"));
    for authorization in
        [None, Some(format!("Bearer {TOKEN}")), Some(basic("ops:ops-password")), Some("Bearer x".into())]
    {
        let (status, answer) = call(&M::POST, "/hosts", authorization.clone(), &join);
        assert_eq!(status, 401, "registration with {authorization:?}: {answer}");
    }
    assert_eq!(call(&M::POST, "/hosts", Some(format!("Bearer {JOIN}")), &join).0, 201);

    // (Last: a user's DELETE of the host removes it.)
    for (method, path, body) in user_routes(&host, &instance) {
        for authorization in &wrong {
            let (status, answer) = call(&method, &path, authorization.clone(), &body);
            assert_eq!(
                (status, answer["code"].as_str()),
                (401, Some("UnauthorizedError")),
                "{method} {path} with {authorization:?}: {answer}"
            );
        }
        for good in [format!("Bearer {TOKEN}"), basic("ops:ops-password")] {
            let (status, answer) = call(&method, &path, Some(good.clone()), &body);
            assert_ne!(status, 401, "{method} {path} with {good}: {answer}");
        }
    }

    // Reads of the fleet are open, as on the agent.
    for path in ["/hosts", "/instances", "/ping"] {
        assert_eq!(call(&M::GET, path, None, &None).0, 200, "{path}");
    }
}
