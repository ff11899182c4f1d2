//! What the EC2 fleet leaves on the instances it launches, read back from EC2 itself (the
//! moto server that `scripts/test` starts): the name and stack tags, the extra tags, the
//! user data, IMDSv2-only metadata options, an encrypted gp3 root volume on the device the
//! AMI names (looked up by the fleet, since the spec leaves it unset), and the counts the
//! scaler relies on after a terminate.

#![cfg(feature = "aws")]
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use aws_sdk_ec2::types::{
    Filter, HttpTokensState, InstanceMetadataEndpointState, VolumeAttachmentState, VolumeType,
};
use base64::Engine as _;
use iras_cloud::{Cloud, Ec2Launch, FleetSpec};

const USER_DATA: &str = "#cloud-config\nwrite_files: []\n";
/// An AMI moto lists under owner `amazon`, with its root on `/dev/sda1` (a 15 GiB snapshot).
const IMAGE_ID: &str = "ami-12c6146b";
/// Larger than the snapshot, so the size is seen to come from the spec. (moto, unlike EC2,
/// refuses a root mapping with neither a size nor a snapshot id.)
const ROOT_VOLUME_GIB: i32 = 16;

#[tokio::test]
async fn launched_instances_carry_their_tags_user_data_and_hardening() {
    let endpoint = std::env::var("IRAS_TEST_AWS_ENDPOINT")
        .expect("IRAS_TEST_AWS_ENDPOINT is not set: run the tests through scripts/test (moto)");
    let cloud = Cloud::connect_aws(Some(&endpoint), Some("us-east-1"))
        .await
        .unwrap();
    let stack = format!("fleet-{}", uuid::Uuid::new_v4().simple());
    let spec = FleetSpec {
        name_prefix: "app-tier-".into(),
        stack: stack.clone(),
        tags: vec![("Type".into(), "apptier".into())],
        local: None,
        ec2: Some(Ec2Launch {
            image_id: IMAGE_ID.into(),
            instance_types: vec!["t3.micro".into()],
            security_group_ids: vec![],
            subnet_ids: vec![],
            instance_profile: None,
            key_name: None,
            user_data: Some(USER_DATA.into()),
            root_device_name: None,
            root_volume_gib: Some(ROOT_VOLUME_GIB),
        }),
    };
    let fleet = cloud.fleet(spec).await.unwrap();
    let launched = fleet.launch(2).await.unwrap().instances;
    assert_eq!(launched.len(), 2);

    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let ami_root = ec2
        .describe_images()
        .image_ids(IMAGE_ID)
        .send()
        .await
        .unwrap()
        .images()[0]
        .root_device_name()
        .unwrap()
        .to_owned();
    let described = ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name("tag:iras:stack")
                .values(&stack)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let instances: Vec<_> = described
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .collect();
    assert_eq!(
        instances.len(),
        2,
        "exactly the two launched, found by the stack tag"
    );
    let mut names = Vec::new();
    for instance in &instances {
        let tag = |key: &str| {
            instance
                .tags()
                .iter()
                .find(|t| t.key() == Some(key))
                .and_then(|t| t.value())
                .map(str::to_owned)
        };
        assert_eq!(tag("Type").as_deref(), Some("apptier"));
        assert_eq!(tag("iras:stack").as_deref(), Some(stack.as_str()));
        names.push(tag("Name").unwrap());
        let id = instance.instance_id().unwrap();
        let attribute = ec2
            .describe_instance_attribute()
            .instance_id(id)
            .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
            .send()
            .await
            .unwrap();
        let encoded = attribute.user_data().and_then(|u| u.value()).unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(String::from_utf8(decoded).unwrap(), USER_DATA);

        // IMDSv2 only.
        let metadata = instance.metadata_options().unwrap();
        assert_eq!(metadata.http_tokens(), Some(&HttpTokensState::Required));
        assert_eq!(
            metadata.http_endpoint(),
            Some(&InstanceMetadataEndpointState::Enabled)
        );
        assert_eq!(metadata.http_put_response_hop_limit(), Some(1));

        // One volume, the root, on the AMI's root device: encrypted gp3 of the spec's size,
        // deleted with the instance.
        assert_eq!(instance.root_device_name(), Some(ami_root.as_str()));
        let volumes = ec2
            .describe_volumes()
            .filters(
                Filter::builder()
                    .name("attachment.instance-id")
                    .values(id)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let volumes = volumes.volumes();
        assert_eq!(volumes.len(), 1, "only the root volume: {volumes:#?}");
        let root = &volumes[0];
        assert_eq!(root.encrypted(), Some(true), "{root:#?}");
        assert_eq!(root.volume_type(), Some(&VolumeType::Gp3), "{root:#?}");
        assert_eq!(root.size(), Some(ROOT_VOLUME_GIB), "{root:#?}");
        let attachment = &root.attachments()[0];
        assert_eq!(attachment.device(), Some(ami_root.as_str()));
        assert_eq!(attachment.state(), Some(&VolumeAttachmentState::Attached));
        // moto leaves DeleteOnTermination out of DescribeVolumes; the instance's own
        // mapping carries it.
        let mapping = instance
            .block_device_mappings()
            .iter()
            .find(|m| m.device_name() == Some(ami_root.as_str()))
            .and_then(|m| m.ebs())
            .unwrap();
        assert_eq!(mapping.volume_id(), root.volume_id());
        assert_eq!(mapping.delete_on_termination(), Some(true));
    }
    names.sort();
    assert_eq!(names, ["app-tier-1", "app-tier-2"]);

    // A watcher with only the stack and prefix (the web tier's live view) sees the same two.
    let view = cloud.fleet_view(&stack, "app-tier-").unwrap();
    let mut seen: Vec<String> = view
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    seen.sort();
    assert_eq!(seen, names);
    assert!(
        cloud
            .fleet_view(&stack, "web-")
            .unwrap()
            .list()
            .await
            .unwrap()
            .is_empty()
    );

    // After a terminate the fleet counts one active instance.
    fleet.terminate(&[launched[0].id.clone()]).await.unwrap();
    let active = fleet
        .list()
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.state.is_active())
        .count();
    assert_eq!(active, 1);
    fleet.terminate(&[launched[1].id.clone()]).await.unwrap();
}
