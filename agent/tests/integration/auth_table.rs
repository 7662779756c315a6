//! Auth table: every mutating route of the agent's API (and the console, which is a read that
//! needs credentials) refuses missing, wrong and malformed credentials with a 401 and a
//! `{"code","message"}` body, while the same requests with good credentials get past the
//! check. And the credential check takes as long for a secret wrong in its first byte as for
//! one wrong only in its last.

use std::path::Path;

use agent::api::Credentials;
use agent::config::{AuthConfig, User};
use base64::Engine;
use reqwest::blocking::Client;
use reqwest::header::HeaderValue;
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::Agent;
use crate::timing::{assert_differs, assert_same_time, interleaved_medians};

const TOKEN: &str = "reliability-token-0123456789abcdef";
const USER: &str = "ops";
const PASSWORD: &str = "ops-password-0123456789";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn start_agent(dir: &Path) -> Agent {
    Agent::start_in(dir, &[], |config| {
        config["auth"] = json!({"tokens": [TOKEN], "users": [{"name": USER, "password": PASSWORD}]});
        config["log_level"] = json!("error");
    })
}

/// Every route that needs credentials, with a body it would otherwise accept.
fn protected_routes() -> Vec<(Method, String, Vec<u8>)> {
    let image = "6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b";
    let instance = "0f6b2a6c-5d2e-4c8e-9b1e-3a3f1c2d4e5f";
    vec![
        (Method::POST, "/api/v1/images".into(), json!({"uuid": image}).to_string().into_bytes()),
        (Method::POST, "/api/v1/images".into(), b"{not json".to_vec()),
        (Method::DELETE, format!("/api/v1/images/{image}"), vec![]),
        (Method::DELETE, "/api/v1/images/not-a-uuid".into(), vec![]),
        (
            Method::POST,
            "/api/v1/instances".into(),
            json!({"image": image, "mem": 64}).to_string().into_bytes(),
        ),
        (Method::POST, format!("/api/v1/instances/{instance}"), vec![]),
        (Method::POST, format!("/api/v1/instances/{instance}?action=stop&force=true"), vec![]),
        (Method::POST, format!("/api/v1/instances/{instance}?action=reboot"), vec![]),
        (Method::PUT, format!("/api/v1/instances/{instance}"), vec![]),
        (Method::DELETE, format!("/api/v1/instances/{instance}"), vec![]),
        (Method::DELETE, "/api/v1/instances/..%2F..%2Fetc".into(), vec![]),
        (Method::GET, format!("/api/v1/instances/{instance}/console"), vec![]),
        (Method::GET, format!("/api/v1/instances/{instance}/console?follow=true"), vec![]),
        (Method::POST, format!("/api/v1/instances/{instance}/console"), b"root\n".to_vec()),
        // The guest configuration: user-data often holds secrets, so reading it needs credentials.
        (Method::GET, format!("/api/v1/instances/{instance}/guest"), vec![]),
        (Method::PATCH, format!("/api/v1/instances/{instance}/guest"), br#"{"hostname": "x"}"#.to_vec()),
        (Method::PUT, format!("/api/v1/instances/{instance}/cdrom"), br#"{"iso": null}"#.to_vec()),
        (Method::POST, format!("/api/v1/instances/{instance}/snapshots"), br#"{"name": "s"}"#.to_vec()),
        (Method::POST, format!("/api/v1/instances/{instance}/snapshots/s?action=rollback"), vec![]),
        (Method::DELETE, format!("/api/v1/instances/{instance}/snapshots/s"), vec![]),
        (
            Method::POST,
            format!("/api/v1/instances/{instance}/publish"),
            br#"{"name": "n", "version": "1"}"#.to_vec(),
        ),
        (Method::POST, "/api/v1/isos".into(), br#"{"url": "http://127.0.0.1:9/x.iso"}"#.to_vec()),
        (Method::PUT, "/api/v1/isos/new.iso".into(), b"not really an iso".to_vec()),
        (Method::POST, "/api/v1/isos/a.iso?action=rename&to=b.iso".into(), vec![]),
        (Method::DELETE, "/api/v1/isos/a.iso".into(), vec![]),
        // A name that fails validation: the control below must not make a bridge on this host.
        (Method::POST, "/api/v1/switches".into(), br#"{"name": "-not a switch"}"#.to_vec()),
        (Method::DELETE, "/api/v1/switches/lab".into(), vec![]),
    ]
}

/// Authorization headers that must all be refused (`None`: no header at all).
fn bad_credentials() -> Vec<Option<HeaderValue>> {
    let text = |s: String| Some(HeaderValue::from_str(&s).unwrap());
    let mut last_byte_wrong = TOKEN.to_string();
    last_byte_wrong.pop();
    last_byte_wrong.push('X');
    vec![
        None,
        text(String::new()),
        text("Bearer".into()),
        text("Bearer ".into()),
        text("Bearer wrong-token".into()),
        text(format!("Bearer {last_byte_wrong}")),
        text(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        text(format!("Bearer {TOKEN}x")),
        text(format!("Bearer {}", TOKEN.to_uppercase())),
        text(format!("Token {TOKEN}")),
        text(TOKEN.into()),
        text(format!("Basic {}", b64(format!("{USER}:wrong").as_bytes()))),
        text(format!("Basic {}", b64(format!("nobody:{PASSWORD}").as_bytes()))),
        text(format!("Basic {}", b64(format!("{USER}:{PASSWORD}x").as_bytes()))),
        text(format!("Basic {}", b64(format!("{USER}:").as_bytes()))),
        text(format!("Basic {}", b64(USER.as_bytes()))),
        text(format!("Basic {}", b64(b":"))),
        text(format!("Basic {}", b64(b"ops:\xff\xfe"))),
        text(format!("Basic {}", b64(TOKEN.as_bytes()))),
        text("Basic".into()),
        text("Basic !!!not-base64!!!".into()),
        text(format!("Basic {}=", b64(format!("{USER}:{PASSWORD}").as_bytes()))),
        text(format!("Bearer {TOKEN}, Basic {}", b64(format!("{USER}:{PASSWORD}").as_bytes()))),
        text(format!("Digest username=\"{USER}\", response=\"{PASSWORD}\"")),
        Some(HeaderValue::from_bytes(b"Basic \xff\xfe\xfd").unwrap()),
        Some(HeaderValue::from_bytes(&[format!("Bearer {TOKEN}").as_bytes(), b"\xff"].concat()).unwrap()),
        text(format!("Bearer {}", "x".repeat(8000))),
    ]
}

fn send(
    client: &Client,
    agent: &Agent,
    route: &(Method, String, Vec<u8>),
    auth: Option<&HeaderValue>,
) -> reqwest::blocking::Response {
    let (method, path, body) = route;
    let mut request = client
        .request(method.clone(), format!("{}{path}", agent.base()))
        .header("content-type", "application/json")
        .body(body.clone());
    if let Some(value) = auth {
        request = request.header("authorization", value.clone());
    }
    request.send().unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

#[test]
fn every_protected_route_refuses_missing_wrong_and_malformed_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(dir.path());
    let client = Client::builder().timeout(std::time::Duration::from_secs(30)).build().unwrap();
    let mut checked = 0;
    for route in protected_routes() {
        for credentials in bad_credentials() {
            let response = send(&client, &agent, &route, credentials.as_ref());
            let what = format!("{} {} with {credentials:?}", route.0, route.1);
            assert_eq!(response.status(), 401, "{what}");
            assert_eq!(
                response.headers().get("www-authenticate").map(|v| v.to_str().unwrap()),
                Some("Basic realm=\"agent\""),
                "{what}"
            );
            assert_eq!(response.headers()["content-type"], "application/json", "{what}");
            let body: Value = response.json().unwrap_or_else(|e| panic!("{what}: body is not JSON: {e}"));
            let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["code", "message"], "{what}: {body}");
            assert_eq!(body["code"], "UnauthorizedError", "{what}");
            assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {body}");
            checked += 1;
        }
        // The control: good credentials (both kinds, either scheme spelling) get past the check,
        // so the 401s above are the credential check's and not the route's.
        let good = [
            format!("Bearer {TOKEN}"),
            format!("bearer   {TOKEN}  "),
            format!("Basic {}", b64(format!("{USER}:{PASSWORD}").as_bytes())),
        ];
        for value in good {
            let status =
                send(&client, &agent, &route, Some(&HeaderValue::from_str(&value).unwrap())).status();
            assert_ne!(status, 401, "{} {} with {value}", route.0, route.1);
            assert!(!status.is_server_error(), "{} {} with {value}: {status}", route.0, route.1);
        }
    }
    eprintln!("{checked} refused requests checked");
    // Nothing was imported or created by any of them.
    let list = |path: &str| -> Value {
        client.get(format!("{}{path}", agent.base())).send().unwrap().json().unwrap()
    };
    assert_eq!(list("/api/v1/images"), json!([]));
    assert_eq!(list("/api/v1/instances?destroyed=true"), json!([]));
}

/// Secrets long enough that a comparison that stops at the first differing byte takes
/// measurably longer when only the last byte differs.
fn long_secret(fill: u8) -> String {
    std::iter::repeat_n(fill as char, 64 * 1024).collect()
}

fn wrong_at(secret: &str, index: usize) -> String {
    let mut bytes = secret.as_bytes().to_vec();
    bytes[index] = if bytes[index] == b'Z' { b'Y' } else { b'Z' };
    String::from_utf8(bytes).unwrap()
}

#[test]
fn credential_checks_take_the_same_time_however_much_matched() {
    let token = long_secret(b't');
    let password = long_secret(b'p');
    let creds = Credentials::new(&AuthConfig {
        tokens: vec![token.clone()],
        users: vec![User { name: USER.into(), password: password.clone() }],
    });
    let last = token.len() - 1;

    // The control: the same measurement sees a comparison that stops at the first difference.
    let (first_wrong, last_wrong) = (wrong_at(&token, 0), wrong_at(&token, last));
    assert_differs("naive == on 64 KiB", 3, 3.0, || {
        interleaved_medians(
            301,
            64,
            || {
                std::hint::black_box(std::hint::black_box(first_wrong.as_bytes()) == token.as_bytes());
            },
            || {
                std::hint::black_box(std::hint::black_box(last_wrong.as_bytes()) == token.as_bytes());
            },
        )
    });

    assert!(creds.accepts(&format!("Bearer {token}")));
    let (a, b) = (format!("Bearer {first_wrong}"), format!("Bearer {last_wrong}"));
    assert!(!creds.accepts(&a) && !creds.accepts(&b));
    assert_same_time("agent bearer token", 3, 1.25, || {
        interleaved_medians(
            301,
            4,
            || {
                std::hint::black_box(creds.accepts(std::hint::black_box(&a)));
            },
            || {
                std::hint::black_box(creds.accepts(std::hint::black_box(&b)));
            },
        )
    });

    let basic = |password: &str| format!("Basic {}", b64(format!("{USER}:{password}").as_bytes()));
    assert!(creds.accepts(&basic(&password)));
    let (a, b) = (basic(&wrong_at(&password, 0)), basic(&wrong_at(&password, password.len() - 1)));
    assert_same_time("agent basic password", 3, 1.25, || {
        interleaved_medians(
            301,
            4,
            || {
                std::hint::black_box(creds.accepts(std::hint::black_box(&a)));
            },
            || {
                std::hint::black_box(creds.accepts(std::hint::black_box(&b)));
            },
        )
    });
}

#[test]
fn over_http_a_password_wrong_in_its_first_or_last_byte_is_refused_as_fast() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(dir.path());
    let client = Client::new();
    let route = (Method::DELETE, "/api/v1/images/6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b".to_string(), vec![]);
    let header = |password: &str| {
        HeaderValue::from_str(&format!("Basic {}", b64(format!("{USER}:{password}").as_bytes()))).unwrap()
    };
    let (a, b) = (header(&wrong_at(PASSWORD, 0)), header(&wrong_at(PASSWORD, PASSWORD.len() - 1)));
    let refuse = |value: &HeaderValue| {
        let status = send(&client, &agent, &route, Some(value)).status();
        assert_eq!(status, 401);
    };
    // Warm the connection and the server's workers first.
    for _ in 0..20 {
        refuse(&a);
        refuse(&b);
    }
    assert_same_time("agent over HTTP", 3, 1.5, || interleaved_medians(201, 1, || refuse(&a), || refuse(&b)));
}
