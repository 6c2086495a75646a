//! The controller metrics trio: reconciliations, failures by error, reconcile duration.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabel {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    controller: &'static str,
    error: &'static str,
}

/// Metrics of both controllers, registered under `herald_operator_`.
pub struct Metrics {
    reconciliations: Family<ControllerLabel, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<ControllerLabel, Histogram>,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let reconciliations = Family::<ControllerLabel, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let duration = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 12))
        });
        let mut registry = Registry::with_prefix("herald_operator");
        registry.register("reconciliations", "Reconciles started", reconciliations.clone());
        registry.register("reconcile_failures", "Reconciles that failed, by error", failures.clone());
        registry.register("reconcile_duration_seconds", "Time one reconcile took", duration.clone());
        Metrics { reconciliations, failures, duration, registry }
    }
}

/// Observes a reconcile's duration when dropped.
pub struct Timer<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
    start: Instant,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        let label = ControllerLabel { controller: self.controller };
        self.metrics.duration.get_or_create(&label).observe(self.start.elapsed().as_secs_f64());
    }
}

impl Metrics {
    /// Counts a reconcile of `controller` and times it until the guard drops.
    pub fn measure(&self, controller: &'static str) -> Timer<'_> {
        self.reconciliations.get_or_create(&ControllerLabel { controller }).inc();
        Timer { metrics: self, controller, start: Instant::now() }
    }

    /// Counts a failed reconcile.
    pub fn failed(&self, controller: &'static str, error: &'static str) {
        self.failures.get_or_create(&FailureLabels { controller, error }).inc();
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
