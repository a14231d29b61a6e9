//! A `pricing-service` worker taking `price-calculation` and `inventory-sync` jobs from the
//! running jobs server through the SDK (the HTTP lease API: no Redis credentials), until
//! Ctrl-C; then the jobs in hand finish.
//!
//! Start the servers (`cargo run -p omc-orchestra-server -- up`) and this worker
//! (`cargo run -p examples --example run_worker`), then queue a job as the README does:
//!
//! ```text
//! curl -s -X POST localhost:3013/jobs -H 'content-type: application/json' -d '{
//!   "type":"price-calculation","data":{"stationId":"STN001"},"priority":"high","maxAttempts":5}'
//! ```
//!
//! `JOB_SCHEDULER_URL` (default http://127.0.0.1:3013) and `ORCHESTRA_TOKEN` or
//! `JWT_SECRET` when the servers require tokens.

use omc_orchestra_client::{json, Orchestra};

/// Cedis per litre, for the example's arithmetic.
const PRICE_PER_LITRE: f64 = 14.25;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let orc = Orchestra::from_env("pricing-service");
    let worker = orc
        .worker()
        .concurrency(8)
        .handle("price-calculation", |job| async move {
            let litres = job.data["litres"].as_f64().unwrap_or(1.0);
            let total = litres * PRICE_PER_LITRE;
            println!("{} {} -> total {total}", job.id, job.data);
            Ok(json!({ "stationId": job.data["stationId"], "total": total }))
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
