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
        let server = RunningServer::start(config).expect("server starts");
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
