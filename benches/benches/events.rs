//! Event bus on Redis: publish→deliver throughput with 50 concurrent publishers, and the
//! p99 publish→deliver latency at a steady 10k events/s, printed beside
//! `redis-benchmark -t xadd -c 50` against the same private `redis-server`. Ours and the
//! peer take turns for a few rounds and the ratio is taken per round; the CPU each side
//! cost redis-server per event is printed too (`EVENTS_BENCH_DETAIL=1` adds the server's
//! command counts of each round of ours).
//!
//! Run: `cargo bench -p benches --bench events`. Needs `redis-server` and
//! `redis-benchmark` (Debian: `apt-get install redis-server redis-tools`).

// The shared crate sets the allocator the `orchestra` binary runs on (mimalloc); naming it
// links it in, so this process measures the library as it is deployed.
use benches as _;
use omc_orchestra::events::{BusOptions, ConsumerOptions, EventBus, NewEvent, RedisEventBus};
use omc_orchestra::testkit::redis::RedisProcess;
use omc_orchestra::{clock, Clock, RedisStore, SystemClock};
use serde_json::json;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const PUBLISHERS: usize = 50;
const THROUGHPUT_EVENTS: usize = 50_000;
const CONSUMERS: usize = 8;
/// Most events a consumer takes (and acknowledges) at once.
const BATCH: usize = 16;
/// Rounds of ours then the peer.
const ROUNDS: usize = 3;
/// Requests the peer sends.
const PEER_REQUESTS: usize = 200_000;
/// Steady rates at which latency is measured: the goal's, and one well below saturation.
const PACED_RATES: [u64; 2] = [10_000, 2_500];
const PACED_SECONDS: u64 = 3;
/// What the peer runs: a plain bounded XADD of a small entry.
const PEER_COMMAND: [&str; 8] = [
    "XADD",
    "peer-stream",
    "MAXLEN",
    "~",
    "100000",
    "*",
    "e",
    "{\"n\":1}",
];

fn main() {
    if Command::new("redis-benchmark")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "redis-benchmark is missing: install it with `apt-get install redis-tools` \
             (and `redis-server` for the private server this bench starts)"
        );
        std::process::exit(2);
    }
    let redis = match RedisProcess::start(false) {
        Ok(redis) => redis,
        Err(err) => {
            eprintln!("cannot start redis-server ({err}): `apt-get install redis-server`");
            std::process::exit(2);
        }
    };
    let port = redis.url().rsplit(':').next().unwrap_or("6379").to_owned();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let store = runtime.block_on(async {
        RedisStore::connect(&redis.url(), "bench")
            .await
            .expect("redis")
    });
    // Ours and the peer take turns, so that a change in the load of the shared machine
    // hits both alike; the ratio is taken per round.
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        let ours = runtime.block_on(ours(&store));
        let peer_before = runtime.block_on(server_cpu(&store));
        let Some((peer_rps, peer_p99)) = redis_benchmark(&port) else {
            eprintln!("could not run or parse `redis-benchmark ... XADD`");
            std::process::exit(1);
        };
        let peer_cpu = (runtime.block_on(server_cpu(&store)) - peer_before) / PEER_REQUESTS as f64;
        rounds.push((ours, (peer_rps, peer_p99, peer_cpu)));
    }
    let paced = runtime.block_on(async {
        let bus = Arc::new(
            RedisEventBus::new(store.clone(), clock::system(), BusOptions::default())
                .await
                .expect("bus"),
        );
        let mut paced = Vec::new();
        for rate in PACED_RATES {
            paced.push((rate, paced_latency(bus.clone(), rate).await));
        }
        store.delete_prefix().await.expect("cleanup");
        paced
    });
    println!("event bus on Redis (private redis-server, 2-core machine shared with builds)");
    let mut ratios = Vec::new();
    for (i, (ours, (peer_rps, peer_p99, peer_cpu))) in rounds.iter().enumerate() {
        let ratio = 100.0 * ours.rate / peer_rps;
        ratios.push(ratio);
        println!(
            "  round {}: ours {:.0} events/s publish→deliver(+ack) (publishing alone {:.0}/s), \
             peer {peer_rps:.0} XADD/s (p99 {peer_p99:.3} ms): {ratio:.1} %",
            i + 1,
            ours.rate,
            ours.publish_only,
        );
        println!(
            "    cpu per event: redis-server {:.1} µs, bench process {:.1} µs \
             (peer: redis-server {:.1} µs per XADD)",
            ours.server_cpu * 1e6,
            ours.client_cpu * 1e6,
            peer_cpu * 1e6
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "  ours: {PUBLISHERS} publishers, {CONSUMERS} consumers taking up to {BATCH} at once; \
         peer: redis-benchmark -c {PUBLISHERS} {}",
        PEER_COMMAND.join(" ")
    );
    println!(
        "  ratio: median {:.1} % of raw XADD (rounds {:.1}–{:.1} %; goal ≥ 50 %)",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
    for (rate, (p50, p99)) in paced {
        println!(
            "  publish→deliver at {rate} events/s: p50 {:.3} ms, p99 {:.3} ms (goal p99 < 5 ms at 10000)",
            p50.as_secs_f64() * 1000.0,
            p99.as_secs_f64() * 1000.0
        );
    }
}

/// What one throughput run of ours measured.
struct Throughput {
    /// Events per second published (publishers done).
    publish_only: f64,
    /// Events per second published, delivered and acknowledged.
    rate: f64,
    /// redis-server CPU seconds per event.
    server_cpu: f64,
    /// This process's CPU seconds per event.
    client_cpu: f64,
}

/// One throughput run of ours on a fresh bus, cleaned up after.
async fn ours(store: &RedisStore) -> Throughput {
    let bus = Arc::new(
        RedisEventBus::new(store.clone(), clock::system(), BusOptions::default())
            .await
            .expect("bus"),
    );
    let _: redis::RedisResult<()> = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut store.connection())
        .await;
    let server_before = server_cpu(store).await;
    let client_before = client_cpu();
    let (publish_only, rate) = throughput(bus).await;
    let server_cpu = (server_cpu(store).await - server_before) / THROUGHPUT_EVENTS as f64;
    let client_cpu = (client_cpu() - client_before) / THROUGHPUT_EVENTS as f64;
    if std::env::var_os("EVENTS_BENCH_DETAIL").is_some() {
        print_commandstats(store).await;
    }
    store.delete_prefix().await.expect("cleanup");
    Throughput {
        publish_only,
        rate,
        server_cpu,
        client_cpu,
    }
}

/// `redis-benchmark -t xadd`: requests per second and p99 in ms.
fn redis_benchmark(port: &str) -> Option<(f64, f64)> {
    let output = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            port,
            "-n",
            &PEER_REQUESTS.to_string(),
        ])
        .args(["-c", &PUBLISHERS.to_string(), "--csv"])
        // `-t xadd` exists only from redis-benchmark 7.2; the same command, given whole,
        // works everywhere (and is bounded like ours).
        .args(PEER_COMMAND)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let row = text.lines().find(|l| l.starts_with("\"XADD"))?;
    let cells: Vec<f64> = row
        .split(',')
        .skip(1)
        .filter_map(|c| c.trim_matches('"').parse().ok())
        .collect();
    // rps, avg, min, p50, p95, p99, max
    Some((*cells.first()?, *cells.get(5)?))
}

/// CPU seconds the redis-server has used so far (`INFO cpu`).
async fn server_cpu(store: &RedisStore) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(&mut store.connection())
        .await
        .unwrap_or_default();
    info.lines()
        .filter(|l| l.starts_with("used_cpu_sys:") || l.starts_with("used_cpu_user:"))
        .filter_map(|l| l.split_once(':')?.1.trim().parse::<f64>().ok())
        .sum()
}

/// CPU seconds this process has used so far (`/proc/self/stat`, 100 ticks a second).
fn client_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse().ok())
        .collect();
    ticks.iter().sum::<f64>() / 100.0
}

/// Print the server's per-command call counts and time (`INFO commandstats`).
async fn print_commandstats(store: &RedisStore) {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut store.connection())
        .await
        .unwrap_or_default();
    for line in info.lines().filter(|l| l.starts_with("cmdstat_")) {
        println!("    {line}");
    }
    let _: redis::RedisResult<()> = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut store.connection())
        .await;
}

fn event(n: usize) -> NewEvent {
    NewEvent::new(
        "PRICE_UPDATED",
        "pricing-service",
        json!({ "stationId": "STN001", "n": n }),
    )
}

/// How many deliveries the consumers of a run acknowledged, and when they got them all.
struct Progress {
    received: AtomicUsize,
    expected: usize,
    /// When the acknowledgement that completed the run came back.
    done: OnceLock<Instant>,
}

impl Progress {
    fn new(expected: usize) -> Arc<Self> {
        Arc::new(Self {
            received: AtomicUsize::new(0),
            expected,
            done: OnceLock::new(),
        })
    }

    fn complete(&self) -> bool {
        self.received.load(Ordering::SeqCst) >= self.expected
    }

    /// Count `n` acknowledged deliveries.
    fn add(&self, n: usize) {
        if self.received.fetch_add(n, Ordering::SeqCst) + n >= self.expected {
            let _ = self.done.set(Instant::now());
        }
    }
}

/// Consumers of one group that acknowledge everything; each delivery's latency (from the
/// event's publish time) goes to `latencies` when given.
fn spawn_consumers(
    bus: Arc<RedisEventBus>,
    progress: Arc<Progress>,
    latencies: Option<Arc<samples::Samples>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..CONSUMERS)
        .map(|i| {
            let bus = bus.clone();
            let progress = progress.clone();
            let latencies = latencies.clone();
            tokio::spawn(async move {
                let options = ConsumerOptions::new("bench", format!("c{i}"));
                let mut consumer = bus.consumer(options).await.expect("consumer");
                while !progress.complete() {
                    // One fetch, then one acknowledgement round trip for the batch.
                    let Ok(batch) = consumer.next_batch(BATCH, Duration::from_millis(200)).await
                    else {
                        continue;
                    };
                    if batch.is_empty() {
                        continue;
                    }
                    if let Some(samples) = &latencies {
                        let now = SystemClock.now();
                        for delivery in &batch {
                            let late = now - delivery.event.time;
                            samples.push(late.to_std().unwrap_or_default());
                        }
                    }
                    let ids: Vec<String> = batch.iter().map(|d| d.event.id.clone()).collect();
                    let _ = consumer.ack_many(&ids).await;
                    progress.add(ids.len());
                }
            })
        })
        .collect()
}

/// Events per second: (publish only, publish→deliver+ack). The run ends when the last
/// acknowledgement comes back, not when the consumers idle in a fetch notice it.
async fn throughput(bus: Arc<RedisEventBus>) -> (f64, f64) {
    let progress = Progress::new(THROUGHPUT_EVENTS);
    let consumers = spawn_consumers(bus.clone(), progress.clone(), None);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let per = THROUGHPUT_EVENTS / PUBLISHERS;
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let bus = bus.clone();
            tokio::spawn(async move {
                for n in 0..per {
                    bus.publish(event(p * per + n)).await.expect("publish");
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    let published = started.elapsed();
    for consumer in consumers {
        consumer.await.expect("consumer");
    }
    let done = progress.done.get().copied().unwrap_or_else(Instant::now);
    let rate = |d: Duration| THROUGHPUT_EVENTS as f64 / d.as_secs_f64();
    (rate(published), rate(done - started))
}

/// p50 and p99 publish→deliver latency at a steady `rate`.
async fn paced_latency(bus: Arc<RedisEventBus>, rate: u64) -> (Duration, Duration) {
    let total = (rate * PACED_SECONDS) as usize;
    let samples = Arc::new(samples::Samples::default());
    let consumers = spawn_consumers(bus.clone(), Progress::new(total), Some(samples.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // 50 publishers, each publishing one event every 50/rate seconds.
    let each = total / PUBLISHERS;
    let every = Duration::from_secs_f64(PUBLISHERS as f64 / rate as f64);
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let bus = bus.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                for n in 0..each {
                    tick.tick().await;
                    bus.publish(event(p * 1_000_000 + n))
                        .await
                        .expect("publish");
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    for consumer in consumers {
        consumer.await.expect("consumer");
    }
    (samples.percentile(0.5), samples.percentile(0.99))
}

/// A latency sample store (a std mutex is plenty here).
mod samples {
    use std::sync::Mutex;
    use std::time::Duration;

    #[derive(Default)]
    pub(crate) struct Samples(Mutex<Vec<Duration>>);

    impl Samples {
        pub(crate) fn push(&self, sample: Duration) {
            if let Ok(mut all) = self.0.lock() {
                all.push(sample);
            }
        }

        pub(crate) fn percentile(&self, q: f64) -> Duration {
            let Ok(mut all) = self.0.lock() else {
                return Duration::ZERO;
            };
            all.sort();
            let index = ((all.len() as f64) * q).ceil() as usize;
            all.get(index.saturating_sub(1))
                .copied()
                .unwrap_or_default()
        }
    }
}
