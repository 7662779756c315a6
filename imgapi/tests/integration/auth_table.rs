//! Auth, beyond `auth.rs`: the routes its table leaves out (auth-key reload, the Triton-only
//! routes, the Triton-only actions, chunked uploads) and more malformed credentials (bytes
//! that are not UTF-8, near-misses of the right password, padding and case games), each
//! refused with a 401 `{"code","message"}` while the right credentials get past the check.
//! And the time to refuse a password does not depend on how much of it matched: measured on
//! the password check itself (where a leak would show) and over HTTP.

use base64::Engine;
use reqwest::blocking::Body;
use reqwest::header::HeaderValue;
use reqwest::Method;
use serde_json::json;

use crate::common::*;
use crate::timing::{assert_differs, assert_same_time, interleaved_medians};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Routes that change state (or would, on Triton) beyond `auth::mutating_routes`.
fn more_routes(uuid: &str) -> Vec<(Method, String, Vec<u8>)> {
    vec![
        (Method::POST, "/authkeys/reload".into(), vec![]),
        (Method::GET, "/mirrors".into(), vec![]),
        (Method::POST, format!("/images/{uuid}?action=import&source=ftp://127.0.0.1:9"), vec![]),
        (Method::PUT, format!("/images/{uuid}/file?source=ftp://127.0.0.1:9"), vec![]),
        (
            Method::POST,
            format!("/images/{uuid}/file/from-url"),
            b"{\"url\":\"http://127.0.0.1:9/x\"}".to_vec(),
        ),
        (Method::POST, format!("/images/{uuid}/clone?account=930896af-bf8c-48d4-885c-6573a94b1853"), vec![]),
        (Method::POST, format!("/images/{uuid}/push"), vec![]),
        (Method::POST, "/images?action=create-from-vm".into(), b"{}".to_vec()),
        (Method::POST, "/images?action=import-docker-image".into(), b"{}".to_vec()),
        (Method::POST, format!("/images/{uuid}?action=export"), vec![]),
        (Method::POST, format!("/images/{uuid}?action=import-remote"), vec![]),
        (Method::POST, format!("/images/{uuid}?action=change-stor"), vec![]),
        (Method::POST, format!("/images/{uuid}?action=activate&channel=*"), vec![]),
        (
            Method::PUT,
            format!("/images/{uuid}/file?compression=gzip&sha1={}", sha1_hex(b"data")),
            b"data".to_vec(),
        ),
    ]
}

/// Authorization values that must all be refused (`None`: no header).
fn bad_credentials() -> Vec<Option<HeaderValue>> {
    let text = |s: String| Some(HeaderValue::from_str(&s).unwrap());
    let basic = |s: &[u8]| text(format!("Basic {}", b64(s)));
    vec![
        None,
        text(String::new()),
        text("Basic ".into()),
        basic(b"admin:secre"),
        basic(b"admin:secretx"),
        basic(b"admin:Secret"),
        basic(b"Admin:secret"),
        basic(b" admin:secret"),
        basic(b"admin :secret"),
        basic(b"admin:secret\n"),
        basic(b"admin:secret\0"),
        basic(b"admin:"),
        basic(b":secret"),
        basic(b"admin\0:secret"),
        basic(b"admin:pw2"),
        basic(b"other:secret"),
        basic(b"admin:\xff\xfe"),
        basic(b"\xffadmin:secret"),
        text(format!("Basic {}=", b64(b"admin:secret"))),
        text(format!("Basic {}", b64(b"admin:secret").to_lowercase())),
        text(format!("Basic {}", base64::engine::general_purpose::URL_SAFE.encode([0xfb, 0xff, 0xfe]))),
        text(format!("Basic {} {}", b64(b"admin:wrong"), b64(b"admin:secret"))),
        text(format!("Basic{}", b64(b"admin:secret"))),
        text(format!("Bearer {}", b64(b"admin:secret"))),
        text("Basic admin:secret".into()),
        text(format!("Basic {}", b64(&[b"admin:".as_slice(), &[b's'; 7000]].concat()))),
        Some(HeaderValue::from_bytes(b"Basic \xff\xfe\xfd").unwrap()),
        Some(
            HeaderValue::from_bytes(
                &[format!("Basic {}", b64(b"admin:secret")).as_bytes(), b"\xff"].concat(),
            )
            .unwrap(),
        ),
        text("Signature keyId=\"admin\",algorithm=\"rsa-sha256\",headers=\"date\",signature=\"\"".into()),
        text("Signature keyId=\"/admin/keys/x\",algorithm=\"hmac-sha256\",signature=\"AAAA\"".into()),
        text("Signature ".into()),
    ]
}

#[test]
fn more_routes_and_malformed_credentials_are_refused() {
    let env = Env::start();
    let uuid = uuid_of(&env.create(manifest("target")));
    let before = env.get_json(&format!("/images/{uuid}"));
    let mut routes = crate::auth::mutating_routes(&uuid);
    routes.extend(more_routes(&uuid));
    let credentials = bad_credentials();
    for (method, path, body) in &routes {
        for value in &credentials {
            let mut request = env
                .request(method.clone(), path)
                .header("content-type", "application/json")
                .body(body.clone());
            if let Some(value) = value {
                request = request.header("authorization", value.clone());
            }
            let response = request.send().unwrap();
            let what = format!("{method} {path} with {value:?}");
            assert_eq!(response.status(), 401, "{what}: {}", response.text().unwrap());
            let body = expect_error(response, 401, "UnauthorizedError");
            assert_eq!(body.as_object().unwrap().len(), 2, "{what}: {body}");
        }
        // A chunked body (no Content-Length) is refused the same way.
        let chunked = Body::new(std::io::Cursor::new(body.clone()));
        let response = env.request(method.clone(), path).body(chunked).send().unwrap();
        expect_error(response, 401, "UnauthorizedError");
    }
    // Nothing the refused requests carried was applied.
    assert_eq!(env.get_json(&format!("/images/{uuid}")), before, "a refused request changed the image");
    let all = expect_json(env.admin(Method::GET, "/images?state=all").send().unwrap(), 200);
    assert_eq!(all.as_array().unwrap().len(), 1, "nothing was created: {all}");

    // The control: the right credentials get past the check (each route's own answer), so the
    // 401s above are the credential check's. The delete goes last.
    routes.sort_by_key(|(method, _, _)| *method == Method::DELETE);
    for (method, path, body) in &routes {
        let response = env.admin(method.clone(), path).body(body.clone()).send().unwrap();
        assert_ne!(response.status(), 401, "{method} {path} with the right credentials");
        assert!(!response.status().is_server_error(), "{method} {path}: {}", response.status());
    }
}

/// A password long enough that a comparison stopping at the first differing byte takes
/// measurably longer when only the last byte differs.
fn long_password() -> String {
    "p".repeat(64 * 1024)
}

fn wrong_at(secret: &str, index: usize) -> String {
    let mut bytes = secret.as_bytes().to_vec();
    bytes[index] = if bytes[index] == b'Z' { b'Y' } else { b'Z' };
    String::from_utf8(bytes).unwrap()
}

#[test]
fn refusing_a_password_takes_as_long_however_much_of_it_matched() {
    use imgapi::auth::basic::UserDb;
    use imgapi::config::UserEntry;

    let password = long_password();
    let (first, last) = (wrong_at(&password, 0), wrong_at(&password, password.len() - 1));
    // The control: this measurement sees a comparison that stops at the first difference.
    assert_differs("naive == on 64 KiB", 3, 3.0, || {
        interleaved_medians(
            301,
            64,
            || {
                std::hint::black_box(std::hint::black_box(first.as_bytes()) == password.as_bytes());
            },
            || {
                std::hint::black_box(std::hint::black_box(last.as_bytes()) == password.as_bytes());
            },
        )
    });

    // A plain-text password in the config (compared as SHA-256 digests, in constant time).
    let db = UserDb::new(&[UserEntry { name: "admin".into(), password: password.clone() }]).unwrap();
    assert!(db.verify("admin", &password));
    assert!(!db.verify("admin", &first) && !db.verify("admin", &last));
    assert_same_time("plain password", 3, 1.25, || {
        interleaved_medians(
            301,
            4,
            || {
                std::hint::black_box(db.verify("admin", std::hint::black_box(&first)));
            },
            || {
                std::hint::black_box(db.verify("admin", std::hint::black_box(&last)));
            },
        )
    });

    // An argon2 hash: each refusal runs the full hash (no early exit, no cache of failures).
    let hashed = UserDb::new(&[UserEntry {
        name: "admin".into(),
        password: imgapi::auth::basic::hash_password("correct horse battery staple"),
    }])
    .unwrap();
    let good = "correct horse battery staple";
    let (first, last) = (wrong_at(good, 0), wrong_at(good, good.len() - 1));
    assert!(hashed.verify("admin", good));
    assert_same_time("argon2 password", 3, 1.25, || {
        interleaved_medians(
            15,
            1,
            || {
                std::hint::black_box(hashed.verify("admin", &first));
            },
            || {
                std::hint::black_box(hashed.verify("admin", &last));
            },
        )
    });
}

#[test]
fn over_http_a_password_wrong_in_its_first_or_last_byte_is_refused_as_fast() {
    let password = "a-long-enough-password-0123456789";
    let env = Env::with(json!({"userdb": [{"name": USER, "password": password}]}));
    let (first, last) = (wrong_at(password, 0), wrong_at(password, password.len() - 1));
    let refuse = |wrong: &str| {
        let response =
            env.request(Method::POST, "/images").basic_auth(USER, Some(wrong)).body("{}").send().unwrap();
        assert_eq!(response.status(), 401);
        response.bytes().unwrap();
    };
    // Warm the connection and the server's workers first.
    for _ in 0..20 {
        refuse(&first);
        refuse(&last);
    }
    assert_same_time("imgapi over HTTP", 3, 1.5, || {
        interleaved_medians(201, 1, || refuse(&first), || refuse(&last))
    });
}
