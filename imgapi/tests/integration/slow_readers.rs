//! Downloads whose clients never read: 1,000 anonymous ones of a 32 MiB image, each client with
//! a 4 KiB receive buffer, against the release binary (`IMGAPI_RELEASE_BIN`; CI sets it). They
//! once parked a thread and up to 5 MiB each, until the blocking pool that password checks use
//! was full and every authenticated request timed out. Now: few threads, bounded memory,
//! authenticated requests and uploads answered meanwhile, and the stalled connections cut off
//! after `download_stall_timeout_secs`, their memory given back.
//!
//! Bounded: 1,000 connections, about 20 s in all (at most 90 s).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::json;

use crate::common::{manifest, sha1_hex, ChildServer, PASSWORD, USER};

const STALLED: usize = 1000;
const FILE_MIB: usize = 32;
const STALL_TIMEOUT_SECS: u64 = 4;

fn release_binary() -> PathBuf {
    match std::env::var_os("IMGAPI_RELEASE_BIN") {
        Some(path) => PathBuf::from(path),
        None => {
            assert!(std::env::var_os("CI").is_none(), "CI must set IMGAPI_RELEASE_BIN");
            eprintln!("IMGAPI_RELEASE_BIN not set: the slow-reader test runs the debug build");
            PathBuf::from(env!("CARGO_BIN_EXE_imgapi"))
        }
    }
}

/// Incompressible bytes, as image files are.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..len / 8)
        .flat_map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()
        })
        .collect()
}

/// A client that asks for the file and never reads the answer.
fn stalled_download(addr: SocketAddr, uuid: &str) -> socket2::Socket {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut stream = &socket;
    stream.write_all(format!("GET /images/{uuid}/file HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).unwrap();
    socket
}

/// Waits (at most 60 s) until the server has used under 20 ms of CPU in half a second.
fn wait_until_quiet(server: &ChildServer) {
    let cpu_ticks = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", server.pid())).unwrap();
        // utime and stime, the 14th and 15th fields, after the parenthesised command name.
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let started = Instant::now();
    loop {
        let before = cpu_ticks();
        std::thread::sleep(Duration::from_millis(500));
        if cpu_ticks() - before <= 2 {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the server never settled");
    }
}

/// Times an authenticated request; panics if it fails or takes over 5 s.
fn timed(what: &str, request: reqwest::blocking::RequestBuilder) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    let response = request.timeout(Duration::from_secs(5)).send().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(response.status().is_success(), "{what}: {}", response.status());
    let body = response.bytes().unwrap().to_vec();
    (started.elapsed(), body)
}

#[test]
fn a_thousand_stalled_downloads_hold_little_and_delay_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        ChildServer::config_in(dir.path(), json!({"download_stall_timeout_secs": STALL_TIMEOUT_SECS}));
    let server = ChildServer::start_binary(&release_binary(), &config);
    let url = server.url.clone();
    let addr: SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let client = Client::new();
    let publish = |name: &str, bytes: &[u8]| -> String {
        let created: serde_json::Value = client
            .post(format!("{url}/images"))
            .basic_auth(USER, Some(PASSWORD))
            .json(&manifest(name))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let uuid = created["uuid"].as_str().unwrap().to_string();
        let put = format!("{url}/images/{uuid}/file?compression=gzip&sha1={}", sha1_hex(bytes));
        let (_, _) = timed("upload", client.put(put).basic_auth(USER, Some(PASSWORD)).body(bytes.to_vec()));
        timed(
            "activate",
            client.post(format!("{url}/images/{uuid}?action=activate")).basic_auth(USER, Some(PASSWORD)),
        );
        uuid
    };
    let big = publish("big", &random_bytes(FILE_MIB << 20));
    let small_bytes = random_bytes(64 << 10);
    let small = publish("small", &small_bytes);
    let (threads_before, rss_before, fds_before) = (server.threads(), server.rss_kib(), server.open_fds());

    let stalled: Vec<socket2::Socket> = (0..STALLED).map(|_| stalled_download(addr, &big)).collect();
    // Let every one of them be answered until its socket is full (the kernel takes up to a few
    // MiB of each: on a busy machine that is seconds of work).
    wait_until_quiet(&server);
    let (threads, rss) = (server.threads(), server.rss_kib());

    let mut times = Vec::new();
    for i in 0..20 {
        let ping = client.get(format!("{url}/ping")).basic_auth(USER, Some(PASSWORD));
        times.push(timed("authenticated ping", ping).0);
        let download = client.get(format!("{url}/images/{small}/file")).basic_auth(USER, Some(PASSWORD));
        let (took, body) = timed("small authenticated download", download);
        assert!(body == small_bytes, "download {i}: wrong bytes");
        times.push(took);
    }
    let slowest = times.iter().max().copied().unwrap_or_default();
    let upload_started = Instant::now();
    publish("during", &random_bytes(1 << 20));
    eprintln!(
        "with {STALLED} stalled downloads: threads {threads_before} -> {threads}, RSS {} -> {} MiB, \
         slowest authenticated request {slowest:?}, an upload {:?}",
        rss_before >> 10,
        rss >> 10,
        upload_started.elapsed()
    );
    assert!(threads < threads_before + 16, "a thread per stalled client: {threads_before} -> {threads}");
    assert!(rss < 300 << 10, "{} MiB held for {STALLED} stalled downloads", rss >> 10);

    // Past the timeout each stalled connection is reset, and what it held goes. The sockets
    // are watched for the reset without reading them (a read would let the download move
    // again); on a busy machine the last ones are filled, and so cut, seconds later.
    let deadline = Instant::now() + Duration::from_secs(STALL_TIMEOUT_SECS + 40);
    let mut open: Vec<&socket2::Socket> = stalled.iter().collect();
    while !open.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        open.retain(|socket| !matches!(socket.take_error(), Ok(Some(_))));
    }
    let still_open = open.len();
    drop(stalled);
    assert_eq!(still_open, 0, "stalled downloads still open {}s after the timeout", STALL_TIMEOUT_SECS + 40);
    let fds_after = server.open_fds();
    assert!(fds_after <= fds_before + 4, "descriptors: {fds_before} before, {fds_after} after");
    let rss_after = server.rss_kib();
    eprintln!("after the cut: RSS {} MiB, {fds_after} descriptors", rss_after >> 10);
    // The allocator keeps some of what it freed (50 to 110 MiB here), not what it held.
    assert!(rss_after < 160 << 10, "{} MiB still held after the cut", rss_after >> 10);
}
