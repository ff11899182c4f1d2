//! The local fleet: app-tier child processes, named and listed like EC2 instances.
//!
//! Each process has a JSON record in `<state>/fleet/<stack>/<name>.json` holding its pid
//! and the pid's start time (so a recycled pid is never mistaken for it), plus a ready
//! flag file the process creates once it serves ([`crate::Cloud::mark_ready`]) and a log
//! file with its output. Records live on disk so a restarted scaler still sees, and can
//! stop, the processes it started; processes run in their own process group so a Ctrl-C
//! meant for the scaler's terminal does not reach them behind its back.
//!
//! Terminating sends SIGTERM (the app tier drains: it finishes the messages in hand) and
//! SIGKILL once the grace period has passed. Whatever a killed process had not finished
//! comes back to the queue when its visibility timeout runs out.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::error::{CloudError, Result};
use crate::fleet::{Fleet, FleetView, Instance, InstanceState, Launched, free_ordinals};
use crate::spec::{FleetSpec, LocalLaunch};
use iras_protocol::env;

/// Terminated records are kept this long (EC2 lists terminated instances for a while too).
const KEEP_TERMINATED: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: String,
    name: String,
    pid: i32,
    /// Field 22 of `/proc/<pid>/stat`: tells this process from a later one with the same pid.
    start_ticks: u64,
    launched_at_ms: u64,
    stop_requested_at_ms: Option<u64>,
    kill_after_ms: Option<u64>,
    terminated_at_ms: Option<u64>,
}

/// The app-tier processes of one stack.
#[derive(Debug, Clone)]
pub struct LocalFleet {
    dir: PathBuf,
    spec: FleetSpec,
    launch: LocalLaunch,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn fleet_error(action: &'static str, message: impl Into<String>) -> CloudError {
    CloudError::Fleet {
        action,
        message: message.into(),
        retryable: false,
    }
}

/// What `/proc` says about a pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProcStatus {
    /// No such process.
    Gone,
    /// A process with this start time (field 22 of `/proc/<pid>/stat`); `exited` when it is
    /// a zombie waiting to be reaped.
    Exists { start_ticks: u64, exited: bool },
    /// `/proc` could not be read (descriptor limits, no `/proc`): we cannot tell, so
    /// nothing may be concluded from it.
    Unknown,
}

fn proc_status(pid: i32) -> ProcStatus {
    let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return ProcStatus::Gone,
        Err(_) => return ProcStatus::Unknown,
    };
    // The command name (field 2) is in parentheses and may contain spaces: split after it.
    let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 2..)) else {
        return ProcStatus::Unknown;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let exited = fields.first().is_some_and(|s| *s == "Z" || *s == "X");
    match fields.get(19).and_then(|s| s.parse().ok()) {
        Some(start_ticks) => ProcStatus::Exists {
            start_ticks,
            exited,
        },
        None => ProcStatus::Unknown,
    }
}

impl Record {
    /// Whether the recorded process still runs. Only a missing pid, a pid now owned by a
    /// later process (other start time) or an exited one count as gone; when `/proc`
    /// cannot be read the process is presumed alive, so it is neither forgotten nor its
    /// name reused.
    fn alive(&self) -> bool {
        match proc_status(self.pid) {
            ProcStatus::Exists {
                start_ticks,
                exited,
            } if start_ticks == self.start_ticks => {
                if exited {
                    // Our child that exited: reap it (fails harmlessly if it is not ours).
                    let _ = waitpid(Pid::from_raw(self.pid), Some(WaitPidFlag::WNOHANG));
                }
                !exited
            }
            ProcStatus::Exists { .. } | ProcStatus::Gone => false,
            ProcStatus::Unknown => true,
        }
    }

    /// Signals the process's whole group (it leads one), so helpers it started go too.
    fn signal(&self, signal: Signal) {
        if self.alive() {
            let _ = kill(Pid::from_raw(-self.pid), signal);
        }
    }

    /// Its lifecycle state, read from the record, `/proc` and the ready flag in `dir`
    /// (changing nothing: the fleet's refresh records what it implies).
    fn state(&self, dir: &Path) -> InstanceState {
        if self.terminated_at_ms.is_some() || !self.alive() {
            InstanceState::Terminated
        } else if self.stop_requested_at_ms.is_some() {
            InstanceState::Stopping
        } else if ready_path(dir, &self.name).exists() {
            InstanceState::Running
        } else {
            InstanceState::Pending
        }
    }

    /// Terminated long enough ago to be forgotten.
    fn expired(&self, now_ms: u64) -> bool {
        self.terminated_at_ms
            .is_some_and(|t| now_ms.saturating_sub(t) > KEEP_TERMINATED.as_millis() as u64)
    }

    fn instance(self, state: InstanceState) -> Instance {
        Instance {
            id: self.id,
            name: self.name,
            state,
            launched_at: UNIX_EPOCH + Duration::from_millis(self.launched_at_ms),
        }
    }
}

/// `<state>/fleet/<stack>`, once the stack name and the instance name prefix are known to be
/// safe as file names.
fn fleet_dir(root: &Path, stack: &str, name_prefix: &str) -> Result<PathBuf> {
    for (what, value) in [("stack name", stack), ("instance name prefix", name_prefix)] {
        if value.is_empty()
            || value.starts_with('.')
            || !value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(CloudError::Config(format!(
                "invalid {what} {value:?}: use letters, digits, '-', '_' and '.', not first"
            )));
        }
    }
    Ok(root.join("fleet").join(stack))
}

fn ready_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.ready"))
}

/// Every readable record in `dir` (none when the directory does not exist yet).
fn read_records(dir: &Path) -> Result<Vec<Record>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CloudError::Io {
                action: "read fleet directory",
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut records = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        match std::fs::read(&path).map(|b| serde_json::from_slice::<Record>(&b)) {
            Ok(Ok(record)) => records.push(record),
            // A torn or foreign file: not ours to act on, and not fatal to the rest.
            Ok(Err(e)) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping unreadable fleet record")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping unreadable fleet record")
            }
        }
    }
    Ok(records)
}

/// The read-only view of a local fleet ([`crate::FleetView`]): the records as they are,
/// without the lock, the writes or the signals of the fleet's own refresh (records are
/// replaced atomically, so an unlocked read sees whole ones).
#[derive(Debug, Clone)]
pub struct LocalFleetView {
    dir: PathBuf,
    name_prefix: String,
}

impl LocalFleetView {
    pub(super) fn open(root: &Path, stack: &str, name_prefix: &str) -> Result<Self> {
        Ok(Self {
            dir: fleet_dir(root, stack, name_prefix)?,
            name_prefix: name_prefix.to_owned(),
        })
    }
}

#[async_trait]
impl FleetView for LocalFleetView {
    async fn list(&self) -> Result<Vec<Instance>> {
        let view = self.clone();
        blocking("list", move || {
            let now = now_ms();
            let mut instances: Vec<Instance> = read_records(&view.dir)?
                .into_iter()
                .filter(|r| r.name.starts_with(&view.name_prefix) && !r.expired(now))
                .map(|r| {
                    let state = r.state(&view.dir);
                    r.instance(state)
                })
                .collect();
            instances.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(instances)
        })
        .await
    }
}

impl LocalFleet {
    pub(super) fn open(root: &Path, spec: FleetSpec) -> Result<Self> {
        let launch = spec.local.clone().ok_or_else(|| {
            CloudError::Config(
                "the local fleet needs a local launch spec (the app-tier program)".into(),
            )
        })?;
        let dir = fleet_dir(root, &spec.stack, &spec.name_prefix)?;
        std::fs::create_dir_all(&dir).map_err(|source| CloudError::StateDir {
            path: dir.clone(),
            source,
        })?;
        Ok(Self { dir, spec, launch })
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    fn ready_path(&self, name: &str) -> PathBuf {
        ready_path(&self.dir, name)
    }

    /// Serialises launches and terminations of this fleet across processes.
    fn lock(&self) -> Result<File> {
        let path = self.dir.join(".lock");
        let file = File::create(&path).map_err(|source| CloudError::Io {
            action: "open fleet lock",
            path: path.clone(),
            source,
        })?;
        file.lock().map_err(|source| CloudError::Io {
            action: "lock fleet",
            path,
            source,
        })?;
        Ok(file)
    }

    fn read_records(&self) -> Result<Vec<Record>> {
        read_records(&self.dir)
    }

    fn write_record(&self, record: &Record) -> Result<()> {
        let path = self.record_path(&record.name);
        let bytes =
            serde_json::to_vec_pretty(record).map_err(|e| fleet_error("record", e.to_string()))?;
        let mut tmp =
            tempfile::NamedTempFile::new_in(&self.dir).map_err(|source| CloudError::Io {
                action: "write fleet record",
                path: path.clone(),
                source,
            })?;
        std::io::Write::write_all(&mut tmp, &bytes)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|source| CloudError::Io {
                action: "write fleet record",
                path: path.clone(),
                source,
            })?;
        tmp.persist(&path).map_err(|e| CloudError::Io {
            action: "write fleet record",
            path,
            source: e.error,
        })?;
        Ok(())
    }

    /// [`refresh`](Self::refresh) under the fleet lock: records are rewritten and pruned by
    /// name, and launches reuse names, so an unlocked refresh could overwrite or delete the
    /// record of an instance launched meanwhile.
    fn refresh_locked(&self) -> Result<Vec<Instance>> {
        let _lock = self.lock()?;
        self.refresh()
    }

    /// Brings every record up to date (the caller holds the fleet lock) (exits noticed, overdue kills done, old records
    /// pruned) and returns the instances.
    fn refresh(&self) -> Result<Vec<Instance>> {
        let now = now_ms();
        let mut instances = Vec::new();
        for mut record in self.read_records()? {
            let state = record.state(&self.dir);
            match state {
                InstanceState::Terminated if record.terminated_at_ms.is_none() => {
                    record.terminated_at_ms = Some(now);
                    self.write_record(&record)?;
                }
                InstanceState::Stopping if record.kill_after_ms.is_some_and(|t| now >= t) => {
                    tracing::warn!(instance = %record.name, pid = record.pid, "grace period over, sending SIGKILL");
                    record.signal(Signal::SIGKILL);
                }
                _ => {}
            }
            if record.expired(now) {
                let _ = std::fs::remove_file(self.record_path(&record.name));
                continue;
            }
            instances.push(record.instance(state));
        }
        instances.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(instances)
    }

    fn spawn(&self, name: &str) -> Result<Record> {
        let id = format!("local-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let ready = self.ready_path(name);
        let _ = std::fs::remove_file(&ready);
        let log_path = self.dir.join(format!("{name}.log"));
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| CloudError::Io {
                action: "open instance log",
                path: log_path.clone(),
                source,
            })?;
        let log_err = log.try_clone().map_err(|source| CloudError::Io {
            action: "open instance log",
            path: log_path.clone(),
            source,
        })?;
        let mut child = Command::new(&self.launch.program)
            .args(&self.launch.args)
            .envs(self.launch.env.iter().map(|(k, v)| (k, v)))
            .env(env::IRAS_INSTANCE_ID, &id)
            .env(env::IRAS_INSTANCE_NAME, name)
            .env(env::IRAS_READY_FILE, &ready)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .map_err(|e| {
                fleet_error(
                    "launch",
                    format!("cannot start {}: {e}", self.launch.program.display()),
                )
            })?;
        let pid = child.id() as i32;
        let ProcStatus::Exists { start_ticks, .. } = proc_status(pid) else {
            // Without its start time the process could never be told from a later one with
            // the same pid, so it could not be stopped safely: do not keep it.
            let _ = child.kill();
            let _ = child.wait();
            return Err(fleet_error(
                "launch",
                format!("cannot read /proc/{pid}/stat of the new process"),
            ));
        };
        // The child is reaped by `Record::alive` once it exits; dropping the handle neither
        // waits for nor kills it.
        drop(child);
        Ok(Record {
            id,
            name: name.to_owned(),
            pid,
            start_ticks,
            launched_at_ms: now_ms(),
            stop_requested_at_ms: None,
            kill_after_ms: None,
            terminated_at_ms: None,
        })
    }

    fn launch_blocking(&self, count: usize) -> Result<Launched> {
        let _lock = self.lock()?;
        let current = self.refresh()?;
        let mut launched = Vec::with_capacity(count);
        let stopped_short = |instances, e| Launched {
            instances,
            shortfall: Some(e),
        };
        for n in free_ordinals(&current, &self.spec.name_prefix, count) {
            let name = format!("{}{n}", self.spec.name_prefix);
            let record = match self.spawn(&name) {
                Ok(record) => record,
                Err(e) => return Ok(stopped_short(launched, e)),
            };
            if let Err(e) = self.write_record(&record) {
                // An instance without a record could never be listed or stopped.
                let _ = kill(Pid::from_raw(-record.pid), Signal::SIGKILL);
                let _ = waitpid(Pid::from_raw(record.pid), None);
                return Ok(stopped_short(launched, e));
            }
            tracing::info!(instance = %name, id = %record.id, pid = record.pid, "launched app-tier process");
            launched.push(Instance {
                id: record.id,
                name,
                state: InstanceState::Pending,
                launched_at: UNIX_EPOCH + Duration::from_millis(record.launched_at_ms),
            });
        }
        Ok(Launched::all(launched))
    }

    fn terminate_blocking(&self, ids: &[String]) -> Result<Vec<Record>> {
        let _lock = self.lock()?;
        let now = now_ms();
        let mut signalled = Vec::new();
        for mut record in self.read_records()? {
            if !ids.contains(&record.id) || record.terminated_at_ms.is_some() {
                continue;
            }
            if record.stop_requested_at_ms.is_none() {
                record.stop_requested_at_ms = Some(now);
                record.kill_after_ms = Some(now + self.launch.grace.as_millis() as u64);
                self.write_record(&record)?;
            }
            tracing::info!(instance = %record.name, pid = record.pid, "terminating app-tier process (SIGTERM)");
            record.signal(Signal::SIGTERM);
            signalled.push(record);
        }
        Ok(signalled)
    }
}

async fn blocking<T: Send + 'static>(
    action: &'static str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| fleet_error(action, e.to_string()))?
}

#[async_trait]
impl Fleet for LocalFleet {
    async fn list(&self) -> Result<Vec<Instance>> {
        let fleet = self.clone();
        blocking("list", move || fleet.refresh_locked()).await
    }

    async fn launch(&self, count: usize) -> Result<Launched> {
        let fleet = self.clone();
        blocking("launch", move || fleet.launch_blocking(count)).await
    }

    async fn terminate(&self, ids: &[String]) -> Result<()> {
        let fleet = self.clone();
        let ids = ids.to_vec();
        let signalled = blocking("terminate", move || fleet.terminate_blocking(&ids)).await?;
        if signalled.is_empty() {
            return Ok(());
        }
        // Enforce the grace period even if nobody lists the fleet in the meantime (a
        // restarted scaler enforces it on its first list instead).
        let grace = self.launch.grace;
        let fleet = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let _ = blocking("list", move || fleet.refresh_locked()).await;
        });
        Ok(())
    }
}
