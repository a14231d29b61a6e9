//! What each Redis topology costs and gives: job enqueues (into one queue, and spread over
//! three queues) and event publishes per second on one Redis (alone, and with a replica
//! attached, which every topology below has), on a Sentinel group (a
//! master, a replica, three Sentinels) and on a Cluster of three masters with a replica
//! each, side by side in one run, all started by the bench on free ports. Printed with
//! the time per item and the ratio to one Redis.
//!
//! A queue, like the event streams, lives in one hash slot, so one queue is served by one
//! shard; three queues whose names fall on three masters use all of them.
//!
//! Load: 20,000 calls of each kind, 200 in flight (services sending one by one, which the
//! stores group into batches).
//!
//! Run: `cargo bench -p benches --bench topologies` (needs `redis-server` and
//! `redis-cli`).

// Linked for its global allocator (mimalloc, as the `orchestra` binary runs on).
use benches as _;
use omc_orchestra::clock;
use omc_orchestra::events::{BusOptions, EventBus, NewEvent, RedisEventBus};
use omc_orchestra::jobs::{JobStore, NewJob, QueueOptions, RedisJobQueue};
use omc_orchestra::testkit::redis::RedisProcess;
use omc_orchestra::testkit::topology::{RedisCluster, SentinelGroup};
use omc_orchestra::RedisStore;
use std::process::ExitCode;
use std::sync::Arc;

const ITEMS: u64 = 20_000;
const IN_FLIGHT: usize = 200;

/// Enqueues per second into `queues` (round robin), and publishes per second.
async fn measure(url: &str, queues: &[String]) -> Result<[f64; 3], omc_orchestra::Error> {
    let store = RedisStore::connect(url, "bench").await?;
    let make = |name: &str| -> omc_orchestra::Result<Arc<dyn JobStore>> {
        let queue = RedisJobQueue::new(
            store.clone(),
            name,
            clock::system(),
            QueueOptions::default(),
        );
        Ok(Arc::new(queue?))
    };
    let one = make(&queues[0])?;
    let spread: Vec<Arc<dyn JobStore>> =
        queues.iter().map(|q| make(q)).collect::<Result<_, _>>()?;
    let enqueue = |queue: Arc<dyn JobStore>, n: u64| async move {
        let job = NewJob::new("price-calculation", serde_json::json!({ "station": n }));
        queue.enqueue(job).await.map(drop)
    };
    let one_queue = benches::rate(ITEMS, IN_FLIGHT, |n| enqueue(one.clone(), n)).await?;
    let three_queues = benches::rate(ITEMS, IN_FLIGHT, |n| {
        enqueue(spread[n as usize % spread.len()].clone(), n)
    })
    .await?;
    let bus: Arc<dyn EventBus> =
        Arc::new(RedisEventBus::new(store.clone(), clock::system(), BusOptions::default()).await?);
    let events = benches::rate(ITEMS, IN_FLIGHT, |n| {
        let bus = bus.clone();
        async move {
            let event = NewEvent::new("PRICE_UPDATED", "pricing", serde_json::json!({ "n": n }));
            bus.publish(event).await.map(drop)
        }
    })
    .await?;
    store.delete_prefix().await?;
    Ok([one_queue, three_queues, events])
}

#[tokio::main]
async fn main() -> ExitCode {
    println!(
        "topologies: {ITEMS} enqueues into one queue, {ITEMS} over three queues, {ITEMS} \
         publishes; {IN_FLIGHT} in flight"
    );
    println!(
        "{:<10} {:>10} {:>8} {:>7} {:>12} {:>8} {:>7} {:>10} {:>9} {:>7}",
        "topology",
        "1 queue/s",
        "µs/job",
        "ratio",
        "3 queues/s",
        "µs/job",
        "ratio",
        "events/s",
        "µs/event",
        "ratio"
    );
    let single = match RedisProcess::start(false) {
        Ok(single) => single,
        Err(err) => {
            eprintln!("topologies bench: cannot start redis-server: {err}");
            return ExitCode::FAILURE;
        }
    };
    // One Redis with a replica: what replication alone costs, beside what Sentinel adds.
    let primary = match RedisProcess::start(false) {
        Ok(primary) => primary,
        Err(err) => {
            eprintln!("topologies bench: cannot start redis-server: {err}");
            return ExitCode::FAILURE;
        }
    };
    let replica = RedisProcess::start_replica_of(&primary);
    let sentinel = SentinelGroup::start();
    let cluster = RedisCluster::start();
    let spread = cluster.tag_per_master();
    let runs = [
        ("single", single.url(), spread.clone()),
        ("+replica", primary.url(), spread.clone()),
        ("sentinel", sentinel.url(), spread.clone()),
        ("cluster", cluster.url(), spread),
    ];
    if let Err(err) = &replica {
        eprintln!("topologies bench: cannot start a replica: {err}");
        return ExitCode::FAILURE;
    }
    let mut base: Option<[f64; 3]> = None;
    for (name, url, queues) in runs {
        let figures = match measure(&url, &queues).await {
            Ok(figures) => figures,
            Err(err) => {
                eprintln!("topologies bench on {name}: {err}");
                return ExitCode::FAILURE;
            }
        };
        let base = *base.get_or_insert(figures);
        let mut line = format!("{name:<10}");
        for (i, width) in [(0, 10), (1, 12), (2, 10)] {
            line += &format!(
                " {:>width$.0} {:>8.1} {:>6.2}×",
                figures[i],
                1e6 / figures[i],
                figures[i] / base[i]
            );
        }
        println!("{line}");
    }
    ExitCode::SUCCESS
}
