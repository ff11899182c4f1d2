//! Test environments: a fresh local state directory, or unique names on the moto server.

use std::path::PathBuf;
use std::time::Duration;

use iras_cloud::{BackendKind, Cloud, FleetSpec, StackSpec};

/// The environment variable naming the moto endpoint for the aws variants.
pub(crate) const AWS_ENDPOINT_VAR: &str = "IRAS_TEST_AWS_ENDPOINT";

/// Receives this many times before a message is dead-lettered, in every test stack.
pub(crate) const MAX_RECEIVES: u32 = 2;

pub(crate) struct TestEnv {
    pub(crate) cloud: Cloud,
    /// Unique per test: keeps tests on a shared moto server apart.
    pub(crate) prefix: String,
    _state: Option<tempfile::TempDir>,
}

impl TestEnv {
    pub(crate) async fn local() -> Self {
        let state = tempfile::tempdir().expect("temp dir");
        let cloud = Cloud::open_local(state.path())
            .await
            .expect("local backend");
        Self {
            cloud,
            prefix: unique_prefix(),
            _state: Some(state),
        }
    }

    pub(crate) async fn aws() -> Self {
        let endpoint = std::env::var(AWS_ENDPOINT_VAR).unwrap_or_else(|_| {
            panic!(
                "{AWS_ENDPOINT_VAR} is not set: the aws conformance tests need a moto server. \
                 Run them through scripts/test, which starts one."
            )
        });
        // moto accepts any credentials, but the SDK's chain must find some; scripts/test
        // exports dummy ones so no real credential is ever used against the test server.
        assert!(
            std::env::var_os("AWS_ACCESS_KEY_ID").is_some(),
            "AWS_ACCESS_KEY_ID is not set: run the aws conformance tests through scripts/test"
        );
        let cloud = Cloud::connect_aws(Some(&endpoint), Some("us-east-1"))
            .await
            .expect("aws backend against moto");
        Self {
            cloud,
            prefix: unique_prefix(),
            _state: None,
        }
    }

    /// A provisioned stack with names unique to this test.
    pub(crate) async fn stack(&self) -> StackSpec {
        let stack = StackSpec {
            request_queue: format!("{}-req", self.prefix),
            response_queue: format!("{}-resp", self.prefix),
            input_bucket: format!("{}-in", self.prefix),
            output_bucket: format!("{}-out", self.prefix),
            max_receive_count: MAX_RECEIVES,
            visibility_timeout: Duration::from_secs(30),
        };
        self.cloud.provision(&stack).await.expect("provision");
        stack
    }

    /// A fleet spec whose local program is a shell that reports ready and then sleeps.
    pub(crate) fn fleet_spec(&self) -> FleetSpec {
        self.fleet_spec_running("touch \"$IRAS_READY_FILE\"; exec sleep 300")
    }

    /// A fleet spec whose local program never reports ready.
    pub(crate) fn never_ready_fleet_spec(&self) -> FleetSpec {
        self.fleet_spec_running("exec sleep 300")
    }

    /// What a launched app tier does once it serves: locally the program itself writes
    /// its ready file; on EC2 (moto runs nothing) the test tags each instance, as the app
    /// tier on it would.
    pub(crate) async fn report_ready(&self, instances: &[iras_cloud::Instance]) {
        if self.cloud.kind() == BackendKind::Aws {
            for instance in instances {
                self.cloud
                    .mark_ready(Some(&instance.id))
                    .await
                    .expect("tag the instance ready");
            }
        }
    }

    fn fleet_spec_running(&self, script: &str) -> FleetSpec {
        FleetSpec {
            name_prefix: "app-tier-".into(),
            stack: self.prefix.clone(),
            tags: vec![("Type".into(), "apptier".into())],
            local: Some(iras_cloud::LocalLaunch {
                program: PathBuf::from("/bin/sh"),
                args: vec!["-c".into(), script.into()],
                env: vec![],
                grace: Duration::from_secs(5),
            }),
            ec2: Some(iras_cloud::Ec2Launch {
                image_id: "ami-12c6146b".into(),
                instance_types: vec!["t3.micro".into()],
                security_group_ids: vec![],
                subnet_ids: vec![],
                instance_profile: None,
                key_name: None,
                user_data: Some("#cloud-config\n{}\n".into()),
                root_device_name: None,
                root_volume_gib: Some(16),
            }),
        }
    }

    pub(crate) async fn cleanup(self) {}
}

fn unique_prefix() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("t{}", &id[..12])
}
