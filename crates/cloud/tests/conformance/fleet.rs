//! Fleet behaviour both backends must share (EC2 API against moto; processes locally).

use std::time::{Duration, Instant};

use iras_cloud::{Fleet, Instance, InstanceState};

use crate::harness::TestEnv;

/// Lists until `done` holds or 15 s pass (EC2 states and process exits take a moment).
async fn list_until(fleet: &dyn Fleet, done: impl Fn(&[Instance]) -> bool) -> Vec<Instance> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let list = fleet.list().await.expect("list");
        if done(&list) || Instant::now() > deadline {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn active_names(list: &[Instance]) -> Vec<String> {
    let mut names: Vec<String> = list
        .iter()
        .filter(|i| i.state.is_active())
        .map(|i| i.name.clone())
        .collect();
    names.sort();
    names
}

pub(crate) async fn launch_list_terminate(env: &TestEnv) {
    let fleet = env.cloud.fleet(env.fleet_spec()).await.expect("fleet");
    assert!(
        fleet
            .list()
            .await
            .expect("list")
            .iter()
            .all(|i| !i.state.is_active())
    );

    let launched = fleet.launch(3).await.expect("launch");
    assert!(launched.shortfall.is_none(), "{:?}", launched.shortfall);
    let launched = launched.instances;
    assert_eq!(launched.len(), 3);
    env.report_ready(&launched).await;
    let list = list_until(fleet.as_ref(), |l| {
        l.iter()
            .filter(|i| i.state == InstanceState::Running)
            .count()
            == 3
    })
    .await;
    assert_eq!(
        active_names(&list),
        vec!["app-tier-1", "app-tier-2", "app-tier-3"],
        "{list:?}"
    );
    assert!(
        list.iter().all(|i| i.state == InstanceState::Running),
        "{list:?}"
    );

    // Terminate the middle one: it leaves the active set, the others stay.
    let middle = list
        .iter()
        .find(|i| i.name == "app-tier-2")
        .expect("app-tier-2")
        .id
        .clone();
    fleet
        .terminate(std::slice::from_ref(&middle))
        .await
        .expect("terminate");
    let list = list_until(fleet.as_ref(), |l| {
        l.iter()
            .any(|i| i.id == middle && i.state == InstanceState::Terminated)
    })
    .await;
    assert_eq!(
        active_names(&list),
        vec!["app-tier-1", "app-tier-3"],
        "{list:?}"
    );

    // The freed name is reused first.
    let again = fleet.launch(2).await.expect("launch again").instances;
    let mut names: Vec<String> = again.iter().map(|i| i.name.clone()).collect();
    names.sort();
    assert_eq!(names, vec!["app-tier-2", "app-tier-4"]);

    // Unknown ids are ignored; terminating everything empties the active set.
    let all: Vec<String> = fleet
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|i| i.id)
        .collect();
    fleet.terminate(&all).await.expect("terminate all");
    let list = list_until(fleet.as_ref(), |l| l.iter().all(|i| !i.state.is_active())).await;
    assert!(active_names(&list).is_empty(), "{list:?}");
    let list = list_until(fleet.as_ref(), |l| {
        l.iter().all(|i| i.state == InstanceState::Terminated)
    })
    .await;
    assert!(
        list.iter().all(|i| i.state == InstanceState::Terminated),
        "{list:?}"
    );
}

/// An instance whose app tier never says it serves stays pending, whatever the backend
/// thinks of the machine (EC2 `running`, a live process): the scaler must be able to tell
/// it from capacity.
pub(crate) async fn unready_instances_stay_pending(env: &TestEnv) {
    let fleet = env
        .cloud
        .fleet(env.never_ready_fleet_spec())
        .await
        .expect("fleet");
    let launched = fleet.launch(1).await.expect("launch").instances;
    assert_eq!(launched.len(), 1);
    // moto has the instance running at once; give a local process time to start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let list = fleet.list().await.expect("list");
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].state, InstanceState::Pending, "{list:?}");
    // Once it reports ready it is running.
    if env.cloud.kind() == iras_cloud::BackendKind::Aws {
        env.report_ready(&launched).await;
        let list = list_until(fleet.as_ref(), |l| {
            l.iter().all(|i| i.state == InstanceState::Running)
        })
        .await;
        assert_eq!(list[0].state, InstanceState::Running, "{list:?}");
    }
    let ids: Vec<String> = list.into_iter().map(|i| i.id).collect();
    fleet.terminate(&ids).await.expect("terminate");
}
