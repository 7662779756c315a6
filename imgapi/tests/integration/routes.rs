//! Schema-driven bad input against every route of `http::configure`: wrong methods, bad and
//! tricky UUID segments (`..`, `%2e%2e`, encoded slashes, NUL, overlong), bad query strings,
//! malformed and hostile bodies, oversized and malformed headers, and broken HTTP framing, all
//! sent byte for byte over raw TCP (an HTTP client library would normalise the paths). The
//! server (the real binary) must never answer 5xx, must keep answering `/ping`, must never
//! show a file from outside its datadir, and must leave everything beside the datadir as it
//! was (a canary file keeps its bytes and mtime, no entry appears or disappears).
//!
//! The one 5xx the API makes on purpose, `/ping?error=InternalError` (for clients to test
//! their error handling), is not sent.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, SystemTime};

use base64::Engine;
use serde_json::{json, Value};

use crate::common::{sha1_hex, walk, ChildServer, PASSWORD, USER};

const CANARY: &str = "CANARY-5e1f0c7a-do-not-serve-or-touch";

/// Every route of `http::configure`; `{u}` is the image uuid segment.
const ROUTES: &[&str] = &[
    "/ping",
    "/images",
    "/images/{u}",
    "/images/{u}/file",
    "/images/{u}/file/from-url",
    "/images/{u}/icon",
    "/images/{u}/acl",
    "/images/{u}/jobs",
    "/images/{u}/clone",
    "/images/{u}/push",
    "/channels",
    "/datasets",
    "/datasets/{u}",
    "/state",
    "/authkeys/reload",
    "/mirrors",
];

/// The method each route really takes, for the body sweep.
const WRITES: &[(&str, &str)] = &[
    ("POST", "/images"),
    ("POST", "/images?action=import"),
    ("POST", "/images/{u}?action=update"),
    ("POST", "/images/{u}?action=import"),
    ("POST", "/images/{u}?action=activate"),
    ("POST", "/images/{u}?action=bogus"),
    ("POST", "/images/{u}"),
    ("PUT", "/images/{u}/file?compression=gzip"),
    ("PUT", "/images/{u}/file?compression=none&sha1=0000"),
    ("PUT", "/images/{u}/file"),
    ("POST", "/images/{u}/file/from-url"),
    ("PUT", "/images/{u}/icon"),
    ("POST", "/images/{u}/acl"),
    ("POST", "/images/{u}/acl?action=remove"),
    ("POST", "/images/{u}/clone"),
    ("POST", "/images/{u}/push"),
    ("POST", "/state?action=dropcaches"),
    ("POST", "/authkeys/reload"),
    ("POST", "/images/{u}?action=import&source=ftp://127.0.0.1:9"),
    ("PUT", "/images/{u}/file?source=ftp://127.0.0.1:9"),
];

const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO", "get"];

const QUERIES: &[&str] = &[
    "",
    "?",
    "?action=",
    "?action=update",
    "?action=import",
    "?action=remove",
    "?action=x%00y",
    "?compression=gzip&sha1=zz",
    "?compression=none;sha1=../../canary.txt",
    "?account=not-a-uuid",
    "?account=6DE01E97-D7EC-4906-BD8B-CB4EAFDB7C8B",
    "?channel=*",
    "?channel=..%2F..",
    "?inclAdminFields=true",
    "?inclAdminFields=maybe",
    "?index=99999999999999999999",
    "?index=-1",
    "?%zz=%",
    "?state=all&limit=0",
    "?limit=18446744073709551616",
    "?marker=..",
    "?marker=6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b",
    "?sort=published_at.DESC",
    "?sort=name",
    "?name=~&version=~&owner=x&tag.%00=%ff",
    "?error=Bogus",
    "?error=ValidationFailed",
    "?action=dropcaches",
    "?storage=../../canary.txt",
    "?dataset_guid=%2F%2F",
];

/// A request's outcome: `None` when the server closed the connection without answering.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Sends `request` as is on a new connection and reads one answer: up to its end as its
/// headers give it (the server may linger before closing), or until the server closes.
fn raw(addr: &str, request: &[u8]) -> Option<Answer> {
    let head_request = request.starts_with(b"HEAD ");
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    // The server may answer (and close) before reading all of a refused request.
    let _ = stream.write_all(request);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut bytes = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    let mut closed = false;
    loop {
        if let Some(answer) = parse_answer(&bytes, head_request, closed) {
            return Some(answer);
        }
        if closed {
            return None;
        }
        match stream.read(&mut buf) {
            Ok(0) => closed = true,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            // A reset after a refused request: what was read so far is the answer.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed = true,
            Err(e) => panic!("reading the answer: {e}"),
        }
    }
}

/// The final answer in `bytes` once it is complete (interim 1xx answers skipped).
fn parse_answer(mut bytes: &[u8], head_request: bool, closed: bool) -> Option<Answer> {
    loop {
        let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let rest = &bytes[end + 4..];
        if (100..200).contains(&status) {
            bytes = rest;
            continue;
        }
        let header =
            |name: &str| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
        let body = if head_request || status == 204 || status == 304 {
            Vec::new()
        } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            let complete = rest.starts_with(b"0\r\n\r\n") || rest.windows(7).any(|w| w == b"\r\n0\r\n\r\n");
            if !complete && !closed {
                return None;
            }
            dechunk(rest)
        } else if let Some(length) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            if rest.len() < length && !closed {
                return None;
            }
            rest[..length.min(rest.len())].to_vec()
        } else if closed {
            rest.to_vec()
        } else {
            return None;
        };
        return Some(Answer { status, headers, body });
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 || data.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[(eol + 4 + size).min(data.len())..];
    }
    out
}

fn basic(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// A request with `Connection: close`, a `Content-Length` for `body`, and `headers` as given.
fn request(method: &str, target: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut out =
        format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

/// The bodies thrown at every route that takes one.
fn bodies() -> Vec<(&'static str, Vec<u8>)> {
    let deep_array = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = format!("{}1{}", "{\"a\":".repeat(5000), "}".repeat(5000));
    let many_keys = Value::Object((0..20_000).map(|i| (format!("k{i}"), json!(i))).collect()).to_string();
    vec![
        ("empty", vec![]),
        ("truncated object", b"{".to_vec()),
        ("truncated member", b"{\"name\":".to_vec()),
        ("array", b"[]".to_vec()),
        ("null", b"null".to_vec()),
        ("string", b"\"str\"".to_vec()),
        ("number", b"1e999999".to_vec()),
        ("trailing garbage", b"{\"name\":\"x\"} garbage".to_vec()),
        ("wrong types", br#"{"name":5,"version":[],"type":{},"os":null,"uuid":7,"files":"x","acl":{"a":1}}"#.to_vec()),
        ("path in fields", br#"{"name":"../../canary.txt","version":"..","type":"zone-dataset","os":"smartos","uuid":"../../canary.txt","owner":"..%2F.."}"#.to_vec()),
        ("nested", br#"{"description":{"nested":[1,2,{"x":null}]},"tags":{"a":{"b":{"c":[]}}}}"#.to_vec()),
        ("deep array", deep_array.into_bytes()),
        ("deep object", deep_object.into_bytes()),
        ("many keys", many_keys.into_bytes()),
        ("not utf-8", b"{\"name\":\"\xff\xfe\xfd\"}".to_vec()),
        ("nul bytes", b"{\"name\":\"a\x00b\"}\x00".to_vec()),
        ("utf-16 bom", b"\xff\xfe{\x00}\x00".to_vec()),
        ("one MiB of a", vec![b'a'; 1 << 20]),
        ("valid manifest", json!({"name": "x", "version": "1.0", "type": "zone-dataset", "os": "smartos"}).to_string().into_bytes()),
    ]
}

struct Target {
    server: ChildServer,
    addr: String,
    dir: tempfile::TempDir,
    /// The images published for the test (the first has a file and an icon).
    uuids: Vec<String>,
    sent: usize,
    /// How many answers of each status, `0` for a connection closed without one.
    statuses: std::collections::BTreeMap<u16, usize>,
}

impl Target {
    /// Sends one request, checks the answer, returns it.
    fn send(&mut self, what: &str, bytes: &[u8], may_close: bool) -> Option<Answer> {
        self.sent += 1;
        let answer = raw(&self.addr, bytes);
        *self.statuses.entry(answer.as_ref().map_or(0, |a| a.status)).or_default() += 1;
        let Some(answer) = answer else {
            assert!(may_close, "{what}: the connection was closed without an answer");
            return None;
        };
        assert!(answer.status < 500, "{what}: {} {}", answer.status, String::from_utf8_lossy(&answer.body));
        assert!(answer.status >= 100, "{what}: status {}", answer.status);
        let body = String::from_utf8_lossy(&answer.body);
        assert!(!body.contains(CANARY), "{what}: the answer shows the canary file");
        assert!(!body.contains("\"userdb\""), "{what}: the answer shows the config file");
        Some(answer)
    }

    /// An answer made by the API (not by the HTTP layer): errors are `{"code","message"}`.
    fn send_api(&mut self, what: &str, method: &str, bytes: &[u8]) -> Answer {
        let answer = self.send(what, bytes, false).unwrap();
        if answer.status >= 400 && method != "HEAD" {
            assert_eq!(answer.header("content-type"), Some("application/json"), "{what}: {}", answer.status);
            let body: Value = serde_json::from_slice(&answer.body)
                .unwrap_or_else(|e| panic!("{what}: error body is not JSON ({e})"));
            assert!(body["code"].is_string() && body["message"].is_string(), "{what}: {body}");
        }
        answer
    }

    fn still_serving(&mut self, after: &str) {
        assert!(self.server.is_running(), "the server died after {after}");
        let answer = raw(&self.addr, &request("GET", "/ping", &[], b""));
        let status = answer.map(|a| a.status);
        assert_eq!(status, Some(200), "/ping after {after}");
    }

    /// The uuid variants of a path segment: real, absent, and every trick.
    fn segments(&self) -> Vec<String> {
        let u = &self.uuids[0];
        vec![
            u.clone(),
            "6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b".into(),
            u.to_uppercase(),
            "not-a-uuid".into(),
            "..".into(),
            "%2e%2e".into(),
            ".%2E".into(),
            "..%2F..%2Fcanary.txt".into(),
            "%2e%2e%2f%2e%2e%2fcanary.txt".into(),
            "%2F".into(),
            "..%5c..%5ccanary.txt".into(),
            format!("{u}%00"),
            format!("{u}/.."),
            format!("{u}/../../canary.txt"),
            format!("{u}%2F..%2F..%2Fcanary.txt"),
            format!("{u}x"),
            "%".into(),
            "%ff%fe".into(),
            "\u{fc}ber".into(),
            "a".repeat(10_000),
        ]
    }
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>, Option<SystemTime>)> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let meta = e.metadata().unwrap();
            let bytes = if meta.is_file() { std::fs::read(e.path()).unwrap() } else { vec![] };
            let mtime = if meta.is_file() { meta.modified().ok() } else { None };
            (name, bytes, mtime)
        })
        .collect();
    entries.sort();
    entries
}

fn start() -> Target {
    let dir = tempfile::tempdir().unwrap();
    // The HTTP layer logs every request it cannot parse: expected here.
    let config = ChildServer::config_in(dir.path(), json!({"log_level": "error,actix_http=off"}));
    std::fs::write(dir.path().join("canary.txt"), CANARY).unwrap();
    let server = ChildServer::start(&config);
    let addr = server.url.trim_start_matches("http://").to_string();
    let c = reqwest::blocking::Client::new();
    let mut uuids = Vec::new();
    for name in ["target", "second"] {
        let created: Value = c
            .post(format!("{}/images", server.url))
            .basic_auth(USER, Some(PASSWORD))
            .json(&json!({"name": name, "version": "1.0.0", "type": "zone-dataset", "os": "smartos"}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        uuids.push(created["uuid"].as_str().unwrap().to_string());
    }
    let (u, bytes) = (&uuids[0], b"image bytes".to_vec());
    let url = format!("{}/images/{u}/file?compression=none&sha1={}", server.url, sha1_hex(&bytes));
    assert_eq!(c.put(url).basic_auth(USER, Some(PASSWORD)).body(bytes).send().unwrap().status(), 200);
    let icon = format!("{}/images/{u}/icon", server.url);
    let r = c
        .put(icon)
        .basic_auth(USER, Some(PASSWORD))
        .header("content-type", "image/png")
        .body("PNG")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    Target { server, addr, dir, uuids, sent: 0, statuses: Default::default() }
}

#[test]
fn every_route_survives_bad_input_without_5xx_or_escaping_the_datadir() {
    let mut t = start();
    let before = snapshot(t.dir.path());
    let admin = ("Authorization", format!("Basic {}", basic(USER, PASSWORD)));
    let wrong = ("Authorization", format!("Basic {}", basic(USER, "wrong")));
    let bodies = bodies();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };

    let clock = std::time::Instant::now();
    // 1. Every route, every method, every uuid trick; query, credentials and body drawn from
    // the tables. Deletes of the real image are left for the end (section 4).
    for route in ROUTES {
        let segments = if route.contains("{u}") { t.segments() } else { vec![String::new()] };
        for segment in &segments {
            for method in METHODS {
                if *method == "DELETE" && segment == &t.uuids[0] {
                    continue;
                }
                let query = QUERIES[next(QUERIES.len())];
                let target = format!("{}{query}", route.replace("{u}", segment));
                let auth = [None, Some(admin.clone()), Some(wrong.clone())][next(3)].clone();
                let (body_name, body) = &bodies[next(bodies.len())];
                let headers: Vec<(&str, String)> =
                    auth.into_iter().chain([("Content-Type", "application/json".to_string())]).collect();
                let what = format!("{method} {} ({body_name} body)", &target[..target.len().min(200)]);
                let bytes = request(method, &target, &headers, body);
                // Bytes that are not a valid request target are the HTTP layer's to refuse.
                let protocol_level = segment.contains('\u{fc}');
                if protocol_level {
                    t.send(&what, &bytes, false);
                } else {
                    t.send_api(&what, method, &bytes);
                }
            }
        }
        t.still_serving(route);
    }

    eprintln!("section 1: {} requests in {:.1} s", t.sent, clock.elapsed().as_secs_f64());
    // 2. Every body, with and without a JSON content type, at every route that reads one.
    for (method, route) in WRITES {
        for segment in
            [t.uuids[1].clone(), "6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b".to_string(), "..%2F".to_string()]
        {
            let target = route.replace("{u}", &segment);
            for (body_name, body) in &bodies {
                for content_type in ["application/json", "image/png", "application/json; charset=utf-16"] {
                    let headers = [admin.clone(), ("Content-Type", content_type.to_string())];
                    let what = format!("{method} {target} ({body_name} body, {content_type})");
                    t.send_api(&what, method, &request(method, &target, &headers, body));
                }
            }
        }
        t.still_serving(route);
    }

    eprintln!("sections 1-2: {} requests in {:.1} s", t.sent, clock.elapsed().as_secs_f64());
    // 3. Hostile headers and broken framing: the HTTP layer may refuse them (4xx) or close,
    // never 5xx, and the server goes on.
    let u = t.uuids[0].clone();
    let file = format!("/images/{u}/file");
    let huge = "a".repeat(100 * 1024);
    let header_cases: Vec<(String, Vec<u8>)> = vec![
        ("64 KiB header".into(), request("GET", "/ping", &[("X-Big", "b".repeat(64 * 1024))], b"")),
        ("100 KiB header".into(), request("GET", "/images", &[("X-Big", huge.clone())], b"")),
        ("100 KiB URL".into(), request("GET", &format!("/images?name={huge}"), &[], b"")),
        ("16 KiB URL".into(), request("GET", &format!("/images?name={}", "n".repeat(16 * 1024)), &[], b"")),
        ("huge Basic".into(), request("POST", "/images", &[("Authorization", format!("Basic {}", basic(USER, &huge)))], b"{}")),
        ("Signature garbage".into(), request("POST", "/images", &[("Authorization", "Signature keyId=\"/a/keys/b\",algorithm=\"rsa-sha256\",headers=\"date (request-target) x\",signature=\"!!!\"".into()), ("Date", "yesterday".into())], b"{}")),
        ("non-UTF-8 authorization".into(), [&b"POST /images HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Basic \xff\xfe\r\nContent-Length: 2\r\n\r\n{}"[..]].concat()),
        ("non-UTF-8 accept-version".into(), [&b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAccept-Version: \xff\r\n\r\n"[..]].concat()),
        ("accept-version garbage".into(), request("GET", "/images", &[("Accept-Version", "~999999999999999999999.x".into())], b"")),
        ("range garbage".into(), request("GET", &file, &[("Range", "bytes=abc".into())], b"")),
        ("range reversed".into(), request("GET", &file, &[("Range", "bytes=5-1".into())], b"")),
        ("range overflow".into(), request("GET", &file, &[("Range", "bytes=99999999999999999999-".into())], b"")),
        ("range suffix 0".into(), request("GET", &file, &[("Range", "bytes=-0".into())], b"")),
        ("thousand ranges".into(), request("GET", &file, &[("Range", format!("bytes={}", (0..1000).map(|i| format!("{i}-{i}")).collect::<Vec<_>>().join(",")))], b"")),
        ("if-range garbage".into(), request("GET", &file, &[("Range", "bytes=0-1".into()), ("If-Range", "\u{7f}".into())], b"")),
        ("if-none-match huge".into(), request("GET", &file, &[("If-None-Match", format!("\"{}\"", "e".repeat(30_000)))], b"")),
        ("if-modified-since garbage".into(), request("GET", &file, &[("If-Modified-Since", "the day before".into())], b"")),
        ("if-match garbage".into(), request("POST", &format!("/images/{u}?action=update"), &[admin.clone(), ("If-Match", "\",\",W/\"".into())], b"{\"description\":\"d\"}")),
        ("icon bad type".into(), request("PUT", &format!("/images/{u}/icon"), &[admin.clone(), ("Content-Type", "image/png; x=\"".into())], b"x")),
        ("expect continue".into(), request("PUT", &format!("/images/{}/file?compression=none", t.uuids[1]), &[admin.clone(), ("Expect", "100-continue".into())], b"bytes")),
        ("500 headers".into(), request("GET", "/ping", &(0..500).map(|_| ("X-H", "v".to_string())).collect::<Vec<_>>(), b"")),
        ("header name with space".into(), b"GET /ping HTTP/1.1\r\nHost: x\r\nBad Header: x\r\nConnection: close\r\n\r\n".to_vec()),
        ("header without colon".into(), b"GET /ping HTTP/1.1\r\nHost: x\r\nnocolon\r\nConnection: close\r\n\r\n".to_vec()),
        ("negative content-length".into(), b"POST /images HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: -1\r\n\r\n{}".to_vec()),
        ("text content-length".into(), b"POST /images HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: abc\r\n\r\n{}".to_vec()),
        ("huge content-length".into(), format!("PUT /images/{}/file?compression=none HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Basic {}\r\nContent-Length: 99999999999999999999\r\n\r\nxx", t.uuids[1], basic(USER, PASSWORD)).into_bytes()),
        ("two content-lengths".into(), b"POST /images HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\n{}".to_vec()),
        ("content-length and chunked".into(), b"POST /images HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n".to_vec()),
        ("bad chunk size".into(), format!("PUT /images/{}/file?compression=none HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Basic {}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n", t.uuids[1], basic(USER, PASSWORD)).into_bytes()),
        ("huge chunk size".into(), format!("PUT /images/{}/file?compression=none HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Basic {}\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nab\r\n", t.uuids[1], basic(USER, PASSWORD)).into_bytes()),
        ("truncated chunked".into(), format!("POST /images HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Basic {}\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{{\"na", basic(USER, PASSWORD)).into_bytes()),
        ("gzip transfer-encoding".into(), b"POST /images HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: gzip\r\n\r\n{}".to_vec()),
        ("HTTP/9.9".into(), b"GET /ping HTTP/9.9\r\nHost: x\r\n\r\n".to_vec()),
        ("HTTP/1.0 without host".into(), b"GET /ping HTTP/1.0\r\n\r\n".to_vec()),
        ("binary request line".into(), b"\x00\x01\x02\x03\r\n\r\n".to_vec()),
        ("method only".into(), b"GET\r\n\r\n".to_vec()),
        ("absolute form".into(), b"GET http://127.0.0.1/ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec()),
        ("absolute form elsewhere".into(), b"GET http://example.invalid/../../canary.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec()),
        ("asterisk form".into(), b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec()),
        ("no leading slash".into(), b"GET ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec()),
        ("double slashes".into(), format!("GET //images//{u}//file HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()),
        ("dot segments".into(), format!("GET /images/{u}/../../../canary.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()),
        ("dot segments to datadir".into(), format!("GET /images/{u}/../{u}/manifest.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()),
        ("encoded dot segments".into(), b"GET /%2e%2e/%2e%2e/canary.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec()),
        ("backslashes".into(), b"GET /..\\..\\canary.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec()),
        ("query only".into(), b"GET ?%%%&&;; HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec()),
        ("bare LF".into(), b"GET /ping HTTP/1.1\nHost: x\nConnection: close\n\n".to_vec()),
        ("pipelined garbage".into(), b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n".to_vec()),
        ("slowloris-style unfinished".into(), b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Unfinished: ".to_vec()),
    ];
    for (name, bytes) in header_cases {
        let case = std::time::Instant::now();
        t.send(&name, &bytes, true);
        if case.elapsed() > Duration::from_millis(500) {
            eprintln!("slow case {name}: {:.1} s", case.elapsed().as_secs_f64());
        }
        t.still_serving(&name);
    }

    eprintln!("sections 1-3: {} requests in {:.1} s", t.sent, clock.elapsed().as_secs_f64());
    // 4. The deletes left out above: path tricks on DELETE, then the real one.
    for segment in t.segments().into_iter().skip(1) {
        let what = format!("DELETE /images/{segment}");
        t.send(
            &what,
            &request("DELETE", &format!("/images/{segment}"), std::slice::from_ref(&admin), b""),
            true,
        );
    }
    let what = format!("DELETE /images/{u}");
    let deleted = t.send_api(
        &what,
        "DELETE",
        &request("DELETE", &format!("/images/{u}"), std::slice::from_ref(&admin), b""),
    );
    assert_eq!(deleted.status, 204);
    t.still_serving("the deletes");

    // No upload left a temp file behind (refused ones are removed as they fail).
    let datadir = t.dir.path().join("data");
    let leftovers = || -> Vec<String> {
        walk(&datadir)
            .into_iter()
            .filter(|name| name.contains(".tmp-") || name.contains(".deleted-"))
            .collect()
    };
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while !leftovers().is_empty() && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(leftovers(), Vec::<String>::new(), "temp files remain");

    // Beside the datadir, nothing changed: same entries, same bytes, same mtimes.
    assert_eq!(snapshot(t.dir.path()), before, "a file beside the datadir was touched");
    eprintln!(
        "{} requests in {:.1} s, no 5xx, the server still serves; answers by status (0: closed): {:?}",
        t.sent,
        clock.elapsed().as_secs_f64(),
        t.statuses
    );
}
