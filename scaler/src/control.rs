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

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use iras_cloud::{
    Cloud, CloudError, Fleet, FleetSpec, Instance, InstanceState, Launched, Queue, Shortage,
};
use iras_service::Backoff;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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

/// Why launches were held back: the label of `iras_scaler_launch_shortfalls_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HoldReason {
    /// The account's quota.
    Quota,
    /// No capacity in any placement.
    Capacity,
    /// A launched instance never became ready.
    NeverReady,
    /// Any other launch error.
    Error,
}

impl HoldReason {
    fn label(self) -> &'static str {
        match self {
            HoldReason::Quota => "quota",
            HoldReason::Capacity => "capacity",
            HoldReason::NeverReady => "never-ready",
            HoldReason::Error => "error",
        }
    }

    fn of(error: &CloudError) -> Self {
        match error {
            CloudError::NoCapacity {
                shortage: Shortage::Quota,
                ..
            } => HoldReason::Quota,
            CloudError::NoCapacity {
                shortage: Shortage::Capacity,
                ..
            } => HoldReason::Capacity,
            _ => HoldReason::Error,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// What the loop carries from one poll to the next.
#[derive(Debug)]
pub struct LoopState {
    /// The policy's own state (the seed's tracker, cooldown clocks).
    pub policy: PolicyState,
    /// Launches are held back until this time (since the loop started), and why.
    pub hold: Option<(Duration, HoldReason)>,
    backoff: Backoff,
}

impl LoopState {
    /// A fresh state for `config`.
    pub fn new(config: &RunConfig) -> Self {
        Self {
            policy: PolicyState::default(),
            hold: None,
            backoff: Backoff::between(config.launch_backoff, MAX_LAUNCH_BACKOFF),
        }
    }

    /// Holds launches back for the next pause of the backoff, from `now`.
    fn hold_launches(&mut self, now: Duration, reason: HoldReason) -> Duration {
        let pause = self.backoff.next_pause();
        self.hold = Some((now + pause, reason));
        pause
    }

    /// The hold in force at `now`, if any.
    fn held(&self, now: Duration) -> Option<(Duration, HoldReason)> {
        self.hold
            .filter(|(until, _)| now < *until)
            .map(|(until, reason)| (until - now, reason))
    }
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
    shortfalls: Family<ReasonLabel, Counter>,
    never_ready: Counter,
    stopped: Counter,
    hold: Gauge,
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

/// How long ago `launched_at` was, if it is known (a zero launch time means unknown).
fn age(launched_at: SystemTime, wall_now: SystemTime) -> Option<Duration> {
    if launched_at == SystemTime::UNIX_EPOCH {
        return None;
    }
    Some(wall_now.duration_since(launched_at).unwrap_or_default())
}

/// Instances to replace before deciding: stopped ones, and pending ones older than the
/// grace period. Returns (stopped ids, never-ready instances).
fn broken_instances(
    instances: &[Instance],
    ready_grace: Duration,
    wall_now: SystemTime,
) -> (Vec<String>, Vec<&Instance>) {
    let stopped = instances
        .iter()
        .filter(|i| i.state == InstanceState::Stopped)
        .map(|i| i.id.clone())
        .collect();
    let never_ready = instances
        .iter()
        .filter(|i| i.state == InstanceState::Pending)
        .filter(|i| age(i.launched_at, wall_now).is_some_and(|a| a > ready_grace))
        .collect();
    (stopped, never_ready)
}

/// What an operator should do about a shortfall.
fn advice(reason: HoldReason) -> &'static str {
    match reason {
        HoldReason::Quota => {
            "the account's EC2 quota is reached: request an increase of 'Running On-Demand \
             Standard (A, C, D, H, I, M, R, T, Z) instances' (vCPUs, quota code L-1216C47A) in \
             Service Quotas, or lower --max-instances (MaxAppInstances) to what the quota allows"
        }
        HoldReason::Capacity => {
            "EC2 has no capacity for these instance types in these subnets right now: it \
             usually passes; for more room, list more instance types (--instance-type \
             t3.micro,t3a.micro) or subnets in other zones (--subnet a,b)"
        }
        HoldReason::NeverReady => {
            "an app tier did not report ready in time: its runtime, model or configuration \
             is broken; read its log (EC2: CloudWatch Logs or journalctl -u iras-app-tier; \
             local: <state>/fleet/<stack>/<name>.log)"
        }
        HoldReason::Error => "EC2 refused the launch; see the error",
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

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
    /// A fleet that starts instances until its room runs out, then answers every launch
    /// with `refusal` (the EC2 faults moto cannot produce), and lists what it holds.
    #[derive(Debug)]
    struct FaultyFleet {
        instances: std::sync::Mutex<Vec<Instance>>,
        room: std::sync::Mutex<usize>,
        refusal: fn() -> CloudError,
        launch_calls: std::sync::atomic::AtomicUsize,
        terminated: std::sync::Mutex<Vec<String>>,
    }

    impl FaultyFleet {
        fn new(room: usize, refusal: fn() -> CloudError) -> Self {
            Self {
                instances: std::sync::Mutex::new(Vec::new()),
                room: std::sync::Mutex::new(room),
                refusal,
                launch_calls: std::sync::atomic::AtomicUsize::new(0),
                terminated: std::sync::Mutex::new(Vec::new()),
            }
        }

        fn calls(&self) -> usize {
            self.launch_calls.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    #[async_trait::async_trait]
    impl Fleet for FaultyFleet {
        async fn list(&self) -> iras_cloud::Result<Vec<Instance>> {
            Ok(self.instances.lock().unwrap().clone())
        }

        async fn launch(&self, count: usize) -> iras_cloud::Result<Launched> {
            self.launch_calls
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut room = self.room.lock().unwrap();
            let mut instances = self.instances.lock().unwrap();
            let mut launched = Vec::new();
            for _ in 0..count {
                if *room == 0 {
                    return Ok(Launched {
                        instances: launched,
                        shortfall: Some((self.refusal)()),
                    });
                }
                *room -= 1;
                let n = instances.len() + 1;
                let i = Instance {
                    id: format!("i-{n}"),
                    name: format!("app-tier-{n}"),
                    state: InstanceState::Pending,
                    launched_at: SystemTime::now(),
                };
                instances.push(i.clone());
                launched.push(i);
            }
            Ok(Launched::all(launched))
        }

        async fn terminate(&self, ids: &[String]) -> iras_cloud::Result<()> {
            for i in self.instances.lock().unwrap().iter_mut() {
                if ids.contains(&i.id) {
                    i.state = InstanceState::Terminated;
                }
            }
            self.terminated.lock().unwrap().extend_from_slice(ids);
            Ok(())
        }
    }

    fn quota() -> CloudError {
        CloudError::NoCapacity {
            shortage: Shortage::Quota,
            message: "VcpuLimitExceeded: vCPU limit of 4".into(),
        }
    }

    fn config() -> RunConfig {
        RunConfig {
            request_queue: "iras-requests".into(),
            fleet: FleetSpec {
                name_prefix: "app-tier-".into(),
                stack: "t".into(),
                tags: vec![],
                local: None,
                ec2: None,
            },
            policy: Policy::default(),
            interval: Duration::from_secs(10),
            metrics_listen: None,
            terminate_on_exit: false,
            ready_grace: Duration::from_secs(300),
            launch_backoff: Duration::from_secs(30),
        }
    }

    /// A real (local, SQLite) request queue holding `n` messages.
    async fn queue_with(n: usize) -> (tempfile::TempDir, Arc<dyn Queue>) {
        let dir = tempfile::tempdir().unwrap();
        let cloud = Cloud::open_local(dir.path()).await.unwrap();
        let stack = iras_cloud::StackSpec::default();
        cloud.provision(&stack).await.unwrap();
        let queue = cloud.queue(&stack.request_queue).await.unwrap();
        for i in 0..n {
            queue
                .send(iras_cloud::OutgoingMessage::new(format!("request {i}")))
                .await
                .unwrap();
        }
        (dir, queue)
    }

    /// 40 queued requests want 19 instances; the quota allows 2. The two are kept, the
    /// shortfall is counted as quota, launches pause 30 s then 60 s (no EC2 call while
    /// held), and scale-out resumes once the quota has room again.
    #[tokio::test]
    async fn a_quota_shortfall_keeps_what_started_and_backs_off() {
        let (_dir, queue) = queue_with(40).await;
        let fleet = FaultyFleet::new(2, quota);
        let config = config();
        let metrics = Metrics::new();
        let mut state = LoopState::new(&config);
        let at = Duration::from_secs;

        run_once(&config, queue.as_ref(), &fleet, &mut state, &metrics, at(0))
            .await
            .unwrap();
        assert_eq!(fleet.calls(), 1);
        assert_eq!(fleet.instances.lock().unwrap().len(), 2);
        assert_eq!(state.held(at(0)), Some((at(30), HoldReason::Quota)));
        let text = metrics.render();
        assert!(text.contains("iras_scaler_launches_total 2"), "{text}");
        assert!(
            text.contains("iras_scaler_launch_shortfalls_total{reason=\"quota\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("iras_scaler_launch_hold_seconds 30"),
            "{text}"
        );

        // Held: the policy still wants more, but EC2 is not asked.
        run_once(
            &config,
            queue.as_ref(),
            &fleet,
            &mut state,
            &metrics,
            at(10),
        )
        .await
        .unwrap();
        assert_eq!(fleet.calls(), 1);
        // The hold is over: asked again, refused again, and the pause doubles.
        run_once(
            &config,
            queue.as_ref(),
            &fleet,
            &mut state,
            &metrics,
            at(31),
        )
        .await
        .unwrap();
        assert_eq!(fleet.calls(), 2);
        assert_eq!(state.held(at(31)), Some((at(60), HoldReason::Quota)));
        // The quota is raised: the next launch after the hold fills the fleet, and the
        // backoff starts over.
        *fleet.room.lock().unwrap() = 100;
        run_once(
            &config,
            queue.as_ref(),
            &fleet,
            &mut state,
            &metrics,
            at(92),
        )
        .await
        .unwrap();
        assert_eq!(fleet.calls(), 3);
        assert_eq!(fleet.instances.lock().unwrap().len(), 19);
        assert_eq!(state.held(at(92)), None);
        assert_eq!(state.backoff.next_pause(), at(30));
    }

    /// An instance pending past the grace period is terminated and not counted; a stopped
    /// one is terminated; a young pending one is left to boot.
    #[tokio::test]
    async fn never_ready_and_stopped_instances_are_replaced() {
        let (_dir, queue) = queue_with(0).await;
        let fleet = FaultyFleet::new(10, quota);
        let config = config();
        let long_ago = SystemTime::now() - Duration::from_secs(3600);
        let instance = |n: u32, state, launched_at| Instance {
            id: format!("i-{n}"),
            name: format!("app-tier-{n}"),
            state,
            launched_at,
        };
        *fleet.instances.lock().unwrap() = vec![
            instance(1, InstanceState::Pending, long_ago),
            instance(2, InstanceState::Stopped, long_ago),
            instance(3, InstanceState::Pending, SystemTime::now()),
            instance(4, InstanceState::Running, long_ago),
            // A launch time EC2 did not give: never taken for old.
            instance(5, InstanceState::Pending, SystemTime::UNIX_EPOCH),
        ];
        let metrics = Metrics::new();
        let mut state = LoopState::new(&config);
        let decision = run_once(
            &config,
            queue.as_ref(),
            &fleet,
            &mut state,
            &metrics,
            Duration::ZERO,
        )
        .await
        .unwrap();
        let mut terminated = fleet.terminated.lock().unwrap().clone();
        terminated.sort();
        assert_eq!(terminated, ["i-1", "i-2"]);
        let text = metrics.render();
        assert!(
            text.contains("iras_scaler_never_ready_terminations_total 1"),
            "{text}"
        );
        assert!(
            text.contains("iras_scaler_stopped_terminations_total 1"),
            "{text}"
        );
        assert!(
            text.contains("iras_scaler_launch_shortfalls_total{reason=\"never-ready\"} 1"),
            "{text}"
        );
        // Active: the young pending one, the running one, the one of unknown age.
        assert!(text.contains("iras_scaler_instances 3"), "{text}");
        assert_eq!(
            decision.action,
            Action::Hold,
            "empty queue, K samples needed"
        );
        assert_eq!(
            state.held(Duration::ZERO).map(|(_, r)| r),
            Some(HoldReason::NeverReady)
        );
    }
}
