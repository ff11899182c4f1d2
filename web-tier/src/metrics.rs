//! Prometheus metrics of the web tier, served as text on `GET /metrics`.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// How an upload ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values are snake_case on the wire
pub enum UploadOutcome {
    /// Answered with a label.
    label,
    /// The app tier could not classify the image.
    classify_error,
    /// Refused before queueing (bad or oversized input).
    rejected,
    /// Too many requests waiting (503).
    overloaded,
    /// The queue or bucket could not be reached (503).
    unavailable,
    /// No result before the deadline (504).
    timeout,
    /// A bug or an unexpected failure (500).
    internal,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UploadOutcomeLabels {
    outcome: UploadOutcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    delivery: &'static str,
}

/// The web tier's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    uploads: Family<UploadOutcomeLabels, Counter>,
    latency: Histogram,
    waiting: Gauge,
    results: Family<DeliveryLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `iras_web` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("iras_web");
        let uploads = Family::<UploadOutcomeLabels, Counter>::default();
        registry.register("uploads", "Uploads by outcome", uploads.clone());
        // 5 ms … about 164 s, doubling.
        let latency = Histogram::new(exponential_buckets(0.005, 2.0, 16));
        registry.register(
            "upload_duration_seconds",
            "Time from upload received to answer, for uploads that were queued",
            latency.clone(),
        );
        let waiting = Gauge::default();
        registry.register(
            "waiting_requests",
            "Requests waiting for a result",
            waiting.clone(),
        );
        let results = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "results",
            "Results from the response queue: delivered to a waiter, or recorded with none waiting",
            results.clone(),
        );
        Self {
            registry,
            uploads,
            latency,
            waiting,
            results,
        }
    }

    /// Counts an upload's outcome; `queued_for` is its time in the system if it was queued.
    pub fn upload(&self, outcome: UploadOutcome, queued_for: Option<std::time::Duration>) {
        self.uploads
            .get_or_create(&UploadOutcomeLabels { outcome })
            .inc();
        if let Some(d) = queued_for {
            self.latency.observe(d.as_secs_f64());
        }
    }

    /// Counts a result taken from the response queue.
    pub fn result(&self, delivery: iras_protocol::internal::Delivery) {
        let delivery = match delivery {
            iras_protocol::internal::Delivery::Delivered => "delivered",
            iras_protocol::internal::Delivery::Recorded => "recorded",
        };
        self.results
            .get_or_create(&DeliveryLabels { delivery })
            .inc();
    }

    /// The text exposition, with the waiting gauge set to `waiting` first.
    pub fn render(&self, waiting: usize) -> String {
        self.waiting.set(i64::try_from(waiting).unwrap_or(i64::MAX));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
