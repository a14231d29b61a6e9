//! Service registry: registration, heartbeats with TTL, stale cleanup, discovery.
//!
//! [`Registry`] is the contract every backend keeps ([`MemoryRegistry`], and
//! `RedisRegistry` behind the `redis` feature). [`Discovery`] sits on top: it picks an
//! instance with smooth weighted round-robin and applies the panic threshold.

mod balance;
mod memory;
mod model;
#[cfg(feature = "redis")]
mod redis;

pub use balance::{Discovered, Discovery, SmoothWeighted};
pub use memory::MemoryRegistry;
pub use model::*;
#[cfg(feature = "redis")]
pub use redis::{RedisRegistry, CHANGES_MAXLEN};

use crate::Result;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// How a registry treats time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegistryOptions {
    /// TTL for registrations that do not ask for one (30 s).
    pub default_ttl: Duration,
    /// How long an expired instance stays (as `critical`) before stale cleanup removes it (90 s).
    pub grace: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            default_ttl: Duration::from_secs(30),
            grace: Duration::from_secs(90),
        }
    }
}

/// How many changes a watcher may fall behind before it is told it lagged.
pub const WATCH_CAPACITY: usize = 1024;

/// The registry contract. Every backend keeps the same semantics; `testkit::registry`
/// checks them.
#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// Validate and register an instance. Registering the same name, host and port again
    /// updates that instance (same id) instead of adding one.
    async fn register(&self, registration: Registration) -> Result<ServiceInstance>;

    /// Record a heartbeat: the instance is fresh for another TTL.
    async fn heartbeat(&self, id: &str) -> Result<ServiceInstance>;

    /// Remove an instance; returns it as it was.
    async fn deregister(&self, id: &str) -> Result<ServiceInstance>;

    /// One instance by id.
    async fn get(&self, id: &str) -> Result<ServiceInstance>;

    /// Every instance that passes `filter`, ordered by name then id.
    async fn list(&self, filter: &ServiceFilter) -> Result<Vec<ServiceInstance>>;

    /// One page of [`Registry::list`]: up to `limit` instances that pass `filter`, after
    /// the position `cursor` (from an earlier page's [`ServicePage::next`]), read from an
    /// index in (name, id) order rather than from every instance. A cursor is a position,
    /// not an offset, so it stays valid while instances come and go: an instance is on a
    /// later page if it sorts after the cursor and is still there when that page is read.
    async fn list_page(
        &self,
        filter: &ServiceFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<ServicePage>;

    /// The instances of the service `name`, ordered by id, read from the service's own
    /// index (its cost does not grow with other services' instances), with the service's
    /// change index: a number that grows with every announced change to one of its
    /// instances (registered, updated, deregistered, health changed, expired), for
    /// blocking queries. The index is read before the instances, so an answer is never
    /// older than its index says.
    async fn service(&self, name: &str) -> Result<ServiceInstances>;

    /// Record the verdict of a health check.
    async fn set_health(&self, id: &str, status: HealthStatus) -> Result<ServiceInstance>;

    /// Stale cleanup: mark instances whose heartbeat expired as `critical`, remove those
    /// expired for longer than the grace period, and announce both. Safe to run on every
    /// replica at once: each change happens, and is returned, exactly once.
    async fn reap(&self) -> Result<Vec<RegistryChange>>;

    /// A stream of every change, from now on.
    fn watch(&self) -> broadcast::Receiver<RegistryChange>;
}

/// Run [`Registry::reap`] every `every` until the returned task is aborted.
pub fn spawn_reaper(registry: Arc<dyn Registry>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(err) = registry.reap().await {
                tracing::warn!(error = %err, "registry stale cleanup failed");
            }
        }
    })
}
