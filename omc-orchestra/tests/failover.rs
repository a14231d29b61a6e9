//! Failover under load. Jobs are enqueued and events published without pause, each
//! acknowledged only once a replica has it (`--durability replica`), while the Sentinel
//! group's master, or the cluster master holding the job queue or the event streams, is
//! killed with SIGKILL. The stores are not restarted: they find the new master by
//! themselves and serve again. The killed server is started again once its replica took
//! over (it rejoins as a replica, so writes can wait for a replica again), and the test
//! counts: every acknowledged job and event is found, none twice, and writes were
//! acknowledged after the failover.

use omc_orchestra::durability::Durability;
use omc_orchestra::events::{EventQuery, NewEvent};
use omc_orchestra::jobs::NewJob;
use omc_orchestra::registry::RegistryOptions;
use omc_orchestra::testkit::topology::{RedisCluster, SentinelGroup};
use omc_orchestra::Backends;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Writers in flight at once; each pauses between writes, so the run stays under the
/// event history's query limit.
const WRITERS: usize = 8;
const PAUSE: Duration = Duration::from_millis(15);
/// The master is killed once this many writes were acknowledged.
const KILL_AFTER: usize = 300;
/// Acknowledged writes wanted after the killed server rejoined.
const AFTER_REJOIN: usize = 300;
/// No call may take longer than this: a failover makes calls fail, never hang.
const HANG: Duration = Duration::from_secs(30);
/// The load gives up this long after the rejoin, when the stores never came back.
const GIVE_UP: Duration = Duration::from_secs(60);

/// What the load saw.
#[derive(Default)]
struct Tally {
    jobs: Mutex<Vec<u64>>,
    events: Mutex<Vec<u64>>,
    acknowledged: AtomicUsize,
    failed: AtomicUsize,
    rejoined: AtomicBool,
    rejoined_at: Mutex<Option<std::time::Instant>>,
    after_rejoin: AtomicUsize,
}

impl Tally {
    /// Whether the load is over: enough acknowledged after the rejoin, or given up.
    fn done(&self) -> bool {
        if !self.rejoined.load(Ordering::SeqCst) {
            return false;
        }
        self.after_rejoin.load(Ordering::SeqCst) >= AFTER_REJOIN
            || self
                .rejoined_at
                .lock()
                .unwrap()
                .is_some_and(|at| at.elapsed() > GIVE_UP)
    }
}

/// Write jobs and events until the failover is over and `AFTER_REJOIN` more were
/// acknowledged; `fail_over` runs (blocking) once `KILL_AFTER` were acknowledged.
async fn load(stores: &Backends, fail_over: impl FnOnce() + Send + 'static) -> Arc<Tally> {
    let tally = Arc::new(Tally::default());
    let next = Arc::new(AtomicU64::new(0));
    let mut fail_over = Some(fail_over);
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let (stores, tally, next) = (stores.clone(), tally.clone(), next.clone());
        writers.push(tokio::spawn(async move {
            loop {
                if tally.done() {
                    return;
                }
                let n = next.fetch_add(1, Ordering::SeqCst);
                let data = serde_json::json!({ "n": n });
                let job = stores
                    .jobs
                    .enqueue(NewJob::new("reconciliation", data.clone()));
                let job = tokio::time::timeout(HANG, job).await.expect("enqueue hung");
                let event = NewEvent::new("RECONCILIATION_POSTED", "finance", data);
                let event = stores.events.publish(event);
                let event = tokio::time::timeout(HANG, event)
                    .await
                    .expect("publish hung");
                for (done, into) in [(job.is_ok(), &tally.jobs), (event.is_ok(), &tally.events)] {
                    if done {
                        into.lock().unwrap().push(n);
                        tally.acknowledged.fetch_add(1, Ordering::SeqCst);
                        if tally.rejoined.load(Ordering::SeqCst) {
                            tally.after_rejoin.fetch_add(1, Ordering::SeqCst);
                        }
                    } else {
                        tally.failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(PAUSE).await;
            }
        }));
    }
    while tally.acknowledged.load(Ordering::SeqCst) < KILL_AFTER {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fail_over = fail_over.take().expect("one failover");
    tokio::task::spawn_blocking(fail_over).await.unwrap();
    *tally.rejoined_at.lock().unwrap() = Some(std::time::Instant::now());
    tally.rejoined.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }
    tally
}

/// Every acknowledged job and event is stored once.
async fn nothing_lost_nor_twice(stores: &Backends, tally: &Tally, topology: &str) {
    let jobs = omc_orchestra::testkit::jobs::waiting_jobs(stores.jobs.as_ref()).await;
    let query = EventQuery {
        limit: Some(EventQuery::MAX_LIMIT),
        ..EventQuery::default()
    };
    let events = stores.events.history(&query).await.unwrap();
    assert!(
        events.len() < EventQuery::MAX_LIMIT,
        "the history query was cut"
    );
    let stored = [
        (
            "jobs",
            &tally.jobs,
            count(jobs.iter().map(|j| j.data["n"].as_u64().unwrap())),
        ),
        (
            "events",
            &tally.events,
            count(events.iter().map(|e| e.data["n"].as_u64().unwrap())),
        ),
    ];
    for (area, acknowledged, found) in stored {
        let acknowledged = acknowledged.lock().unwrap().clone();
        let lost: Vec<&u64> = acknowledged
            .iter()
            .filter(|n| !found.contains_key(n))
            .collect();
        let twice: Vec<(&u64, &usize)> = found.iter().filter(|(_, c)| **c > 1).collect();
        println!(
            "{topology} {area}: {} acknowledged, {} lost, {} stored twice",
            acknowledged.len(),
            lost.len(),
            twice.len()
        );
        assert!(
            lost.is_empty(),
            "{topology} {area}: acknowledged and lost: {lost:?}"
        );
        assert!(
            twice.is_empty(),
            "{topology} {area}: stored twice: {twice:?}"
        );
    }
    println!(
        "{topology}: {} calls failed during the failover (answered, not acknowledged)",
        tally.failed.load(Ordering::SeqCst)
    );
    let after = tally.after_rejoin.load(Ordering::SeqCst);
    assert!(
        after >= AFTER_REJOIN,
        "{topology}: only {after} writes acknowledged in {GIVE_UP:?} after the failover"
    );
}

fn count(numbers: impl Iterator<Item = u64>) -> HashMap<u64, usize> {
    let mut found = HashMap::new();
    for n in numbers {
        *found.entry(n).or_default() += 1;
    }
    found
}

async fn replica_backends(url: &str) -> Backends {
    Backends::redis_durable(url, "orc", RegistryOptions::default(), Durability::Replica)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_loses_no_acknowledged_job_or_event() {
    let group = Arc::new(SentinelGroup::start());
    let stores = replica_backends(&group.url()).await;
    let killed = group.clone();
    let tally = load(&stores, move || {
        let old = killed.master_port();
        let new = killed.kill_master();
        assert_ne!(old, new);
        killed.restart_killed();
    })
    .await;
    nothing_lost_nor_twice(&stores, &tally, "sentinel").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_failover_loses_no_acknowledged_job_or_event() {
    let cluster = Arc::new(RedisCluster::start());
    let stores = replica_backends(&cluster.url()).await;
    let killed = cluster.clone();
    // The job queue `default` and the event streams live under these hash tags.
    let tally = load(&stores, move || {
        for tag in ["{default}", "{events}"] {
            killed.kill_master_of(tag);
            killed.restart_killed();
        }
    })
    .await;
    nothing_lost_nor_twice(&stores, &tally, "cluster").await;
}
