//! The CLI as a user meets it: every documented exit code (0-8 and 130) reached through the
//! binary against a real agent and image server, with the message each case prints; and a
//! Ctrl-C that leaves the request running on the agent. Nothing boots here (the QEMU suite
//! covers stop and reboot of a real guest).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

/// A 1 MiB raw disk (what is in it does not matter here).
fn disk() -> Vec<u8> {
    (0..1u32 << 20).map(|i| (i % 251) as u8).collect()
}

/// Runs the CLI with `env` and nothing else of the test's environment about the agent.
fn run(agent: &Agent, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    #[allow(clippy::disallowed_methods)] // the test runs the agent binary as a user would
    let mut command = Command::new(env!("CARGO_BIN_EXE_agent"));
    command.env_remove("AGENT_TOKEN").env_remove("AGENT_USER").env("AGENT_URL", agent.base());
    command.envs(env.iter().copied()).args(args).output().unwrap()
}

/// What the case is, its environment, its arguments, the exit code and what stderr must say.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<&'a str>, i32, &'a str);

#[test]
fn every_documented_exit_code_is_reached_with_a_message_that_says_why() {
    let imgapi = Imgapi::start();
    let other = Imgapi::start();
    let image = imgapi.publish("cli", &compress(&disk(), "gzip"), "gzip", None);
    // The second image server refuses the agent's credentials: publishing there is a 401.
    let agent = Agent::start(&[
        format!("http://admin:secret@{}", imgapi.server.addr),
        format!("http://admin:wrong@{}", other.server.addr),
    ]);
    // Asked for an image no source has, the agent above hears a 401 from the second server
    // (it cannot know the image is missing there): not found is asked of an agent with one source.
    let plain = Agent::start(&[imgapi.server.url()]);
    let plain_url = plain.base();
    let token = [("AGENT_TOKEN", TOKEN)];
    // A SmartOS zone's file system: it imports, but no VM can boot it.
    let zone = imgapi.publish_manifest(
        serde_json::json!({"name": "zone", "version": "1", "type": "zone-dataset", "os": "smartos"}),
        &compress(&disk(), "gzip"),
        "gzip",
        None,
    );
    for uuid in [&image, &zone] {
        let imported = run(&agent, &token, &["images", "import", uuid]);
        assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));
    }
    let created = run(&agent, &token, &["--json", "instances", "create", "--image", &image, "--no-start"]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let instance: Value = serde_json::from_slice(&created.stdout).unwrap();
    let instance = instance["uuid"].as_str().unwrap().to_string();
    let missing = "11111111-2222-4333-8444-555555555555";
    let iso = agent.dir().join("x.iso");
    std::fs::write(&iso, b"not really an iso").unwrap();
    let iso = iso.to_str().unwrap();
    let other_url = other.server.url();
    let zeros = "0".repeat(64);

    #[rustfmt::skip]
    let table: Vec<Case> = vec![
        ("a read", vec![], vec!["images", "list"], 0, ""),
        ("a refused parameter names the flag", token.to_vec(),
            vec!["instances", "create", "--image", &image, "--memory", "1"], 1, "--memory must be between"),
        ("an image no VM can boot", token.to_vec(), vec!["instances", "create", "--image", &zone], 1,
            "UnsupportedImage: image"),
        ("a bad uuid names the argument", vec![], vec!["images", "get", "nope"], 2, "<UUID>"),
        ("a bad image uuid names the flag", token.to_vec(), vec!["instances", "create", "--image", "x"], 2, "--image"),
        ("a user without a password", vec![("AGENT_USER", "admin")], vec!["images", "delete", &image], 2,
            "USER:PASSWORD; the password is missing"),
        ("an image not on this host", token.to_vec(), vec!["instances", "create", "--image", missing], 3,
            "ImageNotFound"),
        ("an image on no source", vec![("AGENT_TOKEN", TOKEN), ("AGENT_URL", &plain_url)],
            vec!["images", "import", missing], 3, "ImageNotFound"),
        ("a source that refuses the agent's credentials", token.to_vec(), vec!["images", "import", missing], 7,
            "SourceUnauthorized"),
        ("an unknown job", vec![], vec!["jobs", "get", missing], 3, "no job"),
        ("an image in use", token.to_vec(), vec!["images", "delete", &image], 4, "ImageInUse"),
        ("an ISO whose checksum differs", token.to_vec(), vec!["isos", "upload", iso, "--sha256", &zeros], 5,
            "ChecksumMismatch"),
        ("a source that cannot be reached", token.to_vec(), vec!["isos", "fetch", "http://127.0.0.1:9/x.iso"], 6,
            "fetching x.iso"),
        ("no credentials", vec![], vec!["images", "delete", &image], 7, "this call needs credentials"),
        ("a wrong token", vec![("AGENT_TOKEN", "wrong-token-0123456789")], vec!["images", "delete", &image], 7,
            "the token is not accepted"),
        ("a wrong password", vec![("AGENT_USER", "admin:wrong")], vec!["images", "delete", &image], 7,
            "the user name or the password is not accepted"),
        ("the image server refuses a publish", token.to_vec(),
            vec!["instances", "publish", &instance, "--name", "g", "--version", "1", "--to", &other_url], 7,
            "SourceUnauthorized"),
        ("no agent there", vec![("AGENT_URL", "http://127.0.0.1:9")], vec!["images", "list"], 8,
            "cannot reach the agent"),
    ];
    for (what, env, args, code, says) in table {
        let output = run(&agent, &env, &args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{what}: {args:?}: {stderr}");
        assert!(stderr.contains(says), "{what}: {args:?}: {stderr:?} does not say {says:?}");
        // One message, never a usage line that shows the token as required.
        assert!(!stderr.contains("--token <TOKEN>"), "{what}: {stderr}");
    }
}

/// Answers one request with headers and a first chunk, then stalls without closing until told
/// to end (or 30 s pass).
fn stalling_server() -> (String, std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/slow.iso", listener.local_addr().unwrap());
    let (end, ended) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 4096];
        let _ = stream.read(&mut request);
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10485760\r\n\r\n");
        let _ = stream.write_all(&[7u8; 65536]);
        let _ = ended.recv_timeout(Duration::from_secs(30));
    });
    (url, end, handle)
}

#[test]
fn a_ctrl_c_exits_130_and_says_the_agent_goes_on() {
    let agent = Agent::start(&[]);
    let (url, end, server) = stalling_server();
    #[allow(clippy::disallowed_methods)] // the test runs the agent binary as a user would
    let child = Command::new(env!("CARGO_BIN_EXE_agent"))
        .env("AGENT_URL", agent.base())
        .env("AGENT_TOKEN", TOKEN)
        .args(["isos", "fetch", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the agent is fetching, the CLI is waiting for it.
    wait_until("the fetch is under way", Duration::from_secs(20), || {
        let (_, fetches) = agent.send(reqwest::Method::GET, "/isos/fetches", None);
        match fetches[0]["bytes"].as_u64() {
            Some(bytes) if bytes > 0 => Ok(()),
            _ => Err(fetches.to_string()),
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    // A Ctrl-C, to the child this test started (it has not been waited for: the pid is its).
    #[allow(clippy::disallowed_methods)]
    let sent = Command::new("/bin/kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted; the fetch goes on on the agent"), "{stderr}");
    // And it does.
    let (_, fetches) = agent.send(reqwest::Method::GET, "/isos/fetches", None);
    assert_eq!(fetches[0]["state"], "running", "{fetches}");
    end.send(()).unwrap();
    server.join().unwrap();
}

#[test]
fn serve_says_what_cannot_work_once_and_without_colour() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.json");
    // No credentials, and a QEMU that is not there.
    std::fs::write(
        &config,
        serde_json::json!({"listen": "127.0.0.1:0", "storage": {"backend": "files", "dir": dir.path().join("images")},
                           "commands": {"qemu": "/nonexistent/qemu-system-x86_64"},
                           "instances": {"hypervisor": "qemu", "dir": dir.path().join("instances"),
                                         "run_dir": dir.path().join("run")}})
        .to_string(),
    )
    .unwrap();
    #[allow(clippy::disallowed_methods)] // the test runs the agent binary as an operator would
    let mut child = Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(["serve", "-c", config.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("agent listening on http://127.0.0.1:"), "{line}");
    // Only the child this test started.
    child.kill().unwrap();
    child.wait().unwrap();
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(!log.contains('\x1b'), "escapes in a piped log: {log:?}");
    let warned = |needle: &str| log.lines().any(|l| l.contains(" WARN ") && l.contains(needle));
    assert!(warned("auth has no tokens and no users"), "{log}");
    assert!(warned("commands.qemu: /nonexistent/qemu-system-x86_64 does not exist"), "{log}");

    // A bad config: one line that says it once.
    std::fs::write(&config, r#"{"storage": {"backend": "lvm"}}"#).unwrap();
    #[allow(clippy::disallowed_methods)]
    let output = Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(["serve", "-c", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!((stderr.lines().count(), stderr.matches("unknown variant `lvm`").count()), (1, 1), "{stderr}");
}

#[test]
fn a_job_started_without_waiting_is_followed_to_its_end() {
    let imgapi = Imgapi::start();
    let good = imgapi.publish("good", &compress(&disk(), "gzip"), "gzip", None);
    // A file damaged behind the server's back (one byte flipped): the job fails its sha1 check.
    let file = compress(&[disk(), vec![1]].concat(), "gzip");
    let bad = imgapi.publish("bad", &file, "gzip", None);
    let stored = imgapi.dir.path().join("data").join(&bad).join(format!("file.{}", sha1_hex(&file)));
    let mut damaged = std::fs::read(&stored).unwrap();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0xff;
    std::fs::write(&stored, damaged).unwrap();
    let agent = Agent::start(&[imgapi.server.url()]);
    let token = [("AGENT_TOKEN", TOKEN)];
    let job_of = |uuid: &str| {
        let started = run(&agent, &token, &["--json", "images", "import", uuid, "--no-wait"]);
        assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
        let job: Value = serde_json::from_slice(&started.stdout).unwrap();
        job["id"].as_str().unwrap().to_string()
    };

    let job = job_of(&good);
    let waited = run(&agent, &[], &["jobs", "wait", &job]);
    let printed = String::from_utf8_lossy(&waited.stdout);
    assert!(waited.status.success(), "{}", String::from_utf8_lossy(&waited.stderr));
    assert!(printed.contains(&format!("Imported good 1.0 ({good})")), "{printed}");
    let got = run(&agent, &[], &["jobs", "get", &job]);
    let got = String::from_utf8_lossy(&got.stdout);
    assert!(got.contains("succeeded") && got.contains(&good), "{got}");

    // A job that fails: `jobs wait` exits as the import would have (5: verification failed).
    let job = job_of(&bad);
    let waited = run(&agent, &[], &["jobs", "wait", &job]);
    let stderr = String::from_utf8_lossy(&waited.stderr);
    assert_eq!(waited.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("VerificationFailed"), "{stderr}");
    let listed = run(&agent, &[], &["jobs", "list"]);
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(table.contains(&job) && table.contains("failed") && table.contains("succeeded"), "{table}");
}
