//! Forwarding to Elasticsearch through the `_bulk` API, off the ingest path.
//!
//! [`ElasticForwarder::export`] only queues records (a bounded queue; when it is full the
//! record is counted in `dropped` and ingest goes on), so a slow or absent Elasticsearch
//! never holds up a writer. A background task sends the queue in batches as NDJSON
//! (`{"index":{"_index":"logs-2026.03.01"}}` then the document), reads the per-item
//! results of a `200` answer, and sends again, with backoff, the items marked failed with
//! a retryable status (429 or 5xx) or the whole batch when the request failed.

use super::{LogExport, LogRecord};
use crate::redact::redact;
use crate::{Error, Result};
use async_trait::async_trait;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How the forwarder batches and retries.
#[derive(Clone, PartialEq, Eq)]
pub struct ElasticOptions {
    /// Elasticsearch's base URL (`http://elasticsearch:9200`).
    pub url: String,
    /// Index name prefix; documents go to `{prefix}-YYYY.MM.DD` of their timestamp.
    pub index_prefix: String,
    /// Records the queue holds before new ones are dropped (and counted).
    pub queue: usize,
    /// Most records per `_bulk` request.
    pub batch: usize,
    /// How long a partial batch waits for more records.
    pub linger: Duration,
    /// Tries per record (the first send included).
    pub attempts: u32,
    /// Pause before the first retry; doubled for each next one.
    pub backoff: Duration,
}

impl ElasticOptions {
    /// Defaults for `url`: index `logs-*`, a 10 000-record queue, 500-record batches,
    /// 5 tries from 200 ms backoff.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            index_prefix: "logs".into(),
            queue: 10_000,
            batch: 500,
            linger: Duration::from_millis(200),
            attempts: 5,
            backoff: Duration::from_millis(200),
        }
    }
}

impl std::fmt::Debug for ElasticOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry credentials (`https://user:pw@es:9200`, `?api_key=`).
        f.debug_struct("ElasticOptions")
            .field("url", &redact(&self.url))
            .field("index_prefix", &self.index_prefix)
            .field("queue", &self.queue)
            .field("batch", &self.batch)
            .field("linger", &self.linger)
            .field("attempts", &self.attempts)
            .field("backoff", &self.backoff)
            .finish()
    }
}

/// What the forwarder has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ElasticCounters {
    /// Records Elasticsearch accepted.
    pub forwarded: u64,
    /// Records dropped because the queue was full.
    pub dropped: u64,
    /// Records given up on: refused for good, or still failing after every try.
    pub failed: u64,
}

#[derive(Default)]
struct Counters {
    forwarded: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

/// Forwards records to Elasticsearch in the background.
pub struct ElasticForwarder {
    queue: mpsc::Sender<LogRecord>,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for ElasticForwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElasticForwarder")
            .field("counters", &self.counters())
            .finish_non_exhaustive()
    }
}

impl Drop for ElasticForwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ElasticForwarder {
    /// Start forwarding to `options.url`.
    pub fn spawn(options: ElasticOptions) -> Result<Self> {
        let base = options.url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::invalid("elasticsearchUrl", "must be an http(s) URL"));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(Error::backend)?;
        let (queue, pending) = mpsc::channel(options.queue.max(1));
        let counters = Arc::new(Counters::default());
        let sender = Sender {
            client,
            endpoint: format!("{base}/_bulk"),
            options,
            counters: counters.clone(),
        };
        let task = tokio::spawn(sender.run(pending));
        Ok(Self {
            queue,
            counters,
            task,
        })
    }

    /// The counters so far.
    pub fn counters(&self) -> ElasticCounters {
        ElasticCounters {
            forwarded: self.counters.forwarded.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
        }
    }
}

#[async_trait]
impl LogExport for ElasticForwarder {
    async fn export(&self, records: &[LogRecord]) -> Result<()> {
        for record in records {
            if self.queue.try_send(record.clone()).is_err() {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

struct Sender {
    client: reqwest::Client,
    endpoint: String,
    options: ElasticOptions,
    counters: Arc<Counters>,
}

/// What one `_bulk` request came to.
enum Outcome {
    /// Every item stored.
    Done,
    /// These items (by index in the batch) failed with a retryable status.
    Retry(Vec<usize>),
}

impl Sender {
    async fn run(self, mut pending: mpsc::Receiver<LogRecord>) {
        let batch_size = self.options.batch.max(1);
        while let Some(first) = pending.recv().await {
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + self.options.linger;
            while batch.len() < batch_size {
                match tokio::time::timeout_at(deadline, pending.recv()).await {
                    Ok(Some(record)) => batch.push(record),
                    Ok(None) | Err(_) => break,
                }
            }
            self.deliver(batch).await;
        }
    }

    /// Send `batch`, retrying what failed, until it is stored or out of tries.
    async fn deliver(&self, mut batch: Vec<LogRecord>) {
        let mut backoff = self.options.backoff;
        for attempt in 1..=self.options.attempts.max(1) {
            match self.send(&batch).await {
                Ok(Outcome::Done) => return,
                Ok(Outcome::Retry(failed)) => {
                    batch = failed
                        .into_iter()
                        .filter_map(|i| batch.get(i).cloned())
                        .collect();
                }
                Err(err) => {
                    // The client's errors quote the request URL, query parameters included.
                    tracing::warn!(error = %redact(&err.to_string()), attempt,
                        records = batch.len(), "forwarding logs to Elasticsearch failed");
                }
            }
            if batch.is_empty() {
                return;
            }
            if attempt < self.options.attempts {
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2);
            }
        }
        self.counters
            .failed
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
    }

    async fn send(&self, batch: &[LogRecord]) -> Result<Outcome> {
        let body = ndjson(batch, &self.options.index_prefix)?;
        let response = self
            .client
            .post(&self.endpoint)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .map_err(Error::backend)?;
        let status = response.status();
        if !status.is_success() {
            return Err(Error::backend(std::io::Error::other(format!(
                "Elasticsearch answered {status}"
            ))));
        }
        let answer: serde_json::Value = response.json().await.map_err(Error::backend)?;
        let items = answer["items"].as_array().cloned().unwrap_or_default();
        if answer["errors"] != serde_json::Value::Bool(true) {
            self.counters
                .forwarded
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            return Ok(Outcome::Done);
        }
        let mut retry = Vec::new();
        for (index, _) in batch.iter().enumerate() {
            let status = items
                .get(index)
                .and_then(|item| item.as_object())
                .and_then(|item| item.values().next())
                .and_then(|result| result["status"].as_u64())
                .unwrap_or(500);
            match status {
                200..=299 => {
                    self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
                }
                429 | 500..=599 => retry.push(index),
                _ => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(if retry.is_empty() {
            Outcome::Done
        } else {
            Outcome::Retry(retry)
        })
    }
}

/// The `_bulk` body of `batch`: an action line and a document line per record.
fn ndjson(batch: &[LogRecord], prefix: &str) -> Result<Vec<u8>> {
    let mut body = Vec::with_capacity(batch.len() * 256);
    for record in batch {
        let index = format!("{prefix}-{}", record.timestamp.format("%Y.%m.%d"));
        serde_json::to_writer(&mut body, &serde_json::json!({"index": {"_index": index}}))?;
        body.push(b'\n');
        let mut doc = serde_json::to_value(record)?;
        if let Some(doc) = doc.as_object_mut() {
            doc.insert("@timestamp".into(), serde_json::json!(record.timestamp));
            doc.insert(
                "severityNumber".into(),
                serde_json::json!(record.severity_number()),
            );
        }
        serde_json::to_writer(&mut body, &doc)?;
        body.push(b'\n');
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_masks_the_url_credentials() {
        let shown = format!(
            "{:?}",
            ElasticOptions::new("https://elastic:hunter2@es:9200/?api_key=hunter2")
        );
        assert!(
            shown.contains("https://elastic:***@es:9200/?api_key=***"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
