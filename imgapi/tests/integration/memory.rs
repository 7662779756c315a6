//! Memory stays flat whatever the file size: the server's peak RSS after streaming a large
//! upload and download through it grows by a few MiB at most, not by the file size.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use reqwest::blocking::{Body, Client};
use serde_json::{json, Value};
use sha1::{Digest, Sha1};

use crate::common::{manifest, PASSWORD, USER};

/// Generates `len` bytes of a repeating pattern without holding them.
struct Pattern {
    left: u64,
    hasher: Sha1,
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = (self.left as usize).wrapping_sub(i) as u8 ^ 0x5a;
        }
        self.hasher.update(&buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

/// Peak and current resident set size of a process, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (field("VmHWM:"), field("VmRSS:"))
}

#[test]
fn large_upload_and_download_keep_memory_flat() {
    let size: u64 =
        std::env::var("IMGAPI_MEMORY_TEST_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(512) << 20;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    let text = json!({"datadir": dir.path().join("data"), "port": 0, "host": "127.0.0.1", "log_level": "error",
                      "userdb": [{"name": USER, "password": PASSWORD}]});
    std::fs::write(&config, text.to_string()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_imgapi"))
        .args(["-s", "-c"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.trim().strip_prefix("imgapi listening on ").unwrap().to_string();
    let client = Client::builder().timeout(None).build().unwrap();

    let created: Value = client
        .post(format!("{base}/images"))
        .basic_auth(USER, Some(PASSWORD))
        .json(&manifest("big"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let uuid = created["uuid"].as_str().unwrap().to_string();
    // The baseline: a running server that has answered requests.
    let (warm_peak, _) = rss_kib(pid);

    let expected = {
        let mut probe = Pattern { left: size, hasher: Sha1::new() };
        std::io::copy(&mut probe, &mut std::io::sink()).unwrap();
        hex::encode(probe.hasher.finalize())
    };
    let pattern = Pattern { left: size, hasher: Sha1::new() };
    let response = client
        .put(format!("{base}/images/{uuid}/file?compression=none&sha1={expected}"))
        .basic_auth(USER, Some(PASSWORD))
        .body(Body::sized(pattern, size))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().unwrap());

    let mut download = client.get(format!("{base}/images/{uuid}/file")).send().unwrap();
    assert_eq!(download.content_length(), Some(size));
    let mut hasher = Sha1::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = download.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    assert_eq!(total, size);
    assert_eq!(hex::encode(hasher.finalize()), expected);

    let (peak, _) = rss_kib(pid);
    let _ = child.kill();
    let _ = child.wait();
    let growth_mib = (peak.saturating_sub(warm_peak)) as f64 / 1024.0;
    eprintln!("server peak RSS grew by {growth_mib:.1} MiB over a {} MiB upload + download", size >> 20);
    assert!(growth_mib < 48.0, "peak RSS grew by {growth_mib:.1} MiB for a {} MiB file", size >> 20);
}
