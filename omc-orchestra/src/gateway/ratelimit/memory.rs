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

/// Per key, each window's (window index, hits in it), in [`Window`] order.
type Slots = [(i64, u64); 4];

#[derive(Debug, Default)]
struct Counters {
    map: HashMap<String, Slots>,
    hits_since_sweep: u64,
}

fn slot(window: Window) -> usize {
    match window {
        Window::Second => 0,
        Window::Minute => 1,
        Window::Hour => 2,
        Window::Day => 3,
    }
}

const WINDOWS: [Window; 4] = [Window::Second, Window::Minute, Window::Hour, Window::Day];

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
            // Bound the map: a key whose windows all ended holds nothing worth keeping.
            counters.hits_since_sweep = 0;
            counters.map.retain(|_, slots| {
                WINDOWS
                    .iter()
                    .zip(slots.iter())
                    .any(|(window, (index, hits))| {
                        *hits > 0 && *index == window_at(now, window.millis()).0
                    })
            });
        }
        // Keys carry client input, so the map keeps its keyed hasher; a present key is
        // found with one lookup and copied only when new.
        let slots = match counters.map.get_mut(key) {
            Some(slots) => slots,
            None => counters.map.entry(key.to_owned()).or_insert([(0, 0); 4]),
        };
        Ok(limits
            .iter()
            .map(|limit| {
                let (index, reset_ms) = window_at(now, limit.window.millis());
                let entry = &mut slots[slot(limit.window)];
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
