//! Which instances to terminate: the broken ones before each decision (stopped, or
//! pending past the grace period), and the victims of a scale-in (pending first, then the
//! highest ordinals). Its own module because these are pure choices over a fleet listing,
//! tested without a cloud.

use std::time::{Duration, SystemTime};

use iras_cloud::{Instance, InstanceState};

/// The ids to terminate, `count` at most: pending instances first (not serving yet), then
/// running ones from the highest ordinal down; names without an ordinal go first of their
/// group, as they are not the fleet's own.
pub fn choose_victims(instances: &[Instance], prefix: &str, count: usize) -> Vec<String> {
    let mut active: Vec<&Instance> = instances.iter().filter(|i| i.state.is_active()).collect();
    active.sort_by_key(|i| {
        (
            i.state == InstanceState::Running,
            std::cmp::Reverse(i.ordinal(prefix).unwrap_or(u32::MAX)),
        )
    });
    active
        .into_iter()
        .take(count)
        .map(|i| i.id.clone())
        .collect()
}

/// How long ago `launched_at` was, if it is known (a zero launch time means unknown).
fn age(launched_at: SystemTime, wall_now: SystemTime) -> Option<Duration> {
    if launched_at == SystemTime::UNIX_EPOCH {
        return None;
    }
    Some(wall_now.duration_since(launched_at).unwrap_or_default())
}

/// Instances to replace before deciding: stopped ones, and pending ones older than the
/// grace period. Returns (stopped ids, never-ready instances).
pub(super) fn broken_instances(
    instances: &[Instance],
    ready_grace: Duration,
    wall_now: SystemTime,
) -> (Vec<String>, Vec<&Instance>) {
    let stopped = instances
        .iter()
        .filter(|i| i.state == InstanceState::Stopped)
        .map(|i| i.id.clone())
        .collect();
    let never_ready = instances
        .iter()
        .filter(|i| i.state == InstanceState::Pending)
        .filter(|i| age(i.launched_at, wall_now).is_some_and(|a| a > ready_grace))
        .collect();
    (stopped, never_ready)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{HoldReason, LoopState, Metrics, run_once};
    use super::*;
    use crate::policy::Action;

    fn inst(name: &str, state: InstanceState) -> Instance {
        Instance {
            id: format!("id-{name}"),
            name: name.into(),
            state,
            launched_at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn victims_are_pending_first_then_highest_ordinal() {
        let fleet = vec![
            inst("app-tier-1", InstanceState::Running),
            inst("app-tier-10", InstanceState::Running),
            inst("app-tier-2", InstanceState::Running),
            inst("app-tier-3", InstanceState::Pending),
            inst("app-tier-4", InstanceState::Stopping),
            inst("app-tier-5", InstanceState::Terminated),
        ];
        assert_eq!(
            choose_victims(&fleet, "app-tier-", 3),
            ["id-app-tier-3", "id-app-tier-10", "id-app-tier-2"]
        );
        assert_eq!(choose_victims(&fleet, "app-tier-", 10).len(), 4);
    }

    /// An instance pending past the grace period is terminated and not counted; a stopped
    /// one is terminated; a young pending one is left to boot.
    #[tokio::test]
    async fn never_ready_and_stopped_instances_are_replaced() {
        let (_dir, queue) = queue_with(0).await;
        let fleet = FaultyFleet::new(10, quota);
        let config = config();
        let long_ago = SystemTime::now() - Duration::from_secs(3600);
        let instance = |n: u32, state, launched_at| Instance {
            id: format!("i-{n}"),
            name: format!("app-tier-{n}"),
            state,
            launched_at,
        };
        *fleet.instances.lock().unwrap() = vec![
            instance(1, InstanceState::Pending, long_ago),
            instance(2, InstanceState::Stopped, long_ago),
            instance(3, InstanceState::Pending, SystemTime::now()),
            instance(4, InstanceState::Running, long_ago),
            // A launch time EC2 did not give: never taken for old.
            instance(5, InstanceState::Pending, SystemTime::UNIX_EPOCH),
        ];
        let metrics = Metrics::new();
        let mut state = LoopState::new(&config);
        let decision = run_once(
            &config,
            queue.as_ref(),
            &fleet,
            &mut state,
            &metrics,
            Duration::ZERO,
        )
        .await
        .unwrap();
        let mut terminated = fleet.terminated.lock().unwrap().clone();
        terminated.sort();
        assert_eq!(terminated, ["i-1", "i-2"]);
        let text = metrics.render();
        assert!(
            text.contains("iras_scaler_never_ready_terminations_total 1"),
            "{text}"
        );
        assert!(
            text.contains("iras_scaler_stopped_terminations_total 1"),
            "{text}"
        );
        assert!(
            text.contains("iras_scaler_launch_shortfalls_total{reason=\"never-ready\"} 1"),
            "{text}"
        );
        // Active: the young pending one, the running one, the one of unknown age.
        assert!(text.contains("iras_scaler_instances 3"), "{text}");
        assert_eq!(
            decision.action,
            Action::Hold,
            "empty queue, K samples needed"
        );
        assert_eq!(
            state.held(Duration::ZERO).map(|(_, r)| r),
            Some(HoldReason::NeverReady)
        );
    }
}
