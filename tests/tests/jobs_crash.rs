//! Kill a worker process (SIGKILL) in the middle of its jobs, against a real Redis: every
//! enqueued job still completes, the killed worker's jobs run again elsewhere, and no job
//! runs twice on the healthy worker.

use omc_orchestra::clock;
use omc_orchestra::jobs::{JobQueue, JobState, NewJob, QueueOptions, RedisJobQueue};
use omc_orchestra::testkit::eventually;
use omc_orchestra::testkit::redis::{store, url};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const JOBS: usize = 40;

fn spawn_worker(url: &str, prefix: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash_worker"))
        .args([url, prefix, "1000", "150", "4"])
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

#[tokio::test]
async fn a_killed_worker_loses_no_job() {
    let store = store().await;
    let url = url().await;
    let queue = RedisJobQueue::new(
        store.clone(),
        "default",
        clock::system(),
        QueueOptions::default(),
    )
    .unwrap();
    for n in 0..JOBS {
        queue
            .enqueue(NewJob::new("crash-test", serde_json::json!({ "n": n })))
            .await
            .unwrap();
    }
    let (mut victim, victim_id) = spawn_worker(&url, store.prefix());
    let starts_key = format!("{}:crashtest:starts", store.prefix());
    let starts = |conn: redis::aio::ConnectionManager| {
        let key = starts_key.clone();
        async move {
            let mut conn = conn;
            redis::cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query_async::<Vec<String>>(&mut conn)
                .await
                .unwrap()
        }
    };
    eventually("the victim is mid-job", Duration::from_secs(20), || async {
        let all = starts(store.connection()).await;
        (all.iter().filter(|s| s.ends_with(&victim_id)).count() >= 6).then_some(())
    })
    .await;
    victim.kill().unwrap();
    victim.wait().unwrap();
    let (mut healthy, healthy_id) = spawn_worker(&url, store.prefix());

    eventually("every job completed", Duration::from_secs(60), || async {
        (queue.stats().await.unwrap().completed == JOBS as u64).then_some(())
    })
    .await;
    healthy.kill().unwrap();
    healthy.wait().unwrap();

    let mut runs: HashMap<String, Vec<String>> = HashMap::new();
    for start in starts(store.connection()).await {
        let (id, worker) = start.split_once('|').unwrap();
        runs.entry(id.to_owned())
            .or_default()
            .push(worker.to_owned());
    }
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
