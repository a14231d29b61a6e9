//! A member of a consumer group on the Redis bus: fetching (`fetch.rs`, with plain
//! reads in `read.rs`), waiting for news, acknowledging.

use super::wait::GroupWait;
use super::{decode_event, from_ms, Keys};
use crate::backend::RedisStore;
use crate::clock::SharedClock;
use crate::events::{BusOptions, ConsumerOptions, DeadLetter, Delivery, EventConsumer, EventId};
use crate::RedisConnection;
use crate::Result;
use async_trait::async_trait;
use redis::{AsyncCommands, Script, Value};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

mod fetch;
mod read;

/// How long a fetch must have left to wait for news to count as patient (see
/// `RedisConsumer::fetch`).
const PATIENCE: Duration = Duration::from_millis(20);

/// Most events one fetch takes (the most `prefetch` allows).
const MOST_FETCHED: usize = 1000;

/// A dead letter as the delivery script writes it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredDeadLetter {
    event_id: String,
    event: String,
    group: String,
    deliveries: u32,
    reason: String,
    at: i64,
}

/// Decode a dead letter written by the delivery script; `None` when malformed.
pub(super) fn decode_dead_letter(json: &str) -> Option<DeadLetter> {
    let stored: StoredDeadLetter = serde_json::from_str(json).ok()?;
    Some(DeadLetter {
        event: decode_event(&stored.event_id, &stored.event).ok(),
        event_id: stored.event_id,
        group: stored.group,
        deliveries: stored.deliveries,
        reason: stored.reason,
        at: from_ms(stored.at),
    })
}

/// A consumer of the Redis bus.
pub(super) struct RedisConsumer {
    store: RedisStore,
    queues: [String; 4],
    dead: String,
    stats: String,
    /// The group's log of its consumers' clock offsets from Redis time (see
    /// `take.lua`).
    offsets: String,
    clock: SharedClock,
    bus: BusOptions,
    options: ConsumerOptions,
    take: Script,
    settle: Script,
    /// Fetched, not yet handed out (when `prefetch` > 1).
    buffer: std::collections::VecDeque<Delivery>,
    /// Which priority stream each handed-out, unacknowledged event came from.
    origin: HashMap<String, usize>,
    /// A connection of its own for blocking waits, opened on first need.
    waiter: Option<RedisConnection>,
    /// Clock time (ms) of the last fetch that looked for expired deliveries and found
    /// none left; `None` to look on the next fetch.
    claimed_at: Option<i64>,
    /// What the last full run of the delivery script said about this consumer's clock.
    synced: Option<fetch::Synced>,
    /// The priority stream the last fetch read (the most urgent one with news then).
    reading: Option<usize>,
    /// Whether the last fetch found that stream dry and answered nothing, to wait for
    /// news before reading it again.
    dry: bool,
    /// Shared by the group's consumers in this process, to wait without a herd.
    wait: Arc<GroupWait>,
    /// What plain reads delivered and found unwanted, to settle with the next
    /// acknowledgement or fetch.
    unsettled: read::Unsettled,
    /// Event types whose `delivered` count has a field of its own in the stats hash.
    counted: std::collections::HashSet<String>,
}

impl RedisConsumer {
    pub(super) fn new(
        store: RedisStore,
        keys: &Keys,
        clock: SharedClock,
        bus: BusOptions,
        options: ConsumerOptions,
        wait: Arc<GroupWait>,
    ) -> Self {
        Self {
            store,
            queues: keys.queues.clone(),
            dead: keys.dead.clone(),
            stats: keys.stats.clone(),
            offsets: format!("{}:{}", keys.offsets, options.group),
            clock,
            bus,
            options,
            take: Script::new(fetch::TAKE),
            settle: Script::new(read::SETTLE),
            buffer: Default::default(),
            origin: HashMap::new(),
            waiter: None,
            claimed_at: None,
            synced: None,
            reading: None,
            dry: false,
            wait,
            unsettled: Default::default(),
            counted: Default::default(),
        }
    }

    /// Run `query`; when it finds the group missing (its streams were trimmed away or
    /// Redis came back empty), make the group again and run `query` once more.
    pub(super) async fn in_group<T, F, Fut>(&self, query: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        match query().await {
            Err(crate::Error::Backend(inner)) if inner.to_string().contains("NOGROUP") => {
                self.recreate_groups().await?;
                query().await
            }
            other => other,
        }
    }

    /// Create the group on every priority stream, starting after its newest entry: a
    /// group joining the bus receives the events published from then on.
    pub(super) async fn create_groups(&self) -> Result<()> {
        self.make_groups("$").await
    }

    /// Make the group again where it went missing, starting at the first entry of the
    /// stream. A group vanishes with its stream (Redis came back empty, the key was
    /// deleted), and the stream is made anew by the next publish: what it holds was
    /// published after the group was lost and is still owed to the group, which starting
    /// after the newest entry would skip. Should the group alone have been destroyed, it
    /// receives the stream's backlog again: at-least-once delivery takes a duplicate over
    /// a loss.
    pub(super) async fn recreate_groups(&self) -> Result<()> {
        self.make_groups("0").await
    }

    /// Create the group on every priority stream that lacks it, at stream id `start`.
    async fn make_groups(&self, start: &str) -> Result<()> {
        for queue in &self.queues {
            let created: redis::RedisResult<()> = self
                .store
                .connection()
                .xgroup_create_mkstream(queue, &self.options.group, start)
                .await;
            match created {
                Err(err) if err.code() != Some("BUSYGROUP") => return Err(err.into()),
                _ => {}
            }
        }
        Ok(())
    }

    /// Fetch up to `count` deliveries into the empty buffer, waiting up to `wait` for the
    /// first; the buffer stays empty when none came.
    ///
    /// While waiting, this consumer either watches for news on behalf of the group's idle
    /// consumers in this process (and keeps that role through the fetch the news leads
    /// to), or waits its turn to watch; see `wait.rs`.
    async fn fill(&mut self, count: usize, wait: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut watching: Option<super::wait::Watching> = None;
        let mut fetch = true;
        loop {
            if fetch {
                let patient =
                    deadline.saturating_duration_since(tokio::time::Instant::now()) >= PATIENCE;
                let fetched = self.fetch(count, patient).await?;
                if !fetched.is_empty() {
                    if let Some(watching) = watching.take() {
                        watching.hand_on(fetched.len() >= count);
                    }
                    self.buffer.extend(fetched);
                    return Ok(());
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(());
            }
            // Redeliveries come due with the clock, not with a publish: look again soon.
            let nap = (deadline - now).min(Duration::from_millis(250));
            if watching.is_none() {
                watching = self.wait.watch();
            }
            fetch = true;
            match (&watching, self.wait.tails()) {
                (Some(_), Some(tails)) => self.wait_for_news(&tails, nap).await?,
                (Some(_), None) => tokio::time::sleep(nap).await,
                (None, _) => {
                    // Handed the role: take it, and fetch at once when the last watcher's
                    // fetch came back full; else watch from where it left off first.
                    if tokio::time::timeout(nap, self.wait.wait_turn())
                        .await
                        .is_ok()
                    {
                        watching = self.wait.watch();
                        fetch = self.wait.take_more();
                    }
                }
            }
        }
    }

    /// Block up to `wait` until any priority stream has an entry after `tails`.
    async fn wait_for_news(&mut self, tails: &[String], wait: Duration) -> Result<()> {
        if self.waiter.is_none() {
            self.waiter = Some(self.store.blocking_connection().await?);
        }
        let Some(conn) = self.waiter.as_mut() else {
            return Ok(());
        };
        let block_ms = wait.as_millis().clamp(1, 1000) as usize;
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(&self.queues)
            .arg(tails);
        let _: Value = cmd.query_async(conn).await?;
        Ok(())
    }
}

#[async_trait]
impl EventConsumer for RedisConsumer {
    async fn next(&mut self, wait: Duration) -> Result<Option<Delivery>> {
        if self.buffer.is_empty() {
            let count = self.options.prefetch;
            self.fill(count, wait).await?;
        }
        Ok(self.buffer.pop_front())
    }

    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        if self.buffer.is_empty() {
            let count = max.clamp(self.options.prefetch, MOST_FETCHED);
            self.fill(count, wait).await?;
        }
        let take = max.min(self.buffer.len());
        Ok(self.buffer.drain(..take).collect())
    }

    async fn ack(&mut self, id: &str) -> Result<bool> {
        Ok(self.ack_many(&[id.to_owned()]).await? > 0)
    }

    async fn ack_many(&mut self, ids: &[String]) -> Result<usize> {
        let mut by_stream: Vec<Vec<&str>> = vec![Vec::new(); self.queues.len()];
        for id in ids {
            let _: EventId = id.parse()?;
            match self.origin.remove(id) {
                Some(rank) if rank < by_stream.len() => by_stream[rank].push(id),
                // Not handed out here (or forgotten): try every stream.
                _ => by_stream.iter_mut().for_each(|ids| ids.push(id)),
            }
        }
        // What the last reads left unsettled rides along (see `read.rs`).
        let (settle, scripted) = self.settle_commands();
        let group = &self.options.group;
        let answers: Vec<Value> = self
            .store
            .retry(|mut conn| {
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                for (stream, ids) in self.queues.iter().zip(&by_stream) {
                    if !ids.is_empty() {
                        pipe.xack(stream, group, ids);
                    }
                }
                for cmd in &settle {
                    pipe.add_command(cmd.clone());
                }
                async move { pipe.query_async(&mut conn).await }
            })
            .await?;
        let acks = answers.len().saturating_sub(settle.len());
        let mut answers = answers.into_iter();
        let mut acked = 0u64;
        for answer in answers.by_ref().take(acks) {
            acked += redis::from_redis_value::<u64>(answer.extract_error()?)?;
        }
        let pending = std::mem::take(&mut self.unsettled);
        if scripted {
            match answers.next().map(Value::extract_error) {
                Some(Err(err)) if err.code() == Some("NOSCRIPT") => {
                    self.settle_apart(pending).await?
                }
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "event counts not settled; trying again later");
                    self.unsettled = pending;
                }
                Some(Ok(types)) => self.learn_counted(redis::from_redis_value(types)?),
                None => {}
            }
        } else if let Some(err) = answers.find_map(|a| a.extract_error().err()) {
            // Plain commands are not tried again: what went through would count twice.
            tracing::warn!(error = %err, "event counts not settled");
        }
        Ok(usize::try_from(acked).unwrap_or(usize::MAX))
    }
}
