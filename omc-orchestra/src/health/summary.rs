//! What a dashboard shows first: instances by status, distinct services, the host, firing
//! alerts and the probes' figures, in one call the HTTP API and the WebSocket share.

use super::{
    AlertEngine, AlertState, DependencyHealth, HealthChecker, SystemMonitor, SystemSample,
};
use crate::registry::{HealthStatus, Registry, ServiceFilter, ServiceInstance};
use crate::Result;
use serde::Serialize;
use std::collections::BTreeSet;

/// Instances by effective status.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ServiceCounts {
    /// All registered instances.
    pub total: usize,
    /// Passing.
    pub passing: usize,
    /// Warning (degraded, still served).
    pub warning: usize,
    /// Critical (not served).
    pub critical: usize,
}

impl ServiceCounts {
    /// Count `instances` by their effective status.
    pub fn of(instances: &[ServiceInstance]) -> Self {
        let mut counts = Self {
            total: instances.len(),
            ..Self::default()
        };
        for instance in instances {
            match instance.status {
                HealthStatus::Passing => counts.passing += 1,
                HealthStatus::Warning => counts.warning += 1,
                HealthStatus::Critical => counts.critical += 1,
            }
        }
        counts
    }
}

/// The figures behind the system dashboard.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct HealthSummary {
    /// Instances by status.
    pub services: ServiceCounts,
    /// Distinct service names (a service of five instances counts once).
    pub service_names: usize,
    /// The newest host sample.
    pub system: Option<SystemSample>,
    /// Alerts firing now.
    pub alerts_firing: usize,
    /// Dependencies and what their probes found.
    pub dependencies: Vec<DependencyHealth>,
    /// Mean health-probe response time over the probed instances, in milliseconds.
    pub mean_probe_latency_ms: f64,
    /// Share of recent health probes that failed, over the probed instances.
    pub probe_error_rate: f64,
}

/// The engines a summary reads; each is optional, so a process that runs only some of
/// them (the WebSocket hub has the registry alone) still gets the rest.
#[derive(Debug, Clone, Copy, Default)]
pub struct SummarySources<'a> {
    /// Probe figures and dependencies.
    pub checker: Option<&'a HealthChecker>,
    /// The newest host sample.
    pub monitor: Option<&'a SystemMonitor>,
    /// Firing alerts.
    pub alerts: Option<&'a AlertEngine>,
}

/// Summarise the registry and `sources` (one listing of the registry).
pub async fn summarize(
    registry: &dyn Registry,
    sources: SummarySources<'_>,
) -> Result<HealthSummary> {
    let all = registry.list(&ServiceFilter::default()).await?;
    let names: BTreeSet<&str> = all.iter().map(|i| i.name.as_str()).collect();
    let (mut latency, mut errors, mut probed) = (0.0, 0.0, 0usize);
    if let Some(checker) = sources.checker {
        for instance in &all {
            if let Some(view) = checker.instance(&instance.id) {
                if !view.results.is_empty() {
                    latency += view.mean_latency_ms;
                    errors += view.error_rate;
                    probed += 1;
                }
            }
        }
    }
    let mean = |sum: f64| {
        if probed == 0 {
            0.0
        } else {
            sum / probed as f64
        }
    };
    Ok(HealthSummary {
        services: ServiceCounts::of(&all),
        service_names: names.len(),
        system: sources.monitor.and_then(SystemMonitor::latest),
        alerts_firing: sources.alerts.map_or(0, |alerts| {
            alerts
                .active()
                .iter()
                .filter(|a| a.state == AlertState::Firing)
                .count()
        }),
        dependencies: sources
            .checker
            .map(HealthChecker::dependencies)
            .unwrap_or_default(),
        mean_probe_latency_ms: mean(latency),
        probe_error_rate: mean(errors),
    })
}
