//! Stats over a window: counts, error rate, top errors and duration percentiles.
//!
//! Both backends feed the records of the window to one [`StatsBuilder`], so the numbers
//! are computed the same way everywhere.

use super::model::{LogCategory, LogLevel, LogRecord};
use super::query::LogQuery;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Top error messages reported when the query does not say.
pub const DEFAULT_TOP: usize = 10;

/// What to compute stats over: the records `filter` matches (its `since`/`until` are the
/// window; limit and cursor are ignored).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsQuery {
    /// Which records count.
    #[serde(flatten)]
    pub filter: LogQuery,
    /// How many top error messages to report (default [`DEFAULT_TOP`]).
    pub top: Option<usize>,
}

/// An error message shape and how often it occurred.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TopError {
    /// The message with numbers, ids and UUIDs replaced (`Order <id> failed after <n> ms`).
    pub message: String,
    /// Occurrences in the window.
    pub count: u64,
    /// The most recently written message of this shape, as logged.
    pub example: String,
}

/// Percentiles of one numeric field (nearest-rank: the smallest value with at least p %
/// of the values at or below it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct FieldPercentiles {
    /// Values seen.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// Largest value.
    pub max: f64,
}

/// Stats over a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LogStats {
    /// Records in the window.
    pub total: u64,
    /// Records per level.
    pub by_level: BTreeMap<LogLevel, u64>,
    /// Records per category.
    pub by_category: BTreeMap<LogCategory, u64>,
    /// Records per service.
    pub by_service: BTreeMap<String, u64>,
    /// Share of records at level `error` (0 when there are none).
    pub error_rate: f64,
    /// The most frequent error messages, grouped by normalised message, most frequent
    /// first (ties by message).
    pub top_errors: Vec<TopError>,
    /// Percentiles of every duration-like numeric field (see [`is_duration_like`]).
    pub durations: BTreeMap<String, FieldPercentiles>,
}

/// Whether a field name looks like a duration: it contains `duration`, `time`,
/// `latency` or `elapsed` (ignoring case), or ends in `Ms`; `timestamp` does not count.
pub fn is_duration_like(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower != "timestamp"
        && (lower.contains("duration")
            || lower.contains("time")
            || lower.contains("latency")
            || lower.contains("elapsed")
            || name.ends_with("Ms"))
}

/// Replace what varies between occurrences of one error (UUIDs, numbers, ids with
/// digits) so they group: `Order ORD-123 failed after 30 ms` → `Order <id> failed after
/// <n> ms`.
pub fn normalise_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        if !token.is_empty() {
            out.push_str(classify(token));
            token.clear();
        }
    };
    for c in message.chars() {
        if c.is_alphanumeric() || c == '-' || c == '_' || c == '.' {
            token.push(c);
        } else {
            flush(&mut token, &mut out);
            out.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

fn classify(token: &str) -> &str {
    let trimmed = token.trim_end_matches('.');
    let tail = &token[trimmed.len()..];
    let kind = if is_uuid(trimmed) {
        Some("<uuid>")
    } else if !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_digit() || c == '.') {
        Some("<n>")
    } else if trimmed.chars().any(|c| c.is_ascii_digit()) {
        Some("<id>")
    } else {
        None
    };
    match (kind, tail.is_empty()) {
        (Some(kind), true) => kind,
        (Some("<uuid>"), false) => "<uuid>.",
        (Some("<n>"), false) => "<n>.",
        (Some(_), false) => "<id>.",
        (None, _) => token,
    }
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Accumulates records into [`LogStats`].
#[derive(Debug, Default)]
pub struct StatsBuilder {
    stats: LogStats,
    errors: HashMap<String, (u64, String)>,
    values: BTreeMap<String, Vec<f64>>,
}

impl StatsBuilder {
    /// Count one record; feed records newest first so examples are the newest.
    pub fn add(&mut self, record: &LogRecord) {
        let s = &mut self.stats;
        s.total += 1;
        *s.by_level.entry(record.level).or_default() += 1;
        *s.by_category.entry(record.category).or_default() += 1;
        *s.by_service.entry(record.service.clone()).or_default() += 1;
        if record.level == LogLevel::Error {
            let entry = self
                .errors
                .entry(normalise_message(&record.message))
                .or_insert_with(|| (0, record.message.clone()));
            entry.0 += 1;
        }
        for (name, value) in &record.fields {
            if let Some(v) = value.as_f64().filter(|v| v.is_finite()) {
                if is_duration_like(name) {
                    self.values.entry(name.clone()).or_default().push(v);
                }
            }
        }
    }

    /// The stats, with the `top` most frequent error messages.
    pub fn finish(mut self, top: usize) -> LogStats {
        let errors = self
            .stats
            .by_level
            .get(&LogLevel::Error)
            .copied()
            .unwrap_or(0);
        if self.stats.total > 0 {
            self.stats.error_rate = errors as f64 / self.stats.total as f64;
        }
        let mut top_errors: Vec<TopError> = self
            .errors
            .into_iter()
            .map(|(message, (count, example))| TopError {
                message,
                count,
                example,
            })
            .collect();
        top_errors.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.message.cmp(&b.message))
        });
        top_errors.truncate(top);
        self.stats.top_errors = top_errors;
        for (name, mut values) in self.values {
            values.sort_by(f64::total_cmp);
            let rank = |p: f64| {
                let n = values.len();
                let index = ((p / 100.0) * n as f64).ceil() as usize;
                values[index.clamp(1, n) - 1]
            };
            let summary = FieldPercentiles {
                count: values.len() as u64,
                p50: rank(50.0),
                p95: rank(95.0),
                max: values[values.len() - 1],
            };
            self.stats.durations.insert(name, summary);
        }
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_numbers_ids_and_uuids() {
        assert_eq!(
            normalise_message("Order ORD-123 failed after 30 ms"),
            "Order <id> failed after <n> ms"
        );
        assert_eq!(
            normalise_message("job 0b6f2a7e-3c1d-4f7a-9a55-2b1f6c3d9e10 died: 1.5s."),
            "job <uuid> died: <id>."
        );
        assert_eq!(
            normalise_message("station STN001 offline."),
            "station <id> offline."
        );
        assert_eq!(normalise_message("retry 3."), "retry <n>.");
    }

    #[test]
    fn duration_like_names() {
        assert!(is_duration_like("duration"));
        assert!(is_duration_like("calculationTime"));
        assert!(is_duration_like("latencyMs"));
        assert!(!is_duration_like("timestamp"));
        assert!(!is_duration_like("newPrice"));
    }
}
