//! A `pricing-service` worker taking `price-calculation` and `inventory-sync` jobs from the
//! running jobs server through the SDK (the HTTP lease API: no Redis credentials), until
//! Ctrl-C; then the jobs in hand finish.
//!
//! Start the servers (`cargo run -p omc-orchestra-server -- up`) and this worker
//! (`cargo run -p examples --example run_worker`), then queue a job as the README's walkthrough does:
//!
//! ```text
//! curl -s -X POST localhost:3013/jobs -H 'content-type: application/json' -d '{
//!   "type":"price-calculation","data":{"stationId":"STN001"},"priority":"high","maxAttempts":5}'
//! ```
//!
//! Each price calculation also writes a log record to the logging server, which
//! `curl -s 'localhost:3014/logs?service=pricing-service&text=completed'` finds.
//!
//! `JOB_SCHEDULER_URL` (default http://127.0.0.1:3013), `LOGGING_SERVICE_URL` (default
//! http://127.0.0.1:3014) and `ORCHESTRA_TOKEN` or `JWT_SECRET` when the servers require
//! tokens.

use omc_orchestra_client::{json, Orchestra};

/// Cedis per litre, for the example's arithmetic.
const PRICE_PER_LITRE: f64 = 14.25;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let orc = Orchestra::from_env("pricing-service");
    let log = orc.log();
    let worker = orc
        .worker()
        .concurrency(8)
        .handle("price-calculation", move |job| {
            let log = log.clone();
            async move {
                let litres = job.data["litres"].as_f64().unwrap_or(1.0);
                let total = litres * PRICE_PER_LITRE;
                println!("{} {} -> total {total}", job.id, job.data);
                log.info(
                    "Price calculation completed",
                    json!({ "jobId": job.id, "stationId": job.data["stationId"], "total": total }),
                )
                .await?;
                Ok(json!({ "stationId": job.data["stationId"], "total": total }))
            }
        })
        .handle("inventory-sync", |job| async move {
            println!("{} inventory synced", job.id);
            Ok(json!("synced"))
        });
    println!(
        "worker {} taking price-calculation and inventory-sync jobs; Ctrl-C stops it",
        worker.name()
    );
    worker.run().await?;
    orc.shutdown().await?;
    println!("drained");
    Ok(())
}
