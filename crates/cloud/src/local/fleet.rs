//! The local fleet: app-tier child processes, named and listed like EC2 instances.
//!
//! Each process has a JSON record in `<state>/fleet/<stack>/<name>.json` holding its pid
//! and the pid's start time (so a recycled pid is never mistaken for it), plus a ready
//! flag file the process creates once it serves ([`crate::mark_instance_ready`]) and a log
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

use crate::env;
use crate::error::{CloudError, Result};
use crate::fleet::{Fleet, Instance, InstanceState, free_ordinals};
use crate::spec::{FleetSpec, LocalLaunch};

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

/// What `/proc` says about a pid: its start time and whether it already exited (zombie).
fn proc_status(pid: i32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let zombie = fields.first().is_some_and(|s| *s == "Z" || *s == "X");
    let start = fields.get(19)?.parse().ok()?;
    Some((start, zombie))
}

impl Record {
    fn alive(&self) -> bool {
        match proc_status(self.pid) {
            Some((start, zombie)) if start == self.start_ticks => {
                if zombie {
                    // Our child that exited: reap it (fails harmlessly if it is not ours).
                    let _ = waitpid(Pid::from_raw(self.pid), Some(WaitPidFlag::WNOHANG));
                }
                !zombie
            }
            _ => false,
        }
    }

    /// Signals the process's whole group (it leads one), so helpers it started go too.
    fn signal(&self, signal: Signal) {
        if self.alive() {
            let _ = kill(Pid::from_raw(-self.pid), signal);
        }
    }
}

impl LocalFleet {
    pub(super) fn open(root: &Path, spec: FleetSpec) -> Result<Self> {
        let launch = spec.local.clone().ok_or_else(|| {
            CloudError::Config(
                "the local fleet needs a local launch spec (the app-tier program)".into(),
            )
        })?;
        if spec.stack.is_empty() || spec.stack.contains(['/', '\\']) || spec.stack.starts_with('.')
        {
            return Err(CloudError::Config(format!(
                "invalid stack name {:?}",
                spec.stack
            )));
        }
        let dir = root.join("fleet").join(&spec.stack);
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
        self.dir.join(format!("{name}.ready"))
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
        let entries = std::fs::read_dir(&self.dir).map_err(|source| CloudError::Io {
            action: "read fleet directory",
            path: self.dir.clone(),
            source,
        })?;
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

    /// Brings every record up to date (exits noticed, overdue kills done, old records
    /// pruned) and returns the instances.
    fn refresh(&self) -> Result<Vec<Instance>> {
        let now = now_ms();
        let mut instances = Vec::new();
        for mut record in self.read_records()? {
            let state = if record.terminated_at_ms.is_some() {
                InstanceState::Terminated
            } else if !record.alive() {
                record.terminated_at_ms = Some(now);
                self.write_record(&record)?;
                InstanceState::Terminated
            } else if record.stop_requested_at_ms.is_some() {
                if record.kill_after_ms.is_some_and(|t| now >= t) {
                    tracing::warn!(instance = %record.name, pid = record.pid, "grace period over, sending SIGKILL");
                    record.signal(Signal::SIGKILL);
                }
                InstanceState::Stopping
            } else if self.ready_path(&record.name).exists() {
                InstanceState::Running
            } else {
                InstanceState::Pending
            };
            if state == InstanceState::Terminated
                && record
                    .terminated_at_ms
                    .is_some_and(|t| now.saturating_sub(t) > KEEP_TERMINATED.as_millis() as u64)
            {
                let _ = std::fs::remove_file(self.record_path(&record.name));
                continue;
            }
            instances.push(Instance {
                id: record.id,
                name: record.name,
                state,
                launched_at: UNIX_EPOCH + Duration::from_millis(record.launched_at_ms),
            });
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
        let child = Command::new(&self.launch.program)
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
        // The child is reaped by `Record::alive` once it exits; dropping the handle neither
        // waits for nor kills it.
        drop(child);
        let start_ticks = proc_status(pid).map_or(0, |(start, _)| start);
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

    fn launch_blocking(&self, count: usize) -> Result<Vec<Instance>> {
        let _lock = self.lock()?;
        let current = self.refresh()?;
        let mut launched = Vec::with_capacity(count);
        for n in free_ordinals(&current, &self.spec.name_prefix, count) {
            let name = format!("{}{n}", self.spec.name_prefix);
            let record = self.spawn(&name)?;
            self.write_record(&record)?;
            tracing::info!(instance = %name, id = %record.id, pid = record.pid, "launched app-tier process");
            launched.push(Instance {
                id: record.id,
                name,
                state: InstanceState::Pending,
                launched_at: UNIX_EPOCH + Duration::from_millis(record.launched_at_ms),
            });
        }
        Ok(launched)
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
        blocking("list", move || fleet.refresh()).await
    }

    async fn launch(&self, count: usize) -> Result<Vec<Instance>> {
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
            let _ = blocking("list", move || fleet.refresh()).await;
        });
        Ok(())
    }
}
