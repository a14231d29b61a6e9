//! Upstream connections: HTTP/1.1 keep-alive connections pooled per origin. A connection
//! serves one request at a time and goes back to the pool as soon as its answer's body
//! has been read to the end; an answer dropped half-read closes its connection.
//!
//! Compared with a general-purpose client this does less per request: the request
//! already carries an origin-form target and a `Host`, a pooled connection is reused
//! without a background task per request, and a connection found closed before the
//! request was written is replaced transparently (the request is sent on a fresh one).

use super::{BoxError, GatewayBody};
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// How the pool keeps its connections.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Idle connections kept per origin; more are closed when they come back.
    pub max_idle_per_origin: usize,
    /// An idle connection older than this is closed instead of reused.
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
    /// The HTTP exchange failed (handshake, write or read of the head).
    #[error("the upstream exchange failed: {0}")]
    Http(#[from] hyper::Error),
}

struct Idle {
    sender: SendRequest<GatewayBody>,
    since: Instant,
}

struct Shared {
    idle: Mutex<HashMap<Arc<str>, Vec<Idle>>>,
    options: PoolOptions,
}

impl Shared {
    fn checkin(&self, origin: Arc<str>, sender: SendRequest<GatewayBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock();
        let list = idle.entry(origin).or_default();
        if list.len() < self.options.max_idle_per_origin {
            list.push(Idle {
                sender,
                since: Instant::now(),
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
                idle: Mutex::new(HashMap::new()),
                options,
            }),
        }
    }

    /// Idle connections held, over every origin.
    pub fn idle_count(&self) -> usize {
        self.shared.idle.lock().values().map(Vec::len).sum()
    }

    /// Close idle connections that expired or that their upstream closed, and forget
    /// origins left with none.
    pub fn sweep(&self) {
        let timeout = self.shared.options.idle_timeout;
        let mut idle = self.shared.idle.lock();
        idle.retain(|_, list| {
            list.retain(|c| !c.sender.is_closed() && c.since.elapsed() < timeout);
            !list.is_empty()
        });
    }

    fn checkout(&self, origin: &str) -> Option<SendRequest<GatewayBody>> {
        let timeout = self.shared.options.idle_timeout;
        let mut idle = self.shared.idle.lock();
        let list = idle.get_mut(origin)?;
        while let Some(conn) = list.pop() {
            if !conn.sender.is_closed() && conn.since.elapsed() < timeout {
                return Some(conn.sender);
            }
        }
        None
    }

    /// Open a new connection to `origin` (`host:port`); with `upgrades`, the connection
    /// can be taken over after a `101 Switching Protocols`.
    async fn connect(
        &self,
        origin: &str,
        upgrades: bool,
    ) -> Result<SendRequest<GatewayBody>, UpstreamError> {
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
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(async move {
            let result = if upgrades {
                connection.with_upgrades().await
            } else {
                connection.await
            };
            if let Err(err) = result {
                tracing::debug!(error = %err, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Send `request` (origin-form target, `Host` set) to `origin` (`host:port`) on a
    /// pooled connection, or a new one. The answer's body hands the connection back to
    /// the pool when it has been read.
    pub async fn send(
        &self,
        origin: &Arc<str>,
        mut request: Request<GatewayBody>,
    ) -> Result<Response<GatewayBody>, UpstreamError> {
        while let Some(mut sender) = self.checkout(origin) {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.relay(origin, sender, response)),
                Err(mut failed) => match failed.take_message() {
                    // The connection closed before the request went out: try another.
                    Some(unsent) => request = unsent,
                    None => return Err(failed.into_error().into()),
                },
            }
        }
        let mut sender = self.connect(origin, false).await?;
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        Ok(self.relay(origin, sender, response))
    }

    /// Send an upgrade request on a connection of its own (never pooled), so that the
    /// answer can take the connection over.
    pub async fn send_upgrade(
        &self,
        origin: &str,
        request: Request<GatewayBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut sender = self.connect(origin, true).await?;
        sender.ready().await?;
        Ok(sender.send_request(request).await?)
    }

    fn relay(
        &self,
        origin: &Arc<str>,
        sender: SendRequest<GatewayBody>,
        response: Response<Incoming>,
    ) -> Response<GatewayBody> {
        let (parts, body) = response.into_parts();
        let mut body = PooledBody {
            body,
            home: Some(Home {
                shared: self.shared.clone(),
                origin: origin.clone(),
                sender,
            }),
        };
        if body.body.is_end_stream() {
            body.release();
        }
        Response::from_parts(parts, http_body_util::BodyExt::boxed_unsync(body))
    }
}

/// Where a connection goes back to.
struct Home {
    shared: Arc<Shared>,
    origin: Arc<str>,
    sender: SendRequest<GatewayBody>,
}

/// An upstream answer's body that returns its connection to the pool at its end.
struct PooledBody {
    body: Incoming,
    home: Option<Home>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some(home) = self.home.take() {
            home.shared.checkin(home.origin, home.sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(None) => {
                this.release();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if this.body.is_end_stream() {
                    this.release();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                // A broken answer: the connection is not reused.
                this.home = None;
                Poll::Ready(Some(Err(Box::new(err))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Read to the end: reusable. Dropped half-read: the connection closes with it.
        if self.body.is_end_stream() {
            self.release();
        }
    }
}
