//! The control loop (`scaler run`): every interval, read the request-queue depth and the
//! fleet, ask the policy, and launch or terminate app-tier instances.
//!
//! A poll that fails (queue or fleet unreachable) is logged and skipped: the next poll
//! counts again from what the cloud reports, so a launch that failed half-way, or that
//! was retried, never doubles the fleet. Scale-in picks pending instances first (they
//! serve nothing yet, so they are idle by definition), then the highest-numbered running
//! ones; the app tier drains on SIGTERM and the visibility timeout returns whatever a
//! killed instance held, so scale-in loses no request.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use iras_cloud::{Cloud, Fleet, FleetSpec, Instance, InstanceState, Queue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tracing::{info, warn};

use crate::policy::{Action, Decision, Observation, Policy, PolicyState};

/// What the control loop needs, validated.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The request queue whose depth drives scaling (name, or URL on AWS).
    pub request_queue: String,
    /// How to name, tag and start instances.
    pub fleet: FleetSpec,
    /// The decision policy.
    pub policy: Policy,
    /// Time between polls.
    pub interval: Duration,
    /// Where to serve `GET /metrics`, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// On shutdown, terminate every instance of the fleet (default: leave them serving).
    pub terminate_on_exit: bool,
}

/// The scaler's Prometheus metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    depth: Gauge,
    instances: Gauge,
    desired: Gauge,
    launches: Counter,
    terminations: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `iras_scaler` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("iras_scaler");
        let depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Request-queue depth at the last poll (visible + in flight + delayed)",
            depth.clone(),
        );
        let instances = Gauge::default();
        registry.register(
            "instances",
            "App-tier instances pending or running at the last poll",
            instances.clone(),
        );
        let desired = Gauge::default();
        registry.register(
            "desired_instances",
            "The fleet size the policy aimed at on the last poll",
            desired.clone(),
        );
        let launches = Counter::default();
        registry.register("launches", "Instances launched", launches.clone());
        let terminations = Counter::default();
        registry.register(
            "terminations",
            "Instances asked to terminate",
            terminations.clone(),
        );
        Self {
            registry,
            depth,
            instances,
            desired,
            launches,
            terminations,
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

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The ids to terminate, `count` at most: pending instances first (not serving yet), then
/// running ones from the highest ordinal down; names without an ordinal go first of their
/// group, as they are not the fleet's own.
pub fn choose_victims(instances: &[Instance], prefix: &str, count: usize) -> Vec<String> {
    let mut active: Vec<&Instance> = instances.iter().filter(|i| i.state.is_active()).collect();
    active.sort_by_key(|i| {
        (
            i.state == InstanceState::Running,
            std::cmp::Reverse(i.ordinal(prefix).unwrap_or(u32::MAX)),
        )
    });
    active
        .into_iter()
        .take(count)
        .map(|i| i.id.clone())
        .collect()
}

/// One poll: observe, decide, act. Returns the decision.
pub async fn run_once(
    config: &RunConfig,
    queue: &dyn Queue,
    fleet: &dyn Fleet,
    state: &mut PolicyState,
    metrics: &Metrics,
    now: Duration,
) -> anyhow::Result<Decision> {
    let depth = queue.depth().await.context("reading the queue depth")?;
    let instances = fleet.list().await.context("listing the fleet")?;
    let pending = instances
        .iter()
        .filter(|i| i.state == InstanceState::Pending)
        .count();
    let running = instances
        .iter()
        .filter(|i| i.state == InstanceState::Running)
        .count();
    let active = u32::try_from(pending + running).unwrap_or(u32::MAX);
    let obs = Observation {
        depth: depth.total(),
        active,
        now,
    };
    let decision = config.policy.decide(&obs, state);
    metrics.depth.set(gauge_value(depth.total()));
    metrics.instances.set(i64::from(active));
    metrics.desired.set(i64::from(decision.desired));
    info!(
        depth = depth.total(),
        visible = depth.visible,
        in_flight = depth.in_flight,
        delayed = depth.delayed,
        pending,
        running,
        desired = decision.desired,
        action = ?decision.action,
        tracker = ?state.tracker,
        "scaling decision"
    );
    match decision.action {
        Action::Launch(n) => {
            let launched = fleet
                .launch(n as usize)
                .await
                .with_context(|| format!("launching {n} instances"))?;
            metrics.launches.inc_by(launched.len() as u64);
            let names: Vec<&str> = launched.iter().map(|i| i.name.as_str()).collect();
            info!(count = launched.len(), ?names, "launched");
        }
        Action::Terminate(n) => {
            let ids = choose_victims(&instances, &config.fleet.name_prefix, n as usize);
            fleet
                .terminate(&ids)
                .await
                .with_context(|| format!("terminating {ids:?}"))?;
            metrics.terminations.inc_by(ids.len() as u64);
            info!(count = ids.len(), ?ids, "terminated");
        }
        Action::Hold => {}
    }
    Ok(decision)
}

/// Serves `GET /metrics` on `listener` until the task is aborted.
async fn serve_metrics(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = Arc::clone(&metrics);
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.render(),
                )
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        warn!(error = %e, "metrics server stopped");
    }
}

/// Runs the control loop until `shutdown` resolves. The first poll is immediate.
pub async fn run(
    config: RunConfig,
    cloud: Cloud,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    config.policy.validate()?;
    let queue = cloud
        .queue(&config.request_queue)
        .await
        .with_context(|| format!("opening the request queue {}", config.request_queue))?;
    let fleet = cloud
        .fleet(config.fleet.clone())
        .await
        .context("opening the fleet")?;
    let metrics = Arc::new(Metrics::new());
    // Aborted on the way out; it holds nothing that needs draining.
    let metrics_task = match config.metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the metrics address {addr}"))?;
            info!(addr = %listener.local_addr()?, "serving metrics on /metrics");
            Some(tokio::spawn(serve_metrics(listener, Arc::clone(&metrics))))
        }
        None => None,
    };
    info!(policy = %config.policy.label(), interval_secs = config.interval.as_secs_f64(),
          stack = %config.fleet.stack, "scaler started");
    let started = Instant::now();
    let mut state = PolicyState::default();
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = ticks.tick() => {}
        }
        let poll = run_once(
            &config,
            queue.as_ref(),
            fleet.as_ref(),
            &mut state,
            &metrics,
            started.elapsed(),
        );
        // A poll racing a shutdown is abandoned: the next scaler recounts from the cloud.
        tokio::select! {
            () = &mut shutdown => break,
            result = poll => if let Err(e) = result {
                warn!(error = format!("{e:#}"), "poll failed; retrying at the next interval");
            }
        }
    }
    info!("scaler stopping");
    if config.terminate_on_exit {
        let ids: Vec<String> = fleet
            .list()
            .await
            .context("listing the fleet to terminate it")?
            .into_iter()
            .filter(|i| i.state.is_active())
            .map(|i| i.id)
            .collect();
        info!(count = ids.len(), "terminating the fleet on exit");
        fleet
            .terminate(&ids)
            .await
            .context("terminating the fleet")?;
    }
    if let Some(task) = metrics_task {
        task.abort();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn inst(name: &str, state: InstanceState) -> Instance {
        Instance {
            id: format!("id-{name}"),
            name: name.into(),
            state,
            launched_at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn victims_are_pending_first_then_highest_ordinal() {
        let fleet = vec![
            inst("app-tier-1", InstanceState::Running),
            inst("app-tier-10", InstanceState::Running),
            inst("app-tier-2", InstanceState::Running),
            inst("app-tier-3", InstanceState::Pending),
            inst("app-tier-4", InstanceState::Stopping),
            inst("app-tier-5", InstanceState::Terminated),
        ];
        assert_eq!(
            choose_victims(&fleet, "app-tier-", 3),
            ["id-app-tier-3", "id-app-tier-10", "id-app-tier-2"]
        );
        assert_eq!(choose_victims(&fleet, "app-tier-", 10).len(), 4);
    }

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
