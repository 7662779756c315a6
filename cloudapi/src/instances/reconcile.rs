//! Keeping cloudapi's table and a host's report together, at each heartbeat: an instance the
//! host has and cloudapi does not know is adopted; a created instance the host no longer has
//! is forgotten; a failed one the host has after all is created. Instances being provisioned are left alone (their create may not have
//! reached the host yet), and so is an instance created moments ago (the heartbeat may have
//! been taken before it existed).

use std::collections::BTreeSet;

use sqlx::Row;
use uuid::Uuid;

use super::reservations::{shift, Sizes};
use super::Phase;
use crate::hosts::ReportedInstance;

/// How long after cloudapi saw it created an instance must be missing from a host's report
/// before it is forgotten: longer than a heartbeat takes to arrive.
const GRACE_MS: i64 = 15_000;

/// Reconciles host `host`'s instances with its report, in the heartbeat's transaction.
pub async fn reconcile(
    conn: &mut sqlx::AnyConnection,
    host: &Uuid,
    reported: &[ReportedInstance],
    now: i64,
) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT uuid, phase, updated_ms, vcpus, memory_mib, disk_mib FROM instances WHERE host_id = $1",
    )
    .bind(host.to_string())
    .fetch_all(&mut *conn)
    .await?;
    let reported_uuids: BTreeSet<String> = reported.iter().map(|r| r.uuid.to_string()).collect();
    let mut known = BTreeSet::new();
    for row in &rows {
        let uuid: String = row.try_get("uuid")?;
        let phase: String = row.try_get("phase")?;
        let updated_ms: i64 = row.try_get("updated_ms")?;
        let sizes = Sizes {
            vcpus: row.try_get("vcpus")?,
            memory_mib: row.try_get("memory_mib")?,
            disk_mib: row.try_get("disk_mib")?,
        };
        let host_id = host.to_string();
        let reported_now = reported_uuids.contains(&uuid);
        if phase == "created" && !reported_now && updated_ms < now - GRACE_MS {
            tracing::info!(%uuid, %host, "the host no longer has this instance: forgotten");
            sqlx::query("DELETE FROM instances WHERE uuid = $1").bind(&uuid).execute(&mut *conn).await?;
            shift(&mut *conn, &host_id, sizes, Some(Phase::Created), None).await?;
        }
        if phase == "failed" && reported_now {
            // The create reached the host after all (cloudapi gave up waiting for it).
            sqlx::query(
                "UPDATE instances SET phase = 'created', error = NULL, updated_ms = $1 WHERE uuid = $2",
            )
            .bind(now)
            .bind(&uuid)
            .execute(&mut *conn)
            .await?;
            shift(&mut *conn, &host_id, sizes, Some(Phase::Failed), Some(Phase::Created)).await?;
        }
        known.insert(uuid);
    }
    for instance in reported.iter().filter(|r| !known.contains(&r.uuid.to_string())) {
        tracing::info!(uuid = %instance.uuid, alias = %instance.alias, %host, "adopting an instance the host reports");
        let adopted = sqlx::query("INSERT INTO instances (uuid, alias, host_id, phase, adopted, vcpus, memory_mib, disk_mib, image, request, placement, progress, error, lease_owner, lease_until_ms, created_ms, updated_ms) VALUES ($1, $2, $3, 'created', 1, $4, $5, $6, $7, '{}', 'null', '{\"step\":\"done\"}', NULL, NULL, NULL, $8, $9) ON CONFLICT (uuid) DO NOTHING")
            .bind(instance.uuid.to_string())
            .bind(&instance.alias)
            .bind(host.to_string())
            .bind(i64::from(instance.vcpus))
            .bind(instance.memory_mib as i64)
            .bind(instance.disk_mib as i64)
            .bind(instance.image.map(|u| u.to_string()))
            .bind(now)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        if adopted.rows_affected() == 1 {
            let sizes = Sizes {
                vcpus: i64::from(instance.vcpus),
                memory_mib: instance.memory_mib as i64,
                disk_mib: instance.disk_mib as i64,
            };
            shift(&mut *conn, &host.to_string(), sizes, None, Some(Phase::Created)).await?;
        }
    }
    Ok(())
}
