//! The road to a golden image, through the agent's API and CLI: installer ISOs (upload with its
//! checksum, fetch from a URL with progress, rename, delete, pinned while attached), a blank
//! instance that boots one, disk snapshots and rollback (real qemu-img, qemu-io as the guest),
//! and publishing the disk as a new image that a host then imports. A real imgapi on 127.0.0.1
//! is the URL fetched from and the server published to. Nothing boots here.

use std::path::Path;

use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::common::*;

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[test]
fn from_an_iso_to_a_published_golden_image() {
    let imgapi = Imgapi::start();
    // A 3 MiB "ISO", served by the image server as an image file.
    let iso: Vec<u8> = (0..3u32 << 20).map(|i| (i % 253) as u8).collect();
    let image = imgapi.publish("installer", &iso, "none", None);
    let agent = Agent::start(&[format!("http://admin:secret@{}", imgapi.server.addr)]);
    let iso_url = format!("{}/images/{image}/file", imgapi.server.url());

    // Upload, streamed, with its checksum; a wrong checksum keeps nothing.
    let file = agent.dir().join("local.iso");
    std::fs::write(&file, &iso).unwrap();
    let uploaded =
        agent.cli(&["--json", "isos", "upload", file.to_str().unwrap(), "--sha256", &sha256_hex(&iso)]);
    assert!(uploaded.status.success(), "{}", String::from_utf8_lossy(&uploaded.stderr));
    let wrong = agent.cli(&[
        "isos",
        "upload",
        file.to_str().unwrap(),
        "--name",
        "bad.iso",
        "--sha256",
        &"0".repeat(64),
    ]);
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("ChecksumMismatch"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    let (status, _) = agent.send(Method::GET, "/isos/bad.iso", None);
    assert_eq!(status, 404);

    // Fetch from a URL: the CLI waits, showing progress, and the bytes are exact.
    let fetched =
        agent.cli(&["isos", "fetch", &iso_url, "--name", "fetched.iso", "--sha256", &sha256_hex(&iso)]);
    assert!(fetched.status.success(), "{}", String::from_utf8_lossy(&fetched.stderr));
    let (_, info) = agent.send(Method::GET, "/isos/fetched.iso", None);
    assert_eq!(
        (info["size"].as_u64(), info["source"].as_str()),
        (Some(iso.len() as u64), Some(iso_url.as_str()))
    );
    assert_eq!(std::fs::read(agent.dir().join("instances/isos/fetched.iso")).unwrap(), iso);
    // A fetch whose checksum does not match fails, and leaves nothing.
    let (status, _) = agent.send(
        Method::POST,
        "/isos",
        Some(json!({"url": iso_url, "name": "mismatch.iso", "sha256": "1".repeat(64)})),
    );
    assert_eq!(status, 202);
    let failed = loop {
        let (_, fetches) = agent.send(Method::GET, "/isos/fetches", None);
        let entry = fetches.as_array().unwrap().iter().find(|f| f["name"] == "mismatch.iso").unwrap().clone();
        if entry["state"] != "running" {
            break entry;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(failed["state"], "failed");
    assert!(failed["error"].as_str().unwrap().contains("checksum"), "{failed}");
    assert_eq!(agent.send(Method::GET, "/isos/mismatch.iso", None).0, 404);
    let (status, body) = agent.send(Method::POST, "/isos", Some(json!({"url": "ftp://x/y.iso"})));
    assert_eq!((status, body["code"].as_str()), (422, Some("InvalidParameter")));
    let (status, body) = agent.send(Method::PUT, "/isos/..%2Fescape", Some(json!({})));
    assert!(status == 422 || status == 404, "{status} {body}");

    // Rename; names are checked.
    let (status, renamed) = agent.send(Method::POST, "/isos/local.iso?action=rename&to=installer.iso", None);
    assert_eq!((status, renamed["name"].as_str()), (200, Some("installer.iso")), "{renamed}");
    let (status, _) = agent.send(Method::POST, "/isos/installer.iso?action=rename&to=fetched.iso", None);
    assert_eq!(status, 409, "no overwriting");

    // Attach to an instance (created stopped: nothing runs here), which pins the ISO.
    let boot_disk = imgapi.publish("disk", &vec![0u8; 1 << 20], "none", None);
    assert_eq!(agent.send(Method::POST, "/images", Some(json!({"uuid": boot_disk}))).0, 200);
    let (status, body) = agent.send(
        Method::POST,
        "/instances",
        Some(json!({"image": boot_disk, "start": false, "cdrom": "missing.iso", "boot": "cd"})),
    );
    assert_eq!((status, body["code"].as_str()), (404, Some("IsoNotFound")), "{body}");
    let (status, body) = agent.send(
        Method::POST,
        "/instances",
        Some(json!({"image": boot_disk, "start": false, "boot": "cd"})),
    );
    assert_eq!(status, 422, "booting a CD needs one: {body}");
    let (status, body) =
        agent.send(Method::POST, "/instances", Some(json!({"start": false, "cdrom": "installer.iso"})));
    assert_eq!(status, 422, "a blank disk needs a size: {body}");
    // An install from the ISO onto a blank 16 MiB disk.
    let (status, created) = agent.send(
        Method::POST,
        "/instances",
        Some(json!({"start": false, "disk_mib": 16, "cdrom": "installer.iso", "boot": "cd"})),
    );
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["image"], Value::Null);
    let overlay = agent.dir().join("instances").join(created["uuid"].as_str().unwrap()).join("disk0.qcow2");
    #[allow(clippy::disallowed_methods)] // qemu-img, to check what the agent made
    let info = std::process::Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&overlay)
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(
        (info["virtual-size"].as_u64(), info.get("backing-filename")),
        (Some(16 << 20), None),
        "{info}"
    );

    // Snapshots of the (stopped) instance's qcow2: take, change the disk, roll back.
    let id0 = created["uuid"].as_str().unwrap().to_string();
    let snap = agent.cli(&["instances", "snapshot", &id0, "clean"]);
    assert!(snap.status.success(), "{}", String::from_utf8_lossy(&snap.stderr));
    let (status, body) =
        agent.send(Method::POST, &format!("/instances/{id0}/snapshots"), Some(json!({"name": "clean"})));
    assert_eq!((status, body["code"].as_str()), (409, Some("SnapshotExists")));
    let (status, body) =
        agent.send(Method::POST, &format!("/instances/{id0}/snapshots"), Some(json!({"name": "-rf"})));
    assert_eq!((status, body["code"].as_str()), (422, Some("InvalidParameter")));
    #[allow(clippy::disallowed_methods)] // qemu-io plays the guest writing to its disk
    let written = std::process::Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0x55 0 64k"])
        .arg(&overlay)
        .output()
        .unwrap();
    assert!(written.status.success(), "{}", String::from_utf8_lossy(&written.stderr));
    let first_block = |disk: &Path| -> Vec<u8> {
        let raw = agent.dir().join("check.raw");
        #[allow(clippy::disallowed_methods)]
        let converted = std::process::Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(disk)
            .arg(&raw)
            .output()
            .unwrap();
        assert!(converted.status.success());
        std::fs::read(&raw).unwrap()[..65536].to_vec()
    };
    assert!(first_block(&overlay).iter().all(|b| *b == 0x55), "the write landed");
    let (status, list) =
        agent.send(Method::POST, &format!("/instances/{id0}/snapshots/clean?action=rollback"), None);
    assert_eq!((status, list), (200, json!(["clean"])));
    assert!(first_block(&overlay).iter().all(|b| *b == 0), "back to the snapshot");
    let (status, body) =
        agent.send(Method::POST, &format!("/instances/{id0}/snapshots/nope?action=rollback"), None);
    assert_eq!((status, body["code"].as_str()), (404, Some("SnapshotNotFound")));
    let (status, _) = agent.send(Method::DELETE, &format!("/instances/{id0}/snapshots/clean"), None);
    assert_eq!(status, 204);
    assert_eq!(agent.send(Method::GET, &format!("/instances/{id0}/snapshots"), None).1, json!([]));

    // Publish the (configured) disk as a golden image: it becomes active on the image server,
    // its file is the gzip of the disk's bytes, and a host imports it like any other image.
    #[allow(clippy::disallowed_methods)]
    let written = std::process::Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0xab 1M 128k"])
        .arg(&overlay)
        .output()
        .unwrap();
    assert!(written.status.success());
    let published =
        agent.cli(&["--json", "instances", "publish", &id0, "--name", "golden", "--version", "1.0"]);
    assert!(published.status.success(), "{}", String::from_utf8_lossy(&published.stderr));
    let manifest: Value = serde_json::from_slice(&published.stdout).unwrap();
    assert_eq!(
        (manifest["state"].as_str(), manifest["image_size"].as_u64()),
        (Some("active"), Some(16)),
        "{manifest}"
    );
    let golden = manifest["uuid"].as_str().unwrap().to_string();
    let file = imgapi
        .client
        .get(format!("{}/images/{golden}/file", imgapi.server.url()))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    let mut disk_bytes = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&file[..]), &mut disk_bytes).unwrap();
    assert_eq!(disk_bytes.len(), 16 << 20);
    assert!(
        disk_bytes[1 << 20..(1 << 20) + (128 << 10)].iter().all(|b| *b == 0xab),
        "the guest's write is in the image"
    );
    assert!(disk_bytes[..1 << 20].iter().all(|b| *b == 0));
    assert!(!agent.dir().join("instances").join(&id0).join(".export.raw").exists(), "the export is removed");
    let (status, body) = agent.send(Method::POST, "/images", Some(json!({"uuid": golden})));
    assert_eq!(status, 200, "{body}");
    let (status, body) = agent.send(
        Method::POST,
        &format!("/instances/{id0}/publish"),
        Some(json!({"name": "x", "version": "1", "source": "http://127.0.0.1:1"})),
    );
    assert_eq!((status, body["code"].as_str()), (409, Some("NoSources")), "{body}");
    assert_eq!(
        (created["cdrom"].as_str(), created["boot_from_cdrom"].as_bool()),
        (Some("installer.iso"), Some(true))
    );
    let id = created["uuid"].as_str().unwrap().to_string();
    let (_, list) = agent.send(Method::GET, "/isos", None);
    let installer = list.as_array().unwrap().iter().find(|i| i["name"] == "installer.iso").unwrap();
    assert_eq!(installer["attached_to"], json!([id]));
    let (status, body) = agent.send(Method::DELETE, "/isos/installer.iso", None);
    assert_eq!((status, body["code"].as_str()), (409, Some("IsoInUse")), "{body}");
    let (status, _) = agent.send(Method::POST, "/isos/installer.iso?action=rename&to=other.iso", None);
    assert_eq!(status, 409, "renaming would lose it for the instance");

    // Eject (from the CLI), then the ISO can go.
    let ejected = agent.cli(&["instances", "cdrom", &id, "--eject"]);
    assert!(ejected.status.success(), "{}", String::from_utf8_lossy(&ejected.stderr));
    let deleted = agent.cli(&["isos", "delete", "installer.iso"]);
    assert!(deleted.status.success(), "{}", String::from_utf8_lossy(&deleted.stderr));
    let listed = agent.cli(&["isos", "list"]);
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(table.contains("fetched.iso") && !table.contains("installer.iso"), "{table}");
    let names: Vec<String> = std::fs::read_dir(agent.dir().join("instances/isos"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "fetched.iso and its record, no temp files: {names:?}");
}
