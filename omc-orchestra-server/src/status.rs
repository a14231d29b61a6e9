//! `GET /health`, answered the same way by every server.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use std::time::Instant;

/// Facts a server reports about itself.
#[derive(Clone, Debug)]
pub struct ServerStatus {
    /// The server's name.
    pub server: &'static str,
    /// `memory` or `redis`.
    pub backend: &'static str,
    /// When the server started.
    pub started: Instant,
}

/// The answer of `GET /health`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthAnswer {
    /// Always `ok` when the server answers.
    pub status: &'static str,
    /// Which server answered.
    pub server: &'static str,
    /// The backend kind.
    pub backend: &'static str,
    /// The server's version.
    pub version: &'static str,
    /// Seconds since start.
    pub uptime_seconds: u64,
}

/// Liveness of the server.
#[utoipa::path(get, path = "/health", responses((status = 200, body = HealthAnswer)))]
pub async fn health(State(status): State<ServerStatus>) -> Json<HealthAnswer> {
    Json(HealthAnswer {
        status: "ok",
        server: status.server,
        backend: status.backend,
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: status.started.elapsed().as_secs(),
    })
}
