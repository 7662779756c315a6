//! The README's "Zero to a running VM on Linux", run as written: the section's `sh` blocks in
//! order, in a temp directory, with the real `imgapi` and `agent` binaries, the test guest and
//! QEMU. Only ports, directories and the binaries' directory are changed, and the builds
//! skipped; each of those substitutions must still match the text, so an edit of the README
//! cannot dodge the test.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The README section this test runs.
const SECTION: &str = "## Zero to a running VM on Linux";

/// How long the whole walk-through may take (a TCG boot is most of it).
const LIMIT: Duration = Duration::from_secs(300);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The bodies of the page's ```sh blocks, in order.
fn sh_blocks(page: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in page.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// Ends the QEMU processes whose command line names `dir` (only this test's guests do).
fn kill_guests_under(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            use agent::host::runner::{CommandRunner, HostRunner, Signal};
            let _ = HostRunner.signal(pid, Signal::Kill);
        }
    }
}

#[test]
fn the_linux_walkthrough_runs_as_written() {
    let Some(guest) = crate::instances_qemu::guest_dir() else { return };
    let bin = Path::new(env!("CARGO_BIN_EXE_agent")).parent().unwrap().to_path_buf();
    if !bin.join("imgapi").exists() {
        assert!(std::env::var_os("CI").is_none(), "no imgapi binary beside {}", bin.display());
        eprintln!("skipping: no imgapi binary in {} (cargo build -p imgapi)", bin.display());
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let readme = std::fs::read_to_string(repo.join("README.md")).unwrap();
    let start = readme.find(SECTION).expect("the README has the walk-through");
    let page = &readme[start..];
    let page = &page[..page[SECTION.len()..].find("\n## ").map_or(page.len(), |end| end + SECTION.len())];
    let work = tempfile::tempdir().unwrap();
    let (imgapi_port, agent_port) = (free_port(), free_port());
    let at = |p: &str| work.path().join(p).to_string_lossy().into_owned();
    let substitutions: Vec<(&str, String)> = vec![
        ("cargo build --release -p imgapi -p agent", ": the test build made them".into()),
        ("bash agent/tests/guest/build-test-image.sh", "test -d".into()),
        ("target/release/", format!("{}/", bin.display())),
        ("127.0.0.1:8080", format!("127.0.0.1:{imgapi_port}")),
        ("127.0.0.1:9090", format!("127.0.0.1:{agent_port}")),
        ("/var/lib/agent", at("lib")),
        ("/var/run/agent", at("run")),
        ("/var/tmp/agent-test-guest", guest.to_string_lossy().into_owned()),
    ];
    let mut script = String::from(
        "set -euxo pipefail\n\
         # The servers the page starts in the background end with the script.\n\
         trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n",
    );
    let blocks = sh_blocks(page);
    assert!(blocks.len() >= 5, "{} sh blocks", blocks.len());
    let mut body = blocks.join("\n");
    for (from, to) in &substitutions {
        assert!(
            body.contains(from),
            "the README's walk-through no longer has {from:?}: update the test's substitutions"
        );
        body = body.replace(from, to);
    }
    script.push_str(&body);
    std::fs::write(work.path().join("walkthrough.sh"), &script).unwrap();
    // The image server's example config, where the page runs it, on the test's port.
    let example = std::fs::read_to_string(repo.join("config.example.json")).unwrap();
    assert!(example.contains("\"port\": 8080"), "{example}");
    std::fs::write(
        work.path().join("config.example.json"),
        example.replace("\"port\": 8080", &format!("\"port\": {imgapi_port}")),
    )
    .unwrap();

    #[allow(clippy::disallowed_methods)] // the test runs the page's commands as a user would
    let mut child = Command::new("/bin/bash")
        .arg("walkthrough.sh")
        .current_dir(work.path())
        .env_remove("AGENT_TOKEN")
        // The CLI's default is the page's port, 9090: it is told the test's.
        .env("AGENT_URL", format!("http://127.0.0.1:{agent_port}"))
        .env_remove("AGENT_USER")
        .env("NO_PROXY", "127.0.0.1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let (stdout, stderr) = (read(Box::new(stdout)), read(Box::new(stderr)));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > LIMIT {
            // SIGTERM: the script's trap ends the servers it started.
            #[allow(clippy::disallowed_methods)]
            let _ = Command::new("/bin/kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    kill_guests_under(work.path());
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    let took = started.elapsed();
    assert!(
        status.is_some_and(|s| s.success()),
        "after {took:?}, {status:?}\n{stdout}\n--- stderr ---\n{stderr}"
    );
    for line in [
        "Imported test-guest 1.0",
        "Created instance",
        "GUEST-BOOT-OK",
        "Stopped instance",
        "Destroyed instance",
    ] {
        assert!(stdout.contains(line), "{line:?} not printed:\n{stdout}\n--- stderr ---\n{stderr}");
    }
    eprintln!("the walk-through ran in {took:?}");
}
