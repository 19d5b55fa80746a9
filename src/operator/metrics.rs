//! Prometheus metrics. Every label is bounded: controller names, error categories, phases, kinds.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::crd::Phase;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabel {
    pub cache: &'static str,
}

/// Reads how many bytes a cache holds.
type CacheSize = Box<dyn Fn() -> usize + Send + Sync>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerLabel, Counter>,
    reconcile_seconds: Family<ControllerLabel, Histogram>,
    errors: Family<ErrorLabels, Counter>,
    projects: Family<PhaseLabel, Gauge>,
    wake_seconds: Histogram,
    writes: Family<KindLabel, Counter>,
    cache_bytes: Family<CacheLabel, Gauge>,
    cache_sizes: std::sync::Mutex<Vec<(&'static str, CacheSize)>>,
    pub leader: Gauge,
}

pub const ALL_PHASES: [Phase; 8] = [
    Phase::Pending,
    Phase::Provisioning,
    Phase::Running,
    Phase::Hibernated,
    Phase::Waking,
    Phase::Stopped,
    Phase::Failed,
    Phase::Deleting,
];

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ooda");
        let reconciles = Family::<ControllerLabel, Counter>::default();
        registry.register("reconciles", "Reconciliations run", reconciles.clone());
        let reconcile_seconds = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        });
        registry.register("reconcile_duration_seconds", "Time spent in one reconciliation", reconcile_seconds.clone());
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register("reconcile_errors", "Failed reconciliations by category", errors.clone());
        let projects = Family::<PhaseLabel, Gauge>::default();
        registry.register("projects", "Projects by phase", projects.clone());
        let wake_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 12));
        registry.register("wake_duration_seconds", "From activity renewal to the pod seen Ready", wake_seconds.clone());
        let writes = Family::<KindLabel, Counter>::default();
        registry.register("api_writes", "Writes the operator sent to the API server, by kind", writes.clone());
        let cache_bytes = Family::<CacheLabel, Gauge>::default();
        registry.register("cache_bytes", "Bytes of objects held by the compact watch caches", cache_bytes.clone());
        let leader = Gauge::default();
        registry.register("leader", "1 while this replica holds the leader Lease", leader.clone());
        Self {
            registry,
            reconciles,
            reconcile_seconds,
            errors,
            projects,
            wake_seconds,
            writes,
            cache_bytes,
            cache_sizes: Default::default(),
            leader,
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, controller: &'static str, took: Duration) {
        let label = ControllerLabel { controller };
        self.reconciles.get_or_create(&label).inc();
        self.reconcile_seconds.get_or_create(&label).observe(took.as_secs_f64());
    }

    pub fn failed(&self, controller: &'static str, category: &'static str) {
        self.errors.get_or_create(&ErrorLabels { controller, category }).inc();
    }

    pub fn wrote(&self, kind: &'static str) {
        self.writes.get_or_create(&KindLabel { kind }).inc();
    }

    pub fn woke(&self, took: Duration) {
        self.wake_seconds.observe(took.as_secs_f64());
    }

    /// Replaces the projects-by-phase gauge with fresh counts (every phase, zeros included).
    pub fn set_project_phases(&self, counts: impl Fn(Phase) -> i64) {
        for phase in ALL_PHASES {
            self.projects.get_or_create(&PhaseLabel { phase: phase.as_str() }).set(counts(phase));
        }
    }

    /// Reports `cache`'s size, read by `bytes` whenever the metrics are scraped.
    pub fn measure_cache(&self, cache: &'static str, bytes: impl Fn() -> usize + Send + Sync + 'static) {
        self.cache_sizes.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push((cache, Box::new(bytes)));
    }

    pub fn encode(&self) -> String {
        for (cache, bytes) in self.cache_sizes.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter() {
            self.cache_bytes.get_or_create(&CacheLabel { cache }).set(bytes() as i64);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
