//! The emulator's control endpoint, loopback only: `GET /instances` (every instance the
//! emulator has seen, with its units, pids and exits, as JSON) and `POST
//! /instances/{id}/kill` (SIGKILL the instance's processes, optionally `?unit=NAME`, as a
//! crash would; systemd's restart policy then applies). For fault drills by hand:
//!
//! ```text
//! curl -s http://127.0.0.1:8003/instances | jq '.[] | {id, name, phase}'
//! curl -s -X POST http://127.0.0.1:8003/instances/i-0123/kill
//! ```

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;

use crate::emulator::{Emulator, InstanceStatus};

#[derive(Deserialize)]
struct KillQuery {
    unit: Option<String>,
}

async fn instances(State(emulator): State<Emulator>) -> Json<Vec<InstanceStatus>> {
    Json(emulator.instances())
}

async fn kill(
    State(emulator): State<Emulator>,
    Path(id): Path<String>,
    Query(q): Query<KillQuery>,
) -> (StatusCode, String) {
    match emulator.kill(&id, q.unit.as_deref()) {
        Ok(n) => (StatusCode::OK, format!("killed {n} processes of {id}\n")),
        Err(e) => (StatusCode::NOT_FOUND, format!("{e:#}\n")),
    }
}

/// Serves the control endpoint on `listener` until `shutdown`.
pub async fn serve(
    emulator: Emulator,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/instances", get(instances))
        .route("/instances/{id}/kill", post(kill))
        .with_state(emulator);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
