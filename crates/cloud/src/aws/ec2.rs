//! The EC2 app-tier fleet.
//!
//! Instances of a fleet carry the tag `iras:stack=<stack>` and a `Name` of
//! `<prefix><N>`; `list` asks EC2 for the stack tag and keeps the names with the prefix,
//! and `terminate` only ever terminates ids found that way, so a scaler can never stop an
//! instance that is not its own, whatever ids it is handed.
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
//!   [`READY_TAG`] the app tier sets once it serves; before that it is pending. `stopping`
//!   and `shutting-down` are [`InstanceState::Stopping`], `stopped` is
//!   [`InstanceState::Stopped`] (the scaler terminates it), `terminated` is
//!   [`InstanceState::Terminated`]; a state this SDK does not know is counted as pending,
//!   so it is neither relaunched nor forgotten.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, IamInstanceProfileSpecification,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest, InstanceStateName, InstanceType,
    ResourceType, Tag, TagSpecification, VolumeType,
};

use super::{Failure, malformed};
use crate::error::{CloudError, Result};
use crate::fleet::{Fleet, Instance, InstanceState, Launched, READY_TAG, Shortage, free_ordinals};
use crate::spec::{Ec2Launch, FleetSpec, MAX_GP3_VOLUME_GIB};

const SERVICE: &str = "ec2";

/// The tag that marks an instance as part of a stack's fleet.
pub(crate) const STACK_TAG: &str = "iras:stack";
/// How long `list` vouches for an instance it launched that `DescribeInstances` does not
/// show yet. EC2 usually catches up within seconds.
pub(crate) const RECENT_LAUNCH_TTL: Duration = Duration::from_secs(120);
/// Longest client token EC2 accepts.
const MAX_CLIENT_TOKEN_LEN: usize = 64;
/// Hops an IMDSv2 token response may travel: 1 reaches processes on the instance but not
/// a container behind a bridge or anything a packet is forwarded to, so only the instance
/// itself can get a token for the instance role's credentials.
const METADATA_HOP_LIMIT: i32 = 1;

/// The instance metadata settings of every launch: IMDSv2 only. With `HttpTokens=required`
/// the metadata service answers only requests that carry a session token from a `PUT`,
/// which an SSRF through a `GET`-only proxy cannot obtain; IMDSv1 would hand the app tier's
/// credentials to any such request. The endpoint stays enabled because the app tier's SDK
/// reads its role credentials from it.
fn metadata_options() -> InstanceMetadataOptionsRequest {
    InstanceMetadataOptionsRequest::builder()
        .http_tokens(HttpTokensState::Required)
        .http_endpoint(InstanceMetadataEndpointState::Enabled)
        .http_put_response_hop_limit(METADATA_HOP_LIMIT)
        .build()
}

/// The root volume of every launch: encrypted (with the account's default EBS key), gp3,
/// deleted with the instance, of `size_gib` or else the AMI snapshot's size.
fn root_volume(device_name: &str, size_gib: Option<i32>) -> BlockDeviceMapping {
    BlockDeviceMapping::builder()
        .device_name(device_name)
        .ebs(
            EbsBlockDevice::builder()
                .encrypted(true)
                .volume_type(VolumeType::Gp3)
                .delete_on_termination(true)
                .set_volume_size(size_gib)
                .build(),
        )
        .build()
}

/// Maps an EC2 state name, and whether the instance carries the [`READY_TAG`], to ours
/// (see the module docs).
pub(crate) fn map_state(state: &InstanceStateName, ready: bool) -> InstanceState {
    match state {
        InstanceStateName::Running if ready => InstanceState::Running,
        InstanceStateName::Pending | InstanceStateName::Running => InstanceState::Pending,
        InstanceStateName::Stopping | InstanceStateName::ShuttingDown => InstanceState::Stopping,
        InstanceStateName::Stopped => InstanceState::Stopped,
        InstanceStateName::Terminated => InstanceState::Terminated,
        _ => InstanceState::Pending,
    }
}

/// `RunInstances` error codes that mean the account's limit is reached: no other
/// placement helps.
const QUOTA_CODES: &[&str] = &["VcpuLimitExceeded", "InstanceLimitExceeded"];
/// `RunInstances` error codes that mean no room in this placement: another instance type
/// or subnet (zone) may have some.
const CAPACITY_CODES: &[&str] = &[
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "InsufficientFreeAddressesInSubnet",
    "Unsupported",
];

/// One place to try a launch: an instance type in a subnet (`None`: EC2's default).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Placement {
    instance_type: String,
    subnet_id: Option<String>,
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} in {}",
            self.instance_type,
            self.subnet_id.as_deref().unwrap_or("the default subnet")
        )
    }
}

/// Every instance type in every subnet, preferred type first.
fn placements(launch: &Ec2Launch) -> Vec<Placement> {
    let subnets: Vec<Option<String>> = if launch.subnet_ids.is_empty() {
        vec![None]
    } else {
        launch.subnet_ids.iter().cloned().map(Some).collect()
    };
    launch
        .instance_types
        .iter()
        .flat_map(|t| {
            subnets.iter().map(move |s| Placement {
                instance_type: t.clone(),
                subnet_id: s.clone(),
            })
        })
        .collect()
}

/// What one failed `RunInstances` means for the rest of the launch.
enum RunFailure {
    /// This placement has no room: try the next.
    NoRoomHere(String),
    /// The account's quota: stop launching.
    Quota(String),
    /// Anything else: stop launching.
    Other(CloudError),
}

fn classify_run_failure(failure: super::Failure) -> RunFailure {
    let described = || {
        format!(
            "{}: {}",
            failure.code.as_deref().unwrap_or("?"),
            failure.message
        )
    };
    if failure.has_code(QUOTA_CODES) {
        RunFailure::Quota(described())
    } else if failure.has_code(CAPACITY_CODES) {
        RunFailure::NoRoomHere(described())
    } else {
        RunFailure::Other(failure.into_error(SERVICE, "RunInstances"))
    }
}

/// 64-bit FNV-1a: a tiny, stable hash (the standard library's hasher may change between
/// Rust releases, and a token must not).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The `ClientToken` for launching `name` of `stack` in the launch identified by `nonce`:
/// the same inputs always give the same token; a different stack, name or launch gives a
/// different one.
pub(crate) fn client_token(stack: &str, name: &str, nonce: u64) -> String {
    let digest = fnv1a(&[stack.as_bytes(), name.as_bytes(), &nonce.to_be_bytes()]);
    let token = format!("iras-{digest:016x}-{nonce:016x}");
    debug_assert!(token.len() <= MAX_CLIENT_TOKEN_LEN);
    token
}

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

    /// The AMI's root device name (see [`Ec2Fleet::root_device`]).
    async fn root_device_name(&self) -> Result<&str> {
        let name = self
            .root_device
            .get_or_try_init(|| describe_root_device(&self.client, &self.launch.image_id))
            .await?;
        Ok(name.as_str())
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, HashMap<String, RecentLaunch>> {
        // The map holds plain data, consistent after every statement; a panic elsewhere
        // while it was locked cannot have left it half-updated.
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What EC2 shows for this stack (instances whose name has the prefix).
    async fn describe(&self) -> Result<Vec<Instance>> {
        let mut pages = self
            .client
            .describe_instances()
            .filters(
                Filter::builder()
                    .name(format!("tag:{STACK_TAG}"))
                    .values(&self.spec.stack)
                    .build(),
            )
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| Failure::of(&e).into_error(SERVICE, "DescribeInstances"))?;
            for reservation in page.reservations() {
                out.extend(
                    reservation
                        .instances()
                        .iter()
                        .filter_map(|i| self.to_instance(i)),
                );
            }
        }
        Ok(out)
    }

    /// Our view of an EC2 instance, if it is one of this fleet's.
    fn to_instance(&self, i: &aws_sdk_ec2::types::Instance) -> Option<Instance> {
        let tag = |key: &str| {
            i.tags()
                .iter()
                .find(|t| t.key() == Some(key))
                .and_then(|t| t.value())
        };
        if tag(STACK_TAG) != Some(self.spec.stack.as_str()) {
            return None;
        }
        let name = tag("Name").filter(|n| n.starts_with(&self.spec.name_prefix))?;
        let ready = tag(READY_TAG).is_some();
        Some(Instance {
            id: i.instance_id()?.to_owned(),
            name: name.to_owned(),
            state: i
                .state()
                .and_then(|s| s.name())
                .map_or(InstanceState::Pending, |s| map_state(s, ready)),
            launched_at: i
                .launch_time()
                .and_then(|t| SystemTime::try_from(*t).ok())
                .unwrap_or(SystemTime::UNIX_EPOCH),
        })
    }

    /// EC2's list plus the recent launches it does not show yet.
    fn merge_recent(&self, mut listed: Vec<Instance>) -> Vec<Instance> {
        let mut recent = self.recent();
        recent.retain(|_, r| r.at.elapsed() < RECENT_LAUNCH_TTL);
        let seen: HashSet<&str> = listed.iter().map(|i| i.id.as_str()).collect();
        let missing: Vec<Instance> = recent
            .values()
            .filter(|r| !seen.contains(r.instance.id.as_str()))
            .map(|r| r.instance.clone())
            .collect();
        listed.extend(missing);
        listed
    }

    /// The tags every instance gets: `Name`, the stack tag and the spec's extra tags.
    fn tags(&self, name: &str) -> Vec<Tag> {
        let mut tags = vec![
            Tag::builder().key("Name").value(name).build(),
            Tag::builder()
                .key(STACK_TAG)
                .value(&self.spec.stack)
                .build(),
        ];
        tags.extend(
            self.spec
                .tags
                .iter()
                .filter(|(k, _)| k != "Name" && k != STACK_TAG)
                .map(|(k, v)| Tag::builder().key(k).value(v).build()),
        );
        tags
    }

    /// One `RunInstances` for one named instance in one placement, with the given client
    /// token.
    async fn run_instance(
        &self,
        name: &str,
        token: &str,
        placement: &Placement,
        root_device: &str,
    ) -> std::result::Result<Instance, RunFailure> {
        let l = &self.launch;
        let profile = l.instance_profile.as_deref().map(|p| {
            let spec = IamInstanceProfileSpecification::builder();
            if p.starts_with("arn:") {
                spec.arn(p).build()
            } else {
                spec.name(p).build()
            }
        });
        tracing::info!(name, client_token = token, image = %l.image_id, %placement, "launching instance");
        let output = self
            .client
            .run_instances()
            .image_id(&l.image_id)
            .instance_type(InstanceType::from(placement.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .client_token(token)
            .set_security_group_ids(
                (!l.security_group_ids.is_empty()).then(|| l.security_group_ids.clone()),
            )
            .set_subnet_id(placement.subnet_id.clone())
            .set_iam_instance_profile(profile)
            .set_key_name(l.key_name.clone())
            .set_user_data(l.user_data.as_deref().map(aws_smithy_types::base64::encode))
            .metadata_options(metadata_options())
            .block_device_mappings(root_volume(root_device, l.root_volume_gib))
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(self.tags(name)))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| classify_run_failure(Failure::of(&e)))?;
        let malformed = |why| RunFailure::Other(malformed(SERVICE, "RunInstances", why));
        let launched = output
            .instances()
            .first()
            .ok_or_else(|| malformed("no instance"))?;
        let id = launched
            .instance_id()
            .ok_or_else(|| malformed("no InstanceId"))?;
        Ok(Instance {
            id: id.to_owned(),
            name: name.to_owned(),
            state: InstanceState::Pending,
            launched_at: launched
                .launch_time()
                .and_then(|t| SystemTime::try_from(*t).ok())
                .unwrap_or_else(SystemTime::now),
        })
    }
}

impl Ec2Fleet {
    /// Starts `name` in the first placement with room, starting from the preferred one.
    /// Each placement gets its own client token: EC2 refuses a token reused with other
    /// parameters, and retries of one placement must still share one.
    async fn launch_one(&self, name: &str, nonce: u64, root_device: &str) -> Result<Instance> {
        let count = self.placements.len();
        let first = *self.preferred.lock().unwrap_or_else(|p| p.into_inner()) % count;
        let mut no_room = Vec::new();
        for step in 0..count {
            let index = (first + step) % count;
            let placement = &self.placements[index];
            let token = client_token(&self.spec.stack, name, nonce.wrapping_add(index as u64));
            match self
                .run_instance(name, &token, placement, root_device)
                .await
            {
                Ok(instance) => {
                    *self.preferred.lock().unwrap_or_else(|p| p.into_inner()) = index;
                    return Ok(instance);
                }
                Err(RunFailure::NoRoomHere(why)) => {
                    tracing::warn!(name, %placement, reason = %why, "no capacity here; trying the next placement");
                    no_room.push(format!("{placement}: {why}"));
                }
                Err(RunFailure::Quota(why)) => {
                    return Err(CloudError::NoCapacity {
                        shortage: Shortage::Quota,
                        message: why,
                    });
                }
                Err(RunFailure::Other(e)) => return Err(e),
            }
        }
        Err(CloudError::NoCapacity {
            shortage: Shortage::Capacity,
            message: format!("every placement is full: {}", no_room.join("; ")),
        })
    }
}

/// Tags instance `id` with [`READY_TAG`] (now, RFC 3339): the app tier's "I serve".
pub(super) async fn tag_ready(client: &Client, id: &str) -> Result<()> {
    let now = aws_smithy_types::DateTime::from(SystemTime::now())
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .map_err(|e| malformed(SERVICE, "CreateTags", &e.to_string()))?;
    client
        .create_tags()
        .resources(id)
        .tags(Tag::builder().key(READY_TAG).value(now).build())
        .send()
        .await
        .map_err(|e| Failure::of(&e).into_error(SERVICE, "CreateTags"))?;
    Ok(())
}

/// Asks EC2 for the root device name of `image_id`. An image EC2 does not know (or does
/// not show this account) is a configuration error naming the AMI and the way out.
async fn describe_root_device(client: &Client, image_id: &str) -> Result<String> {
    let unknown = |why: &str| {
        CloudError::Config(format!(
            "cannot find the root device of AMI {image_id}: {why}; check the AMI id, \
             or set the root device name (scaler: --root-device-name)"
        ))
    };
    let output = client
        .describe_images()
        .image_ids(image_id)
        .send()
        .await
        .map_err(|e| {
            let failure = Failure::of(&e);
            if failure.has_code(&["InvalidAMIID.NotFound", "InvalidAMIID.Malformed"]) {
                unknown(&failure.message)
            } else {
                failure.into_error(SERVICE, "DescribeImages")
            }
        })?;
    let image = output
        .images()
        .iter()
        .find(|i| i.image_id() == Some(image_id))
        .ok_or_else(|| unknown("EC2 lists no such image"))?;
    let name = image
        .root_device_name()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| unknown("the image has no root device name"))?;
    tracing::debug!(
        image = image_id,
        root_device = name,
        "looked up the AMI's root device"
    );
    Ok(name.to_owned())
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
    use super::*;

    #[test]
    fn states_map_like_the_local_fleet() {
        use InstanceStateName as S;
        for ready in [false, true] {
            assert_eq!(map_state(&S::Pending, ready), InstanceState::Pending);
            assert_eq!(map_state(&S::Stopping, ready), InstanceState::Stopping);
            assert_eq!(map_state(&S::ShuttingDown, ready), InstanceState::Stopping);
            assert_eq!(map_state(&S::Stopped, ready), InstanceState::Stopped);
            assert_eq!(map_state(&S::Terminated, ready), InstanceState::Terminated);
            assert_eq!(
                map_state(&S::from("hibernating"), ready),
                InstanceState::Pending
            );
        }
        // Running is serving only once the app tier said so.
        assert_eq!(map_state(&S::Running, true), InstanceState::Running);
        assert_eq!(map_state(&S::Running, false), InstanceState::Pending);
    }

    #[test]
    fn client_tokens_are_stable_and_distinct() {
        let t = client_token("prod", "app-tier-1", 42);
        assert_eq!(t, client_token("prod", "app-tier-1", 42));
        assert!(t.len() <= MAX_CLIENT_TOKEN_LEN && t.is_ascii(), "{t}");
        let others = [
            client_token("prod", "app-tier-1", 43),
            client_token("prod", "app-tier-2", 42),
            client_token("test", "app-tier-1", 42),
            client_token("prodapp-tier-1", "", 42),
        ];
        for other in &others {
            assert_ne!(&t, other);
        }
        // A very long stack name still gives a short token.
        assert!(client_token(&"s".repeat(500), "n", u64::MAX).len() <= MAX_CLIENT_TOKEN_LEN);
    }

    pub(super) fn spec() -> FleetSpec {
        FleetSpec {
            name_prefix: "app-tier-".into(),
            stack: "s1".into(),
            tags: vec![
                ("Type".into(), "apptier".into()),
                ("Name".into(), "x".into()),
            ],
            local: None,
            ec2: Some(Ec2Launch {
                image_id: "ami-1".into(),
                instance_types: vec!["t3.micro".into()],
                security_group_ids: vec![],
                subnet_ids: vec![],
                instance_profile: None,
                key_name: None,
                user_data: Some("#!/bin/sh\n".into()),
                root_device_name: Some("/dev/sda1".into()),
                root_volume_gib: None,
            }),
        }
    }

    pub(super) fn offline_client(endpoint: &str) -> Client {
        let config = aws_sdk_ec2::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_ec2::config::Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                "test", "test", None, None, "static",
            ))
            .retry_config(
                aws_sdk_ec2::config::retry::RetryConfig::standard()
                    .with_max_attempts(3)
                    .with_initial_backoff(Duration::from_millis(1)),
            )
            .build();
        Client::from_conf(config)
    }

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

    #[test]
    fn instances_are_ours_only_with_the_stack_tag_and_prefix() {
        let fleet = Ec2Fleet::new(offline_client("http://127.0.0.1:9"), spec()).unwrap();
        let instance = |stack: &str, name: &str| {
            aws_sdk_ec2::types::Instance::builder()
                .instance_id("i-1")
                .tags(Tag::builder().key(STACK_TAG).value(stack).build())
                .tags(Tag::builder().key("Name").value(name).build())
                .state(
                    aws_sdk_ec2::types::InstanceState::builder()
                        .name(InstanceStateName::ShuttingDown)
                        .build(),
                )
                .build()
        };
        let ours = fleet.to_instance(&instance("s1", "app-tier-3")).unwrap();
        assert_eq!(ours.name, "app-tier-3");
        assert_eq!(ours.state, InstanceState::Stopping);
        let running = |ready: bool| {
            let mut i = instance("s1", "app-tier-4");
            i.state = Some(
                aws_sdk_ec2::types::InstanceState::builder()
                    .name(InstanceStateName::Running)
                    .build(),
            );
            if ready {
                i.tags.get_or_insert_with(Vec::new).push(
                    Tag::builder()
                        .key(READY_TAG)
                        .value("2026-12-03T12:00:00Z")
                        .build(),
                );
            }
            fleet.to_instance(&i).unwrap().state
        };
        assert_eq!(running(false), InstanceState::Pending);
        assert_eq!(running(true), InstanceState::Running);
        assert!(fleet.to_instance(&instance("s2", "app-tier-3")).is_none());
        assert!(fleet.to_instance(&instance("s1", "web-tier")).is_none());
        // The spec's tags never override Name or the stack tag.
        let keys: Vec<_> = fleet
            .tags("app-tier-1")
            .iter()
            .map(|t| (t.key().unwrap().to_owned(), t.value().unwrap().to_owned()))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("Name".into(), "app-tier-1".into()),
                (STACK_TAG.into(), "s1".into()),
                ("Type".into(), "apptier".into()),
            ]
        );
    }

    #[test]
    fn recent_launches_fill_in_until_ec2_lists_them() {
        let fleet = Ec2Fleet::new(offline_client("http://127.0.0.1:9"), spec()).unwrap();
        let inst = |id: &str, state| Instance {
            id: id.into(),
            name: format!("app-tier-{id}"),
            state,
            launched_at: SystemTime::UNIX_EPOCH,
        };
        fleet.recent().insert(
            "1".into(),
            RecentLaunch {
                instance: inst("1", InstanceState::Pending),
                at: Instant::now(),
            },
        );
        // EC2 does not show it yet: the record stands in.
        let merged = fleet.merge_recent(vec![]);
        assert_eq!(merged, vec![inst("1", InstanceState::Pending)]);
        // EC2 shows it: EC2's view wins, no duplicate.
        let merged = fleet.merge_recent(vec![inst("1", InstanceState::Running)]);
        assert_eq!(merged, vec![inst("1", InstanceState::Running)]);
        // Expired records are dropped.
        if let Some(r) = fleet.recent().get_mut("1") {
            r.at = Instant::now() - RECENT_LAUNCH_TTL - Duration::from_secs(1);
        }
        assert!(fleet.merge_recent(vec![]).is_empty());
        assert!(fleet.recent().is_empty());
    }

    /// A fake EC2 endpoint that answers every `RunInstances` with a 503, so the SDK
    /// retries it (see [`fake_ec2`]).
    async fn flaky_ec2() -> (String, Arc<Mutex<Vec<String>>>) {
        fake_ec2(|_| {
            (
                "503 Service Unavailable",
                ec2_error("Unavailable", "try later"),
            )
        })
        .await
    }

    pub(super) fn ec2_error(code: &str, message: &str) -> String {
        format!(
            "<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error>\
             </Errors><RequestID>r</RequestID></Response>"
        )
    }

    pub(super) fn run_instances_ok(id: &str) -> String {
        format!(
            "<RunInstancesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
             <requestId>r</requestId><reservationId>r-1</reservationId><ownerId>1</ownerId>\
             <instancesSet><item><instanceId>{id}</instanceId><instanceState><code>0</code>\
             <name>pending</name></instanceState></item></instancesSet></RunInstancesResponse>"
        )
    }

    /// A fake EC2 endpoint: answers `DescribeInstances` with an empty fleet,
    /// `DescribeImages` of `ami-1` with a root device of `/dev/xvda` (and of any other
    /// image with nothing), and every `RunInstances` as `run` says (from the request
    /// body). Records each request body.
    pub(super) async fn fake_ec2(
        run: impl Fn(&str) -> (&'static str, String) + Send + 'static,
    ) -> (String, Arc<Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let seen = bodies.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let body = loop {
                    let n = socket.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + length {
                        break Some(text[end + 4..end + 4 + length].to_owned());
                    }
                };
                let Some(body) = body else { continue };
                let (status, xml) = if body.contains("Action=DescribeInstances") {
                    (
                        "200 OK",
                        "<DescribeInstancesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
                         <requestId>r</requestId><reservationSet/></DescribeInstancesResponse>"
                            .to_owned(),
                    )
                } else if body.contains("Action=DescribeImages") {
                    let known = form_value(&body, "ImageId.1").as_deref() == Some("ami-1");
                    (
                        "200 OK",
                        if known {
                            "<DescribeImagesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
                             <requestId>r</requestId><imagesSet><item><imageId>ami-1</imageId>\
                             <rootDeviceName>/dev/xvda</rootDeviceName></item></imagesSet>\
                             </DescribeImagesResponse>"
                        } else {
                            "<DescribeImagesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
                             <requestId>r</requestId><imagesSet/></DescribeImagesResponse>"
                        }
                        .to_owned(),
                    )
                } else {
                    run(&body)
                };
                seen.lock().unwrap().push(body);
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{xml}",
                    xml.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        });
        (url, bodies)
    }

    pub(super) fn form_value(body: &str, key: &str) -> Option<String> {
        body.split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(str::to_owned))
    }

    /// moto ignores `ClientToken`, so this checks what the requests carry instead: every
    /// SDK retry of one launch sends the same token, and two launches of the same name
    /// send different ones.
    #[tokio::test]
    async fn client_token_is_kept_across_retries_and_fresh_per_launch() {
        let (url, bodies) = flaky_ec2().await;
        let mut spec = spec();
        if let Some(ec2) = spec.ec2.as_mut() {
            ec2.instance_profile = Some("arn:aws:iam::123456789012:instance-profile/app".into());
            ec2.security_group_ids = vec!["sg-1".into()];
        }
        let fleet = Ec2Fleet::new(offline_client(&url), spec).unwrap();
        for _ in 0..2 {
            let launched = fleet.launch(1).await.unwrap();
            assert!(launched.instances.is_empty());
            let err = launched.shortfall.expect("503s exhaust the retries");
            assert!(err.is_retryable(), "{err}");
        }

        let bodies = bodies.lock().unwrap().clone();
        let runs: Vec<&String> = bodies
            .iter()
            .filter(|b| b.contains("Action=RunInstances"))
            .collect();
        assert_eq!(runs.len(), 6, "3 attempts per launch: {bodies:#?}");
        let tokens: Vec<String> = runs
            .iter()
            .map(|b| form_value(b, "ClientToken").expect("ClientToken sent"))
            .collect();
        assert!(tokens[..3].iter().all(|t| t == &tokens[0]), "{tokens:?}");
        assert!(tokens[3..].iter().all(|t| t == &tokens[3]), "{tokens:?}");
        assert_ne!(tokens[0], tokens[3], "a new launch needs a new token");
        assert!(tokens[0].starts_with("iras-"));
        // The rest of the request: one named, tagged instance with base64 user data.
        let first = runs[0];
        assert_eq!(form_value(first, "MinCount").as_deref(), Some("1"));
        assert_eq!(form_value(first, "MaxCount").as_deref(), Some("1"));
        assert_eq!(form_value(first, "ImageId").as_deref(), Some("ami-1"));
        assert!(first.contains("app-tier-1"), "{first}");
        assert_eq!(
            form_value(first, "SecurityGroupId.1").as_deref(),
            Some("sg-1")
        );
        assert!(
            form_value(first, "IamInstanceProfile.Arn").is_some()
                && form_value(first, "IamInstanceProfile.Name").is_none(),
            "{first}"
        );
        assert_eq!(
            form_value(first, "UserData").as_deref(),
            Some("IyEvYmluL3NoCg%3D%3D")
        );
        // IMDSv2 only, and an encrypted gp3 root volume of the AMI's size on the
        // configured root device (no DescribeImages needed).
        for (key, value) in [
            ("MetadataOptions.HttpTokens", "required"),
            ("MetadataOptions.HttpEndpoint", "enabled"),
            ("MetadataOptions.HttpPutResponseHopLimit", "1"),
            ("BlockDeviceMapping.1.DeviceName", "%2Fdev%2Fsda1"),
            ("BlockDeviceMapping.1.Ebs.Encrypted", "true"),
            ("BlockDeviceMapping.1.Ebs.VolumeType", "gp3"),
            ("BlockDeviceMapping.1.Ebs.DeleteOnTermination", "true"),
        ] {
            assert_eq!(
                form_value(first, key).as_deref(),
                Some(value),
                "{key}: {first}"
            );
        }
        assert_eq!(
            form_value(first, "BlockDeviceMapping.1.Ebs.VolumeSize"),
            None
        );
        assert_eq!(form_value(first, "BlockDeviceMapping.2.DeviceName"), None);
        assert!(!bodies.iter().any(|b| b.contains("Action=DescribeImages")));
        // Nothing was recorded as launched.
        assert!(fleet.list().await.unwrap().is_empty());
    }

    /// Without a configured root device name the fleet asks `DescribeImages` once and maps
    /// the device the AMI names; an AMI EC2 does not list is a configuration error, and no
    /// instance is launched without its root mapping.
    #[tokio::test]
    async fn the_root_device_comes_from_the_ami_once() {
        let (url, bodies) = flaky_ec2().await;
        let mut with_lookup = spec();
        if let Some(ec2) = with_lookup.ec2.as_mut() {
            ec2.root_device_name = None;
            ec2.root_volume_gib = Some(20);
        }
        let fleet = Ec2Fleet::new(offline_client(&url), with_lookup.clone()).unwrap();
        for _ in 0..2 {
            let launched = fleet.launch(1).await.unwrap();
            assert!(launched.shortfall.is_some(), "503s exhaust the retries");
        }
        {
            let bodies = bodies.lock().unwrap();
            let lookups = bodies
                .iter()
                .filter(|b| b.contains("Action=DescribeImages"))
                .count();
            assert_eq!(lookups, 1, "looked up once per fleet handle: {bodies:#?}");
            let runs: Vec<&String> = bodies
                .iter()
                .filter(|b| b.contains("Action=RunInstances"))
                .collect();
            assert_eq!(runs.len(), 6);
            for run in runs {
                assert_eq!(
                    form_value(run, "BlockDeviceMapping.1.DeviceName").as_deref(),
                    Some("%2Fdev%2Fxvda")
                );
                assert_eq!(
                    form_value(run, "BlockDeviceMapping.1.Ebs.VolumeSize").as_deref(),
                    Some("20")
                );
            }
        }

        bodies.lock().unwrap().clear();
        if let Some(ec2) = with_lookup.ec2.as_mut() {
            ec2.image_id = "ami-unknown".into();
        }
        let fleet = Ec2Fleet::new(offline_client(&url), with_lookup).unwrap();
        let err = fleet.launch(1).await.expect_err("unknown AMI");
        assert!(matches!(err, CloudError::Config(_)), "{err}");
        assert!(!err.is_retryable());
        let message = err.to_string();
        assert!(
            message.contains("ami-unknown") && message.contains("--root-device-name"),
            "{message}"
        );
        assert!(
            !bodies
                .lock()
                .unwrap()
                .iter()
                .any(|b| b.contains("Action=RunInstances")),
            "nothing launched without a root mapping"
        );
    }
}

#[cfg(test)]
mod placement_tests {
    //! The fault-injecting EC2 of the tests above, answering `RunInstances` per placement:
    //! capacity errors move a launch on, quota errors stop it, and what started is kept.

    use super::tests::*;
    use super::*;

    fn two_types_two_subnets() -> FleetSpec {
        let mut s = spec();
        if let Some(ec2) = s.ec2.as_mut() {
            ec2.instance_types = vec!["t3.micro".into(), "t3a.micro".into()];
            ec2.subnet_ids = vec!["subnet-a".into(), "subnet-b".into()];
        }
        s
    }

    fn placement_of(body: &str) -> (String, String) {
        (
            form_value(body, "InstanceType").unwrap_or_default(),
            form_value(body, "SubnetId").unwrap_or_default(),
        )
    }

    #[test]
    fn placements_are_every_type_in_every_subnet_preferred_type_first() {
        let fleet = Ec2Fleet::new(
            offline_client("http://127.0.0.1:9"),
            two_types_two_subnets(),
        )
        .unwrap();
        let got: Vec<String> = fleet.placements.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "t3.micro in subnet-a",
                "t3.micro in subnet-b",
                "t3a.micro in subnet-a",
                "t3a.micro in subnet-b"
            ]
        );
        let mut none = spec();
        if let Some(ec2) = none.ec2.as_mut() {
            ec2.instance_types.clear();
        }
        assert!(matches!(
            Ec2Fleet::new(offline_client("http://127.0.0.1:9"), none),
            Err(CloudError::Config(_))
        ));
    }

    /// Zone a has no t3.micro capacity: each instance lands in subnet-b, and once one
    /// did, the next launch goes there first.
    #[tokio::test]
    async fn capacity_errors_move_on_to_the_next_placement_and_remember_it() {
        let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let ids = counter.clone();
        let (url, bodies) = fake_ec2(move |body| match placement_of(body) {
            (t, s) if t == "t3.micro" && s == "subnet-a" => (
                "500 Internal Server Error",
                ec2_error("InsufficientInstanceCapacity", "no t3.micro in us-east-1a"),
            ),
            _ => {
                let n = ids.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                ("200 OK", run_instances_ok(&format!("i-{n}")))
            }
        })
        .await;
        let fleet = Ec2Fleet::new(offline_client(&url), two_types_two_subnets()).unwrap();
        let launched = fleet.launch(2).await.unwrap();
        assert!(launched.shortfall.is_none(), "{:?}", launched.shortfall);
        assert_eq!(launched.instances.len(), 2);
        let tried: Vec<(String, String)> = bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|b| b.contains("Action=RunInstances"))
            .map(|b| placement_of(b))
            .collect();
        let a = ("t3.micro".to_owned(), "subnet-a".to_owned());
        let b = ("t3.micro".to_owned(), "subnet-b".to_owned());
        // The SDK retries the 500 (3 attempts), then subnet-b; the second instance goes to
        // subnet-b straight away.
        assert_eq!(tried, [a.clone(), a.clone(), a, b.clone(), b], "{tried:?}");
        // Each placement carries its own client token.
        let tokens: Vec<String> = bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|b| b.contains("Action=RunInstances"))
            .filter_map(|b| form_value(b, "ClientToken"))
            .collect();
        assert_ne!(tokens[0], tokens[3]);
        assert_eq!(tokens[0], tokens[2]);
    }

    /// Every placement full: nothing starts, and the shortfall says capacity and lists
    /// what was tried.
    #[tokio::test]
    async fn no_capacity_anywhere_is_a_capacity_shortfall() {
        let (url, _) = fake_ec2(|body| {
            let (t, _) = placement_of(body);
            if t == "t3.micro" {
                (
                    "400 Bad Request",
                    ec2_error("Unsupported", "not in this zone"),
                )
            } else {
                (
                    "400 Bad Request",
                    ec2_error("InsufficientFreeAddressesInSubnet", "subnet full"),
                )
            }
        })
        .await;
        let fleet = Ec2Fleet::new(offline_client(&url), two_types_two_subnets()).unwrap();
        let launched = fleet.launch(3).await.unwrap();
        assert!(launched.instances.is_empty());
        let Some(CloudError::NoCapacity { shortage, message }) = launched.shortfall else {
            panic!(
                "expected a capacity shortfall, got {:?}",
                launched.shortfall
            );
        };
        assert_eq!(shortage, Shortage::Capacity);
        for tried in [
            "t3.micro in subnet-a",
            "t3a.micro in subnet-b",
            "subnet full",
        ] {
            assert!(message.contains(tried), "{message}");
        }
    }

    /// The vCPU quota after two instances: the two are kept, the launch stops at once
    /// (no other placement is tried, the quota is the account's) and says quota.
    #[tokio::test]
    async fn a_quota_error_keeps_what_started_and_stops_the_launch() {
        let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let ids = counter.clone();
        let (url, bodies) = fake_ec2(move |_| {
            let n = ids.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if n < 2 {
                ("200 OK", run_instances_ok(&format!("i-{n}")))
            } else {
                (
                    "400 Bad Request",
                    ec2_error(
                        "VcpuLimitExceeded",
                        "You have requested more vCPU capacity than your current vCPU limit of 4 allows",
                    ),
                )
            }
        })
        .await;
        let fleet = Ec2Fleet::new(offline_client(&url), two_types_two_subnets()).unwrap();
        let launched = fleet.launch(5).await.unwrap();
        let names: Vec<&str> = launched.instances.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["app-tier-1", "app-tier-2"]);
        let err = launched.shortfall.expect("stopped by the quota");
        assert!(
            matches!(&err, CloudError::NoCapacity { shortage: Shortage::Quota, message } if message.contains("VcpuLimitExceeded")),
            "{err}"
        );
        assert!(err.is_retryable());
        let runs = bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|b| b.contains("Action=RunInstances"))
            .count();
        assert_eq!(runs, 3, "two that started, one refused, nothing more");
        // The two started are listed (EC2 lags; the fleet remembers them).
        assert_eq!(fleet.list().await.unwrap().len(), 2);
    }
}
