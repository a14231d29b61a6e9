//! Cached answers in process.

use super::{CacheConfig, CacheKey, CacheStore, CachedResponse};
use crate::{Result, SharedClock};
use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::HashMap;

#[derive(Debug)]
struct Slot {
    vary: Vec<String>,
    variants: HashMap<String, CachedResponse>,
}

/// Entries in a map, at most `max_entries` of them (expired ones go first).
#[derive(Debug)]
pub struct MemoryCacheStore {
    config: CacheConfig,
    clock: SharedClock,
    slots: Mutex<HashMap<(String, String), Slot>>,
}

impl MemoryCacheStore {
    /// An empty store bounded by `config`; `clock` finds expired entries to evict.
    pub fn new(config: CacheConfig, clock: SharedClock) -> Self {
        Self {
            config,
            clock,
            slots: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl CacheStore for MemoryCacheStore {
    async fn vary(&self, key: &CacheKey) -> Result<Option<Vec<String>>> {
        let slots = self.slots.lock();
        Ok(slots
            .get(&(key.route.clone(), key.base()))
            .map(|slot| slot.vary.clone()))
    }

    async fn get(&self, key: &CacheKey, variant: &str) -> Result<Option<CachedResponse>> {
        let slots = self.slots.lock();
        Ok(slots
            .get(&(key.route.clone(), key.base()))
            .and_then(|slot| slot.variants.get(variant).cloned()))
    }

    async fn put(
        &self,
        key: &CacheKey,
        vary: &[String],
        variant: &str,
        entry: &CachedResponse,
    ) -> Result<()> {
        let now = self.clock.now_ms();
        let mut slots = self.slots.lock();
        let count: usize = slots.values().map(|s| s.variants.len()).sum();
        if count >= self.config.max_entries {
            for slot in slots.values_mut() {
                slot.variants.retain(|_, e| e.expires_ms > now);
            }
            slots.retain(|_, slot| !slot.variants.is_empty());
            let count: usize = slots.values().map(|s| s.variants.len()).sum();
            if count >= self.config.max_entries {
                if let Some(victim) = slots.keys().next().cloned() {
                    slots.remove(&victim);
                }
            }
        }
        let slot = slots
            .entry((key.route.clone(), key.base()))
            .or_insert_with(|| Slot {
                vary: vary.to_vec(),
                variants: HashMap::new(),
            });
        if slot.vary != vary {
            // The upstream varies on other headers now: old variants mean nothing.
            slot.vary = vary.to_vec();
            slot.variants.clear();
        }
        slot.variants.insert(variant.to_owned(), entry.clone());
        Ok(())
    }

    async fn purge(&self, route: &str, path: Option<&str>) -> Result<usize> {
        let mut slots = self.slots.lock();
        let mut purged = 0;
        slots.retain(|(r, base), slot| {
            let matches =
                r == route && path.is_none_or(|p| base.split_once('\n').map(|(_, b)| b) == Some(p));
            if matches {
                purged += slot.variants.len();
            }
            !matches
        });
        Ok(purged)
    }
}
