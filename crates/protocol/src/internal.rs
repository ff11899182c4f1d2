//! The web tier's internal endpoints, which the standalone `listener` calls: their paths,
//! their answers, and the token both sides must share.
//!
//! Both endpoints serve loopback only and want `Authorization: Bearer <token>` (a wrong one
//! is `401`):
//! - `GET` [`REPLY_QUEUE_PATH`]: `200` with a [`ReplyQueueReply`], the queue the web tier's
//!   results come back on (its own, made at its start), which is the queue the listener
//!   polls;
//! - `POST` [`DELIVERY_PATH`] with a response message's wire JSON as the body: `200` with a
//!   [`DeliveryReply`].
//!
//! They live here, not with either side, because they are a contract between two
//! processes: the web tier serves them, the listener calls them.

use serde::{Deserialize, Serialize};

pub use crate::token::{MIN_TOKEN_BYTES, Token, TokenError};

/// Path of the web tier's delivery endpoint.
pub const DELIVERY_PATH: &str = "/internal/results";
/// Path of the web tier's endpoint that names its reply queue.
pub const REPLY_QUEUE_PATH: &str = "/internal/reply-queue";

/// The reply-queue endpoint's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyQueueReply {
    /// The queue (name, or URL on AWS) the web tier's requests name as their reply-to.
    pub reply_queue: String,
}

/// What became of a delivered result. Either way the response may be deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// A waiting HTTP request got it.
    Delivered,
    /// Nobody was waiting (timed out, duplicate, or another web tier's request); it was
    /// recorded for `GET /results/{id}`, and the output bucket has it anyway.
    Recorded,
}

/// The delivery endpoint's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryReply {
    /// What the web tier did with the result.
    pub delivery: Delivery,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answers_keep_their_wire_form() {
        let reply = DeliveryReply {
            delivery: Delivery::Recorded,
        };
        assert_eq!(
            serde_json::to_string(&reply).unwrap(),
            r#"{"delivery":"recorded"}"#
        );
        let named: ReplyQueueReply =
            serde_json::from_str(r#"{"reply_queue":"iras-responses-web-a"}"#).unwrap();
        assert_eq!(named.reply_queue, "iras-responses-web-a");
    }
}
