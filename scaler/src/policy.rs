//! Scaling decisions as pure functions: no I/O and no clock reads (the caller passes `now`),
//! so the control loop ([`crate::control`]), the simulator ([`crate::simulate`]) and the tests
//! all drive the very same code.
//!
//! Two policies:
//!
//! - **Seed** ([`SeedConfig`], the default), exactly as the seed scaled:
//!   - scale out: `desired = min(ceil(depth / out_divisor), max)`; launch `desired − active`
//!     when positive (`active` = pending + running instances);
//!   - scale in: `needed = ceil(depth / in_divisor)`; push `active − needed` when positive
//!     into a tracker of the last K samples; only when all K samples agree on the same
//!     x > 0, terminate x and clear the tracker.
//! - **Target tracking** ([`TargetConfig`]), AWS's backlog per instance:
//!   `desired = clamp(ceil(depth / backlog_per_instance), min, max)`, with separate
//!   scale-out and scale-in cooldowns.
//!
//! Choices where the seed is silent, each made to avoid flapping:
//!
//! - A sample that is not positive (the fleet is not above what the queue needs) **clears**
//!   the tracker, so the K agreeing samples are K *consecutive* polls of over-capacity; a
//!   single busy poll in between starts the count again.
//! - A scale-out **clears** the tracker: samples taken against the smaller fleet say nothing
//!   about the new one.
//! - `min` and `max` bound both directions: the scale-out target is clamped to
//!   `[min, max]`, and the scale-in sample is `active − max(needed, min)`, so a unanimous
//!   tracker never takes the fleet below `min`. A fleet found above `max` (the limit was
//!   lowered, or someone launched by hand) is cut to `max` at once, without waiting for the
//!   tracker: the limit is a hard cap (it is the account's instance quota in the seed).
//! - Target tracking scales in only when the scale-in cooldown has passed since the last
//!   action in *either* direction, so capacity that was just added is not removed before
//!   it could work.
//!
//! What the seed, taken exactly, does at a queue depth that holds steady (a stuck queue, no
//! instance completing anything): its scale-out target `ceil(d / 2)` and its scale-in target
//! `ceil(d / 10)` differ, so it launches up to `ceil(d / 2)`, terminates down to
//! `ceil(d / 10)` after K polls, and launches again: one cycle every K + 1 polls. The
//! tracker bounds this (never more than one terminate per K polls), and it is kept because
//! the seed is the default by decision; target tracking has one target, so it settles and
//! holds. The simulator shows both.

use std::collections::VecDeque;
use std::num::NonZeroU64;
use std::time::Duration;

/// The seed's tracker length K.
pub const DEFAULT_SCALE_IN_SAMPLES: usize = 5;
/// The seed's instance cap: its limit of 20 instances minus the web tier.
pub const DEFAULT_MAX_INSTANCES: u32 = 19;
/// The seed's scale-out divisor: one instance per two queued requests.
pub const DEFAULT_OUT_DIVISOR: u64 = 2;
/// The seed's scale-in divisor: keep one instance per ten queued requests.
pub const DEFAULT_IN_DIVISOR: u64 = 10;

/// A policy configuration was inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `min` above `max`.
    #[error("min instances ({min}) is above max instances ({max})")]
    MinAboveMax {
        /// The lower bound given.
        min: u32,
        /// The upper bound given.
        max: u32,
    },
    /// K = 0 would scale in on no evidence.
    #[error("the scale-in tracker needs at least one sample")]
    NoSamples,
}

/// Bounds shared by every policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Never fewer active instances than this (after a decision is carried out).
    pub min: u32,
    /// Never more active instances than this.
    pub max: u32,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            min: 0,
            max: DEFAULT_MAX_INSTANCES,
        }
    }
}

impl Bounds {
    /// Checks `min <= max`.
    pub fn new(min: u32, max: u32) -> Result<Self, PolicyError> {
        if min > max {
            return Err(PolicyError::MinAboveMax { min, max });
        }
        Ok(Self { min, max })
    }

    fn clamp(self, n: u64) -> u32 {
        u32::try_from(n)
            .unwrap_or(u32::MAX)
            .clamp(self.min, self.max)
    }
}

/// The seed's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedConfig {
    /// Scale out to `ceil(depth / out_divisor)` (default 2).
    pub out_divisor: NonZeroU64,
    /// Scale in towards `ceil(depth / in_divisor)` (default 10).
    pub in_divisor: NonZeroU64,
    /// K: consecutive agreeing samples needed to scale in (default 5).
    pub scale_in_samples: usize,
    /// Instance bounds.
    pub bounds: Bounds,
}

impl Default for SeedConfig {
    fn default() -> Self {
        Self {
            out_divisor: NonZeroU64::new(DEFAULT_OUT_DIVISOR).unwrap_or(NonZeroU64::MIN),
            in_divisor: NonZeroU64::new(DEFAULT_IN_DIVISOR).unwrap_or(NonZeroU64::MIN),
            scale_in_samples: DEFAULT_SCALE_IN_SAMPLES,
            bounds: Bounds::default(),
        }
    }
}

/// AWS-style target tracking on backlog per instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetConfig {
    /// Acceptable queued requests per instance.
    pub backlog_per_instance: NonZeroU64,
    /// Minimum time between a scale-out and the next scale-out.
    pub scale_out_cooldown: Duration,
    /// Minimum time between any action and a scale-in.
    pub scale_in_cooldown: Duration,
    /// Instance bounds.
    pub bounds: Bounds,
}

/// A scaling policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// The seed's policy (the default).
    Seed(SeedConfig),
    /// Backlog-per-instance target tracking.
    Target(TargetConfig),
}

impl Default for Policy {
    fn default() -> Self {
        Policy::Seed(SeedConfig::default())
    }
}

/// What the policy sees at one poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// Request-queue depth: visible + in flight + delayed.
    pub depth: u64,
    /// App-tier instances pending or running.
    pub active: u32,
    /// Time of the poll, from any fixed origin (only differences matter).
    pub now: Duration,
}

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Launch this many instances.
    Launch(u32),
    /// Terminate this many instances.
    Terminate(u32),
    /// Nothing.
    Hold,
}

/// A decision and the target it came from (for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// What to do now.
    pub action: Action,
    /// The fleet size the policy aims at on this poll (for the seed: the scale-out target,
    /// or the scale-in target when a scale-in fires).
    pub desired: u32,
}

/// What a policy remembers between polls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyState {
    /// The seed's last scale-in samples, oldest first.
    pub tracker: VecDeque<u32>,
    /// When target tracking last scaled out.
    pub last_scale_out: Option<Duration>,
    /// When target tracking last scaled in.
    pub last_scale_in: Option<Duration>,
}

fn ceil_div(a: u64, b: NonZeroU64) -> u64 {
    a.div_ceil(b.get())
}

impl SeedConfig {
    /// Checks the bounds and K.
    pub fn validate(&self) -> Result<(), PolicyError> {
        Bounds::new(self.bounds.min, self.bounds.max)?;
        if self.scale_in_samples == 0 {
            return Err(PolicyError::NoSamples);
        }
        Ok(())
    }

    /// One poll of the seed policy.
    pub fn decide(&self, obs: &Observation, state: &mut PolicyState) -> Decision {
        let active = obs.active;
        let desired = self.bounds.clamp(ceil_div(obs.depth, self.out_divisor));
        if active > self.bounds.max {
            state.tracker.clear();
            return Decision {
                action: Action::Terminate(active - self.bounds.max),
                desired: self.bounds.max,
            };
        }
        if desired > active {
            state.tracker.clear();
            return Decision {
                action: Action::Launch(desired - active),
                desired,
            };
        }
        let needed = self.bounds.clamp(ceil_div(obs.depth, self.in_divisor));
        let sample = active.saturating_sub(needed);
        if sample == 0 {
            state.tracker.clear();
            return Decision {
                action: Action::Hold,
                desired,
            };
        }
        state.tracker.push_back(sample);
        while state.tracker.len() > self.scale_in_samples {
            state.tracker.pop_front();
        }
        let unanimous = state.tracker.len() == self.scale_in_samples
            && state.tracker.iter().all(|&x| x == sample);
        if unanimous {
            state.tracker.clear();
            Decision {
                action: Action::Terminate(sample),
                desired: needed,
            }
        } else {
            Decision {
                action: Action::Hold,
                desired,
            }
        }
    }
}

impl TargetConfig {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), PolicyError> {
        Bounds::new(self.bounds.min, self.bounds.max).map(|_| ())
    }

    /// One poll of target tracking.
    pub fn decide(&self, obs: &Observation, state: &mut PolicyState) -> Decision {
        let desired = self
            .bounds
            .clamp(ceil_div(obs.depth, self.backlog_per_instance));
        let active = obs.active;
        let since = |t: Option<Duration>| t.map(|t| obs.now.saturating_sub(t));
        let action = if active > self.bounds.max {
            Action::Terminate(active - self.bounds.max)
        } else if desired > active {
            // Below the minimum is not a scaling choice: no cooldown applies.
            if active < self.bounds.min
                || since(state.last_scale_out).is_none_or(|d| d >= self.scale_out_cooldown)
            {
                Action::Launch(desired - active)
            } else {
                Action::Hold
            }
        } else if desired < active {
            let last_action = state.last_scale_out.max(state.last_scale_in);
            if since(last_action).is_none_or(|d| d >= self.scale_in_cooldown) {
                Action::Terminate(active - desired)
            } else {
                Action::Hold
            }
        } else {
            Action::Hold
        };
        match action {
            Action::Launch(_) => state.last_scale_out = Some(obs.now),
            Action::Terminate(_) => state.last_scale_in = Some(obs.now),
            Action::Hold => {}
        }
        Decision { action, desired }
    }
}

impl Policy {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), PolicyError> {
        match self {
            Policy::Seed(c) => c.validate(),
            Policy::Target(c) => c.validate(),
        }
    }

    /// One poll: what to do given the observation and what the policy remembers.
    pub fn decide(&self, obs: &Observation, state: &mut PolicyState) -> Decision {
        match self {
            Policy::Seed(c) => c.decide(obs, state),
            Policy::Target(c) => c.decide(obs, state),
        }
    }

    /// The instance bounds.
    pub fn bounds(&self) -> Bounds {
        match self {
            Policy::Seed(c) => c.bounds,
            Policy::Target(c) => c.bounds,
        }
    }

    /// A short name for tables and logs: `seed`, `target(b=5,out=30s,in=120s)`.
    pub fn label(&self) -> String {
        match self {
            Policy::Seed(_) => "seed".to_owned(),
            Policy::Target(c) => format!(
                "target(b={},out={}s,in={}s)",
                c.backlog_per_instance,
                c.scale_out_cooldown.as_secs(),
                c.scale_in_cooldown.as_secs()
            ),
        }
    }
}

/// The fleet size after carrying out `action` on `active` instances.
pub fn apply(active: u32, action: Action) -> u32 {
    match action {
        Action::Launch(n) => active.saturating_add(n),
        Action::Terminate(n) => active.saturating_sub(n),
        Action::Hold => active,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seed(min: u32, max: u32) -> SeedConfig {
        SeedConfig {
            bounds: Bounds { min, max },
            ..SeedConfig::default()
        }
    }

    fn target(b: u64, min: u32, max: u32, out_s: u64, in_s: u64) -> TargetConfig {
        TargetConfig {
            backlog_per_instance: NonZeroU64::new(b).unwrap(),
            scale_out_cooldown: Duration::from_secs(out_s),
            scale_in_cooldown: Duration::from_secs(in_s),
            bounds: Bounds { min, max },
        }
    }

    fn obs(depth: u64, active: u32, now_s: u64) -> Observation {
        Observation {
            depth,
            active,
            now: Duration::from_secs(now_s),
        }
    }

    #[test]
    fn seed_scales_a_burst_of_100_to_min_50_max() {
        let mut st = PolicyState::default();
        let d = seed(0, 19).decide(&obs(100, 0, 0), &mut st);
        assert_eq!(d.action, Action::Launch(19));
        let d = seed(0, 100).decide(&obs(100, 0, 0), &mut st);
        assert_eq!(d.action, Action::Launch(50));
        assert_eq!(d.desired, 50);
        let d = seed(0, 100).decide(&obs(100, 30, 0), &mut st);
        assert_eq!(d.action, Action::Launch(20));
    }

    #[test]
    fn seed_scales_in_only_after_k_agreeing_samples() {
        let p = seed(0, 19);
        let mut st = PolicyState::default();
        for i in 0..4 {
            assert_eq!(p.decide(&obs(0, 10, i), &mut st).action, Action::Hold);
        }
        assert_eq!(
            p.decide(&obs(0, 10, 4), &mut st).action,
            Action::Terminate(10)
        );
        assert!(st.tracker.is_empty());
    }

    #[test]
    fn seed_disagreeing_samples_do_not_scale_in() {
        let p = seed(0, 19);
        let mut st = PolicyState::default();
        // active 10: needed 1 at depth 10, 0 at depth 0 → samples 9 and 10 alternate.
        for i in 0..20 {
            let depth = if i % 2 == 0 { 0 } else { 10 };
            assert_eq!(p.decide(&obs(depth, 10, i), &mut st).action, Action::Hold);
        }
    }

    #[test]
    fn seed_non_positive_sample_and_scale_out_clear_the_tracker() {
        // in_divisor = out_divisor, so depth 8 with 4 instances gives a zero sample.
        let p = SeedConfig {
            in_divisor: NonZeroU64::new(2).unwrap(),
            ..seed(0, 19)
        };
        let mut st = PolicyState::default();
        p.decide(&obs(0, 4, 0), &mut st);
        p.decide(&obs(0, 4, 1), &mut st);
        assert_eq!(st.tracker.len(), 2);
        assert_eq!(p.decide(&obs(8, 4, 2), &mut st).action, Action::Hold);
        assert!(st.tracker.is_empty(), "a zero sample clears");
        p.decide(&obs(0, 4, 3), &mut st);
        assert_eq!(st.tracker.len(), 1);
        assert_eq!(
            p.decide(&obs(100, 4, 4), &mut st).action,
            Action::Launch(15)
        );
        assert!(st.tracker.is_empty(), "a scale-out clears");
    }

    #[test]
    fn seed_respects_min() {
        let p = seed(2, 19);
        let mut st = PolicyState::default();
        assert_eq!(p.decide(&obs(0, 0, 0), &mut st).action, Action::Launch(2));
        for i in 0..4 {
            assert_eq!(p.decide(&obs(0, 5, i), &mut st).action, Action::Hold);
        }
        assert_eq!(
            p.decide(&obs(0, 5, 5), &mut st).action,
            Action::Terminate(3)
        );
    }

    #[test]
    fn target_tracking_honours_cooldowns() {
        let p = target(5, 0, 100, 30, 120);
        let mut st = PolicyState::default();
        assert_eq!(
            p.decide(&obs(100, 0, 0), &mut st).action,
            Action::Launch(20)
        );
        assert_eq!(p.decide(&obs(200, 20, 10), &mut st).action, Action::Hold);
        assert_eq!(
            p.decide(&obs(200, 20, 30), &mut st).action,
            Action::Launch(20)
        );
        assert_eq!(p.decide(&obs(0, 40, 100), &mut st).action, Action::Hold);
        assert_eq!(
            p.decide(&obs(0, 40, 150), &mut st).action,
            Action::Terminate(40)
        );
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        let seed = (1u64..5, 1u64..20, 1usize..7, 0u32..5, 0u32..60).prop_map(
            |(out, inn, k, min, extra)| {
                Policy::Seed(SeedConfig {
                    out_divisor: NonZeroU64::new(out).unwrap(),
                    in_divisor: NonZeroU64::new(inn).unwrap(),
                    scale_in_samples: k,
                    bounds: Bounds {
                        min,
                        max: min + extra,
                    },
                })
            },
        );
        let target = (1u64..20, 0u64..60, 0u64..300, 0u32..5, 0u32..60).prop_map(
            |(b, out_s, in_s, min, extra)| Policy::Target(target(b, min, min + extra, out_s, in_s)),
        );
        prop_oneof![seed, target]
    }

    proptest! {
        /// Carrying out any decision keeps the fleet within [min, max] (starting inside or
        /// outside the bounds, the fleet moves towards them and never past them).
        #[test]
        fn decisions_stay_within_bounds(
            policy in arb_policy(),
            steps in proptest::collection::vec((0u64..2000, 0u32..100), 1..40),
        ) {
            let b = policy.bounds();
            let mut st = PolicyState::default();
            for (i, (depth, active)) in steps.into_iter().enumerate() {
                let d = policy.decide(&obs(depth, active, i as u64 * 10), &mut st);
                let after = apply(active, d.action);
                prop_assert!(d.desired <= b.max && d.desired >= b.min);
                match d.action {
                    Action::Launch(n) => {
                        prop_assert!(n > 0);
                        prop_assert!(after <= b.max);
                    }
                    Action::Terminate(n) => {
                        prop_assert!(n > 0);
                        prop_assert!(after >= b.min);
                    }
                    Action::Hold => {}
                }
                if active <= b.max { prop_assert!(after <= b.max); }
                if active >= b.min { prop_assert!(after >= b.min); }
            }
        }

        /// No launch while the fleet already covers the demand (and the minimum).
        #[test]
        fn no_launch_when_demand_is_covered(
            policy in arb_policy(),
            steps in proptest::collection::vec((0u64..2000, 0u32..100), 1..40),
        ) {
            let mut st = PolicyState::default();
            for (i, (depth, active)) in steps.into_iter().enumerate() {
                let b = policy.bounds();
                let demand = match &policy {
                    Policy::Seed(c) => depth.div_ceil(c.out_divisor.get()),
                    Policy::Target(c) => depth.div_ceil(c.backlog_per_instance.get()),
                };
                let d = policy.decide(&obs(depth, active, i as u64 * 10), &mut st);
                if u64::from(active) >= demand && active >= b.min {
                    prop_assert!(!matches!(d.action, Action::Launch(_)));
                }
            }
        }

        /// The seed terminates only when the last K samples (all positive, from within
        /// the bounds) were one and the same x, and then terminates exactly x.
        #[test]
        fn seed_terminates_only_on_a_unanimous_tracker(
            k in 1usize..7,
            steps in proptest::collection::vec((0u64..200, 0u32..30), 1..60),
        ) {
            let p = SeedConfig { scale_in_samples: k, bounds: Bounds { min: 0, max: 30 }, ..SeedConfig::default() };
            let mut st = PolicyState::default();
            let mut history: Vec<Option<u32>> = Vec::new();
            for (i, (depth, active)) in steps.into_iter().enumerate() {
                let before = st.tracker.clone();
                let d = p.decide(&obs(depth, active, i as u64), &mut st);
                let out = depth.div_ceil(2);
                let needed = depth.div_ceil(10) as u32;
                let sample = (u64::from(active) >= out).then(|| active.saturating_sub(needed)).filter(|&x| x > 0);
                history.push(sample);
                if let Action::Terminate(x) = d.action {
                    prop_assert!(before.len() + 1 >= k);
                    let last_k = &history[history.len() - k..];
                    prop_assert!(last_k.iter().all(|s| *s == Some(x)), "{last_k:?} → {x}");
                    history.clear();
                }
            }
        }

        /// With a steady depth, target tracking settles in at most two moves (into the
        /// bounds, then to its target) and then holds; the seed never terminates within K
        /// polls of its previous move, and settles for good where its two targets agree.
        #[test]
        fn steady_depth_does_not_flap(
            policy in arb_policy(),
            depth in 0u64..2000,
            start in 0u32..60,
        ) {
            let mut st = PolicyState::default();
            let mut active = start;
            let mut actions = Vec::new();
            for i in 0..100u64 {
                let d = policy.decide(&obs(depth, active, i * 10), &mut st);
                active = apply(active, d.action);
                actions.push(d.action);
            }
            match &policy {
                Policy::Target(_) => {
                    // Bounds first (one move), then the target (one more), then nothing.
                    let moves = actions.iter().filter(|a| **a != Action::Hold).count();
                    prop_assert!(moves <= 2, "{actions:?}");
                    prop_assert!(actions[70..].iter().all(|a| *a == Action::Hold));
                }
                Policy::Seed(c) => {
                    let k = c.scale_in_samples;
                    let mut last_move: Option<usize> = None;
                    for (i, a) in actions.iter().enumerate() {
                        if let Action::Terminate(_) = a {
                            // Out of bounds at the start is cut at once; otherwise the
                            // tracker needs K polls since the last move.
                            if let Some(m) = last_move {
                                prop_assert!(i - m >= k, "{actions:?}");
                            }
                        }
                        if *a != Action::Hold { last_move = Some(i); }
                    }
                    // A depth the seed's two targets agree on settles for good.
                    let b = c.bounds;
                    let out = b.clamp(depth.div_ceil(c.out_divisor.get()));
                    let inn = b.clamp(depth.div_ceil(c.in_divisor.get()));
                    if out == inn {
                        prop_assert!(actions[50..].iter().all(|a| *a == Action::Hold), "{actions:?}");
                    }
                }
            }
        }
    }
}
