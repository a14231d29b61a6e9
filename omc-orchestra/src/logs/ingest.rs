//! The front door of logging: a bounded buffer that batches writes and pushes back.
//!
//! Writers hand batches to [`LogIngest::submit`]; one writer task drains the buffer,
//! merges what is waiting into one [`LogSink::write`] (one Redis script for the lot), then
//! copies the merged batch to every [`LogExport`]. A writer is answered only after the
//! sink stored its records. Room in the buffer is counted in records: when it is full a
//! writer waits up to [`IngestOptions::wait`] and then gets [`Error::Overloaded`]
//! (a 503 on the wire). Nothing is ever dropped silently.

use super::{validate_batch, LogExport, LogRecord, LogSink};
use crate::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

/// How the ingest buffer behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestOptions {
    /// Records the buffer holds, waiting or being written.
    pub capacity: usize,
    /// Most records merged into one write.
    pub max_batch: usize,
    /// How long a writer waits for room before it gets [`Error::Overloaded`]; zero
    /// answers at once.
    pub wait: Duration,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            max_batch: 10_000,
            wait: Duration::from_secs(2),
        }
    }
}

struct Pending {
    records: Vec<LogRecord>,
    room: OwnedSemaphorePermit,
    ack: oneshot::Sender<Result<()>>,
}

/// A bounded, batching buffer in front of a [`LogSink`] and its exports.
pub struct LogIngest {
    sink: Arc<dyn LogSink>,
    queue: mpsc::UnboundedSender<Pending>,
    room: Arc<Semaphore>,
    options: IngestOptions,
    export_failures: Arc<AtomicU64>,
    writer: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for LogIngest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogIngest")
            .field("options", &self.options)
            .field("buffered", &self.buffered())
            .finish_non_exhaustive()
    }
}

impl Drop for LogIngest {
    fn drop(&mut self) {
        self.writer.abort();
    }
}

impl LogIngest {
    /// A buffer writing to `sink`, then copying every stored batch to `exports`.
    pub fn new(
        sink: Arc<dyn LogSink>,
        exports: Vec<Arc<dyn LogExport>>,
        options: IngestOptions,
    ) -> Self {
        let options = IngestOptions {
            capacity: options.capacity.clamp(1, Semaphore::MAX_PERMITS),
            max_batch: options.max_batch.max(1),
            wait: options.wait,
        };
        let (queue, pending) = mpsc::unbounded_channel();
        let export_failures = Arc::new(AtomicU64::new(0));
        let writer = tokio::spawn(write_forever(
            sink.clone(),
            exports,
            pending,
            options.max_batch,
            export_failures.clone(),
        ));
        Self {
            sink,
            queue,
            room: Arc::new(Semaphore::new(options.capacity)),
            options,
            export_failures,
            writer,
        }
    }

    /// The store behind the buffer (for search, stats and tail).
    pub fn sink(&self) -> &Arc<dyn LogSink> {
        &self.sink
    }

    /// Records waiting or being written.
    pub fn buffered(&self) -> usize {
        self.options.capacity - self.room.available_permits()
    }

    /// Batches an export refused (the sink had stored them; see the logs for why).
    pub fn export_failures(&self) -> u64 {
        self.export_failures.load(Ordering::Relaxed)
    }

    /// Validate `records`, wait (up to the configured time) for room, and return once the
    /// sink stored them. A full buffer answers [`Error::Overloaded`].
    pub async fn submit(&self, records: Vec<LogRecord>) -> Result<()> {
        validate_batch(&records)?;
        if records.is_empty() {
            return Ok(());
        }
        let wanted = u32::try_from(records.len())
            .ok()
            .filter(|n| (*n as usize) <= self.options.capacity)
            .ok_or_else(|| {
                Error::invalid(
                    "records",
                    format!("at most {} records in one batch", self.options.capacity),
                )
            })?;
        let room = self.room.clone();
        let permit = if self.options.wait.is_zero() {
            room.try_acquire_many_owned(wanted).ok()
        } else {
            tokio::time::timeout(self.options.wait, room.acquire_many_owned(wanted))
                .await
                .ok()
                .and_then(|acquired| acquired.ok())
        };
        let Some(permit) = permit else {
            return Err(Error::Overloaded(format!(
                "the log buffer is full ({} records); retry shortly",
                self.options.capacity
            )));
        };
        let (ack, acked) = oneshot::channel();
        self.queue
            .send(Pending {
                records,
                room: permit,
                ack,
            })
            .map_err(|_| Error::Overloaded("the log writer has stopped".into()))?;
        acked
            .await
            .map_err(|_| Error::Overloaded("the log writer has stopped".into()))?
    }
}

async fn write_forever(
    sink: Arc<dyn LogSink>,
    exports: Vec<Arc<dyn LogExport>>,
    mut pending: mpsc::UnboundedReceiver<Pending>,
    max_batch: usize,
    export_failures: Arc<AtomicU64>,
) {
    while let Some(first) = pending.recv().await {
        let mut total = first.records.len();
        let mut group = vec![first];
        while total < max_batch {
            match pending.try_recv() {
                Ok(next) => {
                    total += next.records.len();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        let mut records = Vec::with_capacity(total);
        let mut acks = Vec::with_capacity(group.len());
        let mut permits = Vec::with_capacity(group.len());
        for item in group {
            records.extend(item.records);
            acks.push(item.ack);
            permits.push(item.room);
        }
        let stored = if exports.is_empty() {
            sink.write(records).await
        } else {
            let stored = sink.write(records.clone()).await;
            if stored.is_ok() {
                export_all(&exports, &records, &export_failures).await;
            }
            stored
        };
        drop(permits);
        for ack in acks {
            let _ = ack.send(match &stored {
                Ok(()) => Ok(()),
                Err(err) => Err(copy_error(err)),
            });
        }
    }
}

async fn export_all(
    exports: &[Arc<dyn LogExport>],
    records: &[LogRecord],
    export_failures: &AtomicU64,
) {
    for export in exports {
        if let Err(err) = export.export(records).await {
            export_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %err, "a log export refused a batch");
        }
    }
}

/// The same error for each writer of a merged batch.
fn copy_error(err: &Error) -> Error {
    match err {
        Error::Invalid { field, reason } => Error::invalid(field.clone(), reason.clone()),
        Error::Overloaded(message) => Error::Overloaded(message.clone()),
        other => Error::backend(std::io::Error::other(other.to_string())),
    }
}
