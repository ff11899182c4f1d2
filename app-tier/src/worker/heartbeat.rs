//! Visibility renewal: the heartbeat keeps the messages a loop holds hidden, and lets go
//! of any held past `max_processing`. Its own module because it runs beside the loop on
//! its own timer, and its renewal rule is tested on its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use iras_cloud::{ReceiptHandle, ReceivedMessage};

use super::Shared;

/// Keeps the messages a loop holds hidden, by extending their visibility timeout every
/// third of the timeout until each is released, or until it has been held for
/// `max_processing`: then it is let go, to come back to the queue. Lives as long as the
/// loop; cheap to clone.
#[derive(Clone)]
pub(super) struct Heartbeat {
    /// Receipts in hand, with when each was taken; a short critical section, never held
    /// across `.await`.
    in_hand: Arc<std::sync::Mutex<Vec<(ReceiptHandle, Instant)>>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

/// How often the heartbeat renews: a third of the visibility timeout, so one slow or lost
/// renewal still leaves a second before the message shows again.
pub fn heartbeat_period(visibility_timeout: Duration) -> Duration {
    (visibility_timeout / 3).max(Duration::from_millis(100))
}

/// The receipts to renew now: those held for less than `cap`.
fn to_renew(
    in_hand: &[(ReceiptHandle, Instant)],
    now: Instant,
    cap: Duration,
) -> Vec<ReceiptHandle> {
    in_hand
        .iter()
        .filter(|(_, since)| now.saturating_duration_since(*since) < cap)
        .map(|(r, _)| r.clone())
        .collect()
}

impl Heartbeat {
    pub(super) fn start(shared: Arc<Shared>) -> Self {
        let in_hand = Arc::new(std::sync::Mutex::new(Vec::<(ReceiptHandle, Instant)>::new()));
        let held = in_hand.clone();
        let timeout = shared.config.visibility_timeout;
        let cap = shared.config.max_processing;
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(heartbeat_period(timeout));
            tick.tick().await; // the first tick is immediate
            loop {
                tick.tick().await;
                // A poisoned lock only means another task panicked mid-`retain`; the list
                // is still a valid set of receipts.
                let receipts = {
                    let held = held.lock().unwrap_or_else(|p| p.into_inner());
                    let renew = to_renew(&held, Instant::now(), cap);
                    if renew.len() < held.len() {
                        tracing::warn!(
                            overdue = held.len() - renew.len(),
                            cap_secs = cap.as_secs(),
                            "held past the processing cap: no longer renewed, back to the queue"
                        );
                    }
                    renew
                };
                for r in receipts {
                    if let Err(e) = shared.requests.change_visibility(&r, timeout).await {
                        tracing::warn!(error = %e, "heartbeat failed");
                    }
                }
            }
        });
        Self {
            in_hand,
            task: Arc::new(task),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(ReceiptHandle, Instant)>> {
        self.in_hand.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn hold(&self, batch: &[ReceivedMessage]) {
        let now = Instant::now();
        self.lock()
            .extend(batch.iter().map(|m| (m.receipt.clone(), now)));
    }

    pub(super) fn release(&self, receipt: &ReceiptHandle) {
        self.lock().retain(|(r, _)| r != receipt);
    }

    pub(super) fn stop(&self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heartbeat_renews_a_third_of_the_timeout_and_lets_go_at_the_cap() {
        assert_eq!(heartbeat_period(Duration::from_secs(10)).as_millis(), 3333);
        assert_eq!(
            heartbeat_period(Duration::from_millis(10)),
            Duration::from_millis(100)
        );
        let now = Instant::now();
        let receipt = |s: &str| ReceiptHandle(s.to_owned());
        let held = vec![
            (receipt("young"), now - Duration::from_secs(5)),
            (receipt("old"), now - Duration::from_secs(121)),
        ];
        assert_eq!(
            to_renew(&held, now, Duration::from_secs(120)),
            vec![receipt("young")]
        );
    }
}
