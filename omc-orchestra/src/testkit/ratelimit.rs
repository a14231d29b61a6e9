//! The rate-limit store contract, checked the same way for every backend.

use crate::gateway::{Limit, RateLimitStore, RateLimiter, Window};
use crate::ManualClock;
use chrono::{TimeZone, Utc};
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;

/// Builds a fresh, empty store on `clock`.
pub type MakeRateLimits =
    Arc<dyn Fn(ManualClock) -> BoxFuture<'static, Arc<dyn RateLimitStore>> + Send + Sync>;

/// A clock at the start of a second, so a test's hits share one window.
fn clock() -> ManualClock {
    let now = Utc::now().timestamp() + 10;
    ManualClock::new(Utc.timestamp_opt(now, 0).single().unwrap_or_else(Utc::now))
}

fn per_second(max: u64) -> Vec<Limit> {
    vec![Limit {
        window: Window::Second,
        max,
    }]
}

/// Of 50 concurrent hits against a limit of 10 per second, exactly 10 pass.
pub async fn concurrent_burst_never_overshoots(make: &MakeRateLimits) {
    let clock = clock();
    let limiter = RateLimiter::new(make(clock).await, false);
    let key = format!("burst-{}", uuid::Uuid::new_v4());
    let hits = (0..50).map(|_| {
        let limiter = limiter.clone();
        let key = key.clone();
        async move { limiter.check(&key, &per_second(10)).await }
    });
    let decisions = futures::future::join_all(hits).await;
    assert_eq!(decisions.iter().filter(|d| d.allowed).count(), 10);
    assert!(decisions.iter().all(|d| !d.degraded));
    let last = decisions.iter().map(|d| d.windows[0].count).max();
    assert_eq!(last, Some(50), "every hit is counted");
}

/// A new window starts from zero; the reset time counts down to it.
pub async fn windows_reset(make: &MakeRateLimits) {
    let clock = clock();
    let store = make(clock.clone()).await;
    let key = format!("reset-{}", uuid::Uuid::new_v4());
    clock.advance(Duration::from_millis(250));
    let first = store.hit(&key, &per_second(2)).await.unwrap();
    assert_eq!(
        (first[0].count, first[0].remaining(), first[0].reset_ms),
        (1, 1, 750)
    );
    store.hit(&key, &per_second(2)).await.unwrap();
    let third = store.hit(&key, &per_second(2)).await.unwrap();
    assert!(!third[0].allowed());
    clock.advance(Duration::from_millis(800));
    let next = store.hit(&key, &per_second(2)).await.unwrap();
    assert_eq!(next[0].count, 1, "a new second starts from zero");
}

/// Keys count apart; several windows count together and the tightest decides.
pub async fn keys_and_windows_are_independent(make: &MakeRateLimits) {
    let clock = clock();
    let limiter = RateLimiter::new(make(clock.clone()).await, false);
    let a = format!("a-{}", uuid::Uuid::new_v4());
    let b = format!("b-{}", uuid::Uuid::new_v4());
    let limits = [
        Limit {
            window: Window::Second,
            max: 5,
        },
        Limit {
            window: Window::Minute,
            max: 3,
        },
    ];
    for _ in 0..3 {
        assert!(limiter.check(&a, &limits).await.allowed);
    }
    let fourth = limiter.check(&a, &limits).await;
    assert!(!fourth.allowed);
    assert_eq!(
        fourth.tightest().map(|w| w.limit.window),
        Some(Window::Minute)
    );
    assert!(fourth.retry_after_secs() >= 1 && fourth.retry_after_secs() <= 60);
    assert!(
        limiter.check(&b, &limits).await.allowed,
        "another key has its own counters"
    );
    clock.advance(Duration::from_secs(60));
    assert!(limiter.check(&a, &limits).await.allowed, "a new minute");
}

/// Run every check.
pub async fn run_all(make: MakeRateLimits) {
    concurrent_burst_never_overshoots(&make).await;
    windows_reset(&make).await;
    keys_and_windows_are_independent(&make).await;
}
