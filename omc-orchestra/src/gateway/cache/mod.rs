//! The response cache for GET and HEAD: `Cache-Control` (`max-age`, `s-maxage`,
//! `no-store`, `private`, `no-cache`) and `Vary` respected, a per-route TTL when the
//! upstream says nothing, and single-flight fills so one request refreshes a missing entry
//! while the others wait for it. Entries live in a [`CacheStore`]: in process
//! ([`MemoryCacheStore`]) or in Redis, shared by every replica (`RedisCacheStore`).

mod memory;
#[cfg(feature = "redis")]
mod redis;

pub use memory::MemoryCacheStore;
#[cfg(feature = "redis")]
pub use redis::RedisCacheStore;

use crate::{Result, SharedClock};
use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, StatusCode};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Cache bounds.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Most entries kept.
    pub max_entries: usize,
    /// Most bytes the in-process store keeps (bodies, headers and keys), 64 MiB: the
    /// least recently used entries go first past it.
    pub max_bytes: usize,
    /// Largest body cached, in bytes (bigger answers stream through uncached).
    pub max_entry_bytes: usize,
    /// Share entries through Redis when the server has one (else in process).
    pub redis: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_bytes: 64 * 1024 * 1024,
            max_entry_bytes: 1024 * 1024,
            redis: true,
        }
    }
}

/// A stored answer.
#[derive(Debug, Clone)]
pub struct CachedResponse {
    /// Status.
    pub status: StatusCode,
    /// Headers (hop-by-hop ones already removed).
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// When it stops being fresh (ms since the epoch).
    pub expires_ms: i64,
}

fn directives(headers: &HeaderMap) -> Vec<(String, Option<String>)> {
    headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| {
            let d = d.trim();
            match d.split_once('=') {
                Some((k, v)) => (
                    k.trim().to_ascii_lowercase(),
                    Some(v.trim().trim_matches('"').to_owned()),
                ),
                None => (d.to_ascii_lowercase(), None),
            }
        })
        .collect()
}

/// True when the request forbids the cache (`Cache-Control: no-store`).
pub(crate) fn request_bypasses(headers: &HeaderMap) -> bool {
    directives(headers).iter().any(|(k, _)| k == "no-store")
}

/// True when the request wants a fresh answer (`no-cache`): skip the lookup, still store.
pub(crate) fn request_refreshes(headers: &HeaderMap) -> bool {
    directives(headers).iter().any(|(k, _)| k == "no-cache")
}

/// How long an answer with `headers` may be cached: `s-maxage`, else `max-age`, else
/// `route_ttl`; `None` for `no-store`, `private`, `no-cache`, `Set-Cookie` or `Vary: *`.
pub fn cache_ttl(headers: &HeaderMap, route_ttl: Option<Duration>) -> Option<Duration> {
    let list = directives(headers);
    if list
        .iter()
        .any(|(k, _)| matches!(k.as_str(), "no-store" | "private" | "no-cache"))
        || headers.contains_key(http::header::SET_COOKIE)
        || vary_names(headers).is_none()
    {
        return None;
    }
    let seconds = |name: &str| {
        list.iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref()?.parse::<u64>().ok())
    };
    let ttl = seconds("s-maxage")
        .or_else(|| seconds("max-age"))
        .map(Duration::from_secs)
        .or(route_ttl)?;
    (!ttl.is_zero()).then_some(ttl)
}

/// Whether an answer to a request that may carry a caller's credentials can be shared
/// with every caller (RFC 9111 §3.5): a request with `Authorization` or a cookie may get
/// an answer made for that caller, so it is stored only when the upstream says it is
/// for everyone (`public` or `s-maxage`). Authenticated routes key entries by consumer
/// and do not ask.
fn shareable(request: &HeaderMap, answer: &HeaderMap) -> bool {
    let credentials = request.contains_key(http::header::AUTHORIZATION)
        || request.contains_key(http::header::COOKIE);
    !credentials
        || directives(answer)
            .iter()
            .any(|(k, _)| matches!(k.as_str(), "public" | "s-maxage"))
}

/// The header names of `Vary`; `None` for `Vary: *`.
fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for value in headers.get_all(http::header::VARY) {
        for name in value.to_str().unwrap_or_default().split(',') {
            let name = name.trim();
            if name == "*" {
                return None;
            }
            if let Ok(name) = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
                names.push(name);
            }
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Some(names)
}

fn variant(names: &[String], request: &HeaderMap) -> String {
    let mut key = String::new();
    for name in names {
        key.push_str(name);
        key.push('=');
        for value in request.get_all(name.as_str()) {
            key.push_str(value.to_str().unwrap_or("?"));
            key.push(',');
        }
        key.push(';');
    }
    key
}

/// Where one request's answers are cached: its route, its consumer (on authenticated
/// routes) and its path with query. GET and HEAD share entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// The route's name.
    pub route: String,
    /// The authenticated subject, empty on public routes.
    pub consumer: String,
    /// Path and query.
    pub path: String,
}

impl CacheKey {
    /// The key within the route: consumer, then path.
    pub fn base(&self) -> String {
        format!("{}\n{}", self.consumer, self.path)
    }
}

/// Where cached answers live. Every backend keeps the contract checked by
/// `testkit::cache`; freshness is decided by [`ResponseCache`] with its clock, so a store
/// only keeps entries (and drops them some time after they expire).
#[async_trait]
pub trait CacheStore: Send + Sync + 'static {
    /// The `Vary` header names recorded for `key`; `None` when nothing is stored.
    async fn vary(&self, key: &CacheKey) -> Result<Option<Vec<String>>>;

    /// The answer stored for `key` and `variant` (the request's values of the `Vary`
    /// headers).
    async fn get(&self, key: &CacheKey, variant: &str) -> Result<Option<CachedResponse>>;

    /// Store `entry` for `key` and `variant`, recording `vary` for `key`.
    async fn put(
        &self,
        key: &CacheKey,
        vary: &[String],
        variant: &str,
        entry: &CachedResponse,
    ) -> Result<()>;

    /// Drop the answers of `route` (of one path only, when given); returns how many.
    async fn purge(&self, route: &str, path: Option<&str>) -> Result<usize>;
}

/// The response cache: policy and single-flight over a [`CacheStore`].
pub struct ResponseCache {
    config: CacheConfig,
    clock: SharedClock,
    store: Arc<dyn CacheStore>,
    fills: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Held while one request fills an entry; others asking for the same entry wait.
pub struct FillGuard {
    fills: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    key: String,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        let mut fills = self.fills.lock();
        // The map and this guard hold two references; more means someone waits.
        if fills
            .get(&self.key)
            .is_some_and(|lock| Arc::strong_count(lock) <= 2)
        {
            fills.remove(&self.key);
        }
    }
}

impl ResponseCache {
    /// A cache over `store`, freshness judged by `clock`.
    pub fn new(config: CacheConfig, clock: SharedClock, store: Arc<dyn CacheStore>) -> Self {
        Self {
            config,
            clock,
            store,
            fills: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The bounds.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// A fresh answer for `key` matching the request's `Vary` headers. A failing store
    /// counts as a miss.
    pub async fn lookup(&self, key: &CacheKey, request: &HeaderMap) -> Option<CachedResponse> {
        let found = async {
            let Some(names) = self.store.vary(key).await? else {
                return Ok(None);
            };
            self.store.get(key, &variant(&names, request)).await
        };
        match found.await {
            Ok(Some(hit)) if hit.expires_ms > self.clock.now_ms() => Some(hit),
            Ok(_) => None,
            Err(err) => {
                tracing::warn!(error = %err, "response cache unavailable");
                None
            }
        }
    }

    /// Wait until no other request fills `key`, then hold the fill.
    pub async fn fill(&self, key: &CacheKey) -> FillGuard {
        let name = format!("{}\n{}", key.route, key.base());
        let lock = self.fills.lock().entry(name.clone()).or_default().clone();
        FillGuard {
            fills: self.fills.clone(),
            key: name,
            _guard: lock.lock_owned().await,
        }
    }

    /// Store an answer for `key` if it may be cached; returns whether it was.
    pub async fn store(
        &self,
        key: &CacheKey,
        request: &HeaderMap,
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        route_ttl: Option<Duration>,
    ) -> bool {
        if status != StatusCode::OK
            || body.len() > self.config.max_entry_bytes
            || (key.consumer.is_empty() && !shareable(request, &headers))
        {
            return false;
        }
        let (Some(ttl), Some(names)) = (cache_ttl(&headers, route_ttl), vary_names(&headers))
        else {
            return false;
        };
        let names: Vec<String> = names.iter().map(|n| n.as_str().to_owned()).collect();
        let expires_ms = self
            .clock
            .now_ms()
            .saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let entry = CachedResponse {
            status,
            headers,
            body,
            expires_ms,
        };
        let variant = variant(&names, request);
        match self.store.put(key, &names, &variant, &entry).await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(error = %err, "cannot store a cached answer");
                false
            }
        }
    }

    /// Drop every entry of `route`; returns how many.
    pub async fn purge_route(&self, route: &str) -> Result<usize> {
        self.store.purge(route, None).await
    }

    /// Drop every entry (all variants and consumers) of one path under `route`.
    pub async fn purge_key(&self, route: &str, path_and_query: &str) -> Result<usize> {
        self.store.purge(route, Some(path_and_query)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn ttl_follows_cache_control() {
        let ttl = |pairs: &[(&str, &str)]| cache_ttl(&headers(pairs), Some(Duration::from_secs(7)));
        assert_eq!(ttl(&[]), Some(Duration::from_secs(7)));
        assert_eq!(
            ttl(&[("cache-control", "max-age=60")]),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            ttl(&[("cache-control", "public, max-age=60, s-maxage=5")]),
            Some(Duration::from_secs(5))
        );
        assert_eq!(ttl(&[("cache-control", "no-store")]), None);
        assert_eq!(ttl(&[("cache-control", "private, max-age=60")]), None);
        assert_eq!(ttl(&[("vary", "*")]), None);
        assert_eq!(ttl(&[("cache-control", "max-age=0")]), None);
    }

    #[tokio::test]
    async fn answers_to_requests_with_credentials_are_shared_only_when_public() {
        let clock: SharedClock = Arc::new(ManualClock::starting_now());
        let store = Arc::new(MemoryCacheStore::new(CacheConfig::default(), clock.clone()));
        let cache = ResponseCache::new(CacheConfig::default(), clock, store);
        let key = |consumer: &str| CacheKey {
            route: "r".into(),
            consumer: consumer.into(),
            path: "/me".into(),
        };
        let ttl = Some(Duration::from_secs(30));
        let store = |key: CacheKey, request: HeaderMap, answer: HeaderMap| {
            let cache = &cache;
            async move {
                cache
                    .store(
                        &key,
                        &request,
                        StatusCode::OK,
                        answer,
                        Bytes::from("x"),
                        ttl,
                    )
                    .await
            }
        };
        for credential in [("authorization", "Bearer t"), ("cookie", "session=s")] {
            let request = headers(&[credential]);
            assert!(!store(key(""), request.clone(), headers(&[])).await);
            let max_age = headers(&[("cache-control", "max-age=60")]);
            assert!(!store(key(""), request.clone(), max_age).await);
            let public = headers(&[("cache-control", "public, max-age=60")]);
            assert!(store(key(""), request.clone(), public).await);
            let shared = headers(&[("cache-control", "s-maxage=60")]);
            assert!(store(key(""), request.clone(), shared).await);
            // Keyed by consumer, an authenticated route's entry is that caller's own.
            assert!(store(key("u-42"), request, headers(&[])).await);
        }
        assert!(store(key(""), headers(&[]), headers(&[])).await);
    }

    #[tokio::test]
    async fn one_fill_at_a_time() {
        let clock: SharedClock = Arc::new(ManualClock::starting_now());
        let store = Arc::new(MemoryCacheStore::new(CacheConfig::default(), clock.clone()));
        let cache = Arc::new(ResponseCache::new(CacheConfig::default(), clock, store));
        let key = CacheKey {
            route: "r".into(),
            consumer: String::new(),
            path: "/k".into(),
        };
        let first = cache.fill(&key).await;
        let waiter = {
            let (cache, key) = (cache.clone(), key.clone());
            tokio::spawn(async move {
                let _second = cache.fill(&key).await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(first);
        waiter.await.unwrap();
        assert!(cache.fills.lock().is_empty());
    }
}
