//! The cloud layer of iras: queues, buckets and the app-tier fleet, behind one interface
//! with two backends.
//!
//! - [`Queue`], [`Bucket`] and [`Fleet`] are the interfaces the tiers code against, shared
//!   as `Arc<dyn …>`.
//! - [`Cloud`] is the factory: opened on a local state directory ([`Cloud::open_local`])
//!   or on AWS ([`Cloud::connect_aws`]), it hands out queues, buckets and fleets, and
//!   [`Cloud::provision`] creates a stack's queues (with dead-letter queues) and buckets
//!   idempotently. The flags that choose between them (`--backend local|aws`,
//!   `IRAS_BACKEND`) are the binaries' business, in `iras-cli`: this crate has no command
//!   line.
//! - The **local** backend ([`local`]) keeps everything under one state directory: queues in
//!   one SQLite database (WAL mode, safe across processes), buckets as directories written
//!   atomically, the fleet as app-tier child processes.
//! - The **aws** backend ([`aws`]) uses SQS, S3 and EC2 through the SDK's default
//!   credential chain.
//!
//! - [`dead_letter`]: the operator's look at a dead-letter queue, and redrive and purge,
//!   on the [`Queue`] trait alone (the `dlq` binary is its command line).
//!
//! The design decision a reader may question: the backend is chosen at run time by
//! configuration, never by `cfg(test)`. The local backend is not a test double bolted on
//! the side; it is a real, durable implementation that the zero-setup stack runs on, and
//! the same conformance suite (`tests/conformance.rs`) holds both backends to one
//! behaviour, down to SQS's limits on names, batch sizes and waits.

#[cfg(feature = "aws")]
pub mod aws;
pub mod bucket;
pub mod dead_letter;
pub mod error;
pub mod fleet;
pub mod local;
pub mod queue;
pub mod spec;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use bucket::Bucket;
pub use error::{CloudError, Result};
pub use fleet::{Fleet, FleetView, Instance, InstanceState, Launched, Shortage};
pub use queue::{
    BatchEntryError, EntryResult, OutgoingMessage, Queue, QueueDepth, ReceiptHandle,
    ReceiveOptions, ReceivedMessage,
};
pub use spec::{Ec2Launch, FleetSpec, LocalLaunch, StackSpec};

use iras_protocol::env;

/// The backends compiled into this build of the cloud layer, e.g. `["local", "aws"]`.
/// A build without the `aws` feature fails `--backend aws` at startup; `--version` says
/// so up front (see [`version_with_backends!`]), which is what `scripts/deploy-aws` checks.
pub const BACKENDS: &[&str] = &[
    "local",
    #[cfg(feature = "aws")]
    "aws",
];

/// The calling crate's version followed by the backends compiled into the cloud layer,
/// for a tier's `#[command(version = …)]`: `0.1.0 (backends: local, aws)`. A macro so
/// `CARGO_PKG_VERSION` is the caller's, while the backend list follows this crate's
/// `aws` feature (the one that decides, whatever feature the tier itself was built with).
#[cfg(feature = "aws")]
#[macro_export]
macro_rules! version_with_backends {
    () => {
        concat!(env!("CARGO_PKG_VERSION"), " (backends: local, aws)")
    };
}

/// See the `aws` variant: this build has the local backend only.
#[cfg(not(feature = "aws"))]
#[macro_export]
macro_rules! version_with_backends {
    () => {
        concat!(env!("CARGO_PKG_VERSION"), " (backends: local)")
    };
}

#[cfg(test)]
mod backends_tests {
    #[test]
    fn the_version_names_exactly_the_compiled_backends() {
        let version = version_with_backends!();
        assert!(version.ends_with(&format!("(backends: {})", super::BACKENDS.join(", "))));
        assert_eq!(version.contains("aws"), cfg!(feature = "aws"), "{version}");
    }
}

/// Which implementation backs the queues, buckets and fleet: `local` or `aws`, as the
/// `--backend` flag spells it ([`FromStr`](std::str::FromStr) and [`Display`](std::fmt::Display)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// Everything on this machine under the state directory (the default).
    Local,
    /// SQS, S3 and EC2.
    Aws,
}

impl BackendKind {
    /// Every kind, in the order `--help` lists them.
    pub const ALL: [BackendKind; 2] = [BackendKind::Local, BackendKind::Aws];

    /// The name the flag takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Aws => "aws",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for BackendKind {
    type Err = CloudError;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.name() == s)
            .ok_or_else(|| CloudError::Config(format!("unknown backend {s:?} (local or aws)")))
    }
}

/// The factory for queues, buckets and fleets of one backend. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Cloud {
    backend: CloudBackend,
}

#[derive(Debug, Clone)]
enum CloudBackend {
    Local(local::LocalCloud),
    #[cfg(feature = "aws")]
    Aws(aws::AwsCloud),
}

impl Cloud {
    /// Opens the local backend on `state_dir` (made if missing), shared by every process of
    /// one local stack.
    pub async fn open_local(state_dir: &Path) -> Result<Self> {
        Ok(Self {
            backend: CloudBackend::Local(local::LocalCloud::open(state_dir).await?),
        })
    }

    /// Connects to AWS through the SDK's default credential chain: `endpoint` overrides
    /// every service's (a moto server; S3 then uses path-style addressing) and `region` the
    /// chain's. Fails clearly without a region, and in a build without the `aws` feature.
    pub async fn connect_aws(endpoint: Option<&str>, region: Option<&str>) -> Result<Self> {
        #[cfg(feature = "aws")]
        {
            Ok(Self {
                backend: CloudBackend::Aws(aws::AwsCloud::connect(endpoint, region).await?),
            })
        }
        #[cfg(not(feature = "aws"))]
        {
            let _ = (endpoint, region);
            Err(CloudError::Config(
                "this build has no aws backend (built without the `aws` feature)".into(),
            ))
        }
    }

    /// Which backend this is.
    pub fn kind(&self) -> BackendKind {
        match self.backend {
            CloudBackend::Local(_) => BackendKind::Local,
            #[cfg(feature = "aws")]
            CloudBackend::Aws(_) => BackendKind::Aws,
        }
    }

    /// Creates the stack's queues, their dead-letter queues (with a redrive policy after
    /// `max_receive_count` receives) and its buckets. Idempotent: existing resources are
    /// kept as they are.
    pub async fn provision(&self, stack: &StackSpec) -> Result<()> {
        stack.validate()?;
        match &self.backend {
            CloudBackend::Local(c) => c.provision(stack).await,
            #[cfg(feature = "aws")]
            CloudBackend::Aws(c) => c.provision(stack).await,
        }
    }

    /// The queue with this name (or, on AWS, this URL). Fails with
    /// [`CloudError::QueueNotFound`] if it was never provisioned.
    pub async fn queue(&self, name_or_url: &str) -> Result<Arc<dyn Queue>> {
        match &self.backend {
            CloudBackend::Local(c) => Ok(Arc::new(c.queue(name_or_url).await?)),
            #[cfg(feature = "aws")]
            CloudBackend::Aws(c) => Ok(Arc::new(c.queue(name_or_url).await?)),
        }
    }

    /// Creates queue `name` with the settings of the existing queue `template` (a name, or
    /// on AWS a URL): the same dead-letter queue and receive limit, visibility timeout,
    /// retention and encryption, and on AWS a TLS-only queue policy like the stack's. For
    /// queues a process makes for itself at start (a web tier's own reply queue) and
    /// deletes at a clean stop. Idempotent: an existing `name` is kept (on AWS, given the
    /// template's attributes). Fails with [`CloudError::QueueNotFound`] without `template`.
    pub async fn create_queue_like(&self, template: &str, name: &str) -> Result<Arc<dyn Queue>> {
        match &self.backend {
            CloudBackend::Local(c) => Ok(Arc::new(c.create_queue_like(template, name).await?)),
            #[cfg(feature = "aws")]
            CloudBackend::Aws(c) => Ok(Arc::new(c.create_queue_like(template, name).await?)),
        }
    }

    /// Deletes a queue and every message in it. A queue that is already gone is not an
    /// error. Handles to it then fail with [`CloudError::QueueNotFound`] (on SQS, within
    /// the minute it takes a deletion to spread).
    pub async fn delete_queue(&self, name_or_url: &str) -> Result<()> {
        match &self.backend {
            CloudBackend::Local(c) => c.delete_queue(name_or_url).await,
            #[cfg(feature = "aws")]
            CloudBackend::Aws(c) => c.delete_queue(name_or_url).await,
        }
    }

    /// The bucket with this name. Fails with [`CloudError::BucketNotFound`] if it was never
    /// provisioned.
    pub async fn bucket(&self, name: &str) -> Result<Arc<dyn Bucket>> {
        match &self.backend {
            CloudBackend::Local(c) => Ok(Arc::new(c.bucket(name).await?)),
            #[cfg(feature = "aws")]
            CloudBackend::Aws(c) => Ok(Arc::new(c.bucket(name).await?)),
        }
    }

    /// The app-tier fleet described by `spec` (its `local` or `ec2` part must be set for
    /// this backend).
    pub async fn fleet(&self, spec: FleetSpec) -> Result<Arc<dyn Fleet>> {
        match &self.backend {
            CloudBackend::Local(c) => Ok(Arc::new(c.fleet(spec)?)),
            #[cfg(feature = "aws")]
            CloudBackend::Aws(c) => Ok(Arc::new(c.fleet(spec)?)),
        }
    }

    /// Deletes the objects of `bucket` older than `max_age`, on the local backend; the count
    /// deleted. `None` on AWS, where the stack's S3 lifecycle rules expire objects
    /// (`RetentionDays` in the CloudFormation template) and nothing here needs to.
    pub async fn expire_objects(&self, bucket: &str, max_age: Duration) -> Result<Option<usize>> {
        match &self.backend {
            CloudBackend::Local(c) => c
                .bucket(bucket)
                .await?
                .expire_before(SystemTime::now() - max_age)
                .await
                .map(Some),
            #[cfg(feature = "aws")]
            CloudBackend::Aws(_) => Ok(None),
        }
    }

    /// A read-only view of the fleet of `stack` whose instances are named `<name_prefix>N`
    /// (the scaler's `--stack-name` and `--name-prefix`): for watching a fleet another
    /// process manages.
    pub fn fleet_view(&self, stack: &str, name_prefix: &str) -> Result<Arc<dyn FleetView>> {
        match &self.backend {
            CloudBackend::Local(c) => Ok(Arc::new(c.fleet_view(stack, name_prefix)?)),
            #[cfg(feature = "aws")]
            CloudBackend::Aws(c) => Ok(Arc::new(c.fleet_view(stack, name_prefix)?)),
        }
    }
}

impl Cloud {
    /// This process's instance id, when it is an instance of a fleet: the id the local
    /// fleet (or the rehearsal's instance emulator) set in `IRAS_INSTANCE_ID`, else, on the
    /// aws backend, the EC2 instance id from the instance metadata service (IMDSv2, a
    /// session token first; a second at most, so a laptop off EC2 is not held up). `None`
    /// when neither applies (`AWS_EC2_METADATA_DISABLED=true` skips the metadata service).
    pub async fn instance_id(&self) -> Option<String> {
        if let Some(id) = std::env::var(env::IRAS_INSTANCE_ID)
            .ok()
            .filter(|id| !id.trim().is_empty())
        {
            return Some(id);
        }
        match &self.backend {
            CloudBackend::Local(_) => None,
            #[cfg(feature = "aws")]
            CloudBackend::Aws(_) => aws::instance_id_from_metadata().await,
        }
    }

    /// Says that this instance serves, which moves it from pending to running in its
    /// fleet's listing: locally, the ready file the local fleet named in `IRAS_READY_FILE`;
    /// on AWS, the tag [`fleet::READY_TAG`] on `instance_id`. Without a fleet to tell (no
    /// ready file, no instance id) there is nothing to do. A failure is an error: an
    /// instance that cannot say it is ready is replaced by the scaler, so it should say
    /// why in its log first.
    pub async fn mark_ready(&self, instance_id: Option<&str>) -> Result<()> {
        if let Some(path) = std::env::var_os(env::IRAS_READY_FILE) {
            let path = PathBuf::from(path);
            return std::fs::write(&path, b"ready\n").map_err(|source| CloudError::Io {
                action: "write the ready file",
                path,
                source,
            });
        }
        match (&self.backend, instance_id) {
            #[cfg(feature = "aws")]
            (CloudBackend::Aws(c), Some(id)) => c.mark_ready(id).await,
            _ => Ok(()),
        }
    }
}
