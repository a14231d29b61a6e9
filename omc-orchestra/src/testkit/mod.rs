//! Conformance suites and test helpers, shared by every backend's tests.
//!
//! Each suite is a set of plain `pub async fn` checks plus a `run_all` that calls them
//! in turn. A backend's tests pass a factory that builds a fresh, empty store on a
//! [`ManualClock`](crate::ManualClock), so expiry is tested without sleeping.

pub mod announce;
pub mod cache;
pub mod cron;
pub mod events;
pub mod events_backlog;
pub mod jobs;
pub mod jobs_ops;
pub mod logs;
pub mod ratelimit;
#[cfg(feature = "redis")]
pub mod redis;
pub mod registry;
pub mod registry_listing;
pub mod roundtrip;
#[cfg(feature = "redis")]
pub mod topology;

use std::future::Future;
use std::time::Duration;

/// Wait up to `within` for `check` to return `Some`, polling; panics with `what` otherwise.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
