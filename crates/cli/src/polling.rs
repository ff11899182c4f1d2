//! How the response loop polls: the same flags for the web tier's embedded listener and for
//! the standalone `listener`.

use std::time::Duration;

use iras_cloud::ReceiveOptions;
use iras_protocol::env;

/// Default of [`ListenerPolling::batch_size`]: SQS's most per receive.
const DEFAULT_BATCH_SIZE: u8 = 10;
/// Default of [`ListenerPolling::wait_secs`]: SQS's longest long poll.
const DEFAULT_WAIT_SECS: u64 = 20;
/// Default of [`ListenerPolling::visibility_timeout_secs`].
const DEFAULT_VISIBILITY_TIMEOUT_SECS: u64 = 30;

/// The response loop's polling flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct ListenerPolling {
    /// Responses taken per receive (1–10).
    #[arg(long = "listener-batch-size", env = env::IRAS_LISTENER_BATCH_SIZE, default_value_t = DEFAULT_BATCH_SIZE,
          value_parser = clap::value_parser!(u8).range(1..=10))]
    pub batch_size: u8,
    /// Long-poll wait per receive, in seconds (SQS's maximum is 20).
    #[arg(long = "listener-wait-secs", env = env::IRAS_LISTENER_WAIT_SECS, default_value_t = DEFAULT_WAIT_SECS,
          value_parser = clap::value_parser!(u64).range(0..=20))]
    pub wait_secs: u64,
    /// How long a received response stays hidden, in seconds: if it could not be handed
    /// over (web tier down), it comes back after this long.
    #[arg(long = "listener-visibility-timeout-secs", env = env::IRAS_LISTENER_VISIBILITY_TIMEOUT_SECS,
          default_value_t = DEFAULT_VISIBILITY_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(2..=43_200))]
    pub visibility_timeout_secs: u64,
}

impl Default for ListenerPolling {
    fn default() -> Self {
        Self {
            batch_size: DEFAULT_BATCH_SIZE,
            wait_secs: DEFAULT_WAIT_SECS,
            visibility_timeout_secs: DEFAULT_VISIBILITY_TIMEOUT_SECS,
        }
    }
}

impl ListenerPolling {
    /// What each receive asks for.
    pub fn receive_options(&self) -> ReceiveOptions {
        ReceiveOptions {
            max_messages: usize::from(self.batch_size),
            wait: Duration::from_secs(self.wait_secs),
            visibility_timeout: Some(Duration::from_secs(self.visibility_timeout_secs)),
        }
    }
}
