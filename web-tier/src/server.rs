//! The public HTTP server: axum's router behind hyper's HTTP/1 connection, with the limits a
//! public endpoint needs and `axum::serve` does not offer.
//!
//! - **Header read timeout**: a connection that has not sent a request's complete headers
//!   within `header_timeout` is closed by hyper (slowloris). `axum::serve` sets no timer, so
//!   hyper's own 30 s default never applied and half-sent headers kept connections forever.
//! - **Connection limit**: at most `max_connections` are open; the accept loop waits for one to
//!   close before it accepts the next, so new clients wait in the kernel's accept queue
//!   instead of taking file descriptors the process does not have.
//! - The body timeout and the body size limit are per route (see `handlers::upload` and
//!   [`app`](crate::app)).
//!
//! Shutdown is graceful as with `axum::serve`: stop accepting, let every connection finish its
//! request in flight (each bounded by the router's timeout, or the header timeout), then return.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connection limits of the public server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    /// Time to send a request's complete headers.
    pub(crate) header_timeout: Duration,
    /// Most connections open at once.
    pub(crate) max_connections: usize,
}

/// Pause after an accept error that is not about one connection (e.g. EMFILE), so the loop
/// does not spin while the process is out of descriptors.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until `shutdown` resolves, then drains.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    // One permit per open connection, held by its task. Never closed.
    let open = Arc::new(Semaphore::new(
        limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let service = TowerToHyperService::new(router);
    tokio::pin!(shutdown);
    let mut at_limit_logged = false;
    loop {
        if open.available_permits() == 0 && !at_limit_logged {
            tracing::warn!(
                max_connections = limits.max_connections,
                "connection limit reached: new connections wait until one closes"
            );
            at_limit_logged = true;
        }
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = open.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // unreachable: the semaphore is never closed
            },
        };
        let (stream, _peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        if open.available_permits() > 0 {
            at_limit_logged = false;
        }
        let _ = stream.set_nodelay(true);
        let connection =
            graceful.watch(builder.serve_connection(TokioIo::new(stream), service.clone()));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // Header timeouts, resets and malformed requests end here; none is ours.
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Errors that concern only the connection being accepted (as hyper-util and axum treat them).
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionRefused | K::ConnectionAborted | K::ConnectionReset
    )
}
