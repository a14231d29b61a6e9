//! One fetch of a Redis consumer. The delivery script (`redis_take.lua`) takes over expired
//! deliveries and the first new entry of the most urgent stream that has one; the rest of
//! the batch comes from that stream by a plain `XREADGROUP` (converting entries into Lua
//! and back out cost Redis several times what the read itself does). A small script then
//! counts those deliveries and acknowledges the entries the group does not want; it rides
//! along with the consumer's next acknowledgement (or runs before its next fetch), so a
//! batch costs no extra round trip.
//!
//! A consumer that dies before that loses nothing: its reads are in the group's pending
//! list like any other delivery and come back after the visibility timeout (unwanted ones
//! are acknowledged then); only their `delivered` count is missing.

use super::RedisConsumer;
use crate::events::redis::{decode_event, lines};
use crate::events::{Delivery, MAX_STAT_TYPES};
use crate::{Error, Result};
use redis::Value;
use std::collections::HashMap;

/// The delivery script.
pub(super) const TAKE: &str = include_str!("redis_take.lua");

/// Counts the deliveries of plain reads and acknowledges what the group does not want.
/// `KEYS`: the stats hash, then the four priority streams. `ARGV`: group, most stat types,
/// the number of event types counted, a type and its count for each, then a priority rank
/// (0-3) and an id for each entry to acknowledge.
pub(super) const SETTLE: &str = r#"
local STATS = KEYS[1]
local GROUP, MOST, n = ARGV[1], tonumber(ARGV[2]) * 4, tonumber(ARGV[3])
for j = 0, n - 1 do
  local field = 'delivered|' .. ARGV[4 + 2 * j]
  if redis.call('HLEN', STATS) >= MOST and redis.call('HEXISTS', STATS, field) == 0 then
    field = 'delivered|_other'
  end
  redis.call('HINCRBY', STATS, field, ARGV[5 + 2 * j])
end
for j = 4 + 2 * n, #ARGV, 2 do
  redis.call('XACK', KEYS[2 + tonumber(ARGV[j])], GROUP, ARGV[j + 1])
end
return 1
"#;

/// What plain reads delivered and found unwanted, not yet settled in Redis.
#[derive(Debug, Default)]
pub(super) struct Unsettled {
    /// Deliveries per event type.
    counts: HashMap<String, u64>,
    /// Entries the group does not want: priority rank and id.
    unwanted: Vec<(usize, String)>,
}

impl Unsettled {
    fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.unwanted.is_empty()
    }

    fn merge(&mut self, other: Unsettled) {
        for (event_type, n) in other.counts {
            *self.counts.entry(event_type).or_default() += n;
        }
        self.unwanted.extend(other.unwanted);
    }
}

/// After a look for deliveries whose visibility timeout ran out found none left, how long
/// (on the bus clock) a consumer waits before it looks again: scanning the pending list
/// costs Redis time in proportion to the events in flight, too much for every fetch of a
/// busy consumer. A tenth of the visibility timeout when that is shorter; an expired
/// delivery comes back this much late at most.
const CLAIM_EVERY_MS: i64 = 100;

/// How far the bus clock may drift from Redis time before a new offset is recorded; an
/// expired delivery comes back up to this much late, never early.
const CLOCK_TOLERANCE_MS: i64 = 100;

/// Most handed-out events whose stream a consumer remembers.
const ORIGIN_LIMIT: usize = 100_000;

/// What the delivery script answers: deliveries (id, JSON, count), per-stream tails,
/// whether expired deliveries may be left, and the stream to read on (1-4, 0 for none).
type Taken = (Vec<(String, String, u32)>, Vec<String>, u8, usize);

impl RedisConsumer {
    /// Fetch up to `count` deliveries: expired ones first, then new ones, most urgent
    /// first. How far it read each stream goes to the group's wait.
    pub(super) async fn fetch(&mut self, count: usize) -> Result<Vec<Delivery>> {
        if !self.unsettled.is_empty() {
            // Fetching again without an acknowledgement in between: settle on its own.
            let pending = std::mem::take(&mut self.unsettled);
            self.settle_apart(pending).await?;
        }
        let now = self.clock.now_ms();
        let vis = i64::try_from(self.options.visibility_timeout.as_millis()).unwrap_or(i64::MAX);
        let claim = self
            .claimed_at
            .is_none_or(|at| now < at || now - at >= (vis / 10).min(CLAIM_EVERY_MS));
        let (rows, tails, left, more) = self.take(now, count, claim).await?;
        self.wait.learn(&tails);
        if claim {
            // Look again at once while there may be more; else once the clock moved on.
            self.claimed_at = (left == 0).then_some(now);
        }
        let taken = rows.len();
        let mut deliveries = Vec::with_capacity(count.min(64));
        for (id, json, times) in rows {
            self.hand_out(&id, &json, times, &mut deliveries);
        }
        if let Some(stream) = more.checked_sub(1).filter(|&s| s < self.queues.len()) {
            if taken < count {
                self.read_on(stream, count - taken, &mut deliveries).await?;
            }
        }
        Ok(deliveries)
    }

    /// Decode one delivery and remember its stream; a malformed event stays unacked.
    fn hand_out(&mut self, id: &str, json: &str, times: u32, deliveries: &mut Vec<Delivery>) {
        match decode_event(id, json) {
            Ok(event) => {
                if self.origin.len() >= ORIGIN_LIMIT {
                    // Never acknowledged; `ack` falls back to trying every stream.
                    self.origin.clear();
                }
                self.origin.insert(id.to_owned(), event.priority.rank());
                deliveries.push(Delivery {
                    event,
                    deliveries: times,
                });
            }
            Err(err) => tracing::warn!(error = %err, id, "a malformed event stays unacked"),
        }
    }

    /// Run the delivery script, making the groups again when they vanished (a Redis
    /// restart without persistence).
    async fn take(&self, now: i64, count: usize, claim: bool) -> Result<Taken> {
        let args = [
            self.options.group.clone(),
            self.options.consumer.clone(),
            now.to_string(),
            self.options.visibility_timeout.as_millis().to_string(),
            self.options.max_deliveries.to_string(),
            count.to_string(),
            self.bus.dead_letters.to_string(),
            lines(&self.options.filter.types),
            lines(&self.options.filter.tags),
            lines(&self.options.filter.sources),
            MAX_STAT_TYPES.to_string(),
            u8::from(claim).to_string(),
            CLOCK_TOLERANCE_MS.to_string(),
        ];
        let run = || {
            self.store.retry(|mut conn| {
                let mut invocation = self.take.prepare_invoke();
                for key in &self.queues {
                    invocation.key(key);
                }
                invocation
                    .key(&self.dead)
                    .key(&self.stats)
                    .key(&self.offsets);
                for arg in &args {
                    invocation.arg(arg);
                }
                async move { invocation.invoke_async::<Value>(&mut conn).await }
            })
        };
        let value = match run().await {
            Err(err) if no_group(&err) => {
                self.create_groups().await?;
                run().await?
            }
            other => other?,
        };
        Ok(redis::from_redis_value(value)?)
    }

    /// Read up to `count` new entries of priority stream `stream` with a plain
    /// `XREADGROUP`, hand out those the group wants and settle the read.
    async fn read_on(
        &mut self,
        stream: usize,
        count: usize,
        deliveries: &mut Vec<Delivery>,
    ) -> Result<()> {
        let queue = &self.queues[stream];
        let read = || {
            self.store.retry(|mut conn| {
                let mut cmd = redis::cmd("XREADGROUP");
                cmd.arg("GROUP")
                    .arg(&self.options.group)
                    .arg(&self.options.consumer)
                    .arg("COUNT")
                    .arg(count)
                    .arg("STREAMS")
                    .arg(queue)
                    .arg(">");
                async move { cmd.query_async::<Value>(&mut conn).await }
            })
        };
        let reply = match read().await {
            Err(err) if no_group(&err) => {
                self.create_groups().await?;
                read().await?
            }
            other => other?,
        };
        let entries = stream_entries(reply);
        let Some((last, _)) = entries.last() else {
            return Ok(());
        };
        let mut tails = vec![String::new(); self.queues.len()];
        tails[stream] = last.clone();
        self.wait.learn(&tails);
        let mut read = Unsettled::default();
        for (id, json) in entries {
            let event = match json.as_deref().map(|json| decode_event(&id, json)) {
                Some(Ok(event)) => event,
                Some(Err(err)) => {
                    tracing::warn!(error = %err, id, "a malformed event stays unacked");
                    continue;
                }
                None => {
                    tracing::warn!(id, "an event entry without a body stays unacked");
                    continue;
                }
            };
            if !self.options.wants(&event) {
                read.unwanted.push((stream, id));
                continue;
            }
            *read.counts.entry(event.event_type.clone()).or_default() += 1;
            if self.origin.len() >= ORIGIN_LIMIT {
                self.origin.clear();
            }
            self.origin.insert(id, stream);
            deliveries.push(Delivery {
                event,
                deliveries: 1,
            });
        }
        self.unsettled.merge(read);
        Ok(())
    }

    /// The keys and arguments of [`SETTLE`] for `pending`.
    fn settle_parts<'a>(&'a self, pending: &'a Unsettled) -> (Vec<&'a str>, Vec<String>) {
        let mut keys = vec![self.stats.as_str()];
        keys.extend(self.queues.iter().map(String::as_str));
        let mut args = vec![
            self.options.group.clone(),
            MAX_STAT_TYPES.to_string(),
            pending.counts.len().to_string(),
        ];
        for (event_type, n) in &pending.counts {
            args.push(event_type.clone());
            args.push(n.to_string());
        }
        for (rank, id) in &pending.unwanted {
            args.push(rank.to_string());
            args.push(id.clone());
        }
        (keys, args)
    }

    /// The settling of what plain reads left unsettled, as a command to add to a pipeline
    /// (none when nothing is); it fails with `NOSCRIPT` when Redis lost its scripts, then
    /// [`settle_apart`](Self::settle_apart) does it.
    pub(super) fn settle_command(&self) -> Option<redis::Cmd> {
        if self.unsettled.is_empty() {
            return None;
        }
        let (keys, args) = self.settle_parts(&self.unsettled);
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.settle.get_hash())
            .arg(keys.len())
            .arg(keys)
            .arg(args);
        Some(cmd)
    }

    /// Settle `pending` in a round trip of its own, loading the script if need be; kept
    /// for the next try when that fails.
    pub(super) async fn settle_apart(&mut self, pending: Unsettled) -> Result<()> {
        let (keys, args) = self.settle_parts(&pending);
        let settled = self
            .store
            .retry(|mut conn| {
                let mut invocation = self.settle.prepare_invoke();
                for key in &keys {
                    invocation.key(*key);
                }
                for arg in &args {
                    invocation.arg(arg);
                }
                async move { invocation.invoke_async::<()>(&mut conn).await }
            })
            .await;
        if settled.is_err() {
            self.unsettled.merge(pending);
        }
        settled
    }
}

/// Whether `err` says the consumer group is missing.
fn no_group(err: &Error) -> bool {
    matches!(err, Error::Backend(inner) if inner.to_string().contains("NOGROUP"))
}

/// The entries of a one-stream `XREADGROUP` reply: each id and its `e` field (the event
/// JSON), in order.
fn stream_entries(reply: Value) -> Vec<(String, Option<String>)> {
    let streams = match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|stream| match stream {
                Value::Array(mut pair) if pair.len() == 2 => pair.pop(),
                _ => None,
            })
            .collect(),
        Value::Map(streams) => streams.into_iter().map(|(_, entries)| entries).collect(),
        _ => Vec::new(),
    };
    let mut found = Vec::new();
    for entries in streams {
        let Value::Array(entries) = entries else {
            continue;
        };
        for entry in entries {
            let Value::Array(mut entry) = entry else {
                continue;
            };
            let (Some(fields), Some(id)) = (entry.pop(), entry.pop()) else {
                continue;
            };
            let Ok(id) = redis::from_redis_value::<String>(id) else {
                continue;
            };
            found.push((id, body(fields)));
        }
    }
    found
}

/// The `e` field of an entry's fields.
fn body(fields: Value) -> Option<String> {
    let pairs: Vec<(Value, Value)> = match fields {
        Value::Array(flat) => {
            let mut flat = flat.into_iter();
            std::iter::from_fn(|| Some((flat.next()?, flat.next()?))).collect()
        }
        Value::Map(pairs) => pairs,
        _ => return None,
    };
    pairs.into_iter().find_map(|(name, value)| match name {
        Value::BulkString(name) if name == b"e" => redis::from_redis_value(value).ok(),
        _ => None,
    })
}
