//! cloudapi's state in one SQL database: SQLite (one file, one replica) or PostgreSQL (any
//! number of replicas), through sqlx's Any driver, so that every query is written once. The
//! schema is `migrations/`, embedded in the binary and applied at start-up by sqlx's migrator
//! (checksummed, and under an advisory lock on PostgreSQL, so that replicas starting together
//! apply each migration once).
//!
//! What is portable is kept to: TEXT, BIGINT, `$n` parameters in the order they first appear
//! (SQLite numbers named parameters that way), JSON as TEXT, times as milliseconds.

use std::borrow::Cow;
use std::path::Path;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::AnyPool;

/// The migrations, in order: (version, description, SQL).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "hosts", include_str!("../migrations/0001_hosts.sql")),
    (2, "instances", include_str!("../migrations/0002_instances.sql")),
    (3, "placement reads", include_str!("../migrations/0003_placement_reads.sql")),
    (4, "reservations", include_str!("../migrations/0004_reservations.sql")),
];

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot create the database directory {path}")]
    Directory {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to the database")]
    Connect(#[source] sqlx::Error),
    #[error("cannot apply the database migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("a database query failed")]
    Query(#[from] sqlx::Error),
    #[error("the database holds a value cloudapi cannot read: {0}")]
    Corrupt(String),
}

/// Which engine: some statements differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub dialect: Dialect,
    /// The pool's size.
    pub connections: u32,
}

fn migrator() -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*description),
                MigrationType::Simple,
                Cow::Borrowed(*sql),
                false,
            )
        })
        .collect::<Vec<_>>();
    Migrator { migrations: Cow::Owned(migrations), ignore_missing: false, locking: true, no_tx: false }
}

impl Db {
    /// Connects (creating a SQLite file and its directory if need be) and migrates.
    pub async fn open(url: &str) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let (dialect, url, connections) = match url.strip_prefix("sqlite://") {
            Some(path) => {
                if let Some(dir) = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|source| DbError::Directory { path: dir.display().to_string(), source })?;
                }
                // One connection: SQLite has one writer at a time anyway, and a single
                // connection never meets a busy database. WAL keeps readers of other processes
                // (backups, the sqlite3 shell) from blocking it.
                (Dialect::Sqlite, format!("sqlite://{path}?mode=rwc"), 1)
            }
            None => (Dialect::Postgres, url.to_string(), 8),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(connections)
            .connect(&url)
            .await
            .map_err(DbError::Connect)?;
        if dialect == Dialect::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL").execute(&pool).await?;
            sqlx::query("PRAGMA synchronous = FULL").execute(&pool).await?;
        }
        migrator().run(&pool).await.map_err(DbError::Migrate)?;
        Ok(Db { pool, dialect, connections })
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sqlite_database_is_created_and_migrated_once() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("sub/cloud.db").display());
        let db = Db::open(&url).await.unwrap();
        assert_eq!(db.dialect, Dialect::Sqlite);
        sqlx::query("SELECT id FROM hosts").fetch_all(&db.pool).await.unwrap();
        drop(db);
        // Opening again finds the migration applied (and its checksum unchanged).
        Db::open(&url).await.unwrap();
    }
}
