//! Helpers shared by the agent's integration tests: a real `imgapi` server on 127.0.0.1 that
//! test images are published to.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

use imgapi::RunningServer;
use reqwest::blocking::Client;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};

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
        let dir = tempfile::tempdir().unwrap();
        let config = json!({"datadir": dir.path().join("data"), "port": 0, "host": "127.0.0.1", "log_level": "warn",
                            "userdb": [{"name": "admin", "password": "secret"}]});
        let config =
            imgapi::config::Config::from_json(&config.to_string(), Path::new("t"), Path::new("")).unwrap();
        Imgapi { server: RunningServer::start(config).unwrap(), dir, client: Client::new() }
    }

    /// Create, upload and activate; returns the uuid.
    pub fn publish(&self, name: &str, file: &[u8], compression: &str, origin: Option<&str>) -> String {
        let url = self.server.url();
        let mut body = json!({"name": name, "version": "1.0", "type": "zvol", "os": "linux",
                              "nic_driver": "virtio", "disk_driver": "virtio", "cpu_type": "host", "image_size": 8});
        if let Some(origin) = origin {
            body["origin"] = json!(origin);
        }
        let created: Value = self
            .client
            .post(format!("{url}/images"))
            .basic_auth("admin", Some("secret"))
            .json(&body)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let uuid = created["uuid"].as_str().unwrap().to_string();
        let r = self
            .client
            .put(format!("{url}/images/{uuid}/file?compression={compression}&sha1={}", sha1_hex(file)))
            .basic_auth("admin", Some("secret"))
            .body(file.to_vec())
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = self
            .client
            .post(format!("{url}/images/{uuid}?action=activate"))
            .basic_auth("admin", Some("secret"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        uuid
    }
}
