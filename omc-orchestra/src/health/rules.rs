//! Alert rules in the style of Prometheus: a metric, a threshold, a `for` duration and a
//! separate clear threshold.

use super::Labels;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// The longest `forSeconds` and `repeatSeconds` a rule may have: 30 days. Longer would
/// never matter to an alert, and the bound keeps the time arithmetic far from overflow.
pub const MAX_RULE_SECONDS: u64 = 30 * 24 * 3600;

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Needs attention soon.
    Warning,
    /// Needs attention now.
    Critical,
}

/// Which side of the threshold is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Comparison {
    /// Bad when the value is above the threshold (CPU, memory).
    Above,
    /// Bad when the value is below the threshold (free disk).
    Below,
}

/// One alert rule.
///
/// A series whose value crosses `threshold` is *pending*; if it stays across for
/// `forSeconds` the alert *fires* (once). It resolves (once) only when the value crosses
/// back past `clear`, so a value wobbling between the two never flaps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AlertRule {
    /// Rule name (`HighCpu`).
    pub name: String,
    /// The metric it watches (`cpu_usage_percent`).
    pub metric: String,
    /// Which side is bad.
    pub comparison: Comparison,
    /// The firing threshold.
    pub threshold: f64,
    /// The clear threshold (defaults to `threshold`); on the good side of it.
    #[serde(default)]
    pub clear: Option<f64>,
    /// How long the value must stay bad before the alert fires.
    #[serde(default)]
    pub for_seconds: u64,
    /// Send a firing alert again this often while it keeps firing (never when absent).
    #[serde(default)]
    pub repeat_seconds: Option<u64>,
    /// Severity.
    pub severity: Severity,
    /// What the alert says.
    #[serde(default)]
    pub summary: String,
    /// Only series carrying all these labels.
    #[serde(default)]
    pub matchers: Labels,
}

impl AlertRule {
    /// A rule firing at once when `metric` goes `comparison` `threshold`.
    pub fn new(
        name: impl Into<String>,
        metric: impl Into<String>,
        comparison: Comparison,
        threshold: f64,
        severity: Severity,
    ) -> Self {
        Self {
            name: name.into(),
            metric: metric.into(),
            comparison,
            threshold,
            clear: None,
            for_seconds: 0,
            repeat_seconds: None,
            severity,
            summary: String::new(),
            matchers: Labels::new(),
        }
    }

    /// With a clear threshold.
    pub fn clear_at(mut self, clear: f64) -> Self {
        self.clear = Some(clear);
        self
    }

    /// With a `for` duration in seconds.
    pub fn for_secs(mut self, seconds: u64) -> Self {
        self.for_seconds = seconds;
        self
    }

    /// With a repeat interval in seconds.
    pub fn repeat_secs(mut self, seconds: u64) -> Self {
        self.repeat_seconds = Some(seconds);
        self
    }

    /// With a summary.
    pub fn summary(mut self, summary: impl Into<String>) -> Self {
        self.summary = summary.into();
        self
    }

    /// Check the rule; the error names the wrong field.
    pub fn validate(&self) -> Result<()> {
        if self.name.trim().is_empty() {
            return Err(Error::invalid("name", "must not be empty"));
        }
        if self.metric.trim().is_empty() {
            return Err(Error::invalid("metric", "must not be empty"));
        }
        if !self.threshold.is_finite() {
            return Err(Error::invalid("threshold", "must be a finite number"));
        }
        let clear = self.clear_threshold();
        let wrong_side = match self.comparison {
            Comparison::Above => clear > self.threshold,
            Comparison::Below => clear < self.threshold,
        };
        if !clear.is_finite() || wrong_side {
            return Err(Error::invalid(
                "clear",
                "must be on the good side of the threshold",
            ));
        }
        let too_long = |field| {
            Error::invalid(
                field,
                format!("must be at most {MAX_RULE_SECONDS} (30 days)"),
            )
        };
        if self.for_seconds > MAX_RULE_SECONDS {
            return Err(too_long("forSeconds"));
        }
        if self.repeat_seconds.is_some_and(|r| r > MAX_RULE_SECONDS) {
            return Err(too_long("repeatSeconds"));
        }
        Ok(())
    }

    /// The clear threshold.
    pub fn clear_threshold(&self) -> f64 {
        self.clear.unwrap_or(self.threshold)
    }

    /// Whether `value` is bad.
    pub fn breached(&self, value: f64) -> bool {
        match self.comparison {
            Comparison::Above => value > self.threshold,
            Comparison::Below => value < self.threshold,
        }
    }

    /// Whether `value` is good enough to resolve a firing alert.
    pub fn cleared(&self, value: f64) -> bool {
        match self.comparison {
            Comparison::Above => value < self.clear_threshold(),
            Comparison::Below => value > self.clear_threshold(),
        }
    }

    /// Whether a series with `labels` is this rule's.
    pub fn selects(&self, metric: &str, labels: &Labels) -> bool {
        self.metric == metric
            && self
                .matchers
                .iter()
                .all(|(k, v)| labels.get(k).is_some_and(|l| l == v))
    }
}

/// The rules every deployment starts with.
///
/// `job_consecutive_failures` is fed by whatever runs jobs, through
/// [`AlertEngine::observe`](super::AlertEngine::observe) with a `type` label;
/// `event_group_lag` by whatever reads the event bus stats (the registry server), with a
/// `group` label.
pub fn builtin_rules() -> Vec<AlertRule> {
    vec![
        AlertRule::new(
            "HighCpu",
            "cpu_usage_percent",
            Comparison::Above,
            90.0,
            Severity::Warning,
        )
        .clear_at(80.0)
        .for_secs(300)
        .summary("CPU usage above 90%"),
        AlertRule::new(
            "HighMemory",
            "memory_usage_percent",
            Comparison::Above,
            90.0,
            Severity::Warning,
        )
        .clear_at(85.0)
        .for_secs(300)
        .summary("memory usage above 90%"),
        AlertRule::new(
            "LowDisk",
            "disk_free_percent",
            Comparison::Below,
            5.0,
            Severity::Critical,
        )
        .clear_at(8.0)
        .for_secs(60)
        .summary("less than 5% disk space free"),
        AlertRule::new(
            "ServiceUnavailable",
            "instance_critical",
            Comparison::Above,
            0.5,
            Severity::Critical,
        )
        .summary("a service instance is failing its health checks"),
        AlertRule::new(
            "DatabaseUnreachable",
            "dependency_critical",
            Comparison::Above,
            0.5,
            Severity::Critical,
        )
        .summary("a dependency (database, cache, external service) is unreachable"),
        AlertRule::new(
            "JobTypeFailing",
            "job_consecutive_failures",
            Comparison::Above,
            4.5,
            Severity::Critical,
        )
        .clear_at(0.5)
        .summary("a job type failed 5 times in a row"),
        AlertRule::new(
            "EventConsumerLagging",
            "event_group_lag",
            Comparison::Above,
            1000.0,
            Severity::Warning,
        )
        .clear_at(100.0)
        .for_secs(300)
        .summary("a consumer group is more than 1000 events behind for 5 minutes"),
    ]
}
