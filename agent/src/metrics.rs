//! The agent's own metrics, beside the HTTP ones of [`service_kit::metrics`]: instances by
//! state and images, counted at each scrape ([`HostGauges`]), and what imports did
//! ([`ImportCounters`]: compressed bytes downloaded, imports by outcome).

use std::sync::Arc;

use actix_web::HttpResponse;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use service_kit::metrics::Metrics;

use crate::instance::record::InstanceRecord;
use crate::instance::state::InstanceState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The states an instance on this host can be in, with their labels: each is exposed, 0
/// included, so that a state that empties drops to 0 instead of keeping its last value. A
/// destroyed instance is only history, not on the host.
const LIVE_STATES: [(InstanceState, &str); 4] = [
    (InstanceState::Provisioning, "provisioning"),
    (InstanceState::Stopped, "stopped"),
    (InstanceState::Running, "running"),
    (InstanceState::Failed, "failed"),
];

/// The counters the importer moves (shared handles: clones count into the same series).
/// `Default` counts into nothing registered, for tests.
#[derive(Debug, Clone, Default)]
pub struct ImportCounters {
    bytes: Counter,
    imports: Family<OutcomeLabels, Counter>,
}

impl ImportCounters {
    /// Counters registered in `metrics`.
    pub fn register(metrics: &Metrics) -> ImportCounters {
        let counters = ImportCounters::default();
        metrics.register(
            "agent_import_bytes",
            "Compressed image bytes downloaded by imports (resumed and failed downloads included)",
            counters.bytes.clone(),
        );
        metrics.register("agent_imports", "Import jobs finished, by outcome", counters.imports.clone());
        counters
    }

    pub fn downloaded(&self, bytes: u64) {
        self.bytes.inc_by(bytes);
    }

    pub fn finished(&self, succeeded: bool) {
        let outcome = if succeeded { "succeeded" } else { "failed" };
        self.imports.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}

/// The gauges computed at each scrape, and the registry they are in.
pub struct HostGauges {
    instances: Family<StateLabels, Gauge>,
    images: Gauge,
    metrics: Arc<Metrics>,
}

impl HostGauges {
    /// Gauges registered in `metrics`.
    pub fn register(metrics: Arc<Metrics>) -> HostGauges {
        let gauges = HostGauges { instances: Family::default(), images: Gauge::default(), metrics };
        gauges.metrics.register(
            "agent_instances",
            "Instances on this host, by state",
            gauges.instances.clone(),
        );
        gauges.metrics.register("agent_images", "Images on this host", gauges.images.clone());
        gauges
    }

    /// Every metric, the gauges set from `instances` and the number of `images` first: the
    /// answer of `GET /metrics`.
    pub fn scrape(&self, instances: &[InstanceRecord], images: usize) -> HttpResponse {
        for (state, label) in LIVE_STATES {
            let count = instances.iter().filter(|i| i.state == state).count();
            self.instances.get_or_create(&StateLabels { state: label }).set(count as i64);
        }
        self.images.set(images as i64);
        self.metrics.response()
    }
}
