//! SQS error codes mapped to the contract: a missing queue and an invalid receipt get
//! their own [`CloudError`] variants, everything else is [`CloudError::Aws`]. Its own
//! module because every SQS call, on a handle or while provisioning, goes through it.

use super::SERVICE;
use crate::aws::Failure;
use crate::error::CloudError;

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

/// Maps a failed SQS call on `queue`: a missing queue and (for calls taking a receipt) an
/// invalid receipt get their own variants, the rest is [`CloudError::Aws`].
pub(super) fn sqs_error(queue: &str, operation: &'static str, failure: Failure) -> CloudError {
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
}
