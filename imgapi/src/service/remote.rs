//! Copying images from another IMGAPI server: AdminImportImage with `?source=`, AddImageFile
//! with `?source=`, and the whole-image copy that mirrors and pull-through use (origins first,
//! manifest, file streamed through the upload pipeline with sha1 and size checked against the
//! source's manifest, then activation).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use uuid::Uuid;

use super::actions::FileUpload;
use super::{Caller, ImageError, Service};
use crate::manifest::Image;
use crate::store::upload::{StagedFile, UploadSink, Written};
use imgapi_client::{Client, ClientError, ClientOptions, FileEntry, Source};

/// Download attempts per file; later attempts resume where the last one broke.
const ATTEMPTS: u32 = 5;
/// Whether an import from a source keeps a manifest key: what AdminImportImage accepts,
/// without what the server manages itself (files, state, channels, icon).
fn imported_key(key: &str) -> bool {
    use super::create::{CREATE_KEYS, DROPPED_KEYS, IMPORT_KEYS, ZVOL_KEYS};
    (CREATE_KEYS.contains(&key) || IMPORT_KEYS.contains(&key) || ZVOL_KEYS.contains(&key))
        && !DROPPED_KEYS.contains(&key)
}

impl From<ClientError> for ImageError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Source(_) => ImageError::invalid_param(e.to_string(), "source", "Invalid"),
            other => ImageError::RemoteSource(service_kit::ErrorChain(&other).to_string()),
        }
    }
}

/// A client of the upstream at `url` (credentials and `?channel=` in the URL).
pub fn upstream(url: &str) -> Result<Client, ClientError> {
    let options = ClientOptions {
        user_agent: concat!("imgapi/", env!("CARGO_PKG_VERSION"), " (mirror)").into(),
        connect_timeout: Duration::from_secs(10),
        // A stalled upstream must not stall a copy forever; a large file at any sane speed
        // keeps sending within this.
        read_timeout: Duration::from_secs(60),
        ..ClientOptions::default()
    };
    Client::with_options(Source::parse(url)?, options)
}

/// The file entry of a source manifest.
fn remote_file(uuid: Uuid, manifest: &Value) -> Result<FileEntry, ImageError> {
    FileEntry::of_manifest(manifest)
        .map_err(|e| ImageError::RemoteSource(format!("the source's manifest of {uuid}: {e}")))
}

/// One gate per image being copied: a mirror sync and a pull-through (or two pulls) of the
/// same image take turns, and the second finds the image already there.
#[derive(Default)]
pub struct CopyGates(std::sync::Mutex<std::collections::HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>);

impl CopyGates {
    pub(crate) fn gate(&self, uuid: Uuid) -> Arc<tokio::sync::Mutex<()>> {
        service_kit::lock(&self.0).entry(uuid).or_default().clone()
    }

    pub(crate) fn release(&self, uuid: Uuid, gate: &Arc<tokio::sync::Mutex<()>>) {
        let mut gates = service_kit::lock(&self.0);
        // Only the last holder removes it (the map's and ours are the two references left).
        if Arc::strong_count(gate) <= 2 {
            gates.remove(&uuid);
        }
    }
}

/// Where a copy reports to a pull-through: the staged file's path once it exists, and how
/// much of it is written.
pub struct Watch {
    path: Option<tokio::sync::oneshot::Sender<PathBuf>>,
    written: tokio::sync::watch::Sender<Written>,
}

/// A pull-through copy in progress, which readers follow as it arrives.
pub struct Pull {
    /// The upstream's manifest (active, with its file's size and sha1).
    pub manifest: Value,
    pub size: u64,
    pub sha1: String,
    /// The file being written (it keeps its content when it is renamed into place).
    pub path: PathBuf,
    pub written: tokio::sync::watch::Receiver<Written>,
}

/// The operator identity background copies run as.
pub fn operator() -> Caller {
    Caller { user: Some("mirror".into()), ..Caller::default() }
}

impl Service {
    /// AdminImportImage from a source: the source's manifest becomes a local unactivated image
    /// (uuid and `published_at` kept); a missing origin is copied (whole) first.
    pub async fn import_from_source(
        &self,
        uuid: Uuid,
        source: &str,
        caller: &Caller,
    ) -> Result<Arc<Image>, ImageError> {
        if caller.account.is_some() {
            return Err(ImageError::OperatorOnly);
        }
        let upstream = upstream(source)?;
        if self.store.get(&uuid).is_some() {
            return Err(ImageError::UuidExists(uuid));
        }
        let manifest = upstream.get_image(uuid).await.map_err(|e| {
            ImageError::RemoteSource(format!(
                "Unable to get manifest for image {uuid}. Error from remote: {}",
                service_kit::ErrorChain(&e)
            ))
        })?;
        self.import_manifest(&upstream, uuid, manifest, caller).await
    }

    async fn import_manifest(
        &self,
        upstream: &Client,
        uuid: Uuid,
        manifest: Value,
        caller: &Caller,
    ) -> Result<Arc<Image>, ImageError> {
        if let Some(origin) =
            manifest.get("origin").and_then(Value::as_str).and_then(|o| Uuid::parse_str(o).ok())
        {
            if self.store.get(&origin).is_none() {
                tracing::info!(image = %uuid, %origin, source = %upstream.url(), "copying the origin first");
                Box::pin(self.copy_image(upstream, origin)).await?;
            }
        }
        let Value::Object(fields) = manifest else {
            return Err(ImageError::RemoteSource(format!(
                "the source's manifest of {uuid} is not an object"
            )));
        };
        let body: Map<String, Value> =
            fields.into_iter().filter(|(k, v)| imported_key(k) && !v.is_null()).collect();
        self.import_image(uuid, caller, Value::Object(body)).await
    }

    /// AddImageFile from a source: streams the source's file into the image, checked against
    /// the source manifest's sha1 and size; compression and `dataset_guid` come from it too.
    pub async fn add_file_from_source(
        &self,
        uuid: Uuid,
        source: &str,
        caller: &Caller,
    ) -> Result<Arc<Image>, ImageError> {
        let upstream = upstream(source)?;
        self.find_owned(&uuid, caller)?;
        let manifest = upstream.get_image(uuid).await?;
        self.copy_file(&upstream, uuid, &manifest, caller, None).await
    }

    async fn copy_file(
        &self,
        upstream: &Client,
        uuid: Uuid,
        manifest: &Value,
        caller: &Caller,
        watch: Option<&mut Watch>,
    ) -> Result<Arc<Image>, ImageError> {
        let remote = remote_file(uuid, manifest)?;
        let upload = FileUpload {
            compression: remote.compression,
            sha1: Some(remote.sha1.clone()),
            dataset_guid: remote.dataset_guid.clone(),
            content_length: Some(remote.size),
        };
        self.precheck_file(&uuid, caller, &upload)?;
        let staged = self.download(upstream, uuid, remote.size, watch).await?;
        self.commit_file(&uuid, caller, upload, staged).await
    }

    /// Streams the source's file into a staged upload (never whole in memory), resuming with
    /// a Range request when the connection breaks, with a growing pause between attempts.
    async fn download(
        &self,
        upstream: &Client,
        uuid: Uuid,
        size: u64,
        watch: Option<&mut Watch>,
    ) -> Result<StagedFile, ImageError> {
        let temp = self.store.stage(&uuid).await?;
        let written = watch.map(|watch| {
            if let Some(path) = watch.path.take() {
                let _ = path.send(temp.path().to_path_buf());
            }
            watch.written.clone()
        });
        let mut sink = UploadSink::start_watched(temp, self.max_file_size.min(size), written)
            .map_err(|e| ImageError::Store(crate::store::StoreError::from_io("start a download", e)))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.download_into(upstream, uuid, size, &mut sink).await {
                Ok(()) => break,
                Err(error @ ImageError::Download(_)) => {
                    sink.abort().await;
                    return Err(error);
                }
                Err(error) if attempt < ATTEMPTS => {
                    let pause = Duration::from_millis(200 << attempt);
                    tracing::warn!(image = %uuid, source = %upstream.url(), error = %service_kit::ErrorChain(&error), received = sink.received(),
                                   ?pause, "download broke; resuming");
                    tokio::time::sleep(pause).await;
                }
                Err(error) => {
                    sink.abort().await;
                    return Err(error);
                }
            }
        }
        sink.finish().await.map_err(|e| ImageError::Download(format!("image file of {uuid}: {e}")))
    }

    async fn download_into(
        &self,
        upstream: &Client,
        uuid: Uuid,
        size: u64,
        sink: &mut UploadSink,
    ) -> Result<(), ImageError> {
        let offset = sink.received();
        let mut download = upstream.get_file(uuid, offset).await?;
        if let Some(length) = download.length {
            if offset + length != size {
                return Err(ImageError::Download(format!(
                    "the source sends {} bytes for {uuid}, its manifest says {size}",
                    offset + length
                )));
            }
        }
        while let Some(chunk) = download.chunk().await? {
            if sink.received() + chunk.len() as u64 > size {
                return Err(ImageError::Download(format!(
                    "the source sends more than the {size} bytes its manifest says for {uuid}"
                )));
            }
            sink.write(&chunk)
                .await
                .map_err(|e| ImageError::Download(format!("image file of {uuid}: {e}")))?;
        }
        if sink.received() < size {
            return Err(ImageError::RemoteSource(format!(
                "the download of {uuid} ended after {} of {size} bytes",
                sink.received()
            )));
        }
        Ok(())
    }

    /// Copies a whole image from `upstream`: origins first, the manifest, the file, then
    /// activation. An image left unactivated by an interrupted copy is completed. Until it is
    /// activated, a copy is not listed and cannot be downloaded. Returns the image and whether
    /// this call copied it (false: it was already here).
    pub async fn copy_image(&self, upstream: &Client, uuid: Uuid) -> Result<(Arc<Image>, bool), ImageError> {
        let gate = self.copies.gate(uuid);
        let result = {
            let _turn = gate.lock().await;
            self.copy_image_locked(upstream, uuid, None).await
        };
        self.copies.release(uuid, &gate);
        result
    }

    async fn copy_image_locked(
        &self,
        upstream: &Client,
        uuid: Uuid,
        watch: Option<&mut Watch>,
    ) -> Result<(Arc<Image>, bool), ImageError> {
        if let Some(image) = self.store.get(&uuid).filter(|i| i.activated) {
            return Ok((image, false));
        }
        let caller = operator();
        let manifest = upstream.get_image(uuid).await?;
        if manifest.get("state").and_then(Value::as_str).is_some_and(|s| s != "active") {
            return Err(ImageError::RemoteSource(format!(
                "image {uuid} is not active on {}",
                upstream.url()
            )));
        }
        let local = match self.store.get(&uuid) {
            Some(image) if image.activated => return Ok((image, false)),
            Some(image) => image,
            None => self.import_manifest(upstream, uuid, manifest.clone(), &caller).await?,
        };
        let remote = remote_file(uuid, &manifest)?;
        if local.file.as_ref().is_none_or(|f| f.sha1 != remote.sha1) {
            self.copy_file(upstream, uuid, &manifest, &caller, watch).await?;
        }
        let image = self.activate(&uuid, &caller).await?;
        tracing::info!(image = %uuid, source = %upstream.url(), "image copied");
        Ok((image, true))
    }

    /// Starts a pull-through copy of an image whose `manifest` an upstream just gave, on the
    /// current (actix) runtime, and returns once its file is being written, so that readers
    /// can follow it; `on_end` learns whether it was stored. `None`: nothing to follow (the
    /// image was complete here, or the copy ended before its file started).
    pub async fn start_pull(
        &self,
        upstream: Client,
        uuid: Uuid,
        manifest: Value,
        on_end: Box<dyn FnOnce(bool)>,
    ) -> Result<Option<Arc<Pull>>, ImageError> {
        let remote = remote_file(uuid, &manifest)?;
        let (written_tx, written) = tokio::sync::watch::channel(Written::Partial(0));
        let (path_tx, path_rx) = tokio::sync::oneshot::channel();
        let mut watch = Watch { path: Some(path_tx), written: written_tx.clone() };
        let service = self.clone();
        let (end_tx, end_rx) = tokio::sync::oneshot::channel();
        actix_web::rt::spawn(async move {
            let gate = service.copies.gate(uuid);
            let result = {
                let _turn = gate.lock().await;
                service.copy_image_locked(&upstream, uuid, Some(&mut watch)).await
            };
            service.copies.release(uuid, &gate);
            drop(watch);
            let stored = match &result {
                Ok(_) => true,
                Err(error) => {
                    tracing::warn!(image = %uuid, source = %upstream.url(), error = %service_kit::ErrorChain(&error), "pull-through copy failed");
                    false
                }
            };
            written_tx.send_replace(if stored { Written::Verified } else { Written::Failed });
            on_end(stored);
            let _ = end_tx.send(result.map(drop));
        });
        match path_rx.await {
            Ok(path) => {
                Ok(Some(Arc::new(Pull { manifest, size: remote.size, sha1: remote.sha1, path, written })))
            }
            // The copy ended without writing a file: done already, or failed.
            Err(_) => match end_rx.await {
                Ok(Ok(())) => Ok(None),
                Ok(Err(error)) => Err(error),
                Err(_) => Err(ImageError::RemoteSource(format!("the pull-through of {uuid} stopped"))),
            },
        }
    }
}
