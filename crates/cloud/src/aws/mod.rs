//! The AWS backend: SQS queues, S3 buckets and an EC2 fleet, through the AWS SDK.
//!
//! - [`AwsCloud::connect`] builds every client from one SDK configuration
//!   ([`build_clients`]): the default credential chain (credentials never appear in code or
//!   config), the region (an override, else the SDK's chain; no region is a clear
//!   [`CloudError::Config`] at startup, not a failure at the first call), the endpoint
//!   (our explicit override beats the SDK's `AWS_ENDPOINT_URL`, which beats the default),
//!   and connect/read/operation timeouts. S3 uses path-style addressing whenever an
//!   endpoint override is in effect, because moto, LocalStack and MinIO do not serve
//!   virtual-hosted bucket names.
//! - **Retries live in one layer: the SDK's.** Its standard mode (3 attempts, exponential
//!   backoff with jitter, a client-side retry token bucket) retries throttling, transient
//!   transport errors and 5xx answers. Nothing in this module loops on top of it, and
//!   callers get [`CloudError::is_retryable`] to decide what to do with what is left
//!   (the app tier leaves a message for redelivery rather than retrying in place).
//! - SDK errors become [`CloudError::Aws`] with `retryable` from the error's kind, or a
//!   specific variant where the contract needs one (missing queue, bucket or key, invalid
//!   receipt); see [`Failure`].
//!
//! The SDK clients are cheap to clone (they share their internals through `Arc`s), so the
//! queue, bucket and fleet handles hold plain clones.

mod ec2;
mod s3;
mod sqs;

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::config::retry::RetryConfig;
use aws_sdk_sqs::config::timeout::TimeoutConfig;
use aws_sdk_sqs::error::{DisplayErrorContext, SdkError};

pub use ec2::{Ec2Fleet, Ec2FleetView};
pub use s3::S3Bucket;
pub use sqs::SqsQueue;

use crate::error::{CloudError, Result};
use crate::spec::{FleetSpec, StackSpec};

/// Longest time to establish a TCP (and TLS) connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest silence while reading a response. Must exceed the 20 s long-poll wait
/// ([`crate::queue::MAX_WAIT`]), or every empty long poll would time out.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest single attempt of an operation (a long poll plus slack, or an object upload).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest operation, all retries and backoff included.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(150);
/// Attempts per operation in the SDK's standard retry mode (the first one included).
const MAX_ATTEMPTS: u32 = 3;

/// How the SDK clients time out and retry. [`ClientSettings::default`] is what production
/// uses; tests shorten the backoff.
#[derive(Debug, Clone)]
pub(crate) struct ClientSettings {
    pub(crate) timeouts: TimeoutConfig,
    pub(crate) retry: RetryConfig,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            timeouts: TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .read_timeout(READ_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
            retry: RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS),
        }
    }
}

/// Every SDK client of the backend, built from one configuration.
#[derive(Debug, Clone)]
pub(crate) struct Clients {
    pub(crate) sqs: aws_sdk_sqs::Client,
    pub(crate) s3: aws_sdk_s3::Client,
    pub(crate) ec2: aws_sdk_ec2::Client,
    /// The resolved region (S3 needs it for `LocationConstraint`).
    pub(crate) region: String,
}

/// Treats an empty string (an env var set to nothing) as unset.
fn non_empty(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

fn check_endpoint(endpoint: &str) -> Result<()> {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(()),
        _ => Err(CloudError::Config(format!(
            "AWS endpoint URL {endpoint:?} must look like http(s)://host[:port]"
        ))),
    }
}

/// Builds the SDK configuration and every client from it: the default credential chain,
/// the region (override or chain, required), the endpoint override, timeouts and retries.
pub(crate) async fn build_clients(
    endpoint: Option<&str>,
    region: Option<&str>,
    settings: ClientSettings,
) -> Result<Clients> {
    let endpoint = non_empty(endpoint);
    if let Some(endpoint) = endpoint {
        check_endpoint(endpoint)?;
    }
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(settings.timeouts)
        .retry_config(settings.retry);
    if let Some(region) = non_empty(region) {
        loader = loader.region(Region::new(region.to_owned()));
    }
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    let sdk: SdkConfig = loader.load().await;
    let region = sdk
        .region()
        .map(|r| r.as_ref().to_owned())
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            CloudError::Config(
                "no AWS region: pass --aws-region (IRAS_AWS_REGION) or set AWS_REGION or a \
                 profile region"
                    .into(),
            )
        })?;

    // The loader files an explicit endpoint as shared config, which the SDK's per-service
    // variables (`AWS_ENDPOINT_URL_SQS`, …) would beat; setting it on each service's own
    // config makes our override win over everything, as documented.
    let mut sqs = aws_sdk_sqs::config::Builder::from(&sdk);
    let mut s3 = aws_sdk_s3::config::Builder::from(&sdk);
    let mut ec2 = aws_sdk_ec2::config::Builder::from(&sdk);
    if let Some(endpoint) = endpoint {
        sqs = sqs.endpoint_url(endpoint);
        s3 = s3.endpoint_url(endpoint);
        ec2 = ec2.endpoint_url(endpoint);
    }
    let custom_s3_endpoint = endpoint.is_some()
        || sdk.endpoint_url().is_some()
        || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some_and(|v| !v.is_empty());
    s3 = s3.force_path_style(custom_s3_endpoint);

    Ok(Clients {
        sqs: aws_sdk_sqs::Client::from_conf(sqs.build()),
        s3: aws_sdk_s3::Client::from_conf(s3.build()),
        ec2: aws_sdk_ec2::Client::from_conf(ec2.build()),
        region,
    })
}

/// How an SDK call failed, independent of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// The request could not be built (a bug or a bad argument): never retryable.
    Construction,
    /// A connect, read, attempt or operation timeout.
    Timeout,
    /// The request could not be sent or its response not received (connection refused or
    /// reset, DNS). `user` marks failures the caller caused (e.g. an invalid endpoint).
    Dispatch {
        /// Whether the failure is the caller's fault.
        user: bool,
    },
    /// A response arrived that could not be understood.
    Response,
    /// The service answered with an error.
    Service,
}

/// What an SDK error says, reduced to what the mapping needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) kind: FailureKind,
    /// The service's error code (`QueueDoesNotExist`, `NoSuchKey`, `Throttling`, …).
    pub(crate) code: Option<String>,
    /// The HTTP status, when a response arrived.
    pub(crate) status: Option<u16>,
    /// A one-line description: code and message, or the transport error chain.
    pub(crate) message: String,
}

/// Error codes that mean "slow down" or "the service is briefly unwell", whatever the
/// HTTP status says.
const RETRYABLE_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "Unavailable",
    "KMS.ThrottlingException",
    "InsufficientInstanceCapacity",
];

impl Failure {
    /// Reduces an SDK error of any service.
    pub(crate) fn of<E>(err: &SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let kind = match err {
            SdkError::ConstructionFailure(_) => FailureKind::Construction,
            SdkError::TimeoutError(_) => FailureKind::Timeout,
            SdkError::DispatchFailure(d) => {
                if d.is_timeout() {
                    FailureKind::Timeout
                } else {
                    FailureKind::Dispatch { user: d.is_user() }
                }
            }
            SdkError::ResponseError(_) => FailureKind::Response,
            _ => FailureKind::Service,
        };
        let code = err.code().map(str::to_owned);
        let status = err.raw_response().map(|r| r.status().as_u16());
        let message = match (kind, &code) {
            (FailureKind::Service, Some(code)) => match err.message() {
                Some(m) if !m.is_empty() => format!("{code}: {m}"),
                _ => code.clone(),
            },
            _ => DisplayErrorContext(err).to_string(),
        };
        let message = match status {
            Some(status) if kind == FailureKind::Service => format!("{message} (HTTP {status})"),
            _ => message,
        };
        Self {
            kind,
            code,
            status,
            message,
        }
    }

    /// Whether the same call may succeed later: throttling, timeouts, transport failures
    /// and 5xx answers are retryable; everything the caller got wrong is not.
    pub(crate) fn retryable(&self) -> bool {
        match self.kind {
            FailureKind::Construction => false,
            FailureKind::Timeout => true,
            FailureKind::Dispatch { user } => !user,
            FailureKind::Response | FailureKind::Service => {
                self.status.is_some_and(|s| s >= 500 || s == 429)
                    || self
                        .code
                        .as_deref()
                        .is_some_and(|c| RETRYABLE_CODES.contains(&c))
            }
        }
    }

    /// Whether the service reported this error code.
    pub(crate) fn has_code(&self, codes: &[&str]) -> bool {
        self.code.as_deref().is_some_and(|c| codes.contains(&c))
    }

    /// The generic mapping: [`CloudError::Aws`].
    pub(crate) fn into_error(self, service: &'static str, operation: &'static str) -> CloudError {
        let retryable = self.retryable();
        CloudError::Aws {
            service,
            operation,
            message: self.message,
            retryable,
        }
    }
}

/// An error for a response that lacks what the API promises (never seen in practice;
/// not retryable because the same answer would come back).
pub(crate) fn malformed(service: &'static str, operation: &'static str, what: &str) -> CloudError {
    CloudError::Aws {
        service,
        operation,
        message: format!("malformed response: {what}"),
        retryable: false,
    }
}

/// Whole seconds for an SQS field, rounded up (a visibility timeout or delay must never
/// end earlier than asked), saturating at `i32::MAX`.
pub(crate) fn ceil_secs(d: Duration) -> i32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

/// Whole seconds for a long-poll wait, rounded to the nearest second (a 0.4 s wait is a
/// short poll, a 0.6 s wait a 1 s long poll).
pub(crate) fn round_secs(d: Duration) -> i32 {
    let secs = (d.as_millis() + 500) / 1000;
    i32::try_from(secs).unwrap_or(i32::MAX)
}

/// SDK clients for one region (and optional endpoint override). Cheap to clone.
#[derive(Debug, Clone)]
pub struct AwsCloud {
    clients: Clients,
}

impl AwsCloud {
    /// Builds the SDK clients from the default chain, with the overrides. Fails with
    /// [`CloudError::Config`] when no region can be found or the endpoint is malformed.
    pub async fn connect(endpoint_url: Option<&str>, region: Option<&str>) -> Result<Self> {
        Ok(Self {
            clients: build_clients(endpoint_url, region, ClientSettings::default()).await?,
        })
    }

    /// Creates the stack's queues (each with a dead-letter queue and redrive policy) and
    /// buckets. Idempotent, and converging: a queue that exists with other attributes
    /// (say, an older `max_receive_count`) gets the spec's attributes, messages kept.
    pub async fn provision(&self, stack: &StackSpec) -> Result<()> {
        sqs::provision(&self.clients.sqs, stack).await?;
        s3::provision(&self.clients.s3, &self.clients.region, stack).await
    }

    /// The queue with this name or URL (`https://sqs.…/123456789012/name`). Fails with
    /// [`CloudError::QueueNotFound`] when it does not exist.
    pub async fn queue(&self, name_or_url: &str) -> Result<SqsQueue> {
        SqsQueue::open(self.clients.sqs.clone(), name_or_url).await
    }

    /// Creates queue `name` like `template` (see [`crate::Cloud::create_queue_like`]).
    pub async fn create_queue_like(&self, template: &str, name: &str) -> Result<SqsQueue> {
        let url = sqs::create_queue_like(&self.clients.sqs, template, name).await?;
        SqsQueue::open(self.clients.sqs.clone(), &url).await
    }

    /// Deletes a queue (see [`crate::Cloud::delete_queue`]).
    pub async fn delete_queue(&self, name_or_url: &str) -> Result<()> {
        sqs::delete_queue(&self.clients.sqs, name_or_url).await
    }

    /// The bucket with this name, after a `HeadBucket` health check. Fails with
    /// [`CloudError::BucketNotFound`] when it does not exist.
    pub async fn bucket(&self, name: &str) -> Result<S3Bucket> {
        S3Bucket::open(self.clients.s3.clone(), name).await
    }

    /// The EC2 fleet described by `spec` (its `ec2` part is required).
    pub fn fleet(&self, spec: FleetSpec) -> Result<Ec2Fleet> {
        Ec2Fleet::new(self.clients.ec2.clone(), spec)
    }

    /// A read-only view of the fleet of `stack` (see [`crate::Cloud::fleet_view`]).
    pub fn fleet_view(&self, stack: &str, name_prefix: &str) -> Result<Ec2FleetView> {
        Ec2FleetView::new(self.clients.ec2.clone(), stack, name_prefix)
    }

    /// Tags EC2 instance `id` ready (see [`crate::Cloud::mark_ready`]).
    pub async fn mark_ready(&self, id: &str) -> Result<()> {
        ec2::tag_ready(&self.clients.ec2, id).await
    }
}

/// How long the metadata service may take to answer, per attempt.
const METADATA_TIMEOUT: Duration = Duration::from_millis(500);

/// The EC2 instance id from IMDSv2, or `None` off EC2 (or with
/// `AWS_EC2_METADATA_DISABLED=true`).
pub(crate) async fn instance_id_from_metadata() -> Option<String> {
    let disabled = std::env::var("AWS_EC2_METADATA_DISABLED")
        .is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if disabled {
        return None;
    }
    let client = aws_config::imds::Client::builder()
        .connect_timeout(METADATA_TIMEOUT)
        .read_timeout(METADATA_TIMEOUT)
        .max_attempts(2)
        .build();
    match client.get("/latest/meta-data/instance-id").await {
        Ok(id) => Some(id.as_ref().trim().to_owned()).filter(|id| !id.is_empty()),
        Err(e) => {
            tracing::debug!(error = %DisplayErrorContext(&e), "no instance metadata: not on EC2");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(kind: FailureKind, code: Option<&str>, status: Option<u16>) -> Failure {
        Failure {
            kind,
            code: code.map(str::to_owned),
            status,
            message: String::new(),
        }
    }

    #[test]
    fn retryable_follows_the_error_kind() {
        use FailureKind::*;
        assert!(failure(Timeout, None, None).retryable());
        assert!(failure(Dispatch { user: false }, None, None).retryable());
        assert!(!failure(Dispatch { user: true }, None, None).retryable());
        assert!(!failure(Construction, None, None).retryable());
        assert!(failure(Service, Some("Throttling"), Some(400)).retryable());
        assert!(failure(Service, Some("SlowDown"), Some(503)).retryable());
        assert!(failure(Service, Some("RequestLimitExceeded"), Some(400)).retryable());
        assert!(failure(Service, Some("Whatever"), Some(500)).retryable());
        assert!(failure(Service, None, Some(429)).retryable());
        assert!(failure(Response, None, Some(502)).retryable());
        assert!(!failure(Response, None, Some(200)).retryable());
        assert!(!failure(Service, Some("QueueDoesNotExist"), Some(400)).retryable());
        assert!(!failure(Service, Some("NoSuchKey"), Some(404)).retryable());
        assert!(!failure(Service, Some("AccessDenied"), Some(403)).retryable());
    }

    #[test]
    fn into_error_keeps_service_operation_and_retryability() {
        let mut f = failure(FailureKind::Service, Some("Throttling"), Some(400));
        f.message = "Throttling: slow down (HTTP 400)".into();
        let err = f.into_error("sqs", "SendMessage");
        assert!(err.is_retryable());
        assert_eq!(
            err.to_string(),
            "sqs SendMessage failed: Throttling: slow down (HTTP 400)"
        );
    }

    #[test]
    fn seconds_round_the_right_way() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(30)), 30);
        assert_eq!(ceil_secs(Duration::from_millis(30_001)), 31);
        assert_eq!(ceil_secs(Duration::from_secs(u64::MAX)), i32::MAX);
        assert_eq!(round_secs(Duration::ZERO), 0);
        assert_eq!(round_secs(Duration::from_millis(499)), 0);
        assert_eq!(round_secs(Duration::from_millis(500)), 1);
        assert_eq!(round_secs(Duration::from_millis(1_400)), 1);
        assert_eq!(round_secs(Duration::from_secs(20)), 20);
    }

    #[test]
    fn endpoints_are_checked() {
        assert!(check_endpoint("http://127.0.0.1:5000").is_ok());
        assert!(check_endpoint("https://sqs.eu-west-1.amazonaws.com").is_ok());
        for bad in ["127.0.0.1:5000", "http://", "ftp://x", "http:///x"] {
            assert!(
                matches!(check_endpoint(bad), Err(CloudError::Config(_))),
                "{bad}"
            );
        }
        assert_eq!(non_empty(Some("  ")), None);
        assert_eq!(non_empty(Some("x")), Some("x"));
    }

    #[tokio::test]
    async fn explicit_region_and_endpoint_are_used() {
        let clients = build_clients(
            Some("http://127.0.0.1:9"),
            Some("eu-west-1"),
            ClientSettings::default(),
        )
        .await
        .unwrap();
        assert_eq!(clients.region, "eu-west-1");
        assert_eq!(
            clients.s3.config().region().map(|r| r.as_ref()),
            Some("eu-west-1")
        );
        assert_eq!(
            clients
                .sqs
                .config()
                .timeout_config()
                .and_then(|t| t.read_timeout()),
            Some(READ_TIMEOUT)
        );
        assert!(READ_TIMEOUT > crate::queue::MAX_WAIT);
    }
}
