//! cloudapi's own metrics, beside the HTTP ones of [`service_kit::metrics`]: the fleet's hosts
//! by state and instances by phase, counted from the database at each scrape (so that every
//! replica answers the same, whoever changed the rows), and what this replica's creates did
//! ([`CreateCounters`]: placements by outcome, image bytes hosts downloaded for them).

use std::collections::HashMap;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use service_kit::metrics::Metrics;
use sqlx::Row;

use crate::db::Db;
use crate::hosts::{HostState, Hosts};
use crate::instances::{InstanceError, Phase};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// Every host state, with its label: each is exposed, 0 included, so that a state that empties
/// drops to 0 instead of keeping its last value.
const HOST_STATES: [(HostState, &str); 3] =
    [(HostState::Running, "running"), (HostState::Draining, "draining"), (HostState::Unknown, "unknown")];

/// Every phase of the `instances` table; any other value there is not exposed, so that the
/// label stays bounded whatever the table holds.
const PHASES: [Phase; 3] = [Phase::Provisioning, Phase::Created, Phase::Failed];

/// What a create did with its placement decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlacementOutcome {
    /// A host was chosen and reserved.
    Placed,
    /// No host could take the instance (422 `NoCapacity`).
    NoCapacity,
    /// A dry run: decided, nothing reserved.
    DryRun,
}

impl PlacementOutcome {
    fn label(self) -> &'static str {
        match self {
            PlacementOutcome::Placed => "placed",
            PlacementOutcome::NoCapacity => "no_capacity",
            PlacementOutcome::DryRun => "dry_run",
        }
    }
}

/// The counters the instances service moves (counters are shared handles: clones count into
/// the same series). `Default` counts into nothing registered, for tests.
#[derive(Debug, Clone, Default)]
pub struct CreateCounters {
    placements: Family<OutcomeLabels, Counter>,
    import_bytes: Counter,
}

impl CreateCounters {
    /// Counters registered in `metrics`.
    pub fn register(metrics: &Metrics) -> CreateCounters {
        let counters = CreateCounters::default();
        metrics.register(
            "cloudapi_placements",
            "Placement decisions of this replica's creates, by outcome",
            counters.placements.clone(),
        );
        metrics.register(
            "cloudapi_import_bytes",
            "Compressed image bytes hosts downloaded for the instances this replica provisioned",
            counters.import_bytes.clone(),
        );
        counters
    }

    pub fn placement(&self, outcome: PlacementOutcome) {
        self.placements.get_or_create(&OutcomeLabels { outcome: outcome.label() }).inc();
    }

    pub fn imported(&self, bytes: u64) {
        self.import_bytes.inc_by(bytes);
    }
}

/// The gauges computed from the database at each scrape.
pub struct FleetGauges {
    hosts_table: Hosts,
    db: Db,
    hosts: Family<StateLabels, Gauge>,
    instances: Family<PhaseLabels, Gauge>,
    metrics: Arc<Metrics>,
}

impl FleetGauges {
    /// Gauges registered in `metrics`, read from `hosts` and `db` when scraped.
    pub fn register(metrics: Arc<Metrics>, hosts_table: Hosts, db: Db) -> FleetGauges {
        let gauges =
            FleetGauges { hosts_table, db, hosts: Family::default(), instances: Family::default(), metrics };
        gauges.metrics.register("cloudapi_hosts", "Hosts of the fleet, by state", gauges.hosts.clone());
        gauges.metrics.register(
            "cloudapi_instances",
            "Instances of the fleet, by phase",
            gauges.instances.clone(),
        );
        gauges
    }

    /// Every metric, with the gauges read now: the answer of `GET /metrics`. A database
    /// failure fails the scrape (Prometheus marks the target down) rather than answering stale
    /// counts.
    pub async fn scrape(&self) -> Result<actix_web::HttpResponse, InstanceError> {
        self.refresh().await?;
        Ok(self.metrics.response())
    }

    async fn refresh(&self) -> Result<(), InstanceError> {
        let hosts = self.hosts_table.list().await?;
        for (state, label) in HOST_STATES {
            let count = hosts.iter().filter(|h| h.state == state).count();
            self.hosts.get_or_create(&StateLabels { state: label }).set(count as i64);
        }
        let rows = sqlx::query("SELECT phase, COUNT(*) AS n FROM instances GROUP BY phase")
            .fetch_all(&self.db.pool)
            .await?;
        let mut by_phase = HashMap::new();
        for row in &rows {
            by_phase.insert(row.try_get::<String, _>("phase")?, row.try_get::<i64, _>("n")?);
        }
        for phase in PHASES.map(Phase::as_str) {
            let count = by_phase.get(phase).copied().unwrap_or(0);
            self.instances.get_or_create(&PhaseLabels { phase }).set(count);
        }
        Ok(())
    }
}
