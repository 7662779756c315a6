//! Importing images, as `imgadm import` does: find the manifest on the first source that has
//! it, import its origins first (from the same source, each once), then stream the file through
//! the verifying pipeline into storage. Every import is a job with progress; a second request
//! for an image being imported joins the running job instead of downloading again, and
//! different images import in parallel. An interrupted download resumes with a Range request.

pub mod pipeline;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use service_kit::{lock, ErrorChain};
use tokio::sync::watch;
use uuid::Uuid;

use imgapi_client::{Client, ClientError, FileEntry};

use crate::error_code::ErrorCode;
use crate::metrics::ImportCounters;
use crate::source::{SourceClient, SourceError};
use crate::storage::{ImageMeta, ImageStorage, LocalImage, StorageError};
use pipeline::{Expected, Pipeline, PipelineError, Progress};

/// Attempts to resume one download after the connection broke.
const RESUME_ATTEMPTS: u32 = 5;

/// Size of the blocks handed from the download to the pipeline threads.
const BLOCK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("manifest of {uuid} is unusable: {message}")]
    Manifest { uuid: Uuid, message: String },
    #[error("download of {uuid} from {source_url} failed: {message}")]
    Download { uuid: Uuid, source_url: String, message: String },
    #[error("image {uuid} failed verification")]
    Verification {
        uuid: Uuid,
        #[source]
        source: PipelineError,
    },
    #[error("cannot store image {uuid}")]
    Storage {
        uuid: Uuid,
        #[source]
        source: StorageError,
    },
    #[error("origin {origin} of image {uuid} could not be imported: {message}")]
    Origin { uuid: Uuid, origin: Uuid, message: String },
    #[error("the import task of {0} stopped unexpectedly")]
    Internal(Uuid),
}

impl ImportError {
    /// The code of API answers and failed jobs (and so of CLI exit codes).
    pub fn code(&self) -> ErrorCode {
        match self {
            ImportError::Source(SourceError::NotFound { .. } | SourceError::NotActive { .. }) => {
                ErrorCode::ImageNotFound
            }
            ImportError::Source(SourceError::NoSources) => ErrorCode::NoSources,
            ImportError::Source(SourceError::Client(e)) if is_refusal(e) => ErrorCode::SourceUnauthorized,
            ImportError::Source(_) | ImportError::Download { .. } => ErrorCode::SourceError,
            ImportError::Manifest { .. } => ErrorCode::InvalidManifest,
            ImportError::Verification { .. } => ErrorCode::VerificationFailed,
            ImportError::Storage { source, .. } => source.code(),
            ImportError::Internal(_) => ErrorCode::InternalError,
            ImportError::Origin { .. } => ErrorCode::OriginFailed,
        }
    }

    /// What a client is told: the whole chain, or for an internal failure, a curated message
    /// naming the job (whose log line has the chain).
    pub fn client_message(&self, job: Uuid) -> String {
        match self.code().internal_message() {
            Some(message) => format!("{message} (job {job}: the agent's log has the details)"),
            None => ErrorChain(self).to_string(),
        }
    }
}

/// Where an import job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobStatus {
    pub id: Uuid,
    pub image: Uuid,
    pub state: JobState,
    pub phase: &'static str,
    /// Compressed bytes received so far, and the file size when known.
    pub downloaded: u64,
    pub total: Option<u64>,
    /// Decompressed bytes written to storage.
    pub written: u64,
    pub error: Option<JobError>,
    pub started_at: String,
    pub finished_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobError {
    pub code: ErrorCode,
    pub message: String,
}

struct Job {
    id: Uuid,
    image: Uuid,
    /// The image's origin, once its manifest is known (deleting it is then refused).
    origin: Mutex<Option<Uuid>>,
    progress: Arc<Progress>,
    state: Mutex<JobInner>,
    done: watch::Sender<bool>,
}

struct JobInner {
    state: JobState,
    phase: &'static str,
    total: Option<u64>,
    result: Option<Result<LocalImage, Arc<ImportError>>>,
    started_at: String,
    finished_at: Option<String>,
}

impl Job {
    fn status(&self) -> JobStatus {
        let inner = lock(&self.state);
        JobStatus {
            id: self.id,
            image: self.image,
            state: inner.state,
            phase: inner.phase,
            downloaded: self.progress.downloaded.load(Ordering::Relaxed),
            total: inner.total,
            written: self.progress.written.load(Ordering::Relaxed),
            error: match &inner.result {
                Some(Err(e)) => Some(JobError { code: e.code(), message: e.client_message(self.id) }),
                _ => None,
            },
            started_at: inner.started_at.clone(),
            finished_at: inner.finished_at.clone(),
        }
    }

    fn set_phase(&self, phase: &'static str) {
        lock(&self.state).phase = phase;
    }
}

/// Runs and tracks imports.
pub struct Importer {
    sources: SourceClient,
    storage: Arc<dyn ImageStorage>,
    jobs: Mutex<Jobs>,
    metrics: ImportCounters,
}

#[derive(Default)]
struct Jobs {
    by_id: HashMap<Uuid, Arc<Job>>,
    /// The running job of each image being imported.
    running: HashMap<Uuid, Arc<Job>>,
}

/// Finished jobs kept for `GET /jobs` before the oldest are forgotten.
const KEEP_FINISHED: usize = 200;

impl Importer {
    pub fn new(sources: SourceClient, storage: Arc<dyn ImageStorage>, metrics: ImportCounters) -> Arc<Self> {
        Arc::new(Importer { sources, storage, jobs: Mutex::new(Jobs::default()), metrics })
    }

    pub fn sources(&self) -> &SourceClient {
        &self.sources
    }

    fn lock_jobs(&self) -> std::sync::MutexGuard<'_, Jobs> {
        lock(&self.jobs)
    }

    /// Starts importing `uuid` (or joins the import already running). `source` pins the
    /// source (origins come from their child's source); `None` searches them in order.
    pub fn start(self: &Arc<Self>, uuid: Uuid, source: Option<Client>) -> JobStatus {
        self.start_in_chain(uuid, source, Vec::new())
    }

    /// `chain`: the images whose import waits for this one (their origins' chain), to refuse a
    /// loop instead of waiting for itself forever.
    fn start_in_chain(self: &Arc<Self>, uuid: Uuid, source: Option<Client>, chain: Vec<Uuid>) -> JobStatus {
        let job = {
            let mut jobs = self.lock_jobs();
            if let Some(job) = jobs.running.get(&uuid) {
                return job.status();
            }
            let (done, _) = watch::channel(false);
            let job = Arc::new(Job {
                id: Uuid::new_v4(),
                image: uuid,
                origin: Mutex::new(None),
                progress: Arc::default(),
                state: Mutex::new(JobInner {
                    state: JobState::Running,
                    phase: "resolving",
                    total: None,
                    result: None,
                    started_at: now(),
                    finished_at: None,
                }),
                done,
            });
            jobs.running.insert(uuid, job.clone());
            jobs.by_id.insert(job.id, job.clone());
            job
        };
        let status = job.status();
        let importer = self.clone();
        tokio::spawn(async move {
            // The import runs in a task of its own so that even a panic in it ends the job
            // (as failed) instead of leaving it "running" for every later request to join.
            let work = {
                let (importer, job) = (importer.clone(), job.clone());
                tokio::spawn(async move { importer.run(&job, source, chain).await })
            };
            let result = match work.await {
                Ok(outcome) => outcome.map_err(Arc::new),
                Err(_) => Err(Arc::new(ImportError::Internal(job.image))),
            };
            if let Err(e) = &result {
                tracing::warn!(job = %job.id, image = %job.image, error = %ErrorChain(e.as_ref()), "import failed");
            }
            importer.finish(&job, result);
        });
        status
    }

    fn finish(&self, job: &Arc<Job>, result: Result<LocalImage, Arc<ImportError>>) {
        self.metrics.finished(result.is_ok());
        {
            let mut inner = lock(&job.state);
            inner.state = if result.is_ok() { JobState::Succeeded } else { JobState::Failed };
            inner.phase = "done";
            inner.result = Some(result);
            inner.finished_at = Some(now());
        }
        let mut jobs = self.lock_jobs();
        jobs.running.remove(&job.image);
        if jobs.by_id.len() > KEEP_FINISHED {
            let mut finished: Vec<(String, Uuid)> = jobs
                .by_id
                .values()
                .filter(|j| !jobs.running.contains_key(&j.image) || jobs.running[&j.image].id != j.id)
                .map(|j| (j.status().started_at, j.id))
                .collect();
            finished.sort();
            let excess = jobs.by_id.len() - KEEP_FINISHED;
            for (_, id) in finished.into_iter().take(excess) {
                jobs.by_id.remove(&id);
            }
        }
        drop(jobs);
        // send_replace stores the value even when nobody is subscribed yet.
        job.done.send_replace(true);
    }

    pub fn job(&self, id: &Uuid) -> Option<JobStatus> {
        self.lock_jobs().by_id.get(id).map(|j| j.status())
    }

    pub fn jobs(&self) -> Vec<JobStatus> {
        let mut all: Vec<JobStatus> = self.lock_jobs().by_id.values().map(|j| j.status()).collect();
        all.sort_by(|a, b| a.started_at.cmp(&b.started_at));
        all
    }

    /// Waits for a job to end and returns its outcome.
    pub async fn wait(&self, id: &Uuid) -> Option<Result<LocalImage, Arc<ImportError>>> {
        let job = self.lock_jobs().by_id.get(id).cloned()?;
        let mut done = job.done.subscribe();
        while !*done.borrow_and_update() && lock(&job.state).result.is_none() {
            if done.changed().await.is_err() {
                break;
            }
        }
        let inner = lock(&job.state);
        inner.result.clone()
    }

    /// Imports `uuid` and waits: the local image (at once if it is already here).
    pub async fn import(self: &Arc<Self>, uuid: Uuid) -> Result<LocalImage, Arc<ImportError>> {
        if let Some(image) = self.local(uuid).await.map_err(Arc::new)? {
            return Ok(image);
        }
        let job = self.start(uuid, None);
        self.wait(&job.id).await.unwrap_or_else(|| Err(Arc::new(ImportError::Internal(uuid))))
    }

    async fn local(&self, uuid: Uuid) -> Result<Option<LocalImage>, ImportError> {
        let storage = self.storage.clone();
        tokio::task::spawn_blocking(move || storage.get(&uuid))
            .await
            .map_err(|_| ImportError::Internal(uuid))?
            .map_err(|source| ImportError::Storage { uuid, source })
    }

    async fn run(
        self: &Arc<Self>,
        job: &Arc<Job>,
        source: Option<Client>,
        mut chain: Vec<Uuid>,
    ) -> Result<LocalImage, ImportError> {
        let uuid = job.image;
        if let Some(image) = self.local(uuid).await? {
            return Ok(image);
        }
        let (source, manifest) = match source {
            Some(source) => {
                let manifest = self.sources.origin(&source, &uuid).await?;
                (source, manifest)
            }
            None => self.sources.find(&uuid).await?,
        };
        let (meta, expected) = parse_manifest(&uuid, &manifest, &source)?;
        lock(&job.state).total = Some(expected.size);
        *lock(&job.origin) = meta.origin;
        if let Some(origin) = meta.origin {
            chain.push(uuid);
            if chain.contains(&origin) {
                return Err(ImportError::Manifest {
                    uuid,
                    message: format!("its origin chain loops through {origin}"),
                });
            }
            if self.local(origin).await?.is_none() {
                job.set_phase("importing-origin");
                let origin_job = self.start_in_chain(origin, Some(source.clone()), chain);
                match self.wait(&origin_job.id).await {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        return Err(ImportError::Origin {
                            uuid,
                            origin,
                            message: e.client_message(origin_job.id),
                        })
                    }
                    None => return Err(ImportError::Internal(uuid)),
                }
            }
        }
        job.set_phase("downloading");
        tracing::info!(image = %uuid, source = %source.url(), size = expected.size, "import started");
        let storage = self.storage.clone();
        let writer = tokio::task::spawn_blocking(move || storage.begin(meta))
            .await
            .map_err(|_| ImportError::Internal(uuid))?
            .map_err(|source| ImportError::Storage { uuid, source })?;
        let pipeline = Pipeline::start(expected.clone(), writer, job.progress.clone())
            .map_err(|e| ImportError::Storage { uuid, source: StorageError::io("start the import", e) })?;
        let mut pipeline = pipeline;
        if let Err(e) = self.download(&source, uuid, &expected, &mut pipeline).await {
            pipeline.abort().await;
            return Err(e);
        }
        job.set_phase("verifying");
        let image = pipeline.finish().await.map_err(|e| match e {
            PipelineError::Storage(source) => ImportError::Storage { uuid, source },
            other => ImportError::Verification { uuid, source: other },
        })?;
        tracing::info!(image = %uuid, location = %image.location, "import finished");
        Ok(image)
    }

    /// Streams the file into the pipeline, resuming with Range requests when the connection
    /// breaks. The caller then lets the pipeline verify and commit (or aborts it).
    async fn download(
        &self,
        client: &Client,
        uuid: Uuid,
        expected: &Expected,
        pipeline: &mut Pipeline,
    ) -> Result<(), ImportError> {
        let fail = |message: String| ImportError::Download { uuid, source_url: client.url().into(), message };
        let mut download = client.get_file(uuid, 0).await.map_err(SourceError::from)?;
        match download.length {
            Some(length) if length == expected.size => {}
            Some(length) => {
                return Err(ImportError::Verification {
                    uuid,
                    source: PipelineError::SizeMismatch { want: expected.size, got: length },
                })
            }
            // imgadm refuses a download without Content-Length too.
            None => return Err(fail("the source sent no Content-Length".into())),
        }
        let mut received = 0u64;
        let mut attempts = 0;
        // Network reads are small (kilobytes); hand the worker threads 1 MiB blocks, so that
        // each block costs one wake-up per thread instead of hundreds.
        let mut block = bytes::BytesMut::with_capacity(BLOCK);
        loop {
            let error = match download.chunk().await {
                Ok(Some(chunk)) => {
                    received += chunk.len() as u64;
                    self.metrics.downloaded(chunk.len() as u64);
                    block.extend_from_slice(&chunk);
                    if block.len() >= BLOCK && pipeline.push(block.split().freeze()).await.is_err() {
                        return Ok(()); // The pipeline failed; `finish` says why.
                    }
                    continue;
                }
                Ok(None) => {
                    if !block.is_empty() {
                        let _ = pipeline.push(block.freeze()).await;
                    }
                    return Ok(());
                }
                Err(error) => ErrorChain(&error).to_string(),
            };
            // The connection broke: resume from where it stopped, if the source allows it.
            let mut last_error = error;
            loop {
                attempts += 1;
                if received >= expected.size || attempts > RESUME_ATTEMPTS {
                    return Err(fail(format!("connection lost after {received} bytes: {last_error}")));
                }
                tracing::warn!(image = %uuid, received, attempt = attempts, error = %last_error, "download interrupted; resuming");
                tokio::time::sleep(Duration::from_millis(100 * 2u64.pow(attempts - 1))).await;
                match client.get_file(uuid, received).await {
                    // Nothing received yet: a plain answer of the right length is a fresh start.
                    Ok(fresh) if received == 0 && fresh.length == Some(expected.size) => {
                        download = fresh;
                        break;
                    }
                    Ok(resumed) => {
                        download = resumed;
                        break;
                    }
                    Err(ClientError::NoResume { .. }) => {
                        return Err(fail(format!(
                            "connection lost after {received} bytes and the source cannot resume"
                        )))
                    }
                    Err(e) if e.is_transient() => last_error = ErrorChain(&e).to_string(),
                    Err(other) => return Err(SourceError::from(other).into()),
                }
            }
        }
    }

    /// Deletes a local image (refused while something depends on it).
    pub async fn delete(&self, uuid: Uuid) -> Result<(), StorageError> {
        {
            let jobs = self.lock_jobs();
            let mut users: Vec<String> = Vec::new();
            for job in jobs.running.values() {
                if job.image == uuid {
                    users.push("its running import".into());
                } else if *lock(&job.origin) == Some(uuid) {
                    users.push(format!("the running import of {}", job.image));
                }
            }
            if !users.is_empty() {
                return Err(StorageError::InUse { uuid, users });
            }
        }
        let storage = self.storage.clone();
        tokio::task::spawn_blocking(move || storage.delete(&uuid))
            .await
            .unwrap_or_else(|e| Err(StorageError::io("delete", std::io::Error::other(e.to_string()))))
    }

    pub fn storage(&self) -> &Arc<dyn ImageStorage> {
        &self.storage
    }
}

/// Whether an IMGAPI server refused the credentials it was given (or asked for some).
pub fn is_refusal(error: &ClientError) -> bool {
    matches!(error.status(), Some(401 | 403))
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The parts of an IMGAPI manifest an import needs, checked.
fn parse_manifest(
    uuid: &Uuid,
    manifest: &Value,
    source: &Client,
) -> Result<(ImageMeta, Expected), ImportError> {
    let bad = |message: String| ImportError::Manifest { uuid: *uuid, message };
    let text = |key: &str| manifest.get(key).and_then(Value::as_str).map(str::to_owned);
    let file = FileEntry::of_manifest(manifest).map_err(|e| bad(e.to_string()))?;
    let origin = imgapi_client::origin_of(manifest).map_err(|e| bad(e.to_string()))?;
    let meta = ImageMeta {
        uuid: *uuid,
        name: text("name").ok_or_else(|| bad("name is missing".into()))?,
        version: text("version").ok_or_else(|| bad("version is missing".into()))?,
        os: text("os").unwrap_or_else(|| "other".into()),
        image_type: text("type").unwrap_or_else(|| "other".into()),
        origin,
        sha1: file.sha1.clone(),
        size: file.size,
        compression: file.compression.as_str().to_string(),
        image_size_mib: manifest.get("image_size").and_then(Value::as_u64),
        source: source.url().to_string(),
    };
    Ok((meta, Expected { size: file.size, sha1: file.sha1, compression: file.compression }))
}
