//! The in-memory log store.

use super::query::SCAN_BUDGET;
use super::stats::{StatsBuilder, DEFAULT_TOP};
use super::tail::{Tailed, TAIL_CAPACITY};
use super::{validate_batch, LogPage, LogQuery, LogRecord, LogSink, LogStats, LogTail, StatsQuery};
use crate::{Error, Result};
use async_trait::async_trait;
use parking_lot::RwLock;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Records kept by default; the oldest go first.
pub const DEFAULT_CAPACITY: usize = 100_000;

struct Stored {
    seq: u64,
    record: Tailed,
}

#[derive(Default)]
struct Records {
    entries: VecDeque<Stored>,
    next_seq: u64,
}

/// A bounded log store inside one process.
pub struct MemoryLogSink {
    records: RwLock<Records>,
    capacity: usize,
    live: broadcast::Sender<Tailed>,
}

impl std::fmt::Debug for MemoryLogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryLogSink")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryLogSink {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryLogSink {
    /// A store keeping [`DEFAULT_CAPACITY`] records.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// A store keeping at most `capacity` records.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            records: RwLock::new(Records::default()),
            capacity: capacity.max(1),
            live: broadcast::channel(TAIL_CAPACITY).0,
        }
    }

    /// Records held now.
    pub fn len(&self) -> usize {
        self.records.read().entries.len()
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn parse_cursor(cursor: Option<&str>) -> Result<u64> {
    match cursor {
        None => Ok(u64::MAX),
        Some(c) => c
            .parse()
            .map_err(|_| Error::invalid("cursor", "not a cursor this store handed out")),
    }
}

#[async_trait]
impl LogSink for MemoryLogSink {
    async fn write(&self, batch: Vec<LogRecord>) -> Result<()> {
        validate_batch(&batch)?;
        let mut records = self.records.write();
        for record in batch {
            if records.entries.len() == self.capacity {
                records.entries.pop_front();
            }
            let seq = records.next_seq;
            records.next_seq += 1;
            let stored = Arc::new((u128::from(seq) + 1, record));
            // Sent under the lock, so tails see write order.
            let _ = self.live.send(stored.clone());
            records.entries.push_back(Stored {
                seq,
                record: stored,
            });
        }
        Ok(())
    }

    async fn search_page(&self, query: &LogQuery) -> Result<LogPage> {
        let limit = query.effective_limit();
        let before = parse_cursor(query.cursor.as_deref())?;
        let records = self.records.read();
        let mut page = LogPage::default();
        let mut scanned = 0;
        // Sequence numbers are contiguous, so the cursor is an index.
        let first = records.entries.front().map_or(0, |s| s.seq);
        let end = usize::try_from(before.saturating_sub(first))
            .unwrap_or(usize::MAX)
            .min(records.entries.len());
        for stored in records.entries.range(..end).rev() {
            scanned += 1;
            if query.matches(&stored.record.1) {
                page.records.push(stored.record.1.clone());
                if page.records.len() == limit {
                    page.next_cursor = Some(stored.seq.to_string());
                    break;
                }
            }
            if scanned == SCAN_BUDGET {
                page.next_cursor = Some(stored.seq.to_string());
                break;
            }
        }
        Ok(page)
    }

    async fn stats(&self, query: &StatsQuery) -> Result<LogStats> {
        let mut builder = StatsBuilder::default();
        let records = self.records.read();
        for stored in records.entries.iter().rev() {
            if query.filter.matches(&stored.record.1) {
                builder.add(&stored.record.1);
            }
        }
        Ok(builder.finish(query.top.unwrap_or(DEFAULT_TOP)))
    }

    fn tail(&self, filter: LogQuery) -> LogTail {
        // Positions are `seq + 1`; subscribing under the lock orders it against writes.
        let records = self.records.read();
        LogTail::new(self.live.subscribe(), filter, u128::from(records.next_seq))
    }
}
