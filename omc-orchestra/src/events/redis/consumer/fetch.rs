//! One fetch of a Redis consumer. The delivery script (`take.lua`) takes over expired
//! deliveries and the first new entry of the most urgent stream that has one; the rest of
//! the batch comes from that stream by a plain `XREADGROUP` (converting entries into Lua
//! and back out cost Redis several times what the read itself does; see `read.rs`).
//!
//! A batch consumer that keeps reading one stream skips the script while nothing else is
//! due: in one round trip it reads its batch from that stream with a plain `XREADGROUP`,
//! and with it the first new entry of each more urgent stream (at most one of each), so an
//! urgent event is handed out first and the next fetch reads on its stream. The script
//! runs (a full run) whenever the look for expired deliveries is due, the consumer's
//! estimate of its clock offset is stale or has moved, or the stream ran dry twice running
//! (the first time, a patient consumer waits for news and reads on that stream again); so
//! every delivery is covered by the offset log (`take.lua`).

use super::RedisConsumer;
use crate::events::redis::{decode_event, lines};
use crate::events::{Delivery, MAX_STAT_TYPES};
use crate::Result;
use redis::Value;
use std::time::{Duration, Instant};

/// The delivery script.
pub(super) const TAKE: &str = include_str!("take.lua");

/// After a look for deliveries whose visibility timeout ran out found none left, how long
/// (on the bus clock) a consumer waits before it looks again: scanning the pending list
/// costs Redis time in proportion to the events in flight, too much for every fetch of a
/// busy consumer. A tenth of the visibility timeout when that is shorter; an expired
/// delivery comes back this much late at most.
const CLAIM_EVERY_MS: i64 = 100;

/// How far the bus clock may drift from Redis time before a new offset is recorded; an
/// expired delivery comes back up to this much late, never early.
const CLOCK_TOLERANCE_MS: i64 = 100;

/// How long a consumer trusts its own estimate of its clock's offset from Redis time
/// (the last full run's answer moved on by the monotonic clock) to skip the script.
const SYNC_EVERY: Duration = Duration::from_millis(100);

/// A full run whose round trip took longer than this leaves the estimate unknown (its
/// error is at most the round trip, well within half the tolerance).
const SYNC_ROUND_TRIP: Duration = Duration::from_millis(20);

/// Most handed-out events whose stream a consumer remembers.
pub(super) const ORIGIN_LIMIT: usize = 100_000;

/// What the delivery script answers: deliveries (id, JSON, count), per-stream tails,
/// whether expired deliveries may be left, the stream to read on (1-4, 0 for none), and
/// for a full run the Redis time of its offset check and the offset in effect.
type Taken = (Vec<(String, String, u32)>, Vec<String>, u8, usize, i64, i64);

/// What the last full run of the delivery script said about this consumer's clock.
#[derive(Debug, Clone, Copy)]
pub(super) struct Synced {
    /// When the run was sent (monotonic).
    at: Instant,
    /// Redis time (ms) the run checked the offset at.
    server_ms: i64,
    /// The offset from Redis time logged for this consumer.
    offset_ms: i64,
}

impl Synced {
    /// Whether a fetch at bus clock time `now` may skip the offset check: the estimate is
    /// fresh and within the tolerance of the logged offset, less the estimate's error (it
    /// is ahead of Redis time by at most the full run's round trip), so the script would
    /// not log a new offset either.
    fn covers(&self, now: i64) -> bool {
        let elapsed = self.at.elapsed();
        let server = self.server_ms + i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX);
        let error = i64::try_from(SYNC_ROUND_TRIP.as_millis()).unwrap_or(i64::MAX);
        elapsed < SYNC_EVERY && (now - server - self.offset_ms).abs() <= CLOCK_TOLERANCE_MS - error
    }
}

impl RedisConsumer {
    /// Fetch up to `count` deliveries: expired ones first, then new ones, most urgent
    /// first. How far it read each stream goes to the group's wait. Deliveries beyond
    /// `count` (a more urgent event found along a batch) wait in the buffer.
    ///
    /// A `patient` caller waits for news after an empty fetch: when the stream a batch
    /// consumer reads on ran dry, it answers nothing rather than run the script at once
    /// (the wait wakes at once when another stream holds entries the group has not read,
    /// and the next fetch runs the script).
    pub(super) async fn fetch(&mut self, count: usize, patient: bool) -> Result<Vec<Delivery>> {
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
        let quick = !claim && self.synced.is_some_and(|s| s.covers(now));
        let mut deliveries = Vec::with_capacity(count.min(64));
        if let Some(stream) = self.reading.filter(|_| quick && count > 1) {
            let (urgent, held) = self.read_along(stream, count, &mut deliveries).await?;
            if urgent.is_some() || held > 0 {
                self.dry = false;
                // Most urgent first (stable: each stream's entries stay in order).
                deliveries.sort_by_key(|d| d.event.priority.rank());
                self.reading = urgent.or(Some(stream));
                return Ok(deliveries);
            }
            if patient && !self.dry && self.wait.tails().is_some() {
                // Wait for news, then read on this stream again: news most likely comes
                // to it. Should the next read find it dry too (the news went to a less
                // urgent stream), the script looks at them all.
                self.dry = true;
                return Ok(deliveries);
            }
            // That stream ran dry again: look at them all.
            self.reading = None;
        }
        self.dry = false;
        let sent = Instant::now();
        let (rows, tails, left, more, server_ms, offset_ms) = self.take(now, count, claim).await?;
        self.synced = (sent.elapsed() < SYNC_ROUND_TRIP).then_some(Synced {
            at: sent,
            server_ms,
            offset_ms,
        });
        self.wait.learn(&tails);
        if claim {
            // Look again at once while there may be more; else once the clock moved on.
            self.claimed_at = (left == 0).then_some(now);
        }
        let taken = rows.len();
        for (id, json, times) in rows {
            self.hand_out(&id, &json, times, &mut deliveries);
        }
        self.reading = more.checked_sub(1).filter(|&s| s < self.queues.len());
        if let Some(stream) = self.reading {
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

    /// Run the delivery script (a full run), making the groups again when they vanished
    /// (a Redis restart without persistence).
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
        let value = self.in_group(run).await?;
        Ok(redis::from_redis_value(value)?)
    }
}
