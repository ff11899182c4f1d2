//! The web tier's command line, and its validated form.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};
use iras_listener::{ListenerOptions, Token};
use iras_protocol::KeyScheme;

/// Command line of the `web-tier` binary.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "web-tier",
    version = iras_cloud::version_with_backends!(),
    about = "iras web tier: POST an image, get its label"
)]
pub struct WebArgs {
    /// Backend and state directory.
    #[command(flatten)]
    pub cloud: iras_cloud::CloudArgs,
    /// Queue and bucket names, and whether to create them.
    #[command(flatten)]
    pub stack: iras_cloud::StackArgs,
    /// HTTP options.
    #[command(flatten)]
    pub http: HttpArgs,
    /// How results reach the waiting requests.
    #[command(flatten)]
    pub listener: ListenerArgs,
}

/// HTTP and request-handling options.
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Address and port to serve on. Use `0.0.0.0:PORT` to accept requests from other
    /// machines (as on the web instance).
    #[arg(long, env = "IRAS_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// How long a request waits for its result, in seconds, before a 504 that carries the
    /// request id (the result can then be fetched from `/results/{id}`). Cover a cold
    /// scale-out: on EC2 new instances take about a minute to boot.
    #[arg(long, env = "IRAS_REQUEST_TIMEOUT_SECS", default_value_t = 180,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout_secs: u64,
    /// Most requests waiting for a result at once; beyond it uploads get 503 with
    /// Retry-After.
    #[arg(long, env = "IRAS_MAX_WAITING", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_waiting: u32,
    /// Largest accepted image file, in bytes.
    #[arg(long, env = "IRAS_MAX_IMAGE_BYTES", default_value_t = iras_protocol::DEFAULT_MAX_IMAGE_BYTES)]
    pub max_image_bytes: usize,
    /// Largest accepted image, in pixels (width × height, from the header).
    #[arg(long, env = "IRAS_MAX_IMAGE_PIXELS", default_value_t = iras_protocol::DEFAULT_MAX_IMAGE_PIXELS)]
    pub max_image_pixels: u64,
    /// Predictions per result returned in JSON answers (1–20).
    #[arg(long, env = "IRAS_TOP_K", default_value_t = 5,
          value_parser = clap::value_parser!(u8).range(1..=20))]
    pub top_k: u8,
    /// Object keys in the buckets: `file-name` (the seed's layout: `test_0.JPEG` and
    /// `test_0`) or `request-id` (`<id>/test_0.JPEG` and `<id>`, for uploads whose names
    /// collide).
    #[arg(long, env = "IRAS_KEY_SCHEME", default_value = "file-name")]
    pub key_scheme: KeyScheme,
    /// Finished results kept in memory for `GET /results/{id}` (older ones are read from
    /// the output bucket).
    #[arg(long, env = "IRAS_RESULTS_KEPT", default_value_t = 100_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub results_kept: u32,
}

/// Where the listener runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListenerMode {
    /// Inside this process (the default).
    Embedded,
    /// In the standalone `listener` binary, which posts results to `--internal-listen`.
    External,
}

/// Listener options.
#[derive(Debug, Clone, Args)]
pub struct ListenerArgs {
    /// `embedded` runs the listener in this process; `external` expects the standalone
    /// `listener` binary to post results to `--internal-listen`.
    #[arg(long = "listener", env = "IRAS_LISTENER", value_enum, default_value_t = ListenerMode::Embedded)]
    pub mode: ListenerMode,
    /// With `--listener external`: loopback address the listener delivers results to.
    #[arg(long, env = "IRAS_INTERNAL_LISTEN", default_value = "127.0.0.1:8001")]
    pub internal_listen: SocketAddr,
    /// With `--listener external`: the shared secret the listener presents (at least 32
    /// bytes; give it through the environment so it stays out of `ps`).
    #[arg(
        long = "listener-token",
        env = "IRAS_LISTENER_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<Token>,
    /// Polling of the embedded listener.
    #[command(flatten)]
    pub options: ListenerOptions,
}

/// Settings the request handlers use, checked at startup.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Deadline of a waiting request.
    pub request_timeout: Duration,
    /// Most waiting requests.
    pub max_waiting: usize,
    /// Input limits.
    pub limits: iras_classifier::Limits,
    /// Predictions per result.
    pub top_k: u8,
    /// Bucket key layout.
    pub key_scheme: KeyScheme,
    /// Finished results kept in memory.
    pub results_kept: usize,
    /// The queue results come back on (named in every request).
    pub reply_to: String,
}

impl WebArgs {
    /// Checks the combinations clap cannot: an external listener needs a token and a
    /// loopback internal address.
    pub fn validate(&self) -> anyhow::Result<WebConfig> {
        if self.listener.mode == ListenerMode::External {
            anyhow::ensure!(
                self.listener.internal_listen.ip().is_loopback(),
                "--internal-listen must be a loopback address, got {}",
                self.listener.internal_listen
            );
            anyhow::ensure!(
                self.listener.token.is_some(),
                "--listener external needs --listener-token (or IRAS_LISTENER_TOKEN)"
            );
        }
        let http = &self.http;
        Ok(WebConfig {
            request_timeout: Duration::from_secs(http.request_timeout_secs),
            max_waiting: http.max_waiting as usize,
            limits: iras_classifier::Limits {
                max_bytes: http.max_image_bytes,
                max_pixels: http.max_image_pixels,
                ..iras_classifier::Limits::default()
            },
            top_k: http.top_k,
            key_scheme: http.key_scheme,
            results_kept: http.results_kept as usize,
            reply_to: self.stack.response_queue.clone(),
        })
    }
}
