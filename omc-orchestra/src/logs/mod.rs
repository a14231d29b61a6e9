//! Centralized logging: structured records, batch writes, search, stats and live tail,
//! plus the write-only destinations a deployment adds (a file archive, Elasticsearch).
//!
//! A [`LogSink`] is the searchable store (in memory or in Redis). A [`LogExport`] is a
//! destination records are copied to (the [`FileSink`], the Elasticsearch forwarder).
//! [`LogIngest`] is the front door: a bounded buffer that batches writes to the sink and
//! the exports, pushes back when full, and acknowledges only what the sink stored.
//!
//! ```
//! use omc_orchestra::logs::{LogLevel, LogQuery, LogRecord, LogSink, MemoryLogSink};
//!
//! # async fn demo() -> omc_orchestra::Result<()> {
//! let sink = MemoryLogSink::new();
//! let record = LogRecord::new(chrono::Utc::now(), LogLevel::Info, "pricing-service",
//!     "Price calculation completed")
//!     .with_field("calculationTime", serde_json::json!(150));
//! sink.write(vec![record]).await?;
//! let found = sink.search(&LogQuery::for_service("pricing-service")).await?;
//! assert_eq!(found.len(), 1);
//! # Ok(())
//! # }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```

#[cfg(feature = "elasticsearch")]
pub mod elastic;
#[cfg(feature = "file-logs")]
pub mod file;
mod ingest;
mod memory;
mod model;
mod query;
#[cfg(feature = "redis")]
mod redis;
mod stats;
mod tail;

#[cfg(feature = "file-logs")]
pub use file::{FileSink, FileSinkOptions};
pub use ingest::{IngestOptions, LogIngest};
pub use memory::{MemoryLogSink, DEFAULT_CAPACITY};
pub use model::{
    validate_batch, LogCategory, LogLevel, LogRecord, MAX_FIELDS, MAX_FIELDS_BYTES,
    MAX_MESSAGE_BYTES, MAX_NAME_BYTES,
};
pub use query::{LogPage, LogQuery, DEFAULT_LIMIT, MAX_LIMIT, SCAN_BUDGET};
#[cfg(feature = "redis")]
pub use redis::{RedisLogSink, STREAM_MAXLEN};
pub use stats::{
    is_duration_like, normalise_message, FieldPercentiles, LogStats, StatsBuilder, StatsQuery,
    TopError, DEFAULT_TOP,
};
pub use tail::{LogTail, Tailed, TAIL_CAPACITY};

use crate::Result;
use async_trait::async_trait;

/// The searchable log store contract.
#[async_trait]
pub trait LogSink: Send + Sync + 'static {
    /// Validate and store a batch, all or nothing; once this returns `Ok` the records are
    /// in the store and on their way to live tails.
    async fn write(&self, records: Vec<LogRecord>) -> Result<()>;

    /// One page of the records matching `query`, newest first.
    async fn search_page(&self, query: &LogQuery) -> Result<LogPage>;

    /// Stats over the records `query` selects.
    async fn stats(&self, query: &StatsQuery) -> Result<LogStats>;

    /// A live tail of the records written from now on that match `filter`.
    fn tail(&self, filter: LogQuery) -> LogTail;

    /// The first page of the records matching `query`, newest first.
    async fn search(&self, query: &LogQuery) -> Result<Vec<LogRecord>> {
        Ok(self.search_page(query).await?.records)
    }
}

/// A write-only destination records are copied to after the sink stored them.
#[async_trait]
pub trait LogExport: Send + Sync + 'static {
    /// Take a validated batch.
    async fn export(&self, records: &[LogRecord]) -> Result<()>;
}
