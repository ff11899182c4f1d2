//! The backend and the stack's names: the flags every tier flattens into its own.

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use iras_cloud::spec::{
    DEFAULT_INPUT_BUCKET, DEFAULT_MAX_RECEIVE_COUNT, DEFAULT_OUTPUT_BUCKET, DEFAULT_REQUEST_QUEUE,
    DEFAULT_RESPONSE_QUEUE, DEFAULT_VISIBILITY_TIMEOUT,
};
use iras_cloud::{BackendKind, Cloud, StackSpec};
use iras_protocol::env;

/// Parses `--backend` into the cloud layer's own kind, listing the choices in `--help`.
fn backend_parser() -> impl TypedValueParser<Value = BackendKind> {
    PossibleValuesParser::new(BackendKind::ALL.map(BackendKind::name))
        .try_map(|name| name.parse::<BackendKind>())
}

/// Command-line flags (and environment variables) that choose and configure the backend.
#[derive(Debug, Clone, clap::Args)]
pub struct CloudArgs {
    /// Backend for queues, buckets and the fleet: `local` (embedded, zero setup) or `aws`.
    #[arg(long, env = env::IRAS_BACKEND, default_value = "local", value_parser = backend_parser())]
    pub backend: BackendKind,

    /// Local backend: directory holding the queue database, the buckets and the fleet
    /// records. Shared by every process of one local stack.
    #[arg(long, env = env::IRAS_STATE_DIR, default_value = ".iras")]
    pub state_dir: PathBuf,

    /// AWS backend: endpoint URL for every service (a moto server, LocalStack). Beats the
    /// SDK's `AWS_ENDPOINT_URL`. S3 then uses path-style addressing.
    #[arg(long, env = env::IRAS_AWS_ENDPOINT_URL)]
    pub aws_endpoint_url: Option<String>,

    /// AWS backend: region. When unset the SDK's chain decides (`AWS_REGION`, the profile,
    /// the instance metadata); startup fails clearly if none is found.
    #[arg(long, env = env::IRAS_AWS_REGION)]
    pub aws_region: Option<String>,
}

impl CloudArgs {
    /// Arguments for the local backend rooted at `state_dir`.
    pub fn local(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            backend: BackendKind::Local,
            state_dir: state_dir.into(),
            aws_endpoint_url: None,
            aws_region: None,
        }
    }

    /// Opens the backend these flags name.
    pub async fn connect(&self) -> iras_cloud::Result<Cloud> {
        match self.backend {
            BackendKind::Local => Cloud::open_local(&self.state_dir).await,
            BackendKind::Aws => {
                Cloud::connect_aws(self.aws_endpoint_url.as_deref(), self.aws_region.as_deref())
                    .await
            }
        }
    }
}

/// When a tier creates the stack's queues and buckets at startup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Provision {
    /// On the local backend only (where they are files under the state directory); on AWS
    /// the infrastructure template creates them.
    Auto,
    /// Always (idempotent): handy against a moto server or a scratch account.
    Always,
    /// Never: fail at startup if they are missing.
    Never,
}

/// The stack's queue and bucket names as command-line flags (and environment variables),
/// shared by every tier so they cannot drift apart.
#[derive(Debug, Clone, clap::Args)]
pub struct StackArgs {
    /// Queue (name, or URL on AWS) the web tier puts requests on and the app tier takes
    /// them from.
    #[arg(long, env = env::IRAS_REQUEST_QUEUE, default_value = DEFAULT_REQUEST_QUEUE)]
    pub request_queue: String,
    /// Queue (name, or URL on AWS) the app tier sends results to and the listener takes
    /// them from.
    #[arg(long, env = env::IRAS_RESPONSE_QUEUE, default_value = DEFAULT_RESPONSE_QUEUE)]
    pub response_queue: String,
    /// Bucket every uploaded image is written to.
    #[arg(long, env = env::IRAS_INPUT_BUCKET, default_value = DEFAULT_INPUT_BUCKET)]
    pub input_bucket: String,
    /// Bucket every `(stem, label)` result is written to.
    #[arg(long, env = env::IRAS_OUTPUT_BUCKET, default_value = DEFAULT_OUTPUT_BUCKET)]
    pub output_bucket: String,
    /// Create the queues (with dead-letter queues) and buckets at startup: `auto` = on the
    /// local backend only.
    #[arg(long, env = env::IRAS_PROVISION, value_enum, default_value_t = Provision::Auto)]
    pub provision: Provision,
    /// When provisioning: receives before a message moves to its dead-letter queue.
    #[arg(long, env = env::IRAS_MAX_RECEIVE_COUNT, default_value_t = DEFAULT_MAX_RECEIVE_COUNT,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_receive_count: u32,
}

impl Default for StackArgs {
    fn default() -> Self {
        let spec = StackSpec::default();
        Self {
            request_queue: spec.request_queue,
            response_queue: spec.response_queue,
            input_bucket: spec.input_bucket,
            output_bucket: spec.output_bucket,
            provision: Provision::Auto,
            max_receive_count: spec.max_receive_count,
        }
    }
}

impl StackArgs {
    /// The stack these names describe.
    pub fn spec(&self) -> StackSpec {
        StackSpec {
            request_queue: self.request_queue.clone(),
            response_queue: self.response_queue.clone(),
            input_bucket: self.input_bucket.clone(),
            output_bucket: self.output_bucket.clone(),
            max_receive_count: self.max_receive_count,
            visibility_timeout: DEFAULT_VISIBILITY_TIMEOUT,
        }
    }

    /// Provisions the stack if [`StackArgs::provision`] says so for this backend.
    pub async fn ensure(&self, cloud: &Cloud) -> iras_cloud::Result<()> {
        let create = match self.provision {
            Provision::Always => true,
            Provision::Never => false,
            Provision::Auto => cloud.kind() == BackendKind::Local,
        };
        if create {
            cloud.provision(&self.spec()).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        cloud: CloudArgs,
        #[command(flatten)]
        stack: StackArgs,
    }

    #[test]
    fn the_defaults_are_the_cloud_layers_and_the_backend_parses_by_name() {
        let flags = Flags::try_parse_from(["t"]).unwrap();
        assert_eq!(flags.cloud.backend, BackendKind::Local);
        assert_eq!(flags.stack.spec(), StackSpec::default());
        let flags = Flags::try_parse_from(["t", "--backend", "aws"]).unwrap();
        assert_eq!(flags.cloud.backend, BackendKind::Aws);
        let refused = Flags::try_parse_from(["t", "--backend", "gcp"]).unwrap_err();
        assert!(refused.to_string().contains("local, aws"), "{refused}");
    }
}
