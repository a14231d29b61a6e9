//! Redis killed (SIGKILL) in the middle of 2,000 job enqueues, 2,000 event publishes with
//! a consumer group reading, and 2,000 log records, under each persistence setting and
//! durability level. Each test counts what was acknowledged against what is found after
//! Redis came back, prints the loss, and holds it to what the README's durability table
//! promises:
//! - `appendfsync always` with `--durability aof`: nothing acknowledged is lost, and the
//!   group is delivered every acknowledged event;
//! - `appendfsync everysec` with `memory`: only writes acknowledged in the last two
//!   seconds before the crash may be lost;
//! - no append-only file with `memory`: only writes acknowledged before the crash may be
//!   lost (Redis comes back empty).
//!
//! Everywhere, whatever was acknowledged after Redis came back is found, and nothing is
//! stored twice.

use futures::StreamExt;
use omc_orchestra::durability::Durability;
use omc_orchestra::events::{ConsumerOptions, EventQuery, NewEvent};
use omc_orchestra::jobs::NewJob;
use omc_orchestra::logs::{LogLevel, LogQuery, LogRecord};
use omc_orchestra::registry::RegistryOptions;
use omc_orchestra::testkit::redis::RedisProcess;
use omc_orchestra::Backends;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WRITES: u64 = 2_000;
/// Redis is killed once this many writes were acknowledged.
const KILL_AFTER: usize = 800;

/// When each write was acknowledged, and when Redis was killed and came back.
struct Run {
    acknowledged: HashMap<u64, Instant>,
    killed: Instant,
    restarted: Instant,
}

impl Run {
    /// Check what was found against the promise and print the loss.
    fn judge(&self, area: &str, setting: &str, found: &HashMap<u64, usize>, may_lose: Loss) {
        let twice: Vec<_> = found.iter().filter(|(_, c)| **c > 1).collect();
        assert!(twice.is_empty(), "{area}: stored twice: {twice:?}");
        let lost: Vec<(u64, Instant)> = self
            .acknowledged
            .iter()
            .filter(|(n, _)| !found.contains_key(n))
            .map(|(n, at)| (*n, *at))
            .collect();
        println!(
            "{area} ({setting}): {} acknowledged, {} lost",
            self.acknowledged.len(),
            lost.len()
        );
        for (n, at) in &lost {
            assert!(
                *at < self.restarted,
                "{area}: {n} acknowledged after the restart is lost"
            );
            let allowed = match may_lose {
                Loss::Nothing => false,
                Loss::LastTwoSeconds => {
                    *at + Duration::from_secs(2) >= self.killed || *at >= self.killed
                }
                Loss::BeforeTheCrash => true,
            };
            assert!(
                allowed,
                "{area} ({setting}): {n} was lost, acknowledged {:?} before the crash",
                self.killed.saturating_duration_since(*at)
            );
        }
    }
}

/// What a crash may lose at a setting, as the README's table says.
#[derive(Clone, Copy)]
enum Loss {
    Nothing,
    LastTwoSeconds,
    BeforeTheCrash,
}

/// Make `WRITES` writes, 64 at a time, killing Redis after `KILL_AFTER` were acknowledged
/// and starting it again 300 ms later.
async fn through_a_crash<F, Fut>(redis: &RedisProcess, write: F) -> Run
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = omc_orchestra::Result<()>>,
{
    let acknowledged = Arc::new(Mutex::new(HashMap::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let crash = Arc::new(Mutex::new(None::<(Instant, Instant)>));
    let writes = futures::stream::iter(0..WRITES)
        .map(|n| {
            let (acknowledged, count, crash) = (acknowledged.clone(), count.clone(), crash.clone());
            let write = write(n);
            async move {
                if write.await.is_ok() {
                    acknowledged.lock().unwrap().insert(n, Instant::now());
                    if count.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER {
                        redis.kill();
                        let killed = Instant::now();
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        redis.start_again().expect("redis-server starts again");
                        *crash.lock().unwrap() = Some((killed, Instant::now()));
                    }
                }
            }
        })
        .buffer_unordered(64);
    writes.collect::<Vec<()>>().await;
    let (killed, restarted) = crash.lock().unwrap().expect("Redis was killed mid-run");
    let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
    Run {
        acknowledged,
        killed,
        restarted,
    }
}

async fn backends(redis: &RedisProcess, level: Durability) -> Backends {
    Backends::redis_durable(&redis.url(), "orc", RegistryOptions::default(), level)
        .await
        .unwrap()
}

fn settings() -> [(&'static str, Durability, Loss); 3] {
    [
        ("always", Durability::Aof, Loss::Nothing),
        ("everysec", Durability::Memory, Loss::LastTwoSeconds),
        ("off", Durability::Memory, Loss::BeforeTheCrash),
    ]
}

fn start(setting: &'static str) -> RedisProcess {
    let started = match setting {
        "off" => RedisProcess::start(false),
        fsync => RedisProcess::start_fsync(fsync),
    };
    started.expect("redis-server must be installed for this test")
}

fn count(numbers: impl Iterator<Item = u64>) -> HashMap<u64, usize> {
    let mut found = HashMap::new();
    for n in numbers {
        *found.entry(n).or_default() += 1;
    }
    found
}

#[tokio::test]
async fn a_crash_mid_enqueue_loses_no_more_than_the_level_promises() {
    for (setting, level, loss) in settings() {
        let redis = start(setting);
        let stores = backends(&redis, level).await;
        let run = through_a_crash(&redis, |n| {
            let jobs = stores.jobs.clone();
            async move {
                let job = NewJob::new("reconciliation", serde_json::json!({ "n": n }));
                jobs.enqueue(job).await.map(drop)
            }
        })
        .await;
        let jobs = omc_orchestra::testkit::jobs::waiting_jobs(stores.jobs.as_ref()).await;
        let found = count(jobs.iter().map(|job| job.data["n"].as_u64().unwrap()));
        run.judge("jobs", setting, &found, loss);
    }
}

#[tokio::test]
async fn a_crash_mid_publish_loses_no_more_than_the_level_promises() {
    for (setting, level, loss) in settings() {
        let redis = start(setting);
        let stores = backends(&redis, level).await;
        let mut options = ConsumerOptions::new("ledger", "ledger-1");
        options.visibility_timeout = Duration::from_secs(1);
        let mut consumer = stores.events.consumer(options).await.unwrap();
        let delivered = Arc::new(Mutex::new(HashSet::new()));
        let seen = delivered.clone();
        let reading = tokio::spawn(async move {
            loop {
                let Ok(batch) = consumer.next_batch(100, Duration::from_millis(200)).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let ids: Vec<String> = batch.iter().map(|d| d.event.id.clone()).collect();
                for delivery in batch {
                    let n = delivery.event.data["n"].as_u64().unwrap();
                    seen.lock().unwrap().insert(n);
                }
                let _ = consumer.ack_many(&ids).await;
            }
        });
        let run = through_a_crash(&redis, |n| {
            let events = stores.events.clone();
            async move {
                let data = serde_json::json!({ "n": n });
                let event = NewEvent::new("RECONCILIATION_POSTED", "finance", data);
                events.publish(event).await.map(drop)
            }
        })
        .await;
        let query = EventQuery {
            limit: Some(10_000),
            ..EventQuery::default()
        };
        let history = stores.events.history(&query).await.unwrap();
        let found = count(history.iter().map(|e| e.data["n"].as_u64().unwrap()));
        run.judge("events", setting, &found, loss);
        if matches!(loss, Loss::Nothing) {
            // Every acknowledged event reaches the group, redelivered where the crash
            // took its delivery.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let missing: Vec<u64> = {
                    let delivered = delivered.lock().unwrap();
                    let acknowledged = run.acknowledged.keys();
                    acknowledged
                        .filter(|n| !delivered.contains(n))
                        .copied()
                        .collect()
                };
                if missing.is_empty() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} acknowledged events never reached the group: {:?}",
                    missing.len(),
                    &missing[..missing.len().min(20)]
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        reading.abort();
    }
}

#[tokio::test]
async fn a_crash_mid_log_write_loses_no_more_than_the_level_promises() {
    for (setting, level, loss) in settings() {
        let redis = start(setting);
        let stores = backends(&redis, level).await;
        let run = through_a_crash(&redis, |n| {
            let logs = stores.logs.clone();
            async move {
                let record = LogRecord::new(
                    chrono::Utc::now(),
                    LogLevel::Info,
                    "finance",
                    format!("{n}"),
                );
                logs.write(vec![record]).await
            }
        })
        .await;
        let mut found = HashMap::new();
        let mut query = LogQuery {
            limit: Some(1_000),
            ..LogQuery::default()
        };
        loop {
            let page = stores.logs.search_page(&query).await.unwrap();
            for record in &page.records {
                *found
                    .entry(record.message.parse::<u64>().unwrap())
                    .or_default() += 1;
            }
            match page.next_cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => break,
            }
        }
        run.judge("logs", setting, &found, loss);
    }
}
