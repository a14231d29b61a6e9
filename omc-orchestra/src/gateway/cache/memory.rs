//! Cached answers in process, bounded by entry count and by bytes.

use super::{CacheConfig, CacheKey, CacheStore, CachedResponse};
use crate::{Result, SharedClock};
use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::HashMap;

/// One stored variant and when it was last used.
#[derive(Debug)]
struct Stored {
    entry: CachedResponse,
    bytes: usize,
    used: u64,
}

#[derive(Debug)]
struct Slot {
    vary: Vec<String>,
    variants: HashMap<String, Stored>,
}

#[derive(Debug, Default)]
struct Slots {
    map: HashMap<(String, String), Slot>,
    entries: usize,
    bytes: usize,
    /// A counter standing for time in the least-recently-used order.
    tick: u64,
}

impl Slots {
    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// Drop variants for which `gone` holds, keeping the totals right.
    fn drop_where(&mut self, mut gone: impl FnMut(&(String, String), &str, &Stored) -> bool) {
        let (mut entries, mut bytes) = (0, 0);
        for (key, slot) in self.map.iter_mut() {
            slot.variants.retain(|variant, stored| {
                let keep = !gone(key, variant, stored);
                if keep {
                    entries += 1;
                    bytes += stored.bytes;
                }
                keep
            });
        }
        self.map.retain(|_, slot| !slot.variants.is_empty());
        (self.entries, self.bytes) = (entries, bytes);
    }

    /// The least recently used variant.
    fn coldest(&self) -> Option<((String, String), String)> {
        self.map
            .iter()
            .flat_map(|(key, slot)| slot.variants.iter().map(move |(v, s)| (key, v, s.used)))
            .min_by_key(|(_, _, used)| *used)
            .map(|(key, variant, _)| (key.clone(), variant.clone()))
    }

    fn remove(&mut self, key: &(String, String), variant: &str) {
        if let Some(slot) = self.map.get_mut(key) {
            if let Some(stored) = slot.variants.remove(variant) {
                self.entries -= 1;
                self.bytes -= stored.bytes;
            }
            if slot.variants.is_empty() {
                self.map.remove(key);
            }
        }
    }
}

/// Entries in a map, at most `max_entries` of them and `max_bytes` in all: expired ones
/// go first, then the least recently used. A byte budget as well as a count, since a
/// count alone let ten thousand answers of a MiB each hold ten GiB.
#[derive(Debug)]
pub struct MemoryCacheStore {
    config: CacheConfig,
    clock: SharedClock,
    slots: Mutex<Slots>,
}

impl MemoryCacheStore {
    /// An empty store bounded by `config`; `clock` finds expired entries to evict.
    pub fn new(config: CacheConfig, clock: SharedClock) -> Self {
        Self {
            config,
            clock,
            slots: Mutex::new(Slots::default()),
        }
    }

    /// How many variants are stored and how many bytes they count for.
    pub fn usage(&self) -> (usize, usize) {
        let slots = self.slots.lock();
        (slots.entries, slots.bytes)
    }
}

/// What an entry costs: its body, headers and keys.
fn size_of(key: &CacheKey, variant: &str, entry: &CachedResponse) -> usize {
    let headers: usize = entry
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    entry.body.len()
        + headers
        + key.route.len()
        + key.consumer.len()
        + key.path.len()
        + variant.len()
}

#[async_trait]
impl CacheStore for MemoryCacheStore {
    async fn vary(&self, key: &CacheKey) -> Result<Option<Vec<String>>> {
        let slots = self.slots.lock();
        Ok(slots
            .map
            .get(&(key.route.clone(), key.base()))
            .map(|slot| slot.vary.clone()))
    }

    async fn get(&self, key: &CacheKey, variant: &str) -> Result<Option<CachedResponse>> {
        let mut slots = self.slots.lock();
        let tick = slots.next_tick();
        Ok(slots
            .map
            .get_mut(&(key.route.clone(), key.base()))
            .and_then(|slot| slot.variants.get_mut(variant))
            .map(|stored| {
                stored.used = tick;
                stored.entry.clone()
            }))
    }

    async fn put(
        &self,
        key: &CacheKey,
        vary: &[String],
        variant: &str,
        entry: &CachedResponse,
    ) -> Result<()> {
        let bytes = size_of(key, variant, entry);
        if bytes > self.config.max_bytes {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let slot_key = (key.route.clone(), key.base());
        let mut slots = self.slots.lock();
        // The same variant again replaces itself; a new `Vary` replaces every variant.
        let stale: Vec<String> = match slots.map.get(&slot_key) {
            Some(slot) if slot.vary != vary => slot.variants.keys().cloned().collect(),
            Some(slot) if slot.variants.contains_key(variant) => vec![variant.to_owned()],
            _ => Vec::new(),
        };
        for old in stale {
            slots.remove(&slot_key, &old);
        }
        let full = |s: &Slots| {
            s.entries >= self.config.max_entries || s.bytes + bytes > self.config.max_bytes
        };
        if full(&slots) {
            slots.drop_where(|_, _, stored| stored.entry.expires_ms <= now);
        }
        while full(&slots) {
            let Some((coldest, variant)) = slots.coldest() else {
                break;
            };
            slots.remove(&coldest, &variant);
        }
        let used = slots.next_tick();
        slots.entries += 1;
        slots.bytes += bytes;
        let slot = slots.map.entry(slot_key).or_insert_with(|| Slot {
            vary: vary.to_vec(),
            variants: HashMap::new(),
        });
        slot.vary = vary.to_vec();
        let stored = Stored {
            entry: entry.clone(),
            bytes,
            used,
        };
        slot.variants.insert(variant.to_owned(), stored);
        Ok(())
    }

    async fn purge(&self, route: &str, path: Option<&str>) -> Result<usize> {
        let mut slots = self.slots.lock();
        let before = slots.entries;
        slots.drop_where(|(r, base), _, _| {
            r == route && path.is_none_or(|p| base.split_once('\n').map(|(_, b)| b) == Some(p))
        });
        Ok(before - slots.entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Clock, ManualClock};
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};
    use std::sync::Arc;

    fn key(path: &str) -> CacheKey {
        CacheKey {
            route: "r".into(),
            consumer: String::new(),
            path: path.into(),
        }
    }

    fn answer(body_bytes: usize, expires_ms: i64) -> CachedResponse {
        CachedResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(vec![b'x'; body_bytes]),
            expires_ms,
        }
    }

    #[tokio::test]
    async fn the_byte_budget_evicts_the_least_recently_used_first() {
        let clock = Arc::new(ManualClock::starting_now());
        let later = clock.now_ms() + 60_000;
        let config = CacheConfig {
            max_bytes: 10_000,
            ..CacheConfig::default()
        };
        let store = MemoryCacheStore::new(config, clock);
        for path in ["/a", "/b", "/c"] {
            store
                .put(&key(path), &[], "", &answer(3_000, later))
                .await
                .unwrap();
        }
        // `/a` is read, so `/b` is now the least recently used.
        assert!(store.get(&key("/a"), "").await.unwrap().is_some());
        store
            .put(&key("/d"), &[], "", &answer(3_000, later))
            .await
            .unwrap();
        assert!(store.get(&key("/b"), "").await.unwrap().is_none());
        for kept in ["/a", "/c", "/d"] {
            assert!(store.get(&key(kept), "").await.unwrap().is_some(), "{kept}");
        }
        let (entries, bytes) = store.usage();
        assert_eq!(entries, 3);
        assert!(bytes <= 10_000, "{bytes}");
        // An answer bigger than the whole budget is not kept, and evicts nothing.
        store
            .put(&key("/huge"), &[], "", &answer(20_000, later))
            .await
            .unwrap();
        assert!(store.get(&key("/huge"), "").await.unwrap().is_none());
        assert_eq!(store.usage().0, 3);
    }

    #[tokio::test]
    async fn expired_entries_go_before_fresh_ones_and_counts_stay_right() {
        let clock = Arc::new(ManualClock::starting_now());
        let now = clock.now_ms();
        let config = CacheConfig {
            max_entries: 2,
            ..CacheConfig::default()
        };
        let store = MemoryCacheStore::new(config, clock);
        store
            .put(&key("/fresh"), &[], "", &answer(10, now + 60_000))
            .await
            .unwrap();
        store
            .put(&key("/stale"), &[], "", &answer(10, now - 1))
            .await
            .unwrap();
        store
            .put(&key("/new"), &[], "", &answer(10, now + 60_000))
            .await
            .unwrap();
        assert!(store.get(&key("/stale"), "").await.unwrap().is_none());
        assert!(store.get(&key("/fresh"), "").await.unwrap().is_some());
        // The same variant stored again replaces itself.
        store
            .put(&key("/new"), &[], "", &answer(20, now + 60_000))
            .await
            .unwrap();
        assert_eq!(store.usage().0, 2);
        assert_eq!(store.purge("r", None).await.unwrap(), 2);
        assert_eq!(store.usage(), (0, 0));
    }
}
