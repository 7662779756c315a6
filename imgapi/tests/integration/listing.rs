//! ListImages: every filter of the reference server, paging, sorting and visibility.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

/// Publishes images with distinct properties; returns their uuids by name.
fn catalog(env: &Env) -> Vec<(String, String)> {
    let specs = [
        json!({"name": "base-64", "version": "18.4.0", "type": "zone-dataset", "os": "smartos", "public": true,
               "tags": {"role": "os", "n": 3, "flag": true, "long": "x".repeat(101)}, "billing_tags": ["promo", "small"],
               "owner": "11111111-1111-1111-1111-111111111111"}),
        json!({"name": "base-64-lts", "version": "18.4.1", "type": "zone-dataset", "os": "smartos",
               "tags": {"role": "os"}, "billing_tags": ["promo"]}),
        json!({"name": "ubuntu", "version": "22.04", "type": "zvol", "os": "linux", "public": true,
               "nic_driver": "virtio", "disk_driver": "virtio", "cpu_type": "host", "image_size": 10240}),
        json!({"name": "debian", "version": "12", "type": "lx-dataset", "os": "linux"}),
    ];
    specs
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), uuid_of(&env.publish(s.clone(), b"x"))))
        .collect()
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect()
}

#[test]
fn filters() {
    let env = Env::start();
    catalog(&env);
    let q = |query: &str| env.get_json(&format!("/images?{query}"));
    assert_eq!(names(&q("")), ["base-64", "base-64-lts", "ubuntu", "debian"]);
    assert_eq!(names(&q("name=base-64")), ["base-64"]);
    assert_eq!(names(&q("name=~64")), ["base-64", "base-64-lts"]);
    assert_eq!(names(&q("version=~18.4")), ["base-64", "base-64-lts"]);
    assert_eq!(names(&q("version=12")), ["debian"]);
    assert_eq!(names(&q("os=linux")), ["ubuntu", "debian"]);
    assert_eq!(names(&q("type=zvol")), ["ubuntu"]);
    assert_eq!(names(&q("type=!zvol")), ["base-64", "base-64-lts", "debian"]);
    assert_eq!(names(&q("public=true")), ["base-64", "ubuntu"]);
    assert_eq!(names(&q("public=false")), ["base-64-lts", "debian"]);
    assert_eq!(names(&q("owner=11111111-1111-1111-1111-111111111111")), ["base-64"]);
    assert_eq!(names(&q("tag.role=os")), ["base-64", "base-64-lts"]);
    assert_eq!(names(&q("tag.role=os&tag.n=3")), ["base-64"]);
    assert_eq!(names(&q("tag.flag=true")), ["base-64"]);
    assert_eq!(names(&q("tag.long=")), ["base-64"], "long strings are indexed as KEY=");
    assert_eq!(names(&q("billing_tag=promo")), ["base-64", "base-64-lts"]);
    assert_eq!(names(&q("billing_tag=promo&billing_tag=small")), ["base-64"]);
    assert_eq!(names(&q("name=~64&os=smartos&public=true")), ["base-64"]);
    assert_eq!(names(&q("unknown=ignored")).len(), 4);
}

#[test]
fn states_and_authentication() {
    let env = Env::start();
    catalog(&env);
    env.create(manifest("draft"));
    let disabled = uuid_of(&env.publish(manifest("off"), b"y"));
    env.action(&disabled, "disable");
    let anon = |query: &str| env.get_json(&format!("/images?{query}"));
    let authed =
        |query: &str| expect_json(env.admin(Method::GET, &format!("/images?{query}")).send().unwrap(), 200);
    assert_eq!(names(&anon("state=all")).len(), 4, "anonymous all = active");
    assert!(names(&anon("state=unactivated")).is_empty());
    assert!(names(&anon("state=disabled")).is_empty());
    assert_eq!(names(&authed("state=all")).len(), 6);
    assert_eq!(names(&authed("state=unactivated")), ["draft"]);
    assert_eq!(names(&authed("state=disabled")), ["off"]);
    assert_eq!(names(&authed("state=active")).len(), 4);
    assert!(names(&authed("state=failed")).is_empty());
    let err =
        expect_error(env.anon(Method::GET, "/images?state=bogus").send().unwrap(), 422, "InvalidParameter");
    assert_eq!(err["message"], "invalid state: \"bogus\"");
}

#[test]
fn paging_with_limit_and_marker_like_imgadm() {
    let env = Env::start();
    let mut published = Vec::new();
    for i in 0..7 {
        published.push(uuid_of(&env.publish(manifest(&format!("img{i}")), b"z")));
    }
    // imgadm's loop: marker = last uuid, drop the first entry when it equals the marker.
    let mut seen: Vec<String> = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let path = match &marker {
            None => "/images?limit=3".to_string(),
            Some(m) => format!("/images?limit=3&marker={m}"),
        };
        let page = env.get_json(&path);
        let mut items: Vec<String> = page.as_array().unwrap().iter().map(uuid_of).collect();
        if marker.as_ref().is_some_and(|m| items.first() == Some(m)) {
            items.remove(0);
        }
        if items.is_empty() {
            break;
        }
        marker = items.last().cloned();
        seen.extend(items);
    }
    assert_eq!(seen, published);
    // sort=published_at.desc applies the limit after sorting (the reference gets this wrong).
    assert_eq!(uuid_of(&env.get_json("/images?sort=published_at.desc&limit=1")[0]), published[6]);
    assert_eq!(uuid_of(&env.get_json("/images?sort=published_at&limit=1")[0]), published[0]);
    // A date marker is inclusive.
    let third = env.get_json(&format!("/images/{}", published[2]));
    let from = env.get_json(&format!("/images?marker={}", third["published_at"].as_str().unwrap()));
    assert_eq!(uuid_of(&from[0]), published[2]);
}

#[test]
fn bad_listing_parameters_are_422_not_500() {
    let env = Env::start();
    catalog(&env);
    for (query, message) in [
        ("limit=abc", "invalid limit: \"abc\""),
        ("limit=-1", "invalid limit: \"-1\""),
        ("marker=bogus", "invalid value for \"marker\" param: \"bogus\" is not a UUID or date string"),
        ("sort=name", "invalid 'sort': not a valid sorting attribute: 'name'"),
        ("owner=nope", "invalid \"owner\": not a UUID: \"nope\""),
        ("account=nope", "invalid \"account\": not a UUID: \"nope\""),
    ] {
        let err = expect_error(
            env.anon(Method::GET, &format!("/images?{query}")).send().unwrap(),
            422,
            "InvalidParameter",
        );
        assert_eq!(err["message"], message, "{query}");
    }
    // The reference server crashes on these two.
    expect_error(env.anon(Method::GET, "/images?public=maybe").send().unwrap(), 422, "InvalidParameter");
    assert_eq!(env.anon(Method::GET, "/images?billing_tag=x").send().unwrap().status(), 200);
    let err = expect_error(
        env.anon(Method::GET, "/images?marker=44444444-4444-4444-4444-444444444444").send().unwrap(),
        404,
        "ResourceNotFound",
    );
    assert_eq!(err["message"], "image 44444444-4444-4444-4444-444444444444 not found");
    expect_error(
        env.anon(Method::GET, "/images?inclAdminFields=yes").send().unwrap(),
        422,
        "InvalidParameter",
    );
}

#[test]
fn anonymous_read_policies() {
    let public_only = Env::with(json!({"anonymous_reads": "public"}));
    let mut public = manifest("pub");
    public["public"] = json!(true);
    let public = uuid_of(&public_only.publish(public, b"p"));
    let private = uuid_of(&public_only.publish(manifest("priv"), b"q"));
    assert_eq!(names(&public_only.get_json("/images")), ["pub"]);
    assert_eq!(
        public_only.anon(Method::GET, &format!("/images/{public}/file")).send().unwrap().status(),
        200
    );
    assert_eq!(public_only.anon(Method::GET, &format!("/images/{private}")).send().unwrap().status(), 404);
    assert_eq!(
        public_only.anon(Method::GET, &format!("/images/{private}/file")).send().unwrap().status(),
        404
    );
    assert_eq!(public_only.admin(Method::GET, &format!("/images/{private}")).send().unwrap().status(), 200);

    let closed = Env::with(json!({"anonymous_reads": "none"}));
    let uuid = uuid_of(&closed.publish(manifest("x"), b"x"));
    expect_error(closed.anon(Method::GET, "/images").send().unwrap(), 401, "UnauthorizedError");
    expect_error(
        closed.anon(Method::GET, &format!("/images/{uuid}/file")).send().unwrap(),
        401,
        "UnauthorizedError",
    );
    assert_eq!(closed.anon(Method::GET, "/ping").send().unwrap().status(), 200);
    assert_eq!(names(&expect_json(closed.admin(Method::GET, "/images").send().unwrap(), 200)), ["x"]);
}

/// `name=` and `owner=` are answered from secondary indexes: they must follow every change.
#[test]
fn name_and_owner_filters_follow_updates_and_deletes() {
    let env = Env::start();
    let other = "22222222-2222-2222-2222-222222222222";
    let a = uuid_of(&env.publish(manifest("alpha"), b"a"));
    let mut second = manifest("alpha");
    second["owner"] = json!(other);
    let b = uuid_of(&env.publish(second, b"b"));
    let c = uuid_of(&env.publish(manifest("beta"), b"c"));
    let uuids = |query: &str| -> Vec<String> {
        env.get_json(&format!("/images?{query}")).as_array().unwrap().iter().map(uuid_of).collect()
    };
    assert_eq!(uuids("name=alpha"), [a.as_str(), b.as_str()]);
    assert_eq!(uuids("name=alpha&sort=published_at.desc"), [b.as_str(), a.as_str()]);
    assert_eq!(uuids(&format!("name=alpha&owner={other}")), [b.as_str()]);
    assert_eq!(uuids(&format!("owner={other}")), [b.as_str()]);
    assert_eq!(uuids(&format!("name=alpha&limit=1&marker={b}")), [b.as_str()]);

    let rename = |uuid: &str, body: Value| {
        let path = format!("/images/{uuid}?action=update");
        expect_json(env.admin(Method::POST, &path).json(&body).send().unwrap(), 200)
    };
    rename(&a, json!({"name": "gamma"}));
    assert_eq!(uuids("name=alpha"), [b.as_str()]);
    assert_eq!(uuids("name=gamma"), [a.as_str()]);
    assert_eq!(env.get_json("/images?name=gamma")[0]["name"], "gamma", "the listing shows the new name");
    rename(&c, json!({"owner": other}));
    assert_eq!(uuids(&format!("owner={other}")), [b.as_str(), c.as_str()]);

    let deleted = env.admin(Method::DELETE, &format!("/images/{b}")).send().unwrap();
    assert_eq!(deleted.status(), 204);
    assert!(uuids("name=alpha").is_empty());
    assert_eq!(uuids(&format!("owner={other}")), [c.as_str()]);
    assert!(uuids("name=nothing-has-this-name").is_empty());
    assert_eq!(env.get_json("/images?name=nothing-has-this-name"), json!([]));
}
