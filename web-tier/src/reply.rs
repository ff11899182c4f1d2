//! The queue results come back on: by default one of this web tier's own.
//!
//! Every request names its reply-to queue, and the app tier answers there. If all web tiers
//! of a stack shared the stack's response queue, each would take results meant for the
//! others: a result for an id a tier does not know is recorded and deleted, and the other
//! tier's client waits until its timeout. So each web tier makes its own queue at start,
//! `<response-queue>-web-<id>`, shaped like the stack's response queue (same dead-letter
//! queue and receive limit, retention, encryption; on AWS a TLS-only policy), and deletes
//! it at a clean stop, after the drain, when nothing it queued still waits.
//!
//! The decision a reader may question: the id is fresh at every start (the instance id, if
//! any, then random hex), not stable across restarts. A stable name would let a restarted
//! tier pick up results that arrived while it was down, but those are in the output bucket
//! anyway (`GET /results/{id}`), and SQS refuses for 60 s to create a queue with the name
//! of one just deleted, which would hold up every restart. A tier killed without a clean
//! stop leaves its queue behind: nothing polls it, the app tier's answers to it expire
//! with the retention period, and `scripts/teardown-aws` removes it with the stack.
//!
//! `--reply-queue shared` keeps the seed's single response queue, for a stack that runs
//! exactly one web tier and cannot grant it the right to make queues.

use std::sync::Arc;

use anyhow::Context as _;
use clap::ValueEnum;
use iras_cloud::{Cloud, Queue};

/// Which queue results come back on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReplyQueueMode {
    /// A queue of this web tier's own, made at start and deleted at a clean stop (the
    /// default: several web tiers can serve one stack).
    Own,
    /// The stack's response queue (`--response-queue`): only for a stack with one web tier.
    Shared,
}

/// The longest `--web-id`: SQS queue names have 80 characters, the rest is the response
/// queue's name and `-web-`.
pub const MAX_WEB_ID_LEN: usize = 40;

/// Checks a `--web-id`: letters, digits, `-` and `_` (what a queue name allows).
pub fn parse_web_id(id: &str) -> Result<String, String> {
    if id.is_empty() || id.len() > MAX_WEB_ID_LEN {
        return Err(format!("must have 1 to {MAX_WEB_ID_LEN} characters"));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err("may hold only letters, digits, '-' and '_'".into());
    }
    Ok(id.to_owned())
}

/// The queue this web tier takes results from.
#[derive(Debug, Clone)]
pub struct ReplyQueue {
    queue: Arc<dyn Queue>,
    /// Made by this process, so deleted at its clean stop.
    own: bool,
}

impl ReplyQueue {
    /// Opens the shared response queue, or makes this tier's own queue like it. `web_id`
    /// (from `--web-id`) replaces the generated id.
    pub async fn open(
        cloud: &Cloud,
        mode: ReplyQueueMode,
        response_queue: &str,
        web_id: Option<&str>,
    ) -> anyhow::Result<Self> {
        match mode {
            ReplyQueueMode::Shared => Ok(Self {
                queue: cloud.queue(response_queue).await?,
                own: false,
            }),
            ReplyQueueMode::Own => {
                let id = match web_id {
                    Some(id) => id.to_owned(),
                    None => generated_id(cloud.instance_id().await.as_deref()),
                };
                let name = own_queue_name(response_queue, &id);
                let queue = cloud
                    .create_queue_like(response_queue, &name)
                    .await
                    .with_context(|| {
                        format!(
                            "making this web tier's reply queue {name} like {response_queue} \
                             (on AWS the web role needs sqs:CreateQueue on it; or run one web \
                             tier with --reply-queue shared)"
                        )
                    })?;
                tracing::info!(queue = %name, "reply queue made");
                Ok(Self { queue, own: true })
            }
        }
    }

    /// The queue to poll.
    pub fn queue(&self) -> Arc<dyn Queue> {
        self.queue.clone()
    }

    /// Its name, as requests carry it in `reply_to`.
    pub fn name(&self) -> &str {
        self.queue.name()
    }

    /// Deletes the queue if this process made it. Call once nothing waits on it any more.
    pub async fn close(&self, cloud: &Cloud) {
        if !self.own {
            return;
        }
        match cloud.delete_queue(self.name()).await {
            Ok(()) => tracing::info!(queue = %self.name(), "reply queue deleted"),
            // Not fatal: the queue is left idle and goes with the stack.
            Err(e) => {
                tracing::warn!(queue = %self.name(), error = %e, "deleting the reply queue failed")
            }
        }
    }
}

/// `<response-queue>-web-<id>`, from the response queue's name (or URL, on AWS).
pub fn own_queue_name(response_queue: &str, id: &str) -> String {
    format!("{}-web-{id}", iras_cloud::queue::queue_name(response_queue))
}

/// A fresh id: the instance id, when there is one, so an operator sees which machine a
/// queue belongs to, then 8 random hex digits, unique to this start.
fn generated_id(instance_id: Option<&str>) -> String {
    let random = &uuid::Uuid::new_v4().simple().to_string()[..8];
    match instance_id.and_then(|id| parse_web_id(id).ok()) {
        Some(instance) if instance.len() + 9 <= MAX_WEB_ID_LEN => format!("{instance}-{random}"),
        _ => random.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_queues_are_named_after_the_response_queue_and_the_tier() {
        assert_eq!(
            own_queue_name("iras-responses", "a1b2c3d4"),
            "iras-responses-web-a1b2c3d4"
        );
        assert_eq!(
            own_queue_name(
                "https://sqs.eu-west-1.amazonaws.com/123456789012/st-ResponseQueue-X1",
                "i-0abc-a1b2c3d4"
            ),
            "st-ResponseQueue-X1-web-i-0abc-a1b2c3d4"
        );
    }

    #[test]
    fn generated_ids_are_fresh_and_name_the_instance() {
        let a = generated_id(Some("i-0123456789abcdef0"));
        let b = generated_id(Some("i-0123456789abcdef0"));
        assert_ne!(a, b, "two starts share an id");
        assert!(a.starts_with("i-0123456789abcdef0-"), "{a}");
        assert!(parse_web_id(&a).is_ok(), "{a}");
        let local = generated_id(None);
        assert_eq!(local.len(), 8);
        // An instance id a queue name cannot hold is left out, not passed on.
        assert_eq!(generated_id(Some("web/1 x")).len(), 8);
    }

    #[test]
    fn web_ids_are_checked() {
        assert!(parse_web_id("web-1_a").is_ok());
        for bad in ["", "a b", "a.b", "ü", &"x".repeat(MAX_WEB_ID_LEN + 1)] {
            assert!(parse_web_id(bad).is_err(), "{bad:?}");
        }
    }
}
