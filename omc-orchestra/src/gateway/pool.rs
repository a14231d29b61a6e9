//! Upstream connections: HTTP/1.1 keep-alive connections pooled per origin and per
//! thread. A connection serves one request at a time and goes back to the pool as soon
//! as its answer's body has been read to the end; an answer dropped half-read closes its
//! connection.
//!
//! Compared with a general-purpose client this does less per request: the request
//! already carries an origin-form target and a `Host`, the exchange runs in the task
//! that awaits it (see [`super::h1`]), a thread reuses the connections its own reactor
//! drives, and a pooled connection found closed before any answer came is replaced
//! transparently (the request is sent again on a fresh one when it was held whole).

use super::h1::{exchange, exchange_streamed, hold_whole, put_head, whole, Answer, Conn, Whole};
use super::{BoxError, GatewayBody};
use crate::per_thread::PerThread;
use http::{Request, Response};
use hyper::body::Body;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// How the pool keeps its connections.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Idle connections kept per origin; more are closed when they come back.
    pub max_idle_per_origin: usize,
    /// A connection whose last request started longer ago than this is closed instead
    /// of reused (timed from the request's start, the clock is read once per request).
    pub idle_timeout: Duration,
    /// Time allowed for the TCP connect.
    pub connect_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_idle_per_origin: 1024,
            idle_timeout: Duration::from_secs(90),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The TCP connection could not be opened.
    #[error("cannot connect to {origin}: {source}")]
    Connect {
        /// `host:port`.
        origin: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The TCP connect took longer than the pool's connect timeout.
    #[error("connecting to {0} timed out")]
    ConnectTimeout(String),
    /// The answer's head did not come by the request's deadline.
    #[error("the upstream did not answer in time")]
    TimedOut,
    /// The HTTP exchange of an upgrade failed (handshake, write or read of the head).
    #[error("the upstream exchange failed: {0}")]
    Http(#[from] hyper::Error),
    /// Writing to or reading from the upstream failed.
    #[error("the upstream connection failed: {0}")]
    Io(#[source] std::io::Error),
    /// The upstream's answer is not valid HTTP/1.1.
    #[error("{0}")]
    Protocol(String),
    /// The request's body failed while it was being sent.
    #[error("the request body failed: {0}")]
    Body(#[source] BoxError),
}

struct Idle {
    conn: Conn,
    /// When its last request started.
    since: Instant,
}

/// Idle connections by thread (a connection is driven by the reactor of the thread
/// that opened it) and origin. Origins are the registry's and the config's, never a
/// client's, so a fast hasher is safe here.
type IdleMap = foldhash::HashMap<(ThreadId, Arc<str>), Vec<Idle>>;

struct Shared {
    /// Each thread mostly meets only its own slot, so that threads neither contend for
    /// one lock nor share its cache line on every request.
    idle: PerThread<Mutex<IdleMap>>,
    options: PoolOptions,
}

impl Shared {
    /// The idle map of the calling thread's slot.
    fn shard(&self) -> &Mutex<IdleMap> {
        self.idle.get()
    }
}

/// Where a connection goes back to when its answer has been read.
pub(crate) struct Home {
    shared: Arc<Shared>,
    key: (ThreadId, Arc<str>),
    /// When the request on the connection started.
    since: Instant,
}

impl Home {
    pub(crate) fn checkin(self, conn: Conn) {
        let mut idle = self.shared.shard().lock();
        let list = idle.entry(self.key).or_default();
        if list.len() < self.shared.options.max_idle_per_origin {
            list.push(Idle {
                conn,
                since: self.since,
            });
        }
    }
}

/// Keep-alive HTTP/1.1 connections to upstreams, pooled per `host:port`.
#[derive(Clone)]
pub struct UpstreamPool {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("idle", &self.idle_count())
            .field("options", &self.shared.options)
            .finish()
    }
}

impl Default for UpstreamPool {
    fn default() -> Self {
        Self::new(PoolOptions::default())
    }
}

impl UpstreamPool {
    /// An empty pool.
    pub fn new(options: PoolOptions) -> Self {
        Self {
            shared: Arc::new(Shared {
                idle: PerThread::new(|| Mutex::new(IdleMap::default())),
                options,
            }),
        }
    }

    /// Idle connections held, over every origin.
    pub fn idle_count(&self) -> usize {
        self.shared
            .idle
            .iter()
            .map(|shard| shard.lock().values().map(Vec::len).sum::<usize>())
            .sum()
    }

    /// Close idle connections that expired or that their upstream closed, and forget
    /// origins left with none.
    pub fn sweep(&self) {
        let timeout = self.shared.options.idle_timeout;
        for shard in self.shared.idle.iter() {
            shard.lock().retain(|_, list| {
                list.retain(|c| c.conn.looks_idle() && c.since.elapsed() < timeout);
                !list.is_empty()
            });
        }
    }

    fn key(&self, origin: &Arc<str>) -> (ThreadId, Arc<str>) {
        (std::thread::current().id(), origin.clone())
    }

    fn home(&self, key: (ThreadId, Arc<str>), since: Instant) -> Home {
        Home {
            shared: self.shared.clone(),
            key,
            since,
        }
    }

    /// An idle connection to `key`'s origin for a request starting at `now`.
    fn checkout(&self, key: &(ThreadId, Arc<str>), now: Instant) -> Option<Conn> {
        let timeout = self.shared.options.idle_timeout;
        let mut idle = self.shared.shard().lock();
        let list = idle.get_mut(key)?;
        while let Some(idle) = list.pop() {
            if idle.conn.looks_idle() && now.saturating_duration_since(idle.since) < timeout {
                return Some(idle.conn);
            }
        }
        None
    }

    async fn open(&self, origin: &str) -> Result<TcpStream, UpstreamError> {
        let connect = TcpStream::connect(origin);
        let stream = tokio::time::timeout(self.shared.options.connect_timeout, connect)
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(origin.to_owned()))?
            .map_err(|source| UpstreamError::Connect {
                origin: origin.to_owned(),
                source,
            })?;
        // Small requests and answers go out at once.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Send `request` (origin-form target, `Host` set) to `origin` (`host:port`) on a
    /// pooled connection, or a new one. The answer's body hands the connection back to
    /// the pool when it has been read.
    pub async fn send(
        &self,
        origin: &Arc<str>,
        request: Request<GatewayBody>,
    ) -> Result<Response<GatewayBody>, UpstreamError> {
        let (parts, body) = request.into_parts();
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let held = hold_whole(body).await?;
        let length = match &held {
            Ok(bytes) => Some(bytes.len() as u64),
            Err(body) => body.size_hint().exact(),
        };
        let mut head = Vec::with_capacity(1024);
        put_head(
            &mut head,
            &parts.method,
            &[target],
            None,
            &parts.headers,
            length,
            None,
        );
        let answer = match held {
            Ok(bytes) => {
                let whole = whole(head, parts.method, &bytes);
                self.send_whole(origin, &whole, Instant::now(), None).await
            }
            Err(body) => {
                let method = &parts.method;
                self.send_streamed(origin, &head, method, body).await
            }
        };
        answer.map(Answer::into_response)
    }

    /// Send `head` (see [`put_head`]) then stream `body`, of the length `head` gave or
    /// chunked, to `origin` on a pooled connection or a new one. Such a request is sent
    /// once: a pooled connection found closed fails it.
    pub(crate) async fn send_streamed(
        &self,
        origin: &Arc<str>,
        head: &[u8],
        method: &http::Method,
        body: GatewayBody,
    ) -> Result<Answer, UpstreamError> {
        let chunked = body.size_hint().exact().is_none();
        let key = self.key(origin);
        let now = Instant::now();
        let conn = match self.checkout(&key, now) {
            Some(conn) => conn,
            None => Conn::new(self.open(origin).await?),
        };
        let home = self.home(key, now);
        exchange_streamed(conn, head, method, body, chunked, home).await
    }

    /// Send a request held whole to `origin` on a pooled connection, or a new one; a
    /// pooled connection found closed before it answered is passed over for another.
    /// The request starts at `now` (the caller's clock reading, not read again here);
    /// its answer's head is due by `deadline` when one is given.
    pub(crate) async fn send_whole(
        &self,
        origin: &Arc<str>,
        whole: &Whole,
        now: Instant,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Answer, UpstreamError> {
        let key = self.key(origin);
        while let Some(conn) = self.checkout(&key, now) {
            let home = self.home(key.clone(), now);
            match exchange(conn, whole, home, true, deadline).await {
                Ok(response) => return Ok(response),
                Err(failed) if failed.again => {}
                Err(failed) => return Err(failed.error),
            }
        }
        // Rare: a new connection (its connect, too, within the deadline).
        let stream = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, self.open(origin))
                .await
                .map_err(|_| UpstreamError::TimedOut)??,
            None => self.open(origin).await?,
        };
        exchange(
            Conn::new(stream),
            whole,
            self.home(key, now),
            false,
            deadline,
        )
        .await
        .map_err(|failed| failed.error)
    }

    /// Send an upgrade request on a connection of its own (never pooled), so that the
    /// answer can take the connection over.
    pub async fn send_upgrade(
        &self,
        origin: &str,
        request: Request<GatewayBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let stream = self.open(origin).await?;
        let (mut sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(async move {
            if let Err(err) = connection.with_upgrades().await {
                tracing::debug!(error = %err, "upstream connection ended with an error");
            }
        });
        sender.ready().await?;
        Ok(sender.send_request(request).await?)
    }
}
