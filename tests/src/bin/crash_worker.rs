//! A worker process for the crash test: runs `crash-test` jobs from the Redis queue
//! `default` under `PREFIX`, recording each start in `{PREFIX}:crashtest:starts` and each
//! handler that ran to its end (before the queue hears of it) in
//! `{PREFIX}:crashtest:finishes`, both as `{job id}|{worker id}`.
//!
//! Usage: `crash_worker REDIS_URL PREFIX LEASE_MS WORK_MS CONCURRENCY`. Prints its worker
//! id on the first line of stdout, then runs until killed.

use omc_orchestra::jobs::{QueueOptions, RedisJobQueue, WorkerPool};
use omc_orchestra::{clock, RedisStore};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, prefix, lease_ms, work_ms, concurrency] = args.as_slice() else {
        return Err("usage: crash_worker REDIS_URL PREFIX LEASE_MS WORK_MS CONCURRENCY".into());
    };
    let store = RedisStore::connect(url, prefix).await?;
    let starts = format!("{prefix}:crashtest:starts");
    let finishes = format!("{prefix}:crashtest:finishes");
    let queue = RedisJobQueue::new(
        store.clone(),
        "default",
        clock::system(),
        QueueOptions::default(),
    )?;
    let work = Duration::from_millis(work_ms.parse()?);
    let concurrency: usize = concurrency.parse()?;
    let pool = WorkerPool::builder(Arc::new(queue))
        .handle("crash-test", move |ctx| {
            let mut conn = store.connection();
            let (starts, finishes) = (starts.clone(), finishes.clone());
            async move {
                let worker = ctx.job.worker.clone().unwrap_or_default();
                let run = format!("{}|{worker}", ctx.job.id);
                redis::cmd("RPUSH")
                    .arg(&starts)
                    .arg(&run)
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::time::sleep(work).await;
                redis::cmd("RPUSH")
                    .arg(&finishes)
                    .arg(&run)
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(serde_json::json!({ "worker": worker }))
            }
        })
        .concurrency(concurrency, concurrency)
        .lease(Duration::from_millis(lease_ms.parse()?))
        .poll_interval(Duration::from_millis(20))
        .start();
    println!("{}", pool.worker_id());
    std::io::stdout().flush()?;
    std::future::pending::<()>().await;
    Ok(())
}
