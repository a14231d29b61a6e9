//! The job queue contract against a real Redis, three schedulers on three connections
//! to one Redis firing each cron tick once, jobs stored in Redis that cannot be read, and
//! waiting jobs stored by a version without the per-type wait sets.

use omc_orchestra::jobs::{
    FetchRequest, JobAdmin, JobQueue, JobStore, NewJob, QueueOptions, RedisJobQueue,
};
use omc_orchestra::testkit::jobs::{cron_fires_once_per_tick, round_clock, run_all, MakeQueue};
use omc_orchestra::testkit::redis::{queues_on, store, url};
use omc_orchestra::RedisStore;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
                as Arc<dyn JobStore>
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
    let queues = queues_on(&url().await, first.prefix(), &clock, 3).await;
    cron_fires_once_per_tick(&queues, &clock).await;
    first.delete_prefix().await.unwrap();
}

/// One job whose stored hash cannot be read (hand-written garbage under the test's own
/// prefix) among good ones: the batch brings the good ones and the bad one fails alone.
#[tokio::test]
async fn an_unreadable_job_fails_alone_and_the_batch_is_delivered() {
    let store = store().await;
    let queue = RedisJobQueue::new(
        store.clone(),
        "default",
        Arc::new(round_clock()),
        QueueOptions::default(),
    )
    .unwrap();
    let mut good = Vec::new();
    for station in ["STN001", "STN002", "STN003"] {
        let job = NewJob::new("inventory-sync", json!({ "stationId": station }));
        good.push(queue.enqueue(job).await.unwrap().id);
    }
    // Between the good ones in queue order: one whose `j` is not JSON (the scripts take
    // it, reading it back fails) and one whose attempt count is not a number (a script
    // cannot even count the attempt).
    let wait = store.key("job", "default", "wait");
    let corrupt = [
        ("bad-spec", "0", "{not json"),
        ("bad-att", "many", r#"{"d":{},"p":1,"c":0}"#),
    ];
    let mut conn = store.connection();
    for (id, att, spec) in corrupt {
        let key = store.key("job", "default", &format!("j:{id}"));
        let _: () = redis::cmd("HSET")
            .arg(&key)
            .arg(&[
                "id",
                id,
                "type",
                "inventory-sync",
                "state",
                "waiting",
                "att",
                att,
                "j",
                spec,
            ])
            .arg(&["ra", "0", "rp", "3 exponential 1000 0.2"])
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let _: () = redis::cmd("ZADD")
        .arg(&wait)
        .arg(&[
            "10000000000001.5",
            "bad-spec",
            "10000000000002.5",
            "bad-att",
        ])
        .query_async(&mut conn)
        .await
        .unwrap();
    let batch = queue
        .fetch_batch(&FetchRequest::new("w", Duration::from_secs(30), 10))
        .await
        .unwrap();
    let got: Vec<&str> = batch.iter().map(|l| l.job.id.as_str()).collect();
    assert_eq!(got, good.iter().map(String::as_str).collect::<Vec<_>>());
    for lease in &batch {
        queue
            .complete(&lease.job.id, &lease.token, json!(null))
            .await
            .unwrap();
    }
    let failed = store.key("job", "default", "failed");
    for (id, field) in [("bad-spec", "j"), ("bad-att", "att")] {
        let key = store.key("job", "default", &format!("j:{id}"));
        let (score, state, error): (Option<f64>, String, String) = redis::pipe()
            .zscore(&failed, id)
            .hget(&key, "state")
            .hget(&key, "er")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(score.is_some(), "{id} is not in the failed set");
        assert_eq!(state, "failed");
        assert_eq!(
            error,
            format!("cannot read the stored job: malformed job field `{field}` in Redis")
        );
    }
    let stats = queue.stats().await.unwrap();
    assert_eq!(
        (stats.waiting, stats.active, stats.completed, stats.failed),
        (0, 0, 3, 2)
    );
    store.delete_prefix().await.unwrap();
}

/// Waiting jobs queued by a version without the per-type sets (written here the way it
/// wrote them: the job hash and `wait` only). A typed fetch finds the first of them
/// through the old bounded scan while `maintain` is indexing them, and the last, beyond
/// that scan, once `maintain` is through; an entry a type set holds but `wait` no longer
/// does is dropped, not leased.
#[tokio::test]
async fn typed_fetch_finds_jobs_queued_before_the_type_sets() {
    let store = store().await;
    let queue = RedisJobQueue::new(
        store.clone(),
        "default",
        Arc::new(round_clock()),
        QueueOptions::default(),
    )
    .unwrap();
    let wait = store.key("job", "default", "wait");
    let cursor = store.key("job", "default", "waitidx");
    let mut old: Vec<(String, &str)> = vec![("old-b1".into(), "inventory-sync")];
    old.extend((0..1_200).map(|i| (format!("old-a{i}"), "report-generation")));
    old.push(("old-b2".into(), "inventory-sync"));
    old.push(("old-b3".into(), "inventory-sync"));
    let mut conn = store.connection();
    let mut pipe = redis::pipe();
    for (n, (id, job_type)) in old.iter().enumerate() {
        let score = format!("1{:013}", n + 1);
        let key = store.key("job", "default", &format!("j:{id}"));
        pipe.cmd("HSET")
            .arg(&key)
            .arg(&[
                ("id", id.as_str()),
                ("type", job_type),
                ("state", "waiting"),
            ])
            .arg(&[("att", "0"), ("j", r#"{"d":{},"p":1,"c":0}"#), ("ra", "0")])
            .arg(&[("rp", "3 exponential 1000 0.2"), ("sc", score.as_str())])
            .ignore();
        pipe.cmd("ZADD").arg(&wait).arg(&score).arg(id).ignore();
    }
    let _: () = pipe.query_async(&mut conn).await.unwrap();
    let mut request = FetchRequest::new("w", Duration::from_secs(30), 1);
    request.types = vec!["inventory-sync".into()];
    let fetch_ids = |batch: Vec<omc_orchestra::jobs::JobLease>| -> Vec<String> {
        batch.into_iter().map(|l| l.job.id).collect()
    };

    assert_eq!(
        fetch_ids(queue.fetch_batch(&request).await.unwrap()),
        ["old-b1"]
    );
    let mut calls = 0;
    loop {
        let at: Option<String> = redis::cmd("GET")
            .arg(&cursor)
            .query_async(&mut conn)
            .await
            .unwrap();
        if at.as_deref() == Some("done") {
            break;
        }
        assert!(calls < 3, "indexing is not through after {calls} calls");
        queue.maintain().await.unwrap();
        calls += 1;
    }

    // What an older version's fetch leaves behind: gone from `wait`, still in the type set.
    let _: () = redis::cmd("ZREM")
        .arg(&wait)
        .arg("old-b2")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        fetch_ids(queue.fetch_batch(&request).await.unwrap()),
        ["old-b3"]
    );
    let left: u64 = redis::cmd("ZCARD")
        .arg(format!("{wait}:inventory-sync"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0);
    assert_eq!(queue.stats().await.unwrap().waiting, 1_200);
    store.delete_prefix().await.unwrap();
}
