//! Prometheus metrics of one server: one registry, encoded by `prometheus-client` in the
//! Prometheus text format at `GET /metrics` (and `/api/v1/metrics`).
//!
//! Recording stays off locks on the hot paths: every series that a request or a vessel touches
//! is created once at start (status codes, vessel kinds) and kept as a handle over atomics;
//! histograms are [`AtomicHistogram`]s (prometheus-client's own takes a mutex per observation).
//! Only `wharf_runs_finished_total`, labelled by fleet id, looks its series up per run (an
//! uncontended read lock) as the run's execution ends, off the webhook path. Queue figures are
//! read from the store when scraped; sandbox cache counters from the sandbox's own atomics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::sandbox::{Sandbox, VesselKind, VesselOutcome};
use crate::store::{QueueStats, RunStatus};

/// Content type of the encoded metrics.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Status codes webhook ingress answers with; their series exist from the start.
const INGRESS_CODES: &[u16] = &[201, 400, 401, 404, 405, 413, 429, 500, 503];

/// Seconds: claims and ingest commits take from 100 µs to seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Seconds: a vessel runs from microseconds up to its timeout.
const VESSEL_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0,
];
/// Fuel units, by powers of ten.
const FUEL_BUCKETS: &[f64] = &[1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    status: &'static str,
    fleet_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// The metrics of one server; shared as `Arc<Metrics>`.
pub struct Metrics {
    registry: Registry,
    ingress: Family<CodeLabel, Counter>,
    /// Handles of `ingress` for the usual codes: recording is one atomic add.
    ingress_known: HashMap<u16, Counter>,
    runs_finished: Family<RunLabels, Counter>,
    queue_depth: Gauge,
    queue_oldest: Gauge<f64, AtomicU64>,
    claim_seconds: AtomicHistogram,
    commit_seconds: AtomicHistogram,
    /// Indexed by [`kind_index`].
    vessel_seconds: [AtomicHistogram; 2],
    vessel_fuel: [AtomicHistogram; 2],
    vessels_abandoned: Counter,
    sandbox: Arc<OnceLock<Arc<Sandbox>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn kind_index(kind: VesselKind) -> usize {
    match kind {
        VesselKind::Wasm => 0,
        VesselKind::Rhai => 1,
    }
}

const KINDS: [VesselKind; 2] = [VesselKind::Wasm, VesselKind::Rhai];

impl Metrics {
    /// A registry with every series registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("wharf");
        let ingress = Family::<CodeLabel, Counter>::default();
        registry.register(
            "ingress_requests",
            "Webhook calls answered, by HTTP status code",
            ingress.clone(),
        );
        let ingress_known = INGRESS_CODES
            .iter()
            .map(|&code| (code, ingress.get_or_create(&CodeLabel { code }).clone()))
            .collect();
        let runs_finished = Family::<RunLabels, Counter>::default();
        registry.register(
            "runs_finished",
            "Fleet runs that ended, by final status and fleet id",
            runs_finished.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Runs queued (read from the store when scraped)",
            queue_depth.clone(),
        );
        let queue_oldest = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "queue_oldest_age_seconds",
            "Age of the oldest queued run, 0 when none is (read from the store when scraped)",
            queue_oldest.clone(),
        );
        let claim_seconds = AtomicHistogram::new(LATENCY_BUCKETS);
        registry.register(
            "claim_seconds",
            "Time of one batched claim of queued runs",
            claim_seconds.clone(),
        );
        let commit_seconds = AtomicHistogram::new(LATENCY_BUCKETS);
        registry.register(
            "ingest_commit_seconds",
            "Time of one batched commit of webhook calls and their queued runs",
            commit_seconds.clone(),
        );
        let seconds = Family::<KindLabel, AtomicHistogram>::new_with_constructor(
            (|| AtomicHistogram::new(VESSEL_BUCKETS)) as fn() -> AtomicHistogram,
        );
        registry.register(
            "vessel_duration_seconds",
            "Wall-clock time of vessel runs, by kind",
            seconds.clone(),
        );
        let fuel = Family::<KindLabel, AtomicHistogram>::new_with_constructor(
            (|| AtomicHistogram::new(FUEL_BUCKETS)) as fn() -> AtomicHistogram,
        );
        registry.register(
            "vessel_fuel_used",
            "Fuel used by vessel runs (Wasm instructions, Rhai operations), by kind",
            fuel.clone(),
        );
        let by_kind = |family: &Family<KindLabel, AtomicHistogram>| {
            KINDS.map(|k| {
                family
                    .get_or_create(&KindLabel { kind: k.as_str() })
                    .clone()
            })
        };
        let (vessel_seconds, vessel_fuel) = (by_kind(&seconds), by_kind(&fuel));
        let vessels_abandoned = Counter::default();
        registry.register(
            "vessels_abandoned",
            "Vessel runs the host stopped waiting for, past their timeout and grace (their thread abandoned)",
            vessels_abandoned.clone(),
        );
        let sandbox = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(SandboxCollector(sandbox.clone())));
        Metrics {
            registry,
            ingress,
            ingress_known,
            runs_finished,
            queue_depth,
            queue_oldest,
            claim_seconds,
            commit_seconds,
            vessel_seconds,
            vessel_fuel,
            vessels_abandoned,
            sandbox,
        }
    }

    /// Reports the sandbox's module cache counters from now on.
    pub fn watch_sandbox(&self, sandbox: Arc<Sandbox>) {
        let _ = self.sandbox.set(sandbox);
    }

    /// The host stopped waiting for a vessel past its timeout and grace.
    pub fn vessel_abandoned(&self) {
        self.vessels_abandoned.inc();
    }

    /// One webhook call answered with `code`.
    pub fn ingress_answered(&self, code: u16) {
        match self.ingress_known.get(&code) {
            Some(counter) => counter.inc(),
            None => self.ingress.get_or_create(&CodeLabel { code }).inc(),
        };
    }

    /// A run ended with `status`.
    pub fn run_finished(&self, fleet_id: uuid::Uuid, status: RunStatus) {
        self.runs_finished
            .get_or_create(&RunLabels {
                status: status.as_str(),
                fleet_id: fleet_id.to_string(),
            })
            .inc();
    }

    /// One batched claim took `took`.
    pub fn claimed(&self, took: Duration) {
        self.claim_seconds.observe(took.as_secs_f64());
    }

    /// One batched ingest commit took `took`.
    pub fn committed(&self, took: Duration) {
        self.commit_seconds.observe(took.as_secs_f64());
    }

    /// One vessel ran: its duration and fuel. Vessels that never started (skipped, cancelled,
    /// code that failed to load) are not observed.
    pub fn observe_vessel(&self, kind: VesselKind, outcome: &VesselOutcome) {
        let i = kind_index(kind);
        self.vessel_seconds[i].observe(outcome.duration_ms / 1000.0);
        self.vessel_fuel[i].observe(outcome.fuel_used as f64);
    }

    /// Encodes every series, with the queue figures given (read from the store by the caller).
    pub fn render(&self, queue: QueueStats, now_ms: i64) -> String {
        self.queue_depth.set(queue.queued as i64);
        let age = queue
            .oldest_queued_at
            .map_or(0.0, |t| (now_ms - t).max(0) as f64 / 1000.0);
        self.queue_oldest.set(age);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// Module cache counters, read from the sandbox's atomics at each scrape.
struct SandboxCollector(Arc<OnceLock<Arc<Sandbox>>>);

impl std::fmt::Debug for SandboxCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SandboxCollector")
    }
}

impl Collector for SandboxCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(sandbox) = self.0.get() else {
            return Ok(());
        };
        let stats = sandbox.stats();
        let by_kind: [(&str, &str, [u64; 2]); 2] = [
            (
                "module_cache_hits",
                "Vessel runs whose compiled program came from the in-memory cache, by kind.",
                [stats.wasm_cache_hits, stats.rhai_cache_hits],
            ),
            (
                "module_cache_misses",
                "Vessel runs whose program had to be loaded or compiled first, by kind.",
                [stats.wasm_cache_misses, stats.rhai_cache_misses],
            ),
        ];
        for (name, help, values) in by_kind {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (kind, value) in KINDS.iter().zip(values) {
                let labels = KindLabel {
                    kind: kind.as_str(),
                };
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        // The names `/api/v1/metrics` has always had.
        let wasm = [
            (
                "wasm_modules_compiled",
                "Wasm modules compiled since start.",
                stats.wasm_compiled,
            ),
            (
                "wasm_modules_loaded",
                "Wasm modules loaded from the disk cache since start.",
                stats.wasm_loaded_from_disk,
            ),
            (
                "wasm_modules_rejected",
                "Compiled Wasm modules in the disk cache that failed their integrity check and were compiled again, since start.",
                stats.wasm_artifacts_rejected,
            ),
        ];
        for (name, help, value) in wasm {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(metric)?;
        }
        Ok(())
    }
}

/// A histogram over atomics: an observation is a few relaxed atomic adds, never a lock. The
/// sum is kept in nanounits so that it too is one integer add; the count is the buckets' total.
/// A scrape may see an observation half-recorded (bucket without sum); Prometheus tolerates that.
#[derive(Clone, Debug)]
pub struct AtomicHistogram {
    inner: Arc<HistogramInner>,
}

#[derive(Debug)]
struct HistogramInner {
    bounds: &'static [f64],
    /// One per bound, plus the `+Inf` bucket; counts of that bucket alone.
    buckets: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    /// Empty, with these upper bounds (ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        AtomicHistogram {
            inner: Arc::new(HistogramInner {
                bounds,
                buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                sum_nanos: AtomicU64::new(0),
            }),
        }
    }

    /// Records one value.
    pub fn observe(&self, v: f64) {
        let h = &self.inner;
        let i = h.bounds.partition_point(|b| *b < v);
        h.buckets[i].fetch_add(1, Ordering::Relaxed);
        h.sum_nanos
            .fetch_add((v.max(0.0) * 1e9) as u64, Ordering::Relaxed);
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = &self.inner;
        let buckets: Vec<(f64, u64)> = h
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(h.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}
