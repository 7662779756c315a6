//! Test harness: a cloudapi on its own thread, with one user token and one join token, on a
//! SQLite file in a temp directory or on a database of its own in the PostgreSQL that
//! `CLOUDAPI_TEST_POSTGRES` names (an admin URL; `.ci/run` starts one with
//! `cloudapi/tests/postgres-setup.sh`). Each test runs on every backend there is.

use std::path::Path;

use reqwest::blocking::Client;
use serde_json::{json, Value};

pub const TOKEN: &str = "a-user-token-for-tests";
pub const JOIN: &str = "a-join-token-for-tests";

pub struct Cloud {
    pub server: cloudapi::RunningCloudApi,
    pub client: Client,
    /// Its database's URL.
    pub database: String,
    _dir: tempfile::TempDir,
}

/// Where a test's cloudapi keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// SQLite, and PostgreSQL when the environment names one (CI must).
pub fn backends() -> Vec<Backend> {
    match std::env::var_os("CLOUDAPI_TEST_POSTGRES") {
        Some(_) => vec![Backend::Sqlite, Backend::Postgres],
        None => {
            assert!(std::env::var_os("CI").is_none(), "CI must set CLOUDAPI_TEST_POSTGRES");
            vec![Backend::Sqlite]
        }
    }
}

/// A new, empty database in the test PostgreSQL; its URL.
pub fn new_postgres_database() -> String {
    let admin = std::env::var("CLOUDAPI_TEST_POSTGRES").expect("CLOUDAPI_TEST_POSTGRES");
    let name = format!("cloudapi_test_{}", uuid::Uuid::new_v4().simple());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&admin).await.expect("the test PostgreSQL answers");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
    });
    let base = admin.rsplit_once('/').map(|(base, _)| base).unwrap_or(&admin);
    format!("{base}/{name}")
}

impl Cloud {
    /// A cloudapi on `backend` with `extra` config keys over the test defaults.
    pub fn start(backend: Backend, extra: Value) -> Cloud {
        let dir = tempfile::tempdir().unwrap();
        let database = match backend {
            Backend::Sqlite => format!("sqlite://{}", dir.path().join("cloud.db").display()),
            Backend::Postgres => new_postgres_database(),
        };
        let mut config = json!({
            "listen": "127.0.0.1:0",
            "database": &database,
            "auth": {"tokens": [TOKEN]},
            "join_tokens": [JOIN],
            "log_level": "warn",
        });
        if let (Some(base), Value::Object(extra)) = (config.as_object_mut(), extra) {
            base.extend(extra);
        }
        static LOGS: std::sync::Once = std::sync::Once::new();
        // Errors go to stderr, with their causes: what a failed test needs to be understood.
        LOGS.call_once(|| service_kit::logging::init("error", service_kit::logging::Format::Text));
        let config = cloudapi::config::Config::from_json(&config.to_string(), Path::new("test")).unwrap();
        let server = cloudapi::start(config).unwrap();
        Cloud { server, client: Client::new(), database, _dir: dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.server.url())
    }

    /// A request with `bearer` (if any): the status and the JSON body (`null` if none).
    pub fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        send_to(&self.client, &self.server.url(), method, path, bearer, body)
    }
}

/// A request to the cloudapi at `base` with `bearer` (if any): the status and the JSON body
/// (`null` if none).
pub fn send_to(
    client: &Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client.request(method, format!("{base}/api/v1{path}"));
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

/// A registration body for a host `name` on `url`.
pub fn registration(name: &str, url: &str) -> Value {
    json!({"name": name, "url": url, "hypervisor": "qemu", "tags": {"rack": "a"},
           "capacity": {"vcpus": 8, "memory_mib": 16384, "disk_free_mib": 100000}})
}

pub use service_kit::testing::wait_until;

/// The token of the test agents' own users.
pub const AGENT_TOKEN: &str = "an-agent-token-for-tests";

/// An agent on its own thread that joins the fleet of a test's cloudapi.
pub struct HostAgent {
    agent: Option<agent::RunningAgent>,
    config: agent::config::Config,
    pub url: String,
    _dir: tempfile::TempDir,
}

/// An address of its own for the next test agent, as a host of its own has: one of
/// 127.0.0.2 to 127.0.0.254 in turn (Linux answers every 127/8 address on the loopback), and
/// a port nobody listens on there now (the agent must know it before it starts, to advertise
/// it).
fn host_address() -> std::net::SocketAddr {
    static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 253;
    let ip = std::net::Ipv4Addr::new(127, 0, 0, 2 + n);
    std::net::TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap()
}

impl HostAgent {
    /// An agent named `name` joining `cloud` (files storage, QEMU), its config changed by
    /// `customize` first.
    pub fn join(cloud: &Cloud, name: &str, customize: impl FnOnce(&mut Value)) -> HostAgent {
        HostAgent::join_url(&cloud.server.url(), name, customize)
    }

    /// As [`HostAgent::join`], for the cloudapi at `cloud_url`.
    pub fn join_url(cloud_url: &str, name: &str, customize: impl FnOnce(&mut Value)) -> HostAgent {
        let dir = tempfile::tempdir().unwrap();
        let address = host_address();
        let url = format!("http://{address}");
        let root = dir.path();
        let mut config = json!({
            "listen": address.to_string(),
            "auth": {"tokens": [AGENT_TOKEN]},
            "storage": {"backend": "files", "dir": root.join("images")},
            "instances": {"hypervisor": "qemu", "dir": root.join("instances"), "run_dir": root.join("run")},
            "cluster": {"url": cloud_url, "join_token": JOIN, "advertise_url": url,
                        "name": name, "heartbeat_secs": 1},
            "log_level": "warn",
        });
        customize(&mut config);
        let config = agent::config::Config::from_json(&config.to_string(), Path::new("agent")).unwrap();
        let agent = agent::start(config.clone()).unwrap();
        HostAgent { agent: Some(agent), config, url, _dir: dir }
    }

    /// Stops the agent and starts it again on the same config.
    pub fn restart(&mut self) {
        drop(self.agent.take());
        self.agent = Some(agent::start(self.config.clone()).unwrap());
    }

    /// Stops the agent (as a crash would, for cloudapi: it just goes silent).
    pub fn stop(&mut self) {
        drop(self.agent.take());
    }

    /// Starts the agent on its config without the `cluster` section: a lone agent on the same
    /// state, which changes things cloudapi cannot see. Stop it before `restart`.
    pub fn start_alone(&mut self) {
        let mut alone = self.config.clone();
        alone.cluster = None;
        self.agent = Some(agent::start(alone).unwrap());
    }

    /// A call to the agent's own API with its own token: status and JSON body.
    pub fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request =
            Client::new().request(method, format!("{}/api/v1{path}", self.url)).bearer_auth(AGENT_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().unwrap();
        (response.status().as_u16(), response.json().unwrap_or(Value::Null))
    }

    pub fn identity_file(&self) -> std::path::PathBuf {
        self.config.cluster_identity_file()
    }

    /// The identity the agent keeps (waiting for it to be written).
    pub fn identity(&self) -> Value {
        wait_until("the identity file", std::time::Duration::from_secs(10), || {
            let text = std::fs::read(self.identity_file()).map_err(|e| e.to_string())?;
            serde_json::from_slice(&text).map_err(|e| e.to_string())
        })
    }
}

impl Cloud {
    /// The hosts cloudapi lists.
    pub fn hosts(&self) -> Vec<Value> {
        let (status, list) = self.send(reqwest::Method::GET, "/hosts", None, None);
        assert_eq!(status, 200, "{list}");
        list.as_array().cloned().unwrap_or_default()
    }

    /// Waits until host `name` is listed in a state `check` accepts; that host.
    pub fn wait_for_host(&self, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        wait_until(what, std::time::Duration::from_secs(20), || {
            let hosts = self.hosts();
            let host = hosts.iter().find(|h| h["name"] == name);
            match host {
                Some(host) if check(host) => Ok(host.clone()),
                _ => Err(serde_json::to_string_pretty(&hosts).unwrap()),
            }
        })
    }
}

/// An image server on its own thread, with images published through the IMGAPI client.
pub struct ImageServer {
    pub server: imgapi::RunningServer,
    _dir: tempfile::TempDir,
}

impl ImageServer {
    pub fn start() -> ImageServer {
        let dir = tempfile::tempdir().unwrap();
        let config = json!({"datadir": dir.path().join("data"), "port": 0, "host": "127.0.0.1",
                            "log_level": "warn", "userdb": [{"name": "admin", "password": "secret"}]});
        let config =
            imgapi::config::Config::from_json(&config.to_string(), Path::new("t"), Path::new("")).unwrap();
        ImageServer { server: imgapi::start(config).unwrap(), _dir: dir }
    }

    /// Publishes a `zvol` image of `bytes` incompressible bytes (an `image_size` of 16 MiB);
    /// its uuid.
    pub fn publish(&self, name: &str, bytes: usize) -> String {
        let file: Vec<u8> = {
            // xorshift: incompressible, as real image files are, and quick.
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ bytes as u64;
            (0..bytes)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        };
        self.publish_file(name, file, 16)
    }

    /// Publishes `file` (uncompressed) as a `zvol` image of `image_size_mib`; its uuid.
    pub fn publish_file(&self, name: &str, file: Vec<u8>, image_size_mib: u64) -> String {
        let url = format!("http://admin:secret@{}", self.server.addr);
        let client = imgapi_client::Client::new(imgapi_client::Source::parse(&url).unwrap()).unwrap();
        let sha1 = {
            use sha1::Digest as _;
            hex::encode(sha1::Sha1::digest(&file))
        };
        let manifest = json!({"name": name, "version": "1.0", "type": "zvol", "os": "linux", "image_size": image_size_mib,
                              "nic_driver": "virtio", "disk_driver": "virtio", "cpu_type": "host"});
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let created = client.create_image(&manifest).await.unwrap();
            let uuid = uuid::Uuid::parse_str(created["uuid"].as_str().unwrap()).unwrap();
            let upload = imgapi_client::FileUpload {
                compression: imgapi_client::Compression::None,
                sha1: Some(sha1),
                size: Some(file.len() as u64),
                dataset_guid: None,
            };
            client.add_file(uuid, &upload, file.into()).await.unwrap();
            client.activate_image(uuid).await.unwrap();
            uuid.to_string()
        })
    }
}

impl Cloud {
    /// Waits until instance `id` is in phase `phase`; the instance.
    pub fn wait_for_phase(&self, id: &str, phase: &str) -> Value {
        wait_until(&format!("instance {id} to be {phase}"), std::time::Duration::from_secs(60), || {
            let (status, instance) = self.send(reqwest::Method::GET, &format!("/instances/{id}"), None, None);
            if status == 200 && instance["phase"] == phase {
                Ok(instance)
            } else {
                Err(format!("{status} {instance:#}"))
            }
        })
    }

    /// Creates an instance (`body` the API's) and waits until its host has it; the instance.
    pub fn create(&self, body: Value) -> Value {
        let (status, placed) = self.send(reqwest::Method::POST, "/instances", Some(TOKEN), Some(body));
        assert_eq!(status, 202, "{placed:#}");
        self.wait_for_phase(placed["uuid"].as_str().unwrap(), "created")
    }
}

/// The `agent` binary of this build (QEMU runs it as the metadata proxy; the CLI tests run
/// it): next to the test binary's `deps/` directory. `cargo test --workspace` builds it.
pub fn agent_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).expect("the test binary is in target/*/deps");
    let agent = dir.join("agent");
    assert!(agent.exists(), "{} is missing: cargo build -p agent --bin agent", agent.display());
    agent
}

/// The test guest's directory (`AGENT_TEST_GUEST`, see `agent/tests/guest/README.md`); `None`
/// skips the test, except in CI.
pub fn test_guest() -> Option<std::path::PathBuf> {
    match std::env::var_os("AGENT_TEST_GUEST") {
        Some(dir) => Some(dir.into()),
        None if std::env::var_os("CI").is_some() => panic!("AGENT_TEST_GUEST is not set in CI"),
        None => {
            eprintln!("skipping: AGENT_TEST_GUEST is not set");
            None
        }
    }
}

/// Checks that every host's reservation sums are those of its instances in the table: what
/// the instances not failed take in vCPUs and memory, and in disk those being created.
pub fn assert_reservations_match(database: &str) {
    use sqlx::Row;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(database).await.unwrap();
        let rows = sqlx::query(
            "SELECT h.name, h.reserved_vcpus, h.reserved_memory_mib, h.reserved_disk_mib, \
             CAST(COALESCE(SUM(CASE WHEN i.phase <> 'failed' THEN i.vcpus ELSE 0 END), 0) AS BIGINT) AS vcpus, \
             CAST(COALESCE(SUM(CASE WHEN i.phase <> 'failed' THEN i.memory_mib ELSE 0 END), 0) AS BIGINT) AS memory_mib, \
             CAST(COALESCE(SUM(CASE WHEN i.phase = 'provisioning' THEN i.disk_mib ELSE 0 END), 0) AS BIGINT) AS disk_mib \
             FROM hosts h LEFT JOIN instances i ON i.host_id = h.id \
             GROUP BY h.id, h.name, h.reserved_vcpus, h.reserved_memory_mib, h.reserved_disk_mib",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        for row in rows {
            let kept: (i64, i64, i64) = (
                row.get("reserved_vcpus"),
                row.get("reserved_memory_mib"),
                row.get("reserved_disk_mib"),
            );
            let summed: (i64, i64, i64) = (row.get("vcpus"), row.get("memory_mib"), row.get("disk_mib"));
            assert_eq!(kept, summed, "host {}: reservations kept vs summed", row.get::<String, _>("name"));
        }
        pool.close().await;
    });
}
