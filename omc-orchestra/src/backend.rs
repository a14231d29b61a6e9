//! Choosing the backends: memory by default, Redis from a URL.

use crate::clock::{self, SharedClock};
use crate::events::{EventBus, MemoryEventBus};
use crate::jobs::{JobQueue, MemoryJobQueue};
use crate::logs::{LogSink, MemoryLogSink};
use crate::registry::{MemoryRegistry, Registry, RegistryOptions};
#[cfg(feature = "redis")]
use crate::Result;
use std::sync::Arc;

/// The four stores, built once and shared by every engine and server.
#[derive(Clone)]
pub struct Backends {
    /// Service registry.
    pub registry: Arc<dyn Registry>,
    /// Event bus.
    pub events: Arc<dyn EventBus>,
    /// Job queue.
    pub jobs: Arc<dyn JobQueue>,
    /// Log store.
    pub logs: Arc<dyn LogSink>,
    /// The clock every store uses.
    pub clock: SharedClock,
    /// Which kind of backend this is (`memory` or `redis`).
    pub kind: &'static str,
    /// What [`Backends::ready`] asks.
    #[cfg(feature = "redis")]
    redis: Option<RedisStore>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Backends {
    /// In-memory stores on the wall clock with default options.
    pub fn memory() -> Self {
        Self::memory_with(clock::system(), RegistryOptions::default())
    }

    /// In-memory stores on `clock`.
    pub fn memory_with(clock: SharedClock, options: RegistryOptions) -> Self {
        Self {
            registry: Arc::new(MemoryRegistry::new(clock.clone(), options)),
            events: Arc::new(MemoryEventBus::new(clock.clone())),
            jobs: Arc::new(MemoryJobQueue::new(clock.clone())),
            logs: Arc::new(MemoryLogSink::new()),
            clock,
            kind: "memory",
            #[cfg(feature = "redis")]
            redis: None,
        }
    }

    /// Whether the stores can serve now: in memory always; with Redis, whether it answers
    /// a `PING` within two seconds. The error names the backend (readiness, not liveness:
    /// a server whose Redis is away still answers, and says so here).
    pub async fn ready(&self) -> Result<()> {
        #[cfg(feature = "redis")]
        if let Some(store) = &self.redis {
            let mut conn = store.connection();
            let command = redis::cmd("PING");
            let ping = command.query_async::<redis::Value>(&mut conn);
            return match tokio::time::timeout(std::time::Duration::from_secs(2), ping).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(err)) => Err(crate::Error::Overloaded(format!(
                    "redis does not answer: {}",
                    crate::redact::redact(&err.to_string())
                ))),
                Err(_) => Err(crate::Error::Overloaded(
                    "redis did not answer a PING within 2 s".into(),
                )),
            };
        }
        Ok(())
    }

    /// Stores in the Redis at `url`, every key under `prefix` (default `orc`).
    ///
    /// Every store lives in Redis; the job queue is the queue named `default`.
    #[cfg(feature = "redis")]
    pub async fn redis(url: &str, prefix: &str, options: RegistryOptions) -> Result<Self> {
        let clock = clock::system();
        let store = RedisStore::connect(url, prefix).await?;
        let registry =
            crate::registry::RedisRegistry::new(store.clone(), clock.clone(), options).await?;
        let events = crate::events::RedisEventBus::new(
            store.clone(),
            clock.clone(),
            crate::events::BusOptions::default(),
        )
        .await?;
        let jobs = crate::jobs::RedisJobQueue::new(
            store.clone(),
            "default",
            clock.clone(),
            crate::jobs::QueueOptions::default(),
        )?;
        let logs = crate::logs::RedisLogSink::new(store.clone(), clock.clone()).await?;
        let memory = Self::memory_with(clock.clone(), options);
        Ok(Self {
            registry: Arc::new(registry),
            events: Arc::new(events),
            jobs: Arc::new(jobs),
            logs: Arc::new(logs),
            kind: "redis",
            redis: Some(store),
            ..memory
        })
    }
}

#[cfg(feature = "redis")]
pub use self::redis_store::RedisStore;

/// How long a write batch's answer is kept under the batch's own key, so a resend of the
/// batch (after a timeout left its outcome unknown) stores nothing twice: longer than
/// every attempt of [`RedisStore::retry`] together (four of at most five seconds each).
#[cfg(feature = "redis")]
pub(crate) const RESEND_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// One call waiting for its batch, and where its answer goes.
#[cfg(feature = "redis")]
pub(crate) type Pending<I, O> = (I, tokio::sync::oneshot::Sender<Result<O, String>>);

/// Group commit: whatever queued up on `pending` while earlier batches were in flight goes
/// to `send` as one batch (at most `most` items, at most `in_flight` batches in flight, no
/// added delay), and each caller gets its own answer. Runs until every sender is dropped.
#[cfg(feature = "redis")]
pub(crate) async fn group_commit<I, O, F, Fut>(
    mut pending: tokio::sync::mpsc::UnboundedReceiver<Pending<I, O>>,
    most: usize,
    in_flight: usize,
    send: F,
) where
    I: Send + 'static,
    O: Send + 'static,
    F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Vec<O>>> + Send + 'static,
{
    let send = Arc::new(send);
    // More than one batch in flight: Redis runs one while this process prepares the next.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(in_flight.max(1)));
    while let Some(first) = pending.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < most {
            match pending.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let (items, replies): (Vec<I>, Vec<_>) = batch.into_iter().unzip();
        let answer = send(items);
        tokio::spawn(async move {
            match answer.await {
                Ok(done) if done.len() == replies.len() => {
                    for (reply, value) in replies.into_iter().zip(done) {
                        let _ = reply.send(Ok(value));
                    }
                }
                Ok(done) => {
                    let message =
                        format!("a batch answered {} of {} calls", done.len(), replies.len());
                    for reply in replies {
                        let _ = reply.send(Err(message.clone()));
                    }
                }
                Err(err) => {
                    let message = err.to_string();
                    for reply in replies {
                        let _ = reply.send(Err(message.clone()));
                    }
                }
            }
            drop(permit);
        });
    }
}

#[cfg(feature = "redis")]
mod redis_store {
    use crate::{Error, Result};
    use redis::aio::{ConnectionManager, ConnectionManagerConfig};
    use redis::streams::{StreamId, StreamRangeReply, StreamReadOptions, StreamReadReply};
    use redis::AsyncCommands;
    use std::future::Future;
    use std::time::Duration;
    use tokio::sync::broadcast;

    /// How many times a command is tried when the connection drops (Redis restarting).
    const ATTEMPTS: usize = 4;

    /// A shared Redis connection that reconnects by itself, plus the key prefix.
    #[derive(Clone)]
    pub struct RedisStore {
        client: redis::Client,
        connection: ConnectionManager,
        prefix: String,
    }

    impl std::fmt::Debug for RedisStore {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RedisStore")
                .field("prefix", &self.prefix)
                .finish_non_exhaustive()
        }
    }

    fn config() -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(1))
    }

    impl RedisStore {
        /// Connect to `url`; every key starts with `prefix`.
        pub async fn connect(url: &str, prefix: &str) -> Result<Self> {
            if prefix.is_empty() || prefix.contains(['{', '}']) {
                return Err(Error::invalid(
                    "prefix",
                    "must be non-empty and contain no braces",
                ));
            }
            // The error is shown to whoever started the server; the driver may quote the URL.
            let client = redis::Client::open(url).map_err(|err| {
                Error::invalid("redisUrl", crate::redact::redact(&err.to_string()))
            })?;
            let connection = client.get_connection_manager_with_config(config()).await?;
            Ok(Self {
                client,
                connection,
                prefix: prefix.to_owned(),
            })
        }

        /// The key prefix.
        pub fn prefix(&self) -> &str {
            &self.prefix
        }

        /// `{prefix}:{area}:{{tag}}:{name}`: keys with the same `tag` share a hash slot.
        pub fn key(&self, area: &str, tag: &str, name: &str) -> String {
            format!("{}:{area}:{{{tag}}}:{name}", self.prefix)
        }

        /// The shared, multiplexed connection.
        pub fn connection(&self) -> ConnectionManager {
            self.connection.clone()
        }

        /// A connection of its own, for blocking reads that must not hold up others.
        pub async fn blocking_connection(&self) -> Result<ConnectionManager> {
            Ok(self
                .client
                .get_connection_manager_with_config(config())
                .await?)
        }

        /// The same store on a connection of its own: what it sends does not queue behind
        /// the shared connection's traffic.
        pub async fn with_own_connection(&self) -> Result<RedisStore> {
            Ok(RedisStore {
                client: self.client.clone(),
                connection: self.blocking_connection().await?,
                prefix: self.prefix.clone(),
            })
        }

        /// A connection of its own for pub/sub.
        pub async fn pubsub(&self) -> Result<redis::aio::PubSub> {
            Ok(self.client.get_async_pubsub().await?)
        }

        /// Run `op` on the shared connection, again after a dropped connection or a
        /// timeout (the connection manager reconnects in between), up to a few times: for
        /// reads, and for writes that store nothing twice when sent twice (a write batch
        /// keeps its answer under a key fixed before the first attempt, see
        /// `RESEND_WINDOW`).
        pub async fn retry<T, F, Fut>(&self, op: F) -> Result<T>
        where
            F: FnMut(ConnectionManager) -> Fut,
            Fut: Future<Output = redis::RedisResult<T>>,
        {
            self.attempts(op, |err| {
                err.is_io_error() || err.is_connection_dropped() || err.is_timeout()
            })
            .await
        }

        /// Run `op`, again (up to a few times, backing off) after an error `again` says
        /// may be sent again.
        async fn attempts<T, F, Fut>(
            &self,
            mut op: F,
            again: impl Fn(&redis::RedisError) -> bool,
        ) -> Result<T>
        where
            F: FnMut(ConnectionManager) -> Fut,
            Fut: Future<Output = redis::RedisResult<T>>,
        {
            let mut attempt = 0;
            loop {
                attempt += 1;
                match op(self.connection.clone()).await {
                    Ok(value) => return Ok(value),
                    Err(err) if attempt < ATTEMPTS && again(&err) => {
                        tokio::time::sleep(Duration::from_millis(100 * attempt as u64)).await;
                    }
                    Err(err) => return Err(err.into()),
                }
            }
        }

        /// The id of the newest entry of the stream at `key` (`0-0` when it is empty or
        /// missing): where [`follow_stream`](Self::follow_stream) starts to see only new
        /// entries.
        pub async fn stream_tail(&self, key: &str) -> Result<String> {
            let reply: StreamRangeReply = self
                .retry(|mut conn| {
                    let mut cmd = redis::cmd("XREVRANGE");
                    cmd.arg(key).arg("+").arg("-").arg("COUNT").arg(1);
                    async move { cmd.query_async(&mut conn).await }
                })
                .await?;
            Ok(reply.ids.into_iter().next().map_or("0-0".into(), |e| e.id))
        }

        /// Follow the stream at `key` from after the entry id `after`, on a connection of
        /// its own, until the returned task is aborted: `XREAD BLOCK 1000 COUNT batch`,
        /// each entry passed to `decode` in order and what it answers sent on `sender`
        /// (`None` skips the entry; a send without receivers is not an error). On an error
        /// the task logs a warning (`"{what} interrupted; reconnecting"`), waits 250 ms,
        /// reconnects and goes on after the last entry it saw.
        pub fn follow_stream<T, D>(
            &self,
            key: String,
            after: String,
            batch: usize,
            what: &'static str,
            decode: D,
            sender: broadcast::Sender<T>,
        ) -> tokio::task::JoinHandle<()>
        where
            T: Send + 'static,
            D: Fn(&StreamId) -> Option<T> + Send + Sync + 'static,
        {
            let store = self.clone();
            let mut last = after;
            tokio::spawn(async move {
                loop {
                    let followed = store
                        .follow_until_error(&key, &mut last, batch, &decode, &sender)
                        .await;
                    if let Err(err) = followed {
                        tracing::warn!(error = %err, "{what} interrupted; reconnecting");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
            })
        }

        /// One connection's worth of [`follow_stream`](Self::follow_stream).
        async fn follow_until_error<T>(
            &self,
            key: &str,
            last: &mut String,
            batch: usize,
            decode: &impl Fn(&StreamId) -> Option<T>,
            sender: &broadcast::Sender<T>,
        ) -> Result<()> {
            let mut conn = self.blocking_connection().await?;
            let options = StreamReadOptions::default().block(1000).count(batch);
            loop {
                let reply: Option<StreamReadReply> = conn
                    .xread_options(&[key], &[last.as_str()], &options)
                    .await?;
                for stream in reply.map(|r| r.keys).unwrap_or_default() {
                    for entry in stream.ids {
                        *last = entry.id.clone();
                        if let Some(item) = decode(&entry) {
                            let _ = sender.send(item);
                        }
                    }
                }
            }
        }

        /// Delete every key under this store's prefix (for tests and teardown).
        pub async fn delete_prefix(&self) -> Result<u64> {
            let mut conn = self.connection();
            let pattern = format!("{}:*", self.prefix);
            let mut cursor = 0u64;
            let mut deleted = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(500)
                    .query_async(&mut conn)
                    .await?;
                if !keys.is_empty() {
                    deleted += redis::cmd("DEL")
                        .arg(&keys)
                        .query_async::<u64>(&mut conn)
                        .await?;
                }
                if next == 0 {
                    return Ok(deleted);
                }
                cursor = next;
            }
        }
    }
}
