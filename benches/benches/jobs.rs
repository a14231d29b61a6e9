//! Job queue throughput on the local Redis, beside BullMQ measured in the same run.
//!
//! Enqueue: 20,000 single enqueues with 100 in flight (a service enqueueing one by one).
//! Process: a worker pool at concurrency 50 with a no-op handler drains them. Completed
//! jobs are removed at once on both sides (BullMQ's `removeOnComplete: true`).
//!
//! Run: `cargo bench -p benches --bench jobs`. The peer needs Node and BullMQ:
//! `cd benches/.peer && npm install bullmq ioredis` (the folder is ignored by git).
//! `ORCHESTRA_BENCH_REDIS_URL` (default `redis://127.0.0.1:6379`) picks the Redis; BullMQ's
//! script always uses 127.0.0.1:6379. `JOBS_BENCH_DIRECT=1` measures 50 bare
//! fetch/complete loops instead of the worker pool (a diagnostic: the pool's overhead).
//!
//! Beside the rates it prints the CPU time the Redis server spent per job (`INFO cpu`,
//! the whole server, so other clients of a shared Redis show up in it): ours per phase,
//! BullMQ's over its whole run (enqueue, process and cleanup).

// Linked for its global allocator (mimalloc, as the `orchestra` binary runs on).
use benches as _;
use futures::future::join_all;
use omc_orchestra::jobs::{JobStore, NewJob, QueueOptions, RedisJobQueue, WorkerPool};
use omc_orchestra::{clock, RedisStore};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

const JOBS: usize = 20_000;
const CONCURRENCY: usize = 50;
const IN_FLIGHT: usize = 100;
const PEER_REDIS: &str = "redis://127.0.0.1:6379";

struct Figures {
    enqueue_per_s: f64,
    process_per_s: f64,
    /// Redis CPU per job (µs): enqueue, then process (BullMQ: its whole run, then 0).
    redis_us: (f64, f64),
}

async fn ours(url: &str) -> Result<Figures, Box<dyn std::error::Error>> {
    let prefix = format!("bench-{}", uuid_like());
    let store = RedisStore::connect(url, &prefix).await?;
    let options = QueueOptions {
        keep_completed: 0,
        ..QueueOptions::default()
    };
    let queue: Arc<dyn JobStore> = Arc::new(RedisJobQueue::new(
        store.clone(),
        "bench",
        clock::system(),
        options,
    )?);
    let cpu_start = redis_cpu_s(&store).await?;
    let started = Instant::now();
    for chunk in (0..JOBS).collect::<Vec<_>>().chunks(IN_FLIGHT) {
        let adds = chunk.iter().map(|i| {
            let job = NewJob::new(
                "price-calculation",
                serde_json::json!({ "stationId": format!("STN{i}") }),
            );
            queue.enqueue(job)
        });
        for added in join_all(adds).await {
            added?;
        }
    }
    let enqueue_per_s = JOBS as f64 / started.elapsed().as_secs_f64();
    let cpu_enqueued = redis_cpu_s(&store).await?;
    let per_job = |from: f64, to: f64| (to - from) * 1e6 / JOBS as f64;

    if std::env::var("JOBS_BENCH_DIRECT").is_ok() {
        let started = Instant::now();
        let loops = (0..CONCURRENCY).map(|w| {
            let queue = queue.clone();
            async move {
                let worker = format!("direct-{w}");
                let lease = Duration::from_secs(30);
                let mut next = queue.fetch(&worker, lease).await?;
                while let Some(held) = next {
                    let request = omc_orchestra::jobs::FetchRequest::new(&worker, lease, 1);
                    let (_, more) = queue
                        .complete_and_fetch(
                            &held.job.id,
                            &held.token,
                            serde_json::Value::Null,
                            &request,
                        )
                        .await?;
                    next = more.into_iter().next();
                }
                Ok::<_, omc_orchestra::Error>(())
            }
        });
        for done in join_all(loops).await {
            done?;
        }
        println!(
            "direct: {:.0}/s",
            JOBS as f64 / started.elapsed().as_secs_f64()
        );
        let cpu_done = redis_cpu_s(&store).await?;
        store.delete_prefix().await?;
        return Ok(Figures {
            enqueue_per_s,
            process_per_s: 0.0,
            redis_us: (
                per_job(cpu_start, cpu_enqueued),
                per_job(cpu_enqueued, cpu_done),
            ),
        });
    }
    let started = Instant::now();
    let pool = WorkerPool::builder(queue.clone())
        .handle("price-calculation", |_| async {
            Ok(serde_json::Value::Null)
        })
        .concurrency(CONCURRENCY, CONCURRENCY)
        .poll_interval(Duration::from_millis(2))
        .start();
    loop {
        let stats = queue.stats().await?;
        if stats.waiting + stats.active + stats.delayed == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let process_per_s = JOBS as f64 / started.elapsed().as_secs_f64();
    let cpu_done = redis_cpu_s(&store).await?;
    pool.shutdown(Duration::from_secs(5)).await;
    store.delete_prefix().await?;
    Ok(Figures {
        enqueue_per_s,
        process_per_s,
        redis_us: (
            per_job(cpu_start, cpu_enqueued),
            per_job(cpu_enqueued, cpu_done),
        ),
    })
}

/// The CPU time (s) the Redis server has used so far, user and system.
async fn redis_cpu_s(store: &RedisStore) -> Result<f64, Box<dyn std::error::Error>> {
    let mut conn = store.connection();
    let info: String = redis::cmd("INFO").arg("cpu").query_async(&mut conn).await?;
    Ok(info_cpu_s(&info))
}

fn info_cpu_s(info: &str) -> f64 {
    ["used_cpu_user:", "used_cpu_sys:"]
        .iter()
        .filter_map(|field| info.lines().find_map(|l| l.strip_prefix(field)))
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum()
}

/// A prefix suffix no other run shares.
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{}-{nanos}", std::process::id())
}

fn peer(store: &RedisStore, runtime: &tokio::runtime::Runtime) -> Result<Figures, String> {
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".peer");
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/peers/bullmq-bench.js");
    let how = "install the peer: Node 20 and `mkdir -p benches/.peer && cd benches/.peer && npm install bullmq ioredis`";
    if !folder.join("node_modules/bullmq").is_dir() {
        return Err(format!("BullMQ is not installed; {how}"));
    }
    let cpu = || {
        runtime
            .block_on(redis_cpu_s(store))
            .map_err(|err| err.to_string())
    };
    let cpu_start = cpu()?;
    let output = Command::new("node")
        .arg(&script)
        .arg(JOBS.to_string())
        .arg(CONCURRENCY.to_string())
        .current_dir(&folder)
        .env("NODE_PATH", folder.join("node_modules"))
        .output()
        .map_err(|err| format!("cannot run node ({err}); {how}"))?;
    if !output.status.success() {
        return Err(format!(
            "bullmq-bench.js failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let cpu_done = cpu()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let value: serde_json::Value = serde_json::from_str(line)
        .map_err(|err| format!("unreadable peer output `{line}`: {err}"))?;
    let figure = |name: &str| {
        value[name]
            .as_f64()
            .ok_or(format!("peer output lacks {name}"))
    };
    Ok(Figures {
        enqueue_per_s: figure("enqueue_per_s")?,
        process_per_s: figure("process_per_s")?,
        redis_us: ((cpu_done - cpu_start) * 1e6 / JOBS as f64, 0.0),
    })
}

fn main() -> ExitCode {
    let url = std::env::var("ORCHESTRA_BENCH_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("no runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let ours = match runtime.block_on(ours(&url)) {
        Ok(f) => f,
        Err(err) => {
            eprintln!("omc-orchestra run failed: {err}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "omc-orchestra: {JOBS} jobs, concurrency {CONCURRENCY}: enqueue {:.0}/s, process {:.0}/s \
         (Redis CPU per job: enqueue {:.1} µs, process {:.1} µs)",
        ours.enqueue_per_s, ours.process_per_s, ours.redis_us.0, ours.redis_us.1
    );
    // BullMQ's script talks to this Redis, whatever the URL above says.
    let peer_redis = match runtime.block_on(RedisStore::connect(PEER_REDIS, "bench-peer")) {
        Ok(store) => store,
        Err(err) => {
            eprintln!("no Redis at {PEER_REDIS} for the peer: {err}");
            return ExitCode::FAILURE;
        }
    };
    let peer = match peer(&peer_redis, &runtime) {
        Ok(f) => f,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "bullmq:        {JOBS} jobs, concurrency {CONCURRENCY}: enqueue {:.0}/s, process {:.0}/s \
         (Redis CPU per job, whole run: {:.1} µs)",
        peer.enqueue_per_s, peer.process_per_s, peer.redis_us.0
    );
    println!(
        "ratio (ours / bullmq): enqueue {:.2}x, process {:.2}x",
        ours.enqueue_per_s / peer.enqueue_per_s,
        ours.process_per_s / peer.process_per_s
    );
    ExitCode::SUCCESS
}
