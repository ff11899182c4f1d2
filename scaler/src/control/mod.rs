//! The control loop (`scaler run`): every interval, read the request-queue depth and the
//! fleet, ask the policy, and launch or terminate app-tier instances.
//!
//! A poll that fails (queue or fleet unreachable) is logged and skipped: the next poll
//! counts again from what the cloud reports, so a launch that failed half-way, or that
//! was retried, never doubles the fleet. Scale-in picks pending instances first (they
//! serve nothing yet, so they are idle by definition), then the highest-numbered running
//! ones; the app tier drains on SIGTERM and the visibility timeout returns whatever a
//! killed instance held, so scale-in loses no request.
//!
//! What a real account adds, and how each poll deals with it before the policy decides:
//!
//! - **Instances that never become ready.** An instance still pending
//!   [`RunConfig::ready_grace`] after its launch (its app tier restart-loops on a broken
//!   runtime, model or configuration, so it never reported ready) is terminated, logged
//!   with where to look, counted in `iras_scaler_never_ready_terminations_total`, and not
//!   counted as capacity; the policy then sees the fleet it really has.
//! - **Stopped instances** serve nothing but keep their volume and name: terminated.
//! - **Launches that stop short** ([`Launched::shortfall`]): the account's vCPU quota,
//!   no capacity in any placement, or any other refusal. The instances that did start are
//!   kept; the reason is counted (`iras_scaler_launch_shortfalls_total{reason}`) and
//!   logged with what to do; and launches are held back for a capped, doubling pause
//!   (from [`RunConfig::launch_backoff`] to [`MAX_LAUNCH_BACKOFF`]) so a fleet at its quota
//!   does not ask EC2 again every poll. Scale-in goes on meanwhile. A replaced never-ready
//!   instance holds launches back the same way, so a broken image is not relaunched in a
//!   tight, costly loop.
//!
//! This module holds the settings, [`run_once`] and the loop around it ([`run`]); the rest
//! is split along its seams: `hold` (why and for how long launches are held back, and
//! what an operator should do), `selection` (which instances to terminate: broken ones
//! before deciding, victims when scaling in) and `metrics` (the Prometheus series).

mod hold;
mod metrics;
mod selection;
#[cfg(test)]
mod test_support;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use iras_cloud::{Cloud, Fleet, FleetSpec, InstanceState, Launched, Queue};
use tracing::{info, warn};

use crate::policy::{Action, Decision, Observation, Policy};

pub use hold::{HoldReason, LoopState};
pub use metrics::Metrics;
pub use selection::choose_victims;

use hold::advice;
use metrics::{ReasonLabel, gauge_value};
use selection::broken_instances;

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
    /// How long an instance may stay pending (launched, not yet reporting ready) before
    /// it is taken for broken and terminated.
    pub ready_grace: Duration,
    /// The first pause of launches after a launch stopped short (doubling up to
    /// [`MAX_LAUNCH_BACKOFF`]).
    pub launch_backoff: Duration,
}

/// Default of [`RunConfig::ready_grace`]: an EC2 boot (about a minute), cloud-init and the
/// model load, several times over.
pub const DEFAULT_READY_GRACE: Duration = Duration::from_secs(600);
/// Default of [`RunConfig::launch_backoff`].
pub const DEFAULT_LAUNCH_BACKOFF: Duration = Duration::from_secs(30);
/// Longest pause of launches after repeated shortfalls.
pub const MAX_LAUNCH_BACKOFF: Duration = Duration::from_secs(600);

/// One poll: observe, replace what is broken, decide, act. Returns the decision.
pub async fn run_once(
    config: &RunConfig,
    queue: &dyn Queue,
    fleet: &dyn Fleet,
    state: &mut LoopState,
    metrics: &Metrics,
    now: Duration,
) -> anyhow::Result<Decision> {
    let depth = queue.depth().await.context("reading the queue depth")?;
    let mut instances = fleet.list().await.context("listing the fleet")?;

    let (stopped, never_ready) =
        broken_instances(&instances, config.ready_grace, SystemTime::now());
    let mut replace = stopped.clone();
    for i in &never_ready {
        warn!(
            instance = %i.name,
            id = %i.id,
            grace_secs = config.ready_grace.as_secs(),
            "instance never reported ready within the grace period; terminating it ({})",
            advice(HoldReason::NeverReady)
        );
        replace.push(i.id.clone());
    }
    let never_ready_count = never_ready.len();
    if !replace.is_empty() {
        if !stopped.is_empty() {
            info!(ids = ?stopped, "terminating stopped instances (they serve nothing and keep their volumes)");
        }
        fleet
            .terminate(&replace)
            .await
            .with_context(|| format!("terminating broken instances {replace:?}"))?;
        metrics.stopped.inc_by(stopped.len() as u64);
        metrics.never_ready.inc_by(never_ready_count as u64);
        metrics.terminations.inc_by(replace.len() as u64);
        for i in &mut instances {
            if replace.contains(&i.id) {
                i.state = InstanceState::Stopping;
            }
        }
        if never_ready_count > 0 {
            metrics
                .shortfalls
                .get_or_create(&ReasonLabel {
                    reason: HoldReason::NeverReady.label(),
                })
                .inc();
            let pause = state.hold_launches(now, HoldReason::NeverReady);
            warn!(
                hold_secs = pause.as_secs(),
                "holding launches back after a never-ready instance"
            );
        }
    }

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
    let decision = config.policy.decide(&obs, &mut state.policy);
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
        tracker = ?state.policy.tracker,
        "scaling decision"
    );
    match decision.action {
        Action::Launch(n) => match state.held(now) {
            Some((left, reason)) => info!(
                wanted = n,
                reason = reason.label(),
                retry_in_secs = left.as_secs(),
                "launches held back"
            ),
            None => {
                let Launched {
                    instances: launched,
                    shortfall,
                } = fleet
                    .launch(n as usize)
                    .await
                    .with_context(|| format!("launching {n} instances"))?;
                metrics.launches.inc_by(launched.len() as u64);
                let names: Vec<&str> = launched.iter().map(|i| i.name.as_str()).collect();
                info!(count = launched.len(), ?names, "launched");
                match shortfall {
                    None => {
                        state.hold = None;
                        state.backoff.reset();
                    }
                    Some(e) => {
                        let reason = HoldReason::of(&e);
                        metrics
                            .shortfalls
                            .get_or_create(&ReasonLabel {
                                reason: reason.label(),
                            })
                            .inc();
                        let pause = state.hold_launches(now, reason);
                        warn!(
                            wanted = n,
                            launched = launched.len(),
                            reason = reason.label(),
                            retry_in_secs = pause.as_secs(),
                            error = %e,
                            "launch stopped short; {}",
                            advice(reason)
                        );
                    }
                }
            }
        },
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
    metrics.hold.set(state.held(now).map_or(0, |(left, _)| {
        i64::try_from(left.as_secs()).unwrap_or(i64::MAX)
    }));
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

/// Runs the control loop until `shutdown` resolves, serving metrics on
/// `config.metrics_listen` if set. The first poll is immediate.
pub async fn run(
    config: RunConfig,
    cloud: Cloud,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the metrics address {addr}"))?,
        ),
        None => None,
    };
    serve(config, cloud, metrics_listener, shutdown).await
}

/// [`run`] with the metrics endpoint on an already-bound listener (tests bind port 0 and
/// hand it over, so no test races another for a port); `config.metrics_listen` is ignored.
pub async fn serve(
    config: RunConfig,
    cloud: Cloud,
    metrics_listener: Option<tokio::net::TcpListener>,
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
    let metrics_task = match metrics_listener {
        Some(listener) => {
            info!(addr = %listener.local_addr()?, "serving metrics on /metrics");
            Some(tokio::spawn(serve_metrics(listener, Arc::clone(&metrics))))
        }
        None => None,
    };
    info!(policy = %config.policy.label(), interval_secs = config.interval.as_secs_f64(),
          stack = %config.fleet.stack, "scaler started");
    let started = Instant::now();
    let mut state = LoopState::new(&config);
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
