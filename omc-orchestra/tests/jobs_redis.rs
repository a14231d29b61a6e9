//! The job queue contract against a real Redis, plus three schedulers on three
//! connections to one Redis firing each cron tick once.

use omc_orchestra::jobs::{JobQueue, QueueOptions, RedisJobQueue};
use omc_orchestra::testkit::jobs::{cron_fires_once_per_tick, round_clock, run_all, MakeQueue};
use omc_orchestra::testkit::redis::{store, url};
use omc_orchestra::RedisStore;
use std::sync::{Arc, Mutex};

#[tokio::test]
async fn redis_job_queue_keeps_the_contract() {
    let stores: Arc<Mutex<Vec<RedisStore>>> = Arc::default();
    let seen = stores.clone();
    let make: MakeQueue = Arc::new(move |clock, options| {
        let seen = seen.clone();
        Box::pin(async move {
            let store = store().await;
            seen.lock().unwrap().push(store.clone());
            Arc::new(RedisJobQueue::new(store, "default", Arc::new(clock), options).unwrap())
                as Arc<dyn JobQueue>
        })
    });
    run_all(make).await;
    let stores = std::mem::take(&mut *stores.lock().unwrap());
    for store in stores {
        store.delete_prefix().await.unwrap();
    }
}

#[tokio::test]
async fn three_schedulers_on_one_redis_fire_once_per_tick() {
    let clock = round_clock();
    let first = store().await;
    let mut queues: Vec<Arc<dyn JobQueue>> = Vec::new();
    for _ in 0..3 {
        let own = RedisStore::connect(&url().await, first.prefix())
            .await
            .unwrap();
        let queue = RedisJobQueue::new(
            own,
            "default",
            Arc::new(clock.clone()),
            QueueOptions::default(),
        );
        queues.push(Arc::new(queue.unwrap()));
    }
    cron_fires_once_per_tick(&queues, &clock).await;
    first.delete_prefix().await.unwrap();
}
