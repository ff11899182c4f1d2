//! The standalone `listener` binary of the split deployment: it long-polls the web tier's
//! reply queue and posts each result to the web tier's loopback-only endpoint, as the seed's
//! separate listener process did.
//!
//! - [`Cli`] is its command line; [`run`] runs it until the shutdown future resolves.
//! - The loop itself (receive, hand over, delete what was taken) is `iras_delivery`, which
//!   the web tier embeds by default; this binary gives it an [`HttpSink`].
//! - The endpoints' paths and answers and the [`Token`] both sides share are
//!   `iras_protocol::internal`: a contract between two processes, owned by neither.
//!
//! The decision a reader may question: the listener asks the web tier which queue to poll
//! instead of being told on its command line. Each web tier makes a reply queue of its own
//! at every start, so only the web tier knows its name; asking also checks the token before
//! any result is taken, and the listener asks again when the web tier restarts.

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use iras_cloud::Queue;
use iras_delivery::ResultSink;
use iras_protocol::env;
use iras_service::Backoff;

pub mod http_sink;

pub use http_sink::{HttpSink, HttpSinkError, ReplyQueueAnswer};
pub use iras_protocol::internal::Token;

/// Command line of the standalone `listener` binary.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "listener",
    version = iras_cloud::version_with_backends!(),
    about = "iras listener: delivers results from the response queue to the web tier"
)]
pub struct Cli {
    /// Backend and state directory.
    #[command(flatten)]
    pub cloud: iras_cli::CloudArgs,
    /// Queue and bucket names (for provisioning; the queue polled is the one the web tier
    /// names, its own reply queue or the response queue).
    #[command(flatten)]
    pub stack: iras_cli::StackArgs,
    /// Polling.
    #[command(flatten)]
    pub polling: iras_cli::ListenerPolling,
    /// The web tier's internal endpoint (its `--internal-listen` address), loopback only.
    #[arg(
        long,
        env = env::IRAS_LISTENER_DELIVER_TO,
        default_value = "http://127.0.0.1:8001"
    )]
    pub deliver_to: String,
    /// Shared secret the web tier expects (at least 32 bytes; give it through the
    /// environment, not the command line, so it stays out of `ps`).
    #[arg(long, env = env::IRAS_LISTENER_TOKEN, hide_env_values = true)]
    pub token: Token,
    /// Loops polling side by side (more only helps with very high result rates).
    #[arg(long, env = env::IRAS_LISTENER_LOOPS, default_value_t = NonZeroUsize::MIN)]
    pub loops: NonZeroUsize,
}

/// How often the standalone listener says it still waits for the web tier to answer.
const WAITING_NOTE_EVERY: Duration = Duration::from_secs(60);

/// Asks the web tier which queue to poll until it says (it makes its reply queue at start,
/// so there is nothing to poll before it answers). Fails at once when the web tier refuses
/// the token, instead of dead-lettering every result later: the two units must be given
/// the same `IRAS_LISTENER_TOKEN`.
async fn ask_reply_queue(sink: &HttpSink) -> anyhow::Result<String> {
    let mut backoff = Backoff::new(Duration::from_secs(5));
    let mut next_note = tokio::time::Instant::now() + WAITING_NOTE_EVERY;
    loop {
        match sink.ask_reply_queue().await {
            ReplyQueueAnswer::Named(queue) => {
                tracing::info!(url = sink.url(), %queue, "the web tier takes this listener's token");
                return Ok(queue);
            }
            ReplyQueueAnswer::Refused => anyhow::bail!(
                "the web tier at {} refuses this listener's token: give the web tier \
                 (--listener-token) and the listener (--token) the same \
                 IRAS_LISTENER_TOKEN, e.g. one line in /etc/iras/iras.env read by both units",
                sink.url()
            ),
            ReplyQueueAnswer::Unknown => {
                if tokio::time::Instant::now() >= next_note {
                    tracing::warn!(
                        url = sink.url(),
                        "the web tier does not answer yet: still asking"
                    );
                    next_note += WAITING_NOTE_EVERY;
                }
                tokio::time::sleep(backoff.next_pause()).await;
            }
        }
    }
}

/// Runs the standalone listener until `shutdown` resolves: asks the web tier for its reply
/// queue, polls it, and when the queue goes away (the web tier restarted and made a new
/// one) asks again.
pub async fn run(args: Cli, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let http = HttpSink::new(&args.deliver_to, args.token.clone())?;
    let cloud = args.cloud.connect().await?;
    args.stack.ensure(&cloud).await?;
    let sink: Arc<dyn ResultSink> = Arc::new(http.clone());
    tokio::pin!(shutdown);
    // Between rounds that found the queue gone: the web tier may still name it for a
    // moment while it restarts.
    let mut again = Backoff::new(Duration::from_secs(5));
    loop {
        let name = tokio::select! {
            () = &mut shutdown => return Ok(()),
            asked = ask_reply_queue(&http) => asked?,
        };
        let polled = match cloud.queue(&name).await {
            Ok(queue) => {
                again.reset();
                poll(&args, queue, sink.clone(), &mut shutdown).await
            }
            Err(iras_cloud::CloudError::QueueNotFound { .. }) => Polled::QueueGone,
            Err(e) => return Err(e.into()),
        };
        match polled {
            Polled::Stopped => return Ok(()),
            Polled::Failed(e) => return Err(e),
            Polled::QueueGone => {
                let pause = again.next_pause();
                tracing::info!(queue = %name, retry_in = ?pause,
                    "the reply queue is gone: asking the web tier again");
                tokio::select! {
                    () = &mut shutdown => return Ok(()),
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

/// How a round of polling one queue ended.
enum Polled {
    Stopped,
    QueueGone,
    Failed(anyhow::Error),
}

/// Runs `--loops` polling loops on `queue` until shutdown, or until one ends on its own.
async fn poll(
    args: &Cli,
    queue: Arc<dyn Queue>,
    sink: Arc<dyn ResultSink>,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Polled {
    let stop = tokio_util::sync::CancellationToken::new();
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..args.loops.get() {
        loops.spawn(iras_delivery::run(
            queue.clone(),
            sink.clone(),
            args.polling.receive_options(),
            stop.clone().cancelled_owned(),
        ));
    }
    let first = tokio::select! {
        () = shutdown.as_mut() => None,
        Some(first) = loops.join_next() => Some(first),
    };
    stop.cancel();
    let rest: anyhow::Result<()> = loops.join_all().await.into_iter().collect();
    let first = match first {
        None => return rest.map_or_else(Polled::Failed, |()| Polled::Stopped),
        Some(Ok(result)) => result,
        Some(Err(joined)) => Err(joined.into()),
    };
    // A loop ending on its own means an error no retry fixes; a missing queue is the one
    // a new question to the web tier does fix.
    match first.and(rest) {
        Ok(()) => Polled::Stopped,
        Err(e)
            if matches!(
                e.downcast_ref::<iras_cloud::CloudError>(),
                Some(iras_cloud::CloudError::QueueNotFound { .. })
            ) =>
        {
            Polled::QueueGone
        }
        Err(e) => Polled::Failed(e),
    }
}
