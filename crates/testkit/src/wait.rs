//! Waiting on a condition with a deadline, instead of sleeping a fixed time and hoping.

use std::future::Future;
use std::time::Duration;

/// Polls `probe` until it returns `Some`, and returns that; panics with `what` once
/// `within` has passed. Pauses between polls start at 10 ms and double up to 200 ms, so a
/// condition that holds at once costs nothing and a slow one is not hammered.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn returns_the_first_value_and_panics_past_the_deadline() {
        let polls = AtomicU32::new(0);
        let got = eventually("the third poll", Duration::from_secs(1), || async {
            (polls.fetch_add(1, Ordering::SeqCst) == 2).then_some(7)
        })
        .await;
        assert_eq!((got, polls.load(Ordering::SeqCst)), (7, 3));

        let never = tokio::spawn(eventually("never", Duration::from_secs(1), || async {
            None::<()>
        }));
        let err = never.await.unwrap_err();
        assert!(err.is_panic());
    }
}
