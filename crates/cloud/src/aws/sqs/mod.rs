//! SQS queues.
//!
//! A queue handle holds the queue's URL, resolved once with `GetQueueUrl` (a full URL is
//! accepted too and checked with `GetQueueAttributes`), so a missing queue is reported when
//! the handle is made, not at the first send.
//!
//! Mapping notes:
//! - Batch calls tag each entry with its index as the SQS entry `Id`, and put the
//!   `Successful` and `Failed` lists back into input order by that id; an entry in
//!   neither list is reported as failed (not the sender's fault).
//! - A batch send is split further when the bodies together exceed the 256 KiB request
//!   limit, so ten messages near the per-message limit still go out.
//! - Waits are whole seconds on SQS: the long-poll wait is rounded to the nearest second,
//!   visibility timeouts and delays up (never shorter than asked).
//!
//! `provision` creates the dead-letter queue, then the main queue with a redrive policy
//! pointing at it, both with SQS-managed server-side encryption. When a queue exists with
//! other attributes, `CreateQueue` fails with `QueueNameExists`; we then apply the spec's
//! attributes with `SetQueueAttributes` rather than fail, so provisioning converges a
//! stack to its configuration (messages are kept).
//!
//! The handle and the [`Queue`] operations live here; the rest is split along its seams:
//! `batch` (entry ids, result slots and payload-sized chunks of the batch calls), `errors`
//! (SQS error codes to the contract's variants) and `provision` (creating, converging,
//! copying and deleting queues, and their redrive policies).

mod batch;
mod errors;
mod provision;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};

use super::{Failure, ceil_secs, malformed, round_secs};
use crate::error::{CloudError, Result};
use crate::queue::{
    BatchEntryError, EntryResult, OutgoingMessage, Queue, QueueDepth, ReceiptHandle,
    ReceiveOptions, ReceivedMessage, name_from_url, validate_batch_len, validate_queue_name,
    validate_visibility,
};

use batch::{entry_error, missing_entry_error, payload_chunks, slot_for};
use errors::sqs_error;
use provision::parse_max_receive_count;
pub(super) use provision::{create_queue_like, delete_queue, provision};

const SERVICE: &str = "sqs";

/// An SQS queue.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    name: String,
    url: String,
}

impl SqsQueue {
    pub(super) async fn open(client: Client, name_or_url: &str) -> Result<Self> {
        if name_or_url.starts_with("https://") || name_or_url.starts_with("http://") {
            let name = name_from_url(name_or_url).ok_or_else(|| CloudError::InvalidQueueName {
                name: name_or_url.to_owned(),
                reason: "a queue URL must end with the queue name",
            })?;
            validate_queue_name(name)?;
            let queue = Self {
                client,
                name: name.to_owned(),
                url: name_or_url.to_owned(),
            };
            // The health check: does the queue behind this URL exist?
            queue
                .client
                .get_queue_attributes()
                .queue_url(&queue.url)
                .attribute_names(QueueAttributeName::QueueArn)
                .send()
                .await
                .map_err(|e| sqs_error(&queue.name, "GetQueueAttributes", Failure::of(&e)))?;
            return Ok(queue);
        }
        validate_queue_name(name_or_url)?;
        let url = queue_url(&client, name_or_url).await?;
        Ok(Self {
            client,
            name: name_or_url.to_owned(),
            url,
        })
    }

    /// The queue's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn error(&self, operation: &'static str, failure: Failure) -> CloudError {
        sqs_error(&self.name, operation, failure)
    }
}

async fn queue_url(client: &Client, name: &str) -> Result<String> {
    let output = client
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| sqs_error(name, "GetQueueUrl", Failure::of(&e)))?;
    output
        .queue_url()
        .map(str::to_owned)
        .ok_or_else(|| malformed(SERVICE, "GetQueueUrl", "no QueueUrl"))
}

fn parse_count(attributes: &HashMap<QueueAttributeName, String>, name: &QueueAttributeName) -> u64 {
    attributes
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[async_trait]
impl Queue for SqsQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, message: OutgoingMessage) -> Result<String> {
        message.validate(&self.name)?;
        let output = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(message.body)
            .delay_seconds(ceil_secs(message.delay))
            .send()
            .await
            .map_err(|e| self.error("SendMessage", Failure::of(&e)))?;
        output
            .message_id()
            .map(str::to_owned)
            .ok_or_else(|| malformed(SERVICE, "SendMessage", "no MessageId"))
    }

    async fn send_batch(&self, messages: Vec<OutgoingMessage>) -> Result<Vec<EntryResult<String>>> {
        validate_batch_len(messages.len())?;
        let mut out: Vec<Option<EntryResult<String>>> = vec![None; messages.len()];
        let mut accepted = Vec::with_capacity(messages.len());
        for (i, m) in messages.into_iter().enumerate() {
            match m.validate(&self.name) {
                Ok(()) => accepted.push((i, m)),
                Err(e) => {
                    out[i] = Some(Err(BatchEntryError {
                        code: if matches!(e, CloudError::MessageTooLarge { .. }) {
                            "MessageTooLong".into()
                        } else {
                            "InvalidParameterValue".into()
                        },
                        message: e.to_string(),
                        sender_fault: true,
                    }));
                }
            }
        }
        for chunk in payload_chunks(accepted) {
            self.send_chunk(chunk, &mut out).await?;
        }
        Ok(out
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(missing_entry_error())))
            .collect())
    }

    async fn receive(&self, options: ReceiveOptions) -> Result<Vec<ReceivedMessage>> {
        options.validate()?;
        let max = i32::try_from(options.max_messages).unwrap_or(1);
        let output = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max)
            .wait_time_seconds(round_secs(options.wait))
            .set_visibility_timeout(options.visibility_timeout.map(ceil_secs))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .map_err(|e| self.error("ReceiveMessage", Failure::of(&e)))?;
        output
            .messages()
            .iter()
            .map(|m| {
                let missing = |what| malformed(SERVICE, "ReceiveMessage", what);
                // Always returned when asked for; should it ever be missing, count the
                // receive as a first one rather than make the message unreceivable.
                let receive_count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| {
                        tracing::warn!(queue = %self.name, "message without ApproximateReceiveCount");
                        1
                    });
                let sent_at_ms = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                Ok(ReceivedMessage {
                    message_id: m
                        .message_id()
                        .ok_or_else(|| missing("no MessageId"))?
                        .to_owned(),
                    body: m.body().unwrap_or_default().to_owned(),
                    receipt: ReceiptHandle(
                        m.receipt_handle()
                            .ok_or_else(|| missing("no ReceiptHandle"))?
                            .to_owned(),
                    ),
                    receive_count,
                    sent_at_ms,
                })
            })
            .collect()
    }

    async fn delete(&self, receipt: &ReceiptHandle) -> Result<()> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(&receipt.0)
            .send()
            .await
            .map_err(|e| self.error("DeleteMessage", Failure::of(&e)))?;
        Ok(())
    }

    async fn delete_batch(&self, receipts: Vec<ReceiptHandle>) -> Result<Vec<EntryResult<()>>> {
        validate_batch_len(receipts.len())?;
        let entries = receipts
            .iter()
            .enumerate()
            .map(|(i, r)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(&r.0)
                    .build()
                    .map_err(|e| malformed(SERVICE, "DeleteMessageBatch", &e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let output = self
            .client
            .delete_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| self.error("DeleteMessageBatch", Failure::of(&e)))?;
        let mut out: Vec<Option<EntryResult<()>>> = vec![None; receipts.len()];
        for ok in output.successful() {
            if let Some(slot) = slot_for(&mut out, ok.id()) {
                *slot = Some(Ok(()));
            }
        }
        for failed in output.failed() {
            if let Some(slot) = slot_for(&mut out, failed.id()) {
                *slot = Some(Err(entry_error(failed)));
            }
        }
        Ok(out
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(missing_entry_error())))
            .collect())
    }

    async fn change_visibility(&self, receipt: &ReceiptHandle, timeout: Duration) -> Result<()> {
        validate_visibility(timeout)?;
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(&receipt.0)
            .visibility_timeout(ceil_secs(timeout))
            .send()
            .await
            .map_err(|e| self.error("ChangeMessageVisibility", Failure::of(&e)))?;
        Ok(())
    }

    async fn depth(&self) -> Result<QueueDepth> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| self.error("GetQueueAttributes", Failure::of(&e)))?;
        let empty = HashMap::new();
        let attributes = output.attributes().unwrap_or(&empty);
        Ok(QueueDepth {
            visible: parse_count(attributes, &QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: parse_count(
                attributes,
                &QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            ),
            delayed: parse_count(
                attributes,
                &QueueAttributeName::ApproximateNumberOfMessagesDelayed,
            ),
        })
    }

    async fn max_receive_count(&self) -> Result<Option<u32>> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(|e| self.error("GetQueueAttributes", Failure::of(&e)))?;
        let Some(policy) = output
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
        else {
            return Ok(None);
        };
        parse_max_receive_count(policy)
            .map(Some)
            .ok_or_else(|| malformed(SERVICE, "GetQueueAttributes", "unreadable RedrivePolicy"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_come_from_urls() {
        let cases = [
            (
                "https://sqs.eu-west-1.amazonaws.com/123456789012/iras-requests",
                Some("iras-requests"),
            ),
            ("http://127.0.0.1:5000/123456789012/q-1/", Some("q-1")),
            (
                "http://localhost:4566/000000000000/q.fifo?x=1",
                Some("q.fifo"),
            ),
            ("http://127.0.0.1:5000", None),
            ("http://127.0.0.1:5000/", None),
            ("iras-requests", None),
        ];
        for (url, want) in cases {
            assert_eq!(name_from_url(url), want, "{url}");
        }
    }
}
