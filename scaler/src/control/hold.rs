//! Holding launches back: why (quota, capacity, a never-ready instance, another error),
//! until when (a capped, doubling pause), and what an operator should do about it. Its
//! own module because this is the state one poll leaves the next, apart from the poll.

use std::time::Duration;

use iras_cloud::{CloudError, Shortage};
use iras_service::Backoff;

use super::{MAX_LAUNCH_BACKOFF, RunConfig};
use crate::policy::PolicyState;

/// Why launches were held back: the label of `iras_scaler_launch_shortfalls_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HoldReason {
    /// The account's quota.
    Quota,
    /// No capacity in any placement.
    Capacity,
    /// A launched instance never became ready.
    NeverReady,
    /// Any other launch error.
    Error,
}

impl HoldReason {
    pub(super) fn label(self) -> &'static str {
        match self {
            HoldReason::Quota => "quota",
            HoldReason::Capacity => "capacity",
            HoldReason::NeverReady => "never-ready",
            HoldReason::Error => "error",
        }
    }

    pub(super) fn of(error: &CloudError) -> Self {
        match error {
            CloudError::NoCapacity {
                shortage: Shortage::Quota,
                ..
            } => HoldReason::Quota,
            CloudError::NoCapacity {
                shortage: Shortage::Capacity,
                ..
            } => HoldReason::Capacity,
            _ => HoldReason::Error,
        }
    }
}

/// What the loop carries from one poll to the next.
#[derive(Debug)]
pub struct LoopState {
    /// The policy's own state (the seed's tracker, cooldown clocks).
    pub policy: PolicyState,
    /// Launches are held back until this time (since the loop started), and why.
    pub hold: Option<(Duration, HoldReason)>,
    pub(super) backoff: Backoff,
}

impl LoopState {
    /// A fresh state for `config`.
    pub fn new(config: &RunConfig) -> Self {
        Self {
            policy: PolicyState::default(),
            hold: None,
            backoff: Backoff::between(config.launch_backoff, MAX_LAUNCH_BACKOFF),
        }
    }

    /// Holds launches back for the next pause of the backoff, from `now`.
    pub(super) fn hold_launches(&mut self, now: Duration, reason: HoldReason) -> Duration {
        let pause = self.backoff.next_pause();
        self.hold = Some((now + pause, reason));
        pause
    }

    /// The hold in force at `now`, if any.
    pub(super) fn held(&self, now: Duration) -> Option<(Duration, HoldReason)> {
        self.hold
            .filter(|(until, _)| now < *until)
            .map(|(until, reason)| (until - now, reason))
    }
}

/// What an operator should do about a shortfall.
pub(super) fn advice(reason: HoldReason) -> &'static str {
    match reason {
        HoldReason::Quota => {
            "the account's EC2 quota is reached: request an increase of 'Running On-Demand \
             Standard (A, C, D, H, I, M, R, T, Z) instances' (vCPUs, quota code L-1216C47A) in \
             Service Quotas, or lower --max-instances (MaxAppInstances) to what the quota allows"
        }
        HoldReason::Capacity => {
            "EC2 has no capacity for these instance types in these subnets right now: it \
             usually passes; for more room, list more instance types (--instance-type \
             t3.micro,t3a.micro) or subnets in other zones (--subnet a,b)"
        }
        HoldReason::NeverReady => {
            "an app tier did not report ready in time: its runtime, model or configuration \
             is broken; read its log (EC2: CloudWatch Logs or journalctl -u iras-app-tier; \
             local: <state>/fleet/<stack>/<name>.log)"
        }
        HoldReason::Error => "EC2 refused the launch; see the error",
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{Metrics, run_once};
    use super::*;

    /// 40 queued requests want 19 instances; the quota allows 2. The two are kept, the
    /// shortfall is counted as quota, launches pause 30 s then 60 s (no EC2 call while
    /// held), and scale-out resumes once the quota has room again.
    #[tokio::test]
    async fn a_quota_shortfall_keeps_what_started_and_backs_off() {
        let (_dir, queue) = queue_with(40).await;
        let fleet = FaultyFleet::new(2, quota);
        let config = config();
        let metrics = Metrics::new();
        let mut state = LoopState::new(&config);
        let at = Duration::from_secs;

        run_once(&config, queue.as_ref(), &fleet, &mut state, &metrics, at(0))
            .await
            .unwrap();
        assert_eq!(fleet.calls(), 1);
        assert_eq!(fleet.instances.lock().unwrap().len(), 2);
        assert_eq!(state.held(at(0)), Some((at(30), HoldReason::Quota)));
        let text = metrics.render();
        assert!(text.contains("iras_scaler_launches_total 2"), "{text}");
        assert!(
            text.contains("iras_scaler_launch_shortfalls_total{reason=\"quota\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("iras_scaler_launch_hold_seconds 30"),
            "{text}"
        );

        // Held: the policy still wants more, but EC2 is not asked.
        run_once(
            &config,
            queue.as_ref(),
            &fleet,
            &mut state,
            &metrics,
            at(10),
        )
        .await
        .unwrap();
        assert_eq!(fleet.calls(), 1);
        // The hold is over: asked again, refused again, and the pause doubles.
        run_once(
            &config,
            queue.as_ref(),
            &fleet,
            &mut state,
            &metrics,
            at(31),
        )
        .await
        .unwrap();
        assert_eq!(fleet.calls(), 2);
        assert_eq!(state.held(at(31)), Some((at(60), HoldReason::Quota)));
        // The quota is raised: the next launch after the hold fills the fleet, and the
        // backoff starts over.
        *fleet.room.lock().unwrap() = 100;
        run_once(
            &config,
            queue.as_ref(),
            &fleet,
            &mut state,
            &metrics,
            at(92),
        )
        .await
        .unwrap();
        assert_eq!(fleet.calls(), 3);
        assert_eq!(fleet.instances.lock().unwrap().len(), 19);
        assert_eq!(state.held(at(92)), None);
        assert_eq!(state.backoff.next_pause(), at(30));
    }
}
