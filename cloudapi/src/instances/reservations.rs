//! What each host's instances reserve, kept on the host's row: every change of an instance's
//! phase (or its birth or removal) shifts the host's sums in the same transaction, by the
//! difference between what the instance reserved before and what it reserves after. So a
//! placement reads a row per host, and the sums are always those of the table.

use sqlx::Row;

use super::Phase;

/// What one instance takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sizes {
    pub vcpus: i64,
    pub memory_mib: i64,
    pub disk_mib: i64,
}

/// What an instance in `phase` reserves of its host: all of it while it is being created,
/// vCPUs and memory once created (its disk is then in the host's reported free space),
/// nothing once failed.
pub fn share(phase: Phase, sizes: Sizes) -> Sizes {
    match phase {
        Phase::Provisioning => sizes,
        Phase::Created => Sizes { disk_mib: 0, ..sizes },
        Phase::Failed => Sizes::default(),
    }
}

/// Shifts host `host`'s sums from what an instance of `sizes` reserved in `before` to what it
/// reserves in `after` (`None`: it does not exist).
pub async fn shift(
    conn: &mut sqlx::AnyConnection,
    host: &str,
    sizes: Sizes,
    before: Option<Phase>,
    after: Option<Phase>,
) -> Result<(), sqlx::Error> {
    let of = |phase: Option<Phase>| phase.map(|p| share(p, sizes)).unwrap_or_default();
    let (old, new) = (of(before), of(after));
    let delta = Sizes {
        vcpus: new.vcpus - old.vcpus,
        memory_mib: new.memory_mib - old.memory_mib,
        disk_mib: new.disk_mib - old.disk_mib,
    };
    if delta == Sizes::default() {
        return Ok(());
    }
    sqlx::query("UPDATE hosts SET reserved_vcpus = reserved_vcpus + $1, reserved_memory_mib = reserved_memory_mib + $2, reserved_disk_mib = reserved_disk_mib + $3 WHERE id = $4")
        .bind(delta.vcpus)
        .bind(delta.memory_mib)
        .bind(delta.disk_mib)
        .bind(host)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The host and sizes of instance `uuid`, and its phase, read for an update in the same
/// transaction; `None` if it does not exist.
pub async fn current(
    conn: &mut sqlx::AnyConnection,
    uuid: &str,
) -> Result<Option<(String, Sizes, String)>, sqlx::Error> {
    let row =
        sqlx::query("SELECT host_id, vcpus, memory_mib, disk_mib, phase FROM instances WHERE uuid = $1")
            .bind(uuid)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(|row| {
        Ok((
            row.try_get("host_id")?,
            Sizes {
                vcpus: row.try_get("vcpus")?,
                memory_mib: row.try_get("memory_mib")?,
                disk_mib: row.try_get("disk_mib")?,
            },
            row.try_get("phase")?,
        ))
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_phase_reserves_its_share() {
        let sizes = Sizes { vcpus: 2, memory_mib: 512, disk_mib: 1024 };
        assert_eq!(share(Phase::Provisioning, sizes), sizes);
        assert_eq!(share(Phase::Created, sizes), Sizes { vcpus: 2, memory_mib: 512, disk_mib: 0 });
        assert_eq!(share(Phase::Failed, sizes), Sizes::default());
    }
}
