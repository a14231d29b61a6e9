//! Embed the job engines: enqueue jobs, run them with the library's worker pool and fire a
//! cron schedule, all in memory, without a jobs server (for a service talking to a running
//! jobs server, see `run_worker`).
//!
//! `cargo run -p examples --example worker_pool`; with `REDIS_URL` set, the same code runs
//! on Redis (any number of copies of this process then share the queue).

use omc_orchestra::jobs::{
    JobPriority, NewJob, NewSchedule, Scheduler, SchedulerOptions, WorkerPool,
};
use omc_orchestra::registry::RegistryOptions;
use omc_orchestra::Backends;
use serde_json::json;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let backends = match std::env::var("REDIS_URL") {
        Ok(url) => Backends::redis(&url, "orc", RegistryOptions::default()).await?,
        Err(_) => Backends::memory(),
    };
    let queue = backends.jobs.clone();

    let pool = WorkerPool::builder(queue.clone())
        .handle("price-calculation", |ctx| async move {
            let litres = ctx.job.data["litres"].as_f64().unwrap_or(0.0);
            Ok(json!({ "total": litres * 14.25 }))
        })
        .handle("inventory-sync", |_| async { Ok(json!("synced")) })
        .concurrency(2, 16)
        .start();

    let mut urgent = NewJob::new("price-calculation", json!({ "litres": 40 }));
    urgent.priority = JobPriority::High;
    let job = queue.enqueue(urgent).await?;

    let scheduler = Scheduler::new(
        queue.clone(),
        backends.clock.clone(),
        SchedulerOptions::default(),
    );
    scheduler
        .add(NewSchedule {
            id: Some("inventory-every-second".into()),
            cron: "* * * * * *".into(),
            timezone: Some("Africa/Accra".into()),
            job: NewJob::new("inventory-sync", json!({})),
            paused: false,
        })
        .await?;
    let cron = scheduler.spawn(Duration::from_millis(250));

    tokio::time::sleep(Duration::from_secs(3)).await;
    println!("job {} -> {:?}", job.id, queue.get(&job.id).await?.result);
    println!(
        "stats: {}",
        serde_json::to_string_pretty(&queue.stats().await?)?
    );
    cron.abort();
    pool.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
