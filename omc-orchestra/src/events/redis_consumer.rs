//! A member of a consumer group on the Redis bus: one delivery script per fetch.

use super::{decode_event, from_ms, lines};
use crate::backend::RedisStore;
use crate::clock::SharedClock;
use crate::events::{
    BusOptions, ConsumerOptions, DeadLetter, Delivery, EventConsumer, EventId, MAX_STAT_TYPES,
};
use crate::{Error, Result};
use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script, Value};
use serde::Deserialize;
use std::collections::HashMap;
use std::time::Duration;

/// Subtracted from the clock's time before it is written as a delivery time, so that it
/// is always in Redis's past (Redis replaces a future delivery time with its own now).
const STAMP_SHIFT_MS: i64 = 1_000_000_000_000;

/// Most handed-out events whose stream a consumer remembers.
const ORIGIN_LIMIT: usize = 100_000;

const TAKE: &str = r#"
local DEAD, STATS = KEYS[5], KEYS[6]
local GROUP, CONSUMER = ARGV[1], ARGV[2]
local NOW, VIS, MAXD = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local COUNT, DEADMAX, SHIFT = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local TYPES, TAGS, SOURCES, MAXSTAT = ARGV[9], ARGV[10], ARGV[11], tonumber(ARGV[12])
local t = redis.call('TIME')
local server = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local minidle = VIS + server - NOW + SHIFT
if minidle < 1 then minidle = 1 end
local stamp = string.format('%d', NOW - SHIFT)
-- Counters are added up here and written once per field at the end.
local counts, claims = {}, {}
local function stat(kind, etype)
  local field = kind .. '|' .. etype
  counts[field] = (counts[field] or 0) + 1
end
local function flush()
  local full = redis.call('HLEN', STATS) >= MAXSTAT * 4
  for field, n in pairs(counts) do
    if full and redis.call('HEXISTS', STATS, field) == 0 then
      field = string.match(field, '^[^|]*') .. '|_other'
    end
    redis.call('HINCRBY', STATS, field, n)
  end
  -- Stamp this batch's deliveries with the clock's time (one XCLAIM per stream).
  for i, ids in pairs(claims) do
    table.insert(ids, 'TIME')
    table.insert(ids, stamp)
    table.insert(ids, 'JUSTID')
    redis.call('XCLAIM', KEYS[i], GROUP, CONSUMER, 0, unpack(ids))
  end
end
local function claim(i, id)
  if not claims[i] then claims[i] = {} end
  table.insert(claims[i], id)
end
local function fields(flat)
  local f = {}
  for i = 1, #flat, 2 do f[flat[i]] = flat[i + 1] end
  return f
end
local function listed(list, value)
  return list == '' or string.find('\n' .. list .. '\n', '\n' .. value .. '\n', 1, true) ~= nil
end
local function wanted(f)
  if f.r ~= '' and f.r ~= GROUP then return false end
  if not listed(TYPES, f.t) or not listed(SOURCES, f.s) then return false end
  if TAGS == '' then return true end
  for tag in string.gmatch(f.g, '[^\n]+') do
    if listed(TAGS, tag) then return true end
  end
  return false
end
local function park(id, f, deliveries, reason)
  redis.call('LPUSH', DEAD, cjson.encode({eventId = id, event = f and f.e or '', group = GROUP,
    deliveries = deliveries, reason = reason, at = NOW}))
  redis.call('LTRIM', DEAD, 0, DEADMAX - 1)
  if f then stat('dead', f.t) end
end
local out = {}
for i = 1, 4 do
  if #out >= COUNT then break end
  local claimed = redis.call('XAUTOCLAIM', KEYS[i], GROUP, CONSUMER, minidle, '0-0',
    'COUNT', COUNT - #out)
  for _, entry in ipairs(claimed[2]) do
    local id = entry[1]
    if type(entry[2]) == 'table' then
      local f = fields(entry[2])
      local pending = redis.call('XPENDING', KEYS[i], GROUP, id, id, 1)
      local n = tonumber(pending[1][4])
      if n > MAXD then
        redis.call('XACK', KEYS[i], GROUP, id)
        park(id, f, n - 1, 'not acknowledged after ' .. (n - 1) .. ' deliveries')
      else
        claim(i, id)
        stat('redelivered', f.t)
        table.insert(out, {id, f.e, n})
      end
    end
  end
  for _, id in ipairs(claimed[3] or {}) do
    park(id, nil, 0, 'trimmed from the backlog before it was acknowledged')
  end
end
for i = 1, 4 do
  while #out < COUNT do
    local r = redis.call('XREADGROUP', 'GROUP', GROUP, CONSUMER, 'COUNT', COUNT - #out,
      'STREAMS', KEYS[i], '>')
    if not r or not r[1] or #r[1][2] == 0 then break end
    for _, entry in ipairs(r[1][2]) do
      local id = entry[1]
      local f = fields(entry[2])
      if wanted(f) then
        claim(i, id)
        stat('delivered', f.t)
        table.insert(out, {id, f.e, 1})
      else
        redis.call('XACK', KEYS[i], GROUP, id)
      end
    end
  end
end
flush()
local tails = {}
if #out == 0 then
  for i = 1, 4 do
    local last = redis.call('XREVRANGE', KEYS[i], '+', '-', 'COUNT', 1)
    tails[i] = last[1] and last[1][1] or '0-0'
  end
end
return {out, tails}
"#;

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
    clock: SharedClock,
    bus: BusOptions,
    options: ConsumerOptions,
    take: Script,
    /// Fetched, not yet handed out (when `prefetch` > 1).
    buffer: std::collections::VecDeque<Delivery>,
    /// Which priority stream each handed-out, unacknowledged event came from.
    origin: HashMap<String, usize>,
    /// A connection of its own for blocking waits, opened on first need.
    waiter: Option<ConnectionManager>,
}

impl RedisConsumer {
    pub(super) fn new(
        store: RedisStore,
        queues: [String; 4],
        dead: String,
        stats: String,
        clock: SharedClock,
        bus: BusOptions,
        options: ConsumerOptions,
    ) -> Self {
        Self {
            store,
            queues,
            dead,
            stats,
            clock,
            bus,
            options,
            take: Script::new(TAKE),
            buffer: Default::default(),
            origin: HashMap::new(),
            waiter: None,
        }
    }

    /// Create the group on every priority stream, starting after its newest entry.
    pub(super) async fn create_groups(&self) -> Result<()> {
        for queue in &self.queues {
            let created: redis::RedisResult<()> = self
                .store
                .connection()
                .xgroup_create_mkstream(queue, &self.options.group, "$")
                .await;
            match created {
                Err(err) if err.code() != Some("BUSYGROUP") => return Err(err.into()),
                _ => {}
            }
        }
        Ok(())
    }

    /// Run the delivery script once: the fetched deliveries, or the streams' tails to
    /// wait on when there were none.
    async fn fetch(&mut self) -> Result<(Vec<Delivery>, Vec<String>)> {
        let args = [
            self.options.group.clone(),
            self.options.consumer.clone(),
            self.clock.now_ms().to_string(),
            self.options.visibility_timeout.as_millis().to_string(),
            self.options.max_deliveries.to_string(),
            self.options.prefetch.to_string(),
            self.bus.dead_letters.to_string(),
            STAMP_SHIFT_MS.to_string(),
            lines(&self.options.filter.types),
            lines(&self.options.filter.tags),
            lines(&self.options.filter.sources),
            MAX_STAT_TYPES.to_string(),
        ];
        let run = || {
            self.store.retry(|mut conn| {
                let mut invocation = self.take.prepare_invoke();
                for key in &self.queues {
                    invocation.key(key);
                }
                invocation.key(&self.dead).key(&self.stats);
                for arg in &args {
                    invocation.arg(arg);
                }
                async move { invocation.invoke_async::<Value>(&mut conn).await }
            })
        };
        let value = match run().await {
            // The groups vanished (a Redis restart without persistence): make them again.
            Err(Error::Backend(err)) if err.to_string().contains("NOGROUP") => {
                self.create_groups().await?;
                run().await?
            }
            other => other?,
        };
        let (rows, tails): (Vec<(String, String, u32)>, Vec<String>) =
            redis::from_redis_value(value)?;
        let mut deliveries = Vec::with_capacity(rows.len());
        for (id, json, count) in rows {
            match decode_event(&id, &json) {
                Ok(event) => {
                    if self.origin.len() >= ORIGIN_LIMIT {
                        // Never acknowledged; `ack` falls back to trying every stream.
                        self.origin.clear();
                    }
                    self.origin.insert(id, event.priority.rank());
                    deliveries.push(Delivery {
                        event,
                        deliveries: count,
                    });
                }
                Err(err) => tracing::warn!(error = %err, id, "a malformed event stays unacked"),
            }
        }
        Ok((deliveries, tails))
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
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(delivery) = self.buffer.pop_front() {
                return Ok(Some(delivery));
            }
            let (fetched, tails) = self.fetch().await?;
            if !fetched.is_empty() {
                self.buffer.extend(fetched);
                continue;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            // Redeliveries come due with the clock, not with a publish: look again soon.
            let nap = (deadline - now).min(Duration::from_millis(250));
            if tails.len() == self.queues.len() {
                self.wait_for_news(&tails, nap).await?;
            } else {
                tokio::time::sleep(nap).await;
            }
        }
    }

    async fn ack(&mut self, id: &str) -> Result<bool> {
        let _: EventId = id.parse()?;
        let streams: Vec<&String> = match self.origin.remove(id) {
            Some(rank) => self.queues.get(rank).into_iter().collect(),
            None => self.queues.iter().collect(),
        };
        let group = &self.options.group;
        let acked: Vec<u64> = self
            .store
            .retry(|mut conn| {
                let mut pipe = redis::pipe();
                for stream in &streams {
                    pipe.xack(*stream, group, &[id]);
                }
                async move { pipe.query_async(&mut conn).await }
            })
            .await?;
        Ok(acked.iter().sum::<u64>() > 0)
    }

    async fn ack_many(&mut self, ids: &[String]) -> Result<usize> {
        let mut by_stream: Vec<Vec<&str>> = vec![Vec::new(); self.queues.len()];
        for id in ids {
            let _: EventId = id.parse()?;
            match self.origin.remove(id) {
                Some(rank) if rank < by_stream.len() => by_stream[rank].push(id),
                _ => by_stream.iter_mut().for_each(|ids| ids.push(id)),
            }
        }
        let group = &self.options.group;
        let acked: Vec<u64> = self
            .store
            .retry(|mut conn| {
                let mut pipe = redis::pipe();
                for (stream, ids) in self.queues.iter().zip(&by_stream) {
                    if !ids.is_empty() {
                        pipe.xack(stream, group, ids);
                    }
                }
                async move { pipe.query_async(&mut conn).await }
            })
            .await?;
        Ok(usize::try_from(acked.iter().sum::<u64>()).unwrap_or(usize::MAX))
    }
}
