//! Runs the `compat/` suite: real third-party clients against this server. The npm packages
//! come from `npm ci --prefix compat`, which `.ci/run` does.

use std::path::{Path, PathBuf};
use std::process::Command;

use imgapi::config::Config;

fn compat_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../compat")
}

fn run(command: &mut Command) {
    let output = command.output().expect("run the compat script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    let failed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("not ok")).collect();
    assert!(output.status.success() && failed.is_empty(), "compat checks failed: {failed:#?}\n{stderr}");
    assert!(stdout.lines().any(|l| l.ends_with(" 0 failed")), "no summary line in:\n{stdout}");
}

#[test]
fn sdc_clients_full_publish_cycle() {
    let modules = compat_dir().join("node_modules/sdc-clients");
    assert!(
        modules.exists(),
        "missing {}: run `npm ci --prefix compat` (bash .ci/run does it)",
        modules.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({
        "datadir": dir.path().join("data"), "port": 0, "host": "127.0.0.1", "log_level": "warn",
        "userdb": [{"name": "admin", "password": "secret"}],
    });
    let config = Config::from_json(&config.to_string(), Path::new("compat"), Path::new("")).unwrap();
    let server = imgapi::start(config).unwrap();
    run(Command::new("node").arg(compat_dir().join("sdc-clients-cycle.js")).args([
        server.url().as_str(),
        "admin",
        "secret",
    ]));
}

#[test]
fn go_server_readme_walkthrough_with_curl() {
    run(Command::new("bash")
        .arg(compat_dir().join("go-readme-walkthrough.sh"))
        .arg(env!("CARGO_BIN_EXE_imgapi")));
}
