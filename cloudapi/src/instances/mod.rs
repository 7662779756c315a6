//! The fleet's instances: where each was placed and why, its reservation, its provisioning,
//! and what its host last reported of it. cloudapi's table is the truth of what it decided;
//! the hosts' heartbeats are the truth of what runs, and [`reconcile`] keeps the two together
//! (instances created or destroyed on a host while cloudapi could not see it are neither lost
//! nor duplicated).

mod create;
mod provision;
mod reconcile;
mod reservations;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sqlx::Row;
use uuid::Uuid;

use crate::catalogue::{Catalogue, CatalogueError};
use crate::db::{now_ms, Db, DbError};
use crate::error_code::ErrorCode;
use crate::hosts::{HostError, HostState, HostView, Hosts};
use crate::placement::{Decision, Policy};
use crate::remote::{Remote, RemoteError};

pub use create::{CreateOutcome, CreateRequest};
pub use reconcile::reconcile;

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("instance {0} does not exist")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    UnsupportedImage(String),
    #[error("no host can take this instance: {}", .0.join("; "))]
    NoCapacity(Vec<String>),
    #[error("host {0} sent no heartbeat for too long: its instances cannot be reached now")]
    HostUnavailable(String),
    #[error(transparent)]
    Catalogue(#[from] CatalogueError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for InstanceError {
    fn from(e: sqlx::Error) -> Self {
        InstanceError::Db(DbError::Query(e))
    }
}

impl InstanceError {
    pub fn code(&self) -> ErrorCode {
        match self {
            InstanceError::NotFound(_) => ErrorCode::InstanceNotFound,
            InstanceError::Exists(_) => ErrorCode::InstanceExists,
            InstanceError::Invalid(_) => ErrorCode::InvalidParameter,
            InstanceError::UnsupportedImage(_) => ErrorCode::UnsupportedImage,
            InstanceError::NoCapacity(_) => ErrorCode::NoCapacity,
            InstanceError::HostUnavailable(_) | InstanceError::Remote(_) => ErrorCode::HostUnavailable,
            InstanceError::Catalogue(CatalogueError::NotFound(_)) => ErrorCode::ImageNotFound,
            InstanceError::Catalogue(CatalogueError::Invalid { .. }) => ErrorCode::UnsupportedImage,
            InstanceError::Catalogue(CatalogueError::Source { .. }) => ErrorCode::SourceUnavailable,
            InstanceError::Host(e) => e.code(),
            InstanceError::Db(_) => ErrorCode::DatabaseError,
        }
    }
}

/// What cloudapi did with an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Placed; being created on its host.
    Provisioning,
    /// Its host has it.
    Created,
    /// Its host could not create it; it reserves nothing (delete it to free its alias).
    Failed,
}

impl Phase {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Phase::Provisioning => "provisioning",
            Phase::Created => "created",
            Phase::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Option<Phase> {
        Some(match text {
            "provisioning" => Phase::Provisioning,
            "created" => Phase::Created,
            "failed" => Phase::Failed,
            _ => return None,
        })
    }
}

/// Where provisioning is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Progress {
    /// `placed`, `importing` (the image onto the host), `creating`, `done` or `failed`.
    pub step: String,
    /// Compressed bytes of the image downloaded by the host so far, and in all.
    #[serde(default)]
    pub downloaded: u64,
    #[serde(default)]
    pub total: Option<u64>,
}

/// An instance as cloudapi shows it: the agent's fields where they overlap, and where it is.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InstanceView {
    pub uuid: Uuid,
    pub alias: String,
    /// The host's id, and its name.
    pub host: Uuid,
    pub host_name: String,
    /// `unknown`: the state is the last one the host reported.
    pub host_state: HostState,
    /// The host's word (`running`, `stopped`, `failed`...) once it has the instance;
    /// `provisioning` or `failed` before.
    pub state: String,
    pub phase: Phase,
    pub image: Option<Uuid>,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_mib: u64,
    pub progress: Progress,
    /// Why provisioning failed.
    pub error: Option<String>,
    /// Reported by a host, not created through cloudapi.
    pub adopted: bool,
    pub created_at: String,
    /// Why it went to its host (on `GET /instances/:id` and a create's answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<Decision>,
}

/// The instances service: shared by every handler, and by the provisioning tasks.
pub struct Instances {
    db: Db,
    hosts: Hosts,
    catalogue: Catalogue,
    remote: Remote,
    policy: Policy,
    /// This replica's name in leases.
    replica: String,
    metrics: crate::metrics::CreateCounters,
}

const COLUMNS: &str = "uuid, alias, host_id, phase, adopted, vcpus, memory_mib, disk_mib, image, placement, progress, error, state, state_ms, created_ms";

impl Instances {
    pub fn new(
        db: Db,
        hosts: Hosts,
        catalogue: Catalogue,
        policy: Policy,
        metrics: crate::metrics::CreateCounters,
    ) -> Arc<Instances> {
        Arc::new(Instances {
            db,
            hosts,
            catalogue,
            remote: Remote::new(),
            policy,
            replica: Uuid::new_v4().to_string(),
            metrics,
        })
    }

    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    /// Every instance (of host `host` only, if given).
    pub async fn list(&self, host: Option<Uuid>) -> Result<Vec<InstanceView>, InstanceError> {
        let rows = match host {
            Some(host) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM instances WHERE host_id = $1 ORDER BY created_ms, uuid"
                ))
                .bind(host.to_string())
                .fetch_all(&self.db.pool)
                .await?
            }
            None => {
                sqlx::query(&format!("SELECT {COLUMNS} FROM instances ORDER BY created_ms, uuid"))
                    .fetch_all(&self.db.pool)
                    .await?
            }
        };
        let hosts: BTreeMap<Uuid, HostView> =
            self.hosts.list().await?.into_iter().map(|h| (h.id, h)).collect();
        rows.iter().map(|row| view(row, &hosts, false)).collect()
    }

    /// One instance, by uuid or alias, with its placement decision.
    pub async fn get(&self, id: &str) -> Result<InstanceView, InstanceError> {
        let row = self.row(id).await?;
        let host: Uuid = parse_uuid(&row.try_get::<String, _>("host_id")?)?;
        let hosts: BTreeMap<Uuid, HostView> = match self.hosts.get(&host).await {
            Ok(view) => [(host, view)].into(),
            Err(HostError::NotFound(_)) => BTreeMap::new(),
            Err(e) => return Err(e.into()),
        };
        view(&row, &hosts, true)
    }

    async fn row(&self, id: &str) -> Result<sqlx::any::AnyRow, InstanceError> {
        let query = match Uuid::parse_str(id) {
            Ok(_) => format!("SELECT {COLUMNS} FROM instances WHERE uuid = $1"),
            Err(_) => format!("SELECT {COLUMNS} FROM instances WHERE alias = $1 AND adopted = 0"),
        };
        let key = Uuid::parse_str(id).map(|u| u.to_string()).unwrap_or_else(|_| id.to_string());
        sqlx::query(&query)
            .bind(key)
            .fetch_optional(&self.db.pool)
            .await?
            .ok_or_else(|| InstanceError::NotFound(id.to_string()))
    }

    /// The host of an instance, ready to be called: `HostUnavailable` when it is `unknown`.
    pub async fn owner(&self, id: &str) -> Result<(InstanceView, crate::remote::HostTarget), InstanceError> {
        let instance = self.get(id).await?;
        if instance.host_state == HostState::Unknown {
            return Err(InstanceError::HostUnavailable(instance.host_name));
        }
        let target = self.hosts.target(&instance.host).await?;
        Ok((instance, target))
    }

    /// Records the state the host just answered for an instance (its create, an action), which
    /// shows until a later heartbeat reports another.
    pub async fn note_state(&self, uuid: &Uuid, state: &str) -> Result<(), InstanceError> {
        sqlx::query("UPDATE instances SET state = $1, state_ms = $2 WHERE uuid = $3")
            .bind(state)
            .bind(now_ms())
            .bind(uuid.to_string())
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Forgets an instance (its host destroyed it, or never had it).
    pub async fn forget(&self, uuid: &Uuid) -> Result<(), InstanceError> {
        let mut tx = self.db.pool.begin().await?;
        let Some((host, sizes, phase)) = reservations::current(&mut tx, &uuid.to_string()).await? else {
            return Ok(());
        };
        sqlx::query("DELETE FROM instances WHERE uuid = $1").bind(uuid.to_string()).execute(&mut *tx).await?;
        reservations::shift(&mut tx, &host, sizes, Phase::parse(&phase), None).await?;
        tx.commit().await?;
        Ok(())
    }
}

fn parse_uuid(text: &str) -> Result<Uuid, InstanceError> {
    Uuid::parse_str(text).map_err(|_| DbError::Corrupt(format!("uuid {text:?}")).into())
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An instance row, with what its host reported of it.
fn view(
    row: &sqlx::any::AnyRow,
    hosts: &BTreeMap<Uuid, HostView>,
    with_placement: bool,
) -> Result<InstanceView, InstanceError> {
    let corrupt = |what: &str| InstanceError::Db(DbError::Corrupt(what.to_string()));
    let uuid = parse_uuid(&row.try_get::<String, _>("uuid")?)?;
    let host_id = parse_uuid(&row.try_get::<String, _>("host_id")?)?;
    let phase = Phase::parse(&row.try_get::<String, _>("phase")?).ok_or_else(|| corrupt("phase"))?;
    let host = hosts.get(&host_id);
    let reported = host.and_then(|h| h.instances.iter().find(|i| i.uuid == uuid));
    // The host's latest word: its last answer about the instance, unless a heartbeat since
    // reported it.
    let answered: Option<String> = row.try_get("state")?;
    let answered_ms: Option<i64> = row.try_get("state_ms")?;
    let answered = answered.filter(|_| host.is_none_or(|h| answered_ms.unwrap_or(0) > h.heartbeat_ms));
    let state = match (phase, reported, answered) {
        (Phase::Failed, _, _) => "failed".to_string(),
        (_, _, Some(answered)) => answered,
        (_, Some(reported), None) => reported.state.clone(),
        // Placed, or created but not reported yet.
        (_, None, None) => "provisioning".to_string(),
    };
    let image: Option<String> = row.try_get("image")?;
    let progress: String = row.try_get("progress")?;
    let placement = if with_placement {
        let text: String = row.try_get("placement")?;
        serde_json::from_str(&text).ok()
    } else {
        None
    };
    Ok(InstanceView {
        uuid,
        alias: row.try_get("alias")?,
        host: host_id,
        host_name: host.map(|h| h.name.clone()).unwrap_or_default(),
        host_state: host.map_or(HostState::Unknown, |h| h.state),
        state,
        phase,
        image: image.as_deref().map(parse_uuid).transpose()?,
        vcpus: row.try_get::<i64, _>("vcpus")? as u32,
        memory_mib: row.try_get::<i64, _>("memory_mib")? as u64,
        disk_mib: row.try_get::<i64, _>("disk_mib")? as u64,
        progress: serde_json::from_str(&progress).map_err(|_| corrupt("progress"))?,
        error: row.try_get("error")?,
        adopted: row.try_get::<i64, _>("adopted")? != 0,
        created_at: rfc3339(row.try_get("created_ms")?),
        placement,
    })
}
