//! The hosts of the fleet: registration (a join token exchanged for a credential of the
//! host's own), heartbeats (capacity, allocations, images, instances), the state each is in,
//! drain and removal. A host is `unknown` once it sent no heartbeat for the timeout: the
//! state is derived from the last heartbeat's time, so that every replica sees the same.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;
use uuid::Uuid;

pub use service_kit::cluster::{
    Allocation, CachedImage, Capacity, Heartbeat, Registered, Registration, ReportedInstance,
};

use crate::db::{now_ms, Db, DbError};
use crate::error_code::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("host {0} does not exist")]
    NotFound(String),
    #[error("a host named {0:?} is registered already: remove it first, or register with its credential")]
    Exists(String),
    #[error("host {name} still has {count} instance(s); drain it first, or remove it with force once it is unknown")]
    InUse { name: String, count: usize },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl HostError {
    pub fn code(&self) -> ErrorCode {
        match self {
            HostError::NotFound(_) => ErrorCode::HostNotFound,
            HostError::Exists(_) => ErrorCode::HostExists,
            HostError::InUse { .. } => ErrorCode::HostInUse,
            HostError::Invalid(_) => ErrorCode::InvalidParameter,
            HostError::Db(_) => ErrorCode::DatabaseError,
        }
    }
}

impl From<sqlx::Error> for HostError {
    fn from(e: sqlx::Error) -> Self {
        HostError::Db(DbError::Query(e))
    }
}

/// The state of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HostState {
    Running,
    Draining,
    /// No heartbeat for `host_timeout_secs`.
    Unknown,
}

/// A host as the API shows it (never its credential).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostView {
    pub id: Uuid,
    pub name: String,
    pub url: String,
    pub state: HostState,
    pub hypervisor: String,
    pub tags: BTreeMap<String, String>,
    pub capacity: Capacity,
    pub allocated: Allocation,
    pub images: Vec<CachedImage>,
    pub instances: Vec<ReportedInstance>,
    pub registered_at: String,
    pub last_heartbeat: String,
    /// The same, in milliseconds since the epoch.
    #[serde(skip)]
    pub heartbeat_ms: i64,
}

/// The host table.
#[derive(Clone)]
pub struct Hosts {
    db: Db,
    timeout: Duration,
    /// Heartbeats use at most half the database connections, so that a burst of them never
    /// makes the API's own requests (placements above all) wait for one.
    heartbeats: std::sync::Arc<tokio::sync::Semaphore>,
}

/// A new credential: 256 random bits, hex.
fn new_credential() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Compares in constant time (digests of equal length).
fn same_secret(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(digest(a).ct_eq(&digest(b)))
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The stored part of a heartbeat besides capacity.
#[derive(Default, Serialize, Deserialize)]
struct Inventory {
    #[serde(default)]
    allocated: Allocation,
    #[serde(default)]
    images: Vec<CachedImage>,
    #[serde(default)]
    instances: Vec<ReportedInstance>,
}

fn check_registration(r: &Registration) -> Result<(), HostError> {
    let name_ok = (1..=253).contains(&r.name.len())
        && r.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if !name_ok {
        return Err(HostError::Invalid(format!(
            "host name {:?} must be 1 to 253 of A-Z a-z 0-9 - . _",
            r.name
        )));
    }
    let url = url::Url::parse(&r.url).map_err(|e| HostError::Invalid(format!("url {:?}: {e}", r.url)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(HostError::Invalid(format!("url {:?}: only http and https", r.url)));
    }
    if !matches!(r.hypervisor.as_str(), "qemu" | "bhyve") {
        return Err(HostError::Invalid(format!("hypervisor {:?} must be qemu or bhyve", r.hypervisor)));
    }
    check_capacity(&r.capacity)
}

/// What the database can hold: a capacity beyond it would be stored wrapped.
fn check_capacity(c: &Capacity) -> Result<(), HostError> {
    if c.memory_mib > i64::MAX as u64 || c.disk_free_mib > i64::MAX as u64 {
        return Err(HostError::Invalid(format!(
            "capacity memory_mib and disk_free_mib must be at most {}",
            i64::MAX
        )));
    }
    Ok(())
}

impl Hosts {
    pub fn new(db: Db, timeout: Duration) -> Self {
        let heartbeats =
            std::sync::Arc::new(tokio::sync::Semaphore::new((db.connections / 2).max(1) as usize));
        Hosts { db, timeout, heartbeats }
    }

    /// Registers a new host (`credential` is `None`: the caller showed a join token), or a
    /// known one again (`credential` is the one it got, and must match the host of that name).
    pub async fn register(
        &self,
        registration: &Registration,
        credential: Option<&str>,
    ) -> Result<Registered, HostError> {
        check_registration(registration)?;
        let tags = serde_json::to_string(&registration.tags).expect("tags serialise");
        let c = &registration.capacity;
        let now = now_ms();
        let existing = sqlx::query("SELECT id, credential FROM hosts WHERE name = $1")
            .bind(&registration.name)
            .fetch_optional(&self.db.pool)
            .await?;
        match (existing, credential) {
            (Some(row), Some(offered)) => {
                let (id, stored): (String, String) = (row.try_get("id")?, row.try_get("credential")?);
                if !same_secret(&stored, offered) {
                    return Err(HostError::Exists(registration.name.clone()));
                }
                sqlx::query("UPDATE hosts SET url = $1, hypervisor = $2, tags = $3, vcpus = $4, memory_mib = $5, disk_free_mib = $6, heartbeat_ms = $7 WHERE id = $8")
                    .bind(&registration.url)
                    .bind(&registration.hypervisor)
                    .bind(&tags)
                    .bind(c.vcpus as i64)
                    .bind(c.memory_mib as i64)
                    .bind(c.disk_free_mib as i64)
                    .bind(now)
                    .bind(&id)
                    .execute(&self.db.pool)
                    .await?;
                let id = Uuid::parse_str(&id).map_err(|_| DbError::Corrupt(format!("host id {id:?}")))?;
                Ok(Registered { id, credential: stored })
            }
            (Some(_), None) => Err(HostError::Exists(registration.name.clone())),
            // A credential for a name nobody has: it was removed; a join token is needed.
            (None, Some(_)) => Err(HostError::NotFound(registration.name.clone())),
            (None, None) => {
                let (id, credential) = (Uuid::new_v4(), new_credential());
                let inserted = sqlx::query("INSERT INTO hosts (id, name, url, credential, admin_state, hypervisor, tags, vcpus, memory_mib, disk_free_mib, inventory, registered_ms, heartbeat_ms) VALUES ($1, $2, $3, $4, 'running', $5, $6, $7, $8, $9, '{}', $10, $11)")
                    .bind(id.to_string())
                    .bind(&registration.name)
                    .bind(&registration.url)
                    .bind(&credential)
                    .bind(&registration.hypervisor)
                    .bind(&tags)
                    .bind(c.vcpus as i64)
                    .bind(c.memory_mib as i64)
                    .bind(c.disk_free_mib as i64)
                    .bind(now)
                    .bind(now)
                    .execute(&self.db.pool)
                    .await;
                match inserted {
                    Ok(_) => Ok(Registered { id, credential }),
                    // Two registrations of one name at once: the unique index picked one.
                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                        Err(HostError::Exists(registration.name.clone()))
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Whether `offered` is the credential of host `id`.
    pub async fn authenticate(&self, id: &Uuid, offered: &str) -> Result<bool, HostError> {
        let row = sqlx::query("SELECT credential FROM hosts WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(match row {
            Some(row) => same_secret(&row.try_get::<String, _>("credential")?, offered),
            None => false,
        })
    }

    /// Records a heartbeat, and reconciles the host's instances with it, in one transaction.
    pub async fn heartbeat(&self, id: &Uuid, beat: &Heartbeat) -> Result<(), HostError> {
        check_capacity(&beat.capacity)?;
        if let Some(odd) =
            beat.instances.iter().find(|i| i.memory_mib > i64::MAX as u64 || i.disk_mib > i64::MAX as u64)
        {
            return Err(HostError::Invalid(format!(
                "instance {}: memory_mib and disk_mib must be at most {}",
                odd.uuid,
                i64::MAX
            )));
        }
        let inventory = serde_json::to_string(&Inventory {
            allocated: beat.allocated,
            images: beat.images.clone(),
            instances: beat.instances.clone(),
        })
        .expect("inventories serialise");
        let c = &beat.capacity;
        let images = serde_json::to_string(&beat.images).expect("images serialise");
        let _turn = self.heartbeats.acquire().await.expect("the semaphore is never closed");
        let now = now_ms();
        let mut tx = self.db.pool.begin().await?;
        if self.db.dialect == crate::db::Dialect::Postgres {
            // A heartbeat is soft state: one lost in a crash is replaced by the next, seconds
            // later. Not waiting for its WAL flush keeps a slow disk from holding connections.
            sqlx::query("SET LOCAL synchronous_commit TO OFF").execute(&mut *tx).await?;
        }
        let updated = sqlx::query("UPDATE hosts SET vcpus = $1, memory_mib = $2, disk_free_mib = $3, inventory = $4, images = $5, heartbeat_ms = $6 WHERE id = $7")
            .bind(c.vcpus as i64)
            .bind(c.memory_mib as i64)
            .bind(c.disk_free_mib as i64)
            .bind(inventory)
            .bind(images)
            .bind(now)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() == 0 {
            return Err(HostError::NotFound(id.to_string()));
        }
        crate::instances::reconcile(&mut tx, id, &beat.instances, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Image `uuid` as some host reports holding it. Reads only the hosts' image lists, and
    /// only those that name it.
    pub async fn cached_image(&self, uuid: &Uuid) -> Result<Option<CachedImage>, HostError> {
        // A few rows: any host that holds it will do, and the pattern is a uuid (a false match
        // would take another uuid that contains this one).
        let rows = sqlx::query("SELECT images FROM hosts WHERE images LIKE $1 LIMIT 8")
            .bind(format!("%{uuid}%"))
            .fetch_all(&self.db.pool)
            .await?;
        for row in &rows {
            let images: Vec<CachedImage> = serde_json::from_str(&row.try_get::<String, _>("images")?)
                .map_err(|_| DbError::Corrupt("host images".into()))?;
            if let Some(image) = images.into_iter().find(|i| i.uuid == *uuid) {
                return Ok(Some(image));
            }
        }
        Ok(None)
    }

    /// Where host `id` is and its credential, to call it.
    pub async fn target(&self, id: &Uuid) -> Result<crate::remote::HostTarget, HostError> {
        let row = sqlx::query("SELECT name, url, credential FROM hosts WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.db.pool)
            .await?
            .ok_or_else(|| HostError::NotFound(id.to_string()))?;
        Ok(crate::remote::HostTarget {
            id: *id,
            name: row.try_get("name")?,
            url: row.try_get("url")?,
            credential: row.try_get("credential")?,
        })
    }

    /// Every host as placement sees it, inside the placement's transaction: what its
    /// instances reserve comes from cloudapi's table (in-flight creates included), disks only
    /// for creates in flight (the host's free space already counts the others); the
    /// neighbours (instance aliases) only when affinity rules need them.
    pub async fn candidates(
        &self,
        conn: &mut sqlx::AnyConnection,
        affinity: &[crate::placement::Affinity],
    ) -> Result<Vec<crate::placement::Candidate>, HostError> {
        use std::collections::HashMap;
        let rows = sqlx::query("SELECT id, name, admin_state, hypervisor, tags, vcpus, memory_mib, disk_free_mib, images, heartbeat_ms, reserved_vcpus, reserved_memory_mib, reserved_disk_mib FROM hosts")
            .fetch_all(&mut *conn)
            .await?;
        let mut neighbours: HashMap<String, Vec<crate::placement::Neighbour>> = HashMap::new();
        if !affinity.is_empty() {
            // Only the instances a rule may name: a superset (SQLite's LIKE ignores ASCII case),
            // which placement's own matching narrows.
            let (conditions, patterns): (Vec<String>, Vec<String>) = affinity
                .iter()
                .enumerate()
                .map(|(n, rule)| {
                    (format!("alias LIKE ${} ESCAPE '\\' OR uuid = ${}", 2 * n + 1, 2 * n + 2), rule)
                })
                .map(|(condition, rule)| (condition, rule.name.clone()))
                .unzip();
            let query = format!(
                "SELECT uuid, alias, host_id FROM instances WHERE phase <> 'failed' AND ({})",
                conditions.join(" OR ")
            );
            let mut select = sqlx::query(&query);
            for name in &patterns {
                let uuid = Uuid::parse_str(name).map(|u| u.to_string()).unwrap_or_default();
                select = select.bind(like_pattern(name)).bind(uuid);
            }
            let rows = select.fetch_all(&mut *conn).await?;
            for row in &rows {
                let uuid: String = row.try_get("uuid")?;
                let uuid = Uuid::parse_str(&uuid)
                    .map_err(|_| DbError::Corrupt(format!("instance uuid {uuid:?}")))?;
                neighbours
                    .entry(row.try_get("host_id")?)
                    .or_default()
                    .push(crate::placement::Neighbour { uuid, alias: row.try_get("alias")? });
            }
        }
        let now = now_ms();
        let corrupt = |what: &str| HostError::Db(DbError::Corrupt(what.to_string()));
        rows.iter()
            .map(|row| {
                let key: String = row.try_get("id")?;
                let tags: String = row.try_get("tags")?;
                let images: String = row.try_get("images")?;
                Ok(crate::placement::Candidate {
                    id: Uuid::parse_str(&key).map_err(|_| corrupt("host id"))?,
                    name: row.try_get("name")?,
                    state: self.state_of(
                        &row.try_get::<String, _>("admin_state")?,
                        row.try_get("heartbeat_ms")?,
                        now,
                    ),
                    hypervisor: row.try_get("hypervisor")?,
                    tags: serde_json::from_str(&tags).map_err(|_| corrupt("tags"))?,
                    capacity: capacity_of(row)?,
                    reserved: {
                        let take = |column: &str| row.try_get::<i64, _>(column).map(|v| v.max(0) as u64);
                        Allocation {
                            vcpus: take("reserved_vcpus")?,
                            memory_mib: take("reserved_memory_mib")?,
                            disk_mib: take("reserved_disk_mib")?,
                        }
                    },
                    images: serde_json::from_str(&images).map_err(|_| corrupt("images"))?,
                    instances: neighbours.remove(&key).unwrap_or_default(),
                })
            })
            .collect()
    }

    pub async fn list(&self) -> Result<Vec<HostView>, HostError> {
        let rows = sqlx::query(&format!("{SELECT_VIEW}{ORDER}")).fetch_all(&self.db.pool).await?;
        let now = now_ms();
        rows.iter().map(|row| self.view(row, now)).collect()
    }

    pub async fn get(&self, id: &Uuid) -> Result<HostView, HostError> {
        let query = format!("{SELECT_VIEW} WHERE id = $1");
        let row = sqlx::query(&query).bind(id.to_string()).fetch_optional(&self.db.pool).await?;
        let row = row.ok_or_else(|| HostError::NotFound(id.to_string()))?;
        self.view(&row, now_ms())
    }

    /// Drains (`true`: no new instances are placed there) or undrains a host.
    pub async fn set_draining(&self, id: &Uuid, draining: bool) -> Result<HostView, HostError> {
        let state = if draining { "draining" } else { "running" };
        let updated = sqlx::query("UPDATE hosts SET admin_state = $1 WHERE id = $2")
            .bind(state)
            .bind(id.to_string())
            .execute(&self.db.pool)
            .await?;
        if updated.rows_affected() == 0 {
            return Err(HostError::NotFound(id.to_string()));
        }
        self.get(id).await
    }

    /// Removes a host, and so revokes its credential. Refused while it has instances, unless
    /// it is `unknown` and `force` is set (its instances are then forgotten).
    pub async fn remove(&self, id: &Uuid, force: bool) -> Result<(), HostError> {
        let host = self.get(id).await?;
        let mut tx = self.db.pool.begin().await?;
        let placed: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM instances WHERE host_id = $1 AND phase <> 'failed'")
                .bind(id.to_string())
                .fetch_one(&mut *tx)
                .await?
                .try_get("n")?;
        let count = host.instances.len().max(placed.max(0) as usize);
        let may_go = count == 0 || (force && host.state == HostState::Unknown);
        if !may_go {
            return Err(HostError::InUse { name: host.name, count });
        }
        sqlx::query("DELETE FROM instances WHERE host_id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM hosts WHERE id = $1").bind(id.to_string()).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A host's state: `unknown` once silent for the timeout, else what its admin made it.
    fn state_of(&self, admin_state: &str, heartbeat_ms: i64, now: i64) -> HostState {
        let silent = Duration::from_millis(now.saturating_sub(heartbeat_ms).max(0) as u64);
        if silent > self.timeout {
            HostState::Unknown
        } else if admin_state == "draining" {
            HostState::Draining
        } else {
            HostState::Running
        }
    }

    fn view(&self, row: &sqlx::any::AnyRow, now: i64) -> Result<HostView, HostError> {
        let corrupt = |what: &str| HostError::Db(DbError::Corrupt(what.to_string()));
        let id: String = row.try_get("id")?;
        let admin_state: String = row.try_get("admin_state")?;
        let heartbeat_ms: i64 = row.try_get("heartbeat_ms")?;
        let tags: String = row.try_get("tags")?;
        let inventory: String = row.try_get("inventory")?;
        let inventory: Inventory = serde_json::from_str(&inventory).map_err(|_| corrupt("inventory"))?;
        let state = self.state_of(&admin_state, heartbeat_ms, now);
        Ok(HostView {
            id: Uuid::parse_str(&id).map_err(|_| corrupt("host id"))?,
            name: row.try_get("name")?,
            url: row.try_get("url")?,
            state,
            hypervisor: row.try_get("hypervisor")?,
            tags: serde_json::from_str(&tags).map_err(|_| corrupt("tags"))?,
            capacity: capacity_of(row)?,
            allocated: inventory.allocated,
            images: inventory.images,
            instances: inventory.instances,
            registered_at: rfc3339(row.try_get("registered_ms")?),
            last_heartbeat: rfc3339(heartbeat_ms),
            heartbeat_ms,
        })
    }
}

/// The SQL `LIKE` pattern (with `\` as its escape) of an affinity glob: `*` is any run of
/// characters, and what `LIKE` would read as a wildcard is escaped.
fn like_pattern(glob: &str) -> String {
    let mut pattern = String::with_capacity(glob.len() + 2);
    for c in glob.chars() {
        match c {
            '*' => pattern.push('%'),
            '%' | '_' | '\\' => {
                pattern.push('\\');
                pattern.push(c);
            }
            c => pattern.push(c),
        }
    }
    pattern
}

fn capacity_of(row: &sqlx::any::AnyRow) -> Result<Capacity, sqlx::Error> {
    Ok(Capacity {
        vcpus: row.try_get::<i64, _>("vcpus")?.clamp(0, i64::from(u32::MAX)) as u32,
        memory_mib: row.try_get::<i64, _>("memory_mib")?.max(0) as u64,
        disk_free_mib: row.try_get::<i64, _>("disk_free_mib")?.max(0) as u64,
    })
}

const SELECT_VIEW: &str = "SELECT id, name, url, admin_state, hypervisor, tags, vcpus, memory_mib, disk_free_mib, inventory, registered_ms, heartbeat_ms FROM hosts";

/// The list, in name order.
const ORDER: &str = " ORDER BY name";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capacity_the_database_cannot_hold_is_refused() {
        let huge = Capacity { vcpus: 1, memory_mib: u64::MAX, disk_free_mib: 1 };
        assert!(matches!(check_capacity(&huge), Err(HostError::Invalid(_))));
        let fine = Capacity { vcpus: u32::MAX, memory_mib: i64::MAX as u64, disk_free_mib: 0 };
        assert!(check_capacity(&fine).is_ok());
    }

    #[test]
    fn affinity_globs_become_like_patterns_that_match_only_what_they_say() {
        assert_eq!(like_pattern("web-*"), "web-%");
        assert_eq!(like_pattern("db_1"), "db\\_1");
        assert_eq!(like_pattern("100%*"), "100\\%%");
        assert_eq!(like_pattern("a\\b"), "a\\\\b");
    }
}
