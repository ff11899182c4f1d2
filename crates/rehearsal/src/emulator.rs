//! The EC2 instance emulator: what EC2, cloud-init and systemd would do with the instances
//! of a stack, done with processes on this machine. **Test and rehearsal tooling only**:
//! nothing here runs in a deployment.
//!
//! Every poll it asks EC2 (the moto server) for the instances tagged `iras:stack=<stack>`.
//! For each instance that is `pending` or `running` it waits the boot delay, then boots it
//! from what EC2 really holds: its `UserData` (read back with `DescribeInstanceAttribute`,
//! so it is exactly what the scaler or the template passed), performed by
//! [`crate::cloud_config`], starting the units it enables from the image
//! ([`crate::unit`], [`crate::image`]). Each unit's process is supervised as systemd would:
//! restarted after `RestartSec` when `Restart=on-failure` says so. When EC2 shows the
//! instance `shutting-down`, `stopping`, `stopped` or `terminated` (or stops listing it),
//! every unit gets its `KillSignal` (SIGTERM) and, after `TimeoutStopSec`, SIGKILL.
//!
//! What EC2 and the instance metadata service would give the instance and this machine
//! cannot — credentials from the instance profile, a network route to the AWS APIs, the
//! instance id — is the emulator's *instance environment* ([`EmulatorConfig::instance_env`]
//! plus `IRAS_INSTANCE_ID`), added under the unit's own environment. Instances launched
//! from another AMI than the emulated one are not booted (and say so), because nothing
//! could know what that image holds.

use iras_protocol::env;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use aws_sdk_ec2::types::{Filter, InstanceAttributeName, InstanceStateName};
use base64::Engine as _;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cloud_config::CloudConfig;
use crate::image::{InstanceRoot, UNIT_DIR};
use crate::unit::{Restart, ServiceUnit, parse_env_file};

/// The tag that puts an instance in a stack (set by the scaler and the template).
pub const STACK_TAG: &str = "iras:stack";
/// The tag that says what an instance is for (`web`, `app-tier`).
pub const ROLE_TAG: &str = "iras:role";

/// How the emulator runs.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Only instances tagged `iras:stack=<stack>` are emulated.
    pub stack: String,
    /// The AMI id that stands for the image directory.
    pub image_id: String,
    /// The staged image ([`crate::image::stage`]).
    pub image_dir: PathBuf,
    /// Instance roots go under `<state_dir>/instances/`.
    pub state_dir: PathBuf,
    /// From the first sight of an instance to starting its units (EC2 boot + cloud-init).
    pub boot_delay: Duration,
    /// Between two looks at EC2.
    pub poll_interval: Duration,
    /// What EC2 and IMDS give every instance here (endpoint, credentials, no IMDS).
    pub instance_env: Vec<(String, String)>,
    /// Extra units to start on instances of a role, as an operator would enable them:
    /// (role tag value, unit name).
    pub extra_units: Vec<(String, String)>,
}

/// How one unit process ended.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Exit {
    /// The exit status, when it exited.
    pub code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    /// Whether the emulator was stopping it (instance terminated) when it ended.
    pub stopping: bool,
    /// Whether it had to be SIGKILLed after `TimeoutStopSec`.
    pub killed_after_timeout: bool,
    /// Unix time in milliseconds.
    pub at_ms: u64,
}

/// One unit on one instance.
#[derive(Debug, Clone, Serialize)]
pub struct UnitStatus {
    /// E.g. `iras-app-tier.service`.
    pub name: String,
    /// The pid of the current process, while one runs.
    pub pid: Option<i32>,
    /// How many times it was started (restarts included).
    pub starts: u32,
    /// How each process ended, in order.
    pub exits: Vec<Exit>,
}

/// Where an instance is in its life, as the emulator sees it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "phase", content = "detail")]
pub enum Phase {
    /// Seen in EC2; its units start once the boot delay has passed.
    Booting,
    /// Its units were started.
    Up,
    /// Terminated in EC2; its units are being stopped.
    Stopping,
    /// Nothing of it runs any more.
    Stopped,
    /// It could not be booted; the reason.
    Failed(String),
}

/// One emulated instance.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    /// EC2 instance id.
    pub id: String,
    /// The `Name` tag.
    pub name: String,
    /// The `iras:role` tag.
    pub role: String,
    /// The AMI it was launched from.
    pub image_id: String,
    /// The EC2 state name at the last poll.
    pub ec2_state: String,
    /// The emulator's phase.
    pub phase: Phase,
    /// Unix ms when the emulator first saw it.
    pub seen_at_ms: u64,
    /// When its units were started.
    pub up_at_ms: Option<u64>,
    /// When its last unit process ended after termination.
    pub stopped_at_ms: Option<u64>,
    /// Its units.
    pub units: Vec<UnitStatus>,
    /// The instance's own directory (its `/etc/iras` and journal).
    pub root: PathBuf,
}

impl InstanceStatus {
    /// Whether every unit that ended while being stopped ended on its own within
    /// `TimeoutStopSec` with status 0: a drained shutdown.
    pub fn drained(&self) -> bool {
        self.units.iter().all(|u| {
            u.exits
                .iter()
                .filter(|e| e.stopping)
                .all(|e| e.code == Some(0) && !e.killed_after_timeout)
        })
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Shared state: what the emulator knows of each instance.
#[derive(Debug, Default)]
struct State {
    instances: HashMap<String, Entry>,
}

#[derive(Debug)]
struct Entry {
    status: InstanceStatus,
    /// Cancelled when the instance is terminated: its units stop.
    stop: CancellationToken,
    seen: tokio::time::Instant,
}

/// The emulator; cheap to clone (all clones share one state).
#[derive(Debug, Clone)]
pub struct Emulator {
    ec2: aws_sdk_ec2::Client,
    config: Arc<EmulatorConfig>,
    state: Arc<Mutex<State>>,
    /// The unit supervisors: `run` waits for all of them before it returns.
    tasks: TaskTracker,
}

impl Emulator {
    /// An emulator over the EC2 API `ec2` talks to.
    pub fn new(ec2: aws_sdk_ec2::Client, config: EmulatorConfig) -> Self {
        Self {
            ec2,
            config: Arc::new(config),
            state: Arc::default(),
            tasks: TaskTracker::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain data, consistent after every statement: a panic elsewhere cannot have left
        // it half-updated.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every instance seen so far, by first sight.
    pub fn instances(&self) -> Vec<InstanceStatus> {
        let mut all: Vec<InstanceStatus> = self
            .state()
            .instances
            .values()
            .map(|e| e.status.clone())
            .collect();
        all.sort_by_key(|s| (s.seen_at_ms, s.id.clone()));
        all
    }

    /// SIGKILLs the processes of `id` (every unit, or only `unit`), as a crash would; the
    /// unit's restart policy then applies. Returns how many processes were signalled.
    pub fn kill(&self, id: &str, unit: Option<&str>) -> anyhow::Result<usize> {
        let state = self.state();
        let entry = state
            .instances
            .get(id)
            .with_context(|| format!("no instance {id}"))?;
        let mut killed = 0;
        for u in &entry.status.units {
            if unit.is_some_and(|n| n != u.name) {
                continue;
            }
            if let Some(pid) = u.pid {
                tracing::warn!(instance = id, unit = %u.name, pid, "SIGKILL on request");
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                killed += 1;
            }
        }
        Ok(killed)
    }

    /// Polls EC2 until `shutdown`, then stops every instance's units (as if they were
    /// terminated) and waits for them.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        let mut failures = 0u32;
        loop {
            match self.poll_once().await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %format!("{e:#}"), failures, "emulator poll failed");
                }
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
        tracing::info!("emulator stopping every instance");
        for entry in self.state().instances.values() {
            entry.stop.cancel();
        }
        self.tasks.close();
        self.tasks.wait().await;
        Ok(())
    }

    /// One look at EC2, and what follows from it.
    pub async fn poll_once(&self) -> anyhow::Result<()> {
        let mut pages = self
            .ec2
            .describe_instances()
            .filters(
                Filter::builder()
                    .name(format!("tag:{STACK_TAG}"))
                    .values(&self.config.stack)
                    .build(),
            )
            .into_paginator()
            .send();
        let mut listed = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.context("DescribeInstances")?;
            for r in page.reservations() {
                listed.extend(r.instances().iter().cloned());
            }
        }
        let mut to_boot = Vec::new();
        {
            let mut state = self.state();
            let mut present = std::collections::HashSet::new();
            for i in &listed {
                let Some(id) = i.instance_id() else { continue };
                present.insert(id.to_owned());
                let tag = |key: &str| {
                    i.tags()
                        .iter()
                        .find(|t| t.key() == Some(key))
                        .and_then(|t| t.value())
                        .unwrap_or_default()
                        .to_owned()
                };
                let ec2_state = i.state().and_then(|s| s.name()).cloned();
                let alive = matches!(
                    ec2_state,
                    Some(InstanceStateName::Pending | InstanceStateName::Running)
                );
                let entry = state.instances.entry(id.to_owned()).or_insert_with(|| {
                    let status = InstanceStatus {
                        id: id.to_owned(),
                        name: tag("Name"),
                        role: tag(ROLE_TAG),
                        image_id: i.image_id().unwrap_or_default().to_owned(),
                        ec2_state: String::new(),
                        phase: if alive {
                            Phase::Booting
                        } else {
                            Phase::Stopped
                        },
                        seen_at_ms: now_ms(),
                        up_at_ms: None,
                        stopped_at_ms: None,
                        units: Vec::new(),
                        root: self.config.state_dir.join("instances").join(id),
                    };
                    tracing::info!(
                        instance = id, name = %status.name, role = %status.role,
                        image = %status.image_id, ec2_state = ?ec2_state, "instance seen"
                    );
                    Entry {
                        status,
                        stop: CancellationToken::new(),
                        seen: tokio::time::Instant::now(),
                    }
                });
                entry.status.ec2_state = ec2_state
                    .as_ref()
                    .map_or("unknown", |s| s.as_str())
                    .to_owned();
                if alive {
                    if entry.status.phase == Phase::Booting
                        && entry.seen.elapsed() >= self.config.boot_delay
                    {
                        to_boot.push(id.to_owned());
                    }
                } else {
                    Self::terminated(entry);
                }
            }
            // An instance EC2 no longer lists is gone too.
            for (id, entry) in &mut state.instances {
                if !present.contains(id) {
                    entry.status.ec2_state = "gone".into();
                    Self::terminated(entry);
                }
            }
        }
        for id in to_boot {
            if let Err(e) = self.boot(&id).await {
                let reason = format!("{e:#}");
                tracing::error!(instance = %id, %reason, "boot failed");
                if let Some(entry) = self.state().instances.get_mut(&id) {
                    entry.status.phase = Phase::Failed(reason);
                }
            }
        }
        Ok(())
    }

    /// EC2 says the instance is going or gone: stop what runs on it.
    fn terminated(entry: &mut Entry) {
        match entry.status.phase {
            Phase::Booting => {
                tracing::info!(instance = %entry.status.id, "terminated before it booted");
                entry.status.phase = Phase::Stopped;
                entry.status.stopped_at_ms = Some(now_ms());
            }
            Phase::Up if entry.status.units.iter().all(|u| u.pid.is_none()) => {
                // Nothing runs on it (every unit ended for good): nothing to stop.
                entry.status.phase = Phase::Stopped;
                entry.status.stopped_at_ms = Some(now_ms());
                entry.stop.cancel();
            }
            Phase::Up => {
                tracing::info!(
                    instance = %entry.status.id, ec2_state = %entry.status.ec2_state,
                    "terminated: stopping its units (KillSignal, then SIGKILL after TimeoutStopSec)"
                );
                entry.status.phase = Phase::Stopping;
                entry.stop.cancel();
            }
            Phase::Stopping | Phase::Stopped | Phase::Failed(_) => {}
        }
    }

    /// Boots one instance: its user data, then its units.
    async fn boot(&self, id: &str) -> anyhow::Result<()> {
        let (role, image_id, root, stop) = {
            let state = self.state();
            let e = state.instances.get(id).context("instance vanished")?;
            (
                e.status.role.clone(),
                e.status.image_id.clone(),
                e.status.root.clone(),
                e.stop.clone(),
            )
        };
        anyhow::ensure!(
            image_id == self.config.image_id,
            "launched from {image_id}, but only {} (the rehearsal's image) can be emulated",
            self.config.image_id
        );
        let attribute = self
            .ec2
            .describe_instance_attribute()
            .instance_id(id)
            .attribute(InstanceAttributeName::UserData)
            .send()
            .await
            .context("DescribeInstanceAttribute userData")?;
        let encoded = attribute
            .user_data()
            .and_then(|v| v.value())
            .context("the instance has no user data")?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .context("user data is not base64")?;
        let text = String::from_utf8(bytes).context("user data is not UTF-8")?;
        let config = CloudConfig::parse(&text)?;

        let fs = InstanceRoot {
            root,
            image: self.config.image_dir.clone(),
        };
        for f in &config.write_files {
            anyhow::ensure!(
                InstanceRoot::writable(&f.path),
                "write_files {}: the emulated image only takes files under /etc/iras",
                f.path
            );
            let at = fs.resolve(&f.path);
            if let Some(dir) = at.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&at, &f.content).with_context(|| format!("writing {}", f.path))?;
            std::fs::set_permissions(
                &at,
                <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(f.mode),
            )?;
        }
        std::fs::create_dir_all(fs.root.join("journal"))?;
        let mut names = config.units.clone();
        names.extend(
            self.config
                .extra_units
                .iter()
                .filter(|(r, _)| *r == role)
                .map(|(_, u)| u.clone()),
        );
        let unit_dir = self.config.image_dir.join(UNIT_DIR);
        let mut units = Vec::new();
        for name in &names {
            let unit = ServiceUnit::load(&unit_dir, name)?;
            if let Some(missing) = unit
                .condition_paths
                .iter()
                .find(|p| !fs.resolve(&p.display().to_string()).exists())
            {
                tracing::warn!(instance = id, unit = %name, condition = %missing.display(),
                    "ConditionPathExists not met: unit skipped");
                continue;
            }
            units.push(unit);
        }
        let mut instance_env = self.config.instance_env.clone();
        instance_env.push((env::IRAS_INSTANCE_ID.into(), id.to_owned()));
        {
            let mut state = self.state();
            let e = state.instances.get_mut(id).context("instance vanished")?;
            e.status.phase = Phase::Up;
            e.status.up_at_ms = Some(now_ms());
            e.status.units = units
                .iter()
                .map(|u| UnitStatus {
                    name: u.name.clone(),
                    pid: None,
                    starts: 0,
                    exits: Vec::new(),
                })
                .collect();
        }
        tracing::info!(instance = id, %role, units = ?names, "booted");
        for unit in units {
            let supervisor = Supervisor {
                emulator: self.clone(),
                id: id.to_owned(),
                fs: fs.clone(),
                instance_env: instance_env.clone(),
                unit,
                stop: stop.clone(),
            };
            self.tasks.spawn(supervisor.run());
        }
        Ok(())
    }

    fn update_unit(&self, id: &str, unit: &str, f: impl FnOnce(&mut UnitStatus)) {
        let mut state = self.state();
        if let Some(e) = state.instances.get_mut(id) {
            if let Some(u) = e.status.units.iter_mut().find(|u| u.name == unit) {
                f(u);
            }
            let all_down = e.status.units.iter().all(|u| u.pid.is_none());
            if e.status.phase == Phase::Stopping && all_down {
                e.status.phase = Phase::Stopped;
                e.status.stopped_at_ms = Some(now_ms());
                tracing::info!(instance = id, drained = e.status.drained(), "stopped");
            }
        }
    }
}

/// systemd's part for one unit: start, restart per policy, stop on termination.
struct Supervisor {
    emulator: Emulator,
    id: String,
    fs: InstanceRoot,
    instance_env: Vec<(String, String)>,
    unit: ServiceUnit,
    /// Cancelled when the instance is terminated.
    stop: CancellationToken,
}

impl Supervisor {
    /// The environment systemd would give the process: a minimal base, the instance
    /// environment, `Environment=`, then the environment files (which beat `Environment=`).
    fn environment(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut env = vec![("PATH".to_owned(), "/usr/local/bin:/usr/bin:/bin".to_owned())];
        env.extend(self.instance_env.iter().cloned());
        env.extend(self.unit.environment.iter().cloned());
        for file in &self.unit.env_files {
            let path = self.fs.resolve(&file.path.display().to_string());
            match std::fs::read_to_string(&path) {
                Ok(text) => env.extend(parse_env_file(&text)),
                Err(_) if file.optional => {}
                Err(e) => anyhow::bail!("EnvironmentFile {}: {e}", file.path.display()),
            }
        }
        Ok(env
            .into_iter()
            .map(|(k, v)| {
                let v = self.fs.map_value(&v);
                (k, v)
            })
            .collect())
    }

    fn spawn(&self) -> anyhow::Result<tokio::process::Child> {
        let (program, args) = self
            .unit
            .exec_start
            .split_first()
            .context("empty ExecStart")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.fs.journal(&self.unit.name))?;
        let child = Command::new(self.fs.resolve(program))
            .args(args)
            .env_clear()
            .envs(self.environment()?)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group, like a service's cgroup: a Ctrl-C meant for the
            // emulator's terminal does not reach it, and a stop can signal all of it.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {program}"))?;
        Ok(child)
    }

    async fn run(self) {
        let name = self.unit.name.clone();
        loop {
            if self.stop.is_cancelled() {
                break;
            }
            let mut child = match self.spawn() {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(instance = %self.id, unit = %name, error = %format!("{e:#}"), "start failed");
                    if self.unit.restart == Restart::No || self.pause().await {
                        break;
                    }
                    continue;
                }
            };
            let pid = child.id().and_then(|p| i32::try_from(p).ok());
            tracing::info!(instance = %self.id, unit = %name, pid, "unit started");
            self.emulator.update_unit(&self.id, &name, |u| {
                u.pid = pid;
                u.starts += 1;
            });
            let (status, stopping, killed) = tokio::select! {
                status = child.wait() => (status, false, false),
                () = self.stop.cancelled() => {
                    if let Some(pid) = pid {
                        let _ = kill(Pid::from_raw(pid), self.unit.kill_signal);
                    }
                    match tokio::time::timeout(self.unit.timeout_stop, child.wait()).await {
                        Ok(status) => (status, true, false),
                        Err(_) => {
                            tracing::warn!(instance = %self.id, unit = %name,
                                "TimeoutStopSec passed: SIGKILL");
                            if let Some(pid) = pid {
                                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                            }
                            (child.wait().await, true, true)
                        }
                    }
                }
            };
            let (code, signal) = match &status {
                Ok(s) => (s.code(), std::os::unix::process::ExitStatusExt::signal(s)),
                Err(_) => (None, None),
            };
            tracing::info!(instance = %self.id, unit = %name, ?code, ?signal, stopping, killed, "unit ended");
            let exit = Exit {
                code,
                signal,
                stopping,
                killed_after_timeout: killed,
                at_ms: now_ms(),
            };
            let failed = code != Some(0);
            let restart = !stopping
                && match self.unit.restart {
                    Restart::No => false,
                    Restart::OnFailure => failed,
                    Restart::Always => true,
                };
            self.emulator.update_unit(&self.id, &name, |u| {
                u.pid = None;
                u.exits.push(exit);
            });
            if !restart || self.pause().await {
                break;
            }
        }
        // A unit that ended for good while the instance runs leaves it up (as systemd
        // does); the phase only moves on termination.
        self.emulator.update_unit(&self.id, &name, |_| {});
    }

    /// Waits `RestartSec`; true when the instance was terminated meanwhile.
    async fn pause(&self) -> bool {
        tokio::select! {
            () = self.stop.cancelled() => true,
            () = tokio::time::sleep(self.unit.restart_sec) => false,
        }
    }
}
