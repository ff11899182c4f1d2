//! [`HttpSink`]: the split deployment's sink, which posts each result to the web tier's
//! loopback-only delivery endpoint with the shared token, and asks the web tier which queue
//! to poll. The endpoints' contract is `iras_protocol::internal`, shared with the web tier
//! that serves them.

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use iras_delivery::{DeliveryError, ResultSink};
use iras_protocol::ResponseMessage;
use iras_protocol::internal::{
    DELIVERY_PATH, Delivery, DeliveryReply, REPLY_QUEUE_PATH, ReplyQueueReply, Token,
};

/// Posts results to a web tier over loopback HTTP with a shared token.
#[derive(Debug, Clone)]
pub struct HttpSink {
    client: reqwest::Client,
    url: String,
    reply_queue_url: String,
    token: Token,
}

/// Why an [`HttpSink`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpSinkError {
    /// Not an `http://` URL whose host is a loopback address.
    #[error(
        "--deliver-to must be an http:// URL on a loopback address (127.0.0.1, ::1 or localhost), got {0:?}"
    )]
    NotLoopback(String),
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// How long one delivery may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

impl HttpSink {
    /// A sink posting to `base_url` (e.g. `http://127.0.0.1:8001`), which must be loopback:
    /// results and the token never leave the machine.
    pub fn new(base_url: &str, token: Token) -> Result<Self, HttpSinkError> {
        let parsed = reqwest::Url::parse(base_url)
            .map_err(|_| HttpSinkError::NotLoopback(base_url.to_owned()))?;
        if parsed.scheme() != "http" || !is_loopback_host(parsed.host_str().unwrap_or("")) {
            return Err(HttpSinkError::NotLoopback(base_url.to_owned()));
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .timeout(DELIVERY_TIMEOUT)
            .build()?;
        let base = base_url.trim_end_matches('/');
        Ok(Self {
            client,
            url: format!("{base}{DELIVERY_PATH}"),
            reply_queue_url: format!("{base}{REPLY_QUEUE_PATH}"),
            token,
        })
    }
}

/// What the web tier said to [`HttpSink::ask_reply_queue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyQueueAnswer {
    /// It took the token and named the queue its results come back on.
    Named(String),
    /// It refused the token: the two sides were given different ones.
    Refused,
    /// No answer that says either (not up yet, busy): ask again later.
    Unknown,
}

impl HttpSink {
    /// Asks the web tier which queue to poll; the answer also says whether it takes this
    /// sink's token.
    pub async fn ask_reply_queue(&self) -> ReplyQueueAnswer {
        let asked = self
            .client
            .get(&self.reply_queue_url)
            .bearer_auth(self.token.expose())
            .send()
            .await;
        let reply = match asked {
            Ok(reply) => reply,
            Err(_) => return ReplyQueueAnswer::Unknown,
        };
        let status = reply.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return ReplyQueueAnswer::Refused;
        }
        if !status.is_success() {
            return ReplyQueueAnswer::Unknown;
        }
        match reply.json::<ReplyQueueReply>().await {
            Ok(named) if !named.reply_queue.is_empty() => {
                ReplyQueueAnswer::Named(named.reply_queue)
            }
            _ => ReplyQueueAnswer::Unknown,
        }
    }

    /// The endpoint this sink delivers to.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// Whether `host` (as a URL spells it) names this machine.
fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[async_trait]
impl ResultSink for HttpSink {
    async fn deliver(&self, response: &ResponseMessage) -> Result<Delivery, DeliveryError> {
        let unreachable = |source: reqwest::Error| DeliveryError::Unreachable {
            url: self.url.clone(),
            source: Box::new(source),
        };
        let reply = self
            .client
            .post(&self.url)
            .bearer_auth(self.token.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(response.encode()?)
            .send()
            .await
            .map_err(unreachable)?;
        let status = reply.status();
        if !status.is_success() {
            let body = reply.text().await.unwrap_or_default();
            return Err(DeliveryError::Refused {
                url: self.url.clone(),
                status: status.as_u16(),
                body: body
                    .lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(200)
                    .collect(),
            });
        }
        let reply: DeliveryReply = reply.json().await.map_err(unreachable)?;
        Ok(reply.delivery)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_http_urls_are_accepted() {
        let token = || Token::new("t".repeat(32)).unwrap();
        for ok in [
            "http://127.0.0.1:8001",
            "http://localhost:9/",
            "http://[::1]:8001",
            "http://127.1.2.3",
        ] {
            assert!(HttpSink::new(ok, token()).is_ok(), "{ok}");
        }
        for bad in [
            "https://127.0.0.1:8001",
            "http://10.0.0.5:8001",
            "http://example.com",
            "127.0.0.1:8001",
            "",
        ] {
            assert!(
                matches!(
                    HttpSink::new(bad, token()),
                    Err(HttpSinkError::NotLoopback(_))
                ),
                "{bad}"
            );
        }
        let sink = HttpSink::new("http://127.0.0.1:8001/", token()).unwrap();
        assert_eq!(sink.url, "http://127.0.0.1:8001/internal/results");
    }
}
