//! How long images, results and job records stay retrievable (`--retention-days`).
//!
//! On AWS the stack's S3 lifecycle rules expire objects (the CloudFormation template's
//! `RetentionDays`), so nothing runs here: S3 does it without a process awake. The local
//! backend has no lifecycle rules, so the web tier, the one process that always runs, sweeps
//! both buckets itself: once at start, then every [`SWEEP_EVERY`]. An object therefore stays
//! for at least its retention and goes within the next sweep after, as S3's rules (which run
//! about daily) also promise only a lower bound. A sweep that fails is logged and retried at
//! the next one: an object kept longer is no loss, so it never stops the web tier.
//!
//! Expired results become unknown ids (`GET /results/{id}` is 404 once the web tier's
//! in-memory copy is gone too), and so do expired jobs and batches.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Time between two sweeps of the local backend's buckets.
pub const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// What to sweep, and after how long an object expires.
pub struct Retention {
    /// The stack's buckets: the uploaded images and the results.
    pub buckets: Vec<String>,
    /// Age after which an object is deleted.
    pub max_age: Duration,
}

impl Retention {
    /// Sweeps until `stop` is cancelled. On AWS, where the buckets' lifecycle rules expire
    /// objects, it says so once and only waits for `stop`: like every background task of the
    /// web tier, it ends when the web tier stops, not before.
    pub async fn sweep(self, cloud: iras_cloud::Cloud, stop: CancellationToken) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if !self.sweep_once(&cloud).await {
                tracing::info!(
                    backend = %cloud.kind(),
                    "retention: the buckets' lifecycle rules expire objects (the stack's \
                     RetentionDays); this web tier sweeps nothing"
                );
                stop.cancelled().await;
                return;
            }
        }
    }

    /// One sweep of every bucket; false when the backend expires objects by itself.
    async fn sweep_once(&self, cloud: &iras_cloud::Cloud) -> bool {
        for bucket in &self.buckets {
            match cloud.expire_objects(bucket, self.max_age).await {
                Ok(None) => return false,
                Ok(Some(0)) => tracing::debug!(bucket, "retention: nothing expired"),
                Ok(Some(expired)) => tracing::info!(bucket, expired, "retention: objects expired"),
                Err(e) => {
                    tracing::warn!(bucket, error = %e, "retention: sweep failed, next in an hour")
                }
            }
        }
        true
    }
}
