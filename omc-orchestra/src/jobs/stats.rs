//! Queue statistics: counts per state and priority, and per-minute figures over the last
//! minute and hour (throughput, failure rate, average wait and run time).

use serde::{Deserialize, Serialize};

/// Waiting jobs per priority.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PriorityCounts {
    /// High.
    pub high: u64,
    /// Normal.
    pub normal: u64,
    /// Low.
    pub low: u64,
    /// Background.
    pub background: u64,
}

impl PriorityCounts {
    /// Add one to the count of priority `rank`.
    pub fn bump(&mut self, rank: u8, by: u64) {
        *match rank {
            0 => &mut self.high,
            1 => &mut self.normal,
            2 => &mut self.low,
            _ => &mut self.background,
        } += by;
    }
}

/// What finished within a time window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Window {
    /// Jobs completed.
    pub completed: u64,
    /// Attempts that failed (retried or for good).
    pub failed: u64,
    /// Completed jobs per second over the window.
    pub throughput_per_sec: f64,
    /// Failed attempts over all finished attempts, 0 to 1.
    pub failure_rate: f64,
}

/// Counts, throughput and timings of a queue.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct JobStats {
    /// Waiting.
    pub waiting: u64,
    /// Delayed.
    pub delayed: u64,
    /// Active.
    pub active: u64,
    /// Completed (and not yet trimmed).
    pub completed: u64,
    /// Failed.
    pub failed: u64,
    /// Waiting jobs per priority.
    pub waiting_by_priority: PriorityCounts,
    /// The current clock minute (figures are kept per clock minute).
    pub last_minute: Window,
    /// The last sixty clock minutes, this one included.
    pub last_hour: Window,
    /// Average time from due to started over the last hour, in milliseconds.
    pub avg_wait_ms: f64,
    /// Average time from started to finished over the last hour, in milliseconds.
    pub avg_run_ms: f64,
}

/// What happened in one minute; both backends keep one per minute for an hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Bucket {
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    pub(crate) started: u64,
    pub(crate) wait_ms: u64,
    pub(crate) run_ms: u64,
}

impl Bucket {
    pub(crate) fn add(&mut self, other: &Bucket) {
        self.completed += other.completed;
        self.failed += other.failed;
        self.started += other.started;
        self.wait_ms += other.wait_ms;
        self.run_ms += other.run_ms;
    }
}

/// How many minutes of buckets are kept.
pub(crate) const BUCKET_MINUTES: i64 = 60;

/// Fill the windows and averages of `stats` from `(minute, bucket)` pairs, `minute` being
/// `ms / 60_000`, as of `now_ms`.
pub(crate) fn fill_windows(stats: &mut JobStats, buckets: &[(i64, Bucket)], now_ms: i64) {
    let current = now_ms.div_euclid(60_000);
    let mut minute = Bucket::default();
    let mut hour = Bucket::default();
    for (m, bucket) in buckets {
        if *m > current || *m <= current - BUCKET_MINUTES {
            continue;
        }
        hour.add(bucket);
        if *m == current {
            minute.add(bucket);
        }
    }
    stats.last_minute = window(&minute, 60.0);
    stats.last_hour = window(&hour, 3600.0);
    stats.avg_wait_ms = ratio(hour.wait_ms, hour.started);
    stats.avg_run_ms = ratio(hour.run_ms, hour.completed + hour.failed);
}

fn ratio(sum: u64, count: u64) -> f64 {
    if count == 0 {
        0.0
    } else {
        sum as f64 / count as f64
    }
}

fn window(bucket: &Bucket, seconds: f64) -> Window {
    Window {
        completed: bucket.completed,
        failed: bucket.failed,
        throughput_per_sec: bucket.completed as f64 / seconds,
        failure_rate: ratio(bucket.failed, bucket.completed + bucket.failed),
    }
}
