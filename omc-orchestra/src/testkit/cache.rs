//! The response-cache store contract, checked the same way for every backend (through
//! [`ResponseCache`], which decides freshness with the test's clock).

use crate::gateway::{CacheConfig, CacheKey, CacheStore, ResponseCache};
use crate::ManualClock;
use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderName, StatusCode};
use std::sync::Arc;
use std::time::Duration;

/// Builds a fresh, empty store on `clock`.
pub type MakeCache =
    Arc<dyn Fn(ManualClock) -> BoxFuture<'static, Arc<dyn CacheStore>> + Send + Sync>;

fn key(route: &str, consumer: &str, path: &str) -> CacheKey {
    CacheKey {
        route: route.into(),
        consumer: consumer.into(),
        path: path.into(),
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    pairs
        .iter()
        .filter_map(|(k, v)| Some((HeaderName::from_bytes(k.as_bytes()).ok()?, v.parse().ok()?)))
        .collect()
}

async fn fresh(make: &MakeCache) -> (ResponseCache, ManualClock) {
    let clock = ManualClock::starting_now();
    let store = make(clock.clone()).await;
    (
        ResponseCache::new(CacheConfig::default(), Arc::new(clock.clone()), store),
        clock,
    )
}

/// Answers come back whole (status, headers, binary body); `Vary` keeps variants apart
/// and consumers have their own entries.
pub async fn answers_round_trip_by_variant(make: &MakeCache) {
    let (cache, _) = fresh(make).await;
    let k = key("/api/catalog", "", "/items?page=2");
    let en = headers(&[("accept-language", "en")]);
    let de = headers(&[("accept-language", "de")]);
    let answer = headers(&[
        ("cache-control", "max-age=10"),
        ("vary", "Accept-Language"),
        ("x-custom", "kept"),
    ]);
    let body = Bytes::from_static(b"line one\nline two\xff\x00");
    assert!(
        cache
            .store(&k, &en, StatusCode::OK, answer, body.clone(), None)
            .await
    );
    let hit = cache.lookup(&k, &en).await.expect("a stored answer");
    assert_eq!(hit.status, StatusCode::OK);
    assert_eq!(hit.body, body);
    assert_eq!(hit.headers["x-custom"], "kept");
    assert!(cache.lookup(&k, &de).await.is_none(), "another variant");
    let other = key("/api/catalog", "u-1", "/items?page=2");
    assert!(
        cache.lookup(&other, &en).await.is_none(),
        "another consumer"
    );
}

/// Entries are fresh for their TTL by the cache's clock, then gone.
pub async fn entries_expire(make: &MakeCache) {
    let (cache, clock) = fresh(make).await;
    let k = key("/r", "", "/x");
    let none = HeaderMap::new();
    let ttl = Some(Duration::from_secs(5));
    assert!(
        cache
            .store(
                &k,
                &none,
                StatusCode::OK,
                HeaderMap::new(),
                Bytes::from("a"),
                ttl
            )
            .await
    );
    clock.advance(Duration::from_secs(4));
    assert!(cache.lookup(&k, &none).await.is_some());
    clock.advance(Duration::from_secs(2));
    assert!(cache.lookup(&k, &none).await.is_none());
    let refused = headers(&[("cache-control", "no-store")]);
    assert!(
        !cache
            .store(&k, &none, StatusCode::OK, refused, Bytes::from("b"), ttl)
            .await
    );
}

/// Purges drop one path (every variant and consumer) or a whole route, and count.
pub async fn purges_by_route_and_path(make: &MakeCache) {
    let (cache, _) = fresh(make).await;
    let ttl = Some(Duration::from_secs(60));
    let vary = headers(&[("vary", "accept")]);
    let json = headers(&[("accept", "application/json")]);
    let text = headers(&[("accept", "text/plain")]);
    let entries = [
        (key("/r", "", "/a"), &json),
        (key("/r", "", "/a"), &text),
        (key("/r", "u-1", "/a"), &json),
        (key("/r", "", "/b"), &json),
        (key("/other", "", "/a"), &json),
    ];
    for (k, request) in &entries {
        let stored = cache
            .store(
                k,
                request,
                StatusCode::OK,
                vary.clone(),
                Bytes::from("x"),
                ttl,
            )
            .await;
        assert!(stored);
    }
    assert_eq!(cache.purge_key("/r", "/a").await.ok(), Some(3));
    assert!(cache.lookup(&entries[0].0, &json).await.is_none());
    assert!(cache.lookup(&entries[3].0, &json).await.is_some());
    assert_eq!(cache.purge_route("/r").await.ok(), Some(1));
    assert!(cache.lookup(&entries[3].0, &json).await.is_none());
    assert!(
        cache.lookup(&entries[4].0, &json).await.is_some(),
        "other routes stay"
    );
}

/// Run every check.
pub async fn run_all(make: MakeCache) {
    answers_round_trip_by_variant(&make).await;
    entries_expire(&make).await;
    purges_by_route_and_path(&make).await;
}
