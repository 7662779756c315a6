//! Publishing an instance's disk as a new image on an IMGAPI server (manifest, gzip file,
//! activation), so that an installed and configured guest becomes a golden image that any
//! host imports. The disk is read and compressed on a thread of its own and streamed to the
//! server through a bounded queue (memory stays flat); the SHA-1 of what was sent is checked
//! against what the server stored before activating.

use std::io::{self, Read};
use std::path::Path;

use bytes::Bytes;
use imgapi_client::{Client, ClientError, Compression, FileUpload, Source};
use serde_json::{json, Value};
use sha1::{Digest, Sha1};
use uuid::Uuid;

use crate::error_code::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{0}")]
    Invalid(String),
    /// The image server refused or could not be reached (the message names it).
    #[error(transparent)]
    Server(#[from] ClientError),
    #[error("cannot read the disk")]
    Disk(#[source] io::Error),
    #[error("the server stored sha1 {stored}, but {sent} was sent")]
    Mismatch { stored: String, sent: String },
}

impl PublishError {
    pub fn code(&self) -> ErrorCode {
        match self {
            PublishError::Invalid(_) => ErrorCode::InvalidParameter,
            PublishError::Server(e) if crate::import::is_refusal(e) => ErrorCode::SourceUnauthorized,
            PublishError::Server(_) | PublishError::Mismatch { .. } => ErrorCode::PublishFailed,
            PublishError::Disk(_) => ErrorCode::InternalError,
        }
    }
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

/// Compressed blocks in flight between the compressing thread and the upload.
const QUEUE_DEPTH: usize = 4;
const BLOCK: usize = 1 << 20;

/// Creates, uploads (gzip of the raw disk at `disk`) and activates the image on `source`.
/// On any failure after the manifest exists, the half-made image is deleted again. Blocks for
/// as long as the upload takes, on a runtime (and connections) of its own.
pub fn publish(source: &Source, info: &ImageInfo, disk: &Path, size_mib: u64) -> Result<Value, PublishError> {
    if info.name.is_empty() || info.version.is_empty() {
        return Err(PublishError::Invalid("an image needs a name and a version".into()));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| PublishError::Disk(io::Error::other(format!("cannot start the upload runtime: {e}"))))?;
    runtime.block_on(async {
        let client = Client::new(source.clone())?;
        let created = client.create_image(&manifest(info, size_mib)).await?;
        let uuid = created["uuid"]
            .as_str()
            .and_then(|u| Uuid::parse_str(u).ok())
            .ok_or_else(|| ClientError::BadAnswer { url: client.url().into(), message: "CreateImage answered no uuid".into() })?;
        let result = upload_and_activate(&client, uuid, disk).await;
        if result.is_err() {
            if let Err(error) = client.delete_image(uuid).await {
                tracing::warn!(%uuid, error = %service_kit::ErrorChain(&error), "cannot delete the half-published image");
            }
        }
        result
    })
}

async fn upload_and_activate(client: &Client, uuid: Uuid, disk: &Path) -> Result<Value, PublishError> {
    let raw = std::fs::File::open(disk).map_err(PublishError::Disk)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(QUEUE_DEPTH);
    // disk -> gzip -> queue -> HTTP body, hashed on the way. Level 1: disks are large and mostly
    // compressible, and speed matters more here.
    let compressor = std::thread::Builder::new()
        .name("publish-gzip".into())
        .spawn(move || compress(raw, &tx))
        .map_err(PublishError::Disk)?;
    let body =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let upload = FileUpload { compression: Compression::Gzip, sha1: None, size: None, dataset_guid: None };
    let uploaded = client.add_file(uuid, &upload, reqwest::Body::wrap_stream(body)).await;
    let compressed = tokio::task::spawn_blocking(move || compressor.join())
        .await
        .map_err(|e| PublishError::Disk(io::Error::other(e.to_string())))?
        .map_err(|_| PublishError::Disk(io::Error::other("the compressing thread panicked")))?;
    // A disk that cannot be read is the cause when both failed; an upload that stopped, the
    // server's answer.
    let (sent, uploaded) = match (compressed, uploaded) {
        (Err(Compress::Read(e)), _) => return Err(PublishError::Disk(e)),
        (_, Err(e)) => return Err(e.into()),
        (Err(Compress::Stopped), Ok(_)) => {
            return Err(PublishError::Disk(io::Error::other("the upload ended before the disk was read")))
        }
        (Ok(sent), Ok(uploaded)) => (sent, uploaded),
    };
    let stored = uploaded["files"][0]["sha1"].as_str().unwrap_or_default().to_string();
    if stored != sent {
        return Err(PublishError::Mismatch { stored, sent });
    }
    Ok(client.activate_image(uuid).await?)
}

/// Why compressing stopped early.
enum Compress {
    Read(io::Error),
    /// The upload stopped taking blocks (the server refused, the connection broke).
    Stopped,
}

/// Reads the disk through gzip into the queue; the SHA-1 of what it sent.
fn compress(
    raw: std::fs::File,
    queue: &tokio::sync::mpsc::Sender<io::Result<Bytes>>,
) -> Result<String, Compress> {
    let mut gzip =
        flate2::read::GzEncoder::new(io::BufReader::with_capacity(BLOCK, raw), flate2::Compression::fast());
    let mut sha1 = Sha1::new();
    loop {
        let mut block = vec![0u8; BLOCK];
        let n = match service_kit::read_full(&mut gzip as &mut dyn Read, &mut block) {
            Ok(n) => n,
            Err(e) => {
                let _ = queue.blocking_send(Err(io::Error::new(e.kind(), e.to_string())));
                return Err(Compress::Read(e));
            }
        };
        if n == 0 {
            return Ok(hex::encode(sha1.finalize()));
        }
        block.truncate(n);
        sha1.update(&block);
        if queue.blocking_send(Ok(Bytes::from(block))).is_err() {
            return Err(Compress::Stopped);
        }
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
