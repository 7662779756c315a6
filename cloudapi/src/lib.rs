//! `cloudapi`: one API over every agent host. Hosts register and heartbeat; the fleet's state
//! lives in SQLite (one replica) or PostgreSQL (any number of stateless replicas). `main.rs`
//! only parses flags; everything else is here so that tests run what production runs.

pub mod api;
pub mod catalogue;
pub mod config;
pub mod db;
pub mod error_code;
pub mod hosts;
pub mod instances;
pub mod metrics;
pub mod placement;
pub mod remote;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
pub use service_kit::Bound;

use api::CloudState;
use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the database")]
    Db(#[from] db::DbError),
    #[error("invalid image sources")]
    Sources(#[from] imgapi_client::ClientError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Opens (and migrates) the database and binds the API.
pub async fn bind(config: Config) -> Result<Bound, StartError> {
    let db = db::Db::open(&config.database).await?;
    let users = service_kit::auth::Credentials::new(&config.auth);
    if users.is_empty() {
        tracing::warn!("config: no \"auth\": every change will be refused");
    }
    let join = service_kit::auth::Credentials::new(&service_kit::auth::AuthConfig {
        tokens: config.join_tokens.clone(),
        users: Vec::new(),
    });
    let hosts = hosts::Hosts::new(db.clone(), Duration::from_secs(config.host_timeout_secs));
    let policy = placement::Policy {
        strategy: config.placement.strategy,
        cpu_overcommit: config.placement.cpu_overcommit,
        memory_overcommit: config.placement.memory_overcommit,
        disk_overcommit: config.placement.disk_overcommit,
    };
    let catalogue = catalogue::Catalogue::new(&config.sources)?;
    let registry = Arc::new(service_kit::metrics::Metrics::new());
    let counters = metrics::CreateCounters::register(&registry);
    let gauges = metrics::FleetGauges::register(registry.clone(), hosts.clone(), db.clone());
    let instances = instances::Instances::new(db, hosts.clone(), catalogue, policy, counters);
    instances.start_sweeper();
    let state = web::Data::new(CloudState { hosts, instances, users, join, metrics: gauges });
    let addr = config.listen;
    service_kit::server::bind_api(addr, state, registry, api::configure, Box::new(|| {}))
        .map_err(|source| StartError::Bind { addr, source })
}

/// A cloudapi running on its own thread (see [`start`]). Stops when dropped.
pub type RunningCloudApi = service_kit::ServerThread;

/// Binds and starts `config` on a thread of its own, for tests and embedding.
pub fn start(config: Config) -> Result<RunningCloudApi, StartError> {
    RunningCloudApi::start_async(move || bind(config))
}
