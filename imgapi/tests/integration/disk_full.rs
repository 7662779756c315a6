//! Disk full, beyond the upload case of `errors.rs`: with the datadir's filesystem filled to
//! the last byte (a small tmpfs, and a file beside the datadir that takes every free page),
//! every kind of write (create, upload with and without Content-Length, update, state
//! changes, ACL, icon) fails with `507 InsufficientStorage` and a JSON body; reads go on; what
//! was stored stays exactly as it was, also after a restart; no temp file remains; and once
//! space is back the same writes work. Mounting needs root: CI runs as root and must run this
//! test; elsewhere it is skipped.

use std::io::Write;

use reqwest::blocking::Body;
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

/// Everything a client can read of the store: every manifest, file and icon.
fn readable_state(env: &Env) -> Vec<(Value, Vec<u8>, Vec<u8>)> {
    let list = expect_json(env.admin(Method::GET, "/images?state=all").send().unwrap(), 200);
    list.as_array()
        .unwrap()
        .iter()
        .map(|image| {
            let uuid = uuid_of(image);
            let get = |path: &str| {
                let r = env.anon(Method::GET, &format!("/images/{uuid}{path}")).send().unwrap();
                if r.status() == 404 {
                    vec![]
                } else {
                    r.bytes().unwrap().to_vec()
                }
            };
            (image.clone(), get("/file"), get("/icon"))
        })
        .collect()
}

#[test]
fn a_full_disk_refuses_every_write_with_507_and_damages_nothing() {
    let Some(mount) = Tmpfs::mount("4m") else { return };
    let datadir = mount.path().join("data");
    let mut env = Env::with(json!({"datadir": datadir}));

    // What is stored before the disk fills: an active image with a file and an icon, a
    // disabled one, and an unactivated one without a file.
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let kept = uuid_of(&env.publish(manifest("kept"), &bytes));
    let icon = env
        .admin(Method::PUT, &format!("/images/{kept}/icon"))
        .header("content-type", "image/png")
        .body("PNG icon")
        .send()
        .unwrap();
    expect_json(icon, 200);
    let disabled = uuid_of(&env.publish(manifest("disabled"), b"disabled bytes"));
    env.action(&disabled, "disable");
    let pending = uuid_of(&env.create(manifest("pending")));
    let before = readable_state(&env);
    let files_before = walk(&datadir);

    // Fill the filesystem to the last page, beside the datadir.
    let mut filler = std::fs::File::create(mount.path().join("filler")).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut filled = 0usize;
    loop {
        match filler.write(&chunk) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                break;
            }
        }
    }
    // Smaller writes until not even one byte fits.
    while filler.write(&[0u8; 512]).is_ok_and(|n| n > 0) {}
    eprintln!("filled the tmpfs with {} KiB", filled >> 10);

    let full = |response: reqwest::blocking::Response, what: &str| {
        let body = expect_error(response, 507, "InsufficientStorage");
        assert!(body["message"].as_str().unwrap().contains("space"), "{what}: {body}");
    };
    let data = vec![9u8; 256 * 1024];
    full(env.admin(Method::POST, "/images").json(&manifest("new")).send().unwrap(), "create");
    let import = json!({"uuid": "11111111-2222-4333-8444-555555555555", "name": "imp", "version": "1",
                        "type": "zone-dataset", "os": "smartos"});
    let r = env
        .admin(Method::POST, "/images/11111111-2222-4333-8444-555555555555?action=import")
        .json(&import)
        .send()
        .unwrap();
    full(r, "import");
    let upload = format!("/images/{pending}/file?compression=none&sha1={}", sha1_hex(&data));
    full(env.admin(Method::PUT, &upload).body(data.clone()).send().unwrap(), "upload");
    let chunked = Body::new(std::io::Cursor::new(data.clone()));
    full(env.admin(Method::PUT, &upload).body(chunked).send().unwrap(), "chunked upload");
    full(env.admin(Method::PUT, &upload).body(vec![1u8]).send().unwrap(), "one-byte upload");
    let update = format!("/images/{pending}?action=update");
    full(
        env.admin(Method::POST, &update).json(&json!({"description": "d".repeat(5000)})).send().unwrap(),
        "update",
    );
    full(env.admin(Method::POST, &format!("/images/{kept}?action=disable")).send().unwrap(), "disable");
    full(env.admin(Method::POST, &format!("/images/{disabled}?action=enable")).send().unwrap(), "enable");
    let acl = json!(["930896af-bf8c-48d4-885c-6573a94b1853"]);
    full(env.admin(Method::POST, &format!("/images/{kept}/acl")).json(&acl).send().unwrap(), "acl");
    let r = env
        .admin(Method::PUT, &format!("/images/{pending}/icon"))
        .header("content-type", "image/png")
        .body(vec![3u8; 64 * 1024])
        .send()
        .unwrap();
    full(r, "icon");

    // Reads go on, and show exactly what was stored.
    assert_eq!(env.get_json("/ping")["imgapi"], true);
    assert_eq!(readable_state(&env), before, "a refused write changed what is served");
    assert_eq!(walk(&datadir), files_before, "a refused write left files behind");

    // After a restart on the still-full disk, the same.
    env.restart();
    assert_eq!(readable_state(&env), before, "what was stored changed across a restart");
    assert_eq!(walk(&datadir), files_before);

    // Space back: the refused writes now work.
    drop(filler);
    std::fs::remove_file(mount.path().join("filler")).unwrap();
    let uploaded = env.upload(&pending, &data, "none");
    assert_eq!(uploaded["files"][0]["sha1"], sha1_hex(&data));
    let updated = expect_json(
        env.admin(Method::POST, &update).json(&json!({"description": "now"})).send().unwrap(),
        200,
    );
    assert_eq!(updated["description"], "now");
    env.create(manifest("new"));
    let body = env.anon(Method::GET, &format!("/images/{kept}/file")).send().unwrap().bytes().unwrap();
    assert_eq!(&body[..], &bytes[..]);
}
