//! Publishing an instance's disk as a new image on an IMGAPI server (manifest, gzip file,
//! activation), so that an installed and configured guest becomes a golden image that any
//! host imports. The disk is read, compressed and uploaded as one stream (memory stays flat);
//! the SHA-1 of what was sent is checked against what the server stored before activating.

use std::io::{self, Read};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use sha1::{Digest, Sha1};

use crate::source::Source;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{0}")]
    Invalid(String),
    #[error("the image server {url} refused: {message}")]
    Refused { url: String, message: String },
    #[error("cannot reach the image server {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("reading the disk: {0}")]
    Disk(#[source] io::Error),
    #[error("the server stored sha1 {stored}, but {sent} was sent")]
    Mismatch { stored: String, sent: String },
}

/// What the new image is called and says about itself.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub name: String,
    pub version: String,
    /// `linux` (default), `bsd`, `windows`, `illumos`, `other`.
    pub os: Option<String>,
    pub description: Option<String>,
}

/// The manifest of the new image (`type: zvol`, a raw disk of `size_mib`).
pub fn manifest(info: &ImageInfo, size_mib: u64) -> Value {
    let mut manifest = json!({
        "name": info.name,
        "version": info.version,
        "type": "zvol",
        "os": info.os.as_deref().unwrap_or("linux"),
        "image_size": size_mib,
        "disk_driver": "virtio",
        "nic_driver": "virtio",
        "cpu_type": "host",
    });
    if let Some(description) = &info.description {
        manifest["description"] = json!(description);
    }
    manifest
}

/// Hashes what is read through it; the digest is shared, because the HTTP client owns the
/// reader until the upload ends.
struct Hashing<R> {
    inner: R,
    sha1: Arc<Mutex<Sha1>>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        service_kit::lock(&self.sha1).update(&buf[..n]);
        Ok(n)
    }
}

/// Creates, uploads (gzip of the raw disk at `disk`) and activates the image on `source`.
/// On any failure after the manifest exists, the half-made image is deleted again.
pub fn publish(source: &Source, info: &ImageInfo, disk: &Path, size_mib: u64) -> Result<Value, PublishError> {
    if info.name.is_empty() || info.version.is_empty() {
        return Err(PublishError::Invalid("an image needs a name and a version".into()));
    }
    let client = reqwest::blocking::Client::builder()
        .timeout(None)
        .connect_timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| unreachable(source, e))?;
    let created = send(
        source,
        source.blocking_request(&client, reqwest::Method::POST, "/images").json(&manifest(info, size_mib)),
    )?;
    let uuid = created["uuid"].as_str().unwrap_or_default().to_string();
    let result = upload_and_activate(source, &client, &uuid, disk);
    if result.is_err() {
        let path = format!("/images/{uuid}");
        if let Err(error) = source.blocking_request(&client, reqwest::Method::DELETE, &path).send() {
            tracing::warn!(%uuid, %error, "cannot delete the half-published image");
        }
    }
    result
}

fn upload_and_activate(
    source: &Source,
    client: &reqwest::blocking::Client,
    uuid: &str,
    disk: &Path,
) -> Result<Value, PublishError> {
    let raw = std::fs::File::open(disk).map_err(PublishError::Disk)?;
    // disk -> gzip -> HTTP body, compressed as the client reads, hashed on the way. Level 1:
    // disks are large and mostly compressible, and speed matters more here.
    let sha1 = Arc::new(Mutex::new(Sha1::new()));
    let body = Hashing {
        inner: flate2::read::GzEncoder::new(
            io::BufReader::with_capacity(1 << 20, raw),
            flate2::Compression::fast(),
        ),
        sha1: sha1.clone(),
    };
    let path = format!("/images/{uuid}/file?compression=gzip");
    let uploaded = send(
        source,
        source.blocking_request(client, reqwest::Method::PUT, &path).body(reqwest::blocking::Body::new(body)),
    );
    let sent = hex::encode(service_kit::lock(&sha1).clone().finalize());
    let uploaded = uploaded?;
    let stored = uploaded["files"][0]["sha1"].as_str().unwrap_or_default().to_string();
    if stored != sent {
        return Err(PublishError::Mismatch { stored, sent });
    }
    send(
        source,
        source.blocking_request(client, reqwest::Method::POST, &format!("/images/{uuid}?action=activate")),
    )
}

fn unreachable(source: &Source, error: impl std::fmt::Display) -> PublishError {
    PublishError::Unreachable { url: source.url.clone(), message: error.to_string() }
}

fn send(source: &Source, request: reqwest::blocking::RequestBuilder) -> Result<Value, PublishError> {
    let response = request.send().map_err(|e| unreachable(source, e))?;
    let status = response.status();
    let body: Value = response.json().unwrap_or(Value::Null);
    if status.is_success() {
        Ok(body)
    } else {
        let message = match (body["code"].as_str(), body["message"].as_str()) {
            (Some(code), Some(message)) => format!("{status} {code}: {message}"),
            _ => status.to_string(),
        };
        Err(PublishError::Refused { url: source.url.clone(), message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_is_a_valid_zvol_image() {
        let info =
            ImageInfo { name: "web".into(), version: "1".into(), os: None, description: Some("d".into()) };
        let m = manifest(&info, 20480);
        assert_eq!(m["type"], "zvol");
        assert_eq!(m["os"], "linux");
        assert_eq!(m["image_size"], 20480);
        assert_eq!(m["description"], "d");
        for key in ["disk_driver", "nic_driver", "cpu_type"] {
            assert!(m[key].is_string(), "{key}: imgapi requires it for zvol images");
        }
    }
}
