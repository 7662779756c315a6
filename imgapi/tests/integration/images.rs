//! The image lifecycle: create, import, activate, enable/disable, update, ACL, channels,
//! delete, and persistence across restarts.

use reqwest::Method;
use serde_json::json;

use crate::common::*;

#[test]
fn create_returns_an_unactivated_manifest_in_reference_order() {
    let env = Env::start();
    let mut body = manifest("base");
    body["description"] = json!("A base image");
    body["tags"] = json!({"role": "db"});
    let image = env.create(body);
    assert_eq!(image["state"], "unactivated");
    assert_eq!(image["disabled"], false);
    assert_eq!(image["public"], false);
    assert_eq!(image["v"], 2);
    assert_eq!(image["owner"], "00000000-0000-0000-0000-000000000000");
    assert_eq!(image["files"], json!([]));
    assert!(image.get("published_at").is_none());
    let keys: Vec<&str> = image.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "v",
            "uuid",
            "owner",
            "name",
            "version",
            "state",
            "disabled",
            "public",
            "type",
            "os",
            "files",
            "description",
            "tags"
        ]
    );
    let fetched = env.get_json(&format!("/images/{}", uuid_of(&image)));
    assert_eq!(fetched, image);
}

#[test]
fn activation_sets_published_at_and_needs_a_file() {
    let env = Env::start();
    let uuid = uuid_of(&env.create(manifest("a")));
    let response = env.admin(Method::POST, &format!("/images/{uuid}?action=activate")).send().unwrap();
    let err = expect_error(response, 422, "NoActivationNoFile");
    assert_eq!(err["message"], format!("image \"{uuid}\" cannot be activated: it has no file"));
    env.upload(&uuid, b"file bytes", "none");
    let active = env.action(&uuid, "activate");
    assert_eq!(active["state"], "active");
    let published = active["published_at"].as_str().unwrap();
    assert_eq!(published.len(), "2026-11-22T10:50:37.855Z".len(), "{published}");
    let response = env.admin(Method::POST, &format!("/images/{uuid}?action=activate")).send().unwrap();
    expect_error(response, 422, "ImageAlreadyActivated");
    // Files of an activated image are immutable.
    let response =
        env.admin(Method::PUT, &format!("/images/{uuid}/file?compression=none")).body("x").send().unwrap();
    expect_error(response, 422, "ImageFilesImmutable");
}

#[test]
fn disable_enable_and_state_of_unactivated_images() {
    let env = Env::start();
    let uuid = uuid_of(&env.create(manifest("a")));
    assert_eq!(env.action(&uuid, "disable")["state"], "unactivated");
    env.upload(&uuid, b"x", "none");
    let active = env.action(&uuid, "activate");
    assert_eq!(active["state"], "disabled", "activating a disabled image leaves it disabled");
    assert_eq!(env.action(&uuid, "enable")["state"], "active");
    assert_eq!(env.action(&uuid, "enable")["state"], "active", "idempotent");
    let disabled = env.action(&uuid, "disable");
    assert_eq!((disabled["state"].as_str(), disabled["disabled"].as_bool()), (Some("disabled"), Some(true)));
}

#[test]
fn import_keeps_uuid_and_published_at_as_imgadm_publish_needs() {
    let env = Env::start();
    let uuid = "4a0e5ea4-1d3b-11e9-8f3c-63bbd3e5e9c5";
    let body = json!({
        "v": 2, "uuid": uuid, "name": "published", "version": "2.0", "type": "zvol", "os": "linux",
        "published_at": "2023-05-06T07:08:09Z", "state": "active", "disabled": false, "public": true,
        "files": [{"sha1": "x", "size": 3, "compression": "gzip"}],
        "nic_driver": "virtio", "disk_driver": "virtio", "cpu_type": "host", "image_size": 10240,
        "requirements": {"min_ram": 512}
    });
    let response =
        env.admin(Method::POST, &format!("/images/{uuid}?action=import")).json(&body).send().unwrap();
    let image = expect_json(response, 200);
    assert_eq!(image["uuid"], uuid);
    assert_eq!(image["state"], "unactivated", "state and files in the body are dropped");
    assert_eq!(image["files"], json!([]));
    let response = env
        .admin(Method::PUT, &format!("/images/{uuid}/file?compression=gzip&sha1={}", sha1_hex(b"abc")))
        .header("content-type", "application/octet-stream")
        .body("abc")
        .send()
        .unwrap();
    let with_file = expect_json(response, 200);
    assert_eq!(with_file["files"], json!([{"sha1": sha1_hex(b"abc"), "size": 3, "compression": "gzip"}]));
    let active = env.action(uuid, "activate");
    assert_eq!(active["published_at"], "2023-05-06T07:08:09Z");
    // Importing again is a conflict.
    let response =
        env.admin(Method::POST, &format!("/images/{uuid}?action=import")).json(&body).send().unwrap();
    expect_error(response, 409, "ImageUuidAlreadyExists");
}

#[test]
fn import_checks_the_uuid_and_refuses_accounts() {
    let env = Env::start();
    let uuid = "4a0e5ea4-1d3b-11e9-8f3c-63bbd3e5e9c5";
    let mut body = manifest("x");
    body["uuid"] = json!("11111111-1d3b-11e9-8f3c-63bbd3e5e9c5");
    let response =
        env.admin(Method::POST, &format!("/images/{uuid}?action=import")).json(&body).send().unwrap();
    let err = expect_error(response, 422, "InvalidParameter");
    assert!(err["message"].as_str().unwrap().contains("do not match"), "{err}");
    body["uuid"] = json!(uuid);
    let path = format!("/images/{uuid}?action=import&account=22222222-1d3b-11e9-8f3c-63bbd3e5e9c5");
    expect_error(env.admin(Method::POST, &path).json(&body).send().unwrap(), 403, "OperatorOnly");
}

#[test]
fn import_upgrades_v1_dsapi_manifests() {
    let env = Env::start();
    let uuid = "4a0e5ea4-1d3b-11e9-8f3c-63bbd3e5e9c5";
    let body = json!({
        "uuid": uuid, "name": "old", "version": "1.0", "type": "zone-dataset", "os": "smartos",
        "creator_uuid": "930896af-bf8c-48d4-885c-6573a94b1853", "vendor_uuid": "930896af-bf8c-48d4-885c-6573a94b1853",
        "creator_name": "sdc", "platform_type": "smartos", "cloud_name": "sdc", "urn": "sdc:sdc:old:1.0",
        "created_at": "2012-01-02T03:04:05.000Z", "updated_at": "2012-01-02T03:04:05.000Z",
        "published_at": "2012-01-02T03:04:05.000Z", "disabled": false,
        "files": [{"path": "old.zfs.bz2", "sha1": "x", "size": 1, "url": "http://example/x"}]
    });
    let response =
        env.admin(Method::POST, &format!("/images/{uuid}?action=import")).json(&body).send().unwrap();
    let image = expect_json(response, 200);
    assert_eq!(image["v"], 2);
    assert_eq!(image["owner"], "930896af-bf8c-48d4-885c-6573a94b1853");
    assert_eq!(image["urn"], "sdc:sdc:old:1.0");
    assert_eq!(image["public"], true);
}

#[test]
fn update_changes_allowed_fields_and_refuses_others() {
    let env = Env::start();
    let uuid = uuid_of(&env.publish(manifest("u"), b"data"));
    let path = format!("/images/{uuid}?action=update");
    let updated = expect_json(
        env.admin(Method::POST, &path)
            .json(&json!({"description": "new", "version": "1.0.1", "tags": {"a": 1}, "homepage": null}))
            .send()
            .unwrap(),
        200,
    );
    assert_eq!((updated["description"].as_str(), updated["version"].as_str()), (Some("new"), Some("1.0.1")));
    let err = expect_error(
        env.admin(Method::POST, &path)
            .json(&json!({"type": "zvol", "published_at": "x", "foo": 1}))
            .send()
            .unwrap(),
        422,
        "ValidationFailed",
    );
    assert_eq!(err["message"], "invalid image update data: type, published_at, foo");
    assert_eq!(
        err["errors"][0],
        json!({"field": "type", "code": "NotAllowed", "message": "Parameter cannot be updated"})
    );
    let err = expect_error(
        env.admin(Method::POST, &path).json(&json!({})).send().unwrap(),
        422,
        "ValidationFailed",
    );
    assert_eq!(err["message"], "invalid image update data: no parameters provided");
    let err = expect_error(env.admin(Method::POST, &path).send().unwrap(), 422, "ValidationFailed");
    assert_eq!(err["message"], "missing request body");
    // `null` removes a key, tags included (the reference leaves tags behind).
    let cleared =
        expect_json(env.admin(Method::POST, &path).json(&json!({"tags": null})).send().unwrap(), 200);
    assert!(cleared.get("tags").is_none(), "{cleared}");
    // origin may only change on unactivated images.
    let err = expect_error(
        env.admin(Method::POST, &path).json(&json!({"origin": uuid})).send().unwrap(),
        422,
        "ValidationFailed",
    );
    assert_eq!(err["errors"][0]["message"], "Can only be updated on unactivated images");
}

#[test]
fn update_honours_if_match() {
    let env = Env::start();
    let uuid = uuid_of(&env.create(manifest("u")));
    let response = env.anon(Method::GET, &format!("/images/{uuid}")).send().unwrap();
    let etag = response.headers()["etag"].to_str().unwrap().to_string();
    let path = format!("/images/{uuid}?action=update");
    let stale =
        env.admin(Method::POST, &path).header("if-match", "\"nope\"").json(&json!({"description": "x"}));
    expect_error(stale.send().unwrap(), 412, "PreconditionFailed");
    let fresh = env.admin(Method::POST, &path).header("if-match", &etag).json(&json!({"description": "x"}));
    assert_eq!(expect_json(fresh.send().unwrap(), 200)["description"], "x");
    // GET with the current etag is a 304.
    let response = env.anon(Method::GET, &format!("/images/{uuid}")).send().unwrap();
    let etag = response.headers()["etag"].to_str().unwrap().to_string();
    let response =
        env.anon(Method::GET, &format!("/images/{uuid}")).header("if-none-match", etag).send().unwrap();
    assert_eq!(response.status(), 304);
}

#[test]
fn acl_add_and_remove() {
    let env = Env::start();
    let uuid = uuid_of(&env.create(manifest("acl")));
    let a = "11111111-1111-1111-1111-111111111111";
    let b = "22222222-2222-2222-2222-222222222222";
    let added = expect_json(
        env.admin(Method::POST, &format!("/images/{uuid}/acl")).json(&json!([a, b, a])).send().unwrap(),
        200,
    );
    assert_eq!(added["acl"], json!([a, b]));
    let removed = expect_json(
        env.admin(Method::POST, &format!("/images/{uuid}/acl?action=remove"))
            .json(&json!([a, b]))
            .send()
            .unwrap(),
        200,
    );
    assert!(removed.get("acl").is_none(), "empty acl is omitted: {removed}");
    let err = expect_error(
        env.admin(Method::POST, &format!("/images/{uuid}/acl")).json(&json!({"a": 1})).send().unwrap(),
        422,
        "InvalidParameter",
    );
    assert_eq!(err["message"], "invalid image \"acl\" (not an array)");
    let err = expect_error(
        env.admin(Method::POST, &format!("/images/{uuid}/acl")).json(&json!([a, "nope"])).send().unwrap(),
        422,
        "InvalidParameter",
    );
    assert_eq!(err["message"], "invalid image \"acl\" (item 1 is not a UUID): nope");
    expect_error(
        env.admin(Method::POST, &format!("/images/{uuid}/acl?action=frob")).json(&json!([a])).send().unwrap(),
        422,
        "InvalidParameter",
    );
}

#[test]
fn delete_refuses_images_with_dependents_then_succeeds() {
    let env = Env::start();
    let origin = uuid_of(&env.publish(manifest("base"), b"base"));
    let mut child = manifest("child");
    child["origin"] = json!(origin);
    let child = uuid_of(&env.create(child));
    let err = expect_error(
        env.admin(Method::DELETE, &format!("/images/{origin}")).send().unwrap(),
        422,
        "ImageHasDependentImages",
    );
    assert_eq!(err["message"], format!("image \"{origin}\" has 1 dependent incremental image(s): {child}"));
    let response = env.admin(Method::DELETE, &format!("/images/{child}")).send().unwrap();
    assert_eq!(response.status(), 204);
    assert!(response.text().unwrap().is_empty());
    assert_eq!(env.admin(Method::DELETE, &format!("/images/{origin}")).send().unwrap().status(), 204);
    expect_error(
        env.anon(Method::GET, &format!("/images/{origin}")).send().unwrap(),
        404,
        "ResourceNotFound",
    );
    assert_eq!(std::fs::read_dir(env.datadir()).unwrap().count(), 0, "nothing left on disk");
}

#[test]
fn origin_must_exist() {
    let env = Env::start();
    let mut body = manifest("child");
    body["origin"] = json!("33333333-3333-3333-3333-333333333333");
    let err = expect_error(
        env.admin(Method::POST, "/images").json(&body).send().unwrap(),
        422,
        "OriginDoesNotExist",
    );
    assert_eq!(err["message"], "origin image \"33333333-3333-3333-3333-333333333333\" does not exist");
}

#[test]
fn everything_survives_a_restart() {
    let mut env = Env::start();
    let active = env.publish(manifest("persist"), b"persisted bytes");
    let uuid = uuid_of(&active);
    env.put_icon(&uuid, "png");
    let before = env.get_json(&format!("/images/{uuid}"));
    env.restart();
    assert_eq!(env.get_json(&format!("/images/{uuid}")), before);
    let body = env.anon(Method::GET, &format!("/images/{uuid}/file")).send().unwrap().bytes().unwrap();
    assert_eq!(&body[..], b"persisted bytes");
    let icon = env.anon(Method::GET, &format!("/images/{uuid}/icon")).send().unwrap().bytes().unwrap();
    assert_eq!(&icon[..], b"png");
}

#[test]
fn channels_scope_images() {
    let env = Env::with(json!({"channels": [
        {"name": "dev", "description": "development builds", "default": true},
        {"name": "release", "description": "release builds"}
    ]}));
    let channels = env.get_json("/channels");
    assert_eq!(channels[0], json!({"name": "dev", "description": "development builds", "default": true}));
    let dev = uuid_of(&env.publish(manifest("in-dev"), b"d"));
    let rel = env.create(manifest("in-release"));
    let rel_uuid = uuid_of(&rel);
    // Created without ?channel= it lands in the default channel; move it to release too.
    let path = format!("/images/{rel_uuid}?action=channel-add");
    let added = expect_json(
        env.admin(Method::POST, &path)
            .header("accept-version", "~2")
            .json(&json!({"channel": "release"}))
            .send()
            .unwrap(),
        200,
    );
    assert_eq!(added["channels"], json!(["dev", "release"]));
    // channels are only shown to API version 2 clients.
    let v1 = env.get_json(&format!("/images/{rel_uuid}"));
    assert!(v1.get("channels").is_none());
    let in_release = expect_json(
        env.anon(Method::GET, "/images?channel=release&state=all")
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .unwrap(),
        200,
    );
    assert_eq!(in_release.as_array().unwrap().len(), 1);
    expect_error(
        env.anon(Method::GET, &format!("/images/{dev}?channel=release")).send().unwrap(),
        404,
        "ResourceNotFound",
    );
    expect_error(env.anon(Method::GET, "/images?channel=bogus").send().unwrap(), 422, "ValidationFailed");
    let star = env.get_json("/images?channel=*");
    assert_eq!(star.as_array().unwrap().len(), 1, "only one active image");
    // Deleting from one of two channels keeps the image in the other.
    let response = env.admin(Method::DELETE, &format!("/images/{rel_uuid}?channel=release")).send().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        expect_json(
            env.anon(Method::GET, &format!("/images/{rel_uuid}"))
                .header("accept-version", "*")
                .send()
                .unwrap(),
            200
        )["channels"],
        json!(["dev"])
    );
    let err = expect_error(
        env.admin(Method::POST, &path).json(&json!({"channel": "nope"})).send().unwrap(),
        422,
        "ValidationFailed",
    );
    assert_eq!(err["message"], "unknown channel: nope");
}

#[test]
fn channel_add_without_channels_is_an_invalid_action() {
    let env = Env::start();
    let uuid = uuid_of(&env.create(manifest("c")));
    let err = expect_error(
        env.admin(Method::POST, &format!("/images/{uuid}?action=channel-add"))
            .json(&json!({"channel": "x"}))
            .send()
            .unwrap(),
        422,
        "InvalidParameter",
    );
    assert_eq!(err["message"], "\"channel-add\" is not a valid action");
    expect_error(env.anon(Method::GET, "/channels").send().unwrap(), 404, "ResourceNotFound");
}

#[test]
fn account_scoping_follows_owner_public_and_acl() {
    let env = Env::start();
    let owner = "11111111-1111-1111-1111-111111111111";
    let friend = "22222222-2222-2222-2222-222222222222";
    let stranger = "33333333-3333-3333-3333-333333333333";
    let mut private = manifest("private");
    private["owner"] = json!(owner);
    let private = uuid_of(&env.publish(private, b"p"));
    expect_json(
        env.admin(Method::POST, &format!("/images/{private}/acl")).json(&json!([friend])).send().unwrap(),
        200,
    );
    let mut public = manifest("public");
    public["owner"] = json!(owner);
    public["public"] = json!(true);
    let public = uuid_of(&env.publish(public, b"q"));
    let mut unactivated = manifest("draft");
    unactivated["owner"] = json!(owner);
    unactivated["public"] = json!(true);
    let draft = uuid_of(&env.create(unactivated));

    let names = |account: &str| -> Vec<String> {
        let list = env.get_json(&format!("/images?account={account}&state=all"));
        list.as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(names(owner), ["private", "public"], "anonymous state=all is reduced to active");
    assert_eq!(names(friend), ["private", "public"]);
    assert_eq!(names(stranger), ["public"]);
    let get = |uuid: &str, account: &str| {
        env.anon(Method::GET, &format!("/images/{uuid}?account={account}")).send().unwrap()
    };
    assert_eq!(get(&private, friend).status(), 200);
    let err = expect_error(get(&private, stranger), 404, "ResourceNotFound");
    // The reference says "image not found" here and "image <uuid> not found" for a missing
    // image, which tells a stranger the image exists; both are the missing one's answer.
    assert_eq!(err["message"], format!("image {private} not found"));
    assert_eq!(get(&draft, owner).status(), 200);
    assert_eq!(get(&draft, stranger).status(), 404, "unactivated images are not shared");
    expect_error(get(&public, "not-a-uuid"), 422, "InvalidParameter");
    // Changes with ?account= need ownership.
    let path = format!("/images/{public}?action=update&account={stranger}");
    expect_error(
        env.admin(Method::POST, &path).json(&json!({"description": "x"})).send().unwrap(),
        422,
        "NotImageOwner",
    );
}

#[test]
fn origins_must_be_uuid_strings_without_loops() {
    let env = Env::start();
    let base = uuid_of(&env.publish(manifest("base"), b"b"));
    let mut listed = manifest("listed");
    listed["origin"] = json!([base]);
    let err = expect_error(
        env.admin(Method::POST, "/images").json(&listed).send().unwrap(),
        422,
        "InvalidParameter",
    );
    assert_eq!(err["errors"][0]["field"], "origin");
    // Importing an image as its own origin, or making a loop through an update.
    let own = "4a0e5ea4-1d3b-11e9-8f3c-63bbd3e5e9c5";
    let mut body = manifest("own");
    body["uuid"] = json!(own);
    body["origin"] = json!(own);
    expect_error(
        env.admin(Method::POST, &format!("/images/{own}?action=import")).json(&body).send().unwrap(),
        422,
        "InvalidParameter",
    );
    let a = uuid_of(&env.create(manifest("a")));
    let mut b = manifest("b");
    b["origin"] = json!(a);
    let b = uuid_of(&env.create(b));
    let update = |uuid: &str, origin: &str| {
        env.admin(Method::POST, &format!("/images/{uuid}?action=update"))
            .json(&json!({"origin": origin}))
            .send()
            .unwrap()
    };
    expect_error(update(&a, &a), 422, "InvalidParameter");
    let err = expect_error(update(&a, &b), 422, "InvalidParameter");
    assert_eq!(err["message"], "the origin chain leads back to this image");
    assert_eq!(expect_json(update(&a, &base), 200)["origin"], base.as_str());
}

#[test]
fn racing_channel_deletes_never_leave_an_image_in_no_channel() {
    let env = Env::with(json!({"channels": [
        {"name": "a", "description": "A", "default": true}, {"name": "b", "description": "B"}
    ]}));
    for _ in 0..10 {
        let uuid = uuid_of(&env.create(manifest("both")));
        let added = env
            .admin(Method::POST, &format!("/images/{uuid}?action=channel-add"))
            .json(&json!({"channel": "b"}))
            .send()
            .unwrap();
        assert_eq!(added.status(), 200);
        let threads: Vec<_> = ["a", "b"]
            .iter()
            .map(|channel| {
                let request = env.admin(Method::DELETE, &format!("/images/{uuid}?channel={channel}"));
                std::thread::spawn(move || request.send().unwrap().status().as_u16())
            })
            .collect();
        let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        // One leaves a channel (200), the other then deletes the image (204).
        let mut sorted = statuses.clone();
        sorted.sort();
        assert_eq!(sorted, [200, 204], "{statuses:?}");
        let gone = env.admin(Method::GET, &format!("/images/{uuid}?channel=*")).send().unwrap();
        assert_eq!(gone.status(), 404);
    }
}
