//! Serving a router on its port under the connection limits: one deadline for a request
//! head, an idle deadline for bodies and for writes to a client that stops reading, and
//! a cap on open connections: past it the oldest connection closes (at once if idle)
//! for a newcomer, and others wait in the listen backlog.
//!
//! `axum::serve` runs hyper without a timer, which turns hyper's header deadline off, and
//! accepts without bound; a client sending one header line a second held a connection for
//! as long as it liked.

use crate::config::ConnectionLimits;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use omc_orchestra::gateway::h1::Oldest;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_io_timeout::TimeoutStream;
use tower::ServiceExt;
use tower_http::timeout::RequestBodyTimeoutLayer;

/// How long requests in flight may take to finish once the server is told to stop.
const DRAIN: Duration = Duration::from_secs(10);

/// How long accepting pauses after an accept error (out of file descriptors, mostly), so
/// that connections can end and free some.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serve `router` on `listener` under `limits` until `stopped` turns true, then let the
/// requests in flight finish (at most ten seconds).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    mut stopped: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let router = router.layer(RequestBodyTimeoutLayer::new(limits.idle_timeout));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's header deadline also runs while a keep-alive connection waits for its next
    // request, so it bounds that wait too.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let most = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let permits = Arc::new(Semaphore::new(most));
    let oldest = Oldest::default();
    let mut failing = false;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    failing = false;
                    accepted
                }
                Err(err) => {
                    // Logged once per run of failures: under EMFILE every accept fails.
                    if !failing {
                        tracing::warn!(error = %err, "cannot accept connections; backing off");
                        failing = true;
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = stop_signal(&mut stopped) => break,
        };
        // At the cap the oldest connection closes (at once if idle, else after its
        // answer) and this one takes its place; others wait in the listen backlog.
        let Some(permit) = oldest.make_room(&permits, &mut stopped).await else {
            break;
        };
        // Without TCP_NODELAY, a streamed answer (headers, then body) waits on Nagle and
        // the client's delayed ACK.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        let mut io = TimeoutStream::new(stream);
        io.set_write_timeout(Some(limits.idle_timeout));
        let io = TokioIo::new(Box::pin(io));
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(req.map(axum::body::Body::new))
            });
        let (builder, mut stopped) = (builder.clone(), stopped.clone());
        let (place, mut closing) = oldest.join(0);
        tokio::spawn(async move {
            let connection = builder.serve_connection_with_upgrades(io, service);
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = async { let _ = closing.wait_for(|close| *close).await; } => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
                () = stop_signal(&mut stopped) => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = ended {
                tracing::debug!(error = %err, "connection ended with an error");
            }
            drop(place);
            drop(permit);
        });
    }
    drop(listener);
    // Every connection gives its permit back once closed.
    let most = u32::try_from(most).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN, permits.acquire_many(most))
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after {DRAIN:?}; closing them");
    }
    Ok(())
}

/// Resolves once `stopped` turns true (the guard `wait_for` returns is not `Send`, so it
/// is dropped here).
async fn stop_signal(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}
