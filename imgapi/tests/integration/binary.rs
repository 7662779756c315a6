//! The `imgapi` binary as an operator starts it: a bad config is said once, logs written to a
//! pipe carry no colour escapes, and the example credentials are warned about on loopback and
//! refused on an address other machines reach.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};

fn imgapi(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_imgapi")).args(args).env_remove("RUST_LOG").output().unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn a_bad_config_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    for (text, says) in [
        (r#"{"datadir": "d", "port": "x"}"#, "invalid type: string \"x\", expected u16"),
        (r#"{"datadir": "d", "prot": 1}"#, "unknown field `prot`"),
        ("{", "EOF while parsing an object"),
    ] {
        let path = write(dir.path(), "bad.json", text);
        let output = imgapi(&["--check-config", "-c", &path]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{text}: {stderr}");
        assert_eq!(stderr.matches(says).count(), 1, "{text}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{text}: {stderr}");
        assert!(stderr.starts_with(&format!("imgapi: invalid config file {path}")), "{stderr}");
        assert!(!stderr.contains("?:"), "no placeholder for an unknown key: {stderr}");
    }
}

#[test]
fn logs_to_a_pipe_have_no_colour_and_the_example_credentials_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "c.json",
        &format!(
            r#"{{"datadir": "{}", "port": 0, "host": "127.0.0.1", "log_level": "info",
                 "userdb": [{{"name": "admin", "password": "secret"}}]}}"#,
            dir.path().join("data").display()
        ),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_imgapi"))
        .args(["-s", "-c", &config])
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("imgapi listening on http://127.0.0.1:"), "{line}");
    // Only the child this test started.
    child.kill().unwrap();
    child.wait().unwrap();
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(log.contains(" INFO ") && log.contains("starting"), "{log}");
    assert!(!log.contains('\x1b'), "escapes in a piped log: {log:?}");
    let warning = log.lines().find(|l| l.contains("example user admin/secret")).unwrap_or_default();
    assert!(warning.contains(" WARN ") && warning.contains("127.0.0.1"), "{log}");
}

#[test]
fn the_example_credentials_are_refused_where_other_machines_reach_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "c.json",
        r#"{"datadir": "d", "port": 0, "listen": "0.0.0.0", "userdb": [{"name": "admin", "password": "secret"}]}"#,
    );
    let output = imgapi(&["-s", "-c", &config]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("allow_example_credentials"), "{stderr}");
    assert!(output.stdout.is_empty(), "nothing listened: {}", String::from_utf8_lossy(&output.stdout));
}
