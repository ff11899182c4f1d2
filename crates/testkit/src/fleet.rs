//! A stand-in fleet instance, launched the way the scaler launches app tiers (from another
//! handle than the one under test), that reports ready only when the test says so: for
//! tests of what watches the fleet. Locally it is a process in the stack's local fleet; on
//! AWS an EC2 instance on the moto server (which boots nothing), made ready by the tag the
//! app tier puts on its own instance.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use iras_cloud::{BackendKind, Cloud, Ec2Launch, Fleet, FleetSpec, LocalLaunch};

use crate::TestStack;

/// The instance name prefix the scaler and the web tier use by default.
pub const NAME_PREFIX: &str = "app-tier-";
/// An AMI the moto server knows.
const MOTO_IMAGE_ID: &str = "ami-12c6146b";

/// How the stand-in is made ready.
enum Readiness {
    /// The local instance waits for this file before it writes its ready file.
    File(PathBuf),
    /// The EC2 instance gets the readiness tag through this cloud.
    Tag(Cloud),
}

/// One pending instance of a stack's fleet, running after [`StandIn::ready`].
pub struct StandIn {
    fleet: Arc<dyn Fleet>,
    readiness: Readiness,
    /// Its instance id.
    pub id: String,
    /// Its name (`app-tier-1` in an empty fleet).
    pub name: String,
    /// The fleet's stack name (the scaler's and the web tier's `--stack-name`): the default
    /// `iras` locally, where the state directory is the test's own; unique on the shared
    /// moto server.
    pub stack_name: String,
}

impl StandIn {
    /// Launches one in the fleet of `stack`.
    pub async fn launch(stack: &TestStack) -> Self {
        let (stack_name, readiness, local, ec2) = match stack.backend() {
            BackendKind::Local => {
                let state = stack
                    .state_dir()
                    .expect("a local stack has a state directory");
                let go = state.join(format!("go-{}", uuid::Uuid::new_v4().simple()));
                let script = format!(
                    "while [ ! -e '{}' ]; do sleep 0.05; done; touch \"$IRAS_READY_FILE\"; \
                     exec sleep 300",
                    go.display()
                );
                let local = LocalLaunch {
                    program: "/bin/sh".into(),
                    args: vec!["-c".into(), script],
                    env: vec![],
                    grace: Duration::from_secs(1),
                };
                ("iras".to_owned(), Readiness::File(go), Some(local), None)
            }
            BackendKind::Aws => {
                let ec2 = Ec2Launch {
                    image_id: MOTO_IMAGE_ID.into(),
                    instance_types: vec!["t3.micro".into()],
                    security_group_ids: vec![],
                    subnet_ids: vec![],
                    instance_profile: None,
                    key_name: None,
                    user_data: None,
                    root_device_name: Some("/dev/sda1".into()),
                    root_volume_gib: Some(8),
                };
                let name = format!("s{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
                (name, Readiness::Tag(stack.cloud.clone()), None, Some(ec2))
            }
        };
        let fleet = stack
            .cloud
            .fleet(FleetSpec {
                name_prefix: NAME_PREFIX.into(),
                stack: stack_name.clone(),
                tags: vec![],
                local,
                ec2,
            })
            .await
            .unwrap();
        let instance = fleet.launch(1).await.unwrap().instances.remove(0);
        Self {
            fleet,
            readiness,
            id: instance.id,
            name: instance.name,
            stack_name,
        }
    }

    /// It reports ready: the fleet lists it running from now on.
    pub async fn ready(&self) {
        match &self.readiness {
            Readiness::File(go) => std::fs::write(go, b"").unwrap(),
            Readiness::Tag(cloud) => cloud.mark_ready(Some(&self.id)).await.unwrap(),
        }
    }

    /// Terminates it.
    pub async fn stop(self) {
        self.fleet
            .terminate(std::slice::from_ref(&self.id))
            .await
            .unwrap();
    }
}
