//! Test harness: a cloudapi on its own thread, on a SQLite file in a temp directory, with one
//! user token and one join token.

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

impl Cloud {
    /// A cloudapi with `extra` config keys over the test defaults.
    pub fn start(extra: Value) -> Cloud {
        let dir = tempfile::tempdir().unwrap();
        let mut config = json!({
            "listen": "127.0.0.1:0",
            "database": format!("sqlite://{}", dir.path().join("cloud.db").display()),
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
