//! Making and unmaking queues: `provision` (dead-letter queue, then the main queue with a
//! redrive policy, converging a queue that exists with other attributes), a queue made
//! like another with a TLS-only policy (a web instance's reply queue), and deletion. Its
//! own module because it manages queues, not messages: none of it is a queue handle's work.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;

use super::errors::sqs_error;
use super::{SERVICE, queue_url};
use crate::aws::{Failure, ceil_secs, malformed};
use crate::error::{CloudError, Result};
use crate::queue::{name_from_url, validate_queue_name, validate_visibility};
use crate::spec::StackSpec;

/// How long a dead-letter queue keeps messages: SQS's maximum, 14 days, so a poison
/// message outlives the original's retention and can be inspected.
const DEAD_LETTER_RETENTION_SECS: u32 = 14 * 24 * 60 * 60;
/// Error codes for `CreateQueue` on a queue that exists with other attributes.
const QUEUE_EXISTS: &[&str] = &["QueueNameExists", "QueueAlreadyExists"];

/// `maxReceiveCount` of a redrive policy: SQS gives it as a number or as a string.
pub(super) fn parse_max_receive_count(policy: &str) -> Option<u32> {
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
pub(in crate::aws) async fn create_queue_like(
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
pub(in crate::aws) async fn delete_queue(client: &Client, name_or_url: &str) -> Result<()> {
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
pub(in crate::aws) async fn provision(client: &Client, stack: &StackSpec) -> Result<()> {
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
