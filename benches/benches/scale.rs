//! What each hot operation costs as what is stored grows: for each area, the same calls
//! at 1×, 10× and 100× the stored amount, each size on a `redis-server` of its own (no
//! persistence), side by side in one table with the ratio of the largest size to the
//! smallest. Per call: latency p50 and p99 (calls one after another), and Redis CPU
//! (`used_cpu_user + used_cpu_sys` over the calls). Per size, for sizing: this process's
//! RSS (the stores are the servers' engines), the RSS of the real `orchestra up` started
//! on that size's Redis once the area's data is there and asked the area's read once
//! (discovery and a tag's page, job stats, event history, a log search), and Redis's
//! `used_memory`.
//!
//! - registry: 1,000 / 10,000 / 100,000 instances in services of 55, each tagged with one
//!   of 20 regions; discover one, a heartbeat, and the first page of 50 of one region;
//! - jobs: 10,000 / 100,000 / 1,000,000 waiting; enqueue, and fetch + complete of a
//!   job type of its own;
//! - events: 10,000 / 100,000 / 1,000,000 published with 50 consumer groups each owed
//!   all of them; publish, and one group's delivery + acknowledgement;
//! - logs: 10,000 / 100,000 / 1,000,000 records of the last hour; write one, search a
//!   service and level that one record in a hundred has, and search a service with no
//!   record in the hour.
//!
//! Run: `cargo bench -p benches --bench scale` (needs `redis-server`; takes a few
//! minutes and about 2 GB of memory at the largest sizes). `SCALE_AREAS=registry,logs`
//! runs only those areas; `SCALE_SERVER=0` skips the `orchestra` binary (otherwise
//! built as [`benches::orchestra_binary`] says); `SCALE_LOGS_MAX=10000000` takes the
//! logs area to that many records (a hundredth and a tenth of it beside), which needs
//! several GB of memory for Redis.

// Linked for its global allocator (mimalloc, as the `orchestra` binary runs on).
use benches as _;
use benches::{orchestra_binary, Orchestra};
use futures::StreamExt;
use omc_orchestra::clock;
use omc_orchestra::events::{BusOptions, ConsumerOptions, EventBus, NewEvent, RedisEventBus};
use omc_orchestra::jobs::{FetchRequest, JobStore, NewJob, QueueOptions, RedisJobQueue};
use omc_orchestra::logs::{LogLevel, LogQuery, LogRecord, LogSink, RedisLogSink, STREAM_MAXLEN};
use omc_orchestra::registry::{
    RedisRegistry, Registration, Registry, RegistryOptions, ServiceFilter,
};
use omc_orchestra::testkit::redis::RedisProcess;
use omc_orchestra::RedisStore;
use std::future::Future;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Calls measured per operation and size.
const CALLS: usize = 1_000;
/// Writes in flight while filling.
const FILL_IN_FLIGHT: usize = 256;

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// One operation at one size.
#[derive(Clone, Copy, Default)]
struct Cost {
    p50_us: f64,
    p99_us: f64,
    redis_cpu_us: f64,
}

/// What one size of one area measured.
struct Size {
    stored: usize,
    costs: Vec<(&'static str, Cost)>,
    rss_mb: f64,
    server_mb: f64,
    redis_mb: f64,
}

/// A request to the `orchestra` binary: which server's URL, and the path.
type ServerRequest = (fn(&Orchestra, &str) -> String, &'static str);

/// `orchestra up` on `redis_url` (the bench's key prefix), asked `requests` once each:
/// its RSS in MB then, or NaN (said on stderr) when it does not start or answer.
async fn server_rss_mb(binary: &Path, redis_url: &str, requests: &[ServerRequest]) -> f64 {
    let env = [("REDIS_URL", redis_url), ("REDIS_PREFIX", "scale")];
    let server = match Orchestra::up(binary, "", &env) {
        Ok(server) => server,
        Err(err) => {
            eprintln!("orchestra up: {err}");
            return f64::NAN;
        }
    };
    let client = reqwest::Client::new();
    for (url, path) in requests {
        let answer = client.get(url(&server, path)).send().await;
        match answer.map(|a| a.status()) {
            Ok(status) if status.is_success() => {}
            other => {
                eprintln!("orchestra up: GET {path}: {other:?}");
                return f64::NAN;
            }
        }
    }
    server.rss_mb()
}

/// Redis's CPU seconds so far (user + sys) and its `used_memory` in bytes.
async fn redis_figures(conn: &mut omc_orchestra::RedisConnection) -> BenchResult<(f64, f64)> {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .arg("memory")
        .query_async(conn)
        .await?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((
        field("used_cpu_user") + field("used_cpu_sys"),
        field("used_memory"),
    ))
}

/// This process's resident memory in MB.
fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |pages| pages * 4096.0 / 1e6)
}

/// `CALLS` calls of `call`, one after another.
async fn cost<F, Fut>(store: &RedisStore, call: F) -> BenchResult<Cost>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = omc_orchestra::Result<()>>,
{
    cost_of(store, CALLS, call).await
}

/// `calls` calls of `call`, one after another (fewer for the calls that read a lot).
async fn cost_of<F, Fut>(store: &RedisStore, calls: usize, mut call: F) -> BenchResult<Cost>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = omc_orchestra::Result<()>>,
{
    let mut conn = store.connection();
    let (cpu_before, _) = redis_figures(&mut conn).await?;
    let mut latencies = Vec::with_capacity(calls);
    for n in 0..calls {
        let started = Instant::now();
        call(n).await?;
        latencies.push(started.elapsed());
    }
    let (cpu_after, _) = redis_figures(&mut conn).await?;
    latencies.sort();
    let at = |q: f64| latencies[((calls as f64 * q) as usize).min(calls - 1)];
    Ok(Cost {
        p50_us: at(0.50).as_secs_f64() * 1e6,
        p99_us: at(0.99).as_secs_f64() * 1e6,
        redis_cpu_us: (cpu_after - cpu_before) * 1e6 / calls as f64,
    })
}

/// `count` calls of `call`, `FILL_IN_FLIGHT` at a time.
async fn fill<F, Fut>(count: usize, call: F) -> BenchResult<()>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = omc_orchestra::Result<()>>,
{
    fill_in(count, FILL_IN_FLIGHT, call).await
}

/// `count` calls of `call`, `in_flight` at a time.
async fn fill_in<F, Fut>(count: usize, in_flight: usize, call: F) -> BenchResult<()>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = omc_orchestra::Result<()>>,
{
    let mut calls = futures::stream::iter(0..count)
        .map(call)
        .buffer_unordered(in_flight);
    while let Some(done) = calls.next().await {
        done?;
    }
    Ok(())
}

async fn registry_at(store: &RedisStore, stored: usize) -> BenchResult<Vec<(&'static str, Cost)>> {
    let registry = Arc::new(
        RedisRegistry::new(store.clone(), clock::system(), RegistryOptions::default()).await?,
    );
    fill(stored, |n| {
        let registry = registry.clone();
        async move {
            let service = format!("station-service-{}", n / 55);
            let port = 10_000 + (n % 55) as u16;
            let mut registration = Registration::new(service, "10.0.0.1", port);
            registration.ttl_seconds = Some(3_600);
            registration.tags = vec![format!("region-{}", n % 20)];
            // Not probed by the `orchestra` started on this Redis: the addresses are made up.
            registration
                .metadata
                .insert("healthCheck".into(), "none".into());
            registry.register(registration).await.map(drop)
        }
    })
    .await?;
    let one = registry.service("station-service-0").await?;
    let id = one.instances[0].id.clone();
    let discover = cost(store, |_| {
        let registry = registry.clone();
        async move { registry.service("station-service-0").await.map(drop) }
    })
    .await?;
    let heartbeat = cost(store, |_| {
        let (registry, id) = (registry.clone(), id.clone());
        async move { registry.heartbeat(&id).await.map(drop) }
    })
    .await?;
    let region = ServiceFilter {
        tag: Some("region-7".into()),
        ..ServiceFilter::default()
    };
    let list_tag = cost(store, |_| {
        let (registry, region) = (registry.clone(), region.clone());
        async move { registry.list_page(&region, 50, None).await.map(drop) }
    })
    .await?;
    Ok(vec![
        ("discover (55 of them)", discover),
        ("heartbeat", heartbeat),
        ("list a tag's page (50)", list_tag),
    ])
}

async fn jobs_at(store: &RedisStore, stored: usize) -> BenchResult<Vec<(&'static str, Cost)>> {
    let queue: Arc<dyn JobStore> = Arc::new(RedisJobQueue::new(
        store.clone(),
        "default",
        clock::system(),
        QueueOptions::default(),
    )?);
    fill(stored, |n| {
        let queue = queue.clone();
        async move {
            let job = NewJob::new("inventory-sync", serde_json::json!({ "station": n }));
            queue.enqueue(job).await.map(drop)
        }
    })
    .await?;
    let enqueue = cost(store, |n| {
        let queue = queue.clone();
        async move {
            let job = NewJob::new("price-calculation", serde_json::json!({ "n": n }));
            queue.enqueue(job).await.map(drop)
        }
    })
    .await?;
    let mut request = FetchRequest::new("bench", Duration::from_secs(60), 1);
    request.types = vec!["price-calculation".into()];
    let fetch_complete = cost(store, |_| {
        let (queue, request) = (queue.clone(), request.clone());
        async move {
            let leased = queue.fetch_batch(&request).await?;
            for lease in leased {
                queue
                    .complete(&lease.job.id, &lease.token, serde_json::json!({}))
                    .await?;
            }
            Ok(())
        }
    })
    .await?;
    Ok(vec![
        ("enqueue", enqueue),
        ("fetch + complete", fetch_complete),
    ])
}

async fn events_at(store: &RedisStore, stored: usize) -> BenchResult<Vec<(&'static str, Cost)>> {
    let bus: Arc<dyn EventBus> =
        Arc::new(RedisEventBus::new(store.clone(), clock::system(), BusOptions::default()).await?);
    let mut consumers = Vec::new();
    for group in 0..50 {
        let options = ConsumerOptions::new(format!("service-{group}"), "bench");
        consumers.push(bus.consumer(options).await?);
    }
    fill(stored, |n| {
        let bus = bus.clone();
        async move {
            let event = NewEvent::new("STOCK_LEVEL", "inventory", serde_json::json!({ "n": n }));
            bus.publish(event).await.map(drop)
        }
    })
    .await?;
    let publish = cost(store, |n| {
        let bus = bus.clone();
        async move {
            let event = NewEvent::new("PRICE_UPDATED", "pricing", serde_json::json!({ "n": n }));
            bus.publish(event).await.map(drop)
        }
    })
    .await?;
    let consumer = tokio::sync::Mutex::new(consumers.swap_remove(0));
    let deliver = cost(store, |_| {
        let consumer = &consumer;
        async move {
            let mut consumer = consumer.lock().await;
            if let Some(delivery) = consumer.next(Duration::from_millis(100)).await? {
                consumer.ack(&delivery.event.id).await?;
            }
            Ok(())
        }
    })
    .await?;
    Ok(vec![("publish", publish), ("deliver + ack", deliver)])
}

async fn logs_at(store: &RedisStore, stored: usize) -> BenchResult<Vec<(&'static str, Cost)>> {
    // The store keeps about STREAM_MAXLEN records by default; a larger size keeps all of
    // its records, as an operator storing that many would configure it.
    let sink: Arc<dyn LogSink> = if stored > STREAM_MAXLEN {
        let keep = stored + 10_000;
        Arc::new(RedisLogSink::with_limits(store.clone(), clock::system(), keep, None).await?)
    } else {
        Arc::new(RedisLogSink::new(store.clone(), clock::system()).await?)
    };
    let start = chrono::Utc::now() - chrono::Duration::minutes(50);
    let step = 3_000_000.0 / stored as f64;
    // Batches of 1,000 records, 16 in flight: 256 queued a quarter of a million
    // records ahead of the last, past the 5 s deadline of a call on a busy machine.
    fill_in(stored / 1_000, 16, |batch| {
        let sink = sink.clone();
        async move {
            let records = (0..1_000)
                .map(|i| {
                    let n = batch * 1_000 + i;
                    let at = start + chrono::Duration::microseconds((n as f64 * step) as i64);
                    let (level, service) = if n % 100 == 0 {
                        (LogLevel::Error, "pricing-service")
                    } else {
                        (LogLevel::Info, "inventory-service")
                    };
                    LogRecord::new(at, level, service, format!("record {n}"))
                })
                .collect();
            sink.write(records).await
        }
    })
    .await?;
    let write = cost(store, |n| {
        let sink = sink.clone();
        async move {
            let record =
                LogRecord::new(chrono::Utc::now(), LogLevel::Info, "bench", format!("{n}"));
            sink.write(vec![record]).await
        }
    })
    .await?;
    let query = |service: &str| LogQuery {
        service: Some(service.into()),
        level: Some(LogLevel::Error),
        since: Some(chrono::Utc::now() - chrono::Duration::hours(1)),
        limit: Some(50),
        ..LogQuery::default()
    };
    let (common, rare) = (query("pricing-service"), query("billing-service"));
    let search = cost(store, |_| {
        let (sink, common) = (sink.clone(), common.clone());
        async move { sink.search_page(&common).await.map(drop) }
    })
    .await?;
    // Each of these reads the whole hour: 20 calls say enough.
    let search_rare = cost_of(store, 20, |_| {
        let (sink, rare) = (sink.clone(), rare.clone());
        async move { sink.search_page(&rare).await.map(drop) }
    })
    .await?;
    Ok(vec![
        ("write one", write),
        ("search 1 in 100", search),
        ("search, none in the hour", search_rare),
    ])
}

/// One area at each of `sizes`, each on a Redis of its own; then, with `binary`,
/// `orchestra up` on that Redis answers `requests`.
async fn area<F, Fut>(
    sizes: [usize; 3],
    binary: Option<&Path>,
    requests: &[ServerRequest],
    run: F,
) -> BenchResult<Vec<Size>>
where
    F: Fn(RedisStore, usize) -> Fut,
    Fut: Future<Output = BenchResult<Vec<(&'static str, Cost)>>>,
{
    let mut out = Vec::new();
    for stored in sizes {
        let redis = RedisProcess::start(false)?;
        let store = RedisStore::connect(&redis.url(), "scale").await?;
        let costs = run(store.clone(), stored).await?;
        let (_, used) = redis_figures(&mut store.connection()).await?;
        let rss_mb = rss_mb();
        let server_mb = match binary {
            Some(binary) => server_rss_mb(binary, &redis.url(), requests).await,
            None => f64::NAN,
        };
        out.push(Size {
            stored,
            costs,
            rss_mb,
            server_mb,
            redis_mb: used / 1e6,
        });
    }
    Ok(out)
}

fn print(area: &str, sizes: &[Size]) {
    for (i, (op, _)) in sizes[0].costs.iter().enumerate() {
        let mut line = format!("{area:<9} {op:<26}");
        for size in sizes {
            let c = size.costs[i].1;
            line += &format!(
                " | {:>9} {:>7.0} {:>7.0} {:>6.1}",
                size.stored, c.p50_us, c.p99_us, c.redis_cpu_us
            );
        }
        let (small, large) = (sizes[0].costs[i].1, sizes[sizes.len() - 1].costs[i].1);
        line += &format!(" | {:>5.2}×", large.p50_us / small.p50_us);
        println!("{line}");
    }
    let memory: Vec<String> = sizes
        .iter()
        .map(|s| {
            format!(
                "{}: bench {:.0} MB, orchestra {:.0} MB, Redis {:.0} MB",
                s.stored, s.rss_mb, s.server_mb, s.redis_mb
            )
        })
        .collect();
    println!("{area:<9} {:<26} | {}", "memory", memory.join("; "));
}

#[tokio::main]
async fn main() -> ExitCode {
    println!(
        "scale: {CALLS} calls per operation and size, one after another; each size on a \
         redis-server of its own"
    );
    println!(
        "{:<9} {:<26} | {:>9} {:>7} {:>7} {:>6} | (×3 sizes) | ratio",
        "area", "operation", "stored", "p50 µs", "p99 µs", "cpu µs"
    );
    let wanted = std::env::var("SCALE_AREAS").unwrap_or_default();
    let on = |area: &str| wanted.is_empty() || wanted.split(',').any(|a| a.trim() == area);
    let binary = match std::env::var("SCALE_SERVER").as_deref() {
        Ok("0") => None,
        _ => orchestra_binary()
            .map_err(|err| eprintln!("no orchestra binary, so no server figure: {err}"))
            .ok(),
    };
    let binary = binary.as_deref();
    let runs = async {
        if on("registry") {
            let requests: [ServerRequest; 2] = [
                (
                    Orchestra::registry_url,
                    "/registry/discovery/station-service-0",
                ),
                (
                    Orchestra::registry_url,
                    "/registry/services?tag=region-7&limit=50",
                ),
            ];
            print(
                "registry",
                &area(
                    [1_000, 10_000, 100_000],
                    binary,
                    &requests,
                    |s, n| async move { registry_at(&s, n).await },
                )
                .await?,
            );
        }
        if on("jobs") {
            let requests: [ServerRequest; 1] = [(Orchestra::jobs_url, "/jobs/stats")];
            print(
                "jobs",
                &area(
                    [10_000, 100_000, 1_000_000],
                    binary,
                    &requests,
                    |s, n| async move { jobs_at(&s, n).await },
                )
                .await?,
            );
        }
        if on("events") {
            let requests: [ServerRequest; 1] = [(Orchestra::registry_url, "/events?limit=50")];
            print(
                "events",
                &area(
                    [10_000, 100_000, 1_000_000],
                    binary,
                    &requests,
                    |s, n| async move { events_at(&s, n).await },
                )
                .await?,
            );
        }
        if on("logs") {
            let requests: [ServerRequest; 1] = [(
                Orchestra::logging_url,
                "/logs?service=pricing-service&level=error&limit=50",
            )];
            let mut sizes = [10_000, 100_000, 1_000_000];
            if let Some(max) = std::env::var("SCALE_LOGS_MAX")
                .ok()
                .and_then(|m| m.parse::<usize>().ok())
            {
                // The largest size as asked, the others a tenth and a hundredth of it.
                sizes = [max / 100, max / 10, max].map(|n| n.max(1_000) / 1_000 * 1_000);
            }
            print(
                "logs",
                &area(sizes, binary, &requests, |s, n| async move {
                    logs_at(&s, n).await
                })
                .await?,
            );
        }
        BenchResult::Ok(())
    };
    match runs.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("scale bench: {err}");
            ExitCode::FAILURE
        }
    }
}
