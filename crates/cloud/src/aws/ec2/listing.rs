//! What the fleet is: `DescribeInstances` filtered to this stack and prefix, EC2's states
//! mapped to ours (running counts only with the app tier's readiness tag, which
//! [`tag_ready`] writes), and the recent launches EC2 does not list yet. Its own module
//! because this is the fleet's read side: everything the scaler decides on comes from it.

use std::collections::HashSet;
use std::time::SystemTime;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{Filter, InstanceStateName, Tag};

use super::{Ec2Fleet, RECENT_LAUNCH_TTL, SERVICE, STACK_TAG};
use crate::aws::{Failure, malformed};
use crate::error::Result;
use crate::fleet::{Instance, InstanceState, READY_TAG};

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

impl Ec2Fleet {
    /// What EC2 shows for this stack (instances whose name has the prefix).
    pub(super) async fn describe(&self) -> Result<Vec<Instance>> {
        describe(&self.client, &self.spec.stack, &self.spec.name_prefix).await
    }

    /// Our view of an EC2 instance, if it is one of this fleet's.
    #[cfg(test)]
    fn to_instance(&self, i: &aws_sdk_ec2::types::Instance) -> Option<Instance> {
        to_instance(i, &self.spec.stack, &self.spec.name_prefix)
    }

    /// EC2's list plus the recent launches it does not show yet.
    pub(super) fn merge_recent(&self, mut listed: Vec<Instance>) -> Vec<Instance> {
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
}

/// What EC2 shows for `stack`: its instances whose name has `name_prefix`.
pub(super) async fn describe(
    client: &Client,
    stack: &str,
    name_prefix: &str,
) -> Result<Vec<Instance>> {
    let mut pages = client
        .describe_instances()
        .filters(
            Filter::builder()
                .name(format!("tag:{STACK_TAG}"))
                .values(stack)
                .build(),
        )
        .into_paginator()
        .send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| Failure::of(&e).into_error(SERVICE, "DescribeInstances"))?;
        for reservation in page.reservations() {
            out.extend(
                reservation
                    .instances()
                    .iter()
                    .filter_map(|i| to_instance(i, stack, name_prefix)),
            );
        }
    }
    Ok(out)
}

/// Our view of an EC2 instance, if it is one of the fleet of `stack` and `name_prefix`.
fn to_instance(
    i: &aws_sdk_ec2::types::Instance,
    stack: &str,
    name_prefix: &str,
) -> Option<Instance> {
    let tag = |key: &str| {
        i.tags()
            .iter()
            .find(|t| t.key() == Some(key))
            .and_then(|t| t.value())
    };
    if tag(STACK_TAG) != Some(stack) {
        return None;
    }
    let name = tag("Name").filter(|n| n.starts_with(name_prefix))?;
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

/// The read-only view of an EC2 fleet ([`crate::FleetView`]): `DescribeInstances` alone, the
/// one EC2 right a watcher needs.
#[derive(Debug, Clone)]
pub struct Ec2FleetView {
    client: Client,
    stack: String,
    name_prefix: String,
}

impl Ec2FleetView {
    pub(in crate::aws) fn new(client: Client, stack: &str, name_prefix: &str) -> Result<Self> {
        if stack.is_empty() || name_prefix.is_empty() {
            return Err(crate::CloudError::Config(
                "the fleet needs a stack name and an instance name prefix".into(),
            ));
        }
        Ok(Self {
            client,
            stack: stack.to_owned(),
            name_prefix: name_prefix.to_owned(),
        })
    }
}

#[async_trait::async_trait]
impl crate::FleetView for Ec2FleetView {
    async fn list(&self) -> Result<Vec<Instance>> {
        describe(&self.client, &self.stack, &self.name_prefix).await
    }
}

/// Tags instance `id` with [`READY_TAG`] (now, RFC 3339): the app tier's "I serve".
pub(in crate::aws) async fn tag_ready(client: &Client, id: &str) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::RecentLaunch;
    use super::super::test_support::*;
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
}
