//! Event bus: typed events in a CloudEvents-like envelope, live broadcast, bounded history
//! with replay, and consumer groups with at-least-once delivery.
//!
//! Two ways to receive events:
//! - [`EventBus::subscribe`]: every event from now on, best effort (a slow receiver is told
//!   it lagged). For dashboards and the WebSocket hub.
//! - [`EventBus::consumer`]: a member of a consumer group. Every group sees every event
//!   meant for it (broadcast across groups), each event goes to one consumer of the group,
//!   and it comes back (to any consumer of the group) when it is not acknowledged within
//!   the visibility timeout, up to a maximum number of deliveries; then it is parked in
//!   the dead-letter list. The group's name is the service it serves: an event whose
//!   `target` names a service reaches only that group. A consumer that is behind reads
//!   critical events before high, normal and low ones.
//!
//! ```
//! use omc_orchestra::events::{ConsumerOptions, EventBus, MemoryEventBus, NewEvent};
//! use serde_json::json;
//! use std::time::Duration;
//!
//! # async fn demo() -> omc_orchestra::Result<()> {
//! let bus = MemoryEventBus::new(omc_orchestra::clock::system());
//! let mut inventory = bus.consumer(ConsumerOptions::new("inventory-service", "worker-1")).await?;
//!
//! let mut price = NewEvent::new("PRICE_UPDATED", "pricing-service", json!({"stationId": "STN001"}));
//! price.target = Some("inventory-service".into());
//! let published = bus.publish(price).await?;
//!
//! let delivery = inventory.next(Duration::from_secs(1)).await?.expect("delivered");
//! assert_eq!(delivery.event.id, published.id);
//! assert!(inventory.ack(&delivery.event.id).await?);
//! # Ok(())
//! # }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```

mod announce;
mod memory;
mod model;
#[cfg(feature = "redis")]
mod redis;

pub use announce::{announce_registry, change_event, REGISTRY_SOURCE};
pub use memory::MemoryEventBus;
pub use model::*;
#[cfg(feature = "redis")]
pub use redis::RedisEventBus;

use crate::{Error, Result};
use async_trait::async_trait;
use std::time::Duration;
use tokio::sync::broadcast;

/// Events kept in history by default.
pub const DEFAULT_HISTORY: usize = 10_000;
/// How long history keeps an event by default (24 h).
pub const DEFAULT_HISTORY_AGE: Duration = Duration::from_secs(24 * 3600);
/// Entries kept by default in a priority stream that no consumer group reads yet (Redis).
pub const DEFAULT_BACKLOG: usize = 100_000;
/// How many unread events a consumer group may fall behind by default before the oldest
/// are dropped (and counted): ten times [`DEFAULT_BACKLOG`].
pub const DEFAULT_BACKLOG_CAP: usize = 10 * DEFAULT_BACKLOG;
/// Dead letters kept by default.
pub const DEFAULT_DEAD_LETTERS: usize = 10_000;
/// How far a live subscriber may fall behind before it is told it lagged.
pub const LIVE_CAPACITY: usize = 4096;

/// Bounds of a bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusOptions {
    /// Most events kept in history.
    pub history_len: usize,
    /// Oldest event kept in history.
    pub history_age: Duration,
    /// Entries kept per priority stream while it has no consumer group (Redis): once a
    /// group reads a stream, what every group has read and acknowledged is trimmed
    /// instead, and what some group has not is kept up to [`backlog_cap`](Self::backlog_cap).
    pub backlog: usize,
    /// The hard bound on the events kept per priority for the consumer groups (never
    /// below `backlog`). Past it the oldest go even when a group has not read them: they
    /// are counted in [`EventStats::trimmed_unread`] and logged at WARN. On Redis each
    /// priority stream may hold this many entries, so size it to the memory Redis has.
    pub backlog_cap: usize,
    /// Most dead letters kept.
    pub dead_letters: usize,
}

impl Default for BusOptions {
    fn default() -> Self {
        Self {
            history_len: DEFAULT_HISTORY,
            history_age: DEFAULT_HISTORY_AGE,
            backlog: DEFAULT_BACKLOG,
            backlog_cap: DEFAULT_BACKLOG_CAP,
            dead_letters: DEFAULT_DEAD_LETTERS,
        }
    }
}

impl BusOptions {
    /// These options with every bound at least 1 and the cap at least the backlog, as
    /// the backends use them.
    pub fn normalized(self) -> Self {
        let backlog = self.backlog.max(1);
        Self {
            history_len: self.history_len.max(1),
            backlog,
            backlog_cap: self.backlog_cap.max(backlog),
            dead_letters: self.dead_letters.max(1),
            ..self
        }
    }
}

/// Who a consumer is and how it wants its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerOptions {
    /// The consumer group: the service it serves (targeted events go to this group only).
    pub group: String,
    /// This consumer's name within the group.
    pub consumer: String,
    /// Which events the group wants; the rest are acknowledged for it unseen. Consumers of
    /// one group should share a filter.
    pub filter: EventFilter,
    /// How long a delivered event may stay unacknowledged before it is delivered again.
    pub visibility_timeout: Duration,
    /// Deliveries before an event is parked as dead.
    pub max_deliveries: u32,
    /// Events fetched from the store at once (1 keeps the priority order strict).
    pub prefetch: usize,
}

impl ConsumerOptions {
    /// A consumer `consumer` of `group` taking every event, with a 30 s visibility
    /// timeout and 5 deliveries at most.
    pub fn new(group: impl Into<String>, consumer: impl Into<String>) -> Self {
        Self {
            group: group.into(),
            consumer: consumer.into(),
            filter: EventFilter::default(),
            visibility_timeout: Duration::from_secs(30),
            max_deliveries: 5,
            prefetch: 1,
        }
    }

    /// Check names and limits; errors name the field.
    pub fn validate(&self) -> Result<()> {
        for (field, name) in [("group", &self.group), ("consumer", &self.consumer)] {
            if name.is_empty()
                || name.len() > 253
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
            {
                return Err(Error::invalid(
                    field,
                    "must be 1-253 letters, digits, `_`, `.`, `:` or `-`",
                ));
            }
        }
        self.filter.validate()?;
        if self.visibility_timeout.is_zero() {
            return Err(Error::invalid("visibilityTimeout", "must be positive"));
        }
        if self.max_deliveries == 0 {
            return Err(Error::invalid("maxDeliveries", "must be at least 1"));
        }
        if !(1..=1000).contains(&self.prefetch) {
            return Err(Error::invalid("prefetch", "must be between 1 and 1000"));
        }
        Ok(())
    }

    /// Whether this consumer's group should see `event` at all.
    pub fn wants(&self, event: &Event) -> bool {
        event.target.as_ref().is_none_or(|t| *t == self.group) && self.filter.matches(event)
    }
}

/// One delivery of an event to a consumer.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The event.
    pub event: Event,
    /// How many times it has been delivered, this time included (1 on the first).
    pub deliveries: u32,
}

/// A member of a consumer group; see [`EventBus::consumer`].
#[async_trait]
pub trait EventConsumer: Send + Sync {
    /// The next event for this consumer, waiting up to `wait` for one: events whose
    /// visibility timeout ran out first, then new ones, most urgent first.
    async fn next(&mut self, wait: Duration) -> Result<Option<Delivery>>;

    /// Up to `max` deliveries at once, most urgent first, waiting up to `wait` for the
    /// first; empty when none came. Backends that fetch from a store do it once per call
    /// (fetching up to `max`, or `prefetch` when that is larger), so a batch costs one
    /// round trip and fits one [`ack_many`](Self::ack_many). A batch reading on one
    /// priority may take, along with it, the first waiting event of each more urgent
    /// priority (handed out first; what exceeds `max` comes with the next call), and the
    /// next batch reads on that priority: a burst of urgent events gets ahead of all but
    /// one batch of less urgent ones.
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let mut batch = Vec::new();
        let mut wait = wait;
        while batch.len() < max {
            match self.next(wait).await? {
                Some(delivery) => batch.push(delivery),
                None => break,
            }
            wait = Duration::ZERO;
        }
        Ok(batch)
    }

    /// Acknowledge event `id` for the group; `true` when this call settled it (`false`
    /// when it was already acknowledged or parked).
    async fn ack(&mut self, id: &str) -> Result<bool>;

    /// Acknowledge several events at once; answers how many this call settled.
    async fn ack_many(&mut self, ids: &[String]) -> Result<usize> {
        let mut settled = 0;
        for id in ids {
            settled += usize::from(self.ack(id).await?);
        }
        Ok(settled)
    }
}

/// The event bus contract; `testkit::events` checks it for every backend.
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Validate, stamp (id, time) and publish an event.
    async fn publish(&self, event: NewEvent) -> Result<Event>;

    /// Past events matching `query`, oldest first (the newest `limit`).
    async fn history(&self, query: &EventQuery) -> Result<Vec<Event>>;

    /// Events after `from` matching `query`, oldest first (the first `limit`).
    async fn replay(&self, from: &ReplayFrom, query: &EventQuery) -> Result<Vec<Event>>;

    /// Every event published from now on, by any replica sharing the store.
    fn subscribe(&self) -> broadcast::Receiver<Event>;

    /// Join consumer group `options.group` as `options.consumer`; the group is created
    /// on first use and receives the events published from then on.
    async fn consumer(&self, options: ConsumerOptions) -> Result<Box<dyn EventConsumer>>;

    /// The newest dead letters, newest first.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>>;

    /// Published, delivered, redelivered and dead counts per event type; lag and pending
    /// counts per consumer group; events the backlog cap dropped unread.
    async fn stats(&self) -> Result<EventStats>;
}

/// The reason recorded for an event that ran out of deliveries.
pub fn exhausted_reason(deliveries: u32) -> String {
    format!("not acknowledged after {deliveries} deliveries")
}

/// Log, at WARN, that the backlog cap dropped `count` events some consumer group had not
/// read: the one message both backends give, so an alert on the log matches either.
pub(crate) fn warn_trimmed_unread(count: u64, cap: usize) {
    tracing::warn!(
        count,
        cap,
        "the event backlog cap dropped events a consumer group had not read"
    );
}

/// The tag every re-published (replayed) event carries.
pub const REPLAY_TAG: &str = "replay";

/// Replay history into consumer group `group`: each event after `from` that matches
/// `query` is published again, targeted at `group` only, tagged [`REPLAY_TAG`] and
/// `replay-of:{original id}`. Answers the new events, oldest first.
///
/// Live subscribers see the copies too (they carry the tag); other groups do not.
pub async fn replay_to_group(
    bus: &dyn EventBus,
    group: &str,
    from: &ReplayFrom,
    query: &EventQuery,
) -> Result<Vec<Event>> {
    ConsumerOptions::new(group, "replay").validate()?;
    let originals = bus.replay(from, query).await?;
    let mut copies = Vec::with_capacity(originals.len());
    for original in originals {
        let mut tags = original.tags;
        tags.truncate(30);
        tags.push(REPLAY_TAG.into());
        tags.push(format!("replay-of:{}", original.id));
        let copy = NewEvent {
            event_type: original.event_type,
            source: original.source,
            data: original.data,
            priority: original.priority,
            tags,
            target: Some(group.to_owned()),
            correlation_id: original.correlation_id,
            idempotency_key: None,
            traceparent: original.traceparent,
        };
        copies.push(bus.publish(copy).await?);
    }
    Ok(copies)
}

/// A live subscription that passes only what its filter accepts; see [`subscribe_filtered`].
#[derive(Debug)]
pub struct Subscription {
    live: broadcast::Receiver<Event>,
    filter: EventFilter,
}

impl Subscription {
    /// The next matching event; `Lagged` when this subscriber fell behind and missed some.
    pub async fn recv(&mut self) -> Result<Event, broadcast::error::RecvError> {
        loop {
            let event = self.live.recv().await?;
            if self.filter.matches(&event) {
                return Ok(event);
            }
        }
    }
}

/// Every event from now on that passes `filter` (type, tag, source).
pub fn subscribe_filtered(bus: &dyn EventBus, filter: EventFilter) -> Subscription {
    Subscription {
        live: bus.subscribe(),
        filter,
    }
}
