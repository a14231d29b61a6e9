//! The gateway's port, served by the library's thread-per-core acceptor
//! ([`omc_orchestra::gateway::h1::serve_threads`]): one thread per core, each with its
//! own runtime and upstream connections, so a proxied request never leaves the thread
//! its connection lives on.
//!
//! Plain proxied requests go through the library's HTTP/1.1 lane
//! ([`omc_orchestra::gateway::h1`]); a connection whose request the lane does not take
//! (the gateway's own routes, upgrades, CORS, streamed bodies) is handed to the full
//! router, with the shared stack, on the same thread.
//!
//! Both paths apply the port's [`ConnectionLimits`]: a deadline for a request head, an
//! idle deadline for request bodies and for writes to a client that stops reading, a
//! keep-alive deadline, and a cap on open connections, past which new ones wait in the
//! listen backlog.

use crate::config::ConnectionLimits;
use crate::gateway_api::GatewayState;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use omc_orchestra::gateway::h1::{serve_threads, Answer, LaneOptions, LaneService, Rewind};
use omc_orchestra::gateway::{GatewayBody, ProxyInfo};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_io_timeout::TimeoutStream;
use tower::ServiceExt;

mod idle_body;

use idle_body::IdleBody;

/// Paths the gateway answers itself (and `/gateway/...`): never proxied.
pub(crate) const OWN_PATHS: [&str; 4] = ["/health", "/health/ready", "/openapi.json", "/metrics"];

fn own_path(path: &str) -> bool {
    OWN_PATHS.contains(&path) || path == "/gateway" || path.starts_with("/gateway/")
}

/// What a lane thread serves with: the proxy, and the full router for the rest.
struct GatewayLane {
    state: GatewayState,
    router: Router,
    stopped: watch::Receiver<bool>,
    limits: ConnectionLimits,
}

impl LaneService for GatewayLane {
    fn takes(&self, head: &http::request::Parts) -> bool {
        !own_path(head.uri.path())
    }

    // The proxy's own future, not one wrapping it: each wrapper would copy the few KiB
    // of its state once more per request.
    fn call(
        &self,
        request: http::Request<GatewayBody>,
        peer: SocketAddr,
    ) -> impl std::future::Future<Output = (Answer, ProxyInfo)> + Send {
        self.state.gateway.serve(request, peer.ip())
    }

    fn served(&self, answer: &Answer, info: &ProxyInfo) {
        self.state.count(answer, info);
    }

    async fn fallback(&self, io: Rewind, peer: SocketAddr) {
        let router = self.router.clone();
        let idle = self.limits.idle_timeout;
        let service =
            hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let req = req.map(|body| axum::body::Body::new(IdleBody::new(body, idle)));
                router.clone().oneshot(req)
            });
        // Only writes are timed: a read deadline would also cut idle upgraded
        // connections. A write that does not block costs no timer.
        let mut io = TimeoutStream::new(io);
        io.set_write_timeout(Some(idle));
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            // hyper starts this deadline as it waits for a head, so it also bounds an
            // idle keep-alive connection.
            .header_read_timeout(self.limits.head_timeout)
            .serve_connection(TokioIo::new(Box::pin(io)), service)
            .with_upgrades();
        tokio::pin!(connection);
        let mut stopped = self.stopped.clone();
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "gateway connection ended with an error");
                }
                return;
            }
            _ = stopped.wait_for(|stop| *stop) => connection.as_mut().graceful_shutdown(),
        }
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "gateway connection ended with an error");
        }
    }
}

/// Serve the gateway on `listener` with `workers` threads (0: one per core) until
/// `stopped` turns true, with the port's `limits` (see
/// [`omc_orchestra::gateway::h1::serve_threads`]); returns when every thread has
/// finished its connections.
pub(crate) async fn serve(
    listener: TcpListener,
    workers: usize,
    state: GatewayState,
    router: Router,
    stopped: watch::Receiver<bool>,
    limits: ConnectionLimits,
) -> std::io::Result<()> {
    let options = LaneOptions {
        keep_alive: limits.keep_alive,
        head_timeout: limits.head_timeout,
        idle_timeout: limits.idle_timeout,
        ..LaneOptions::default()
    };
    let max_connections = limits.max_connections;
    let lane = Arc::new(GatewayLane {
        state,
        router,
        stopped: stopped.clone(),
        limits,
    });
    serve_threads(listener, workers, lane, options, max_connections, stopped).await
}
