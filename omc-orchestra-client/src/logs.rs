//! Shipping logs to the logging server: one call per record, or a `tracing` layer that
//! batches a service's own events in the background.

use crate::client::Server;
use crate::{OrchestraClient, Result};
use chrono::Utc;
use omc_orchestra::logs::{LogCategory, LogLevel, LogRecord};
use reqwest::Method;
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

impl OrchestraClient {
    /// Send records to `POST /logs` in one request.
    pub async fn write_logs(&self, records: &[LogRecord]) -> Result<()> {
        let request = self
            .request_to(Server::Logging, Method::POST, &["logs"])?
            .json(records);
        self.execute(request).await.map(|_| ())
    }

    /// A logger that writes records of `service`, one request each.
    pub fn logger(&self, service: impl Into<String>) -> Logger {
        Logger {
            client: self.clone(),
            service: service.into(),
        }
    }

    /// A `tracing` layer shipping this service's events to the logging server in batches,
    /// and the handle that reports what it shipped and dropped.
    pub fn tracing_layer(&self, service: impl Into<String>) -> (OrchestraLayer, ShipperStats) {
        OrchestraLayer::new(self.clone(), service.into(), LayerOptions::default())
    }
}

/// Writes log records for one service: `logger.info("Price calculation completed", fields)`.
#[derive(Debug, Clone)]
pub struct Logger {
    client: OrchestraClient,
    service: String,
}

impl Logger {
    /// Write one record of `level` and `category` with structured `fields`.
    pub async fn log(
        &self,
        level: LogLevel,
        category: LogCategory,
        message: impl Into<String>,
        fields: Value,
    ) -> Result<()> {
        let mut record = LogRecord::new(Utc::now(), level, self.service.clone(), message);
        record.category = category;
        if let Value::Object(map) = fields {
            record.fields = map;
        }
        in_current_trace(&mut record);
        self.client.write_logs(&[record]).await
    }

    /// An `info` record.
    pub async fn info(&self, message: impl Into<String>, fields: Value) -> Result<()> {
        self.log(LogLevel::Info, LogCategory::Application, message, fields)
            .await
    }

    /// A `warn` record.
    pub async fn warn(&self, message: impl Into<String>, fields: Value) -> Result<()> {
        self.log(LogLevel::Warn, LogCategory::Application, message, fields)
            .await
    }

    /// An `error` record.
    pub async fn error(&self, message: impl Into<String>, fields: Value) -> Result<()> {
        self.log(LogLevel::Error, LogCategory::Application, message, fields)
            .await
    }
}

/// How the tracing layer batches.
#[derive(Debug, Clone, Copy)]
pub struct LayerOptions {
    /// Records held while the logging server is slow or away; beyond it they are dropped
    /// and counted, never blocking the service.
    pub buffer: usize,
    /// Most records per request.
    pub batch: usize,
    /// Longest a record waits before its batch is sent.
    pub flush_every: Duration,
}

impl Default for LayerOptions {
    fn default() -> Self {
        Self {
            buffer: 10_000,
            batch: 500,
            flush_every: Duration::from_secs(1),
        }
    }
}

/// Counts of what the tracing layer shipped and dropped, and the way to flush it.
#[derive(Debug, Clone, Default)]
pub struct ShipperStats {
    sent: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    flushes: Option<mpsc::Sender<oneshot::Sender<()>>>,
}

impl ShipperStats {
    /// Records the logging server accepted.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Records dropped because the buffer was full or the server refused them for good.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Send every record queued so far now, and return once the logging server has
    /// answered for them: before a service exits, so its last lines are not lost.
    pub async fn flush(&self) {
        let Some(flushes) = &self.flushes else {
            return;
        };
        let (done, flushed) = oneshot::channel();
        if flushes.send(done).await.is_ok() {
            let _ = flushed.await;
        }
    }
}

/// A `tracing_subscriber::Layer` that ships events as log records. Build it with
/// [`OrchestraClient::tracing_layer`] inside a tokio runtime.
#[derive(Debug)]
pub struct OrchestraLayer {
    service: String,
    queue: mpsc::Sender<LogRecord>,
    stats: ShipperStats,
}

impl OrchestraLayer {
    /// A layer with `options`; spawns the shipping task on the current runtime.
    pub fn new(
        client: OrchestraClient,
        service: String,
        options: LayerOptions,
    ) -> (Self, ShipperStats) {
        let (queue, records) = mpsc::channel(options.buffer.max(1));
        let (flushes, flush_requests) = mpsc::channel(8);
        let stats = ShipperStats {
            flushes: Some(flushes),
            ..ShipperStats::default()
        };
        let shipper = Shipper {
            client,
            options,
            stats: stats.clone(),
        };
        tokio::spawn(shipper.run(records, flush_requests));
        (
            Self {
                service,
                queue,
                stats: stats.clone(),
            },
            stats,
        )
    }
}

/// Events of the HTTP stack the layer itself uses would ship themselves forever.
fn is_own(target: &str) -> bool {
    ["reqwest", "hyper", "h2", "tokio", "omc_orchestra_client"]
        .iter()
        .any(|prefix| target.starts_with(prefix))
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for OrchestraLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if is_own(meta.target()) {
            return;
        }
        let level = match *meta.level() {
            tracing::Level::ERROR => LogLevel::Error,
            tracing::Level::WARN => LogLevel::Warn,
            tracing::Level::INFO => LogLevel::Info,
            tracing::Level::DEBUG => LogLevel::Debug,
            tracing::Level::TRACE => LogLevel::Verbose,
        };
        let mut fields = FieldMap(Map::new());
        event.record(&mut fields);
        let message = match fields.0.remove("message") {
            Some(Value::String(message)) => message,
            Some(other) => other.to_string(),
            None => meta.name().to_owned(),
        };
        let mut record = LogRecord::new(Utc::now(), level, self.service.clone(), message);
        let mut take = |key: &str| match fields.0.remove(key) {
            Some(Value::String(value)) => Some(value),
            _ => None,
        };
        if let Some(category) = take("category") {
            record.category = serde_json::from_value(Value::String(category)).unwrap_or_default();
        }
        record.request_id = take("request_id");
        record.trace_id = take("trace_id");
        if record.trace_id.is_none() {
            in_current_trace(&mut record);
        }
        fields
            .0
            .insert("target".into(), Value::String(meta.target().to_owned()));
        record.fields = fields.0;
        if self.queue.try_send(record).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct FieldMap(Map<String, Value>);

impl Visit for FieldMap {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.into()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}

/// Most attempts to send one batch before its records are counted as dropped.
const ATTEMPTS: u32 = 5;

/// The background task that sends the layer's records in batches.
struct Shipper {
    client: OrchestraClient,
    options: LayerOptions,
    stats: ShipperStats,
}

impl Shipper {
    async fn run(
        self,
        mut records: mpsc::Receiver<LogRecord>,
        mut flushes: mpsc::Receiver<oneshot::Sender<()>>,
    ) {
        let mut batch = Vec::with_capacity(self.options.batch);
        loop {
            let flush = tokio::select! {
                first = records.recv() => {
                    let Some(first) = first else {
                        return;
                    };
                    batch.push(first);
                    let flush = self.fill(&mut records, &mut flushes, &mut batch).await;
                    self.send(&mut batch).await;
                    flush
                }
                Some(flush) = flushes.recv() => Some(flush),
            };
            if let Some(done) = flush {
                while let Ok(record) = records.try_recv() {
                    batch.push(record);
                    if batch.len() >= self.options.batch {
                        self.send(&mut batch).await;
                    }
                }
                self.send(&mut batch).await;
                let _ = done.send(());
            }
        }
    }

    /// Add records to `batch` until it is full or its first record waited long enough;
    /// a flush request ends the wait and is returned.
    async fn fill(
        &self,
        records: &mut mpsc::Receiver<LogRecord>,
        flushes: &mut mpsc::Receiver<oneshot::Sender<()>>,
        batch: &mut Vec<LogRecord>,
    ) -> Option<oneshot::Sender<()>> {
        let deadline = tokio::time::Instant::now() + self.options.flush_every;
        while batch.len() < self.options.batch {
            tokio::select! {
                next = tokio::time::timeout_at(deadline, records.recv()) => match next {
                    Ok(Some(record)) => batch.push(record),
                    Ok(None) | Err(_) => return None,
                },
                Some(flush) = flushes.recv() => return Some(flush),
            }
        }
        None
    }

    /// Send `batch` (retrying what may pass later) and empty it.
    async fn send(&self, batch: &mut Vec<LogRecord>) {
        if batch.is_empty() {
            return;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.client.write_logs(batch).await {
                Ok(()) => {
                    let sent = batch.len() as u64;
                    self.stats.sent.fetch_add(sent, Ordering::Relaxed);
                    break;
                }
                Err(err)
                    if attempt < ATTEMPTS && err.status().is_none_or(|s| s >= 500 || s == 429) =>
                {
                    tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(attempt))).await;
                }
                Err(_) => {
                    let dropped = batch.len() as u64;
                    self.stats.dropped.fetch_add(dropped, Ordering::Relaxed);
                    break;
                }
            }
        }
        batch.clear();
    }
}

/// Give `record` the running job's trace (see [`omc_orchestra::telemetry::current`]), so
/// `GET /logs?traceId=` finds what a handler logged.
fn in_current_trace(record: &mut LogRecord) {
    if let Some(trace) = omc_orchestra::telemetry::current() {
        record.trace_id = Some(trace.trace_id);
        record.span_id = Some(trace.parent_id);
    }
}
