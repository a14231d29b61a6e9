//! Rate limits in fixed windows (second, minute, hour, day) per key, counted in-process
//! ([`MemoryRateLimits`]) or in Redis shared by every replica (`RedisRateLimits`).
//!
//! A store only counts: it increments every window's counter and returns the new counts
//! (increment then compare, never read then write, so a burst cannot overshoot).
//! [`RateLimiter`] turns counts into a decision and applies the failure policy when the
//! store is unreachable.

mod memory;
#[cfg(feature = "redis")]
mod redis;

pub use memory::MemoryRateLimits;
#[cfg(feature = "redis")]
pub use redis::RedisRateLimits;

use super::config::Limits;
use crate::Result;
use async_trait::async_trait;
use std::sync::Arc;

/// A rate-limit window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    /// One second.
    Second,
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One day.
    Day,
}

impl Window {
    /// The window's length in milliseconds.
    pub fn millis(self) -> i64 {
        match self {
            Self::Second => 1_000,
            Self::Minute => 60_000,
            Self::Hour => 3_600_000,
            Self::Day => 86_400_000,
        }
    }

    /// The name used in headers (`X-RateLimit-Limit-Second`).
    pub fn title(self) -> &'static str {
        match self {
            Self::Second => "Second",
            Self::Minute => "Minute",
            Self::Hour => "Hour",
            Self::Day => "Day",
        }
    }

    /// A short tag for store keys.
    pub fn tag(self) -> &'static str {
        match self {
            Self::Second => "s",
            Self::Minute => "m",
            Self::Hour => "h",
            Self::Day => "d",
        }
    }
}

/// At most `max` requests per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The window.
    pub window: Window,
    /// Requests allowed in it.
    pub max: u64,
}

impl Limits {
    /// The configured windows as a list, shortest first.
    pub fn to_list(&self) -> Vec<Limit> {
        self.each().collect()
    }

    /// The configured windows, shortest first.
    pub fn each(&self) -> impl Iterator<Item = Limit> {
        [
            (Window::Second, self.second),
            (Window::Minute, self.minute),
            (Window::Hour, self.hour),
            (Window::Day, self.day),
        ]
        .into_iter()
        .filter_map(|(window, max)| max.map(|max| Limit { window, max }))
    }
}

/// One window's count after a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowCount {
    /// The limit counted against.
    pub limit: Limit,
    /// Hits in the current window, this one included.
    pub count: u64,
    /// Milliseconds until the window resets.
    pub reset_ms: i64,
}

impl WindowCount {
    /// Hits left in this window.
    pub fn remaining(&self) -> u64 {
        self.limit.max.saturating_sub(self.count)
    }

    /// True when this hit is within the limit.
    pub fn allowed(&self) -> bool {
        self.count <= self.limit.max
    }
}

/// Where counters live. Every backend keeps the contract checked by
/// `testkit::ratelimit`.
#[async_trait]
pub trait RateLimitStore: Send + Sync + 'static {
    /// Count one hit of `key` in each of `limits`' current windows and return the counts,
    /// in the order of `limits`.
    async fn hit(&self, key: &str, limits: &[Limit]) -> Result<Vec<WindowCount>>;
}

/// The verdict on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateDecision {
    /// Let it through.
    pub allowed: bool,
    /// Every window's count (empty when the store failed).
    pub windows: Vec<WindowCount>,
    /// The store failed and the failure policy decided.
    pub degraded: bool,
}

impl RateDecision {
    /// Seconds until the request may be retried (the longest reset among exceeded
    /// windows), at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let ms = self
            .windows
            .iter()
            .filter(|w| !w.allowed())
            .map(|w| w.reset_ms)
            .max()
            .unwrap_or(1_000);
        (ms.max(1) as u64).div_ceil(1_000)
    }

    /// The window with the fewest hits left (the one `RateLimit-*` headers describe).
    pub fn tightest(&self) -> Option<&WindowCount> {
        self.windows.iter().min_by_key(|w| w.remaining())
    }
}

/// Rate limiting over a [`RateLimitStore`] with a failure policy.
#[derive(Clone)]
pub struct RateLimiter {
    store: Arc<dyn RateLimitStore>,
    fail_open: bool,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("fail_open", &self.fail_open)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter over `store`; when the store fails, requests pass if `fail_open`.
    pub fn new(store: Arc<dyn RateLimitStore>, fail_open: bool) -> Self {
        Self { store, fail_open }
    }

    /// Count a request of `key` against `limits` and decide.
    pub async fn check(&self, key: &str, limits: &[Limit]) -> RateDecision {
        if limits.is_empty() {
            return RateDecision {
                allowed: true,
                windows: Vec::new(),
                degraded: false,
            };
        }
        match self.store.hit(key, limits).await {
            Ok(windows) => RateDecision {
                allowed: windows.iter().all(WindowCount::allowed),
                windows,
                degraded: false,
            },
            Err(err) => {
                tracing::warn!(error = %err, fail_open = self.fail_open, "rate-limit store unavailable");
                RateDecision {
                    allowed: self.fail_open,
                    windows: Vec::new(),
                    degraded: true,
                }
            }
        }
    }
}

/// The start of the window of length `millis` that holds `now_ms`, and the ms left in it.
pub(crate) fn window_at(now_ms: i64, millis: i64) -> (i64, i64) {
    let index = now_ms.div_euclid(millis);
    (index, (index + 1) * millis - now_ms)
}
