//! The EC2 app-tier fleet.
//!
//! Instances of a fleet carry the tag `iras:stack=<stack>` and a `Name` of
//! `<prefix><N>`; `list` asks EC2 for the stack tag and keeps the names with the prefix,
//! and `terminate` only ever terminates ids found that way, so a scaler can never stop an
//! instance that is not its own, whatever ids it is handed.
//!
//! The fleet handle, its checks and the [`Fleet`] operations live here; the rest is split
//! along its seams:
//!
//! - `launch`: one `RunInstances` request (hardening, tags, user data, client token) and
//!   the AMI's root device lookup;
//! - `placement`: which instance type and subnet to try next, and what a refusal means
//!   (capacity moves on, quota stops);
//! - `listing`: `DescribeInstances`, the state mapping with the readiness tag, and the
//!   recent launches EC2 does not show yet.
//!
//! Three decisions a reader may question:
//!
//! - **One `RunInstances` per instance, each with its own client token.** A launch that
//!   times out may still have happened; EC2 deduplicates requests that carry the same
//!   `ClientToken`, so a retry (the SDK's, which re-sends the same serialized request)
//!   cannot double the fleet. The token is derived from (stack, name, a nonce drawn once
//!   per `launch` call), not just (stack, name): names are reused after termination, and
//!   EC2 remembers a token for a long time after the instance is gone, so a later launch
//!   of the same name with the same token would get the old, terminated instance back
//!   instead of a new one. We set it ourselves rather than let the SDK fill in a random
//!   one so it is known to us: it is logged with the launch, and it is a pure function we
//!   can test (moto ignores client tokens, so the conformance suite cannot).
//! - **An in-memory record of recent launches.** `DescribeInstances` is eventually
//!   consistent: an instance can be missing from it for a few seconds after
//!   `RunInstances` returned. A scaler that listed in that window would see too few
//!   instances and launch again. So `launch` remembers what it started for
//!   [`RECENT_LAUNCH_TTL`], and `list` adds any of those EC2 does not show yet (as
//!   pending). Launches are serialised within the fleet handle for the same reason: two
//!   overlapping launches would pick the same free names.
//! - **Every launch is hardened the same way, whatever the AMI.** `RunInstances` always
//!   carries `MetadataOptions` requiring IMDSv2 (session tokens, hop limit 1) and a block
//!   device mapping that makes the root volume an encrypted gp3 volume deleted with the
//!   instance (the web instance's launch template asks for IMDSv2 and an encrypted gp3
//!   root too), so no AMI setting can turn either off. A mapping only replaces
//!   the root volume under the AMI's own root device name, so that name comes from the
//!   launch spec or, when unset, from `DescribeImages`, asked once per fleet handle.
//! - **Placements, and running out of room.** A launch tries the spec's instance types
//!   (preferred first) in each of its subnets until one starts. Capacity errors
//!   (`InsufficientInstanceCapacity`, a type not offered in a zone, a full subnet) move on
//!   to the next placement; quota errors (`VcpuLimitExceeded`, `InstanceLimitExceeded`)
//!   stop the launch at once, since the quota is the account's, wherever the instance
//!   goes. Either way the instances already started come back with the error as the
//!   launch's shortfall ([`CloudError::NoCapacity`]), so the scaler keeps what it got and
//!   knows why it got no more. The placement that last worked is tried first next time.
//! - **State mapping.** EC2's `running` is [`InstanceState::Running`] only with the
//!   [`READY_TAG`](crate::fleet::READY_TAG) the app tier sets once it serves; before that
//!   it is pending. `stopping` and `shutting-down` are [`InstanceState::Stopping`],
//!   `stopped` is [`InstanceState::Stopped`] (the scaler terminates it), `terminated` is
//!   [`InstanceState::Terminated`]; a state this SDK does not know is counted as pending,
//!   so it is neither relaunched nor forgotten.

mod launch;
mod listing;
mod placement;
#[cfg(test)]
mod test_support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_ec2::Client;

use super::Failure;
use crate::error::{CloudError, Result};
use crate::fleet::{Fleet, Instance, InstanceState, Launched, free_ordinals};
use crate::spec::{Ec2Launch, FleetSpec, MAX_GP3_VOLUME_GIB};

pub use listing::Ec2FleetView;
pub(super) use listing::tag_ready;
use placement::{Placement, placements};

const SERVICE: &str = "ec2";

/// The tag that marks an instance as part of a stack's fleet.
pub(crate) const STACK_TAG: &str = "iras:stack";
/// How long `list` vouches for an instance it launched that `DescribeInstances` does not
/// show yet. EC2 usually catches up within seconds.
pub(crate) const RECENT_LAUNCH_TTL: Duration = Duration::from_secs(120);

/// An instance `launch` started, remembered until EC2 lists it reliably.
#[derive(Debug, Clone)]
struct RecentLaunch {
    instance: Instance,
    at: Instant,
}

/// The EC2 app-tier fleet.
#[derive(Debug, Clone)]
pub struct Ec2Fleet {
    client: Client,
    spec: FleetSpec,
    launch: Ec2Launch,
    /// Instances launched in the last [`RECENT_LAUNCH_TTL`], by id: merged into `list`
    /// while `DescribeInstances` lags. A std mutex: only held for map updates, never
    /// across an `.await`.
    recent: Arc<Mutex<HashMap<String, RecentLaunch>>>,
    /// Serialises `launch` calls on this handle, so two cannot pick the same free names.
    /// A tokio mutex because it is held across the EC2 calls of one launch.
    launching: Arc<tokio::sync::Mutex<()>>,
    /// The AMI's root device name: the launch spec's, or looked up on the first launch and
    /// kept (an AMI's root device never changes). A failed lookup is not kept, so the next
    /// launch asks again.
    root_device: Arc<tokio::sync::OnceCell<String>>,
    /// Every (instance type, subnet) to try, preferred first.
    placements: Arc<Vec<Placement>>,
    /// Index into `placements` of the one that last started an instance: tried first.
    preferred: Arc<Mutex<usize>>,
}

impl Ec2Fleet {
    pub(super) fn new(client: Client, spec: FleetSpec) -> Result<Self> {
        let launch = spec.ec2.clone().ok_or_else(|| {
            CloudError::Config(
                "the aws backend needs an EC2 launch spec for the fleet (AMI, instance type, …)"
                    .into(),
            )
        })?;
        if launch.image_id.trim().is_empty()
            || launch.instance_types.is_empty()
            || launch.instance_types.iter().any(|t| t.trim().is_empty())
        {
            return Err(CloudError::Config(
                "the EC2 launch spec needs an AMI id and at least one instance type (none empty)"
                    .into(),
            ));
        }
        if launch.subnet_ids.iter().any(|s| s.trim().is_empty()) {
            return Err(CloudError::Config(
                "the EC2 launch spec has an empty subnet id".into(),
            ));
        }
        if spec.stack.is_empty() || spec.name_prefix.is_empty() {
            return Err(CloudError::Config(
                "the fleet needs a stack name and an instance name prefix".into(),
            ));
        }
        if let Some(gib) = launch.root_volume_gib
            && !(1..=MAX_GP3_VOLUME_GIB).contains(&gib)
        {
            return Err(CloudError::Config(format!(
                "the root volume size must be 1..={MAX_GP3_VOLUME_GIB} GiB, got {gib}"
            )));
        }
        let root_device = match launch.root_device_name.as_deref().map(str::trim) {
            Some("") => {
                return Err(CloudError::Config(
                    "the root device name is empty (leave it unset to take the AMI's)".into(),
                ));
            }
            Some(name) => tokio::sync::OnceCell::new_with(Some(name.to_owned())),
            None => tokio::sync::OnceCell::new(),
        };
        Ok(Self {
            client,
            spec,
            placements: Arc::new(placements(&launch)),
            launch,
            recent: Arc::new(Mutex::new(HashMap::new())),
            launching: Arc::new(tokio::sync::Mutex::new(())),
            root_device: Arc::new(root_device),
            preferred: Arc::new(Mutex::new(0)),
        })
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, HashMap<String, RecentLaunch>> {
        // The map holds plain data, consistent after every statement; a panic elsewhere
        // while it was locked cannot have left it half-updated.
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Fleet for Ec2Fleet {
    async fn list(&self) -> Result<Vec<Instance>> {
        let listed = self.describe().await?;
        Ok(self.merge_recent(listed))
    }

    async fn launch(&self, count: usize) -> Result<Launched> {
        if count == 0 {
            return Ok(Launched::all(Vec::new()));
        }
        let _one_launch_at_a_time = self.launching.lock().await;
        let current = self.list().await?;
        let names: Vec<String> = free_ordinals(&current, &self.spec.name_prefix, count)
            .into_iter()
            .map(|n| format!("{}{n}", self.spec.name_prefix))
            .collect();
        let root_device = self.root_device_name().await?.to_owned();
        let nonce: u64 = rand::random();
        let mut launched = Vec::with_capacity(names.len());
        for name in &names {
            match self.launch_one(name, nonce, &root_device).await {
                Ok(instance) => {
                    self.recent().insert(
                        instance.id.clone(),
                        RecentLaunch {
                            instance: instance.clone(),
                            at: Instant::now(),
                        },
                    );
                    launched.push(instance);
                }
                Err(e) => {
                    // The ones already started stay recorded, so the next list shows them.
                    tracing::warn!(
                        launched = launched.len(),
                        wanted = names.len(),
                        error = %e,
                        "launch stopped short"
                    );
                    return Ok(Launched {
                        instances: launched,
                        shortfall: Some(e),
                    });
                }
            }
        }
        Ok(Launched::all(launched))
    }

    async fn terminate(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        // Only this fleet's instances, and only those not already gone.
        let ours: HashSet<String> = self
            .list()
            .await?
            .into_iter()
            .filter(|i| i.state != InstanceState::Terminated)
            .map(|i| i.id)
            .collect();
        let mut targets: Vec<String> = ids
            .iter()
            .filter(|id| ours.contains(*id))
            .cloned()
            .collect();
        targets.sort();
        targets.dedup();
        if targets.is_empty() {
            return Ok(());
        }
        tracing::info!(ids = ?targets, "terminating instances");
        self.client
            .terminate_instances()
            .set_instance_ids(Some(targets.clone()))
            .send()
            .await
            .map_err(|e| {
                let failure = Failure::of(&e);
                if failure.has_code(&["InvalidInstanceID.NotFound"]) {
                    // Launched moments ago and not yet known to every EC2 endpoint.
                    return CloudError::Fleet {
                        action: "terminate",
                        message: format!(
                            "EC2 does not know all of {targets:?} yet: {}",
                            failure.message
                        ),
                        retryable: true,
                    };
                }
                failure.into_error(SERVICE, "TerminateInstances")
            })?;
        let mut recent = self.recent();
        for id in &targets {
            if let Some(r) = recent.get_mut(id) {
                r.instance.state = InstanceState::Stopping;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn the_fleet_needs_an_ec2_spec() {
        let client = offline_client("http://127.0.0.1:9");
        let mut s = spec();
        s.ec2 = None;
        assert!(matches!(
            Ec2Fleet::new(client.clone(), s),
            Err(CloudError::Config(_))
        ));
        assert!(Ec2Fleet::new(client, spec()).is_ok());
    }

    #[test]
    fn root_volume_settings_are_checked() {
        let client = offline_client("http://127.0.0.1:9");
        let with = |device: Option<&str>, gib: Option<i32>| {
            let mut s = spec();
            if let Some(ec2) = s.ec2.as_mut() {
                ec2.root_device_name = device.map(str::to_owned);
                ec2.root_volume_gib = gib;
            }
            Ec2Fleet::new(client.clone(), s)
        };
        assert!(with(None, None).is_ok());
        assert!(with(Some("/dev/xvda"), Some(1)).is_ok());
        assert!(with(None, Some(MAX_GP3_VOLUME_GIB)).is_ok());
        for (device, gib) in [
            (Some(" "), None),
            (None, Some(0)),
            (None, Some(-8)),
            (None, Some(MAX_GP3_VOLUME_GIB + 1)),
        ] {
            assert!(
                matches!(with(device, gib), Err(CloudError::Config(_))),
                "{device:?} {gib:?}"
            );
        }
    }
}
