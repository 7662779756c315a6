//! Provisioning: once placed, an instance is made on its host (its image imported there first
//! if the host lacks it, with the import's bytes as progress), then marked `created`; if the
//! host refuses, it is marked `failed` and reserves nothing. The replica doing it holds a
//! lease it renews; when a replica dies, another one's sweep takes the lease over and does
//! the same steps again, which are safe to repeat (an import of a present image is a no-op,
//! and a create with the instance's uuid finds it: 409 `InstanceExists`).

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::Row;
use uuid::Uuid;

use super::{InstanceError, Instances, Phase, Progress};
use crate::db::now_ms;
use crate::remote::HostTarget;

/// How long a lease lasts without renewal: a dead replica's creates wait this long at most.
pub const LEASE_MS: i64 = 30_000;

/// How often each replica looks for creates whose lease expired.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// How often a running import is looked at (and the lease renewed).
const POLL_EVERY: Duration = Duration::from_millis(500);

/// How long an unreachable host is retried before the create fails.
const UNREACHABLE_FOR: Duration = Duration::from_secs(60);

/// How long the agent's create (clone and boot) may take.
const CREATE_TIMEOUT: Duration = Duration::from_secs(300);

/// Why provisioning stopped without finishing.
enum Stop {
    /// The host refused: the instance fails with this message.
    Failed(String),
    /// Another replica holds the lease now, or the instance is gone.
    LeaseLost,
    /// cloudapi's own failure (the database): the lease runs out and a sweep retries.
    Internal(InstanceError),
}

impl From<InstanceError> for Stop {
    fn from(e: InstanceError) -> Self {
        Stop::Internal(e)
    }
}

impl From<sqlx::Error> for Stop {
    fn from(e: sqlx::Error) -> Self {
        Stop::Internal(e.into())
    }
}

impl Instances {
    /// Provisions `uuid` on a task of its own (this replica holds its lease).
    pub(super) fn spawn_provision(self: &Arc<Self>, uuid: Uuid) {
        let me = self.clone();
        actix_web::rt::spawn(async move { me.provision(uuid).await });
    }

    /// Every few seconds, takes over the creates whose lease expired (their replica died),
    /// and provisions them.
    pub fn start_sweeper(self: &Arc<Self>) {
        let me = self.clone();
        actix_web::rt::spawn(async move {
            loop {
                match me.claim_expired().await {
                    Ok(claimed) => {
                        for uuid in claimed {
                            tracing::info!(%uuid, "taking over an unfinished create");
                            me.spawn_provision(uuid);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(error = %service_kit::ErrorChain(&error), "cannot sweep unfinished creates")
                    }
                }
                actix_web::rt::time::sleep(SWEEP_EVERY).await;
            }
        });
    }

    async fn claim_expired(&self) -> Result<Vec<Uuid>, InstanceError> {
        let at = now_ms();
        let rows = sqlx::query("UPDATE instances SET lease_owner = $1, lease_until_ms = $2 WHERE phase = 'provisioning' AND lease_until_ms < $3 RETURNING uuid")
            .bind(&self.replica)
            .bind(at + LEASE_MS)
            .bind(at)
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(|row| super::parse_uuid(&row.try_get::<String, _>("uuid")?)).collect()
    }

    async fn provision(&self, uuid: Uuid) {
        match self.provision_steps(uuid).await {
            Ok(()) => tracing::info!(%uuid, "instance created on its host"),
            Err(Stop::LeaseLost) => tracing::info!(%uuid, "another replica provisions this instance now"),
            Err(Stop::Failed(message)) => {
                tracing::warn!(%uuid, %message, "instance failed");
                if let Err(error) = self.finish(uuid, Phase::Failed, "failed", Some(&message)).await {
                    tracing::error!(%uuid, error = %service_kit::ErrorChain(&error), "cannot record a failed create");
                }
            }
            Err(Stop::Internal(error)) => {
                tracing::error!(%uuid, error = %service_kit::ErrorChain(&error), "provisioning stopped: a sweep retries it once the lease runs out")
            }
        }
    }

    async fn provision_steps(&self, uuid: Uuid) -> Result<(), Stop> {
        let row =
            sqlx::query("SELECT host_id, image, request, phase, lease_owner FROM instances WHERE uuid = $1")
                .bind(uuid.to_string())
                .fetch_optional(&self.db.pool)
                .await?
                .ok_or(Stop::LeaseLost)?;
        let mine = row.try_get::<Option<String>, _>("lease_owner")?.as_deref() == Some(self.replica.as_str());
        if row.try_get::<String, _>("phase")? != Phase::Provisioning.as_str() || !mine {
            return Err(Stop::LeaseLost);
        }
        let host_id = super::parse_uuid(&row.try_get::<String, _>("host_id")?)?;
        let request: Value = serde_json::from_str(&row.try_get::<String, _>("request")?)
            .map_err(|_| InstanceError::Db(crate::db::DbError::Corrupt("instance request".into())))?;
        let target = match self.hosts.target(&host_id).await {
            Ok(target) => target,
            Err(crate::hosts::HostError::NotFound(_)) => {
                return Err(Stop::Failed("its host was removed from the fleet".into()))
            }
            Err(e) => return Err(Stop::Internal(e.into())),
        };
        if let Some(image) = row.try_get::<Option<String>, _>("image")? {
            self.import(uuid, &target, &image).await?;
        }
        self.renew(uuid, Some(&Progress { step: "creating".into(), ..Progress::default() })).await?;
        let answer = self
            .retrying(uuid, &target, || {
                self.remote
                    .request(&target, Method::POST, "/api/v1/instances")
                    .timeout(CREATE_TIMEOUT)
                    .json(&request)
            })
            .await?;
        let (status, body) = answer;
        let retried = status == StatusCode::CONFLICT && body["code"] == "InstanceExists";
        if status.is_success() || retried {
            self.finish(uuid, Phase::Created, "done", None).await?;
            if let Some(state) = body["state"].as_str() {
                self.note_state(&uuid, state).await?;
            }
            return Ok(());
        }
        Err(Stop::Failed(agent_message(status, &body)))
    }

    /// Imports `image` onto the host unless it has it, following the job's progress.
    async fn import(&self, uuid: Uuid, target: &HostTarget, image: &str) -> Result<(), Stop> {
        let path = format!("/api/v1/images/{image}");
        let (status, body) =
            self.retrying(uuid, target, || self.remote.request(target, Method::GET, &path)).await?;
        if status.is_success() {
            return Ok(());
        }
        if status != StatusCode::NOT_FOUND {
            return Err(Stop::Failed(agent_message(status, &body)));
        }
        let start = json!({"uuid": image, "wait": false});
        let (status, job) = self
            .retrying(uuid, target, || {
                self.remote.request(target, Method::POST, "/api/v1/images").json(&start)
            })
            .await?;
        match status {
            StatusCode::OK => return Ok(()),
            StatusCode::ACCEPTED => {}
            _ => return Err(Stop::Failed(agent_message(status, &job))),
        }
        let job_path = format!("/api/v1/jobs/{}", job["id"].as_str().unwrap_or_default());
        // What this replica has counted of the job's bytes. A replica taking a create over
        // joins the host's running job, and counts again what the one before it saw.
        let mut counted = 0;
        loop {
            let (status, job) =
                self.retrying(uuid, target, || self.remote.request(target, Method::GET, &job_path)).await?;
            if !status.is_success() {
                return Err(Stop::Failed(agent_message(status, &job)));
            }
            let progress = Progress {
                step: "importing".into(),
                downloaded: job["downloaded"].as_u64().unwrap_or(0),
                total: job["total"].as_u64(),
            };
            if progress.downloaded > counted {
                self.metrics.imported(progress.downloaded - counted);
                counted = progress.downloaded;
            }
            self.renew(uuid, Some(&progress)).await?;
            match job["state"].as_str() {
                Some("succeeded") => return Ok(()),
                Some("failed") => {
                    let message = job["error"]["message"].as_str().unwrap_or("the import failed");
                    return Err(Stop::Failed(format!("importing image {image}: {message}")));
                }
                _ => actix_web::rt::time::sleep(POLL_EVERY).await,
            }
        }
    }

    /// Sends a request to the host, again while it cannot be reached (renewing the lease),
    /// for [`UNREACHABLE_FOR`] at most.
    async fn retrying(
        &self,
        uuid: Uuid,
        target: &HostTarget,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<(StatusCode, Value), Stop> {
        let started = std::time::Instant::now();
        loop {
            match self.remote.answer(target, request()).await {
                Ok(answer) => return Ok((answer.status, answer.body)),
                Err(error) if started.elapsed() < UNREACHABLE_FOR => {
                    tracing::debug!(%uuid, error = %service_kit::ErrorChain(&error), "retrying");
                    self.renew(uuid, None).await?;
                    actix_web::rt::time::sleep(Duration::from_secs(1)).await;
                }
                Err(error) => return Err(Stop::Failed(format!("{}", service_kit::ErrorChain(&error)))),
            }
        }
    }

    /// Renews the lease, recording `progress` when given; `LeaseLost` if the lease is no
    /// longer this replica's.
    async fn renew(&self, uuid: Uuid, progress: Option<&Progress>) -> Result<(), Stop> {
        let at = now_ms();
        let progress = progress.map(|p| serde_json::to_string(p).expect("progress serialises"));
        let updated = sqlx::query("UPDATE instances SET lease_until_ms = $1, progress = COALESCE($2, progress), updated_ms = $3 WHERE uuid = $4 AND lease_owner = $5 AND phase = 'provisioning'")
            .bind(at + LEASE_MS)
            .bind(progress)
            .bind(at)
            .bind(uuid.to_string())
            .bind(&self.replica)
            .execute(&self.db.pool)
            .await?;
        if updated.rows_affected() == 0 {
            return Err(Stop::LeaseLost);
        }
        Ok(())
    }

    async fn finish(
        &self,
        uuid: Uuid,
        phase: Phase,
        step: &str,
        error: Option<&str>,
    ) -> Result<(), InstanceError> {
        let progress = Progress { step: step.into(), ..Progress::default() };
        let mut tx = self.db.pool.begin().await?;
        let Some((host, sizes, _)) = super::reservations::current(&mut tx, &uuid.to_string()).await? else {
            return Ok(());
        };
        let updated = sqlx::query("UPDATE instances SET phase = $1, progress = $2, error = $3, lease_owner = NULL, lease_until_ms = NULL, updated_ms = $4 WHERE uuid = $5 AND phase = 'provisioning' AND lease_owner = $6")
            .bind(phase.as_str())
            .bind(serde_json::to_string(&progress).expect("progress serialises"))
            .bind(error)
            .bind(now_ms())
            .bind(uuid.to_string())
            .bind(&self.replica)
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() == 1 {
            super::reservations::shift(&mut tx, &host, sizes, Some(Phase::Provisioning), Some(phase)).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// The agent's refusal in words: its code and message.
fn agent_message(status: StatusCode, body: &Value) -> String {
    match (body["code"].as_str(), body["message"].as_str()) {
        (Some(code), Some(message)) => format!("the host refused: {code}: {message}"),
        _ => format!("the host answered {status}"),
    }
}
