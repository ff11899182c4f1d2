//! The iras web tier: takes an image upload, puts a request on the request queue, waits
//! for the result, and answers with the label.
//!
//! # Layout
//! - [`config`]: the command line ([`Cli`]) and its validated form.
//! - [`waiters`]: the bounded map of requests waiting for results (event driven: a oneshot
//!   per request, completed by the listener), and recent results for `GET /results/{id}`.
//! - `handlers`: `POST /`, `GET /results/{id}` (and its `/image`), `GET /healthz`,
//!   `GET /metrics`, and the
//!   internal delivery endpoint of the split deployment.
//! - [`jobs`]: `POST /jobs` and `GET /results/{id}?wait=`: asynchronous requests, their
//!   records in the output bucket, and waiting for a result without polling.
//! - [`batches`]: `POST /batches`, `GET /batches/{id}` (progress, then every result as JSON
//!   or CSV) and `GET /batches/{id}/events` (the results as server-sent events).
//! - [`archive`]: the images inside a zip or tar of a batch, within the batch's limits.
//! - [`page`]: `GET /` — the upload page for a browser, a usage line for everyone else.
//! - [`live`]: `GET /live` — the page's live view of queues, fleet, throughput and results,
//!   as server-sent events.
//! - [`reply`]: the queue results come back on, by default one this web tier makes for
//!   itself at start and deletes at a clean stop, so several web tiers can serve one stack.
//! - [`request_id`]: the id a client may choose (`Idempotency-Key` / `X-Request-Id`).
//! - [`retention`]: `--retention-days` on the local backend, a sweep of both buckets (S3
//!   lifecycle rules do it on AWS).
//! - [`results`]: results by id from the output bucket (`results/<id>.json`).
//! - [`error`]: every failure with its status and one-line reason.
//! - [`metrics`]: Prometheus counters, histogram and gauge.
//! - `validate`: an upload's header checked against the limits, then its full decode within
//!   the process's decode budget, on the blocking pool.
//! - `server`: the public socket (header read timeout, connection limit, graceful drain).
//!
//! [`run`] binds and serves; [`serve`] takes already-bound sockets (tests bind port 0).
//! By default the listener runs inside this process; with `--listener external` the
//! standalone `listener` binary delivers over a loopback-only endpoint instead.
//!
//! The decision a reader may question: uploads are not decoded here by default, although
//! bad input must get its 4xx before anything is queued. The header is read (format,
//! dimensions, the memory a decode needs: a decompression bomb costs its header), then the
//! file's framing is walked (`--validate structure`: chunks and checksums, segments up to the
//! end marker), which refuses what is not an image, over a limit or cut short, for a small
//! fraction of a decode; the app tier decodes anyway. What the framing cannot prove whole,
//! and every upload with `--validate full`, is decoded in full on the blocking pool within a
//! memory budget shared by all uploads (`validate`). The price of the default: a file whose
//! framing is whole but whose compressed data is damaged costs a worker a receive and is
//! answered with a 422 instead of a 400; the gain: half the web tier's CPU per upload, on
//! the one machine every upload goes through.
//! The public socket is served by `server` (header read timeout, connection limit) rather
//! than `axum::serve`, which offers neither.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use iras_cloud::{Bucket, Queue};
use iras_delivery::{Delivery, DeliveryError, ResultSink};
use iras_protocol::ResponseMessage;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub mod archive;
pub mod batches;
pub mod config;
pub mod error;
mod handlers;
pub mod jobs;
pub mod live;
pub mod metrics;
pub mod page;
pub mod reply;
pub mod request_id;
pub mod results;
pub mod retention;
mod server;
mod validate;
pub mod waiters;

pub use config::{Cli, ListenerMode, WebConfig};
pub use handlers::FILE_FIELD;
pub use reply::ReplyQueueMode;

/// Header carrying the request id on every answer about a request.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Room in the request body for the multipart framing around the image.
const MULTIPART_OVERHEAD_BYTES: usize = 64 * 1024;

/// Extra time an HTTP request may take beyond the result deadline (reading the upload,
/// validating, queueing) before the server gives up on it with 408.
const HTTP_SLACK: std::time::Duration = std::time::Duration::from_secs(30);

/// Everything a handler needs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Validated settings.
    pub config: Arc<WebConfig>,
    /// The request queue.
    pub requests: Arc<dyn Queue>,
    /// Where claim-checked images go.
    pub input_bucket: Arc<dyn Bucket>,
    /// Where results are read from when they are no longer in memory.
    pub output_bucket: Arc<dyn Bucket>,
    /// The queue results come back on, named in every request (see [`reply`]).
    pub reply_to: Arc<str>,
    /// Requests waiting for results.
    pub waiters: Arc<waiters::Waiters>,
    /// Counters and histograms.
    pub metrics: Arc<metrics::Metrics>,
    /// The live view's record of results, and its snapshots.
    pub live: Arc<live::Live>,
}

impl AppState {
    /// Hands a result to its waiter (or records it) and counts it.
    pub fn complete(&self, response: ResponseMessage) -> Delivery {
        self.live.record(&response);
        let delivery = self.waiters.complete(response);
        self.metrics.result(delivery);
        delivery
    }
}

/// The embedded listener's sink: the waiter map.
#[derive(Debug, Clone)]
struct EmbeddedSink(AppState);

#[async_trait::async_trait]
impl ResultSink for EmbeddedSink {
    async fn deliver(&self, response: &ResponseMessage) -> Result<Delivery, DeliveryError> {
        Ok(self.0.complete(response.clone()))
    }
}

/// The public routes.
pub fn app(state: AppState) -> Router {
    let body_limit = state
        .config
        .limits
        .max_bytes
        .saturating_add(MULTIPART_OVERHEAD_BYTES);
    let batch_body_limit = state
        .config
        .batch_max_bytes
        .saturating_add(MULTIPART_OVERHEAD_BYTES);
    let http_timeout = state.config.request_timeout + HTTP_SLACK;
    Router::new()
        .route(
            "/",
            get(page::index)
                .post(handlers::upload)
                .layer(DefaultBodyLimit::max(body_limit)),
        )
        .route(
            "/jobs",
            post(handlers::submit_job).layer(DefaultBodyLimit::max(body_limit)),
        )
        .route(
            "/batches",
            post(batches::submit).layer(DefaultBodyLimit::max(batch_body_limit)),
        )
        .route("/batches/{id}", get(batches::progress))
        .route("/batches/{id}/events", get(batches::events))
        .route(page::SCRIPT_PATH, get(page::script))
        .route(page::LIVE_SCRIPT_PATH, get(page::live_script))
        .route(page::STYLE_PATH, get(page::style))
        .route("/results/{id}", get(handlers::result))
        .route("/results/{id}/image", get(handlers::result_image))
        .route(live::LIVE_PATH, get(live::stream))
        .route("/healthz", get(handlers::healthz))
        .route("/metrics", get(handlers::metrics))
        .with_state(state)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            http_timeout,
        ))
        .layer(TraceLayer::new_for_http())
}

/// The internal route the standalone listener delivers to.
pub fn internal_app(state: AppState, token: iras_protocol::internal::Token) -> Router {
    Router::new()
        .route(
            iras_protocol::internal::DELIVERY_PATH,
            post(handlers::deliver),
        )
        .route(
            iras_protocol::internal::REPLY_QUEUE_PATH,
            get(handlers::reply_queue),
        )
        .with_state((state, token))
        .layer(DefaultBodyLimit::max(iras_protocol::MAX_MESSAGE_BYTES))
}

/// Binds the configured addresses and serves until `shutdown` resolves.
pub async fn run(
    args: Cli,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let http = TcpListener::bind(args.http.listen)
        .await
        .with_context(|| format!("binding {}", args.http.listen))?;
    let internal = match args.listener.mode {
        ListenerMode::Embedded => None,
        ListenerMode::External => Some(
            TcpListener::bind(args.listener.internal_listen)
                .await
                .with_context(|| format!("binding {}", args.listener.internal_listen))?,
        ),
    };
    serve(args, http, internal, shutdown).await
}

/// Serves on already-bound sockets until `shutdown` resolves, then drains: no new
/// connections, requests in flight run to their answer or deadline, and only then the
/// embedded listener stops (the waiting requests need it until the end).
pub async fn serve(
    args: Cli,
    http: TcpListener,
    internal: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let config = args.validate()?;
    let cloud = args.cloud.connect().await?;
    args.stack.ensure(&cloud).await?;
    let reply = reply::ReplyQueue::open(
        &cloud,
        args.listener.reply_queue,
        &args.stack.response_queue,
        args.listener.web_id.as_deref(),
    )
    .await?;
    let outcome = serve_with(args, http, internal, shutdown, &cloud, config, &reply).await;
    // Also after a failure: nothing waits on the queue once serving has ended.
    reply.close(&cloud).await;
    outcome
}

/// [`serve`] once the reply queue is open.
async fn serve_with(
    args: Cli,
    http: TcpListener,
    internal: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    cloud: &iras_cloud::Cloud,
    config: WebConfig,
    reply: &reply::ReplyQueue,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    // Cancelled as soon as the server starts to drain: the live view's streams end then.
    let draining = CancellationToken::new();
    let shutdown = {
        let draining = draining.clone();
        async move {
            shutdown.await;
            draining.cancel();
        }
    };
    let state = AppState {
        requests: cloud.queue(&args.stack.request_queue).await?,
        input_bucket: cloud.bucket(&args.stack.input_bucket).await?,
        output_bucket: cloud.bucket(&args.stack.output_bucket).await?,
        reply_to: reply.name().into(),
        waiters: Arc::new(waiters::Waiters::new(
            config.max_waiting,
            config.results_kept,
        )),
        metrics: Arc::new(metrics::Metrics::new()),
        live: Arc::new(live::Live::new(config.live_interval, draining)),
        config,
    };
    let responses = reply.queue();
    let fleet = cloud.fleet_view(&args.live.fleet.stack, &args.live.fleet.name_prefix)?;

    // Stops the internal endpoint and the embedded listener after the public server drained.
    let stop_background = CancellationToken::new();
    let mut background = tokio::task::JoinSet::new();
    let sources = live::Sources {
        backend: cloud.kind().to_string(),
        requests: state.requests.clone(),
        responses: responses.clone(),
        fleet,
        waiters: state.waiters.clone(),
    };
    let sampler = state.live.clone().sample(sources, stop_background.clone());
    background.spawn(async move {
        sampler.await;
        Ok(())
    });
    if let Some(max_age) = state.config.retention {
        let retention = retention::Retention {
            buckets: vec![
                args.stack.input_bucket.clone(),
                args.stack.output_bucket.clone(),
            ],
            max_age,
        };
        let sweep = retention.sweep(cloud.clone(), stop_background.clone());
        background.spawn(async move {
            sweep.await;
            Ok(())
        });
    }
    match (args.listener.mode, internal) {
        (ListenerMode::Embedded, _) => {
            let sink = Arc::new(EmbeddedSink(state.clone()));
            background.spawn(iras_delivery::run(
                responses,
                sink,
                args.listener.polling.receive_options(),
                stop_background.clone().cancelled_owned(),
            ));
        }
        (ListenerMode::External, Some(internal)) => {
            let token = args
                .listener
                .token
                .clone()
                .ok_or_else(|| anyhow::anyhow!("--listener external needs --listener-token"))?;
            tracing::info!(addr = %internal.local_addr()?, "internal delivery endpoint listening");
            let router = internal_app(state.clone(), token);
            let stop = stop_background.clone();
            background.spawn(async move {
                axum::serve(internal, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
                    .map_err(anyhow::Error::from)
            });
        }
        (ListenerMode::External, None) => {
            anyhow::bail!("--listener external needs a bound internal endpoint")
        }
    }

    tracing::info!(addr = %http.local_addr()?, "web tier listening");
    let limits = server::ConnectionLimits {
        header_timeout: state.config.header_timeout,
        max_connections: state.config.max_connections,
    };
    let public = server::serve(http, app(state), limits, shutdown);
    let outcome = tokio::select! {
        r = public => r.map_err(anyhow::Error::from),
        // A background task ending early is an error no retry fixes (e.g. a missing queue).
        Some(done) = background.join_next() => {
            Err(match done {
                Ok(Ok(())) => anyhow::anyhow!("a background task stopped unexpectedly"),
                Ok(Err(e)) => e,
                Err(e) => e.into(),
            })
        }
    };
    stop_background.cancel();
    while let Some(done) = background.join_next().await {
        match done {
            Ok(r) => r?,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => return Err(e.into()),
        }
    }
    outcome
}
