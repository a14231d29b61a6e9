//! The backlog of the priority streams: how far each consumer group is behind, and
//! trimming that keeps what some group still needs.
//!
//! A priority stream with consumer groups is trimmed up to the oldest entry some group
//! still needs (its last delivered entry, or its oldest unacknowledged one), by a
//! maintenance step that a publish starts at most once a second per bus, away from the
//! publish itself: inspecting the groups on every publish would cost the hot path more
//! than the trim saves. A stream without groups keeps about `backlog` entries. The
//! publish script keeps only a cheap `MAXLEN ~ backlog_cap` as the hard bound, and counts
//! what that drops unread (`backlog.lua`); maintenance reports the count at WARN
//! once, whichever bus runs it first.

use super::Keys;
use crate::backend::RedisStore;
use crate::events::{BusOptions, EventPriority, GroupLag, LagCounts};
use crate::Result;
use redis::Script;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The Lua functions the publish script and the scripts below share.
pub(super) const FUNCTIONS: &str = include_str!("backlog.lua");

/// Field of the stats hash counting the events the cap dropped unread.
pub(super) const TRIMMED_UNREAD: &str = "trimmed-unread";

/// How often a bus runs maintenance at most while events are published.
const MAINTAIN_EVERY: Duration = Duration::from_secs(1);

/// Trims each priority stream (`KEYS[1..4]`) to what its groups still need, or to about
/// `ARGV[1]` (the backlog) entries when it has none. `KEYS[5]`: the stats hash. Answers
/// the events the cap dropped unread that no maintenance had reported yet, and marks
/// them reported (field `trimmed-unread-told`), so one bus logs each drop once.
const MAINTAIN: &str = r#"
local STATS = KEYS[5]
for i = 1, 4 do
  local q = KEYS[i]
  if redis.call('EXISTS', q) == 1 then
    local groups, keep = groups_of(q), nil
    for _, g in ipairs(groups) do
      local oldest = g['last-delivered-id']
      if g['pending'] > 0 then
        local first = redis.call('XPENDING', q, g['name'])[2]
        if first and id_before(first, oldest) then oldest = first end
      end
      if keep == nil or id_before(oldest, keep) then keep = oldest end
    end
    if keep then
      redis.call('XTRIM', q, 'MINID', '~', keep)
    else
      redis.call('XTRIM', q, 'MAXLEN', '~', ARGV[1])
    end
  end
end
local total = tonumber(redis.call('HGET', STATS, 'trimmed-unread') or 0)
local told = tonumber(redis.call('HGET', STATS, 'trimmed-unread-told') or 0)
if total <= told then return 0 end
redis.call('HSET', STATS, 'trimmed-unread-told', total)
return total - told
"#;

/// Answers, for each group of each priority stream (`KEYS[1..4]`), four strings: the
/// stream's number (1-4), the group, its unread entries and its pending ones.
const FIGURES: &str = r#"
local out = {}
for i = 1, 4 do
  local q = KEYS[i]
  if redis.call('EXISTS', q) == 1 then
    local len = redis.call('XLEN', q)
    local last = redis.call('XREVRANGE', q, '+', '-', 'COUNT', 1)[1]
    for _, g in ipairs(groups_of(q)) do
      out[#out + 1] = tostring(i)
      out[#out + 1] = g['name']
      out[#out + 1] = tostring(unread(g, len, last and last[1]))
      out[#out + 1] = tostring(g['pending'])
    end
  end
end
return out
"#;

/// The backlog of one bus's priority streams.
pub(super) struct Backlog {
    store: RedisStore,
    /// The four priority streams, then the stats hash.
    keys: [String; 5],
    backlog: usize,
    cap: usize,
    maintain: Script,
    figures: Script,
    /// Maintenance is due again at this many ms after `started`.
    due_ms: AtomicU64,
    started: Instant,
}

impl Backlog {
    /// The backlog of the streams in `keys`, bounded by `options`.
    pub(super) fn new(store: RedisStore, keys: &Keys, options: &BusOptions) -> Self {
        let [q0, q1, q2, q3] = keys.queues.clone();
        Self {
            store,
            keys: [q0, q1, q2, q3, keys.stats.clone()],
            backlog: options.backlog,
            cap: options.backlog_cap,
            maintain: Script::new(&format!("{FUNCTIONS}{MAINTAIN}")),
            figures: Script::new(&format!("{FUNCTIONS}{FIGURES}")),
            due_ms: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// After a publish: run maintenance in the background, unless it ran less than
    /// [`MAINTAIN_EVERY`] ago.
    pub(super) fn published(self: &Arc<Self>) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let due = self.due_ms.load(Ordering::Relaxed);
        let next = now.saturating_add(MAINTAIN_EVERY.as_millis() as u64);
        if now < due
            || self
                .due_ms
                .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let backlog = self.clone();
        tokio::spawn(async move {
            if let Err(err) = backlog.maintain().await {
                tracing::warn!(error = %err, "event backlog maintenance failed");
            }
        });
    }

    /// Trim every priority stream to what its groups still need; log the events the cap
    /// dropped unread since any bus last did. Answers their number.
    pub(super) async fn maintain(&self) -> Result<u64> {
        let told: u64 = self
            .store
            .retry(|mut conn| {
                let mut invocation = self.maintain.prepare_invoke();
                for key in &self.keys {
                    invocation.key(key);
                }
                invocation.arg(self.backlog);
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        if told > 0 {
            crate::events::warn_trimmed_unread(told, self.cap);
        }
        Ok(told)
    }

    /// Lag and pending counts of every group, sorted by name.
    pub(super) async fn group_lags(&self) -> Result<Vec<GroupLag>> {
        let flat: Vec<String> = self
            .store
            .retry(|mut conn| {
                let mut invocation = self.figures.prepare_invoke();
                for key in &self.keys[..4] {
                    invocation.key(key);
                }
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        let mut groups = Vec::new();
        for row in flat.chunks_exact(4) {
            let priority = row[0]
                .parse::<usize>()
                .ok()
                .and_then(|i| EventPriority::ALL.get(i.wrapping_sub(1)).copied());
            let (Some(priority), Ok(lag), Ok(pending)) = (priority, row[2].parse(), row[3].parse())
            else {
                continue;
            };
            GroupLag::add(&mut groups, &row[1], priority, LagCounts { lag, pending });
        }
        Ok(groups)
    }
}
