//! One memory budget for every decode in a process.
//!
//! [`probe_image`](crate::probe_image) estimates from the header what decoding an image will
//! allocate; before decoding, the caller takes that many bytes out of the process's
//! [`DecodeBudget`] and gives them back when the pixels are dropped. So however many uploads
//! or messages arrive at once, the decodes in flight together stay within the budget, and at
//! most `max_decodes` run side by side. A decode that cannot start within the wait bound is
//! refused as [`BudgetError::Busy`] (the web tier answers 503, the app tier leaves the message
//! for redelivery) rather than queueing forever.
//!
//! The budget is a [`tokio::sync::Semaphore`] weighted in KiB (its permits are `u32` per
//! acquisition, so bytes would cap one image at 4 GiB); waiters are served in order, so a large
//! image is not starved by a stream of small ones.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Default memory of a process's [`DecodeBudget`]: 256 MiB, sized for a 1–2 GiB instance
/// (the web tier's or the app tier's other memory stays under ~150 MB).
pub const DEFAULT_DECODE_MEMORY_BYTES: u64 = 256 * 1024 * 1024;
/// Default longest wait for room in a [`DecodeBudget`], in seconds.
pub const DEFAULT_DECODE_WAIT_SECS: u64 = 30;

const KIB: u64 = 1024;

/// Why a decode could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// The budget was full for the whole wait.
    #[error("too many images are being decoded; no room within {} s", waited.as_secs())]
    Busy {
        /// The wait bound that passed.
        waited: Duration,
    },
    /// The image needs more than the whole budget (the limits let through more than the
    /// budget holds).
    #[error(
        "decoding needs {needed_bytes} bytes, more than the whole decode budget of {budget_bytes} bytes"
    )]
    OverBudget {
        /// The estimate.
        needed_bytes: u64,
        /// The budget.
        budget_bytes: u64,
    },
    /// Configuration: the budget is smaller than the largest image the limits accept.
    #[error(
        "--decode-memory-bytes ({budget_bytes}) must be at least --max-decoded-bytes ({max_decoded_bytes})"
    )]
    SmallerThanOneImage {
        /// The budget.
        budget_bytes: u64,
        /// The per-image limit.
        max_decoded_bytes: u64,
    },
}

/// The memory and concurrency budget of all decodes in a process. Cheap to clone; clones share
/// the budget.
#[derive(Debug, Clone)]
pub struct DecodeBudget {
    /// Memory left, in KiB. Never closed.
    memory: Arc<Semaphore>,
    /// Decodes that may start. Never closed.
    slots: Arc<Semaphore>,
    budget_bytes: u64,
    wait: Duration,
}

/// Room for one decode, given back when dropped. Move it into the blocking task that decodes.
#[derive(Debug)]
pub struct DecodePermit {
    _memory: OwnedSemaphorePermit,
    _slot: OwnedSemaphorePermit,
}

impl DecodeBudget {
    /// The budget a process is configured with: `budget_bytes` for at most `decodes`
    /// decodes at once (default: the number of CPUs), waiting at most `wait`. Fails if it
    /// cannot hold one image of `max_decoded_bytes`, the largest the limits let through.
    pub fn configured(
        budget_bytes: u64,
        decodes: Option<NonZeroUsize>,
        wait: Duration,
        max_decoded_bytes: u64,
    ) -> Result<Self, BudgetError> {
        if budget_bytes < max_decoded_bytes {
            return Err(BudgetError::SmallerThanOneImage {
                budget_bytes,
                max_decoded_bytes,
            });
        }
        let decodes = decodes
            .unwrap_or_else(|| std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN));
        Ok(Self::new(budget_bytes, decodes, wait))
    }

    /// A budget of `budget_bytes` (rounded up to KiB, at most 4 TiB) for at most `decodes`
    /// decodes at once; [`acquire`](Self::acquire) waits at most `wait`.
    pub fn new(budget_bytes: u64, decodes: NonZeroUsize, wait: Duration) -> Self {
        let kib = budget_bytes.div_ceil(KIB).min(u64::from(u32::MAX));
        DecodeBudget {
            memory: Arc::new(Semaphore::new(kib as usize)),
            slots: Arc::new(Semaphore::new(decodes.get().min(Semaphore::MAX_PERMITS))),
            budget_bytes: kib * KIB,
            wait,
        }
    }

    /// The whole budget, in bytes.
    pub fn budget_bytes(&self) -> u64 {
        self.budget_bytes
    }

    /// Bytes not taken by decodes in flight.
    pub fn available_bytes(&self) -> u64 {
        self.memory.available_permits() as u64 * KIB
    }

    /// Waits (at most the configured bound) for a decode slot and `bytes` of the budget.
    pub async fn acquire(&self, bytes: u64) -> Result<DecodePermit, BudgetError> {
        if bytes > self.budget_bytes {
            return Err(BudgetError::OverBudget {
                needed_bytes: bytes,
                budget_bytes: self.budget_bytes,
            });
        }
        // At most u32::MAX KiB, since the budget is.
        let kib = bytes.div_ceil(KIB).max(1) as u32;
        let take = async {
            let slot = self.slots.clone().acquire_owned().await;
            let memory = self.memory.clone().acquire_many_owned(kib).await;
            (slot, memory)
        };
        match tokio::time::timeout(self.wait, take).await {
            Ok((Ok(slot), Ok(memory))) => Ok(DecodePermit {
                _memory: memory,
                _slot: slot,
            }),
            // The semaphores are never closed, so only the timeout ends here.
            _ => Err(BudgetError::Busy { waited: self.wait }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn budget(mib: u64, decodes: usize) -> DecodeBudget {
        DecodeBudget::new(
            mib << 20,
            NonZeroUsize::new(decodes).unwrap(),
            Duration::from_secs(5),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn decodes_share_the_memory() {
        let b = budget(100, 10);
        let first = b.acquire(60 << 20).await.unwrap();
        assert_eq!(b.available_bytes(), 40 << 20);
        // The second does not fit until the first is dropped.
        let b2 = b.clone();
        let second = tokio::spawn(async move { b2.acquire(60 << 20).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!second.is_finished());
        drop(first);
        second.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_budget_is_busy_after_the_wait() {
        let b = budget(10, 10);
        let _held = b.acquire(10 << 20).await.unwrap();
        let err = b.acquire(1).await.unwrap_err();
        assert_eq!(
            err,
            BudgetError::Busy {
                waited: Duration::from_secs(5)
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_bounded_too() {
        let b = budget(100, 1);
        let _held = b.acquire(1024).await.unwrap();
        assert!(matches!(
            b.acquire(1024).await,
            Err(BudgetError::Busy { .. })
        ));
    }

    #[tokio::test]
    async fn over_the_whole_budget_is_refused_at_once() {
        let b = budget(1, 1);
        assert!(matches!(
            b.acquire(2 << 20).await,
            Err(BudgetError::OverBudget { .. })
        ));
        let wait = Duration::from_secs(1);
        assert!(DecodeBudget::configured(1 << 20, None, wait, 2 << 20).is_err());
        assert!(DecodeBudget::configured(1 << 20, None, wait, 1 << 20).is_ok());
    }
}
