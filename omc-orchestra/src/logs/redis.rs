//! The Redis log store: any number of logging servers share one searchable store.
//!
//! Keys:
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `{prefix}:log:{logs}:stream` | stream | one entry per record, field `r` = the record's JSON; capped at `maxLen` entries (`MAXLEN ~`) and, with a retention, trimmed by age (`MINID ~`) |
//! | `{prefix}:log:{logs}:sent:{batch}` | string | a batch's newest entry id, so a resend writes nothing twice; expires after a minute |
//!
//! Entry ids are chosen so that an entry's id time is never earlier than its record's
//! timestamp (`{timestamp}-*` when that is after the newest entry, `*` otherwise). So the
//! stream is in write order, and a scan newest-first for records since `t` can stop at
//! the first id older than `t`; age trimming by id never removes a record younger than
//! the retention.
//!
//! A batch is one Lua script (all its entries, then the age trim). Search and stats walk
//! the stream newest first with `XREVRANGE` in pages; the cursor is an entry id. Live tail
//! is one `XREAD BLOCK` reader per store, fanned out on a local broadcast, so a tail sees
//! records written through any replica.

use super::query::SCAN_BUDGET;
use super::stats::{StatsBuilder, DEFAULT_TOP};
use super::tail::{Tailed, TAIL_CAPACITY};
use super::{validate_batch, LogPage, LogQuery, LogRecord, LogSink, LogStats, LogTail, StatsQuery};
use crate::backend::RedisStore;
use crate::clock::SharedClock;
use crate::{Error, Result};
use async_trait::async_trait;
use redis::streams::StreamRangeReply;
use redis::Script;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// Entries the stream keeps by default (approximately: trimming is `MAXLEN ~`).
pub const STREAM_MAXLEN: usize = 1_000_000;
/// Entries fetched per `XREVRANGE` page.
const PAGE: usize = 1_000;

/// `KEYS`: the stream, the batch's key. The newest entry id is kept under the batch's key
/// for a while, so a resend of the batch (after a timeout that left its outcome unknown)
/// writes nothing twice and answers the same.
const WRITE: &str = r#"
local KEY, SENT, MAXLEN, CUTOFF = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local prior = redis.call('GET', SENT)
if prior then return prior end
local last, newest = nil, ''
for i = 3, #ARGV, 2 do
  local ts = tonumber(ARGV[i])
  local id = nil
  if last == nil or ts >= last then
    id = redis.pcall('XADD', KEY, 'MAXLEN', '~', MAXLEN, ARGV[i] .. '-*', 'r', ARGV[i + 1])
    if type(id) == 'table' then id = nil end
  end
  if id == nil then
    id = redis.call('XADD', KEY, 'MAXLEN', '~', MAXLEN, '*', 'r', ARGV[i + 1])
  end
  last = tonumber(string.match(id, '^(%d+)'))
  newest = id
end
if CUTOFF ~= '' then redis.call('XTRIM', KEY, 'MINID', '~', CUTOFF) end
redis.call('SET', SENT, newest, 'PX', RESEND_WINDOW_MS)
return newest
"#;

/// A log store in Redis, under a [`RedisStore`]'s prefix.
pub struct RedisLogSink {
    store: RedisStore,
    key: String,
    /// Where a batch keeps its answer: this and the batch's own key.
    batch_base: String,
    write: Script,
    clock: SharedClock,
    max_len: usize,
    retention: Option<Duration>,
    live: broadcast::Sender<Tailed>,
    /// The newest position this replica wrote or read; where new tails start.
    newest: Arc<parking_lot::Mutex<u128>>,
    reader: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for RedisLogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLogSink")
            .field("key", &self.key)
            .field("max_len", &self.max_len)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisLogSink {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl RedisLogSink {
    /// A store in `store` keeping about [`STREAM_MAXLEN`] records. Live tails see records
    /// written after this call, through any replica.
    pub async fn new(store: RedisStore, clock: SharedClock) -> Result<Self> {
        Self::with_limits(store, clock, STREAM_MAXLEN, None).await
    }

    /// A store keeping about `max_len` records, and none older than `retention` (by the
    /// time they were written) when one is set.
    pub async fn with_limits(
        store: RedisStore,
        clock: SharedClock,
        max_len: usize,
        retention: Option<Duration>,
    ) -> Result<Self> {
        let key = store.key("log", "logs", "stream");
        let batch_base = store.key("log", "logs", "sent:");
        let live = broadcast::channel(TAIL_CAPACITY).0;
        let last = store.stream_tail(&key).await?;
        let newest = Arc::new(parking_lot::Mutex::new(position(&last)));
        let seen = newest.clone();
        let reader = store.follow_stream(
            key.clone(),
            last,
            1024,
            "log tail reader",
            move |entry| {
                let at = position(&entry.id);
                {
                    let mut known = seen.lock();
                    *known = (*known).max(at);
                }
                let record = entry
                    .get::<String>("r")
                    .and_then(|json| serde_json::from_str::<LogRecord>(&json).ok())?;
                Some(Arc::new((at, record)))
            },
            live.clone(),
        );
        Ok(Self {
            store,
            key,
            batch_base,
            write: Script::new(&WRITE.replace(
                "RESEND_WINDOW_MS",
                &crate::backend::RESEND_WINDOW.as_millis().to_string(),
            )),
            clock,
            max_len: max_len.max(1),
            retention,
            live,
            newest,
            reader,
        })
    }

    /// Walk the stream newest first from `start` (an XREVRANGE bound) down to `end`,
    /// handing each record and its id to `visit` until it returns `false` or `budget`
    /// entries were seen. Answers the id of the last entry seen when it stopped early.
    async fn scan(
        &self,
        mut start: String,
        end: &str,
        budget: usize,
        mut visit: impl FnMut(&str, LogRecord) -> bool,
    ) -> Result<Option<String>> {
        let mut seen = 0;
        loop {
            let count = PAGE.min(budget - seen);
            let reply: StreamRangeReply = self
                .store
                .retry(|mut conn| {
                    let mut cmd = redis::cmd("XREVRANGE");
                    cmd.arg(&self.key)
                        .arg(&start)
                        .arg(end)
                        .arg("COUNT")
                        .arg(count);
                    async move { cmd.query_async(&mut conn).await }
                })
                .await?;
            let fetched = reply.ids.len();
            for entry in reply.ids {
                seen += 1;
                let record = entry
                    .get::<String>("r")
                    .and_then(|json| serde_json::from_str::<LogRecord>(&json).ok());
                let go_on = match record {
                    Some(record) => visit(&entry.id, record),
                    None => {
                        tracing::warn!(id = %entry.id, "skipping a malformed log entry");
                        true
                    }
                };
                if !go_on || seen == budget {
                    return Ok(Some(entry.id));
                }
                start = format!("({}", entry.id);
            }
            if fetched < count {
                return Ok(None);
            }
        }
    }
}

/// The lowest id bound of a scan for records at or after `since`.
fn lower_bound(query: &LogQuery) -> String {
    query
        .since
        .map_or("-".into(), |s| s.timestamp_millis().max(0).to_string())
}

#[async_trait]
impl LogSink for RedisLogSink {
    async fn write(&self, batch: Vec<LogRecord>) -> Result<()> {
        validate_batch(&batch)?;
        if batch.is_empty() {
            return Ok(());
        }
        let mut args = Vec::with_capacity(batch.len() * 2);
        for record in &batch {
            args.push(record.timestamp.timestamp_millis().max(0).to_string());
            args.push(serde_json::to_string(record)?);
        }
        let cutoff = self.retention.map_or(String::new(), |age| {
            let age = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
            // A retention longer than the calendar reaches back keeps everything.
            self.clock
                .now()
                .checked_sub_signed(age)
                .map_or(0, |cutoff| cutoff.timestamp_millis().max(0))
                .to_string()
        });
        let max_len = self.max_len.to_string();
        // Fixed before the first attempt: a resend after a timeout finds the answer of an
        // attempt that got through, and writes nothing twice.
        let batch_key = format!("{}{}", self.batch_base, uuid::Uuid::new_v4().simple());
        let mut all = Vec::with_capacity(2 + args.len());
        all.extend([max_len, cutoff]);
        all.extend(args);
        let keys = [self.key.as_str(), batch_key.as_str()];
        let newest = self.store.eval_batch(&self.write, &keys, &all).await?;
        let newest: String = redis::from_redis_value(newest)?;
        let mut known = self.newest.lock();
        *known = (*known).max(position(&newest));
        Ok(())
    }

    async fn search_page(&self, query: &LogQuery) -> Result<LogPage> {
        let limit = query.effective_limit();
        let start = match query.cursor.as_deref() {
            None => "+".to_owned(),
            Some(c) if is_stream_id(c) => format!("({c}"),
            Some(_) => {
                return Err(Error::invalid(
                    "cursor",
                    "not a cursor this store handed out",
                ))
            }
        };
        let mut page = LogPage::default();
        let stopped = self
            .scan(start, &lower_bound(query), SCAN_BUDGET, |_, record| {
                if query.matches(&record) {
                    page.records.push(record);
                }
                page.records.len() < limit
            })
            .await?;
        page.next_cursor = stopped;
        Ok(page)
    }

    async fn stats(&self, query: &StatsQuery) -> Result<LogStats> {
        let mut builder = StatsBuilder::default();
        let budget = self.max_len.saturating_mul(2);
        self.scan(
            "+".into(),
            &lower_bound(&query.filter),
            budget,
            |_, record| {
                if query.filter.matches(&record) {
                    builder.add(&record);
                }
                true
            },
        )
        .await?;
        Ok(builder.finish(query.top.unwrap_or(DEFAULT_TOP)))
    }

    fn tail(&self, filter: LogQuery) -> LogTail {
        let after = *self.newest.lock();
        LogTail::new(self.live.subscribe(), filter, after)
    }
}

/// A stream id as a number that grows with the id (`ms << 64 | seq`); 0 for no id.
fn position(id: &str) -> u128 {
    let mut parts = id.splitn(2, '-');
    let ms = parts
        .next()
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(0);
    let seq = parts
        .next()
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(0);
    (u128::from(ms) << 64) | u128::from(seq)
}

fn is_stream_id(s: &str) -> bool {
    let mut parts = s.splitn(2, '-');
    let digits =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    digits(parts.next()) && digits(parts.next())
}
