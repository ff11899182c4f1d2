//! The web tier's command line, and its validated form.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};
use iras_protocol::internal::Token;
use iras_protocol::{KeyScheme, env};

use crate::reply::ReplyQueueMode;

/// Command line of the `web-tier` binary.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "web-tier",
    version = iras_cloud::version_with_backends!(),
    about = "iras web tier: POST an image, get its label"
)]
pub struct Cli {
    /// Backend and state directory.
    #[command(flatten)]
    pub cloud: iras_cli::CloudArgs,
    /// Queue and bucket names, and whether to create them.
    #[command(flatten)]
    pub stack: iras_cli::StackArgs,
    /// HTTP options.
    #[command(flatten)]
    pub http: HttpArgs,
    /// How results reach the waiting requests.
    #[command(flatten)]
    pub listener: ListenerArgs,
    /// The page's live view.
    #[command(flatten)]
    pub live: LiveArgs,
    /// Asynchronous jobs and batches.
    #[command(flatten)]
    pub jobs: JobArgs,
}

/// Options of the asynchronous API (`POST /jobs`, `POST /batches`, `?wait=`).
#[derive(Debug, Clone, Args)]
pub struct JobArgs {
    /// Longest a `GET /results/{id}?wait=SECONDS` long-poll waits, in seconds; a longer
    /// `wait` is cut to it (and it to `--request-timeout-secs`).
    #[arg(long, env = env::IRAS_RESULT_WAIT_MAX_SECS, default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub result_wait_max_secs: u64,
    /// Most images in one batch (`POST /batches`), counting each file of an archive; a
    /// batch with more is refused whole with 413 before anything is queued.
    #[arg(long, env = env::IRAS_BATCH_MAX_IMAGES, default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_max_images: u32,
    /// Most bytes in one batch: the upload's body, and its images once unpacked from
    /// archives; a batch over it is refused whole with 413. The whole batch is held in
    /// memory while it is checked, so keep it well below the machine's memory.
    #[arg(long, env = env::IRAS_BATCH_MAX_BYTES, default_value_t = 128 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=(4u64 << 30)))]
    pub batch_max_bytes: u64,
    /// Days the images, results and job records stay retrievable; 0 keeps them forever.
    /// The local backend's buckets are swept by the web tier (at start, then hourly); on AWS
    /// the stack's S3 lifecycle rules do it (set the template's `RetentionDays` to match).
    #[arg(long, env = env::IRAS_RETENTION_DAYS, default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=36_500))]
    pub retention_days: u32,
}

/// The live view's options.
#[derive(Debug, Clone, Args)]
pub struct LiveArgs {
    /// Seconds between the live view's looks at the queues and the fleet (only while a page
    /// has the view open: one look serves every viewer).
    #[arg(long, env = env::IRAS_LIVE_INTERVAL_SECS, default_value_t = 2,
          value_parser = clap::value_parser!(u64).range(1..=60))]
    pub live_interval_secs: u64,
    /// The fleet the live view shows: the scaler's `--stack-name` and `--name-prefix`.
    #[command(flatten)]
    pub fleet: iras_cli::FleetNaming,
}

/// HTTP and request-handling options.
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Address and port to serve on. Use `0.0.0.0:PORT` to accept requests from other
    /// machines (as on the web instance).
    #[arg(long, env = env::IRAS_LISTEN, default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// How long a request waits for its result, in seconds, before a 504 that carries the
    /// request id (the result can then be fetched from `/results/{id}`). Cover a cold
    /// scale-out: on EC2 new instances take about a minute to boot.
    #[arg(long, env = env::IRAS_REQUEST_TIMEOUT_SECS, default_value_t = 180,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout_secs: u64,
    /// Most requests waiting for a result at once; beyond it uploads get 503 with
    /// Retry-After.
    #[arg(long, env = env::IRAS_MAX_WAITING, default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_waiting: u32,
    /// How long a client may take to send a request's headers, in seconds; a connection
    /// that has not sent them in time is closed (slowloris).
    #[arg(long, env = env::IRAS_HEADER_TIMEOUT_SECS, default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub header_timeout_secs: u64,
    /// How long a client may take to send an upload's body, in seconds, before a 408. Cover
    /// the largest upload on the slowest link you serve (10 MiB at 2 Mbit/s is 42 s).
    #[arg(long, env = env::IRAS_BODY_TIMEOUT_SECS, default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_timeout_secs: u64,
    /// Most client connections open at once; beyond it new connections wait in the
    /// kernel's accept queue until one closes. Keep it below the process's file-descriptor
    /// limit (`LimitNOFILE` in the systemd unit).
    #[arg(long, env = env::IRAS_MAX_CONNECTIONS, default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
    /// How far an upload is checked before it is queued: `structure` reads the header and
    /// walks the file's framing (PNG chunks and their CRCs, JPEG segments to the end marker,
    /// GIF blocks, WebP chunks, a BMP's pixel array), and decodes in full only what that
    /// cannot prove whole (TIFF, a file cut short); `full` decodes every upload. Either way a
    /// truncated file or one that is not an image is refused with a 4xx before anything is
    /// queued; with `structure`, a file whose framing is whole but whose compressed pixels
    /// are damaged is answered by the worker instead (422, `undecodable_image`).
    #[arg(long, env = env::IRAS_VALIDATE, default_value = "structure")]
    pub validate: Validation,
    /// Input limits (the same flags and defaults as the app tier's).
    #[command(flatten)]
    pub limits: iras_cli::LimitArgs,
    /// Memory and concurrency of the validating decodes.
    #[command(flatten)]
    pub decode: iras_cli::DecodeArgs,
    /// Predictions per result returned in JSON answers (1–20).
    #[arg(long, env = env::IRAS_TOP_K, default_value_t = 5,
          value_parser = clap::value_parser!(u8).range(1..=20))]
    pub top_k: u8,
    /// Object keys in the buckets: `file-name` (the seed's layout: `test_0.JPEG` and
    /// `test_0`) or `request-id` (`<id>/test_0.JPEG` and `<id>`, for uploads whose names
    /// collide).
    #[arg(long, env = env::IRAS_KEY_SCHEME, default_value = "file-name")]
    pub key_scheme: KeyScheme,
    /// Finished results kept in memory for `GET /results/{id}` (older ones are read from
    /// the output bucket).
    #[arg(long, env = env::IRAS_RESULTS_KEPT, default_value_t = 100_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub results_kept: u32,
}

/// How far the web tier checks an upload before queueing it (`--validate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Validation {
    /// The header, then the file's framing; a full decode only when that is not enough.
    Structure,
    /// The header, then a full decode of every upload.
    Full,
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
    #[arg(long = "listener", env = env::IRAS_LISTENER, value_enum, default_value_t = ListenerMode::Embedded)]
    pub mode: ListenerMode,
    /// With `--listener external`: loopback address the listener delivers results to.
    #[arg(long, env = env::IRAS_INTERNAL_LISTEN, default_value = "127.0.0.1:8001")]
    pub internal_listen: SocketAddr,
    /// With `--listener external`: the shared secret the listener presents (at least 32
    /// bytes; give it through the environment so it stays out of `ps`).
    #[arg(
        long = "listener-token",
        env = env::IRAS_LISTENER_TOKEN,
        hide_env_values = true
    )]
    pub token: Option<Token>,
    /// Where results come back: `own` (a queue this web tier makes at start,
    /// `<response-queue>-web-<id>`, shaped like the response queue, and deletes at a clean
    /// stop; several web tiers can serve one stack) or `shared` (the stack's response
    /// queue itself: only for a stack with exactly one web tier).
    #[arg(long = "reply-queue", env = env::IRAS_REPLY_QUEUE, value_enum,
          default_value_t = ReplyQueueMode::Own)]
    pub reply_queue: ReplyQueueMode,
    /// With `--reply-queue own`: the `<id>` in the queue's name (letters, digits, `-`, `_`;
    /// at most 40). Default: the instance id, if any, and 8 random hex digits, fresh at
    /// every start.
    #[arg(long, env = env::IRAS_WEB_ID, value_parser = crate::reply::parse_web_id)]
    pub web_id: Option<String>,
    /// Polling of the embedded listener.
    #[command(flatten)]
    pub polling: iras_cli::ListenerPolling,
}

/// Settings the request handlers use, checked at startup.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Deadline of a waiting request.
    pub request_timeout: Duration,
    /// Deadline for reading an upload's body.
    pub body_timeout: Duration,
    /// Deadline for reading a request's headers.
    pub header_timeout: Duration,
    /// Most open client connections.
    pub max_connections: usize,
    /// Most waiting requests.
    pub max_waiting: usize,
    /// Input limits.
    pub limits: iras_classifier::Limits,
    /// How far uploads are checked before they are queued.
    pub validation: Validation,
    /// The budget every validating decode takes its memory estimate out of.
    pub decode_budget: iras_classifier::DecodeBudget,
    /// Predictions per result.
    pub top_k: u8,
    /// Bucket key layout.
    pub key_scheme: KeyScheme,
    /// Finished results kept in memory.
    pub results_kept: usize,
    /// Time between the live view's looks.
    pub live_interval: Duration,
    /// Longest long-poll of `GET /results/{id}?wait=`.
    pub result_wait_max: Duration,
    /// Most images in one batch.
    pub batch_max_images: usize,
    /// Most bytes in one batch (body, and images unpacked).
    pub batch_max_bytes: usize,
    /// Age after which objects in the buckets expire; `None` keeps them forever.
    pub retention: Option<Duration>,
}

impl Cli {
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
        let jobs = &self.jobs;
        Ok(WebConfig {
            request_timeout: Duration::from_secs(http.request_timeout_secs),
            body_timeout: Duration::from_secs(http.body_timeout_secs),
            header_timeout: Duration::from_secs(http.header_timeout_secs),
            max_connections: http.max_connections as usize,
            max_waiting: http.max_waiting as usize,
            limits: http.limits.limits(),
            validation: http.validate,
            decode_budget: http.decode.budget(http.limits.max_decoded_bytes)?,
            top_k: http.top_k,
            key_scheme: http.key_scheme,
            results_kept: http.results_kept as usize,
            live_interval: Duration::from_secs(self.live.live_interval_secs),
            // A long-poll never outlasts the HTTP deadline, which follows the request timeout.
            result_wait_max: Duration::from_secs(
                jobs.result_wait_max_secs.min(http.request_timeout_secs),
            ),
            batch_max_images: jobs.batch_max_images as usize,
            batch_max_bytes: usize::try_from(jobs.batch_max_bytes).unwrap_or(usize::MAX),
            retention: (jobs.retention_days > 0)
                .then(|| Duration::from_secs(u64::from(jobs.retention_days) * 24 * 3600)),
        })
    }
}
