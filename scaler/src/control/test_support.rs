//! The control loop tests' cloud: a fleet that runs out of room on cue, a run
//! configuration, and a real local request queue. Its own module because the hold and
//! selection tests both drive [`super::run_once`] with it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use iras_cloud::{
    Cloud, CloudError, Fleet, FleetSpec, Instance, InstanceState, Launched, Queue, Shortage,
};

use super::RunConfig;
use crate::policy::Policy;

/// A fleet that starts instances until its room runs out, then answers every launch
/// with `refusal` (the EC2 faults moto cannot produce), and lists what it holds.
#[derive(Debug)]
pub(super) struct FaultyFleet {
    pub(super) instances: std::sync::Mutex<Vec<Instance>>,
    pub(super) room: std::sync::Mutex<usize>,
    refusal: fn() -> CloudError,
    launch_calls: std::sync::atomic::AtomicUsize,
    pub(super) terminated: std::sync::Mutex<Vec<String>>,
}

impl FaultyFleet {
    pub(super) fn new(room: usize, refusal: fn() -> CloudError) -> Self {
        Self {
            instances: std::sync::Mutex::new(Vec::new()),
            room: std::sync::Mutex::new(room),
            refusal,
            launch_calls: std::sync::atomic::AtomicUsize::new(0),
            terminated: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub(super) fn calls(&self) -> usize {
        self.launch_calls.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl Fleet for FaultyFleet {
    async fn list(&self) -> iras_cloud::Result<Vec<Instance>> {
        Ok(self.instances.lock().unwrap().clone())
    }

    async fn launch(&self, count: usize) -> iras_cloud::Result<Launched> {
        self.launch_calls
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut room = self.room.lock().unwrap();
        let mut instances = self.instances.lock().unwrap();
        let mut launched = Vec::new();
        for _ in 0..count {
            if *room == 0 {
                return Ok(Launched {
                    instances: launched,
                    shortfall: Some((self.refusal)()),
                });
            }
            *room -= 1;
            let n = instances.len() + 1;
            let i = Instance {
                id: format!("i-{n}"),
                name: format!("app-tier-{n}"),
                state: InstanceState::Pending,
                launched_at: SystemTime::now(),
            };
            instances.push(i.clone());
            launched.push(i);
        }
        Ok(Launched::all(launched))
    }

    async fn terminate(&self, ids: &[String]) -> iras_cloud::Result<()> {
        for i in self.instances.lock().unwrap().iter_mut() {
            if ids.contains(&i.id) {
                i.state = InstanceState::Terminated;
            }
        }
        self.terminated.lock().unwrap().extend_from_slice(ids);
        Ok(())
    }
}

pub(super) fn quota() -> CloudError {
    CloudError::NoCapacity {
        shortage: Shortage::Quota,
        message: "VcpuLimitExceeded: vCPU limit of 4".into(),
    }
}

pub(super) fn config() -> RunConfig {
    RunConfig {
        request_queue: "iras-requests".into(),
        fleet: FleetSpec {
            name_prefix: "app-tier-".into(),
            stack: "t".into(),
            tags: vec![],
            local: None,
            ec2: None,
        },
        policy: Policy::default(),
        interval: Duration::from_secs(10),
        metrics_listen: None,
        terminate_on_exit: false,
        ready_grace: Duration::from_secs(300),
        launch_backoff: Duration::from_secs(30),
    }
}

/// A real (local, SQLite) request queue holding `n` messages.
pub(super) async fn queue_with(n: usize) -> (tempfile::TempDir, Arc<dyn Queue>) {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::open_local(dir.path()).await.unwrap();
    let stack = iras_cloud::StackSpec::default();
    cloud.provision(&stack).await.unwrap();
    let queue = cloud.queue(&stack.request_queue).await.unwrap();
    for i in 0..n {
        queue
            .send(iras_cloud::OutgoingMessage::new(format!("request {i}")))
            .await
            .unwrap();
    }
    (dir, queue)
}
