//! Helpers shared by the agent's integration tests: a real `imgapi` server on 127.0.0.1 that
//! test images are published to, an agent on its own thread with a client for its API and its
//! CLI, and waiting for a condition.

use std::io::Write;
use std::path::{Path, PathBuf};

use agent::RunningAgent;
use imgapi::RunningServer;
use reqwest::blocking::Client;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};

pub use service_kit::testing::wait_until;

/// The bearer token of every test agent.
pub const TOKEN: &str = "test-token-0123456789";

pub fn compress(data: &[u8], compression: &str) -> Vec<u8> {
    match compression {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "bzip2" => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "xz" => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        _ => data.to_vec(),
    }
}

pub fn sha1_hex(b: &[u8]) -> String {
    hex::encode(Sha1::digest(b))
}

pub struct Imgapi {
    pub server: RunningServer,
    pub dir: tempfile::TempDir,
    pub client: Client,
}

impl Imgapi {
    pub fn start() -> Imgapi {
        Imgapi::start_with(json!({}))
    }

    /// A server with config keys `extra` on top of the test's (one user, admin/secret).
    pub fn start_with(extra: Value) -> Imgapi {
        let dir = tempfile::tempdir().unwrap();
        let mut config = json!({"datadir": dir.path().join("data"), "port": 0, "host": "127.0.0.1", "log_level": "warn",
                                "userdb": [{"name": "admin", "password": "secret"}]});
        if let (Some(config), Value::Object(extra)) = (config.as_object_mut(), extra) {
            config.extend(extra);
        }
        let config =
            imgapi::config::Config::from_json(&config.to_string(), Path::new("t"), Path::new("")).unwrap();
        Imgapi { server: imgapi::start(config).unwrap(), dir, client: Client::new() }
    }

    /// Create, upload and activate; returns the uuid.
    pub fn publish(&self, name: &str, file: &[u8], compression: &str, origin: Option<&str>) -> String {
        let mut body = json!({"name": name, "version": "1.0", "type": "zvol", "os": "linux",
                              "nic_driver": "virtio", "disk_driver": "virtio", "cpu_type": "host", "image_size": 8});
        if let Some(origin) = origin {
            body["origin"] = json!(origin);
        }
        self.publish_manifest(body, file, compression, None)
    }

    /// Create (`manifest`), upload and activate, every request in `channel` when given; the uuid.
    pub fn publish_manifest(
        &self,
        manifest: Value,
        file: &[u8],
        compression: &str,
        channel: Option<&str>,
    ) -> String {
        let url = self.server.url();
        let channel = channel.map(|c| format!("channel={c}&")).unwrap_or_default();
        let created: Value = self
            .client
            .post(format!("{url}/images?{channel}"))
            .basic_auth("admin", Some("secret"))
            .json(&manifest)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let uuid = created["uuid"].as_str().unwrap().to_string();
        let r = self
            .client
            .put(format!(
                "{url}/images/{uuid}/file?{channel}compression={compression}&sha1={}",
                sha1_hex(file)
            ))
            .basic_auth("admin", Some("secret"))
            .body(file.to_vec())
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = self
            .client
            .post(format!("{url}/images/{uuid}?{channel}action=activate"))
            .basic_auth("admin", Some("secret"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        uuid
    }
}

/// An agent on its own thread: `files` storage and QEMU under a temp directory, [`TOKEN`] as its
/// credentials. Dropping it stops the agent and kills the VMs it reports (they outlive the
/// agent by design, and a failed test must not leave guests running).
pub struct Agent {
    agent: Option<RunningAgent>,
    pub config: agent::config::Config,
    root: PathBuf,
    _owned: Option<tempfile::TempDir>,
    pub client: Client,
}

impl Agent {
    /// An agent with a temp directory of its own.
    pub fn start(sources: &[String]) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let mut agent = Agent::start_in(dir.path(), sources, |_| {});
        agent._owned = Some(dir);
        agent
    }

    /// An agent whose images, instances and run directory are under `dir`, on the test config
    /// changed by `customize` first.
    pub fn start_in(dir: &Path, sources: &[String], customize: impl FnOnce(&mut Value)) -> Agent {
        let mut config = json!({
            "listen": "127.0.0.1:0",
            "auth": {"tokens": [TOKEN]},
            "sources": sources,
            "storage": {"backend": "files", "dir": dir.join("images")},
            "instances": {"hypervisor": "qemu", "dir": dir.join("instances"), "run_dir": dir.join("run"),
                          "stop_timeout_secs": 30,
                          // The agent runs inside this test binary: QEMU needs the real one.
                          "qemu": {"accel": "tcg", "metadata_proxy": env!("CARGO_BIN_EXE_agent")}},
            "log_level": "warn",
        });
        customize(&mut config);
        let config = agent::config::Config::from_json(&config.to_string(), Path::new("t")).unwrap();
        let agent = agent::start(config.clone()).unwrap();
        Agent {
            agent: Some(agent),
            config,
            root: dir.to_owned(),
            _owned: None,
            client: Client::builder().timeout(None).build().unwrap(),
        }
    }

    /// Stops the agent (the VMs go on) and starts a new one on the same config.
    pub fn restart(&mut self) {
        drop(self.agent.take());
        self.agent = Some(agent::start(self.config.clone()).unwrap());
    }

    /// Where its images (`images/`), instances (`instances/`) and run files (`run/`) are.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        self.agent.as_ref().expect("the agent runs").url()
    }

    /// The URL of an API path (`/instances` -> `http://.../api/v1/instances`).
    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base())
    }

    /// An authenticated request; the status and the JSON body (`null` if none).
    pub fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.client.request(method, self.url(path)).bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    /// `POST /images {"uuid"}`: an import that waits.
    pub fn import(&self, uuid: &str) -> reqwest::blocking::Response {
        self.client.post(self.url("/images")).bearer_auth(TOKEN).json(&json!({"uuid": uuid})).send().unwrap()
    }

    /// Runs the agent CLI against this agent, as a user would.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        cli(&self.base(), Some(TOKEN), args)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.agent.is_none() {
            return;
        }
        let (_, list) = self.send(reqwest::Method::GET, "/instances", None);
        for pid in list.as_array().into_iter().flatten().filter_map(|i| i["pid"].as_u64()) {
            use agent::host::runner::{CommandRunner, HostRunner, Signal};
            let _ = HostRunner.signal(pid as u32, Signal::Kill);
        }
    }
}

/// Runs the agent CLI against the agent at `url`, with `token` if any (and nothing from the
/// environment).
pub fn cli(url: &str, token: Option<&str>, args: &[&str]) -> std::process::Output {
    #[allow(clippy::disallowed_methods)] // the test runs the agent binary as a user would
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_agent"));
    command.args(["--url", url]);
    if let Some(token) = token {
        command.args(["--token", token]);
    }
    command.args(args).env_remove("AGENT_TOKEN").env_remove("AGENT_URL").output().unwrap()
}
