//! The Redis log store: any number of logging servers share one searchable store.
//!
//! Keys:
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `{prefix}:log:{logs}:stream` | stream | one entry per record, field `r` = the record's JSON; capped at `maxLen` entries (`MAXLEN ~`) and, with a retention, trimmed by age (`MINID ~`) |
//! | `{prefix}:log:{logs}:by:svc:{service}`, `…:by:lvl:{level}`, `…:by:cat:{category}` | stream | the ids of that service's, level's or category's records (same ids, no fields), trimmed with the stream by the writes that add to them, by the searches that read them and every minute, so a search that names one reads only its records |
//! | `{prefix}:log:{logs}:indexes` | set | the names of the index streams (`svc:{service}`, …), so that those no write touches any more are trimmed too, and dropped once empty |
//! | `{prefix}:log:{logs}:indexed-from` | string | the first id written with the indexes: a search reads older records from the stream |
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
use super::{
    validate_batch, LogLevel, LogPage, LogQuery, LogRecord, LogSink, LogStats, LogTail, StatsQuery,
};
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

/// `KEYS`: the stream, the batch's key, the index base (`…:by:`), the key of the first
/// indexed id, the set of index names. `ARGV`: max length, age cutoff, then per record
/// its timestamp, JSON and the names of its index streams, comma-separated (see
/// [`index_names`]). Each record also goes, under the same id and with no fields of its
/// own, to those index streams, trimmed as the stream is, whose names join the set. The
/// newest entry id is kept under the batch's key for a while, so a resend of the batch
/// (after a timeout that left its outcome unknown) writes nothing twice and answers the
/// same.
const WRITE: &str = r#"
local KEY, SENT, BY, FROM, NAMES = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local MAXLEN, CUTOFF = ARGV[1], ARGV[2]
local prior = redis.call('GET', SENT)
if prior then return prior end
local last, newest, touched = nil, '', {}
for i = 3, #ARGV, 3 do
  local ts = tonumber(ARGV[i])
  local id = nil
  if last == nil or ts >= last then
    id = redis.pcall('XADD', KEY, 'MAXLEN', '~', MAXLEN, ARGV[i] .. '-*', 'r', ARGV[i + 1])
    if type(id) == 'table' then id = nil end
  end
  if id == nil then
    id = redis.call('XADD', KEY, 'MAXLEN', '~', MAXLEN, '*', 'r', ARGV[i + 1])
  end
  for index in string.gmatch(ARGV[i + 2], '[^,]+') do
    -- An index ahead of the stream (the stream deleted by hand) must not refuse records.
    redis.pcall('XADD', BY .. index, id, 'i', '')
    touched[index] = true
  end
  last = tonumber(string.match(id, '^(%d+)'))
  newest = id
end
if newest ~= '' then redis.call('SET', FROM, newest, 'NX') end
if CUTOFF ~= '' then redis.call('XTRIM', KEY, 'MINID', '~', CUTOFF) end
-- The indexes keep no entry older than the stream's oldest.
local oldest = redis.call('XRANGE', KEY, '-', '+', 'COUNT', 1)[1]
for index in pairs(touched) do
  if oldest then redis.call('XTRIM', BY .. index, 'MINID', '~', oldest[1]) end
  redis.call('SADD', NAMES, index)
end
redis.call('SET', SENT, newest, 'PX', RESEND_WINDOW_MS)
return newest
"#;

/// `KEYS`: the stream, an index stream, the key of the first indexed id. Trims the index
/// of entries older than the stream's oldest: a write trims only the indexes it adds to,
/// so a service that went quiet keeps entries whose records are gone, which a search
/// would otherwise walk one by one. Answers the first indexed id and the stream's oldest
/// id, each or nil.
const FLOOR: &str = r#"
local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
if oldest then redis.call('XTRIM', KEYS[2], 'MINID', oldest[1]) end
return {redis.call('GET', KEYS[3]), oldest and oldest[1] or false}
"#;

/// `KEYS`: the stream, the set of index names. `ARGV`: the index base (`…:by:`). Trims
/// every index stream to the stream's oldest record and drops those left empty (a
/// service gone quiet, whose records the stream no longer holds). Answers how many
/// entries went.
const TRIM_INDEXES: &str = r#"
local KEY, NAMES, BY = KEYS[1], KEYS[2], ARGV[1]
local oldest = redis.call('XRANGE', KEY, '-', '+', 'COUNT', 1)[1]
local removed = 0
for _, index in ipairs(redis.call('SMEMBERS', NAMES)) do
  local stream = BY .. index
  if oldest then
    removed = removed + redis.call('XTRIM', stream, 'MINID', oldest[1])
  else
    removed = removed + redis.call('XTRIM', stream, 'MAXLEN', 0)
  end
  if redis.call('XLEN', stream) == 0 then
    redis.call('DEL', stream)
    redis.call('SREM', NAMES, index)
  end
end
return removed
"#;

/// How often a store trims the index streams no write touches (see [`TRIM_INDEXES`]).
const INDEX_TRIM_EVERY: Duration = Duration::from_secs(60);

/// What trimming the index streams needs, shared by the store and its timer task.
#[derive(Clone)]
struct IndexTrim {
    store: RedisStore,
    script: Script,
    /// The stream's key, the set of index names and the index base.
    key: String,
    names: String,
    by: String,
}

impl IndexTrim {
    async fn run(&self) -> Result<u64> {
        self.store
            .retry(|mut conn| {
                let mut invocation = self.script.prepare_invoke();
                invocation.key(&self.key).key(&self.names).arg(&self.by);
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await
    }

    /// Trim every [`INDEX_TRIM_EVERY`] until aborted; a failure waits for the next turn.
    fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            // The first turn waits a period: at start, a minute of delay costs nothing.
            let first = tokio::time::Instant::now() + INDEX_TRIM_EVERY;
            let mut tick = tokio::time::interval_at(first, INDEX_TRIM_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(err) = self.run().await {
                    tracing::debug!(error = %err, "trimming the log index streams failed");
                }
            }
        })
    }
}

/// A log store in Redis, under a [`RedisStore`]'s prefix.
pub struct RedisLogSink {
    store: RedisStore,
    key: String,
    /// `…:by:`: the index streams are this plus `svc:{service}`, `lvl:{level}` or
    /// `cat:{category}`.
    by: String,
    /// Holds the first id written with the indexes: older records are in the stream alone.
    indexed_from: String,
    /// Where a batch keeps its answer: this and the batch's own key.
    batch_base: String,
    write: Script,
    floor: Script,
    clock: SharedClock,
    max_len: usize,
    retention: Option<Duration>,
    live: broadcast::Sender<Tailed>,
    /// The newest position this replica wrote or read; where new tails start.
    newest: Arc<parking_lot::Mutex<u128>>,
    reader: tokio::task::JoinHandle<()>,
    /// Trims the index streams; holds the key of the set of index names.
    index_trim: IndexTrim,
    /// Runs `index_trim` on a timer.
    trimmer: tokio::task::JoinHandle<()>,
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
        self.trimmer.abort();
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
        let by = store.key("log", "logs", "by:");
        let indexed_from = store.key("log", "logs", "indexed-from");
        let index_trim = IndexTrim {
            store: store.clone(),
            script: Script::new(TRIM_INDEXES),
            key: key.clone(),
            names: store.key("log", "logs", "indexes"),
            by: by.clone(),
        };
        let trimmer = index_trim.clone().spawn();
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
            by,
            indexed_from,
            batch_base,
            write: Script::new(&WRITE.replace(
                "RESEND_WINDOW_MS",
                &crate::backend::RESEND_WINDOW.as_millis().to_string(),
            )),
            floor: Script::new(FLOOR),
            clock,
            max_len: max_len.max(1),
            retention,
            live,
            newest,
            reader,
            index_trim,
            trimmer,
        })
    }

    /// Trim every index stream to the stream's oldest record and drop those left empty,
    /// as the store does every minute: the indexes of services that went quiet keep no
    /// entries for records the stream dropped. Answers how many entries went.
    pub async fn trim_indexes(&self) -> Result<u64> {
        self.index_trim.run().await
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

/// The index streams a record goes to: its service's, its category's, and for a warning
/// or an error, `lvl:warn` (warnings and errors: a search for `warn` and above) and for an
/// error `lvl:error`. Lower levels have none: a search for `info` and above keeps nearly
/// every record anyway.
fn index_names(record: &LogRecord) -> String {
    let mut names = format!("cat:{}", record.category.as_str());
    if indexable(&record.service) {
        names.push_str(",svc:");
        names.push_str(&record.service);
    }
    if record.level.at_least(LogLevel::Warn) {
        names.push_str(",lvl:warn");
    }
    if record.level.at_least(LogLevel::Error) {
        names.push_str(",lvl:error");
    }
    names
}

/// Whether a service has an index stream: names that fit in the list of index names
/// (no comma) and in a key of reasonable length.
fn indexable(service: &str) -> bool {
    !service.contains(',') && service.len() <= 200
}

/// Where a walk through an index stopped.
enum Stop {
    /// Before its end, at this id (the visitor had enough, or the budget ran out).
    Early(String),
    /// At its lower bound.
    End,
}

impl RedisLogSink {
    /// The index stream that narrows `query` most: its service, else its level, else its
    /// category; `None` when it names none of them.
    fn index_for(&self, query: &LogQuery) -> Option<String> {
        let name = match (&query.service, query.level, query.category) {
            (Some(service), _, _) if indexable(service) => format!("svc:{service}"),
            (None, Some(level @ (LogLevel::Warn | LogLevel::Error)), _) => {
                format!("lvl:{}", level.as_str())
            }
            (None, _, Some(category)) => format!("cat:{}", category.as_str()),
            _ => return None,
        };
        Some(format!("{}{name}", self.by))
    }

    /// Walk the index stream `index` newest first from `start` down to `end` (inclusive),
    /// reading the records it points at page by page, handing each to `visit` as
    /// [`RedisLogSink::scan`] does.
    async fn scan_index(
        &self,
        index: &str,
        mut start: String,
        end: &str,
        want: usize,
        visit: &mut impl FnMut(&str, LogRecord) -> bool,
    ) -> Result<Stop> {
        let mut seen = 0;
        // Read about what the page still wants, doubling while the other filters reject
        // records: a page of 50 does not fetch a thousand records to show 50.
        let mut wanted = want.clamp(16, PAGE);
        loop {
            let count = wanted.min(PAGE).min(SCAN_BUDGET - seen);
            wanted = wanted.saturating_mul(2);
            let ids: StreamRangeReply = self
                .store
                .retry(|mut conn| {
                    let mut cmd = redis::cmd("XREVRANGE");
                    cmd.arg(index).arg(&start).arg(end).arg("COUNT").arg(count);
                    async move { cmd.query_async(&mut conn).await }
                })
                .await?;
            let fetched = ids.ids.len();
            if fetched == 0 {
                return Ok(Stop::End);
            }
            // The records themselves, one `XRANGE id id` each, in one round trip.
            let records: Vec<StreamRangeReply> = self
                .store
                .retry(|mut conn| {
                    let mut pipe = redis::pipe();
                    for entry in &ids.ids {
                        pipe.cmd("XRANGE")
                            .arg(&self.key)
                            .arg(&entry.id)
                            .arg(&entry.id);
                    }
                    async move { pipe.query_async(&mut conn).await }
                })
                .await?;
            for (entry, found) in ids.ids.iter().zip(records) {
                seen += 1;
                start = format!("({}", entry.id);
                // Gone from the stream (trimmed since): nothing to show.
                let Some(stored) = found.ids.into_iter().next() else {
                    continue;
                };
                let record = stored
                    .get::<String>("r")
                    .and_then(|json| serde_json::from_str::<LogRecord>(&json).ok());
                let go_on = match record {
                    Some(record) => visit(&entry.id, record),
                    None => true,
                };
                if !go_on || seen == SCAN_BUDGET {
                    return Ok(Stop::Early(entry.id.clone()));
                }
            }
            if fetched < count {
                return Ok(Stop::End);
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
        let mut args = Vec::with_capacity(batch.len() * 3);
        for record in &batch {
            args.push(record.timestamp.timestamp_millis().max(0).to_string());
            args.push(serde_json::to_string(record)?);
            args.push(index_names(record));
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
        let keys = [
            self.key.as_str(),
            batch_key.as_str(),
            self.by.as_str(),
            self.indexed_from.as_str(),
            self.index_trim.names.as_str(),
        ];
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
        let lower = lower_bound(query);
        let mut visit = |_: &str, record: LogRecord| {
            if query.matches(&record) {
                page.records.push(record);
            }
            page.records.len() < limit
        };
        let Some(index) = self.index_for(query) else {
            let stopped = self.scan(start, &lower, SCAN_BUDGET, &mut visit).await?;
            page.next_cursor = stopped;
            return Ok(page);
        };
        // Records since the indexes began are found through the most selective one;
        // older ones, by walking the stream as before.
        let (from, oldest): (Option<String>, Option<String>) = self
            .store
            .retry(|mut conn| {
                let mut invocation = self.floor.prepare_invoke();
                invocation
                    .key(&self.key)
                    .key(&index)
                    .key(&self.indexed_from);
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        let Some(from) = from else {
            let stopped = self.scan(start, &lower, SCAN_BUDGET, &mut visit).await?;
            page.next_cursor = stopped;
            return Ok(page);
        };
        let indexed_part = if position(&from) > position(lower.as_str()) || lower == "-" {
            from.clone()
        } else {
            lower.clone()
        };
        // Index entries older than the stream's oldest record point at nothing.
        let floor = match &oldest {
            Some(oldest) if position(oldest) > position(&indexed_part) => oldest.clone(),
            _ => indexed_part.clone(),
        };
        let in_index = start == "+" || position(start.trim_start_matches('(')) >= position(&from);
        let mut start = start;
        if in_index {
            match self
                .scan_index(&index, start.clone(), &floor, limit, &mut visit)
                .await?
            {
                Stop::Early(at) => {
                    page.next_cursor = Some(at);
                    return Ok(page);
                }
                Stop::End if indexed_part != from => return Ok(page),
                Stop::End => start = format!("({from}"),
            }
        }
        let stopped = self.scan(start, &lower, SCAN_BUDGET, &mut visit).await?;
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
