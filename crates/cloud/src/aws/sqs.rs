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

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, DeleteMessageBatchRequestEntry, MessageSystemAttributeName,
    QueueAttributeName, SendMessageBatchRequestEntry,
};

use super::{Failure, ceil_secs, malformed, round_secs};
use crate::error::{CloudError, Result};
use crate::queue::{
    BatchEntryError, EntryResult, MAX_MESSAGE_BYTES, OutgoingMessage, Queue, QueueDepth,
    ReceiptHandle, ReceiveOptions, ReceivedMessage, name_from_url, validate_batch_len,
    validate_queue_name, validate_visibility,
};
use crate::spec::StackSpec;

const SERVICE: &str = "sqs";

/// Most bytes of message bodies one `SendMessageBatch` may carry (SQS counts the whole
/// request payload against the per-message limit).
const MAX_BATCH_PAYLOAD_BYTES: usize = MAX_MESSAGE_BYTES;
/// How long a dead-letter queue keeps messages: SQS's maximum, 14 days, so a poison
/// message outlives the original's retention and can be inspected.
const DEAD_LETTER_RETENTION_SECS: u32 = 14 * 24 * 60 * 60;

/// Error codes for a queue that does not exist (JSON protocol, then the query protocol's).
const QUEUE_MISSING: &[&str] = &[
    "QueueDoesNotExist",
    "AWS.SimpleQueueService.NonExistentQueue",
];
/// Error codes for a receipt handle that is malformed, stale or no longer in flight.
const RECEIPT_INVALID: &[&str] = &[
    "ReceiptHandleIsInvalid",
    "InvalidReceiptHandle",
    "InvalidIdFormat",
    "MessageNotInflight",
    "AWS.SimpleQueueService.MessageNotInflight",
];
/// Error codes for `CreateQueue` on a queue that exists with other attributes.
const QUEUE_EXISTS: &[&str] = &["QueueNameExists", "QueueAlreadyExists"];

/// Maps a failed SQS call on `queue`: a missing queue and (for calls taking a receipt) an
/// invalid receipt get their own variants, the rest is [`CloudError::Aws`].
fn sqs_error(queue: &str, operation: &'static str, failure: Failure) -> CloudError {
    if failure.has_code(QUEUE_MISSING) {
        return CloudError::QueueNotFound {
            queue: queue.to_owned(),
        };
    }
    let takes_receipt = matches!(operation, "DeleteMessage" | "ChangeMessageVisibility");
    if takes_receipt && failure.has_code(RECEIPT_INVALID) {
        return CloudError::InvalidReceipt {
            queue: queue.to_owned(),
        };
    }
    failure.into_error(SERVICE, operation)
}

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

    /// One `SendMessageBatch` of `(index, message)`; results land in `out[index]`.
    async fn send_chunk(
        &self,
        chunk: Vec<(usize, OutgoingMessage)>,
        out: &mut [Option<EntryResult<String>>],
    ) -> Result<()> {
        let entries = chunk
            .iter()
            .map(|(i, m)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&m.body)
                    .delay_seconds(ceil_secs(m.delay))
                    .build()
                    .map_err(|e| malformed(SERVICE, "SendMessageBatch", &e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let output = self
            .client
            .send_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| self.error("SendMessageBatch", Failure::of(&e)))?;
        for ok in output.successful() {
            if let Some(slot) = slot_for(out, ok.id()) {
                *slot = Some(Ok(ok.message_id().to_owned()));
            }
        }
        for failed in output.failed() {
            if let Some(slot) = slot_for(out, failed.id()) {
                *slot = Some(Err(entry_error(failed)));
            }
        }
        Ok(())
    }
}

/// The result slot for a batch entry id (the index we gave it).
fn slot_for<'a, T>(out: &'a mut [Option<T>], id: &str) -> Option<&'a mut Option<T>> {
    id.parse::<usize>().ok().and_then(|i| out.get_mut(i))
}

fn entry_error(failed: &BatchResultErrorEntry) -> BatchEntryError {
    BatchEntryError {
        code: failed.code().to_owned(),
        message: failed.message().unwrap_or_default().to_owned(),
        sender_fault: failed.sender_fault(),
    }
}

fn missing_entry_error() -> BatchEntryError {
    BatchEntryError {
        code: "MissingResult".into(),
        message: "SQS reported neither success nor failure for this entry".into(),
        sender_fault: false,
    }
}

/// Groups indexed messages into `SendMessageBatch` calls: at most ten entries and at most
/// [`MAX_BATCH_PAYLOAD_BYTES`] of bodies each, order kept.
fn payload_chunks(messages: Vec<(usize, OutgoingMessage)>) -> Vec<Vec<(usize, OutgoingMessage)>> {
    let mut chunks: Vec<Vec<(usize, OutgoingMessage)>> = Vec::new();
    let mut bytes = 0;
    for (i, m) in messages {
        let len = m.body.len();
        let fits = chunks.last().is_some_and(|c| {
            c.len() < crate::queue::MAX_BATCH_ENTRIES && bytes + len <= MAX_BATCH_PAYLOAD_BYTES
        });
        if !fits {
            chunks.push(Vec::new());
            bytes = 0;
        }
        bytes += len;
        if let Some(chunk) = chunks.last_mut() {
            chunk.push((i, m));
        }
    }
    chunks
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

/// `maxReceiveCount` of a redrive policy: SQS gives it as a number or as a string.
fn parse_max_receive_count(policy: &str) -> Option<u32> {
    let value: serde_json::Value = serde_json::from_str(policy).ok()?;
    match &value["maxReceiveCount"] {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The attributes `provision` gives a queue.
fn queue_attributes(
    visibility_timeout: Duration,
    redrive_policy: Option<String>,
    dead_letter: bool,
) -> HashMap<QueueAttributeName, String> {
    let mut attributes = HashMap::from([
        (
            QueueAttributeName::VisibilityTimeout,
            ceil_secs(visibility_timeout).to_string(),
        ),
        (QueueAttributeName::SqsManagedSseEnabled, "true".to_owned()),
    ]);
    if let Some(policy) = redrive_policy {
        attributes.insert(QueueAttributeName::RedrivePolicy, policy);
    }
    if dead_letter {
        attributes.insert(
            QueueAttributeName::MessageRetentionPeriod,
            DEAD_LETTER_RETENTION_SECS.to_string(),
        );
    }
    attributes
}

/// The redrive policy JSON: after `max_receive_count` receives, move to `dead_letter_arn`.
fn redrive_policy(dead_letter_arn: &str, max_receive_count: u32) -> String {
    serde_json::json!({
        "deadLetterTargetArn": dead_letter_arn,
        "maxReceiveCount": max_receive_count.to_string(),
    })
    .to_string()
}

/// Creates the queue with these attributes, or sets them if it exists with others.
/// Returns its URL.
async fn ensure_queue(
    client: &Client,
    name: &str,
    attributes: HashMap<QueueAttributeName, String>,
) -> Result<String> {
    let created = client
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(attributes.clone()))
        .send()
        .await;
    match created {
        Ok(output) => output
            .queue_url()
            .map(str::to_owned)
            .ok_or_else(|| malformed(SERVICE, "CreateQueue", "no QueueUrl")),
        Err(e) => {
            let failure = Failure::of(&e);
            if !failure.has_code(QUEUE_EXISTS) {
                return Err(sqs_error(name, "CreateQueue", failure));
            }
            tracing::info!(
                queue = name,
                "queue exists with other attributes; updating them"
            );
            let url = queue_url(client, name).await?;
            client
                .set_queue_attributes()
                .queue_url(&url)
                .set_attributes(Some(attributes))
                .send()
                .await
                .map_err(|e| sqs_error(name, "SetQueueAttributes", Failure::of(&e)))?;
            Ok(url)
        }
    }
}

async fn queue_arn(client: &Client, name: &str, url: &str) -> Result<String> {
    let output = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| sqs_error(name, "GetQueueAttributes", Failure::of(&e)))?;
    output
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| malformed(SERVICE, "GetQueueAttributes", "no QueueArn"))
}

/// A queue's URL from its name or URL, with the name for error messages.
async fn resolve(client: &Client, name_or_url: &str) -> Result<(String, String)> {
    if let Some(name) = name_from_url(name_or_url) {
        return Ok((name.to_owned(), name_or_url.to_owned()));
    }
    validate_queue_name(name_or_url)?;
    Ok((
        name_or_url.to_owned(),
        queue_url(client, name_or_url).await?,
    ))
}

/// The attributes a queue made like another takes from it: everything that shapes how
/// messages live and die, nothing that names the template itself (its ARN, its policy).
const COPIED_ATTRIBUTES: &[QueueAttributeName] = &[
    QueueAttributeName::VisibilityTimeout,
    QueueAttributeName::MessageRetentionPeriod,
    QueueAttributeName::MaximumMessageSize,
    QueueAttributeName::DelaySeconds,
    QueueAttributeName::ReceiveMessageWaitTimeSeconds,
    QueueAttributeName::RedrivePolicy,
    QueueAttributeName::SqsManagedSseEnabled,
    QueueAttributeName::KmsMasterKeyId,
    QueueAttributeName::KmsDataKeyReusePeriodSeconds,
];

/// The queue policy every queue made at run time gets, as the template's queues do: no
/// call over plain HTTP, whoever makes it.
fn tls_only_policy(queue_arn: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "TlsOnly",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "sqs:*",
            "Resource": queue_arn,
            "Condition": { "Bool": { "aws:SecureTransport": "false" } },
        }],
    })
    .to_string()
}

/// Creates `name` with `template`'s attributes (see `Cloud::create_queue_like`) and a
/// TLS-only policy. Returns its URL.
pub(super) async fn create_queue_like(
    client: &Client,
    template: &str,
    name: &str,
) -> Result<String> {
    validate_queue_name(name)?;
    let (template_name, template_url) = resolve(client, template).await?;
    let output = client
        .get_queue_attributes()
        .queue_url(&template_url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .map_err(|e| sqs_error(&template_name, "GetQueueAttributes", Failure::of(&e)))?;
    let attributes: HashMap<QueueAttributeName, String> = output
        .attributes()
        .into_iter()
        .flatten()
        .filter(|(key, _)| COPIED_ATTRIBUTES.contains(key))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let url = ensure_queue(client, name, attributes).await?;
    let arn = queue_arn(client, name, &url).await?;
    client
        .set_queue_attributes()
        .queue_url(&url)
        .attributes(QueueAttributeName::Policy, tls_only_policy(&arn))
        .send()
        .await
        .map_err(|e| sqs_error(name, "SetQueueAttributes", Failure::of(&e)))?;
    Ok(url)
}

/// Deletes a queue; one that does not exist is fine.
pub(super) async fn delete_queue(client: &Client, name_or_url: &str) -> Result<()> {
    let (name, url) = match resolve(client, name_or_url).await {
        Ok(found) => found,
        Err(CloudError::QueueNotFound { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    match client.delete_queue().queue_url(&url).send().await {
        Ok(_) => Ok(()),
        Err(e) => match sqs_error(&name, "DeleteQueue", Failure::of(&e)) {
            CloudError::QueueNotFound { .. } => Ok(()),
            other => Err(other),
        },
    }
}

/// Creates the stack's queues and their dead-letter queues (see the module docs).
pub(super) async fn provision(client: &Client, stack: &StackSpec) -> Result<()> {
    validate_visibility(stack.visibility_timeout)?;
    if stack.max_receive_count == 0 {
        return Err(CloudError::InvalidArgument(
            "max_receive_count must be at least 1".into(),
        ));
    }
    let queues = [&stack.request_queue, &stack.response_queue];
    for queue in queues {
        validate_queue_name(queue)?;
        validate_queue_name(&StackSpec::dead_letter_queue(queue))?;
    }
    for queue in queues {
        let dlq = StackSpec::dead_letter_queue(queue);
        let dlq_url = ensure_queue(
            client,
            &dlq,
            queue_attributes(stack.visibility_timeout, None, true),
        )
        .await?;
        let dlq_arn = queue_arn(client, &dlq, &dlq_url).await?;
        ensure_queue(
            client,
            queue,
            queue_attributes(
                stack.visibility_timeout,
                Some(redrive_policy(&dlq_arn, stack.max_receive_count)),
                false,
            ),
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::FailureKind;

    fn service_failure(code: &str) -> Failure {
        Failure {
            kind: FailureKind::Service,
            code: Some(code.into()),
            status: Some(400),
            message: code.into(),
        }
    }

    #[test]
    fn redrive_policies_give_their_receive_limit() {
        for (policy, want) in [
            (
                r#"{"deadLetterTargetArn":"arn:x","maxReceiveCount":"5"}"#,
                Some(5),
            ),
            (
                r#"{"deadLetterTargetArn":"arn:x","maxReceiveCount":3}"#,
                Some(3),
            ),
            (r#"{"deadLetterTargetArn":"arn:x"}"#, None),
            ("not json", None),
        ] {
            assert_eq!(parse_max_receive_count(policy), want, "{policy}");
        }
    }

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

    #[test]
    fn errors_map_to_the_contract_variants() {
        for code in QUEUE_MISSING {
            assert!(matches!(
                sqs_error("q", "SendMessage", service_failure(code)),
                CloudError::QueueNotFound { .. }
            ));
        }
        assert!(matches!(
            sqs_error(
                "q",
                "DeleteMessage",
                service_failure("ReceiptHandleIsInvalid")
            ),
            CloudError::InvalidReceipt { .. }
        ));
        assert!(matches!(
            sqs_error(
                "q",
                "ChangeMessageVisibility",
                service_failure("MessageNotInflight")
            ),
            CloudError::InvalidReceipt { .. }
        ));
        // Only calls that take a receipt can blame it.
        assert!(matches!(
            sqs_error("q", "SendMessage", service_failure("InvalidIdFormat")),
            CloudError::Aws { .. }
        ));
        let err = sqs_error("q", "ReceiveMessage", service_failure("Throttling"));
        assert!(
            matches!(
                err,
                CloudError::Aws {
                    retryable: true,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn batch_payloads_are_split_by_count_and_bytes() {
        let m = |len: usize| OutgoingMessage::new("x".repeat(len));
        // Ten small messages: one call.
        let small: Vec<_> = (0..10).map(|i| (i, m(10))).collect();
        assert_eq!(payload_chunks(small).len(), 1);
        // Ten messages of 100 KiB: two per call, order kept.
        let big: Vec<_> = (0..10).map(|i| (i, m(100 * 1024))).collect();
        let chunks = payload_chunks(big);
        assert_eq!(chunks.len(), 5);
        let order: Vec<usize> = chunks.iter().flatten().map(|(i, _)| *i).collect();
        assert_eq!(order, (0..10).collect::<Vec<_>>());
        for chunk in &chunks {
            let bytes: usize = chunk.iter().map(|(_, m)| m.body.len()).sum();
            assert!(bytes <= MAX_BATCH_PAYLOAD_BYTES);
        }
        // One message at the limit fits alone.
        assert_eq!(payload_chunks(vec![(0, m(MAX_MESSAGE_BYTES))]).len(), 1);
        assert!(payload_chunks(Vec::new()).is_empty());
    }

    #[test]
    fn batch_slots_follow_entry_ids() {
        let mut out: Vec<Option<u8>> = vec![None; 3];
        *slot_for(&mut out, "2").unwrap() = Some(7);
        assert!(slot_for(&mut out, "3").is_none());
        assert!(slot_for(&mut out, "x").is_none());
        assert_eq!(out, vec![None, None, Some(7)]);
    }

    #[test]
    fn provisioned_attributes() {
        let policy = redrive_policy("arn:aws:sqs:us-east-1:1:q-dlq", 5);
        let json: serde_json::Value = serde_json::from_str(&policy).unwrap();
        assert_eq!(json["deadLetterTargetArn"], "arn:aws:sqs:us-east-1:1:q-dlq");
        assert_eq!(json["maxReceiveCount"], "5");
        let main = queue_attributes(Duration::from_millis(29_500), Some(policy), false);
        assert_eq!(main[&QueueAttributeName::VisibilityTimeout], "30");
        assert_eq!(main[&QueueAttributeName::SqsManagedSseEnabled], "true");
        assert!(!main.contains_key(&QueueAttributeName::MessageRetentionPeriod));
        let dlq = queue_attributes(Duration::from_secs(30), None, true);
        assert!(!dlq.contains_key(&QueueAttributeName::RedrivePolicy));
        assert_eq!(dlq[&QueueAttributeName::MessageRetentionPeriod], "1209600");
    }
}
