//! Rise/fall thresholds and the last probe results of one subject.

use super::ProbeResult;
use crate::registry::HealthStatus;
use chrono::{DateTime, Utc};
use std::collections::VecDeque;

/// How many results in a row change a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Passing results in a row that make an unhealthy subject passing again (2).
    pub rise: u32,
    /// Failing results in a row that make a passing subject warning or critical (3).
    pub fall: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self { rise: 2, fall: 3 }
    }
}

/// The verdict of one subject (an instance or a dependency) and its recent results.
///
/// A single blip changes nothing: the verdict moves to passing only after `rise` passes in
/// a row, and away from passing only after `fall` failures in a row.
#[derive(Debug, Clone)]
pub struct Tracker {
    status: HealthStatus,
    since: DateTime<Utc>,
    passes: u32,
    failures: u32,
    history: VecDeque<ProbeResult>,
    keep: usize,
    checks_total: u64,
    failures_total: u64,
}

impl Tracker {
    /// A tracker that starts at `status` at `now`, keeping the last `keep` results.
    pub fn new(status: HealthStatus, now: DateTime<Utc>, keep: usize) -> Self {
        Self {
            status,
            since: now,
            passes: 0,
            failures: 0,
            history: VecDeque::with_capacity(keep.min(64)),
            keep: keep.max(1),
            checks_total: 0,
            failures_total: 0,
        }
    }

    /// Record `result`; returns the new verdict when it changed.
    pub fn record(&mut self, result: ProbeResult, thresholds: Thresholds) -> Option<HealthStatus> {
        let now = result.checked_at;
        let observed = result.status;
        self.checks_total += 1;
        if self.history.len() >= self.keep {
            self.history.pop_front();
        }
        self.history.push_back(result);
        let next = if observed == HealthStatus::Passing {
            self.passes += 1;
            self.failures = 0;
            (self.status != HealthStatus::Passing && self.passes >= thresholds.rise)
                .then_some(HealthStatus::Passing)
        } else {
            self.failures_total += 1;
            self.failures += 1;
            self.passes = 0;
            (self.failures >= thresholds.fall && self.status != observed).then_some(observed)
        };
        if let Some(status) = next {
            self.status = status;
            self.since = now;
        }
        next
    }

    /// Adopt `status` without a probe (the registry says otherwise, e.g. re-registration).
    pub fn reset(&mut self, status: HealthStatus, now: DateTime<Utc>) {
        if self.status != status {
            self.status = status;
            self.since = now;
            self.passes = 0;
            self.failures = 0;
        }
    }

    /// The current verdict.
    pub fn status(&self) -> HealthStatus {
        self.status
    }

    /// Since when the verdict holds.
    pub fn since(&self) -> DateTime<Utc> {
        self.since
    }

    /// The last results, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &ProbeResult> {
        self.history.iter()
    }

    /// Probes recorded so far.
    pub fn checks_total(&self) -> u64 {
        self.checks_total
    }

    /// Probes that were not passing.
    pub fn failures_total(&self) -> u64 {
        self.failures_total
    }

    /// Share of the kept results that were not passing (0 when none were kept).
    pub fn error_rate(&self) -> f64 {
        if self.history.is_empty() {
            return 0.0;
        }
        let bad = self
            .history
            .iter()
            .filter(|r| r.status != HealthStatus::Passing)
            .count();
        bad as f64 / self.history.len() as f64
    }

    /// Mean latency of the kept results, in milliseconds.
    pub fn mean_latency_ms(&self) -> f64 {
        if self.history.is_empty() {
            return 0.0;
        }
        self.history.iter().map(|r| r.latency_ms).sum::<f64>() / self.history.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(status: HealthStatus) -> ProbeResult {
        ProbeResult {
            status,
            latency_ms: 1.0,
            reason: String::new(),
            checked_at: Utc::now(),
        }
    }

    #[test]
    fn three_failures_go_critical_once_and_two_passes_recover() {
        let t = Thresholds::default();
        let mut tracker = Tracker::new(HealthStatus::Passing, Utc::now(), 5);
        assert_eq!(tracker.record(result(HealthStatus::Critical), t), None);
        assert_eq!(tracker.record(result(HealthStatus::Critical), t), None);
        assert_eq!(
            tracker.record(result(HealthStatus::Critical), t),
            Some(HealthStatus::Critical)
        );
        assert_eq!(tracker.record(result(HealthStatus::Critical), t), None);
        assert_eq!(tracker.record(result(HealthStatus::Passing), t), None);
        assert_eq!(
            tracker.record(result(HealthStatus::Passing), t),
            Some(HealthStatus::Passing)
        );
        assert_eq!(tracker.history().count(), 5);
        assert_eq!(tracker.checks_total(), 6);
    }

    #[test]
    fn a_single_blip_changes_nothing() {
        let t = Thresholds::default();
        let mut tracker = Tracker::new(HealthStatus::Passing, Utc::now(), 10);
        for status in [
            HealthStatus::Passing,
            HealthStatus::Critical,
            HealthStatus::Passing,
            HealthStatus::Critical,
            HealthStatus::Critical,
            HealthStatus::Passing,
        ] {
            assert_eq!(tracker.record(result(status), t), None);
        }
        assert_eq!(tracker.status(), HealthStatus::Passing);
    }
}
