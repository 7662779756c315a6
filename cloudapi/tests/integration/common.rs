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
fn new_postgres_database() -> String {
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
            "database": database,
            "auth": {"tokens": [TOKEN]},
            "join_tokens": [JOIN],
            "log_level": "warn",
        });
        if let (Some(base), Value::Object(extra)) = (config.as_object_mut(), extra) {
            base.extend(extra);
        }
        let config = cloudapi::config::Config::from_json(&config.to_string(), Path::new("test")).unwrap();
        let server = cloudapi::start(config).unwrap();
        Cloud { server, client: Client::new(), _dir: dir }
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
        let mut request = self.client.request(method, self.url(path));
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
}

/// A registration body for a host `name` on `url`.
pub fn registration(name: &str, url: &str) -> Value {
    json!({"name": name, "url": url, "hypervisor": "qemu", "tags": {"rack": "a"},
           "capacity": {"vcpus": 8, "memory_mib": 16384, "disk_free_mib": 100000}})
}
