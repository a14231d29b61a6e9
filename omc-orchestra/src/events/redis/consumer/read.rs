//! Plain reads of a Redis consumer (`XREADGROUP` outside the delivery script) and their
//! settling: a small script counts their deliveries and acknowledges the entries the
//! group does not want; it rides along with the consumer's next acknowledgement (or runs
//! before its next fetch), so a batch costs no extra round trip.
//!
//! A consumer that dies before that loses nothing: its reads are in the group's pending
//! list like any other delivery and come back after the visibility timeout (unwanted ones
//! are acknowledged then); only their `delivered` count is missing.

use super::fetch::ORIGIN_LIMIT;
use super::RedisConsumer;
use crate::events::redis::decode_event;
use crate::events::{Delivery, MAX_STAT_TYPES};
use crate::Result;
use redis::Value;
use std::collections::HashMap;

/// Counts the deliveries of plain reads and acknowledges what the group does not want.
/// `KEYS`: the stats hash, then the four priority streams. `ARGV`: group, most stat types,
/// the number of event types counted, a type and its count for each, then a priority rank
/// (0-3) and an id for each entry to acknowledge. Answers the types counted under their
/// own field (not `_other`): from then on the consumer counts those with a plain
/// `HINCRBY` (stats fields are never removed).
pub(super) const SETTLE: &str = r#"
local STATS = KEYS[1]
local GROUP, MOST, n = ARGV[1], tonumber(ARGV[2]) * 4, tonumber(ARGV[3])
local own = {}
for j = 0, n - 1 do
  local t = ARGV[4 + 2 * j]
  local field = 'delivered|' .. t
  if redis.call('HLEN', STATS) >= MOST and redis.call('HEXISTS', STATS, field) == 0 then
    field = 'delivered|_other'
  else
    own[#own + 1] = t
  end
  redis.call('HINCRBY', STATS, field, ARGV[5 + 2 * j])
end
for j = 4 + 2 * n, #ARGV, 2 do
  redis.call('XACK', KEYS[2 + tonumber(ARGV[j])], GROUP, ARGV[j + 1])
end
return own
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
    /// Whether there is nothing to settle.
    pub(super) fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.unwanted.is_empty()
    }

    /// Add `other` to this.
    pub(super) fn merge(&mut self, other: Unsettled) {
        for (event_type, n) in other.counts {
            *self.counts.entry(event_type).or_default() += n;
        }
        self.unwanted.extend(other.unwanted);
    }
}

/// The entries of one stream in a read reply: its key, then each id and its `e` field.
type StreamEntries = (String, Vec<(String, Option<String>)>);

impl RedisConsumer {
    /// A plain read of up to `count` new entries of priority stream `stream`.
    fn read_command(&self, stream: usize, count: usize) -> redis::Cmd {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.options.group)
            .arg(&self.options.consumer)
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(&self.queues[stream])
            .arg(">");
        cmd
    }

    /// Read up to `count` new entries of priority stream `stream` with a plain
    /// `XREADGROUP`, hand out those the group wants and note the read to settle.
    pub(super) async fn read_on(
        &mut self,
        stream: usize,
        count: usize,
        deliveries: &mut Vec<Delivery>,
    ) -> Result<()> {
        let read = || {
            self.store.retry(|mut conn| {
                let cmd = self.read_command(stream, count);
                async move { cmd.query_async::<Value>(&mut conn).await }
            })
        };
        let reply = self.in_group(read).await?;
        for (_, entries) in stream_entries(reply) {
            self.hand_out_entries(stream, entries, deliveries);
        }
        Ok(())
    }

    /// In one round trip, read up to `count` new entries of priority stream `stream` and
    /// the first new entry of each more urgent one; hand out what the group wants. Answers
    /// the most urgent stream above `stream` that had an entry, and how many entries were
    /// read in all.
    pub(super) async fn read_along(
        &mut self,
        stream: usize,
        count: usize,
        deliveries: &mut Vec<Delivery>,
    ) -> Result<(Option<usize>, usize)> {
        let answers: Vec<Value> = self
            .store
            .retry(|mut conn| {
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                if stream > 0 {
                    let above = &self.queues[..stream];
                    pipe.cmd("XREADGROUP")
                        .arg("GROUP")
                        .arg(&self.options.group)
                        .arg(&self.options.consumer)
                        .arg("COUNT")
                        .arg(1)
                        .arg("STREAMS")
                        .arg(above)
                        .arg(vec![">"; above.len()]);
                }
                pipe.add_command(self.read_command(stream, count));
                async move { pipe.query_async(&mut conn).await }
            })
            .await?;
        let (mut urgent, mut held, mut failure) = (None, 0, None);
        for answer in answers {
            match answer.extract_error() {
                Ok(reply) => {
                    for (key, entries) in stream_entries(reply) {
                        let Some(from) = self.queues.iter().position(|q| *q == key) else {
                            continue;
                        };
                        if from < stream && !entries.is_empty() {
                            urgent = Some(urgent.map_or(from, |u: usize| u.min(from)));
                        }
                        held += self.hand_out_entries(from, entries, deliveries);
                    }
                }
                Err(err) => failure = Some(err),
            }
        }
        match failure {
            Some(err) if err.code() == Some("NOGROUP") => self.recreate_groups().await?,
            // What was read is handed out; the error shows again on the next fetch.
            Some(err) if urgent.is_none() && held == 0 => return Err(err.into()),
            _ => {}
        }
        Ok((urgent, held))
    }

    /// Hand out the entries of a plain read of priority stream `stream` that the group
    /// wants, and note them to settle; answers how many entries there were.
    fn hand_out_entries(
        &mut self,
        stream: usize,
        entries: Vec<(String, Option<String>)>,
        deliveries: &mut Vec<Delivery>,
    ) -> usize {
        let Some((last, _)) = entries.last() else {
            return 0;
        };
        let mut tails = vec![String::new(); self.queues.len()];
        tails[stream] = last.clone();
        self.wait.learn(&tails);
        let held = entries.len();
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
        held
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

    /// The settling of what plain reads left unsettled, as commands to add to a pipeline
    /// (none when nothing is), and whether that is the script: plain `HINCRBY`s and
    /// `XACK`s when every type counted has its own field already. The script fails with
    /// `NOSCRIPT` when Redis lost its scripts, then [`settle_apart`](Self::settle_apart)
    /// does it.
    pub(super) fn settle_commands(&self) -> (Vec<redis::Cmd>, bool) {
        let pending = &self.unsettled;
        if pending.is_empty() {
            return (Vec::new(), false);
        }
        if pending.counts.keys().all(|t| self.counted.contains(t)) {
            let mut cmds = Vec::new();
            for (event_type, n) in &pending.counts {
                let mut cmd = redis::cmd("HINCRBY");
                cmd.arg(&self.stats)
                    .arg(format!("delivered|{event_type}"))
                    .arg(n);
                cmds.push(cmd);
            }
            for (stream, queue) in self.queues.iter().enumerate() {
                let ids: Vec<&str> = pending
                    .unwanted
                    .iter()
                    .filter(|(rank, _)| *rank == stream)
                    .map(|(_, id)| id.as_str())
                    .collect();
                if !ids.is_empty() {
                    let mut cmd = redis::cmd("XACK");
                    cmd.arg(queue).arg(&self.options.group).arg(ids);
                    cmds.push(cmd);
                }
            }
            return (cmds, false);
        }
        let (keys, args) = self.settle_parts(pending);
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.settle.get_hash())
            .arg(keys.len())
            .arg(keys)
            .arg(args);
        (vec![cmd], true)
    }

    /// Note the types the settling script counted under their own field.
    pub(super) fn learn_counted(&mut self, types: Vec<String>) {
        if self.counted.len() < 4 * MAX_STAT_TYPES {
            self.counted.extend(types);
        }
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
                async move { invocation.invoke_async::<Vec<String>>(&mut conn).await }
            })
            .await;
        match settled {
            Ok(types) => {
                self.learn_counted(types);
                Ok(())
            }
            Err(err) => {
                self.unsettled.merge(pending);
                Err(err)
            }
        }
    }
}

/// The entries of an `XREADGROUP` reply, per stream: its key, then each id and its `e`
/// field (the event JSON), in order.
fn stream_entries(reply: Value) -> Vec<StreamEntries> {
    let streams: Vec<(Value, Value)> = match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|stream| match stream {
                Value::Array(pair) if pair.len() == 2 => {
                    let mut pair = pair.into_iter();
                    Some((pair.next()?, pair.next()?))
                }
                _ => None,
            })
            .collect(),
        Value::Map(streams) => streams,
        _ => Vec::new(),
    };
    let mut found = Vec::with_capacity(streams.len());
    for (key, entries) in streams {
        let (Ok(key), Value::Array(entries)) = (redis::from_redis_value::<String>(key), entries)
        else {
            continue;
        };
        let mut read = Vec::with_capacity(entries.len());
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
            read.push((id, body(fields)));
        }
        found.push((key, read));
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
