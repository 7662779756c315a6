//! Authentication: every mutating route refuses missing, wrong and malformed credentials;
//! Basic (plain and hashed passwords) and HTTP Signature both work.

use base64::Engine;
use reqwest::Method;
use serde_json::json;

use crate::common::*;

/// Every route that changes state, with a body that would otherwise be acceptable.
pub(crate) fn mutating_routes(uuid: &str) -> Vec<(Method, String, Vec<u8>)> {
    let body = manifest("x").to_string().into_bytes();
    vec![
        (Method::POST, "/images".into(), body.clone()),
        (Method::POST, format!("/images/{uuid}?action=import"), body.clone()),
        (Method::POST, format!("/images/{uuid}?action=activate"), vec![]),
        (Method::POST, format!("/images/{uuid}?action=enable"), vec![]),
        (Method::POST, format!("/images/{uuid}?action=disable"), vec![]),
        (Method::POST, format!("/images/{uuid}?action=update"), b"{\"description\":\"x\"}".to_vec()),
        (Method::PUT, format!("/images/{uuid}/file?compression=none"), b"data".to_vec()),
        (Method::PUT, format!("/images/{uuid}/icon"), b"png".to_vec()),
        (Method::DELETE, format!("/images/{uuid}/icon"), vec![]),
        (Method::POST, format!("/images/{uuid}/acl"), b"[]".to_vec()),
        (Method::POST, format!("/images/{uuid}/acl?action=remove"), b"[]".to_vec()),
        (Method::DELETE, format!("/images/{uuid}"), vec![]),
        (Method::POST, "/state?action=dropcaches".into(), vec![]),
        (Method::GET, "/state".into(), vec![]),
    ]
}

#[test]
fn every_mutating_route_refuses_bad_credentials() {
    let env = Env::start();
    let uuid = uuid_of(&env.create(manifest("target")));
    let before = env.get_json(&format!("/images/{uuid}"));
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let bad_headers: Vec<Option<String>> = vec![
        None,
        Some(format!("Basic {}", b64("admin:wrong"))),
        Some(format!("Basic {}", b64("nobody:secret"))),
        Some(format!("Basic {}", b64("admin"))),
        Some("Basic !!!not-base64".into()),
        Some("Basic".into()),
        Some("Bearer abc".into()),
        Some("Signature keyId=\"admin\",algorithm=\"rsa-sha256\",signature=\"AAAA\"".into()),
        Some("Signature garbage".into()),
    ];
    for (method, path, body) in mutating_routes(&uuid) {
        for header in &bad_headers {
            let mut request =
                env.request(method.clone(), &path).header("content-type", "image/png").body(body.clone());
            if let Some(h) = header {
                request = request.header("authorization", h);
            }
            let response = request.send().unwrap();
            assert_eq!(
                response.headers().get("www-authenticate").map(|v| v.to_str().unwrap()),
                Some("Basic realm=\"IMGAPI\""),
                "{method} {path} {header:?}"
            );
            expect_error(response, 401, "UnauthorizedError");
        }
    }
    assert_eq!(env.get_json(&format!("/images/{uuid}")), before, "nothing changed");
    // Bad credentials on a read are refused too, rather than silently ignored.
    let response = env.request(Method::GET, "/images").basic_auth(USER, Some("wrong")).send().unwrap();
    expect_error(response, 401, "UnauthorizedError");
}

#[test]
fn hashed_passwords_work() {
    let argon = imgapi::auth::basic::hash_password("hunter2");
    let env = Env::with(json!({"userdb": [{"name": "ops", "password": argon}]}));
    let ok = env
        .request(Method::POST, "/images")
        .basic_auth("ops", Some("hunter2"))
        .json(&manifest("h"))
        .send()
        .unwrap();
    assert_eq!(ok.status(), 200);
    let bad = env
        .request(Method::POST, "/images")
        .basic_auth("ops", Some("hunter3"))
        .json(&manifest("h"))
        .send()
        .unwrap();
    assert_eq!(bad.status(), 401);
    // Ping names the authenticated user.
    let pong = expect_json(
        env.request(Method::GET, "/ping").basic_auth("ops", Some("hunter2")).send().unwrap(),
        200,
    );
    assert_eq!(pong["user"], "ops");
}

#[test]
fn http_signature_auth_as_triton_tools_send_it() {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::Pkcs1v15Sign;
    use sha2::{Digest, Sha256};

    let public = include_str!("../fixtures/keys/tester_rsa.pub").trim().to_string();
    let env = Env::with(json!({"auth_keys": {"tester": [public]}}));
    let key = rsa::RsaPrivateKey::from_pkcs1_pem(include_str!("../fixtures/keys/tester_rsa")).unwrap();
    let sign = |date: &str| {
        let digest = Sha256::digest(format!("date: {date}").as_bytes());
        let signature = key.sign(Pkcs1v15Sign::new::<Sha256>(), &digest).unwrap();
        format!(
            "Signature keyId=\"tester\",algorithm=\"rsa-sha256\",signature=\"{}\"",
            base64::engine::general_purpose::STANDARD.encode(signature)
        )
    };
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let response = env
        .request(Method::POST, "/images")
        .header("date", &date)
        .header("authorization", sign(&date))
        .json(&manifest("signed"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().unwrap());
    let old = httpdate::fmt_http_date(std::time::SystemTime::now() - std::time::Duration::from_secs(600));
    let response = env
        .request(Method::POST, "/images")
        .header("date", &old)
        .header("authorization", sign(&old))
        .json(&manifest("stale"))
        .send()
        .unwrap();
    expect_error(response, 401, "UnauthorizedError");
}
