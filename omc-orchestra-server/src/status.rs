//! `GET /health`, answered the same way by every server.

use axum::extract::State;
use axum::Json;
use omc_orchestra::durability::DurabilityReport;
use serde::Serialize;
use std::time::Instant;

/// Facts a server reports about itself.
#[derive(Clone, Debug)]
pub struct ServerStatus {
    /// The server's name.
    pub server: &'static str,
    /// `memory` or `redis`.
    pub backend: &'static str,
    /// What an acknowledged write survives.
    pub durability: DurabilityReport,
    /// When the server started.
    pub started: Instant,
}

impl ServerStatus {
    /// Put the durability level in force on `registry` as
    /// `orchestra_redis_durability{backend, level, met} 1`, so an alert can watch it.
    pub fn register_durability(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        let opts = prometheus::Opts::new(
            "redis_durability",
            "The durability level in force (1); met is false when Redis's settings fall short.",
        );
        let gauge = prometheus::IntGaugeVec::new(opts, &["backend", "level", "met"])?;
        registry.register(Box::new(gauge.clone()))?;
        let report = &self.durability;
        let met = if report.met { "true" } else { "false" };
        gauge
            .with_label_values(&[report.backend, report.level.as_str(), met])
            .set(1);
        Ok(())
    }
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
    /// What an acknowledged job, event or log batch survives, and what a crash loses.
    #[schema(value_type = Object)]
    pub durability: DurabilityReport,
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
        durability: status.durability,
    })
}
