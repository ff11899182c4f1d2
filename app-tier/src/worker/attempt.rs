//! The give-up path: one receive of a request decides what a failure that may pass costs
//! (a redelivery, or on the queue's last receive an error answer). Its own module because
//! classifying and finishing both end here, and the rule must be the same for both.

use std::time::Instant;

use iras_cloud::ReceivedMessage;
use iras_protocol::{ErrorKind, Outcome, RequestMessage, Timings};

use super::answer::respond;
use super::{Shared, elapsed_ms};

/// One receive of a request, for deciding what a failure that may pass costs: a
/// redelivery, or on the queue's last receive an error answer (never silence until the
/// client's timeout, and a result by id for it to find).
#[derive(Debug, Clone, Copy)]
pub(super) struct Attempt {
    receive_count: u32,
    queued_ms: u64,
    pub(super) started: Instant,
}

impl Attempt {
    pub(super) fn new(message: &ReceivedMessage, queued_ms: u64, started: Instant) -> Self {
        Self {
            receive_count: message.receive_count,
            queued_ms,
            started,
        }
    }

    /// Whether the queue dead-letters the message instead of delivering it again.
    fn is_last(&self, shared: &Shared) -> bool {
        self.receive_count >= shared.max_receives
    }

    /// After a failure that may pass (`doing` failed with `error`): leaves the message
    /// for redelivery (`false`), or on the last receive answers `request` with a `kind`
    /// error saying so (`true` once answered).
    pub(super) async fn retry_or_give_up(
        &self,
        shared: &Shared,
        request: &RequestMessage,
        kind: ErrorKind,
        doing: &str,
        error: String,
    ) -> bool {
        let id = request.id;
        if !self.is_last(shared) {
            tracing::warn!(%id, receives = self.receive_count, %error,
                "cannot {doing} yet: will be redelivered");
            return false;
        }
        tracing::error!(%id, receives = self.receive_count, %error,
            "cannot {doing} on the last receive: answering with an error");
        let outcome = Outcome::Error {
            kind,
            message: format!(
                "gave up after {} attempts: could not {doing}: {error}",
                self.receive_count
            ),
        };
        let timings = Timings {
            queued_ms: self.queued_ms,
            total_ms: elapsed_ms(self.started),
            ..Timings::default()
        };
        respond(shared, request, outcome, timings).await
    }
}
