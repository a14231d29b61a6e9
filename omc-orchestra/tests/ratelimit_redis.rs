//! The rate-limit contract against a real Redis, plus the failure policy when Redis is
//! gone.

use omc_orchestra::gateway::{Limit, RateLimitStore, RateLimiter, RedisRateLimits, Window};
use omc_orchestra::testkit::ratelimit::{run_all, MakeRateLimits};
use omc_orchestra::testkit::redis::{store, RedisProcess};
use omc_orchestra::{clock, RedisStore};
use parking_lot::Mutex;
use std::sync::Arc;

#[tokio::test]
async fn redis_rate_limits_keep_the_contract() {
    let stores: Arc<Mutex<Vec<RedisStore>>> = Arc::default();
    let seen = stores.clone();
    let make: MakeRateLimits = Arc::new(move |clock| {
        let seen = seen.clone();
        Box::pin(async move {
            let store = store().await;
            seen.lock().push(store.clone());
            Arc::new(RedisRateLimits::new(store, Arc::new(clock))) as Arc<dyn RateLimitStore>
        })
    });
    run_all(make).await;
    let all: Vec<RedisStore> = stores.lock().drain(..).collect();
    for store in all {
        store.delete_prefix().await.unwrap();
    }
}

#[tokio::test]
async fn redis_down_follows_the_failure_policy() {
    let redis = RedisProcess::start(false).unwrap();
    let store = RedisStore::connect(&redis.url(), "rl-policy")
        .await
        .unwrap();
    let counters: Arc<dyn RateLimitStore> = Arc::new(RedisRateLimits::new(store, clock::system()));
    let limits = [Limit {
        window: Window::Day,
        max: 100,
    }];
    let open = RateLimiter::new(counters.clone(), true);
    let closed = RateLimiter::new(counters, false);
    assert!(!open.check("k", &limits).await.degraded);
    redis.kill();
    let decision = open.check("k", &limits).await;
    assert!(decision.allowed && decision.degraded);
    let decision = closed.check("k", &limits).await;
    assert!(!decision.allowed && decision.degraded);
}
