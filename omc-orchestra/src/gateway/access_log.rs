//! The gateway's access log into a [`LogSink`]: one record per request, queued without
//! waiting and written in batches by a background task, so a slow sink never slows
//! requests (when the queue is full, records are dropped and counted).

use crate::logs::{LogCategory, LogLevel, LogRecord, LogSink};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const QUEUE: usize = 10_000;
const BATCH: usize = 256;

/// A queue of access records in front of a sink.
#[derive(Debug)]
pub struct AccessLog {
    sender: mpsc::Sender<LogRecord>,
    dropped: AtomicU64,
}

impl AccessLog {
    /// Start the writer task over `sink`; it ends when the log is dropped.
    pub fn spawn(sink: Arc<dyn LogSink>) -> (Self, tokio::task::JoinHandle<()>) {
        let (sender, mut receiver) = mpsc::channel::<LogRecord>(QUEUE);
        let task = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while receiver.recv_many(&mut batch, BATCH).await > 0 {
                if let Err(err) = sink.write(std::mem::take(&mut batch)).await {
                    tracing::warn!(error = %err, "cannot write gateway access records");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        });
        (
            Self {
                sender,
                dropped: AtomicU64::new(0),
            },
            task,
        )
    }

    /// Queue a record; drops it when the queue is full.
    pub fn send(&self, record: LogRecord) {
        if self.sender.try_send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// What one access record says.
pub(super) struct Access<'a> {
    pub(super) method: &'a str,
    pub(super) path: &'a str,
    pub(super) status: u16,
    pub(super) latency_ms: f64,
    pub(super) bytes: Option<u64>,
    pub(super) request_id: &'a str,
    pub(super) info: &'a super::ProxyInfo,
}

impl Access<'_> {
    pub(super) fn record(&self, at: chrono::DateTime<chrono::Utc>) -> LogRecord {
        let level = match self.status {
            500.. => LogLevel::Error,
            400..=499 => LogLevel::Warn,
            _ => LogLevel::Http,
        };
        // Keep a record valid whatever the URL (the sink refuses huge messages).
        let path: String = self.path.chars().take(1024).collect();
        let mut record = LogRecord::new(
            at,
            level,
            "api-gateway",
            format!("{} {path} {}", self.method, self.status),
        );
        record.category = LogCategory::Performance;
        let info = self.info;
        let fields = serde_json::json!({
            "method": self.method,
            "path": path,
            "route": &*info.route,
            "service": &*info.service,
            "instance": info.instance.as_deref(),
            "status": self.status,
            "latencyMs": self.latency_ms,
            "bytes": self.bytes,
            "cache": info.cache,
            "attempts": info.attempts,
            "client": info.client.map(|ip| ip.to_string()),
        });
        if let serde_json::Value::Object(map) = fields {
            record.fields = map;
        }
        record.request_id = Some(self.request_id.to_owned());
        record.trace_id = info.trace_id.clone();
        record.span_id = info.span_id.clone();
        record
    }
}
