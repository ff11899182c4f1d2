//! The fleet interface: the app-tier instances the scaler grows and shrinks.
//!
//! On AWS an instance is an EC2 instance started from the app-tier AMI; locally it is an
//! app-tier child process. Both are named `<prefix><N>` (`app-tier-1`, `app-tier-2`, …)
//! reusing the lowest free N, and both report the same lifecycle states, so the scaler
//! cannot tell them apart.
//!
//! **Ready, not merely running.** An instance is [`InstanceState::Running`] only once its
//! app tier has said it serves ([`crate::Cloud::mark_ready`], after loading the model and
//! classifying a self-test image): locally a ready file, on EC2 the tag [`READY_TAG`] the
//! app tier puts on its own instance. Until then it is pending, however long EC2 has had
//! it running, so an app tier that restart-loops on a broken runtime or model is visibly
//! never ready, and the scaler can replace it instead of counting it as capacity forever.

use std::fmt;
use std::time::SystemTime;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Lifecycle state of an instance, as EC2 names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    /// Launched, not yet serving: booting, loading the model, or never reporting ready.
    Pending,
    /// Serving: the app tier reported ready.
    Running,
    /// Asked to stop; draining its in-flight work.
    Stopping,
    /// Stopped but not terminated (EC2 `stopped`, e.g. by an operator or a failed host):
    /// it serves nothing, still costs its volume and still holds its name, so the scaler
    /// terminates it.
    Stopped,
    /// Gone.
    Terminated,
}

impl InstanceState {
    /// Pending or running: what the scaler counts as capacity.
    pub fn is_active(self) -> bool {
        matches!(self, InstanceState::Pending | InstanceState::Running)
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
            InstanceState::Terminated => "terminated",
        })
    }
}

/// One app-tier instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The backend's id (`i-0abc…` on EC2; `local-<pid>-<nonce>` locally).
    pub id: String,
    /// The `Name` tag: `<prefix><N>`.
    pub name: String,
    /// Where it is in its lifecycle.
    pub state: InstanceState,
    /// When it was launched.
    pub launched_at: SystemTime,
}

impl Instance {
    /// The N of `<prefix><N>`, if the name has that shape.
    pub fn ordinal(&self, prefix: &str) -> Option<u32> {
        self.name.strip_prefix(prefix)?.parse().ok()
    }
}

/// The EC2 tag an app tier puts on its own instance once it serves (its value: when, in
/// RFC 3339). The EC2 fleet lists a running instance without it as pending.
pub const READY_TAG: &str = "iras:ready";

/// Why a launch started fewer instances than asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shortage {
    /// The account's limit (EC2 `VcpuLimitExceeded`, `InstanceLimitExceeded`): nothing
    /// launches until instances end or the quota is raised.
    Quota,
    /// No room where we asked (EC2 `InsufficientInstanceCapacity`, a type not offered in
    /// the zone, a full subnet), in every placement tried: may pass in minutes.
    Capacity,
}

impl fmt::Display for Shortage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Shortage::Quota => "quota",
            Shortage::Capacity => "capacity",
        })
    }
}

/// What a launch started, and why it stopped short if it did.
#[derive(Debug)]
pub struct Launched {
    /// The instances started (pending), possibly fewer than asked.
    pub instances: Vec<Instance>,
    /// Set when fewer than asked were started: the error that stopped the launch. The
    /// instances above were started all the same and are listed from now on.
    pub shortfall: Option<crate::CloudError>,
}

impl Launched {
    /// Every instance asked for was started.
    pub fn all(instances: Vec<Instance>) -> Self {
        Self {
            instances,
            shortfall: None,
        }
    }
}

/// The app-tier fleet. Cheap to share as `Arc<dyn Fleet>`.
#[async_trait]
pub trait Fleet: Send + Sync + fmt::Debug {
    /// The instances of this fleet in every state but long-gone ones (terminated instances
    /// may be listed for a while, as EC2 does).
    async fn list(&self) -> Result<Vec<Instance>>;

    /// Launches `count` instances, naming them with the lowest free ordinals. Starts as
    /// many as it can: the new instances (pending) come back with the error that stopped
    /// the launch short, if one did. `Err` means nothing was started.
    async fn launch(&self, count: usize) -> Result<Launched>;

    /// Asks the given instances (by id) to stop: they drain and then end. Unknown or
    /// already terminated ids are ignored.
    async fn terminate(&self, ids: &[String]) -> Result<()>;
}

/// A read-only look at a fleet: what it holds and in which state, as [`Fleet::list`] shows
/// it, for an observer in another process than the scaler (the web tier's live view). It
/// needs no launch spec and changes nothing: it never launches, terminates, signals or
/// rewrites a record, so any number of observers may look while the scaler acts.
#[async_trait]
pub trait FleetView: Send + Sync + fmt::Debug {
    /// The fleet's instances, as [`Fleet::list`] would list them (less the launches only
    /// the scaler's own handle knows of, which EC2 lists a few seconds later).
    async fn list(&self) -> Result<Vec<Instance>>;
}

/// The lowest `count` ordinals (starting at 1) not used by an active or stopping instance.
pub fn free_ordinals(instances: &[Instance], prefix: &str, count: usize) -> Vec<u32> {
    let used: std::collections::HashSet<u32> = instances
        .iter()
        .filter(|i| i.state != InstanceState::Terminated)
        .filter_map(|i| i.ordinal(prefix))
        .collect();
    (1..).filter(|n| !used.contains(n)).take(count).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(name: &str, state: InstanceState) -> Instance {
        Instance {
            id: name.into(),
            name: name.into(),
            state,
            launched_at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn free_ordinals_reuse_gaps_and_terminated_names() {
        let fleet = vec![
            inst("app-tier-1", InstanceState::Running),
            inst("app-tier-2", InstanceState::Terminated),
            inst("app-tier-3", InstanceState::Stopping),
            inst("other", InstanceState::Running),
        ];
        assert_eq!(free_ordinals(&fleet, "app-tier-", 3), vec![2, 4, 5]);
        assert_eq!(free_ordinals(&[], "app-tier-", 2), vec![1, 2]);
    }
}
