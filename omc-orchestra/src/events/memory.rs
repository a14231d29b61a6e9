//! The in-memory event bus: one process, the same semantics as the Redis bus.

use super::{
    exhausted_reason, BusOptions, ConsumerOptions, DeadLetter, Delivery, Event, EventBus,
    EventConsumer, EventId, EventPriority, EventQuery, EventStats, GroupLag, LagCounts, NewEvent,
    ReplayFrom, IDEMPOTENCY_WINDOW, LIVE_CAPACITY,
};
use crate::clock::SharedClock;
use crate::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, Notify};

/// An event bus inside one process.
pub struct MemoryEventBus {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    live: broadcast::Sender<Event>,
    published: Notify,
    clock: SharedClock,
    options: BusOptions,
}

#[derive(Default)]
struct State {
    last: Option<EventId>,
    history: VecDeque<Event>,
    groups: HashMap<String, Group>,
    dead: VecDeque<DeadLetter>,
    stats: EventStats,
    /// Idempotency key → (event id, forgotten after this many ms since the epoch).
    seen: HashMap<String, (String, i64)>,
    /// Events the backlog cap dropped unread, in all, and since the last warning.
    trimmed_unread: u64,
    unwarned: u64,
    /// When the last such warning was logged.
    warned_at: Option<std::time::Instant>,
}

/// Most idempotency keys remembered at once.
const SEEN_LIMIT: usize = 100_000;

#[derive(Default)]
struct Group {
    /// Undelivered events, one queue per priority (index = rank).
    queues: [VecDeque<Event>; 4],
    /// Delivered, unacknowledged events by id.
    pending: BTreeMap<EventId, Pending>,
}

struct Pending {
    event: Event,
    deadline_ms: i64,
    deliveries: u32,
}

impl std::fmt::Debug for MemoryEventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryEventBus")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl MemoryEventBus {
    /// A bus with the default bounds.
    pub fn new(clock: SharedClock) -> Self {
        Self::with_options(clock, BusOptions::default())
    }

    /// A bus keeping at most `capacity` events in history.
    pub fn with_capacity(clock: SharedClock, capacity: usize) -> Self {
        Self::with_options(
            clock,
            BusOptions {
                history_len: capacity,
                ..BusOptions::default()
            },
        )
    }

    /// A bus with `options`.
    pub fn with_options(clock: SharedClock, options: BusOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                live: broadcast::channel(LIVE_CAPACITY).0,
                published: Notify::new(),
                clock,
                options: options.normalized(),
            }),
        }
    }
}

/// The published form of `event`.
fn stamp(id: String, time: DateTime<Utc>, event: NewEvent) -> Event {
    Event {
        id,
        event_type: event.event_type,
        source: event.source,
        time,
        data: event.data,
        priority: event.priority,
        tags: event.tags,
        target: event.target,
        correlation_id: event.correlation_id,
        traceparent: event.traceparent,
    }
}

fn age_limit(now: DateTime<Utc>, age: Duration) -> DateTime<Utc> {
    now - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX)
}

impl State {
    fn next_id(&mut self, now_ms: u64) -> EventId {
        let id = match self.last {
            Some(last) if last.ms >= now_ms => EventId {
                ms: last.ms,
                seq: last.seq + 1,
            },
            _ => EventId { ms: now_ms, seq: 0 },
        };
        self.last = Some(id);
        id
    }

    /// The id of the event first published with `key`, when the key is still remembered,
    /// and that event unless it has left history since.
    fn first_with_key(&self, key: &str, now_ms: i64) -> Option<(String, Option<Event>)> {
        let (id, until) = self.seen.get(key)?;
        if *until <= now_ms {
            return None;
        }
        let first = self.history.iter().find(|e| e.id == *id).cloned();
        Some((id.clone(), first))
    }

    fn remember(&mut self, key: &str, id: String, now_ms: i64) {
        if self.seen.len() >= SEEN_LIMIT {
            self.seen.retain(|_, (_, until)| *until > now_ms);
            if self.seen.len() >= SEEN_LIMIT {
                self.seen.clear();
            }
        }
        let window = i64::try_from(IDEMPOTENCY_WINDOW.as_millis()).unwrap_or(i64::MAX);
        self.seen
            .insert(key.to_owned(), (id, now_ms.saturating_add(window)));
    }

    /// Count `n` events the backlog cap dropped unread, and warn about them at most once
    /// a second, so a group stuck at the cap cannot flood the log.
    fn note_trimmed_unread(&mut self, n: u64, cap: usize) {
        self.trimmed_unread += n;
        self.unwarned += n;
        if self
            .warned_at
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            super::warn_trimmed_unread(self.unwarned, cap);
            self.unwarned = 0;
            self.warned_at = Some(std::time::Instant::now());
        }
    }

    /// Lag and pending counts of every group.
    fn group_lags(&self) -> Vec<GroupLag> {
        let mut groups = Vec::new();
        for (name, group) in &self.groups {
            for priority in EventPriority::ALL {
                let pending = group
                    .pending
                    .values()
                    .filter(|p| p.event.priority == priority)
                    .count();
                let counts = LagCounts {
                    lag: group.queues[priority.rank()].len() as u64,
                    pending: pending as u64,
                };
                GroupLag::add(&mut groups, name, priority, counts);
            }
        }
        groups
    }

    fn trim_history(&mut self, options: &BusOptions, now: DateTime<Utc>) {
        let oldest = age_limit(now, options.history_age);
        while self.history.len() > options.history_len
            || self.history.front().is_some_and(|e| e.time < oldest)
        {
            self.history.pop_front();
        }
    }
}

#[async_trait]
impl EventBus for MemoryEventBus {
    async fn publish(&self, event: NewEvent) -> Result<Event> {
        event.validate()?;
        let event = event.in_current_trace();
        let inner = &self.inner;
        let time = inner.clock.now();
        let event = {
            let mut state = inner.state.lock();
            let now_ms = time.timestamp_millis();
            if let Some(key) = &event.idempotency_key {
                if let Some((id, first)) = state.first_with_key(key, now_ms) {
                    return Ok(first.unwrap_or_else(|| stamp(id, time, event.clone())));
                }
            }
            let id = state.next_id(u64::try_from(now_ms).unwrap_or(0));
            if let Some(key) = &event.idempotency_key {
                state.remember(key, id.to_string(), now_ms);
            }
            let event = stamp(id.to_string(), time, event);
            state.history.push_back(event.clone());
            state.trim_history(&inner.options, time);
            state.stats.add("published", &event.event_type, 1);
            let cap = inner.options.backlog_cap;
            let mut dropped: Vec<String> = Vec::new();
            for (name, group) in &mut state.groups {
                if event.target.as_ref().is_some_and(|t| t != name) {
                    continue;
                }
                let queue = &mut group.queues[event.priority.rank()];
                queue.push_back(event.clone());
                if queue.len() > cap {
                    // Counted once however many groups it was dropped from, as on Redis.
                    if let Some(old) = queue.pop_front().filter(|old| !dropped.contains(&old.id)) {
                        dropped.push(old.id);
                    }
                }
            }
            if !dropped.is_empty() {
                state.note_trimmed_unread(dropped.len() as u64, cap);
            }
            event
        };
        inner.published.notify_waiters();
        let _ = inner.live.send(event.clone());
        Ok(event)
    }

    async fn history(&self, query: &EventQuery) -> Result<Vec<Event>> {
        let oldest = age_limit(self.inner.clock.now(), self.inner.options.history_age);
        let state = self.inner.state.lock();
        let mut found: Vec<Event> = state
            .history
            .iter()
            .rev()
            .filter(|e| e.time >= oldest && query.matches(e))
            .take(query.effective_limit())
            .cloned()
            .collect();
        found.reverse();
        Ok(found)
    }

    async fn replay(&self, from: &ReplayFrom, query: &EventQuery) -> Result<Vec<Event>> {
        let oldest = age_limit(self.inner.clock.now(), self.inner.options.history_age);
        let state = self.inner.state.lock();
        let after = |e: &Event| match from {
            ReplayFrom::After(id) => e.id.parse::<EventId>().is_ok_and(|own| own > *id),
            ReplayFrom::Since(time) => e.time >= *time,
        };
        Ok(state
            .history
            .iter()
            .filter(|e| e.time >= oldest && after(e) && query.matches(e))
            .take(query.effective_limit())
            .cloned()
            .collect())
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.live.subscribe()
    }

    async fn consumer(&self, options: ConsumerOptions) -> Result<Box<dyn EventConsumer>> {
        options.validate()?;
        self.inner
            .state
            .lock()
            .groups
            .entry(options.group.clone())
            .or_default();
        Ok(Box::new(MemoryConsumer {
            inner: self.inner.clone(),
            options,
        }))
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        let state = self.inner.state.lock();
        Ok(state.dead.iter().take(limit).cloned().collect())
    }

    async fn stats(&self) -> Result<EventStats> {
        let state = self.inner.state.lock();
        Ok(EventStats {
            groups: state.group_lags(),
            trimmed_unread: state.trimmed_unread,
            ..state.stats.clone()
        })
    }
}

/// A consumer of the in-memory bus.
struct MemoryConsumer {
    inner: Arc<Inner>,
    options: ConsumerOptions,
}

impl MemoryConsumer {
    /// Take up to one event: a due redelivery first, then the most urgent new event.
    fn take(&self) -> Option<Delivery> {
        let inner = &self.inner;
        let now = inner.clock.now();
        let now_ms = now.timestamp_millis();
        let visible_ms =
            i64::try_from(self.options.visibility_timeout.as_millis()).unwrap_or(i64::MAX);
        let mut state = inner.state.lock();
        let state = &mut *state;
        let group = state.groups.entry(self.options.group.clone()).or_default();
        loop {
            let due = group
                .pending
                .iter()
                .filter(|(_, p)| p.deadline_ms <= now_ms)
                .min_by_key(|(id, p)| (p.event.priority.rank(), **id))
                .map(|(id, _)| *id);
            let Some(id) = due else { break };
            let Some(pending) = group.pending.get_mut(&id) else {
                break;
            };
            pending.deliveries += 1;
            if pending.deliveries > self.options.max_deliveries {
                if let Some(p) = group.pending.remove(&id) {
                    let letter = DeadLetter {
                        event_id: p.event.id.clone(),
                        group: self.options.group.clone(),
                        deliveries: p.deliveries - 1,
                        reason: exhausted_reason(p.deliveries - 1),
                        at: now,
                        event: Some(p.event),
                    };
                    if let Some(event) = &letter.event {
                        state.stats.add("dead", &event.event_type, 1);
                    }
                    state.dead.push_front(letter);
                    state.dead.truncate(inner.options.dead_letters);
                }
                continue;
            }
            pending.deadline_ms = now_ms.saturating_add(visible_ms);
            let delivery = Delivery {
                event: pending.event.clone(),
                deliveries: pending.deliveries,
            };
            state
                .stats
                .add("redelivered", &delivery.event.event_type, 1);
            return Some(delivery);
        }
        for priority in EventPriority::ALL {
            while let Some(event) = group.queues[priority.rank()].pop_front() {
                if !self.options.wants(&event) {
                    continue;
                }
                let Ok(id) = event.id.parse::<EventId>() else {
                    continue;
                };
                group.pending.insert(
                    id,
                    Pending {
                        event: event.clone(),
                        deadline_ms: now_ms.saturating_add(visible_ms),
                        deliveries: 1,
                    },
                );
                state.stats.add("delivered", &event.event_type, 1);
                return Some(Delivery {
                    event,
                    deliveries: 1,
                });
            }
        }
        None
    }
}

#[async_trait]
impl EventConsumer for MemoryConsumer {
    async fn next(&mut self, wait: Duration) -> Result<Option<Delivery>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let published = self.inner.published.notified();
            tokio::pin!(published);
            published.as_mut().enable();
            if let Some(delivery) = self.take() {
                return Ok(Some(delivery));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            // Redeliveries come due with the clock, not with a publish: look again soon.
            let nap = (deadline - now).min(Duration::from_millis(50));
            let _ = tokio::time::timeout(nap, published).await;
        }
    }

    async fn ack(&mut self, id: &str) -> Result<bool> {
        let id: EventId = id.parse()?;
        let mut state = self.inner.state.lock();
        Ok(state
            .groups
            .get_mut(&self.options.group)
            .is_some_and(|g| g.pending.remove(&id).is_some()))
    }
}
