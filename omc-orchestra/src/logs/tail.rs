//! Live tail: every backend fans its new records out on a `broadcast` channel; a
//! [`LogTail`] is one subscriber with its own filter.

use super::model::LogRecord;
use super::query::LogQuery;
use futures::stream::BoxStream;
use futures::StreamExt;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Records a live tail may fall behind by before it skips ahead.
pub const TAIL_CAPACITY: usize = 16_384;

/// A record on its way to live tails, with its position in the store (positions grow
/// in write order).
pub type Tailed = Arc<(u128, LogRecord)>;

/// A live tail: the records written after it was opened that match its filter.
#[derive(Debug)]
pub struct LogTail {
    receiver: broadcast::Receiver<Tailed>,
    filter: LogQuery,
    after: u128,
    skipped: u64,
}

impl LogTail {
    /// A tail of `receiver` keeping what `filter` matches at positions after `after`
    /// (the store's newest position when the tail opened, so a record written before
    /// and fanned out late is not taken for a new one).
    pub fn new(receiver: broadcast::Receiver<Tailed>, filter: LogQuery, after: u128) -> Self {
        Self {
            receiver,
            filter,
            after,
            skipped: 0,
        }
    }

    /// The next matching record; `None` once the store is gone. A tail that falls more
    /// than [`TAIL_CAPACITY`] records behind skips ahead (see [`LogTail::skipped`]) rather
    /// than slowing the writers.
    pub async fn next(&mut self) -> Option<LogRecord> {
        loop {
            match self.receiver.recv().await {
                Ok(item) if item.0 > self.after && self.filter.matches(&item.1) => {
                    return Some(item.1.clone())
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => self.skipped += n,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Records this tail missed because it fell behind.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The tail as a stream of records.
    pub fn into_stream(self) -> BoxStream<'static, LogRecord> {
        futures::stream::unfold(self, |mut tail| async move {
            tail.next().await.map(|record| (record, tail))
        })
        .boxed()
    }
}
