//! Error answers: the inputs that crash the reference server, routing errors, bad bodies,
//! versions, validation, and the headers every response carries.

use reqwest::Method;
use serde_json::json;

use crate::common::*;

#[test]
fn inputs_that_crash_the_reference_server_get_clean_answers() {
    let env = Env::start();
    // CreateImage without an owner: the Go server's README walk-through depends on it, so the
    // owner defaults to the zero uuid (as imports get in the reference) instead of a crash.
    assert_eq!(env.create(manifest("no-owner"))["owner"], "00000000-0000-0000-0000-000000000000");
    let err = expect_error(
        env.admin(Method::POST, "/images")
            .json(&json!({"name": "x", "version": "1", "type": "other", "os": "other", "owner": 5}))
            .send()
            .unwrap(),
        422,
        "InvalidParameter",
    );
    assert_eq!(err["errors"][0]["field"], "owner");
    // CreateImage with a form-encoded (non-JSON) body.
    let err = expect_error(
        env.admin(Method::POST, "/images")
            .header("content-type", "application/x-www-form-urlencoded")
            .body("name=x&version=1")
            .send()
            .unwrap(),
        400,
        "InvalidContent",
    );
    assert!(err["message"].as_str().unwrap().starts_with("Invalid JSON: "), "{err}");
    // ...while a JSON body under curl -d's form content type is accepted.
    let created = env
        .admin(Method::POST, "/images")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(manifest("curl-d").to_string())
        .send()
        .unwrap();
    assert_eq!(created.status(), 200);
    // ?public= not a boolean.
    expect_error(env.anon(Method::GET, "/images?public=maybe").send().unwrap(), 422, "InvalidParameter");
    // billing_tag in local mode: answered, not crashed.
    assert_eq!(env.anon(Method::GET, "/images?billing_tag=a&billing_tag=b").send().unwrap().status(), 200);
    // Deleting a missing icon.
    let uuid = uuid_of(&env.create(manifest("icon-less")));
    expect_error(
        env.admin(Method::DELETE, &format!("/images/{uuid}/icon")).send().unwrap(),
        404,
        "ResourceNotFound",
    );
    // An unknown action on POST /images.
    let err = expect_error(
        env.admin(Method::POST, "/images?action=frob").json(&manifest("x")).send().unwrap(),
        422,
        "InvalidParameter",
    );
    assert_eq!(err["message"], "\"frob\" is not a valid action");
    // ListImageJobs needs Triton's workflow API.
    expect_error(
        env.anon(Method::GET, &format!("/images/{uuid}/jobs")).send().unwrap(),
        400,
        "NotImplemented",
    );
    // The server is still up.
    assert_eq!(env.anon(Method::GET, "/ping").send().unwrap().status(), 200);
}

#[test]
fn routing_errors() {
    let env = Env::start();
    let err = expect_error(env.anon(Method::GET, "/foo").send().unwrap(), 404, "ResourceNotFound");
    assert_eq!(err["message"], "/foo does not exist");
    let err = expect_error(env.anon(Method::GET, "/images/nope").send().unwrap(), 404, "ResourceNotFound");
    assert_eq!(err["message"], "/images/nope does not exist");
    // Upper-case uuids are not routed (as sdc-imgapi).
    expect_error(
        env.anon(Method::GET, "/images/6DE01E97-D7EC-4906-BD8B-CB4EAFDB7C8B").send().unwrap(),
        404,
        "ResourceNotFound",
    );
    let response = env.anon(Method::PATCH, "/images").send().unwrap();
    assert_eq!(response.headers()["allow"], "GET, POST");
    let err = expect_error(response, 405, "MethodNotAllowedError");
    assert_eq!(err["message"], "PATCH is not allowed");
    let missing = "55555555-5555-5555-5555-555555555555";
    let err = expect_error(
        env.anon(Method::GET, &format!("/images/{missing}")).send().unwrap(),
        404,
        "ResourceNotFound",
    );
    assert_eq!(err["message"], format!("image {missing} not found"));
    for (method, path) in [
        (Method::POST, format!("/images/{missing}?action=activate")),
        (Method::DELETE, format!("/images/{missing}")),
        (Method::PUT, format!("/images/{missing}/file?compression=none")),
    ] {
        expect_error(env.admin(method, &path).body("x").send().unwrap(), 404, "ResourceNotFound");
    }
    // Path tricks stay 404s.
    for path in
        ["/images/..%2F..%2Fetc%2Fpasswd", "/images/%2e%2e/file", "/images//file", "/datasets/../../x"]
    {
        let status = env.anon(Method::GET, path).send().unwrap().status().as_u16();
        assert!(status == 404 || status == 301, "{path}: {status}");
    }
}

#[test]
fn action_dispatch() {
    let env = Env::start();
    let uuid = uuid_of(&env.create(manifest("a")));
    let err = expect_error(
        env.admin(Method::POST, &format!("/images/{uuid}")).send().unwrap(),
        422,
        "InvalidParameter",
    );
    assert_eq!(err["message"], "no image \"action\" was specified");
    assert_eq!(err["errors"], json!([{"field": "action", "code": "MissingParameter"}]));
    let err = expect_error(
        env.admin(Method::POST, &format!("/images/{uuid}?action=frob")).send().unwrap(),
        422,
        "InvalidParameter",
    );
    assert_eq!(err["message"], "\"frob\" is not a valid action");
    assert_eq!(err["errors"], json!([{"field": "action", "code": "Invalid"}]));
    for action in ["import-remote", "export", "change-stor", "import-from-datacenter"] {
        expect_error(
            env.admin(Method::POST, &format!("/images/{uuid}?action={action}")).send().unwrap(),
            400,
            "NotImplemented",
        );
    }
    expect_error(
        env.admin(Method::POST, "/images?action=create-from-vm").send().unwrap(),
        400,
        "NotImplemented",
    );
}

#[test]
fn bad_bodies() {
    let env = Env::start();
    let err = expect_error(
        env.admin(Method::POST, "/images").body("{\"name\": ").send().unwrap(),
        400,
        "InvalidContent",
    );
    assert!(err["message"].as_str().unwrap().starts_with("Invalid JSON"));
    expect_error(
        env.admin(Method::POST, "/images").json(&json!([1, 2])).send().unwrap(),
        422,
        "ValidationFailed",
    );
    let err = expect_error(
        env.admin(Method::POST, "/images")
            .json(&json!({"name": "x", "version": "1", "type": "other", "os": "other", "state": "active"}))
            .send()
            .unwrap(),
        422,
        "ValidationFailed",
    );
    assert_eq!(err["message"], "invalid image data: \"state\"");
    assert_eq!(
        err["errors"],
        json!([{"field": "state", "code": "NotAllowed", "message": "Parameter cannot be set"}])
    );
    let mut extra = manifest("x");
    extra["uuid"] = json!("66666666-6666-6666-6666-666666666666");
    extra["published_at"] = json!("2020-01-01T00:00:00Z");
    extra["foo"] = json!(1);
    extra["nic_driver"] = json!("virtio");
    let err = expect_error(
        env.admin(Method::POST, "/images").json(&extra).send().unwrap(),
        422,
        "InvalidParameter",
    );
    assert_eq!(
        err["message"],
        "invalid extra parameters: \"uuid\", \"published_at\", \"foo\", \"nic_driver\""
    );
    assert_eq!(err["errors"].as_array().unwrap().len(), 4);
    let huge = json!({"name": "x", "description": "d".repeat(2 << 20)});
    expect_error(
        env.admin(Method::POST, "/images").json(&huge).send().unwrap(),
        413,
        "RequestEntityTooLarge",
    );
    let err = expect_error(
        env.admin(Method::POST, "/images")
            .header("content-md5", "AAAAAAAAAAAAAAAAAAAAAA==")
            .json(&manifest("m"))
            .send()
            .unwrap(),
        400,
        "BadDigest",
    );
    assert!(err["message"].as_str().unwrap().contains("didn't match"));
}

#[test]
fn manifests_are_validated_like_imgmanifest() {
    let env = Env::start();
    let body = json!({"name": "bad name!", "version": "1 0", "type": "vm", "os": "plan9"});
    let err =
        expect_error(env.admin(Method::POST, "/images").json(&body).send().unwrap(), 422, "ValidationFailed");
    assert_eq!(err["message"], "invalid image data: name, version, type, os");
    assert_eq!(
        err["errors"][2],
        json!({"field": "type", "code": "Invalid",
               "message": "invalid image type, \"vm\", must be one of: zone-dataset, zvol, lx-dataset, lxd, docker, other"})
    );
    let zvol = json!({"name": "z", "version": "1", "type": "zvol", "os": "linux"});
    let err =
        expect_error(env.admin(Method::POST, "/images").json(&zvol).send().unwrap(), 422, "ValidationFailed");
    let fields: Vec<&str> =
        err["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    for f in ["nic_driver", "disk_driver", "cpu_type", "image_size"] {
        assert!(fields.contains(&f), "{err}");
    }
    // Updates are validated too.
    let uuid = uuid_of(&env.create(manifest("ok")));
    let err = expect_error(
        env.admin(Method::POST, &format!("/images/{uuid}?action=update"))
            .json(&json!({"homepage": "ftp://x"}))
            .send()
            .unwrap(),
        422,
        "ValidationFailed",
    );
    assert_eq!(err["errors"][0]["field"], "homepage");
}

#[test]
fn versions_and_standard_headers() {
    let env = Env::start();
    let response = env.anon(Method::GET, "/ping").header("x-request-id", "my-req-42").send().unwrap();
    let h = response.headers();
    assert_eq!(h["x-request-id"], "my-req-42");
    assert!(h["server"].to_str().unwrap().starts_with("imgapi/"));
    assert!(h.contains_key("date"));
    assert!(h["x-response-time"].to_str().unwrap().parse::<u64>().is_ok());
    assert!(h.contains_key("x-server-name"));
    let pong = expect_json(response, 200);
    assert_eq!((pong["ping"].as_str(), pong["imgapi"].as_bool()), (Some("pong"), Some(true)));
    // Errors and 404s carry the headers too, with a fresh request id.
    let response = env.anon(Method::GET, "/nowhere").send().unwrap();
    assert_eq!(response.headers()["x-request-id"].len(), 36);
    let err = expect_error(
        env.anon(Method::GET, "/ping").header("accept-version", "~99").send().unwrap(),
        400,
        "InvalidVersion",
    );
    assert_eq!(err["message"], "~99 is not supported by GET /ping");
    for accepted in ["~2", "*", "~1", "2.0.0"] {
        assert_eq!(
            env.anon(Method::GET, "/ping").header("accept-version", accepted).send().unwrap().status(),
            200
        );
    }
    let err = expect_error(
        env.anon(Method::GET, "/ping?error=ValidationFailed").send().unwrap(),
        422,
        "ValidationFailed",
    );
    assert_eq!(err["errors"], json!([]));
    expect_error(env.anon(Method::GET, "/ping?error=Bogus").send().unwrap(), 422, "InvalidParameter");
}

#[test]
fn disk_full_is_a_507_and_the_server_keeps_serving() {
    // A datadir on a 2 MiB tmpfs (skipped where it cannot be mounted, except in CI).
    let Some(mount) = Tmpfs::mount("2m") else { return };
    let env = Env::with(json!({"datadir": mount.path().join("data")}));
    let kept = uuid_of(&env.publish(manifest("kept"), b"precious bytes"));
    let uuid = uuid_of(&env.create(manifest("too-big")));
    let path = format!("/images/{uuid}/file?compression=none");
    let err = expect_error(
        env.admin(Method::PUT, &path).body(vec![7u8; 4 << 20]).send().unwrap(),
        507,
        "InsufficientStorage",
    );
    assert!(err["message"].as_str().unwrap().contains("space"));
    assert_eq!(env.get_json(&format!("/images/{uuid}"))["files"], json!([]));
    let body = env.anon(Method::GET, &format!("/images/{kept}/file")).send().unwrap().bytes().unwrap();
    assert_eq!(&body[..], b"precious bytes");
    // Space is back once the failed upload's temp file is gone: a small upload works.
    env.upload(&uuid, b"small", "none");
}

/// A storage failure (here: the image's directory replaced by a file behind the server's back)
/// is a 500 that names the request, and says nothing of the data directory: that goes to the
/// log only.
#[test]
fn a_storage_failure_answers_500_without_host_details() {
    let env = Env::start();
    let uuid = uuid_of(&env.create(manifest("doomed")));
    let dir = env.datadir().join(&uuid);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    let response = env
        .admin(Method::POST, &format!("/images/{uuid}?action=update"))
        .header("x-request-id", "req-imgapi-500")
        .json(&json!({"description": "changed"}))
        .send()
        .unwrap();
    let err = expect_error(response, 500, "InternalError");
    let message = err["message"].as_str().unwrap();
    assert!(message.contains("req-imgapi-500"), "names the request: {message}");
    let datadir = env.datadir().display().to_string();
    for secret in [datadir.as_str(), "manifest.json", "Not a directory", "os error"] {
        assert!(!message.contains(secret), "{secret:?} in {message:?}");
    }
}
