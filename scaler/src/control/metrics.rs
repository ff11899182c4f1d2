//! The scaler's Prometheus metrics: the fleet and queue gauges, the launch and
//! termination counters, and the shortfalls by reason. Its own module because the series
//! are a contract with dashboards and alerts, registered and rendered in one place.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReasonLabel {
    pub(super) reason: &'static str,
}

/// The scaler's Prometheus metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub(super) depth: Gauge,
    pub(super) instances: Gauge,
    pub(super) desired: Gauge,
    pub(super) launches: Counter,
    pub(super) terminations: Counter,
    pub(super) shortfalls: Family<ReasonLabel, Counter>,
    pub(super) never_ready: Counter,
    pub(super) stopped: Counter,
    pub(super) hold: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A new metric of type `M`, registered under `name` with `help`.
fn registered<M>(registry: &mut Registry, name: &str, help: &str) -> M
where
    M: prometheus_client::registry::Metric + Clone + Default,
{
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    /// Registers every metric under the `iras_scaler` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("iras_scaler");
        let depth: Gauge = registered(
            &mut registry,
            "queue_depth",
            "Request-queue depth at the last poll (visible + in flight + delayed)",
        );
        let instances: Gauge = registered(
            &mut registry,
            "instances",
            "App-tier instances pending or running at the last poll",
        );
        let desired: Gauge = registered(
            &mut registry,
            "desired_instances",
            "The fleet size the policy aimed at on the last poll",
        );
        let launches: Counter = registered(&mut registry, "launches", "Instances launched");
        let terminations: Counter = registered(
            &mut registry,
            "terminations",
            "Instances asked to terminate",
        );
        let shortfalls: Family<ReasonLabel, Counter> = registered(
            &mut registry,
            "launch_shortfalls",
            "Launches that started fewer instances than asked, or holds after a never-ready \
             instance, by reason (quota, capacity, never-ready, error)",
        );
        let never_ready: Counter = registered(
            &mut registry,
            "never_ready_terminations",
            "Instances terminated because they did not report ready within the grace period",
        );
        let stopped: Counter = registered(
            &mut registry,
            "stopped_terminations",
            "Stopped instances terminated",
        );
        let hold: Gauge = registered(
            &mut registry,
            "launch_hold_seconds",
            "Seconds until launches are tried again after a shortfall (0: not held)",
        );
        Self {
            registry,
            depth,
            instances,
            desired,
            launches,
            terminations,
            shortfalls,
            never_ready,
            stopped,
            hold,
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

pub(super) fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_every_series() {
        let m = Metrics::new();
        m.launches.inc_by(3);
        let text = m.render();
        for name in [
            "iras_scaler_queue_depth",
            "iras_scaler_instances",
            "iras_scaler_desired_instances",
            "iras_scaler_launches_total 3",
            "iras_scaler_terminations_total",
        ] {
            assert!(text.contains(name), "{name} missing from {text}");
        }
    }
}
