//! The `files` backend end to end: a real `imgapi` server (and a scripted fake one for the
//! failures a real server does not make) on 127.0.0.1, the agent's API in front, and the
//! agent CLI as a user runs it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use crate::common::{cli, compress, sha1_hex, Agent, Imgapi, TOKEN};

/// A raw disk image: a boot sector and some structure, a few MiB.
fn disk(seed: u8, mib: usize) -> Vec<u8> {
    let mut d: Vec<u8> =
        (0..mib << 20).map(|i| ((i / 4096) as u8).wrapping_mul(31).wrapping_add(seed)).collect();
    d[510] = 0x55;
    d[511] = 0xaa;
    d
}

impl Imgapi {
    /// The stored file of an image, to damage it behind the server's back.
    fn stored_file(&self, uuid: &str, file: &[u8]) -> std::path::PathBuf {
        self.dir.path().join("data").join(uuid).join(format!("file.{}", sha1_hex(file)))
    }
}

impl Agent {
    fn images_dir(&self) -> std::path::PathBuf {
        self.dir().join("images")
    }

    /// Every file in the image directory (partials included).
    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.images_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }
}

#[test]
fn imports_every_compression_and_falls_through_404s() {
    let empty = Imgapi::start();
    let full = Imgapi::start();
    let mut published = Vec::new();
    for (i, compression) in ["gzip", "bzip2", "xz", "none"].iter().enumerate() {
        let raw = disk(i as u8, 3);
        let uuid =
            full.publish(&format!("img-{compression}"), &compress(&raw, compression), compression, None);
        published.push((uuid, raw));
    }
    // The first source has none of them: 404 means "try the next".
    let agent = Agent::start(&[empty.server.url(), format!("http://admin:secret@{}", full.server.addr)]);
    for (uuid, raw) in &published {
        let response = agent.import(uuid);
        assert_eq!(response.status(), 200, "{}", response.text().unwrap());
        let image: Value = response.json().unwrap();
        assert_eq!(image["content"], "raw-disk");
        assert_eq!(image["source"], full.server.url(), "credentials are never shown");
        let stored = std::fs::read(image["location"].as_str().unwrap()).unwrap();
        assert!(stored == *raw, "{uuid}: decompressed bytes differ");
        let mode = std::fs::metadata(image["location"].as_str().unwrap()).unwrap();
        assert!(mode.permissions().readonly());
    }
    let list: Value =
        agent.client.get(format!("{}/api/v1/images", agent.base())).send().unwrap().json().unwrap();
    assert_eq!(list.as_array().unwrap().len(), 4);
    // Importing again is a no-op answered with the image.
    assert_eq!(agent.import(&published[0].0).status(), 200);
    // An image no source has.
    let missing = agent.import("11111111-2222-3333-4444-555555555555");
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().unwrap();
    assert_eq!(body["code"], "ImageNotFound");
}

#[test]
fn origins_are_imported_first_and_protect_their_children() {
    let imgapi = Imgapi::start();
    let base = imgapi.publish("base", &compress(&disk(1, 2), "gzip"), "gzip", None);
    let child = imgapi.publish("child", &compress(&disk(2, 2), "gzip"), "gzip", Some(&base));
    let agent = Agent::start(&[imgapi.server.url()]);
    let response = agent.import(&child);
    assert_eq!(response.status(), 200, "{}", response.text().unwrap());
    let list: Value =
        agent.client.get(format!("{}/api/v1/images", agent.base())).send().unwrap().json().unwrap();
    let uuids: Vec<&str> = list.as_array().unwrap().iter().map(|i| i["uuid"].as_str().unwrap()).collect();
    assert!(uuids.contains(&base.as_str()) && uuids.contains(&child.as_str()), "{uuids:?}");
    let delete = |uuid: &str| {
        agent
            .client
            .delete(format!("{}/api/v1/images/{uuid}", agent.base()))
            .bearer_auth(TOKEN)
            .send()
            .unwrap()
    };
    let refused = delete(&base);
    assert_eq!(refused.status(), 409);
    assert_eq!(refused.json::<Value>().unwrap()["code"], "ImageInUse");
    assert_eq!(delete(&child).status(), 204);
    assert_eq!(delete(&base).status(), 204);
    assert!(agent.files().is_empty(), "{:?}", agent.files());
    // Mutating calls need credentials.
    let anonymous = agent
        .client
        .post(format!("{}/api/v1/images", agent.base()))
        .json(&json!({"uuid": base}))
        .send()
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

/// What the fake IMGAPI serves for its one image.
#[derive(Clone)]
struct Script {
    manifest: Value,
    file: Vec<u8>,
    /// Content-Length to announce (may lie).
    length: u64,
    /// Close the connection after this many bytes of the first response.
    cut_first_at: Option<usize>,
    /// Answer Range requests.
    ranges: bool,
    downloads: Arc<AtomicUsize>,
}

async fn fake_manifest(path: web::Path<String>, script: web::Data<Script>) -> HttpResponse {
    if script.manifest["uuid"] == path.as_str() {
        HttpResponse::Ok().content_type("application/json").json(&script.manifest)
    } else {
        HttpResponse::NotFound().json(json!({"code": "ResourceNotFound", "message": "nope"}))
    }
}

async fn fake_file(req: HttpRequest, script: web::Data<Script>) -> HttpResponse {
    let n = script.downloads.fetch_add(1, Ordering::SeqCst);
    let range_start = req
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.trim_end_matches('-').parse::<usize>().ok());
    let (status, start) = match range_start {
        Some(start) if script.ranges => (206, start),
        _ => (200, 0),
    };
    let body = script.file[start..].to_vec();
    let length = if status == 206 { body.len() as u64 } else { script.length };
    let cut = if n == 0 { script.cut_first_at } else { None };
    // A body that may end before its announced length: the client sees a broken connection.
    let chunks: Vec<Result<web::Bytes, std::io::Error>> = match cut {
        Some(at) => vec![Ok(web::Bytes::copy_from_slice(&body[..at]))],
        None => body.chunks(65536).map(|c| Ok(web::Bytes::copy_from_slice(c))).collect(),
    };
    // After a cut, fail the body a moment later, once the head and first bytes are out.
    let failure = futures_util::stream::once(async {
        actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
        Err(std::io::Error::other("cut"))
    });
    let failure = futures_util::StreamExt::take(failure, usize::from(cut.is_some()));
    let mut response = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
    response.content_type("application/octet-stream");
    if status == 206 {
        response.insert_header((
            "content-range",
            format!("bytes {start}-{}/{}", script.file.len() - 1, script.file.len()),
        ));
    }
    response
        .no_chunking(length)
        .streaming(futures_util::StreamExt::chain(futures_util::stream::iter(chunks), failure))
}

/// Runs the fake IMGAPI on its own thread; returns its URL.
fn fake_imgapi(script: Script) -> (String, actix_web::dev::ServerHandle) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let data = web::Data::new(script);
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(data.clone())
                    .route("/images/{uuid}", web::get().to(fake_manifest))
                    .route("/images/{uuid}/file", web::get().to(fake_file))
            })
            .workers(1)
            .bind("127.0.0.1:0")
            .unwrap();
            let addr = server.addrs()[0];
            let server = server.run();
            tx.send((format!("http://{addr}"), server.handle())).unwrap();
            server.await
        })
    });
    rx.recv().unwrap()
}

fn script_for(file: Vec<u8>, compression: &str) -> Script {
    let uuid = "0b5e5a3c-7f0e-4d2f-9f5e-2b0f2c0d6a11";
    Script {
        manifest: json!({"v": 2, "uuid": uuid, "name": "fake", "version": "1", "type": "zvol", "os": "linux",
                         "state": "active", "files": [{"sha1": sha1_hex(&file), "size": file.len(), "compression": compression}]}),
        length: file.len() as u64,
        file,
        cut_first_at: None,
        ranges: true,
        downloads: Arc::default(),
    }
}

const FAKE_UUID: &str = "0b5e5a3c-7f0e-4d2f-9f5e-2b0f2c0d6a11";

fn expect_failure(script: Script, code: &str) -> Agent {
    let (url, _handle) = fake_imgapi(script);
    let agent = Agent::start(&[url]);
    let response = agent.import(FAKE_UUID);
    let status = response.status();
    let body: Value = response.json().unwrap();
    assert_eq!(body["code"], code, "status {status}: {body}");
    assert!(agent.files().is_empty(), "nothing may be left: {:?}", agent.files());
    agent
}

#[test]
fn wrong_sha1_wrong_size_and_truncated_bodies_leave_nothing() {
    let file = compress(&disk(9, 2), "gzip");
    let mut wrong_sha1 = script_for(file.clone(), "gzip");
    wrong_sha1.manifest["files"][0]["sha1"] = json!("0".repeat(40));
    expect_failure(wrong_sha1, "VerificationFailed");

    let mut wrong_size = script_for(file.clone(), "gzip");
    wrong_size.manifest["files"][0]["size"] = json!(file.len() + 10);
    expect_failure(wrong_size, "VerificationFailed");

    // Cut mid-way by a source that cannot resume.
    let mut truncated = script_for(file.clone(), "gzip");
    truncated.cut_first_at = Some(file.len() / 3);
    truncated.ranges = false;
    expect_failure(truncated, "SourceError");

    // Bytes that are not gzip at all.
    let garbage = disk(3, 1);
    let mut not_gzip = script_for(garbage, "gzip");
    not_gzip.manifest["files"][0]["compression"] = json!("gzip");
    expect_failure(not_gzip, "VerificationFailed");
}

#[test]
fn an_interrupted_download_resumes_with_a_range_request() {
    let raw = disk(5, 4);
    let file = compress(&raw, "xz");
    let mut script = script_for(file.clone(), "xz");
    script.cut_first_at = Some(file.len() / 2);
    let downloads = script.downloads.clone();
    let (url, _handle) = fake_imgapi(script);
    let agent = Agent::start(&[url]);
    let response = agent.import(FAKE_UUID);
    assert_eq!(response.status(), 200, "{}", response.text().unwrap());
    let image: Value = response.json().unwrap();
    assert!(std::fs::read(image["location"].as_str().unwrap()).unwrap() == raw);
    assert_eq!(downloads.load(Ordering::SeqCst), 2, "one cut download, one resumed");
}

#[test]
fn concurrent_imports_of_one_image_share_one_download() {
    let file = compress(&disk(7, 8), "bzip2");
    let script = script_for(file, "bzip2");
    let downloads = script.downloads.clone();
    let (url, _handle) = fake_imgapi(script);
    let agent = Arc::new(Agent::start(&[url]));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let agent = agent.clone();
            std::thread::spawn(move || agent.import(FAKE_UUID).status().as_u16())
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    assert_eq!(downloads.load(Ordering::SeqCst), 1);
}

#[test]
fn jobs_report_progress_and_the_cli_follows_them() {
    let imgapi = Imgapi::start();
    let uuid = imgapi.publish("cli", &compress(&disk(4, 4), "gzip"), "gzip", None);
    let agent = Agent::start(&[imgapi.server.url()]);
    let run = cli;
    let cli = |args: &[&str]| agent.cli(args);
    let sources = cli(&["--json", "sources", "list"]);
    assert!(sources.status.success());
    let sources: Value = serde_json::from_slice(&sources.stdout).unwrap();
    assert_eq!(sources[0]["url"], imgapi.server.url());

    let imported = cli(&["--json", "images", "import", &uuid]);
    assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));
    let image: Value = serde_json::from_slice(&imported.stdout).unwrap();
    assert_eq!(image["uuid"], uuid.as_str());

    let listed = cli(&["images", "list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&uuid));
    let jobs: Value =
        agent.client.get(format!("{}/api/v1/jobs", agent.base())).send().unwrap().json().unwrap();
    let job = &jobs[0];
    assert_eq!(
        (job["state"].as_str(), job["downloaded"].as_u64()),
        (Some("succeeded"), job["total"].as_u64())
    );

    let missing = cli(&["images", "get", "11111111-2222-3333-4444-555555555555"]);
    assert_eq!(missing.status.code(), Some(3));
    let not_found = cli(&["images", "import", "11111111-2222-3333-4444-555555555555"]);
    assert_eq!(not_found.status.code(), Some(3));
    let unauthorized = run(&agent.base(), None, &["images", "delete", &uuid]);
    assert_eq!(unauthorized.status.code(), Some(7));
    assert!(cli(&["images", "delete", &uuid]).status.success());
    let unreachable = run("http://127.0.0.1:1", None, &["images", "list"]);
    assert_eq!(unreachable.status.code(), Some(8));
}

#[test]
fn a_real_server_with_damaged_files_is_caught() {
    let imgapi = Imgapi::start();
    let agent = Agent::start(&[imgapi.server.url()]);
    let file = compress(&disk(6, 2), "gzip");
    // Same length, different bytes: only the sha1 can tell.
    let corrupted = imgapi.publish("corrupted", &file, "gzip", None);
    let stored = imgapi.stored_file(&corrupted, &file);
    let mut bytes = std::fs::read(&stored).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&stored, bytes).unwrap();
    let response = agent.import(&corrupted);
    let body: Value = response.json().unwrap();
    assert_eq!(body["code"], "VerificationFailed", "{body}");
    // Shorter than the manifest says: the server cannot send what it announced.
    let truncated = imgapi.publish("truncated", &file, "gzip", None);
    let stored = imgapi.stored_file(&truncated, &file);
    std::fs::write(&stored, &file[..file.len() / 2]).unwrap();
    let response = agent.import(&truncated);
    let body: Value = response.json().unwrap();
    assert_eq!(body["code"], "SourceError", "{body}");
    assert!(agent.files().is_empty(), "{:?}", agent.files());
}

#[test]
fn a_full_disk_fails_cleanly() {
    // Images on a 2 MiB tmpfs. Mounting needs root: CI runs as root and must run this test.
    let mount = tempfile::tempdir().unwrap();
    #[allow(clippy::disallowed_methods)] // test set-up, not agent code
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(mount.path())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        assert!(std::env::var_os("CI").is_none(), "CI must be able to mount a tmpfs for this test");
        eprintln!("skipping: cannot mount a tmpfs here (needs root)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            #[allow(clippy::disallowed_methods)]
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.path().to_path_buf());
    let imgapi = Imgapi::start();
    // Random bytes: no holes to save the day.
    let mut raw = vec![0u8; 4 << 20];
    let mut x = 0x9e3779b97f4a7c15u64;
    for b in raw.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let uuid = imgapi.publish("big", &compress(&raw, "gzip"), "gzip", None);
    let state = tempfile::tempdir().unwrap();
    let agent = Agent::start_in(state.path(), &[imgapi.server.url()], |config| {
        config["storage"]["dir"] = json!(mount.path().join("images"));
    });
    let response = agent.import(&uuid);
    assert_eq!(response.status(), 507);
    assert_eq!(response.json::<Value>().unwrap()["code"], "InsufficientStorage");
    let left: Vec<_> = std::fs::read_dir(mount.path().join("images")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_source_channel_is_sent_with_every_request() {
    let imgapi =
        Imgapi::start_with(json!({"channels": [{"name": "stable", "description": "s", "default": true},
                                                         {"name": "dev", "description": "d"}]}));
    let url = imgapi.server.url();
    let file = compress(&disk(8, 1), "gzip");
    let manifest = json!({"name": "dev-only", "version": "1", "type": "other", "os": "other"});
    let uuid = imgapi.publish_manifest(manifest, &file, "gzip", Some("dev"));
    // Without the channel the image is not visible (default channel "stable").
    let plain = Agent::start(std::slice::from_ref(&url));
    assert_eq!(plain.import(&uuid).status(), 404);
    let on_dev = Agent::start(&[format!("{url}/?channel=dev")]);
    let response = on_dev.import(&uuid);
    assert_eq!(response.status(), 200, "{}", response.text().unwrap());
}
