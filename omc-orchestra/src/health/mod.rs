//! Health monitoring: probes that check a service or a dependency, the checker that probes
//! every registered instance with rise/fall thresholds, host metrics and alert rules.
//!
//! - Probes: [`HttpProbe`], [`TcpProbe`], Redis `PING`, PostgreSQL `SELECT 1` and [`FnProbe`].
//! - [`HealthChecker`]: probes each instance on its interval and tells the registry when a
//!   verdict changes.
//! - [`SystemMonitor`]: CPU, memory, disks, network and load as a bounded time series.
//! - [`AlertEngine`]: Prometheus-style rules with `for`, hysteresis, dedupe and history.
//! - [`summarize`]: the figures a dashboard shows first, for every API that shows them.
//! - [`spawn_instance_views`] and [`spawn_event_lag`]: readings on a timer, for gauges.
//! - [`AlertReceivers`]: firing and resolved alerts to Alertmanager and webhooks, with
//!   dependency-aware inhibition ([`inhibitor`]).

mod alerts;
mod checker;
mod event_lag;
mod inhibit;
mod instance_views;
mod options;
mod probes;
pub mod receivers;
mod rules;
mod summary;
mod system;
mod tracker;

pub use alerts::{
    ActiveAlert, AlertEngine, AlertNotice, AlertState, Labels, DEFAULT_ALERT_HISTORY,
};
pub use checker::HealthChecker;
pub use event_lag::{spawn_event_lag, EVENT_LAG_METRIC};
pub use inhibit::{inhibitor, ServiceDependencies, INHIBITED_BY, SERVICE_UNAVAILABLE};
pub use instance_views::spawn_instance_views;
pub use options::{CheckerOptions, DependencyHealth, InstanceHealthView};
#[cfg(feature = "postgres")]
pub use probes::PostgresProbe;
#[cfg(feature = "redis")]
pub use probes::RedisProbe;
pub use probes::{dependency_probe, FnProbe, HttpProbe, TcpProbe};
pub use receivers::{AlertReceivers, ReceiverOptions, RetryPolicy, WebhookReceiver};
pub use rules::{builtin_rules, AlertRule, Comparison, Severity, MAX_RULE_SECONDS};
pub use summary::{summarize, HealthSummary, ServiceCounts, SummarySources};
pub use system::{
    CpuSample, DiskSample, NetworkSample, SystemMonitor, SystemSample, DEFAULT_SYSTEM_HISTORY,
};
pub use tracker::{Thresholds, Tracker};

use crate::registry::HealthStatus;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::time::{Duration, Instant};

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ProbeResult {
    /// The verdict.
    pub status: HealthStatus,
    /// How long the probe took, in milliseconds.
    pub latency_ms: f64,
    /// A short reason (`connected`, `connection refused`, `timed out after 2s`, …).
    pub reason: String,
    /// When the probe ran.
    pub checked_at: DateTime<Utc>,
}

/// A health report for one subject: the overall verdict and each probe's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    /// The worst status of the checks.
    pub status: HealthStatus,
    /// Each probe by name.
    pub checks: Vec<NamedProbeResult>,
}

/// A probe result with the probe's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct NamedProbeResult {
    /// The probe.
    pub name: String,
    /// What it found.
    pub result: ProbeResult,
}

impl HealthReport {
    /// A report of `checks`; the status is the worst of them (`passing` when empty).
    pub fn new(checks: Vec<NamedProbeResult>) -> Self {
        let status = checks
            .iter()
            .map(|c| c.result.status)
            .fold(HealthStatus::Passing, worst);
        Self { status, checks }
    }
}

/// The probe contract: check one thing, once.
#[async_trait]
pub trait HealthProbe: Send + Sync + 'static {
    /// What the probe checks, for reports.
    fn name(&self) -> &str;

    /// Check once; never panics, never hangs past the probe's own timeout.
    async fn check(&self) -> ProbeResult;
}

impl ProbeResult {
    /// A result of `status` with `reason`, measured from `started`.
    pub fn new(status: HealthStatus, reason: impl Into<String>, started: Instant) -> Self {
        Self {
            status,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            reason: reason.into(),
            checked_at: Utc::now(),
        }
    }
}

/// Run one probe attempt under `timeout`: `Ok((status, reason))` is the verdict, `Err(reason)`
/// is critical, and running out of time is critical with a `timed out after …` reason.
pub async fn timed<F>(timeout: Duration, attempt: F) -> ProbeResult
where
    F: Future<Output = std::result::Result<(HealthStatus, String), String>>,
{
    let started = Instant::now();
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok((status, reason))) => ProbeResult::new(status, reason, started),
        Ok(Err(reason)) => ProbeResult::new(HealthStatus::Critical, reason, started),
        Err(_) => ProbeResult::new(
            HealthStatus::Critical,
            format!("timed out after {}ms", timeout.as_millis()),
            started,
        ),
    }
}

/// The worst of two statuses.
pub fn worst(a: HealthStatus, b: HealthStatus) -> HealthStatus {
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

fn rank(status: HealthStatus) -> u8 {
    match status {
        HealthStatus::Passing => 0,
        HealthStatus::Warning => 1,
        HealthStatus::Critical => 2,
    }
}
