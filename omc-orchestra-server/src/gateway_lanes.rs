//! The gateway's port, served the way a dedicated proxy serves it: one thread per core,
//! each with its own runtime and upstream connections, serving the connections handed to
//! it, so a proxied request never leaves the thread its connection lives on.
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
use crate::http::oldest::Oldest;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use omc_orchestra::gateway::h1::{serve_lane, Answer, LaneOptions, LaneService, Rewind};
use omc_orchestra::gateway::{GatewayBody, ProxyInfo};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_io_timeout::TimeoutStream;
use tower::ServiceExt;

mod idle_body;

use idle_body::IdleBody;

/// Paths the gateway answers itself (and `/gateway/...`): never proxied.
pub const OWN_PATHS: [&str; 4] = ["/health", "/health/ready", "/openapi.json", "/metrics"];

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
/// `stopped` turns true; returns when every thread has finished its connections.
///
/// This task accepts and hands each connection to the thread with the fewest open
/// ones, so that keep-alive connections opened together spread evenly. It accepts no
/// more than `limits.max_connections` open connections: past that, new ones wait in
/// the listen backlog until one closes.
pub async fn serve(
    listener: TcpListener,
    workers: usize,
    state: GatewayState,
    router: Router,
    mut stopped: watch::Receiver<bool>,
    limits: ConnectionLimits,
) -> std::io::Result<()> {
    let workers = match workers {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let options = LaneOptions {
        keep_alive: limits.keep_alive,
        head_timeout: limits.head_timeout,
        idle_timeout: limits.idle_timeout,
        ..LaneOptions::default()
    };
    let lane = Arc::new(GatewayLane {
        state,
        router,
        stopped: stopped.clone(),
        limits,
    });
    let loads: Loads = Arc::new((0..workers).map(|_| AtomicUsize::new(0)).collect());
    let oldest = Oldest::default();
    let mut done = Vec::new();
    let mut lanes = Vec::with_capacity(workers);
    for index in 0..workers {
        let (finished, on_finish) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
        let (handoff, incoming) = mpsc::unbounded_channel();
        let (lane, loads, oldest) = (lane.clone(), loads.clone(), oldest.clone());
        std::thread::Builder::new()
            .name(format!("gateway-{index}"))
            .spawn(move || {
                let place = (index, loads, oldest);
                let _ = finished.send(run_thread(incoming, lane, options, place));
            })?;
        done.push(on_finish);
        lanes.push(handoff);
    }
    // A permit per open connection. At the cap the oldest connection closes (at once if
    // idle, else after its answer) and the one just accepted takes its place; others wait
    // in the listen backlog.
    // Clamped: a semaphore panics past its most permits, and no port gets near them.
    let open = Arc::new(Semaphore::new(
        limits.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let mut refusals = Refusals::default();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    refusals.ended();
                    accepted
                }
                Err(err) => {
                    let pause = refusals.failed(&err);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = async { let _ = stopped.wait_for(|stop| *stop).await; } => break,
                    }
                    continue;
                }
            },
            () = async { let _ = stopped.wait_for(|stop| *stop).await; } => break,
        };
        let permit = match open.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                oldest.close_oldest();
                tokio::select! {
                    permit = open.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    () = async { let _ = stopped.wait_for(|stop| *stop).await; } => break,
                }
            }
        };
        // Answers are written whole: send them at once.
        let _ = stream.set_nodelay(true);
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "the gateway cannot hand a connection over");
                continue;
            }
        };
        let least = (0..workers)
            .min_by_key(|&i| loads[i].load(Ordering::Relaxed))
            .unwrap_or(0);
        loads[least].fetch_add(1, Ordering::Relaxed);
        let _ = lanes[least].send((stream, peer, permit));
    }
    drop(listener);
    // Closing the hand-off channels stops the threads once their connections are done.
    drop(lanes);
    for finished in done {
        finished
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("a gateway thread panicked")))?;
    }
    Ok(())
}

/// A run of failed accepts (out of file descriptors, most likely, which only closing
/// connections cures): logged once when it starts and once when it ends, with a pause
/// between tries that doubles up to a second, so the loop neither spins nor floods the
/// log.
#[derive(Debug, Default)]
struct Refusals {
    count: u64,
    pause: Duration,
}

impl Refusals {
    const FIRST_PAUSE: Duration = Duration::from_millis(10);
    const LONGEST_PAUSE: Duration = Duration::from_secs(1);

    /// Note a failed accept; how long to wait before the next.
    fn failed(&mut self, err: &std::io::Error) -> Duration {
        if self.count == 0 {
            tracing::warn!(error = %err, "the gateway cannot accept connections; retrying");
            self.pause = Self::FIRST_PAUSE;
        } else {
            self.pause = (self.pause * 2).min(Self::LONGEST_PAUSE);
        }
        self.count += 1;
        self.pause
    }

    /// Note an accepted connection, which ends a run of failures.
    fn ended(&mut self) {
        if self.count > 0 {
            tracing::info!(failed = self.count, "the gateway accepts connections again");
            self.count = 0;
        }
    }
}

/// How often a serving thread's timer ticks (see `run_thread`).
const TIMER_TICK: Duration = Duration::from_millis(250);

/// Open connections per thread.
type Loads = Arc<Vec<AtomicUsize>>;

/// Connections handed to a thread, with their peers and their places under the cap.
type Incoming = mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr, OwnedSemaphorePermit)>;

fn run_thread(
    mut incoming: Incoming,
    lane: Arc<GatewayLane>,
    options: LaneOptions,
    (index, loads, oldest): (usize, Loads, Oldest),
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // The timer driver wakes a parked thread (a write to its eventfd) whenever a new
        // timer is due before every pending one. Each proxied request sets a timeout, and
        // a thread between requests may have none pending, so without this tick nearly a
        // request in four paid that write and the wake-up it causes, though the thread
        // setting the timer is the very one that is running. A timer always due within
        // the tick keeps request timeouts behind the next wake.
        let tick = tokio::spawn(async {
            let mut tick = tokio::time::interval(TIMER_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
            }
        });
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                handed = incoming.recv() => match handed {
                    Some((stream, peer, permit)) => match TcpStream::from_std(stream) {
                        Ok(stream) => {
                            let lane = lane.clone();
                            // Its own close signal: the thread stopping, or the cap
                            // asking the oldest connection to make room.
                            let (place, closing) = oldest.join(index);
                            connections.spawn(async move {
                                serve_lane(lane, stream, peer, options, closing).await;
                                // The connection's place goes back once it is closed.
                                drop(place);
                                drop(permit);
                            });
                        }
                        Err(err) => {
                            loads[index].fetch_sub(1, Ordering::Relaxed);
                            tracing::warn!(error = %err, "the gateway cannot serve a connection");
                        }
                    },
                    None => break,
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {
                    loads[index].fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        oldest.close_group(index);
        // Requests in flight finish; idle connections close on the stop.
        let drain = async {
            while connections.join_next().await.is_some() {
                loads[index].fetch_sub(1, Ordering::Relaxed);
            }
        };
        if tokio::time::timeout(Duration::from_secs(10), drain)
            .await
            .is_err()
        {
            connections.abort_all();
        }
        tick.abort();
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_accepts_back_off_up_to_a_second_and_start_over() {
        let mut refusals = Refusals::default();
        let err = std::io::Error::from_raw_os_error(24);
        let pauses: Vec<_> = (0..10).map(|_| refusals.failed(&err)).collect();
        assert_eq!(pauses[0], Refusals::FIRST_PAUSE);
        assert_eq!(pauses[1], 2 * Refusals::FIRST_PAUSE);
        assert_eq!(pauses[9], Refusals::LONGEST_PAUSE);
        refusals.ended();
        assert_eq!(refusals.failed(&err), Refusals::FIRST_PAUSE);
    }
}
