//! In-process counters: exact for one gateway, not shared between replicas.

use super::{window_at, Limit, RateLimitStore, Window, WindowCount};
use crate::{Result, SharedClock};
use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::HashMap;

/// Counters in a map, one per key and window; old windows are dropped as time passes.
#[derive(Debug)]
pub struct MemoryRateLimits {
    clock: SharedClock,
    counters: Mutex<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    map: HashMap<(String, Window), (i64, u64)>,
    hits_since_sweep: u64,
}

const SWEEP_EVERY: u64 = 10_000;

impl MemoryRateLimits {
    /// Counters timed by `clock`.
    pub fn new(clock: SharedClock) -> Self {
        Self {
            clock,
            counters: Mutex::new(Counters::default()),
        }
    }
}

#[async_trait]
impl RateLimitStore for MemoryRateLimits {
    async fn hit(&self, key: &str, limits: &[Limit]) -> Result<Vec<WindowCount>> {
        let now = self.clock.now_ms();
        let mut counters = self.counters.lock();
        counters.hits_since_sweep += 1;
        if counters.hits_since_sweep >= SWEEP_EVERY {
            // Bound the map: windows that ended hold nothing worth keeping.
            counters.hits_since_sweep = 0;
            counters
                .map
                .retain(|(_, window), (index, _)| *index == window_at(now, window.millis()).0);
        }
        Ok(limits
            .iter()
            .map(|limit| {
                let (index, reset_ms) = window_at(now, limit.window.millis());
                let entry = counters
                    .map
                    .entry((key.to_owned(), limit.window))
                    .or_insert((index, 0));
                if entry.0 != index {
                    *entry = (index, 0);
                }
                entry.1 += 1;
                WindowCount {
                    limit: *limit,
                    count: entry.1,
                    reset_ms,
                }
            })
            .collect())
    }
}
