//! Test harness: a real server on 127.0.0.1 (ephemeral port) over a temp data directory, and
//! a blocking HTTP client with helpers for the usual publish steps.

use std::path::Path;

use imgapi::config::Config;
use imgapi::RunningServer;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::Method;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};

pub const USER: &str = "admin";
pub const PASSWORD: &str = "secret";

pub struct Env {
    pub server: Option<RunningServer>,
    pub dir: tempfile::TempDir,
    pub client: Client,
    pub url: String,
    config: Value,
}

/// The config every test starts from; `extra` keys are merged over it.
fn base_config(datadir: &Path, extra: Value) -> Value {
    let mut config = json!({
        "datadir": datadir,
        "port": 0,
        "host": "127.0.0.1",
        "userdb": [{"name": USER, "password": PASSWORD}, {"name": "other", "password": "pw2"}],
        "log_level": "warn",
    });
    if let (Some(base), Value::Object(extra)) = (config.as_object_mut(), extra) {
        base.extend(extra);
    }
    config
}

impl Env {
    pub fn start() -> Env {
        Env::with(json!({}))
    }

    /// A server with config keys `extra` on top of the defaults.
    pub fn with(extra: Value) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = base_config(&dir.path().join("data"), extra);
        let mut env = Env {
            server: None,
            dir,
            client: Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
            url: String::new(),
            config,
        };
        env.restart();
        env
    }

    /// Stops the server (if running) and starts a new one on the same data directory.
    pub fn restart(&mut self) {
        self.server = None;
        let text = self.config.to_string();
        let config = Config::from_json(&text, Path::new("test"), Path::new("")).expect("test config");
        let server = imgapi::start(config).expect("server starts");
        self.url = server.url();
        self.server = Some(server);
    }

    pub fn datadir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{}", self.url, path))
    }

    /// An anonymous request.
    pub fn anon(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path)
    }

    /// A request with the admin's Basic credentials.
    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path).basic_auth(USER, Some(PASSWORD))
    }

    pub fn get_json(&self, path: &str) -> Value {
        expect_json(self.anon(Method::GET, path).send().unwrap(), 200)
    }

    /// CreateImage with `body`; panics unless it succeeds.
    pub fn create(&self, body: Value) -> Value {
        expect_json(self.admin(Method::POST, "/images").json(&body).send().unwrap(), 200)
    }

    /// AddImageFile with a correct sha1.
    pub fn upload(&self, uuid: &str, bytes: &[u8], compression: &str) -> Value {
        let path = format!("/images/{uuid}/file?compression={compression}&sha1={}", sha1_hex(bytes));
        expect_json(self.admin(Method::PUT, &path).body(bytes.to_vec()).send().unwrap(), 200)
    }

    pub fn action(&self, uuid: &str, action: &str) -> Value {
        expect_json(self.admin(Method::POST, &format!("/images/{uuid}?action={action}")).send().unwrap(), 200)
    }

    /// AddImageIcon with a (tiny, fake) PNG; panics unless it succeeds.
    pub fn put_icon(&self, uuid: &str, png: &'static str) -> Value {
        let request =
            self.admin(Method::PUT, &format!("/images/{uuid}/icon")).header("content-type", "image/png");
        expect_json(request.body(png).send().unwrap(), 200)
    }

    /// Create, upload and activate: returns the active manifest.
    pub fn publish(&self, body: Value, bytes: &[u8]) -> Value {
        let created = self.create(body);
        let uuid = created["uuid"].as_str().unwrap().to_string();
        self.upload(&uuid, bytes, "gzip");
        self.action(&uuid, "activate")
    }
}

/// A minimal valid CreateImage body.
pub fn manifest(name: &str) -> Value {
    json!({"name": name, "version": "1.0.0", "type": "zone-dataset", "os": "smartos"})
}

pub fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(Sha1::digest(bytes))
}

/// Asserts the status and returns the JSON body.
pub fn expect_json(response: Response, status: u16) -> Value {
    let got = response.status().as_u16();
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
    let text = response.text().unwrap();
    assert_eq!(got, status, "unexpected status; body: {text}");
    assert_eq!(content_type.as_deref(), Some("application/json"), "body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts an IMGAPI error: status and `code`; returns the body.
pub fn expect_error(response: Response, status: u16, code: &str) -> Value {
    let body = expect_json(response, status);
    assert_eq!(body["code"], code, "body: {body}");
    assert!(body["message"].is_string(), "body: {body}");
    body
}

pub fn uuid_of(manifest: &Value) -> String {
    manifest["uuid"].as_str().expect("manifest has a uuid").to_string()
}

/// The real `imgapi` binary as a child process on `config` (a JSON file), so that its open
/// file descriptors and memory can be read from `/proc` and a crash shows as an exit. Killed
/// (our own child, by its PID) when dropped.
pub struct ChildServer {
    pub child: std::process::Child,
    pub url: String,
}

impl ChildServer {
    pub fn start(config: &Path) -> ChildServer {
        ChildServer::start_binary(Path::new(env!("CARGO_BIN_EXE_imgapi")), config)
    }

    /// [`ChildServer::start`] with another build of the binary (the release one, say).
    pub fn start_binary(binary: &Path, config: &Path) -> ChildServer {
        use std::io::BufRead;
        let mut child = std::process::Command::new(binary)
            .args(["-s", "-c"])
            .arg(config)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start imgapi");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.trim().strip_prefix("imgapi listening on ").expect("listening line").to_string();
        ChildServer { child, url }
    }

    /// A config file in `dir` for a server on 127.0.0.1 over `dir/data`, `extra` keys merged.
    pub fn config_in(dir: &Path, extra: Value) -> std::path::PathBuf {
        let mut quiet = json!({"log_level": "error"});
        if let (Some(quiet), Value::Object(extra)) = (quiet.as_object_mut(), extra) {
            quiet.extend(extra);
        }
        let config = base_config(&dir.join("data"), quiet);
        let path = dir.join("config.json");
        std::fs::write(&path, config.to_string()).unwrap();
        path
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Still running (not crashed)?
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Number of open file descriptors.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).unwrap().count()
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_field("VmRSS:")
    }

    /// Threads of the server.
    pub fn threads(&self) -> u64 {
        self.status_field("Threads:")
    }

    fn status_field(&self, name: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/PID/status"))
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tmpfs of `size` (e.g. `"4m"`) mounted on a temp dir, unmounted when dropped. Mounting
/// needs root: `None` (the caller skips) where that is impossible, except under CI, where
/// disk-full tests must run.
pub struct Tmpfs {
    pub dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            assert!(std::env::var_os("CI").is_none(), "CI must be able to mount a tmpfs for this test");
            eprintln!("skipping: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(Tmpfs { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Every path under `dir`, relative, sorted.
pub fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if entry.file_type().unwrap().is_dir() {
            out.extend(walk(&entry.path()).into_iter().map(|inner| format!("{name}/{inner}")));
        }
        out.push(name);
    }
    out.sort();
    out
}
