//! Copies from other IMGAPI servers, on loopback: `?source=` imports (origins first), a
//! mirror of another server of this project (filter, origin chain, deletions followed,
//! status), a corrupted upstream file, an upstream that breaks mid-copy, and pull-through
//! with one shared download.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use reqwest::Method;
use serde_json::json;

use crate::common::*;

/// The URL another server uses to reach `env`, with the admin's credentials.
fn source_of(env: &Env) -> String {
    format!("http://{USER}:{PASSWORD}@{}", env.server.as_ref().unwrap().addr)
}

fn bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(seed).wrapping_add(i as u8 >> 3)).collect()
}

fn file_of(env: &Env, uuid: &str) -> Vec<u8> {
    let response = env.anon(Method::GET, &format!("/images/{uuid}/file")).send().unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().unwrap().to_vec()
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(30), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn imports_a_manifest_and_its_file_from_a_source_origins_first() {
    let upstream = Env::start();
    let base_bytes = bytes(3, 300_000);
    let base = upstream.publish(manifest("base"), &base_bytes);
    let mut child_body = manifest("child");
    child_body["origin"] = base["uuid"].clone();
    let child_bytes = bytes(5, 100_000);
    let child = upstream.publish(child_body, &child_bytes);
    let (base_id, child_id) = (uuid_of(&base), uuid_of(&child));
    let local = Env::start();
    let source = source_of(&upstream);

    let imported = expect_json(
        local
            .admin(Method::POST, &format!("/images/{child_id}?action=import&source={source}"))
            .send()
            .unwrap(),
        200,
    );
    assert_eq!(imported["state"], "unactivated");
    assert_eq!(imported["published_at"], child["published_at"]);
    // The origin was copied whole first.
    let origin = local.get_json(&format!("/images/{base_id}"));
    assert_eq!(origin["state"], "active");
    assert_eq!(file_of(&local, &base_id), base_bytes);

    let with_file = expect_json(
        local.admin(Method::PUT, &format!("/images/{child_id}/file?source={source}")).send().unwrap(),
        200,
    );
    assert_eq!(with_file["files"][0]["sha1"], child["files"][0]["sha1"]);
    local.action(&child_id, "activate");
    assert_eq!(file_of(&local, &child_id), child_bytes);

    // Errors: already here, unknown upstream image, a bad source, no credentials.
    let again = local.admin(Method::POST, &format!("/images/{child_id}?action=import&source={source}"));
    expect_error(again.send().unwrap(), 409, "ImageUuidAlreadyExists");
    let unknown = uuid::Uuid::new_v4();
    let missing = local.admin(Method::POST, &format!("/images/{unknown}?action=import&source={source}"));
    expect_error(missing.send().unwrap(), 503, "RemoteSourceError");
    let bad = local.admin(Method::POST, &format!("/images/{unknown}?action=import&source=ftp://x"));
    expect_error(bad.send().unwrap(), 422, "InvalidParameter");
    let anonymous = local.anon(Method::POST, &format!("/images/{unknown}?action=import&source={source}"));
    assert_eq!(anonymous.send().unwrap().status(), 401);
}

#[test]
fn a_corrupted_upstream_file_is_rejected_and_nothing_is_kept() {
    let upstream = Env::start();
    let good = bytes(7, 200_000);
    let image = upstream.publish(manifest("victim"), &good);
    let uuid = uuid_of(&image);
    // Same size, other bytes: the upstream serves them under the old sha1.
    let stored = upstream.datadir().join(&uuid).join(format!("file.{}", sha1_hex(&good)));
    let mut bad = good.clone();
    bad[100_000] ^= 0xff;
    std::fs::write(&stored, &bad).unwrap();

    let local = Env::start();
    let source = source_of(&upstream);
    local.admin(Method::POST, &format!("/images/{uuid}?action=import&source={source}")).send().unwrap();
    let refused = local.admin(Method::PUT, &format!("/images/{uuid}/file?source={source}")).send().unwrap();
    let body = expect_error(refused, 400, "Download");
    assert!(body["message"].as_str().unwrap().contains("sha1"), "{body}");
    let local_image = local.get_json(&format!("/images/{uuid}"));
    assert!(
        local_image.get("files").is_none_or(|f| f.as_array().is_some_and(|a| a.is_empty())),
        "{local_image}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(local.datadir().join(&uuid))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "manifest.json" && !n.starts_with("image"))
        .collect();
    assert!(leftovers.iter().all(|n| !n.starts_with("file")), "{leftovers:?}");
}

#[test]
fn a_mirror_copies_matching_images_with_their_origins_and_follows_deletions() {
    let upstream = Env::start();
    let base = upstream.publish(manifest("keep"), &bytes(11, 150_000));
    let mut child_body = manifest("keep");
    child_body["version"] = json!("2.0.0");
    child_body["origin"] = base["uuid"].clone();
    let child = upstream.publish(child_body, &bytes(13, 50_000));
    let other = upstream.publish(manifest("other"), &bytes(17, 10_000));
    let local = Env::with(json!({"mirrors": [{
        "url": source_of(&upstream), "interval_secs": 1, "filter": {"name": "keep"}, "follow_deletes": true
    }]}));

    let listed = |env: &Env| -> Vec<String> {
        let list = env.get_json("/images");
        list.as_array().unwrap().iter().map(uuid_of).collect()
    };
    wait_until("the mirror to copy both images", || listed(&local).len() == 2);
    assert!(!listed(&local).contains(&uuid_of(&other)), "the filter keeps `other` out");
    for image in [&base, &child] {
        let uuid = uuid_of(image);
        let copy = local.get_json(&format!("/images/{uuid}"));
        assert_eq!(copy["state"], "active");
        assert_eq!(copy["files"][0]["sha1"], image["files"][0]["sha1"]);
        assert_eq!(copy["published_at"], image["published_at"]);
        assert_eq!(file_of(&local, &uuid), file_of(&upstream, &uuid), "byte-identical, as imgadm reads it");
    }
    let status = expect_json(local.admin(Method::GET, "/mirrors").send().unwrap(), 200);
    assert_eq!(status[0]["upstream_images"], 2, "{status}");
    assert!(status[0]["url"].as_str().unwrap().contains("***"), "no password in the status: {status}");
    assert_eq!(local.anon(Method::GET, "/mirrors").send().unwrap().status(), 401);

    // The upstream deletes the child: the mirror follows; the base stays.
    let child_id = uuid_of(&child);
    let deleted = upstream.admin(Method::DELETE, &format!("/images/{child_id}")).send().unwrap();
    assert_eq!(deleted.status(), 204);
    wait_until("the mirror to follow the deletion", || !listed(&local).contains(&child_id));
    assert_eq!(listed(&local), [uuid_of(&base)]);
    wait_until("a sync that reports the deletion", || {
        let status = expect_json(local.admin(Method::GET, "/mirrors").send().unwrap(), 200);
        status[0]["last_result"] == "ok" && status[0]["upstream_images"] == 1
    });
}

/// Runs an actix app on 127.0.0.1 on its own thread; returns its address and handle.
fn spawn_server<F, T, B>(factory: F) -> (std::net::SocketAddr, actix_web::dev::ServerHandle)
where
    F: Fn() -> App<T> + Send + Clone + 'static,
    T: actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    B: actix_web::body::MessageBody + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(factory).bind("127.0.0.1:0").unwrap();
            let addr = server.addrs()[0];
            let server = server.run();
            tx.send((addr, server.handle())).unwrap();
            server.await
        })
    });
    rx.recv().unwrap()
}

fn stop_server(handle: actix_web::dev::ServerHandle) {
    std::thread::spawn(move || actix_web::rt::System::new().block_on(handle.stop(false))).join().unwrap();
}

/// A scripted upstream: one image; the first file download breaks half-way (`break_first`),
/// later ones honour `Range`; `delay` slows every file answer (to make requests overlap); with
/// `hold`, a download sends half the file and waits for `released` before the rest.
struct Fake {
    url: String,
    uuid: String,
    file: Vec<u8>,
    downloads: Arc<AtomicUsize>,
    ranges: Arc<std::sync::Mutex<Vec<String>>>,
    released: Arc<std::sync::atomic::AtomicBool>,
    handle: actix_web::dev::ServerHandle,
}

impl Fake {
    fn start(break_first: bool, delay: Duration, hold: bool) -> Fake {
        Fake::serving(break_first, delay, hold, true)
    }

    /// An upstream whose one image is private (`public: false`).
    fn private() -> Fake {
        Fake::serving(false, Duration::ZERO, false, false)
    }

    fn serving(break_first: bool, delay: Duration, hold: bool, public: bool) -> Fake {
        let uuid = uuid::Uuid::new_v4().to_string();
        let file = bytes(19, 3 << 20);
        let manifest = json!({
            "v": 2, "uuid": uuid, "owner": "00000000-0000-0000-0000-000000000000", "name": "fake",
            "version": "1.0.0", "type": "zone-dataset", "os": "smartos", "state": "active",
            "disabled": false, "public": public, "published_at": "2026-01-02T03:04:05.678Z",
            "files": [{"sha1": sha1_hex(&file), "size": file.len(), "compression": "gzip"}],
        });
        let downloads = Arc::new(AtomicUsize::new(0));
        let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ranges = Arc::new(std::sync::Mutex::new(Vec::new()));
        let script = Script {
            uuid: uuid.clone(),
            manifest,
            file: Arc::new(file.clone()),
            downloads: downloads.clone(),
            ranges: ranges.clone(),
            break_first,
            delay,
            hold: hold.then(|| released.clone()),
        };
        let (addr, handle) = spawn_server(move || {
            let script = script.clone();
            App::new().default_service(web::to(move |req: HttpRequest| fake_answer(req, script.clone())))
        });
        Fake { url: format!("http://{addr}"), uuid, file, downloads, ranges, released, handle }
    }
}

/// What the fake upstream answers, and counts.
#[derive(Clone)]
struct Script {
    uuid: String,
    manifest: serde_json::Value,
    file: Arc<Vec<u8>>,
    downloads: Arc<AtomicUsize>,
    ranges: Arc<std::sync::Mutex<Vec<String>>>,
    break_first: bool,
    delay: Duration,
    hold: Option<Arc<std::sync::atomic::AtomicBool>>,
}

async fn fake_answer(req: HttpRequest, script: Script) -> HttpResponse {
    let Script { uuid: u, manifest: m, file: f, downloads: d, ranges: r, break_first, delay, hold } = script;
    let path = req.path().to_string();
    if path == format!("/images/{u}") {
        return HttpResponse::Ok().json(m);
    }
    if path != format!("/images/{u}/file") {
        return HttpResponse::NotFound().json(json!({"code": "ResourceNotFound", "message": "no"}));
    }
    let n = d.fetch_add(1, Ordering::SeqCst);
    actix_web::rt::time::sleep(delay).await;
    let range = req.headers().get("range").and_then(|v| v.to_str().ok()).map(str::to_string);
    if let Some(range) = range {
        r.lock().unwrap().push(range.clone());
        let start: usize = range.trim_start_matches("bytes=").trim_end_matches('-').parse().unwrap();
        return HttpResponse::PartialContent()
            .insert_header(("content-range", format!("bytes {start}-{}/{}", f.len() - 1, f.len())))
            .body(f[start..].to_vec());
    }
    if break_first && n == 0 {
        // Full length announced, half sent, then the connection drops.
        let half = web::Bytes::from(f[..f.len() / 2].to_vec());
        let stream = futures_util::stream::iter(vec![
            Ok::<_, std::io::Error>(half),
            Err(std::io::Error::other("upstream restarted")),
        ]);
        return HttpResponse::Ok().no_chunking(f.len() as u64).streaming(stream);
    }
    if let Some(released) = hold {
        let half = f.len() / 2;
        let (first, rest) = (web::Bytes::from(f[..half].to_vec()), web::Bytes::from(f[half..].to_vec()));
        let second = async move {
            while !released.load(Ordering::SeqCst) {
                actix_web::rt::time::sleep(Duration::from_millis(20)).await;
            }
            Ok::<_, std::io::Error>(rest)
        };
        let stream = futures_util::StreamExt::chain(
            futures_util::stream::iter(vec![Ok::<_, std::io::Error>(first)]),
            futures_util::stream::once(second),
        );
        return HttpResponse::Ok().no_chunking(f.len() as u64).streaming(stream);
    }
    HttpResponse::Ok().body(f.to_vec())
}

impl Drop for Fake {
    fn drop(&mut self) {
        stop_server(self.handle.clone());
    }
}

#[test]
fn an_upstream_that_breaks_mid_copy_is_resumed_with_a_range_request() {
    let fake = Fake::start(true, Duration::ZERO, false);
    let local = Env::start();
    let uuid = &fake.uuid;
    expect_json(
        local
            .admin(Method::POST, &format!("/images/{uuid}?action=import&source={}", fake.url))
            .send()
            .unwrap(),
        200,
    );
    let stored = expect_json(
        local.admin(Method::PUT, &format!("/images/{uuid}/file?source={}", fake.url)).send().unwrap(),
        200,
    );
    assert_eq!(stored["files"][0]["size"], fake.file.len());
    local.action(uuid, "activate");
    assert_eq!(file_of(&local, uuid), fake.file);
    assert_eq!(fake.downloads.load(Ordering::SeqCst), 2);
    let ranges = fake.ranges.lock().unwrap().clone();
    assert_eq!(ranges.len(), 1, "{ranges:?}");
    assert_ne!(ranges[0], "bytes=0-", "resumed, not restarted: {ranges:?}");
}

#[test]
fn pull_through_serves_while_it_copies_with_one_shared_download() {
    use std::io::Read;
    let fake = Fake::start(false, Duration::ZERO, true);
    let local = Env::with(json!({"mirrors": [{"url": fake.url, "interval_secs": 0, "pull_through": true}]}));
    let uuid = fake.uuid.clone();
    // Four readers; the upstream holds back the second half of the file.
    let (got_first_bytes, first_bytes) = std::sync::mpsc::channel();
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let url = format!("{}/images/{uuid}/file", local.url);
            let got_first_bytes = got_first_bytes.clone();
            std::thread::spawn(move || {
                let mut response = reqwest::blocking::get(url).unwrap();
                assert_eq!(response.status(), 200);
                let mut body = vec![0u8; 4096];
                response.read_exact(&mut body).unwrap();
                got_first_bytes.send(()).unwrap();
                response.read_to_end(&mut body).unwrap();
                body
            })
        })
        .collect();
    // Every reader has bytes while the copy cannot be complete: one pass, not store-then-serve.
    for _ in 0..4 {
        first_bytes.recv_timeout(Duration::from_secs(30)).expect("bytes before the upstream finished");
    }
    // Meanwhile GetImage answers with the upstream's manifest, active.
    let manifest = local.get_json(&format!("/images/{uuid}"));
    assert_eq!(
        (manifest["uuid"].as_str(), manifest["state"].as_str()),
        (Some(uuid.as_str()), Some("active"))
    );
    fake.released.store(true, Ordering::SeqCst);
    for reader in readers {
        assert_eq!(reader.join().unwrap(), fake.file);
    }
    assert_eq!(fake.downloads.load(Ordering::SeqCst), 1, "one upstream download for four readers");
    wait_until("the copy to be stored", || {
        local.get_json(&format!("/images/{uuid}"))["files"][0]["sha1"] == sha1_hex(&fake.file)
    });
    assert_eq!(file_of(&local, &uuid), fake.file, "then served from the store");
    let unknown = uuid::Uuid::new_v4();
    expect_error(
        local.anon(Method::GET, &format!("/images/{unknown}")).send().unwrap(),
        404,
        "ResourceNotFound",
    );
    let status = expect_json(local.admin(Method::GET, "/mirrors").send().unwrap(), 200);
    assert_eq!(status[0]["pulled_through"], 1, "{status}");
}

#[test]
fn an_anonymous_request_on_a_public_mirror_never_copies_a_private_upstream_image() {
    let fake = Fake::private();
    let local = Env::with(json!({
        "anonymous_reads": "public",
        "mirrors": [{"url": fake.url, "interval_secs": 0, "pull_through": true}],
    }));
    let uuid = fake.uuid.clone();
    let missing = uuid::Uuid::new_v4().to_string();
    for path in ["/images/U", "/images/U/file"] {
        let hidden = local.anon(Method::GET, &path.replace('U', &uuid)).send().unwrap();
        let body = expect_error(hidden, 404, "ResourceNotFound");
        let absent = local.anon(Method::GET, &path.replace('U', &missing)).send().unwrap();
        let absent = expect_error(absent, 404, "ResourceNotFound");
        assert_eq!(
            body["message"].as_str().unwrap().replace(&uuid, "U"),
            absent["message"].as_str().unwrap().replace(&missing, "U")
        );
    }
    // Nothing was downloaded, stored or started.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fake.downloads.load(Ordering::SeqCst), 0, "the upstream's file was asked for");
    assert_eq!(
        walk(&local.datadir()).iter().filter(|p| p.contains(&uuid)).count(),
        0,
        "{:?}",
        walk(&local.datadir())
    );
    let status = expect_json(local.admin(Method::GET, "/mirrors").send().unwrap(), 200);
    assert_eq!(status[0]["pulled_through"], 0, "{status}");
    // An authenticated caller may see it: then it is pulled through.
    let file = local.admin(Method::GET, &format!("/images/{uuid}/file")).send().unwrap();
    assert_eq!(file.status(), 200);
    assert_eq!(file.bytes().unwrap().to_vec(), fake.file);
}

#[test]
fn a_dead_or_garbage_upstream_is_reported_and_never_stalls_the_server() {
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let local = Env::with(json!({"mirrors": [
        {"url": format!("http://{dead}"), "interval_secs": 1, "pull_through": true}
    ]}));
    wait_until("the failed sync to be reported", || {
        let status = expect_json(local.admin(Method::GET, "/mirrors").send().unwrap(), 200);
        status[0]["last_result"] == "error" && status[0]["consecutive_failures"].as_u64() >= Some(1)
    });
    assert_eq!(local.anon(Method::GET, "/ping").send().unwrap().status(), 200);
    // Pull-through from a dead upstream: a 503 that says so, nothing stored.
    let unknown = uuid::Uuid::new_v4();
    expect_error(
        local.anon(Method::GET, &format!("/images/{unknown}")).send().unwrap(),
        503,
        "RemoteSourceError",
    );
    assert_eq!(local.get_json("/images?state=all"), json!([]));

    // An upstream that answers garbage.
    let (addr, handle) =
        spawn_server(|| App::new().default_service(web::to(|| async { HttpResponse::Ok().body("<html>") })));
    let refused = local.admin(Method::POST, &format!("/images/{unknown}?action=import&source=http://{addr}"));
    expect_error(refused.send().unwrap(), 503, "RemoteSourceError");
    assert_eq!(local.get_json("/images?state=all"), json!([]));
    stop_server(handle);
}
