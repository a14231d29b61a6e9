//! The job queue contract against the in-memory backend.

use omc_orchestra::jobs::{JobStore, MemoryJobQueue};
use omc_orchestra::testkit::jobs::{cron_fires_once_per_tick, round_clock, run_all, MakeQueue};
use std::sync::Arc;

#[tokio::test]
async fn memory_job_queue_keeps_the_contract() {
    let make: MakeQueue = Arc::new(|clock, options| {
        Box::pin(async move {
            Arc::new(MemoryJobQueue::with_options(Arc::new(clock), options)) as Arc<dyn JobStore>
        })
    });
    run_all(make).await;
}

#[tokio::test]
async fn three_schedulers_on_one_memory_queue_fire_once_per_tick() {
    let clock = round_clock();
    let queue: Arc<dyn JobStore> = Arc::new(MemoryJobQueue::new(Arc::new(clock.clone())));
    cron_fires_once_per_tick(&[queue.clone(), queue.clone(), queue], &clock).await;
}
