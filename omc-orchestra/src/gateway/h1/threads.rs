//! Thread-per-core serving of a [`LaneService`], the way a dedicated proxy serves its port:
//! one thread per core, each with its own current-thread runtime (and so its own
//! upstream connections), serving the connections handed to it, so a proxied request
//! never leaves the thread its connection lives on. The `orchestra` gateway runs on it;
//! a gateway of your own can too.

use super::oldest::Oldest;
use super::{serve_lane, LaneOptions, LaneService};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// Serve `lane` on `listener` with `workers` threads (0: one per core) until `stopped`
/// turns true; returns when every thread has finished its connections.
///
/// This task accepts and hands each connection to the thread with the fewest open
/// ones, so that keep-alive connections opened together spread evenly. It keeps at most
/// `max_connections` open: past that, the oldest closes (at once if idle, else after
/// its answer) to make room, and new ones wait in the listen backlog meanwhile. A failed
/// accept (out of file descriptors) is logged once and retried with a growing pause.
pub async fn serve_threads<S: LaneService>(
    listener: TcpListener,
    workers: usize,
    lane: Arc<S>,
    options: LaneOptions,
    max_connections: usize,
    mut stopped: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let workers = match workers {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
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
    let open = Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS)));
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
        let Some(permit) = oldest.make_room(&open, &mut stopped).await else {
            break;
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

fn run_thread<S: LaneService>(
    mut incoming: Incoming,
    lane: Arc<S>,
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
    use crate::gateway::h1::{Answer, Rewind};
    use crate::gateway::{full_body, GatewayBody, ProxyInfo};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers every request with `ok`.
    struct Ok200;

    impl LaneService for Ok200 {
        fn takes(&self, _head: &http::request::Parts) -> bool {
            true
        }

        async fn call(
            &self,
            _request: http::Request<GatewayBody>,
            _peer: SocketAddr,
        ) -> (Answer, ProxyInfo) {
            (
                http::Response::new(full_body("ok")).into(),
                ProxyInfo::default(),
            )
        }

        async fn fallback(&self, _io: Rewind, _peer: SocketAddr) {}
    }

    /// Send one request and read its `ok` answer; `None` when the server closed first.
    async fn ask(client: &mut TcpStream) -> Option<()> {
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        while !answer.ends_with(b"\r\n\r\nok") {
            let mut chunk = [0; 1024];
            match client.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
        Some(())
    }

    /// At the cap, the oldest idle connection is closed to make room for a new one, and a
    /// stop closes the rest and lets `serve_threads` return.
    #[tokio::test]
    async fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let options = LaneOptions::default();
        let serving = tokio::spawn(serve_threads(
            listener,
            2,
            Arc::new(Ok200),
            options,
            1,
            stopped,
        ));
        let mut first = TcpStream::connect(addr).await.unwrap();
        assert!(
            ask(&mut first).await.is_some(),
            "the first connection is served"
        );
        let mut second = TcpStream::connect(addr).await.unwrap();
        assert!(ask(&mut second).await.is_some(), "the newcomer is served");
        let mut rest = [0; 16];
        assert_eq!(
            first.read(&mut rest).await.unwrap_or(0),
            0,
            "the oldest, idle connection was closed to make room"
        );
        stop.send(true).unwrap();
        serving.await.unwrap().unwrap();
        assert_eq!(second.read(&mut rest).await.unwrap_or(0), 0);
    }

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
