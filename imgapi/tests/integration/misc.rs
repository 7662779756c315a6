//! Ping, legacy `/datasets` redirects, operator `/state`, TLS, and data written by the Go
//! `imgapi`.

use reqwest::Method;
use serde_json::json;

use crate::common::*;

#[test]
fn datasets_redirects() {
    let env = Env::start();
    let location = |path: &str| {
        let response = env.anon(Method::GET, path).send().unwrap();
        assert_eq!(response.status(), 301, "{path}");
        response.headers()["location"].to_str().unwrap().to_string()
    };
    assert_eq!(location("/datasets"), "/images");
    assert_eq!(
        location("/datasets/6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b"),
        "/images/6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b"
    );
    assert_eq!(location("/datasets/base:1.0"), "/images/?name=base&version=1.0");
    assert_eq!(location("/datasets/sdc:sdc:base"), "/images/?name=base");
    assert_eq!(location("/datasets/sdc:sdc:base:1.0"), "/images/?name=base&version=1.0");
    assert_eq!(location("/datasets/base"), "/images/?name=base");
}

#[test]
fn state_endpoints() {
    let env = Env::start();
    assert_eq!(env.admin(Method::POST, "/state?action=dropcaches").send().unwrap().status(), 202);
    expect_error(env.admin(Method::POST, "/state").send().unwrap(), 409, "MissingParameter");
    expect_error(env.admin(Method::POST, "/state?action=x").send().unwrap(), 409, "InvalidArgument");
    let state = expect_json(env.admin(Method::GET, "/state").send().unwrap(), 200);
    assert_eq!(state["images"], 0);
}

#[test]
fn serves_tls_directly() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let env = Env::with(json!({"tls": {"cert": cert_path, "key": key_path}}));
    let addr = env.server.as_ref().unwrap().addr;
    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let pong: serde_json::Value =
        client.get(format!("https://localhost:{}/ping", addr.port())).send().unwrap().json().unwrap();
    assert_eq!(pong["imgapi"], true);
}

#[test]
fn reads_a_datadir_written_by_the_go_server() {
    let mut env = Env::start();
    let uuid = "6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b";
    let dir = env.datadir().join(uuid);
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = b"go server image bytes";
    std::fs::write(dir.join("image.gz"), bytes).unwrap();
    // As the Go server wrote it: keys alphabetical, size as a float, no activated/published_at.
    let record = json!({
        "description": "Snapshot", "disabled": false,
        "files": [{"compression": "gzip", "sha1": sha1_hex(bytes), "size": bytes.len() as f64}],
        "name": "couchbase-server", "os": "smartos", "public": false, "state": "active",
        "type": "zone-dataset", "uuid": uuid, "v": 2, "version": "4.5.0-snapshot"
    });
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec_pretty(&record).unwrap()).unwrap();
    env.restart();
    let image = env.get_json(&format!("/images/{uuid}"));
    assert_eq!(image["state"], "active");
    assert_eq!(image["files"][0]["size"], bytes.len());
    let listed = env.get_json("/images");
    assert_eq!(listed[0]["uuid"], uuid);
    let response = env.anon(Method::GET, &format!("/images/{uuid}/file")).send().unwrap();
    assert!(response.headers().contains_key("content-md5"));
    assert_eq!(&response.bytes().unwrap()[..], bytes);
}

#[test]
fn leftovers_of_a_crash_are_cleaned_at_start_up() {
    let mut env = Env::start();
    let uuid = uuid_of(&env.publish(manifest("c"), b"kept"));
    let dir = env.datadir().join(&uuid);
    std::fs::write(dir.join(".tmp-upload123"), b"partial upload").unwrap();
    std::fs::write(dir.join("file.0000000000000000000000000000000000000000"), b"orphan").unwrap();
    std::fs::create_dir(env.datadir().join(".deleted-x-1")).unwrap();
    std::fs::create_dir(env.datadir().join("77777777-7777-7777-7777-777777777777")).unwrap();
    std::fs::write(env.datadir().join("README"), b"an operator's file").unwrap();
    env.restart();
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, [format!("file.{}", sha1_hex(b"kept")), "manifest.json".to_string()]);
    let mut top: Vec<String> = std::fs::read_dir(env.datadir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    let mut expected = vec!["README".to_string(), uuid.clone()];
    expected.sort();
    assert_eq!(top, expected, "only our leftovers are removed");
    assert_eq!(env.get_json("/images").as_array().unwrap().len(), 1);
}

#[test]
fn credentials_reload_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let write = |password: &str| {
        let config = json!({"datadir": "data", "port": 0, "host": "127.0.0.1", "log_level": "warn",
                            "userdb": [{"name": "admin", "password": password}]});
        std::fs::write(&path, config.to_string()).unwrap();
    };
    write("old");
    let server = imgapi::start(imgapi::config::Config::from_file(&path).unwrap()).unwrap();
    let client = reqwest::blocking::Client::new();
    let reload = |password: &str| {
        client
            .post(format!("{}/authkeys/reload", server.url()))
            .basic_auth("admin", Some(password))
            .send()
            .unwrap()
    };
    let ping_as = |password: &str| {
        client
            .get(format!("{}/ping", server.url()))
            .basic_auth("admin", Some(password))
            .send()
            .unwrap()
            .status()
    };
    write("new");
    assert_eq!(ping_as("new"), 401, "not before the reload");
    assert_eq!(expect_json(reload("old"), 200), json!({}));
    assert_eq!(ping_as("new"), 200);
    assert_eq!(ping_as("old"), 401);
    // A broken file is refused and the current credentials stay.
    std::fs::write(&path, "{\"datadir\": \"data\", \"bogus\": 1}").unwrap();
    let err = expect_error(reload("new"), 422, "InvalidConfig");
    assert!(err["message"].as_str().unwrap().contains("bogus"), "{err}");
    assert_eq!(ping_as("new"), 200);
    expect_error(reload("wrong"), 401, "UnauthorizedError");
}
