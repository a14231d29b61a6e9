//! The Redis event bus: Redis Streams, so nothing acknowledged is lost across a consumer
//! crash or a server restart, and every replica sees every event.
//!
//! Keys (all under one hash tag, so every script works on Redis Cluster):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `{prefix}:ev:{events}:hist` | stream | history: every event, trimmed exactly to `history_len` and `history_age` |
//! | `{prefix}:ev:{events}:q:{priority}` | stream | one per priority, read by the consumer groups (one group per service): trimmed to what some group has not read or acknowledged (`MINID ~`), or `MAXLEN ~ backlog` while it has no group, and never past `MAXLEN ~ backlog_cap` (`backlog.rs`) |
//! | `{prefix}:ev:{events}:dead` | list | dead letters, newest first, trimmed to `dead_letters` |
//! | `{prefix}:ev:{events}:stats` | hash | `{counter}\|{type}` → count, at most [`MAX_STAT_TYPES`] types; `trimmed-unread` → events the backlog cap dropped before some group read them, `trimmed-unread-told` → how many of those were logged |
//! | `{prefix}:ev:{events}:once:{key}` | string | the event id published under an idempotency key, for [`IDEMPOTENCY_WINDOW`] |
//! | `{prefix}:ev:{events}:sent:{batch}` | string | a publish batch's answer, so a resend publishes nothing twice; expires after a minute |
//! | `{prefix}:ev:{events}:clock:{group}` | hash | per consumer of the group, its clock's offsets from Redis time and since when (`consumer/take.lua`) |
//! | `{prefix}:ev:{events}:live` | pub/sub channel | each publish call's new events, for the live subscribers of every bus (`live.rs`) |
//!
//! An event's id is its stream id in history and in its priority stream alike:
//! `{ms}-{seq}` with `ms` the publisher's clock (never behind the newest entry).
//! Entries carry the event JSON only (`e`): consumers decode it anyway, and the delivery
//! script decodes the few entries it reads itself.
//!
//! Publishing (`publish.rs`): the publishes that queue up while earlier ones are in
//! flight go to Redis in one script call (group commit), on a connection of their own.
//!
//! Delivery (`consumer/fetch.rs`, script `consumer/take.lua`): the script takes over events
//! whose visibility timeout ran out (`XPENDING`, `XCLAIM`; parking those delivered too
//! often in the dead list), then the first new entry of the most urgent stream that has
//! one; a plain `XREADGROUP` reads the rest of the batch from that stream, and a small
//! script, riding along with the next acknowledgement, counts it (`consumer/read.rs`). A
//! consumer whose last look found no expired deliveries left looks again only once the
//! clock moved on a little (see `CLAIM_EVERY_MS`); in between, a batch consumer reads on
//! its stream with plain reads alone, taking the first new entry of each more urgent
//! stream along.
//! The visibility timeout is measured on the bus's injected clock: deliveries keep the time
//! Redis gave them, and each consumer logs its clock's offset from Redis time whenever it
//! changes (reading without the script only while it knows the logged offset holds), so
//! the clock time of any delivery is known.
//! Idle consumers wait for news without a herd (`wait.rs`).

mod backlog;
mod consumer;
mod live;
mod publish;
mod wait;

use super::{
    BusOptions, ConsumerOptions, DeadLetter, Event, EventBus, EventConsumer, EventId,
    EventPriority, EventQuery, EventStats, NewEvent, ReplayFrom, IDEMPOTENCY_WINDOW, LIVE_CAPACITY,
    MAX_STAT_TYPES,
};
use crate::backend::RedisStore;
use crate::clock::SharedClock;
use crate::{Error, Result};
use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use publish::{publish_in_batches, Outgoing, Pending, Publisher};
use redis::AsyncCommands;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use tokio::sync::{broadcast, mpsc, oneshot};

/// An event bus in Redis, shared by every server that points at the same Redis and prefix.
pub struct RedisEventBus {
    store: RedisStore,
    keys: Keys,
    publisher: Arc<Publisher>,
    /// Sends publishes to the task that groups them (started by the first publish).
    batcher: OnceLock<mpsc::UnboundedSender<Pending>>,
    clock: SharedClock,
    options: BusOptions,
    live: broadcast::Sender<Event>,
    watcher: tokio::task::JoinHandle<()>,
    /// How this process's idle consumers of each group wait for news.
    waits: wait::Waits,
    /// Trims the priority streams and counts how far the groups are behind.
    backlog: Arc<backlog::Backlog>,
}

/// The bus's keys.
#[derive(Debug, Clone)]
struct Keys {
    hist: String,
    queues: [String; 4],
    dead: String,
    stats: String,
    offsets: String,
    live: String,
}

impl std::fmt::Debug for RedisEventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEventBus")
            .field("keys", &self.keys)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisEventBus {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl RedisEventBus {
    /// A bus in `store`, under the store's prefix. Its live stream starts with the events
    /// published after this call, by any replica.
    pub async fn new(store: RedisStore, clock: SharedClock, options: BusOptions) -> Result<Self> {
        let key = |name: &str| store.key("ev", "events", name);
        let keys = Keys {
            hist: key("hist"),
            queues: EventPriority::ALL.map(|p| key(&format!("q:{}", p.as_str()))),
            dead: key("dead"),
            stats: key("stats"),
            offsets: key("clock"),
            live: key("live"),
        };
        let live = broadcast::channel(LIVE_CAPACITY).0;
        let tail = store.stream_tail(&keys.hist).await?;
        let watcher = live::LiveFeed {
            store: store.clone(),
            hist: keys.hist.clone(),
            channel: keys.live.clone(),
            live: live.clone(),
        }
        .spawn(tail);
        let options = options.normalized();
        let [q0, q1, q2, q3] = keys.queues.clone();
        let publisher = Arc::new(Publisher {
            // Batches go on a connection of their own, not behind the consumers' reads.
            store: store.with_own_connection().await?,
            keys: [keys.hist.clone(), keys.stats.clone(), q0, q1, q2, q3],
            history_len: options.history_len.to_string(),
            backlog: options.backlog_cap.to_string(),
            max_types: MAX_STAT_TYPES.to_string(),
            channel: keys.live.clone(),
            batch_base: key("sent:"),
            script: Publisher::script(),
            sent_ms: Default::default(),
        });
        let backlog = Arc::new(backlog::Backlog::new(store.clone(), &keys, &options));
        Ok(Self {
            store,
            keys,
            publisher,
            batcher: OnceLock::new(),
            clock,
            options,
            live,
            watcher,
            waits: wait::Waits::default(),
            backlog,
        })
    }

    /// Publish one event through the batcher (group commit).
    async fn send(&self, outgoing: Outgoing) -> Result<publish::Published> {
        let sender = self.batcher.get_or_init(|| {
            let (sender, pending) = mpsc::unbounded_channel();
            tokio::spawn(publish_in_batches(self.publisher.clone(), pending));
            sender
        });
        let (reply, answer) = oneshot::channel();
        sender
            .send((outgoing, reply))
            .map_err(|_| Error::Backend("the publish batcher stopped".into()))?;
        match answer.await {
            Ok(Ok(published)) => {
                self.backlog.published();
                Ok(published)
            }
            Ok(Err(message)) => Err(Error::Backend(message.into())),
            Err(_) => Err(Error::Backend("the publish batcher stopped".into())),
        }
    }

    /// Trim the priority streams to what their consumer groups still need now, rather
    /// than at the next publish (which does it at most once a second); log at WARN the
    /// events the backlog cap dropped unread that no bus has logged yet, and answer their
    /// number.
    pub async fn trim_backlog(&self) -> Result<u64> {
        self.backlog.maintain().await
    }

    fn oldest_ms(&self) -> i64 {
        let age = i64::try_from(self.options.history_age.as_millis()).unwrap_or(i64::MAX);
        self.clock.now_ms().saturating_sub(age).max(0)
    }

    /// Entries of history in `[start, end]` (stream id bounds, `(` for exclusive), newest
    /// first when `reverse`, passing `keep`, at most `limit`.
    async fn scan(
        &self,
        start: String,
        end: String,
        reverse: bool,
        limit: usize,
        keep: impl Fn(&Event) -> bool,
    ) -> Result<Vec<Event>> {
        const PAGE: usize = 500;
        let oldest = from_ms(self.oldest_ms());
        let (mut start, mut end) = (start, end);
        let mut found = Vec::new();
        loop {
            let (cmd, from, to) = if reverse {
                ("XREVRANGE", &end, &start)
            } else {
                ("XRANGE", &start, &end)
            };
            let page: Vec<(String, HashMap<String, String>)> = self
                .store
                .retry(|mut conn| {
                    let mut c = redis::cmd(cmd);
                    c.arg(&self.keys.hist)
                        .arg(from)
                        .arg(to)
                        .arg("COUNT")
                        .arg(PAGE);
                    async move { c.query_async(&mut conn).await }
                })
                .await?;
            let full = page.len() == PAGE;
            let mut last_id = None;
            for (id, fields) in page {
                last_id = Some(id.clone());
                let event = match entry_event(&id, &fields) {
                    Ok(event) => event,
                    Err(err) => {
                        tracing::warn!(error = %err, id, "skipping a malformed event");
                        continue;
                    }
                };
                if event.time >= oldest && keep(&event) {
                    found.push(event);
                    if found.len() >= limit {
                        return Ok(found);
                    }
                }
            }
            match (full, last_id) {
                (true, Some(id)) if reverse => end = format!("({id}"),
                (true, Some(id)) => start = format!("({id}"),
                _ => return Ok(found),
            }
        }
    }
}

/// Decode a stream entry into an event.
fn entry_event(id: &str, fields: &HashMap<String, String>) -> Result<Event> {
    let json = fields
        .get("e")
        .ok_or_else(|| Error::Backend(format!("event entry {id} has no body").into()))?;
    decode_event(id, json)
}

fn decode_event(id: &str, json: &str) -> Result<Event> {
    let mut event: Event = serde_json::from_str(json)?;
    event.id = id.to_owned();
    Ok(event)
}

fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// Tags as the delivery script reads them: one per line.
fn lines(list: &[String]) -> String {
    list.join("\n")
}

#[async_trait]
impl EventBus for RedisEventBus {
    async fn publish(&self, event: NewEvent) -> Result<Event> {
        event.validate()?;
        let time = self.clock.now();
        let NewEvent {
            event_type,
            source,
            data,
            priority,
            tags,
            target,
            correlation_id,
            idempotency_key,
            traceparent,
        } = event.in_current_trace();
        let mut stamped = Event {
            id: String::new(),
            event_type,
            source,
            time,
            data,
            priority,
            tags,
            target,
            correlation_id,
            traceparent,
        };
        let json = serde_json::to_string(&stamped)?;
        let outgoing = Outgoing {
            once: idempotency_key
                .as_ref()
                .map(|key| self.store.key("ev", "events", &format!("once:{key}"))),
            oldest_ms: self.oldest_ms(),
            ms: time.timestamp_millis().max(0),
            args: [
                json,
                stamped.event_type.clone(),
                stamped.priority.rank().to_string(),
                match &idempotency_key {
                    Some(_) => IDEMPOTENCY_WINDOW.as_millis().to_string(),
                    None => String::new(),
                },
            ],
        };
        let (fresh, id) = self.send(outgoing).await?;
        stamped.id = id;
        if fresh == 0 {
            // Published before under the same idempotency key: answer that event.
            let first = self
                .scan(stamped.id.clone(), stamped.id.clone(), false, 1, |_| true)
                .await?;
            return Ok(first.into_iter().next().unwrap_or(stamped));
        }
        Ok(stamped)
    }

    async fn history(&self, query: &EventQuery) -> Result<Vec<Event>> {
        let start = match query.since {
            Some(since) => since.timestamp_millis().max(0).to_string(),
            None => "-".into(),
        };
        let mut found = self
            .scan(start, "+".into(), true, query.effective_limit(), |e| {
                query.matches(e)
            })
            .await?;
        found.reverse();
        Ok(found)
    }

    async fn replay(&self, from: &ReplayFrom, query: &EventQuery) -> Result<Vec<Event>> {
        let start = match from {
            ReplayFrom::After(id) => format!("({id}"),
            ReplayFrom::Since(time) => time.timestamp_millis().max(0).to_string(),
        };
        let after = |e: &Event| match from {
            ReplayFrom::After(id) => e.id.parse::<EventId>().is_ok_and(|own| own > *id),
            ReplayFrom::Since(time) => e.time >= *time,
        };
        self.scan(start, "+".into(), false, query.effective_limit(), |e| {
            after(e) && query.matches(e)
        })
        .await
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }

    async fn consumer(&self, options: ConsumerOptions) -> Result<Box<dyn EventConsumer>> {
        options.validate()?;
        let wait = self.waits.of(&options.group);
        let consumer = consumer::RedisConsumer::new(
            self.store.clone(),
            &self.keys,
            self.clock.clone(),
            self.options,
            options,
            wait,
        );
        consumer.create_groups().await?;
        Ok(Box::new(consumer))
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        let stop = isize::try_from(limit).unwrap_or(isize::MAX) - 1;
        if stop < 0 {
            return Ok(Vec::new());
        }
        let raw: Vec<String> = self
            .store
            .retry(|mut conn| {
                let key = self.keys.dead.clone();
                async move { conn.lrange(key, 0, stop).await }
            })
            .await?;
        Ok(raw
            .iter()
            .filter_map(|json| consumer::decode_dead_letter(json))
            .collect())
    }

    async fn stats(&self) -> Result<EventStats> {
        let raw: HashMap<String, u64> = self
            .store
            .retry(|mut conn| {
                let key = self.keys.stats.clone();
                async move { conn.hgetall(key).await }
            })
            .await?;
        let mut stats = EventStats {
            groups: self.backlog.group_lags().await?,
            trimmed_unread: raw.get(backlog::TRIMMED_UNREAD).copied().unwrap_or(0),
            ..EventStats::default()
        };
        for (field, count) in raw {
            if let Some((kind, event_type)) = field.split_once('|') {
                stats.add(kind, event_type, count);
            }
        }
        Ok(stats)
    }
}
