//! Group commit of publishes: the events that queued up while earlier batches were in
//! flight go to Redis in one script call, each with the semantics of a lone publish
//! (ids, idempotency keys, history trim, per-priority streams, stats).

use crate::backend::RedisStore;
use crate::Result;
use redis::Script;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Publishes `ARGV[1]` events. `ARGV[2..6]`: history length, oldest ms kept, backlog cap,
/// most stat types, the live channel. Then 5 arguments per event: ms, JSON, type,
/// priority rank, idempotency window (`''` for none). `KEYS`: history,
/// stats, the four priority streams, the batch's key, then the idempotency key of each
/// event that has one, in order. Answers a line per event: its id, or `={id}` when its
/// key had been used already (one string: far cheaper to parse than an array). The new
/// events go to the live channel as one message (see `live.rs`). The answer is kept
/// under the batch's key for a while, so a resend of the batch (after a timeout that left
/// its outcome unknown) publishes nothing twice and answers the same.
///
/// Entries hold the event JSON only (`e`), in history and in the priority streams alike:
/// consumers decode it anyway, and the delivery script reads the few entries it takes
/// itself from the JSON too.
///
/// History and the priority streams are trimmed and the stats are counted once per call
/// rather than once per event: the script runs atomically, so nobody sees the difference.
const PUBLISH_MANY: &str = r#"
local HIST, STATS = KEYS[1], KEYS[2]
local n, hlen, oldest, backlog = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local most, LIVE = tonumber(ARGV[5]) * 4, ARGV[6]
local SENT = KEYS[7]
local prior = redis.call('GET', SENT)
if prior then return prior end
local out, counts, news, touched, k = {}, {}, {}, {}, 7
for i = 1, n do
  local a = 6 + (i - 1) * 5
  local e, window = ARGV[a + 2], ARGV[a + 5]
  local once, first = nil, false
  if window ~= '' then
    k = k + 1
    once = KEYS[k]
    first = redis.call('GET', once)
  end
  if first then
    out[i] = '=' .. first
  else
    local id = redis.pcall('XADD', HIST, ARGV[a + 1] .. '-*', 'e', e)
    if type(id) == 'table' and id.err then
      -- The clock is behind the newest entry (another replica's clock, or a clock set
      -- back): keep the newest entry's millisecond so ids stay ordered.
      local last = redis.call('XREVRANGE', HIST, '+', '-', 'COUNT', 1)
      local at = last[1] and string.match(last[1][1], '^(%d+)-') or ARGV[a + 1]
      id = redis.pcall('XADD', HIST, at .. '-*', 'e', e)
      if type(id) == 'table' and id.err then
        id = redis.call('XADD', HIST, '*', 'e', e)
      end
    end
    local q = KEYS[3 + tonumber(ARGV[a + 4])]
    redis.call('XADD', q, id, 'e', e)
    touched[q] = true
    local t = ARGV[a + 3]
    counts[t] = (counts[t] or 0) + 1
    if once then redis.call('SET', once, id, 'PX', window) end
    out[i] = id
    local line = #news
    news[line + 1], news[line + 2], news[line + 3], news[line + 4] = id, ' ', e, '\n'
  end
end
redis.call('XTRIM', HIST, 'MAXLEN', hlen)
redis.call('XTRIM', HIST, 'MINID', oldest)
-- The hard bound only: trimming to what the groups need is `backlog.rs`'s job.
for q in pairs(touched) do cap_stream(q, backlog, STATS) end
for t, c in pairs(counts) do
  local field = 'published|' .. t
  if redis.call('HLEN', STATS) >= most and redis.call('HEXISTS', STATS, field) == 0 then
    field = 'published|_other'
  end
  redis.call('HINCRBY', STATS, field, c)
end
if #news > 0 then
  news[#news] = nil
  redis.call('PUBLISH', LIVE, table.concat(news))
end
local answer = table.concat(out, '\n')
redis.call('SET', SENT, answer, 'PX', RESEND_WINDOW_MS)
return answer
"#;

/// Most events sent in one script call.
const MOST: usize = 256;

/// Most script calls in flight at once. With 50 publishers on 2 cores, three gave about
/// 6 % more events/s than two (smaller batches, but less time waiting for a turn), and
/// one about 5 % less.
const IN_FLIGHT: usize = 3;

/// One event ready to send: its idempotency key (the full Redis key), the oldest history
/// time to keep when it is published, its time and the rest of its script arguments.
pub(super) struct Outgoing {
    /// Oldest history time (ms) to keep, read from the clock at publish.
    pub oldest_ms: i64,
    /// Key holding the id published under the event's idempotency key, if it has one.
    pub once: Option<String>,
    /// The publisher's clock (ms) when it was published: its id's millisecond, unless an
    /// event sent before it got a later one.
    pub ms: i64,
    /// JSON, type, priority rank, idempotency window.
    pub args: [String; 4],
}

/// What the script answers for one event: whether it was stored now, and its id.
pub(super) type Published = (u8, String);

/// One publish waiting for its batch, and where to answer.
pub(super) type Pending = crate::backend::Pending<Outgoing, Published>;

/// Where a batch goes, and the bus-wide arguments of the script.
pub(super) struct Publisher {
    /// The bus's store.
    pub store: RedisStore,
    /// History stream, stats hash, then the four priority streams.
    pub keys: [String; 6],
    /// Most events kept in history.
    pub history_len: String,
    /// Hard cap of each priority stream ([`BusOptions::backlog_cap`](crate::events::BusOptions::backlog_cap)).
    pub backlog: String,
    /// Most distinct event types counted in stats.
    pub max_types: String,
    /// The live channel.
    pub channel: String,
    /// Where a batch keeps its answer: this and the batch's own key.
    pub batch_base: String,
    /// The batch script.
    pub script: Script,
    /// The latest id millisecond sent so far: concurrent publishers read the clock in
    /// one order and queue up in another, and an id behind the newest entry costs the
    /// script a retry.
    pub sent_ms: AtomicI64,
}

impl Publisher {
    /// The script that publishes a batch.
    pub(super) fn script() -> Script {
        let window = crate::backend::RESEND_WINDOW.as_millis().to_string();
        let body = PUBLISH_MANY.replace("RESEND_WINDOW_MS", &window);
        Script::new(&format!("{}{body}", super::backlog::FUNCTIONS))
    }

    /// Publish `events` in one script call, keeping history from `oldest_ms` on.
    async fn send(&self, events: &[Outgoing]) -> Result<Vec<Published>> {
        let oldest_ms = events.iter().map(|e| e.oldest_ms).max().unwrap_or(0);
        // Fixed before the first attempt: a resend after a timeout finds the answer of an
        // attempt that got through, and publishes nothing twice.
        let batch = format!("{}{}", self.batch_base, uuid::Uuid::new_v4().simple());
        let mut keys: Vec<&str> = self.keys.iter().map(String::as_str).collect();
        keys.push(&batch);
        keys.extend(events.iter().filter_map(|e| e.once.as_deref()));
        let mut args = Vec::with_capacity(6 + events.len() * 5);
        args.extend([
            events.len().to_string(),
            self.history_len.clone(),
            oldest_ms.to_string(),
            self.backlog.clone(),
            self.max_types.clone(),
            self.channel.clone(),
        ]);
        let mut ms = self.sent_ms.load(Ordering::Relaxed);
        for event in events {
            ms = ms.max(event.ms);
            args.push(ms.to_string());
            args.extend(event.args.iter().cloned());
        }
        self.sent_ms.fetch_max(ms, Ordering::Relaxed);
        let answer = self.store.eval_batch(&self.script, &keys, &args).await;
        let answer = answer.and_then(|value| Ok(redis::from_redis_value::<String>(value)?));
        answer.map(|answer| {
            answer
                .split('\n')
                .map(|line| match line.strip_prefix('=') {
                    Some(first) => (0, first.to_owned()),
                    None => (1, line.to_owned()),
                })
                .collect()
        })
    }
}

/// Send the publishes that queued up meanwhile in one script call, until the bus is
/// dropped.
pub(super) async fn publish_in_batches(
    publisher: Arc<Publisher>,
    pending: mpsc::UnboundedReceiver<Pending>,
) {
    crate::backend::group_commit(pending, MOST, IN_FLIGHT, move |events: Vec<Outgoing>| {
        let publisher = publisher.clone();
        async move { publisher.send(&events).await }
    })
    .await;
}
