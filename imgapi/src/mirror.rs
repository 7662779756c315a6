//! Mirrors of upstream IMGAPI servers: a thread per mirror keeps a local copy of every active
//! upstream image that matches its filter (each file streamed once, verified, and the image
//! activated only once complete), optionally follows upstream deletions, and backs off when
//! the upstream fails. Pull-through copies an image on first request, one download shared by
//! concurrent requests. `GET /mirrors` shows what each mirror did last.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use service_kit::lock;
use uuid::Uuid;

use crate::config::MirrorConfig;
use crate::manifest::Image;
use crate::service::remote::{operator, CopyGates, Pull};
use crate::service::{ImageError, Service};
use crate::store::upload::Written;
use imgapi_client::{redact, Client, ClientError};

/// The longest pause after failed syncs (the interval caps it too).
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// What a mirror did, for `GET /mirrors` and the log.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MirrorStatus {
    pub url: String,
    pub interval_secs: u64,
    pub pull_through: bool,
    pub follow_deletes: bool,
    /// `idle` or `syncing`.
    pub state: &'static str,
    /// The image being copied now.
    pub copying: Option<Uuid>,
    pub syncs: u64,
    pub last_started: Option<String>,
    pub last_finished: Option<String>,
    /// `ok`, `partial` (some images failed) or `error` (the upstream could not be listed).
    pub last_result: Option<&'static str>,
    pub last_error: Option<String>,
    /// Of the last sync: matching active images upstream, copied now, already here, failed,
    /// deleted (following the upstream).
    pub upstream_images: usize,
    pub copied: usize,
    pub present: usize,
    pub failed: usize,
    pub deleted: usize,
    pub consecutive_failures: u32,
    pub pulled_through: u64,
}

struct Mirror {
    config: MirrorConfig,
    upstream: Client,
    status: Mutex<MirrorStatus>,
    /// The uuids this mirror copied (to follow deletions of those only), persisted.
    state_file: PathBuf,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub struct Mirrors {
    mirrors: Vec<Arc<Mirror>>,
    /// Pull-through copies under way, which later requests join.
    pulls: Arc<Mutex<HashMap<Uuid, Arc<Pull>>>>,
    starts: CopyGates,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Mirrors {
    /// `datadir` holds each mirror's record of what it copied (`mirrors/<key>.json`).
    pub fn new(configs: &[MirrorConfig], datadir: &std::path::Path) -> Result<Self, ClientError> {
        let mut mirrors = Vec::new();
        for config in configs {
            let upstream = crate::service::remote::upstream(&config.url)?;
            let key = hex::encode(&sha1_of(config.url.as_bytes())[..8]);
            mirrors.push(Arc::new(Mirror {
                status: Mutex::new(MirrorStatus {
                    url: redact(&config.url),
                    interval_secs: config.interval_secs,
                    pull_through: config.pull_through,
                    follow_deletes: config.follow_deletes,
                    state: "idle",
                    ..MirrorStatus::default()
                }),
                config: config.clone(),
                upstream,
                state_file: datadir.join("mirrors").join(format!("{key}.json")),
            }));
        }
        let (stop, _) = tokio::sync::watch::channel(false);
        Ok(Mirrors { mirrors, pulls: Arc::default(), starts: CopyGates::default(), stop })
    }

    pub fn statuses(&self) -> Vec<MirrorStatus> {
        self.mirrors.iter().map(|m| lock(&m.status).clone()).collect()
    }

    pub fn has_pull_through(&self) -> bool {
        self.mirrors.iter().any(|m| m.config.pull_through)
    }

    /// Starts a sync thread per mirror with an interval; they end on [`Mirrors::stop`].
    pub fn start(&self, service: &Service) {
        for mirror in self.mirrors.iter().filter(|m| m.config.interval_secs > 0) {
            let mirror = mirror.clone();
            let service = service.clone();
            let stop = self.stop.subscribe();
            let spawned = std::thread::Builder::new().name("mirror".into()).spawn(move || {
                match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime.block_on(mirror.run(service, stop)),
                    Err(error) => tracing::error!(error = %service_kit::ErrorChain(&error), "cannot start a mirror runtime"),
                }
            });
            if let Err(error) = spawned {
                tracing::error!(error = %service_kit::ErrorChain(&error), "cannot start a mirror thread");
            }
        }
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Pull-through: asks each pull-through upstream for an image this server lacks and
    /// starts copying it from the first that has it and whose manifest the caller `may_see`.
    /// `None`: no upstream has one the caller may see (nothing is copied for a caller who
    /// would not be shown the result).
    pub async fn pull_through(
        &self,
        service: &Service,
        uuid: Uuid,
        may_see: &dyn Fn(&serde_json::Value) -> bool,
    ) -> Result<Option<Pulled>, ImageError> {
        if !self.has_pull_through() {
            return Ok(None);
        }
        // One start at a time per image: the second request finds the first one's pull.
        let gate = self.starts.gate(uuid);
        let result = {
            let _turn = gate.lock().await;
            self.pull(service, uuid, may_see).await
        };
        self.starts.release(uuid, &gate);
        result
    }

    /// The pull-through copy of `uuid` under way, if any.
    pub fn pull_under_way(&self, uuid: &Uuid) -> Option<Arc<Pull>> {
        lock(&self.pulls).get(uuid).filter(|p| matches!(*p.written.borrow(), Written::Partial(_))).cloned()
    }

    async fn pull(
        &self,
        service: &Service,
        uuid: Uuid,
        may_see: &dyn Fn(&serde_json::Value) -> bool,
    ) -> Result<Option<Pulled>, ImageError> {
        let under_way = lock(&self.pulls).get(&uuid).cloned();
        if let Some(pull) = under_way {
            if matches!(*pull.written.borrow(), Written::Partial(_)) {
                return Ok(Some(Pulled::Coming(pull)));
            }
            // Ended just as it was registered: forget it, the store knows the outcome.
            lock(&self.pulls).remove(&uuid);
        }
        // Already here: a sync or an earlier pull copied it.
        if let Some(image) = service.store.get(&uuid).filter(|i| i.activated) {
            return Ok(Some(Pulled::Here(image)));
        }
        let mut last_error = None;
        for mirror in self.mirrors.iter().filter(|m| m.config.pull_through) {
            let manifest = match mirror.upstream.get_image(uuid).await {
                Err(ClientError::NotFound { .. }) => continue,
                Err(error) => {
                    tracing::warn!(image = %uuid, upstream = %mirror.upstream.url(), error = %service_kit::ErrorChain(&error), "pull-through lookup failed");
                    last_error = Some(ImageError::from(error));
                    continue;
                }
                Ok(manifest) if may_see(&manifest) => manifest,
                Ok(_) => continue,
            };
            let (pulls, done_mirror) = (self.pulls.clone(), mirror.clone());
            let on_end = Box::new(move |stored: bool| {
                lock(&pulls).remove(&uuid);
                let mut status = lock(&done_mirror.status);
                status.copying = None;
                if stored {
                    status.pulled_through += 1;
                    drop(status);
                    // A small durable write: off the async workers.
                    tokio::task::spawn_blocking(move || done_mirror.remember(uuid));
                } else {
                    status.last_error = Some(format!("pull-through of {uuid} failed"));
                }
            });
            lock(&mirror.status).copying = Some(uuid);
            match service.start_pull(mirror.upstream.clone(), uuid, manifest, on_end).await {
                Ok(Some(pull)) => {
                    // Registered unless it already ended (then `on_end` ran first).
                    if !matches!(*pull.written.borrow(), Written::Verified | Written::Failed) {
                        lock(&self.pulls).insert(uuid, pull.clone());
                    }
                    tracing::info!(image = %uuid, upstream = %mirror.upstream.url(), "pulling through");
                    return Ok(Some(Pulled::Coming(pull)));
                }
                Ok(None) => match service.store.get(&uuid).filter(|i| i.activated) {
                    Some(image) => return Ok(Some(Pulled::Here(image))),
                    None => continue,
                },
                Err(error) => last_error = Some(error),
            }
        }
        match last_error {
            Some(error) => Err(error),
            None => Ok(None),
        }
    }
}

/// What a pull-through found.
pub enum Pulled {
    /// The image is here (now).
    Here(Arc<Image>),
    /// Its copy is under way: follow it.
    Coming(Arc<Pull>),
}

/// How long a mirror waits before its next sync: the interval after a good one; after
/// `failures` failed ones in a row 5 s, 10 s, 20 s..., never more than the interval or
/// [`MAX_BACKOFF`].
fn next_pause(ok: bool, failures: u32, interval: Duration) -> Duration {
    if ok {
        interval
    } else {
        Duration::from_secs(5 << failures.saturating_sub(1).min(7)).min(interval).min(MAX_BACKOFF)
    }
}

fn sha1_of(bytes: &[u8]) -> Vec<u8> {
    use sha1::Digest;
    sha1::Sha1::digest(bytes).to_vec()
}

impl Mirror {
    async fn run(self: Arc<Self>, service: Service, mut stop: tokio::sync::watch::Receiver<bool>) {
        let interval = Duration::from_secs(self.config.interval_secs);
        loop {
            let ok = self.sync(&service).await;
            let failures = lock(&self.status).consecutive_failures;
            let pause = next_pause(ok, failures, interval);
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    fn copied(&self) -> BTreeSet<Uuid> {
        std::fs::read(&self.state_file)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    fn save_copied(&self, copied: &BTreeSet<Uuid>) {
        let bytes = serde_json::to_vec(copied).unwrap_or_default();
        let written =
            self.state_file.parent().ok_or_else(|| std::io::Error::other("no parent")).and_then(|dir| {
                std::fs::create_dir_all(dir)?;
                let name = self.state_file.file_name().and_then(|n| n.to_str()).unwrap_or("mirror.json");
                crate::store::disk::write_file(&dir.join(name), &bytes)
            });
        if let Err(error) = written {
            tracing::warn!(file = %self.state_file.display(), error = %service_kit::ErrorChain(&error), "cannot record mirrored images");
        }
    }

    /// [`Mirror::copied`], off the async workers.
    async fn load_copied(self: &Arc<Self>) -> BTreeSet<Uuid> {
        let mirror = self.clone();
        tokio::task::spawn_blocking(move || mirror.copied()).await.unwrap_or_default()
    }

    /// [`Mirror::save_copied`], off the async workers.
    async fn store_copied(self: &Arc<Self>, copied: &BTreeSet<Uuid>) {
        let (mirror, copied) = (self.clone(), copied.clone());
        let _ = tokio::task::spawn_blocking(move || mirror.save_copied(&copied)).await;
    }

    fn remember(&self, uuid: Uuid) {
        let mut copied = self.copied();
        if copied.insert(uuid) {
            self.save_copied(&copied);
        }
    }

    /// One pass: list, copy what is missing, follow deletions. Returns whether the upstream
    /// could be listed.
    async fn sync(self: &Arc<Self>, service: &Service) -> bool {
        {
            let mut status = lock(&self.status);
            status.state = "syncing";
            status.syncs += 1;
            status.last_started = Some(now());
        }
        let mut filters: Vec<(&str, &str)> =
            self.config.filter.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        filters.push(("state", "active"));
        let listed = match self.upstream.list_images(&filters).await {
            Ok(listed) => listed,
            Err(error) => {
                tracing::warn!(upstream = %self.upstream.url(), error = %service_kit::ErrorChain(&error), "mirror: cannot list the upstream");
                let mut status = lock(&self.status);
                status.state = "idle";
                status.last_finished = Some(now());
                status.last_result = Some("error");
                status.last_error = Some(error.to_string());
                status.consecutive_failures += 1;
                return false;
            }
        };
        let upstream: Vec<Uuid> = listed
            .iter()
            .filter_map(|m| m.get("uuid").and_then(serde_json::Value::as_str))
            .filter_map(|u| Uuid::parse_str(u).ok())
            .collect();
        let mut copied_set = self.load_copied().await;
        let (mut copied, mut present, mut failed, mut deleted) = (0, 0, 0, 0);
        let mut last_error = None;
        {
            // Progress of this sync, visible while it runs.
            let mut status = lock(&self.status);
            status.upstream_images = upstream.len();
            (status.copied, status.present, status.failed, status.deleted) = (0, 0, 0, 0);
        }
        for uuid in &upstream {
            if service.store.get(uuid).is_some_and(|i| i.activated) {
                present += 1;
                lock(&self.status).present = present;
                continue;
            }
            lock(&self.status).copying = Some(*uuid);
            match service.copy_image(&self.upstream, *uuid).await {
                Ok((_, false)) => present += 1,
                Ok((_, true)) => {
                    copied += 1;
                    copied_set.insert(*uuid);
                    self.store_copied(&copied_set).await;
                }
                Err(error) => {
                    failed += 1;
                    tracing::warn!(image = %uuid, upstream = %self.upstream.url(), error = %service_kit::ErrorChain(&error), "mirror: copy failed");
                    last_error = Some(format!("{uuid}: {error}"));
                }
            }
            let mut status = lock(&self.status);
            (status.copied, status.failed) = (copied, failed);
        }
        if self.config.follow_deletes {
            let listed: BTreeSet<Uuid> = upstream.iter().copied().collect();
            // Children before origins: a reverse-sorted pass per round until nothing moves.
            let gone: Vec<Uuid> = copied_set.difference(&listed).copied().collect();
            let mut remaining = gone;
            loop {
                let before = remaining.len();
                let mut next = Vec::new();
                for uuid in remaining {
                    if service.store.get(&uuid).is_none() {
                        copied_set.remove(&uuid);
                        continue;
                    }
                    match service.delete_image(&uuid, &operator(), true).await {
                        Ok(_) => {
                            deleted += 1;
                            copied_set.remove(&uuid);
                            tracing::info!(image = %uuid, upstream = %self.upstream.url(), "mirror: deleted, as upstream did");
                        }
                        Err(ImageError::HasDependents { .. }) => next.push(uuid),
                        Err(error) => {
                            tracing::warn!(image = %uuid, error = %service_kit::ErrorChain(&error), "mirror: cannot delete");
                            last_error = Some(format!("delete {uuid}: {error}"));
                        }
                    }
                }
                if next.is_empty() || next.len() == before {
                    break;
                }
                remaining = next;
            }
            self.store_copied(&copied_set).await;
        }
        let mut status = lock(&self.status);
        status.state = "idle";
        status.copying = None;
        status.last_finished = Some(now());
        status.upstream_images = upstream.len();
        status.copied = copied;
        status.present = present;
        status.failed = failed;
        status.deleted = deleted;
        status.last_result = Some(if failed == 0 && last_error.is_none() { "ok" } else { "partial" });
        status.last_error = last_error;
        status.consecutive_failures = if failed == 0 { 0 } else { status.consecutive_failures + 1 };
        tracing::info!(upstream = %self.upstream.url(), images = upstream.len(), copied, failed, deleted, "mirror sync done");
        failed == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_syncs_back_off_within_the_interval_and_the_cap() {
        let hour = Duration::from_secs(3600);
        let secs = |failures| next_pause(false, failures, hour).as_secs();
        assert_eq!([secs(1), secs(2), secs(3), secs(4)], [5, 10, 20, 40]);
        assert_eq!(secs(8), 600, "capped at MAX_BACKOFF");
        assert_eq!(secs(1000), 600);
        assert_eq!(
            next_pause(false, 5, Duration::from_secs(30)),
            Duration::from_secs(30),
            "and at the interval"
        );
        assert_eq!(next_pause(true, 3, hour), hour, "a good sync waits the interval");
    }
}
