//! Kill a worker process (SIGKILL) in the middle of its jobs, or stop it (SIGSTOP) past
//! its leases and let it go on (SIGCONT), against a real Redis: every enqueued job still
//! completes, the lost worker's jobs run again elsewhere, no job runs twice on the healthy
//! worker, and the stopped worker's late completions are refused.

use omc_orchestra::clock;
use omc_orchestra::jobs::{JobAdmin, JobQueue, JobState, NewJob, QueueOptions, RedisJobQueue};
use omc_orchestra::testkit::eventually;
use omc_orchestra::testkit::redis::{store, url};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const JOBS: usize = 40;

fn spawn_worker(url: &str, prefix: &str, work_ms: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash_worker"))
        .args([url, prefix, "1000", work_ms, "4"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the crash_worker binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the worker prints its id");
    (child, line.trim().to_owned())
}

/// A queue of the test's own on the shared Redis, holding `JOBS` crash-test jobs; with
/// its store and the Redis URL for worker processes.
async fn queue() -> (omc_orchestra::RedisStore, String, RedisJobQueue) {
    let store = store().await;
    let queue = RedisJobQueue::new(
        store.clone(),
        "default",
        clock::system(),
        QueueOptions::default(),
    )
    .unwrap();
    for n in 0..JOBS {
        let job = NewJob::new("crash-test", serde_json::json!({ "n": n }));
        queue.enqueue(job).await.unwrap();
    }
    (store, url().await, queue)
}

#[tokio::test]
async fn a_killed_worker_loses_no_job() {
    let (store, url, queue) = queue().await;
    let (mut victim, victim_id) = spawn_worker(&url, store.prefix(), "150");
    eventually("the victim is mid-job", Duration::from_secs(20), || async {
        let started = runs(&store, "starts").await;
        let by_victim = started.values().flatten().filter(|w| **w == victim_id);
        (by_victim.count() >= 6).then_some(())
    })
    .await;
    victim.kill().unwrap();
    victim.wait().unwrap();
    let (mut healthy, healthy_id) = spawn_worker(&url, store.prefix(), "150");

    eventually("every job completed", Duration::from_secs(60), || async {
        (queue.stats().await.unwrap().completed == JOBS as u64).then_some(())
    })
    .await;
    healthy.kill().unwrap();
    healthy.wait().unwrap();

    let runs = runs(&store, "starts").await;
    let jobs = queue
        .list(&omc_orchestra::jobs::JobFilter {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(jobs.len(), JOBS);
    let mut rerun = 0;
    for job in &jobs {
        assert_eq!(job.state, JobState::Completed, "{job:?}");
        let workers = &runs[&job.id];
        let completed_by = job.result.as_ref().unwrap()["worker"].as_str().unwrap();
        assert_eq!(workers.last().map(String::as_str), Some(completed_by));
        assert!(
            workers.iter().filter(|w| **w == healthy_id).count() <= 1,
            "{workers:?}"
        );
        if workers.len() > 1 {
            assert_eq!(
                workers[0], victim_id,
                "only the killed worker's jobs run again"
            );
            rerun += 1;
        }
    }
    assert!(rerun > 0, "the victim was killed with no job in flight");
    store.delete_prefix().await.unwrap();
}

/// Each job's runs, in order, from a list of `{job id}|{worker id}` entries.
async fn runs(store: &omc_orchestra::RedisStore, list: &str) -> HashMap<String, Vec<String>> {
    let entries: Vec<String> = redis::cmd("LRANGE")
        .arg(format!("{}:crashtest:{list}", store.prefix()))
        .arg(0)
        .arg(-1)
        .query_async(&mut store.connection())
        .await
        .unwrap();
    let mut runs: HashMap<String, Vec<String>> = HashMap::new();
    for entry in entries {
        let (id, worker) = entry.split_once('|').unwrap();
        runs.entry(id.to_owned())
            .or_default()
            .push(worker.to_owned());
    }
    runs
}

fn signal(child: &Child, signal: &str) {
    let sent = Command::new("kill")
        .arg(signal)
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(sent.success(), "kill {signal}");
}

#[tokio::test]
async fn a_worker_stopped_past_its_leases_completes_nothing_late() {
    let (store, url, queue) = queue().await;
    let (mut stopped, stopped_id) = spawn_worker(&url, store.prefix(), "400");
    eventually("the worker is mid-job", Duration::from_secs(20), || async {
        let started = runs(&store, "starts").await;
        (started.values().flatten().count() >= 4).then_some(())
    })
    .await;
    signal(&stopped, "-STOP");
    let held: Vec<String> = {
        let started = runs(&store, "starts").await;
        let finished = runs(&store, "finishes").await;
        started
            .keys()
            .filter(|id| !finished.contains_key(*id))
            .cloned()
            .collect()
    };
    assert!(!held.is_empty(), "stopped with no job in flight");
    // Past the one-second leases: the stopped worker's jobs go back to the queue.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (mut healthy, healthy_id) = spawn_worker(&url, store.prefix(), "50");
    eventually("every job completed", Duration::from_secs(60), || async {
        (queue.stats().await.unwrap().completed == JOBS as u64).then_some(())
    })
    .await;

    signal(&stopped, "-CONT");
    eventually(
        "the stopped worker ends its jobs",
        Duration::from_secs(20),
        || async {
            let finished = runs(&store, "finishes").await;
            let late = held.iter().filter(|id| {
                finished
                    .get(*id)
                    .is_some_and(|workers| workers.contains(&stopped_id))
            });
            (late.count() == held.len()).then_some(())
        },
    )
    .await;
    // Its completions went out with its lapsed leases: give them time to be refused.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for child in [&mut stopped, &mut healthy] {
        child.kill().unwrap();
        child.wait().unwrap();
    }

    let started = runs(&store, "starts").await;
    for id in &held {
        let job = queue.get(id).await.unwrap();
        assert_eq!(job.state, JobState::Completed, "{job:?}");
        let completed_by = job.result.as_ref().unwrap()["worker"].as_str().unwrap();
        assert_eq!(
            completed_by, healthy_id,
            "the late completion of {id} was taken"
        );
        let healthy_runs = started[id].iter().filter(|w| **w == healthy_id).count();
        assert_eq!(healthy_runs, 1, "{id}: {:?}", started[id]);
    }
    let stats = queue.stats().await.unwrap();
    assert_eq!(stats.completed, JOBS as u64);
    assert_eq!(
        stats.last_minute.completed, JOBS as u64,
        "a job completed twice"
    );
    store.delete_prefix().await.unwrap();
}
