//! Choosing the backends: memory by default, Redis from a URL.

use crate::clock::{self, SharedClock};
use crate::durability::DurabilityReport;
#[cfg(feature = "redis")]
use crate::durability::{Durability, DEFAULT_CONFIRM_TIMEOUT};
use crate::events::{EventBus, MemoryEventBus};
use crate::jobs::{JobStore, MemoryJobQueue};
use crate::logs::{LogSink, MemoryLogSink};
use crate::registry::{MemoryRegistry, Registry, RegistryOptions};
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
    pub jobs: Arc<dyn JobStore>,
    /// Log store.
    pub logs: Arc<dyn LogSink>,
    /// The clock every store uses.
    pub clock: SharedClock,
    /// Which kind of backend this is (`memory` or `redis`).
    pub kind: &'static str,
    /// What an acknowledged write survives here, as `/health` shows it.
    pub durability: DurabilityReport,
    /// What [`Backends::ready`] asks.
    #[cfg(feature = "redis")]
    epoch: Option<Arc<redis_store::Epoch>>,
    /// The store the Redis backends share, for [`Backends::redis_store`].
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
            durability: DurabilityReport::memory(),
            #[cfg(feature = "redis")]
            epoch: None,
            #[cfg(feature = "redis")]
            redis: None,
        }
    }

    /// Whether the stores can serve now: in memory always; with Redis, whether it answers
    /// within two seconds and still holds what it held (the error names the backend;
    /// readiness, not liveness: a server whose Redis is away still answers, and says so
    /// here). A Redis that came back empty (restarted without persistence, or flushed)
    /// is reported for a minute after it is noticed, and logged as an error once.
    pub async fn ready(&self) -> Result<()> {
        #[cfg(feature = "redis")]
        if let Some(epoch) = &self.epoch {
            return epoch.check().await;
        }
        Ok(())
    }

    /// Stores in the Redis at `url`, every key under `prefix` (default `orc`), writes
    /// acknowledged once Redis has them in memory.
    ///
    /// Every store lives in Redis; the job queue is the queue named `default`.
    #[cfg(feature = "redis")]
    pub async fn redis(url: &str, prefix: &str, options: RegistryOptions) -> Result<Self> {
        Self::redis_durable(url, prefix, options, Durability::Memory).await
    }

    /// Stores in the Redis at `url` as [`Backends::redis`], each job, event and log batch
    /// acknowledged at `level` (see [`crate::durability`]). Redis's settings are read
    /// first: a level they cannot keep is an error naming the setting, and what a crash
    /// would lose is logged (a WARN when the level holds only in part, or nothing is on
    /// disk).
    #[cfg(feature = "redis")]
    pub async fn redis_durable(
        url: &str,
        prefix: &str,
        options: RegistryOptions,
        level: Durability,
    ) -> Result<Self> {
        let clock = clock::system();
        let store = RedisStore::connect(url, prefix).await?;
        let (store, durability) = store
            .with_durability(level, DEFAULT_CONFIRM_TIMEOUT)
            .await?;
        durability.log();
        let epoch = Arc::new(redis_store::Epoch::mark(store.clone()).await?);
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
            durability,
            epoch: Some(epoch),
            redis: Some(store),
            ..memory
        })
    }
}

#[cfg(feature = "redis")]
impl Backends {
    /// A store on a connection of its own to the Redis these backends use (same topology,
    /// prefix and durability), for engines that keep state beside them: the gateway's
    /// shared rate limits, the health checker's round lock. `None` for memory backends.
    /// Opening it here keeps one place that knows how to reach Redis.
    pub async fn redis_store(&self) -> Result<Option<RedisStore>> {
        match &self.redis {
            Some(store) => Ok(Some(store.with_own_connection().await?)),
            None => Ok(None),
        }
    }

    /// These backends with `store` as the Redis [`Backends::redis_store`] opens from, the
    /// stores left as they are: memory stores on a test clock whose gateways still share
    /// rate limits and cache through Redis.
    pub fn with_redis_store(mut self, store: RedisStore) -> Self {
        self.redis = Some(store);
        self
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
    use crate::durability::{Durability, DurabilityReport, Persistence};
    use crate::topology::{RedisConnection, Target, Topology};
    use crate::{Error, Result};
    use redis::streams::{StreamId, StreamRangeReply, StreamReadOptions, StreamReadReply};
    use redis::AsyncCommands;
    use std::future::Future;
    use std::time::Duration;
    use tokio::sync::broadcast;

    /// How many times a command is tried when the connection drops (Redis restarting).
    const ATTEMPTS: usize = 4;

    /// How long readiness reports a Redis that came back empty, once noticed: long enough
    /// for every probe and replica to see it.
    const EMPTY_REPORTED_FOR: Duration = Duration::from_secs(60);

    /// A mark the stores leave in Redis, so a Redis that lost everything is noticed: the
    /// key `{prefix}:sys:{sys}:epoch` holds a value shared by every replica; when it is
    /// gone or changed, Redis came back without what it held.
    pub(crate) struct Epoch {
        store: RedisStore,
        key: String,
        /// The mark this replica knows, and when it last found it gone.
        known: parking_lot::Mutex<(String, Option<std::time::Instant>)>,
    }

    impl Epoch {
        /// Leave the mark (or adopt the one another replica left).
        pub(crate) async fn mark(store: RedisStore) -> Result<Self> {
            let key = store.key("sys", "sys", "epoch");
            let epoch = Self {
                known: parking_lot::Mutex::new((Self::renew(&store, &key).await?, None)),
                store,
                key,
            };
            Ok(epoch)
        }

        /// Set a fresh mark unless one is there, and answer the one that is.
        async fn renew(store: &RedisStore, key: &str) -> Result<String> {
            let fresh = uuid::Uuid::new_v4().simple().to_string();
            let mut conn = store.connection();
            let (_, mark): (redis::Value, String) = redis::pipe()
                .cmd("SET")
                .arg(key)
                .arg(&fresh)
                .arg("NX")
                .cmd("GET")
                .arg(key)
                .query_async(&mut conn)
                .await?;
            Ok(mark)
        }

        /// Whether Redis answers within two seconds and still holds the mark.
        pub(crate) async fn check(&self) -> Result<()> {
            let mut conn = self.store.connection();
            let get = redis::cmd("GET").arg(&self.key).to_owned();
            let found = get.query_async::<Option<String>>(&mut conn);
            let found = match tokio::time::timeout(Duration::from_secs(2), found).await {
                Ok(Ok(found)) => found,
                Ok(Err(err)) => {
                    return Err(Error::Overloaded(format!(
                        "redis does not answer: {}",
                        crate::redact::redact(&err.to_string())
                    )))
                }
                Err(_) => return Err(Error::Overloaded("redis did not answer within 2 s".into())),
            };
            let known = self.known.lock().0.clone();
            if found.as_deref() != Some(known.as_str()) {
                let mark = Self::renew(&self.store, &self.key).await?;
                tracing::error!(
                    "redis came back empty (restarted without persistence, or flushed): \
                     every job, event and log record it held before is gone"
                );
                *self.known.lock() = (mark, Some(std::time::Instant::now()));
            }
            match self.known.lock().1 {
                Some(at) if at.elapsed() < EMPTY_REPORTED_FOR => Err(Error::Overloaded(
                    "redis came back empty (restarted without persistence, or flushed): \
                     what it held before is gone"
                        .into(),
                )),
                _ => Ok(()),
            }
        }
    }

    /// Whether Redis refused a command without running it (a replica, a cluster slot
    /// moving or down, a master still loading): sending it again is always safe.
    fn not_run(err: &redis::RedisError) -> bool {
        use redis::ServerErrorKind as Kind;
        matches!(
            err.kind(),
            redis::ErrorKind::Server(
                Kind::ReadOnly
                    | Kind::TryAgain
                    | Kind::ClusterDown
                    | Kind::MasterDown
                    | Kind::BusyLoading
            )
        )
    }

    /// What one node keeps (see [`RedisStore::persistence`]).
    async fn node_persistence(node: &redis::Client) -> Result<Persistence> {
        let connect = node.get_multiplexed_async_connection();
        let mut conn = tokio::time::timeout(Duration::from_secs(2), connect)
            .await
            .map_err(|_| Error::Overloaded("redis did not answer within 2 s".into()))??;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .arg("persistence")
            .arg("replication")
            .query_async(&mut conn)
            .await?;
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_owned())
        };
        let mut config_get = async |name: &str| -> Option<String> {
            let got: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query_async(&mut conn)
                .await;
            got.ok().and_then(|pair| pair.into_iter().nth(1))
        };
        Ok(Persistence {
            topology: String::new(),
            version: field("redis_version").unwrap_or_default(),
            aof: field("aof_enabled").as_deref() == Some("1"),
            appendfsync: config_get("appendfsync").await,
            snapshots: config_get("save").await.map(|save| !save.trim().is_empty()),
            replicas: field("connected_slaves")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
        })
    }

    /// A shared Redis connection that reconnects by itself, plus the key prefix.
    #[derive(Clone)]
    pub struct RedisStore {
        target: Target,
        connection: RedisConnection,
        prefix: String,
        /// What a write batch waits for before it is acknowledged (see
        /// [`RedisStore::with_durability`]).
        confirm: Option<Confirm>,
    }

    /// The command sent with each write batch to wait for its durability.
    #[derive(Debug, Clone, Copy)]
    enum Confirm {
        /// `WAIT 1 ms`: one replica has it.
        Replica { ms: u64 },
        /// `WAITAOF 1 replicas ms`: on disk here (and on `replicas` replicas' disks).
        Disk { replicas: u8, ms: u64 },
    }

    impl Confirm {
        /// Whether the answer to the wait says the write is as durable as promised.
        fn check(self, answer: redis::Value) -> Result<()> {
            let counts: Vec<i64> = match answer {
                redis::Value::Array(_) => redis::from_redis_value(answer)?,
                other => vec![redis::from_redis_value(other)?],
            };
            let first = counts.first().copied().unwrap_or(0);
            let (what, ms, ok) = match self {
                Confirm::Replica { ms } => ("a replica", ms, first >= 1),
                Confirm::Disk { replicas, ms } => (
                    "the append-only file",
                    ms,
                    first >= 1 && counts.get(1).copied().unwrap_or(0) >= i64::from(replicas),
                ),
            };
            if ok {
                return Ok(());
            }
            Err(Error::Backend(
                format!(
                    "the write reached Redis but {what} did not confirm it within {ms} ms, \
                     so it is not acknowledged (it may still be kept)"
                )
                .into(),
            ))
        }
    }

    impl std::fmt::Debug for RedisStore {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RedisStore")
                .field("prefix", &self.prefix)
                .finish_non_exhaustive()
        }
    }

    impl RedisStore {
        /// Connect to `url` (one server, Sentinel or Cluster, see [`crate::topology`]);
        /// every key starts with `prefix`.
        pub async fn connect(url: &str, prefix: &str) -> Result<Self> {
            if prefix.is_empty() || prefix.contains(['{', '}']) {
                return Err(Error::invalid(
                    "prefix",
                    "must be non-empty and contain no braces",
                ));
            }
            let target = Target::parse(url)?;
            let connection = target.connect().await?;
            Ok(Self {
                target,
                connection,
                prefix: prefix.to_owned(),
                confirm: None,
            })
        }

        /// What this Redis keeps: `INFO server`, `persistence` and `replication`, and
        /// `CONFIG GET appendfsync` and `save` where the server allows them. On a Cluster,
        /// every master is asked and the least any of them keeps is the answer.
        pub async fn persistence(&self) -> Result<Persistence> {
            let mut least: Option<Persistence> = None;
            for node in self.target.nodes().await? {
                let mut found = node_persistence(&node).await?;
                found.topology = self.topology().as_str().to_owned();
                least = Some(match least {
                    None => found,
                    Some(least) => least.least(found),
                });
            }
            least.ok_or_else(|| Error::Backend("no Redis node answers".into()))
        }

        /// The same store, each write batch acknowledged only at `level` (see
        /// [`crate::durability`]): the settings of this Redis are read and assessed first,
        /// and a level it cannot keep is an error naming the setting. A replica or disk
        /// that does not confirm a write within `timeout` fails that call.
        pub async fn with_durability(
            mut self,
            level: Durability,
            timeout: Duration,
        ) -> Result<(Self, DurabilityReport)> {
            let persistence = self.persistence().await?;
            let waitaof = persistence.has_waitaof();
            let report = DurabilityReport::assess(level, persistence)?;
            let ms = u64::try_from(timeout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            self.confirm = match level {
                Durability::Memory => None,
                // Before WAITAOF, `appendfsync always` (checked above) syncs before answering.
                Durability::Aof if waitaof => Some(Confirm::Disk { replicas: 0, ms }),
                Durability::Aof => None,
                Durability::AofReplica if waitaof => Some(Confirm::Disk { replicas: 1, ms }),
                Durability::Replica | Durability::AofReplica => Some(Confirm::Replica { ms }),
            };
            Ok((self, report))
        }

        /// Run a write batch's `script` with `keys` and `args`, again after a dropped
        /// connection or a timeout (the script must store nothing twice when sent twice),
        /// with the durability wait in the same pipeline, so it waits for this write.
        pub(crate) async fn eval_batch(
            &self,
            script: &redis::Script,
            keys: &[&str],
            args: &[String],
        ) -> Result<redis::Value> {
            let mut eval = redis::cmd("EVALSHA");
            eval.arg(script.get_hash())
                .arg(keys.len())
                .arg(keys)
                .arg(args);
            let mut pipe = redis::pipe();
            pipe.add_command(eval);
            match self.confirm {
                None => {}
                Some(Confirm::Replica { ms }) => {
                    pipe.cmd("WAIT").arg(1).arg(ms);
                }
                Some(Confirm::Disk { replicas, ms }) => {
                    pipe.cmd("WAITAOF").arg(1).arg(replicas).arg(ms);
                }
            }
            let no_script = redis::ErrorKind::Server(redis::ServerErrorKind::NoScript);
            let mut answers: Vec<redis::Value> = self
                .retry(|mut conn| {
                    let pipe = &pipe;
                    async move {
                        match pipe.query_async::<Vec<redis::Value>>(&mut conn).await {
                            Err(err) if err.kind() == no_script => {
                                script.prepare_invoke().load_async(&mut conn).await?;
                                pipe.query_async(&mut conn).await
                            }
                            answer => answer,
                        }
                    }
                })
                .await?;
            if let Some(confirm) = self.confirm {
                confirm.check(answers.pop().unwrap_or(redis::Value::Nil))?;
            }
            Ok(answers.pop().unwrap_or(redis::Value::Nil))
        }

        /// The key prefix.
        pub fn prefix(&self) -> &str {
            &self.prefix
        }

        /// `{prefix}:{area}:{{tag}}:{name}`: keys with the same `tag` share a hash slot.
        pub fn key(&self, area: &str, tag: &str, name: &str) -> String {
            format!("{}:{area}:{{{tag}}}:{name}", self.prefix)
        }

        /// Which topology this Redis is.
        pub fn topology(&self) -> Topology {
            self.target.topology()
        }

        /// The shared, multiplexed connection.
        pub fn connection(&self) -> RedisConnection {
            self.connection.clone()
        }

        /// A connection of its own, for blocking reads that must not hold up others.
        pub async fn blocking_connection(&self) -> Result<RedisConnection> {
            self.target.connect().await
        }

        /// The same store on a connection of its own: what it sends does not queue behind
        /// the shared connection's traffic.
        pub async fn with_own_connection(&self) -> Result<RedisStore> {
            Ok(RedisStore {
                target: self.target.clone(),
                connection: self.blocking_connection().await?,
                prefix: self.prefix.clone(),
                confirm: self.confirm,
            })
        }

        /// A connection of its own for pub/sub.
        pub async fn pubsub(&self) -> Result<redis::aio::PubSub> {
            self.target.pubsub().await
        }

        /// Run `op` on the shared connection, again after a dropped connection or a
        /// timeout (the connection manager reconnects in between), up to a few times: for
        /// reads, and for writes that store nothing twice when sent twice (a write batch
        /// keeps its answer under a key fixed before the first attempt, see
        /// `RESEND_WINDOW`).
        pub async fn retry<T, F, Fut>(&self, op: F) -> Result<T>
        where
            F: FnMut(RedisConnection) -> Fut,
            Fut: Future<Output = redis::RedisResult<T>>,
        {
            self.attempts(op, |err| {
                err.is_io_error() || err.is_connection_dropped() || err.is_timeout() || not_run(err)
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
            F: FnMut(RedisConnection) -> Fut,
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

        /// Delete every key under this store's prefix (for tests and teardown), on every
        /// node that holds data.
        pub async fn delete_prefix(&self) -> Result<u64> {
            let pattern = format!("{}:*", self.prefix);
            let mut deleted = 0u64;
            for node in self.target.nodes().await? {
                let mut conn = node.get_multiplexed_async_connection().await?;
                let mut cursor = 0u64;
                loop {
                    let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(500)
                        .query_async(&mut conn)
                        .await?;
                    // One key per DEL: a Cluster node refuses keys of several slots at once.
                    for key in keys {
                        deleted += redis::cmd("DEL")
                            .arg(&key)
                            .query_async::<u64>(&mut conn)
                            .await?;
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
            Ok(deleted)
        }
    }
}
