//! Every conformance suite (registry, events, jobs, logs, rate limits, cache, cron)
//! against a Redis Cluster of three masters and three replicas, and against a Sentinel
//! group, each started by the test on free ports: the same suites the single Redis
//! passes, unchanged.

use omc_orchestra::events::{EventBus, RedisEventBus};
use omc_orchestra::gateway::{
    CacheConfig, CacheStore, RateLimitStore, RedisCacheStore, RedisRateLimits,
};
use omc_orchestra::jobs::{JobQueue, JobStore, QueueOptions, RedisJobQueue};
use omc_orchestra::logs::{LogSink, RedisLogSink};
use omc_orchestra::registry::{RedisRegistry, Registry};
use omc_orchestra::testkit::redis::{queues_on, store_at};
use omc_orchestra::testkit::topology::{RedisCluster, SentinelGroup};
use omc_orchestra::testkit::{cache, events, jobs, logs, ratelimit, registry};
use omc_orchestra::{RedisStore, Topology};
use std::sync::{Arc, Mutex};

/// The stores a suite made, deleted at the end.
#[derive(Clone, Default)]
struct Made(Arc<Mutex<Vec<RedisStore>>>);

impl Made {
    async fn store(&self, url: &str) -> RedisStore {
        let store = store_at(url).await;
        self.0.lock().unwrap().push(store.clone());
        store
    }

    async fn clean(&self) {
        let stores = std::mem::take(&mut *self.0.lock().unwrap());
        for store in stores {
            store.delete_prefix().await.unwrap();
        }
    }
}

/// Run every suite against the Redis at `url`.
async fn every_contract(url: &str) {
    let made = Made::default();

    let (m, u) = (made.clone(), url.to_owned());
    registry::run_all(Arc::new(move |clock, options| {
        let (m, u) = (m.clone(), u.clone());
        Box::pin(async move {
            let store = m.store(&u).await;
            Arc::new(
                RedisRegistry::new(store, Arc::new(clock), options)
                    .await
                    .unwrap(),
            ) as Arc<dyn Registry>
        })
    }))
    .await;

    let (m, u) = (made.clone(), url.to_owned());
    events::run_all(Arc::new(move |clock, options| {
        let (m, u) = (m.clone(), u.clone());
        Box::pin(async move {
            let store = m.store(&u).await;
            Arc::new(
                RedisEventBus::new(store, Arc::new(clock), options)
                    .await
                    .unwrap(),
            ) as Arc<dyn EventBus>
        })
    }))
    .await;

    let (m, u) = (made.clone(), url.to_owned());
    jobs::run_all(Arc::new(move |clock, options| {
        let (m, u) = (m.clone(), u.clone());
        Box::pin(async move {
            let store = m.store(&u).await;
            Arc::new(RedisJobQueue::new(store, "default", Arc::new(clock), options).unwrap())
                as Arc<dyn JobStore>
        })
    }))
    .await;

    let (m, u) = (made.clone(), url.to_owned());
    logs::run_all(Arc::new(move |clock| {
        let (m, u) = (m.clone(), u.clone());
        Box::pin(async move {
            let store = m.store(&u).await;
            Arc::new(RedisLogSink::new(store, Arc::new(clock)).await.unwrap()) as Arc<dyn LogSink>
        })
    }))
    .await;

    let (m, u) = (made.clone(), url.to_owned());
    ratelimit::run_all(Arc::new(move |clock| {
        let (m, u) = (m.clone(), u.clone());
        Box::pin(async move {
            let store = m.store(&u).await;
            Arc::new(RedisRateLimits::new(store, Arc::new(clock))) as Arc<dyn RateLimitStore>
        })
    }))
    .await;

    let (m, u) = (made.clone(), url.to_owned());
    cache::run_all(Arc::new(move |clock| {
        let (m, u) = (m.clone(), u.clone());
        Box::pin(async move {
            let store = m.store(&u).await;
            Arc::new(RedisCacheStore::new(
                store,
                CacheConfig::default(),
                Arc::new(clock),
            )) as Arc<dyn CacheStore>
        })
    }))
    .await;

    // Three schedulers on three connections fire each cron tick once.
    let clock = jobs::round_clock();
    let first = made.store(url).await;
    let queues = queues_on(url, first.prefix(), &clock, 3).await;
    jobs::cron_fires_once_per_tick(&queues, &clock).await;

    made.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_keeps_every_contract() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    assert_eq!(store_at(&url).await.topology(), Topology::Cluster);
    every_contract(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_group_keeps_every_contract() {
    let group = SentinelGroup::start();
    let url = group.url();
    assert_eq!(store_at(&url).await.topology(), Topology::Sentinel);
    every_contract(&url).await;
}

/// A job through the store at `url`: enqueued and read back.
async fn a_job_goes_through(url: &str) -> omc_orchestra::Result<()> {
    let store = RedisStore::connect(url, "auth").await?;
    let queue = RedisJobQueue::new(
        store.clone(),
        "default",
        omc_orchestra::clock::system(),
        QueueOptions::default(),
    )?;
    let job = queue
        .enqueue(omc_orchestra::jobs::NewJob::new(
            "backup",
            serde_json::json!({}),
        ))
        .await?;
    assert_eq!(queue.get(&job.id).await?.id, job.id);
    store.delete_prefix().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_in_the_url_reach_every_node() {
    let cluster = RedisCluster::start_with_password(Some("cluster-secret"));
    let group = SentinelGroup::start_with_passwords(Some("node-secret"), Some("sentinel-secret"));
    // The password alone, and with the ACL user it belongs to.
    for url in [
        cluster.url(),
        cluster.url().replace("://:", "://default:"),
        group.url(),
        group.url().replace("://:", "://default:"),
    ] {
        a_job_goes_through(&url)
            .await
            .unwrap_or_else(|err| panic!("{url}: {err}"));
    }
    // Without a password, or with the Sentinels' one missing: refused, and the error
    // names neither secret.
    for url in [
        cluster.url().replace(":cluster-secret@", ""),
        group.url().replace(":node-secret@", ""),
        group
            .url()
            .replace("?sentinel_password=sentinel-secret", ""),
    ] {
        let err = a_job_goes_through(&url)
            .await
            .expect_err("refused without the password")
            .to_string();
        assert!(err.to_lowercase().contains("auth"), "{url}: {err}");
        assert!(!err.contains("secret"), "{url}: {err}");
    }
}
