//! One launch request: a `RunInstances` for one named instance in one placement, hardened
//! the same way whatever the AMI (IMDSv2, an encrypted gp3 root on the AMI's root device),
//! tagged, with its client token. Its own module because the request is the fleet's
//! contract with EC2, and its tests read the request bodies field by field.

use std::time::SystemTime;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, HttpTokensState, IamInstanceProfileSpecification,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest, InstanceType, ResourceType, Tag,
    TagSpecification, VolumeType,
};

use super::placement::{Placement, RunFailure, classify_run_failure};
use super::{Ec2Fleet, SERVICE, STACK_TAG};
use crate::aws::{Failure, malformed};
use crate::error::{CloudError, Result};
use crate::fleet::{Instance, InstanceState};

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

impl Ec2Fleet {
    /// The AMI's root device name (see [`Ec2Fleet::root_device`]).
    pub(super) async fn root_device_name(&self) -> Result<&str> {
        let name = self
            .root_device
            .get_or_try_init(|| describe_root_device(&self.client, &self.launch.image_id))
            .await?;
        Ok(name.as_str())
    }

    /// The tags every instance gets: `Name`, the stack tag and the spec's extra tags.
    pub(super) fn tags(&self, name: &str) -> Vec<Tag> {
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
    pub(super) async fn run_instance(
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::super::test_support::*;
    use super::*;
    use crate::fleet::Fleet;

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
