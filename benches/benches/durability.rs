//! What each durability level costs: job enqueues and event publishes per second at
//! `memory`, `aof`, `replica` and `aof+replica`, side by side in one run, each against
//! `redis-server`s of the bench's own set up as the level needs (`memory` on a Redis
//! without a file; `aof` with `appendfsync always`, or `WAITAOF` from Redis 7.2; `replica`
//! with one replica). Printed with the time per item and the ratio to `memory`.
//!
//! Load: 10,000 enqueues and then 10,000 publishes, 100 in flight (services sending one
//! by one, which the stores group into batches).
//!
//! Run: `cargo bench -p benches --bench durability` (needs `redis-server`).

// Linked for its global allocator (mimalloc, as the `orchestra` binary runs on).
use benches as _;
use omc_orchestra::durability::Durability;
use omc_orchestra::events::NewEvent;
use omc_orchestra::jobs::NewJob;
use omc_orchestra::registry::RegistryOptions;
use omc_orchestra::testkit::redis::RedisProcess;
use omc_orchestra::Backends;
use std::process::ExitCode;
use std::time::Duration;

const ITEMS: u64 = 10_000;
const IN_FLIGHT: usize = 100;

/// Servers for `level`: the primary, and a replica where the level needs one.
fn servers(level: Durability) -> std::io::Result<(RedisProcess, Option<RedisProcess>)> {
    let primary = if level.on_disk() {
        RedisProcess::start_fsync("always")?
    } else {
        RedisProcess::start(false)?
    };
    let replica = if level.on_replica() {
        Some(RedisProcess::start_replica_of(&primary)?)
    } else {
        None
    };
    Ok((primary, replica))
}

/// Wait until `replica` has synced with its primary.
async fn synced(replica: &RedisProcess) -> Result<(), Box<dyn std::error::Error>> {
    let client = redis::Client::open(replica.url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    for _ in 0..100 {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut conn)
            .await?;
        if info.contains("master_link_status:up") {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("the replica did not sync within 10 s".into())
}

/// Enqueues and publishes per second at `level`.
async fn measure(level: Durability) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let (primary, replica) = servers(level)?;
    if let Some(replica) = &replica {
        synced(replica).await?;
    }
    let stores =
        Backends::redis_durable(&primary.url(), "bench", RegistryOptions::default(), level).await?;
    let jobs = benches::rate(ITEMS, IN_FLIGHT, |n| {
        let queue = stores.jobs.clone();
        async move {
            let job = NewJob::new("price-calculation", serde_json::json!({ "station": n }));
            queue.enqueue(job).await.map(drop)
        }
    })
    .await?;
    let events = benches::rate(ITEMS, IN_FLIGHT, |n| {
        let bus = stores.events.clone();
        async move {
            let data = serde_json::json!({ "station": n });
            let event = NewEvent::new("PRICE_UPDATED", "pricing", data);
            bus.publish(event).await.map(drop)
        }
    })
    .await?;
    Ok((jobs, events))
}

#[tokio::main]
async fn main() -> ExitCode {
    println!("durability: {ITEMS} enqueues, then {ITEMS} publishes, {IN_FLIGHT} in flight");
    println!(
        "{:<12} {:>10} {:>9} {:>7} {:>11} {:>9} {:>7}",
        "level", "jobs/s", "µs/job", "ratio", "events/s", "µs/event", "ratio"
    );
    let mut memory = None;
    for level in Durability::ALL {
        let (jobs, events) = match measure(level).await {
            Ok(figures) => figures,
            Err(err) => {
                eprintln!("durability bench at {level}: {err}");
                return ExitCode::FAILURE;
            }
        };
        let (base_jobs, base_events) = *memory.get_or_insert((jobs, events));
        println!(
            "{:<12} {:>10.0} {:>9.1} {:>6.2}× {:>11.0} {:>9.1} {:>6.2}×",
            level.as_str(),
            jobs,
            1e6 / jobs,
            jobs / base_jobs,
            events,
            1e6 / events,
            events / base_events
        );
    }
    ExitCode::SUCCESS
}
