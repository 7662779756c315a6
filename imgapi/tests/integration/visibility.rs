//! What a caller may not see must look exactly like what does not exist: a private image under
//! `anonymous_reads: public`, an image of another channel, another account's image, as a
//! uuid in a path or as a `?marker=`. Each pair of answers is compared whole: status, headers
//! and body (with the uuid swapped).

use reqwest::Method;
use serde_json::json;

use crate::common::*;

/// Status, the headers that are not per-request, and the body with `uuid` written as `U`.
fn answer(request: reqwest::blocking::RequestBuilder, uuid: &str) -> (u16, Vec<String>, String) {
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    let mut headers: Vec<String> = response
        .headers()
        .iter()
        .filter(|(name, _)| {
            !matches!(name.as_str(), "date" | "x-request-id" | "request-id" | "x-response-time")
        })
        .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap_or("?").replace(uuid, "U")))
        .collect();
    headers.sort();
    let body = response.text().unwrap().replace(uuid, "U");
    (status, headers, body)
}

/// Every `/images/:uuid` read and the marker, for `hidden` and for a uuid nobody has.
fn assert_hidden_looks_missing(
    hidden: &str,
    as_caller: impl Fn(Method, &str) -> reqwest::blocking::RequestBuilder,
) {
    let missing = uuid::Uuid::new_v4().to_string();
    for path in ["/images/U", "/images/U/file", "/images/U/icon", "/images?marker=U", "/images/U?channel=dev"]
    {
        // ListImages has no HEAD.
        let methods =
            if path.starts_with("/images?") { vec![Method::GET] } else { vec![Method::GET, Method::HEAD] };
        for method in methods {
            let of_hidden = answer(as_caller(method.clone(), &path.replace('U', hidden)), hidden);
            let of_missing = answer(as_caller(method.clone(), &path.replace('U', &missing)), &missing);
            assert_eq!(of_hidden, of_missing, "{method} {path}: a hidden image answers unlike a missing one");
            assert_eq!(of_hidden.0, 404, "{method} {path}: {of_hidden:?}");
        }
    }
}

fn with_icon(env: &Env, body: serde_json::Value, bytes: &[u8]) -> String {
    let uuid = uuid_of(&env.publish(body, bytes));
    env.put_icon(&uuid, "png");
    uuid
}

#[test]
fn a_private_image_looks_missing_to_anonymous_callers_of_a_public_server() {
    let env = Env::with(json!({"anonymous_reads": "public"}));
    let private = with_icon(&env, manifest("private"), b"private bytes");
    assert_hidden_looks_missing(&private, |method, path| env.anon(method, path));
    // The owner still sees it, and a marker at it starts the page there.
    assert_eq!(env.admin(Method::GET, &format!("/images/{private}")).send().unwrap().status(), 200);
    let page = expect_json(env.admin(Method::GET, &format!("/images?marker={private}")).send().unwrap(), 200);
    assert_eq!(page[0]["uuid"], private.as_str());
}

#[test]
fn an_image_of_another_channel_or_account_looks_missing() {
    let env = Env::with(json!({"channels": [
        {"name": "dev", "description": "development builds", "default": true},
        {"name": "release", "description": "release builds"}
    ]}));
    let created =
        env.admin(Method::POST, "/images?channel=release").json(&manifest("release only")).send().unwrap();
    let in_release = uuid_of(&expect_json(created, 200));
    // In "release" only: the default channel (dev) does not see it.
    assert_hidden_looks_missing(&in_release, |method, path| env.admin(method, path));

    let accounts = Env::start();
    let mut owned = manifest("owned");
    let owner = uuid::Uuid::new_v4();
    owned["owner"] = json!(owner);
    let owned = with_icon(&accounts, owned, b"owned bytes");
    let stranger = uuid::Uuid::new_v4();
    assert_hidden_looks_missing(&owned, |method, path| {
        let joiner = if path.contains('?') { '&' } else { '?' };
        accounts.admin(method, &format!("{path}{joiner}account={stranger}"))
    });
}
