//! AddImageFile checks and GetImageFile headers, HEAD, Range and conditionals; icons.

use std::io::Write;
use std::net::TcpStream;

use base64::Engine;
use md5::{Digest, Md5};
use reqwest::Method;
use serde_json::json;

use crate::common::*;

/// Files in the image's directory other than its record.
fn stored_files(env: &Env, uuid: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(env.datadir().join(uuid))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "manifest.json")
        .collect();
    names.sort();
    names
}

#[test]
fn download_has_exact_headers() {
    let env = Env::start();
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let image = env.publish(manifest("dl"), &bytes);
    let uuid = uuid_of(&image);
    let response = env
        .anon(Method::GET, &format!("/images/{uuid}/file"))
        .header("accept", "application/json") // imgadm sends it on file downloads too
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let h = response.headers().clone();
    assert_eq!(h["content-length"], bytes.len().to_string().as_str());
    assert_eq!(h["content-type"], "application/octet-stream");
    let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&bytes));
    assert_eq!(h["content-md5"], md5.as_str());
    assert_eq!(h["etag"], format!("\"{}\"", sha1_hex(&bytes)).as_str());
    assert!(h.contains_key("last-modified"));
    assert!(h.get("transfer-encoding").is_none(), "never chunked");
    assert_eq!(&response.bytes().unwrap()[..], &bytes[..]);
    assert_eq!(image["files"][0]["size"], bytes.len());
}

#[test]
fn head_range_and_conditional_requests() {
    let env = Env::start();
    let bytes: Vec<u8> = (0..100u8).collect();
    let uuid = uuid_of(&env.publish(manifest("r"), &bytes));
    let path = format!("/images/{uuid}/file");
    let head = env.anon(Method::HEAD, &path).send().unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "100");
    assert!(head.bytes().unwrap().is_empty());

    let part = env.anon(Method::GET, &path).header("range", "bytes=10-19").send().unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], "bytes 10-19/100");
    assert_eq!(&part.bytes().unwrap()[..], &bytes[10..20]);
    let tail = env.anon(Method::GET, &path).header("range", "bytes=95-").send().unwrap();
    assert_eq!(&tail.bytes().unwrap()[..], &bytes[95..]);
    let bad = env.anon(Method::GET, &path).header("range", "bytes=500-").send().unwrap();
    assert_eq!(bad.status(), 416);
    assert_eq!(bad.headers()["content-range"], "bytes */100");

    let etag = format!("\"{}\"", sha1_hex(&bytes));
    let cached = env.anon(Method::GET, &path).header("if-none-match", &etag).send().unwrap();
    assert_eq!(cached.status(), 304);
    // A stale If-Range means the whole file.
    let stale = env
        .anon(Method::GET, &path)
        .header("range", "bytes=0-0")
        .header("if-range", "\"old\"")
        .send()
        .unwrap();
    assert_eq!(stale.status(), 200);
    let fresh =
        env.anon(Method::GET, &path).header("range", "bytes=0-0").header("if-range", &etag).send().unwrap();
    assert_eq!(fresh.status(), 206);
}

#[test]
fn upload_checks_keep_nothing_on_failure() {
    let env = Env::start();
    let uuid = uuid_of(&env.create(manifest("up")));
    let put = |query: &str| env.admin(Method::PUT, &format!("/images/{uuid}/file{query}"));

    let err = expect_error(put("").body("x").send().unwrap(), 422, "InvalidParameter");
    assert_eq!(err["message"], "missing \"compression\"");
    assert_eq!(err["errors"], json!([{"field": "compression", "code": "Missing"}]));
    let err = expect_error(put("?compression=lz4").body("x").send().unwrap(), 422, "InvalidParameter");
    assert_eq!(err["message"], "invalid compression \"lz4\" (must be one of gzip, bzip2, xz, none)");

    let wrong = "0000000000000000000000000000000000000000";
    let err = expect_error(
        put(&format!("?compression=gzip&sha1={wrong}")).body("abc").send().unwrap(),
        400,
        "Download",
    );
    assert_eq!(
        err["message"],
        format!("\"sha1\" hash, {wrong}, does not match the uploaded file sha1 hash, {}", sha1_hex(b"abc"))
    );
    let err = expect_error(put("?compression=gzip").body(Vec::new()).send().unwrap(), 400, "Download");
    assert_eq!(err["message"], "image file size is 0 bytes, empty files are not allowed");
    assert!(stored_files(&env, &uuid).is_empty(), "{:?}", stored_files(&env, &uuid));
    assert_eq!(env.get_json(&format!("/images/{uuid}"))["files"], json!([]));

    // A body shorter than its Content-Length (client gone) keeps nothing either.
    let mut stream = TcpStream::connect(env.server.as_ref().unwrap().addr).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    write!(
        stream,
        "PUT /images/{uuid}/file?compression=none HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nContent-Length: 1000\r\n\r\nonly-a-few-bytes"
    )
    .unwrap();
    drop(stream);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(stored_files(&env, &uuid).is_empty(), "{:?}", stored_files(&env, &uuid));

    // A good upload replaces nothing but the (absent) file; a second one replaces the first.
    env.upload(&uuid, b"first", "none");
    env.upload(&uuid, b"second", "xz");
    assert_eq!(stored_files(&env, &uuid), [format!("file.{}", sha1_hex(b"second"))]);
    let image = env.get_json(&format!("/images/{uuid}"));
    assert_eq!(image["files"][0]["compression"], "xz");
}

#[test]
fn dataset_guid_and_storage_parameters() {
    let env = Env::start();
    let uuid = uuid_of(&env.create(manifest("guid")));
    let path = format!("/images/{uuid}/file?compression=gzip&dataset_guid=1234567890&storage=local");
    let image = expect_json(env.admin(Method::PUT, &path).body("data").send().unwrap(), 200);
    assert_eq!(image["files"][0]["dataset_guid"], "1234567890");
    let path = format!("/images/{uuid}/file?compression=gzip&storage=tape");
    expect_error(env.admin(Method::PUT, &path).body("data").send().unwrap(), 422, "InvalidParameter");
    // inclAdminFields shows `stor`, for authenticated callers only.
    let admin = expect_json(
        env.admin(Method::GET, &format!("/images/{uuid}?inclAdminFields=true")).send().unwrap(),
        200,
    );
    assert_eq!(admin["files"][0]["stor"], "local");
    expect_error(
        env.anon(Method::GET, &format!("/images/{uuid}?inclAdminFields=true")).send().unwrap(),
        401,
        "UnauthorizedError",
    );
}

#[test]
fn over_limit_uploads_are_refused() {
    let env = Env::with(json!({"max_file_size": 1000}));
    let uuid = uuid_of(&env.create(manifest("big")));
    let path = format!("/images/{uuid}/file?compression=none");
    let err =
        expect_error(env.admin(Method::PUT, &path).body(vec![1u8; 1001]).send().unwrap(), 400, "Upload");
    assert!(err["message"].as_str().unwrap().contains("1000"), "{err}");
    // Without Content-Length (chunked), the limit is enforced while streaming.
    let body = reqwest::blocking::Body::new(std::io::Cursor::new(vec![1u8; 1200]));
    let response = env.admin(Method::PUT, &path).body(body).send().unwrap();
    expect_error(response, 400, "Upload");
    assert!(stored_files(&env, &uuid).is_empty());
}

#[test]
fn icons_put_get_delete() {
    let env = Env::start();
    let uuid = uuid_of(&env.create(manifest("icon")));
    let path = format!("/images/{uuid}/icon");
    expect_error(env.anon(Method::GET, &path).send().unwrap(), 404, "ResourceNotFound");
    let err = expect_error(
        env.admin(Method::PUT, &path).header("content-type", "text/plain").body("x").send().unwrap(),
        400,
        "Upload",
    );
    assert_eq!(
        err["message"],
        "invalid content-type, text/plain, must be one of image/jpeg, image/gif, image/png"
    );
    expect_error(
        env.admin(Method::PUT, &path)
            .header("content-type", "image/png")
            .body(vec![0u8; 128 * 1024 + 1])
            .send()
            .unwrap(),
        400,
        "Upload",
    );
    let with_icon = expect_json(
        env.admin(Method::PUT, &path).header("content-type", "image/png").body("PNGDATA").send().unwrap(),
        200,
    );
    assert_eq!(with_icon["icon"], true);
    let icon = env.anon(Method::GET, &path).send().unwrap();
    assert_eq!(icon.headers()["content-type"], "image/png");
    assert!(icon.headers().contains_key("content-md5"));
    assert_eq!(&icon.bytes().unwrap()[..], b"PNGDATA");
    let without = expect_json(env.admin(Method::DELETE, &path).send().unwrap(), 200);
    assert!(without.get("icon").is_none());
    // Deleting a missing icon is a 404 (the reference server crashes here).
    expect_error(env.admin(Method::DELETE, &path).send().unwrap(), 404, "ResourceNotFound");
    expect_error(env.admin(Method::POST, &path).send().unwrap(), 405, "MethodNotAllowedError");
}

#[test]
fn file_errors() {
    let env = Env::start();
    let uuid = uuid_of(&env.create(manifest("nofile")));
    let err = expect_error(
        env.anon(Method::GET, &format!("/images/{uuid}/file")).send().unwrap(),
        404,
        "ResourceNotFound",
    );
    assert_eq!(err["message"], format!("image \"{uuid}\" has no file"));
    env.upload(&uuid, b"x", "none");
    let err = expect_error(
        env.anon(Method::GET, &format!("/images/{uuid}/file?index=1")).send().unwrap(),
        404,
        "ResourceNotFound",
    );
    assert_eq!(err["message"], format!("image \"{uuid}\" has no file at index 1"));
    // Unactivated images' files can be downloaded (reference behaviour).
    let body = env.anon(Method::GET, &format!("/images/{uuid}/file")).send().unwrap();
    assert_eq!(body.status(), 200);
}
