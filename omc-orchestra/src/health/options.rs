//! The checker's options and what it reports about each instance and dependency.

use super::{ProbeResult, Thresholds, Tracker};
use crate::redact::redact;
use crate::registry::HealthStatus;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// How the checker runs.
#[derive(Clone)]
pub struct CheckerOptions {
    /// Default probe interval (30 s); metadata `healthInterval` overrides it per service.
    pub interval: Duration,
    /// Default probe timeout (5 s); metadata `healthTimeout` overrides it per service.
    pub timeout: Duration,
    /// Rise/fall thresholds.
    pub thresholds: Thresholds,
    /// Most probes in flight at once (32).
    pub concurrency: usize,
    /// Probe results kept per instance (20).
    pub history: usize,
    /// Addresses of named dependencies (`postgres` → `postgres://…`, `redis` → `redis://…`).
    pub dependencies: BTreeMap<String, String>,
}

impl Default for CheckerOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            thresholds: Thresholds::default(),
            concurrency: 32,
            history: 20,
            dependencies: BTreeMap::new(),
        }
    }
}

impl std::fmt::Debug for CheckerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Dependency addresses may carry passwords.
        let dependencies: BTreeMap<&str, String> = self
            .dependencies
            .iter()
            .map(|(name, address)| (name.as_str(), redact(address)))
            .collect();
        f.debug_struct("CheckerOptions")
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("thresholds", &self.thresholds)
            .field("concurrency", &self.concurrency)
            .field("history", &self.history)
            .field("dependencies", &dependencies)
            .finish()
    }
}

/// What the checker knows about one instance (or dependency).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct InstanceHealthView {
    /// The checker's verdict.
    pub status: HealthStatus,
    /// Since when the verdict holds.
    pub since: DateTime<Utc>,
    /// Probes run so far.
    pub checks_total: u64,
    /// Probes that were not passing.
    pub failures_total: u64,
    /// Share of the kept results that were not passing.
    pub error_rate: f64,
    /// Mean probe latency of the kept results, in milliseconds.
    pub mean_latency_ms: f64,
    /// The last probe results, oldest first.
    pub results: Vec<ProbeResult>,
}

/// A dependency's health.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DependencyHealth {
    /// The dependency's name (`postgres`, `redis`, or its URL), its password masked.
    pub name: String,
    /// Where it is probed, its password masked (`redis://:***@cache:6379`).
    pub address: String,
    /// What the probes found.
    pub health: InstanceHealthView,
}

impl InstanceHealthView {
    /// The view of what `tracker` holds.
    pub fn from_tracker(tracker: &Tracker) -> Self {
        Self {
            status: tracker.status(),
            since: tracker.since(),
            checks_total: tracker.checks_total(),
            failures_total: tracker.failures_total(),
            error_rate: tracker.error_rate(),
            mean_latency_ms: tracker.mean_latency_ms(),
            results: tracker.history().cloned().collect(),
        }
    }
}

/// Parse `30`, `30s`, `500ms` or `2m`.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = number.parse().ok()?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        _ => return None,
    };
    (!d.is_zero()).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("0"), None);
        assert_eq!(parse_duration("soon"), None);
    }

    #[test]
    fn debug_output_masks_dependency_passwords() {
        let mut options = CheckerOptions::default();
        options
            .dependencies
            .insert("redis".into(), "redis://:hunter2@cache:6379".into());
        let shown = format!("{options:?}");
        assert!(shown.contains("redis://:***@cache:6379"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
