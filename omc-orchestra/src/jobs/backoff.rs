//! Retry backoff: fixed or exponential, with optional jitter.

use serde::{Deserialize, Serialize};

/// How long to wait before a failed job runs again.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Backoff {
    /// `fixed` waits `delayMs` each time; `exponential` doubles it per attempt.
    #[serde(rename = "type", default)]
    pub kind: BackoffKind,
    /// The first (or every, when fixed) wait in milliseconds.
    #[serde(default = "default_backoff_ms")]
    pub delay_ms: u64,
    /// Up to this fraction (0 to 1) of each wait is taken off at random, so retries of
    /// many jobs that failed together spread out.
    #[serde(default)]
    pub jitter: f64,
}

fn default_backoff_ms() -> u64 {
    1000
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            kind: BackoffKind::Exponential,
            delay_ms: default_backoff_ms(),
            jitter: 0.0,
        }
    }
}

/// The shape of a [`Backoff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum BackoffKind {
    /// The same wait every time.
    Fixed,
    /// `delayMs × 2^(attempt − 1)`.
    #[default]
    Exponential,
}

/// Longest wait a backoff gives, whatever the attempt.
pub const MAX_BACKOFF_MS: u64 = 24 * 3_600_000;

impl Backoff {
    /// The wait after failed attempt number `attempt` (1-based); `random` in `[0, 1)`
    /// takes off up to `jitter` of it. Both backends use exactly this formula (the Redis
    /// scripts repeat it in Lua).
    pub fn delay_ms(&self, attempt: u32, random: f64) -> u64 {
        let base = match self.kind {
            BackoffKind::Fixed => self.delay_ms,
            BackoffKind::Exponential => {
                let exp = attempt.saturating_sub(1).min(40);
                self.delay_ms.saturating_mul(1u64 << exp)
            }
        }
        .min(MAX_BACKOFF_MS);
        let cut = (base as f64 * self.jitter.clamp(0.0, 1.0) * random.clamp(0.0, 1.0)).floor();
        base.saturating_sub(cut as u64)
    }
}
