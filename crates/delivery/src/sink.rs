//! Where the loop hands results: the [`ResultSink`] trait and why a hand-over can fail.

use async_trait::async_trait;
use iras_protocol::ResponseMessage;
use iras_protocol::internal::Delivery;

/// Why a result could not be handed over; the response stays on the queue and comes back.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The receiving side (the web tier, over HTTP) could not be reached or did not answer
    /// in time.
    #[error("web tier unreachable at {url}: {source}")]
    Unreachable {
        /// The endpoint.
        url: String,
        /// The transport error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The receiving side refused the delivery.
    #[error("web tier at {url} answered {status}: {body}")]
    Refused {
        /// The endpoint.
        url: String,
        /// Its status.
        status: u16,
        /// Its one-line reason.
        body: String,
    },
    /// The result could not be encoded (a score that is not a finite number).
    #[error("encoding the result: {0}")]
    Encode(#[from] iras_protocol::ProtocolError),
    /// The sink is closed (the web tier is shutting down).
    #[error("the result sink is closed")]
    Closed,
}

/// Takes results from the loop.
#[async_trait]
pub trait ResultSink: Send + Sync {
    /// Hands over one result. `Ok` means the response may be deleted from the queue.
    async fn deliver(&self, response: &ResponseMessage) -> Result<Delivery, DeliveryError>;
}
