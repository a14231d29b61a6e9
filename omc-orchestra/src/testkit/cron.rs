//! The cron scheduler's contract over any job queue backend, on a [`ManualClock`].

use super::jobs::{round_clock, MakeQueue};
use crate::jobs::{JobFilter, JobStore, NewJob, NewSchedule, Scheduler, SchedulerOptions};
use crate::{Clock, Error, ManualClock};
use chrono::{DateTime, Utc};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// `secs` seconds after the start of [`round_clock`].
fn at(secs: i64) -> DateTime<Utc> {
    round_clock().now() + chrono::Duration::seconds(secs)
}

fn every_ten_seconds() -> NewSchedule {
    NewSchedule {
        id: Some("inventory-sync-10s".into()),
        cron: "*/10 * * * * *".into(),
        timezone: Some("Africa/Accra".into()),
        job: NewJob::new("inventory-sync", json!({"full": false})),
        paused: false,
    }
}

/// Several schedulers over one store (`queues`: a handle each, on `clock`) fire each
/// tick exactly once, with the job id `{schedule}@{tick ms}`.
pub async fn cron_fires_once_per_tick(queues: &[Arc<dyn JobStore>], clock: &ManualClock) {
    let schedulers: Vec<Scheduler> = queues
        .iter()
        .map(|q| {
            Scheduler::new(
                q.clone(),
                Arc::new(clock.clone()),
                SchedulerOptions::default(),
            )
        })
        .collect();
    schedulers[0].add(every_ten_seconds()).await.unwrap();
    let mut fired = Vec::new();
    for step in 1..=6 {
        clock.advance(Duration::from_secs(10));
        let passes = futures::future::join_all(schedulers.iter().map(|s| s.tick())).await;
        let mut this_tick: Vec<String> = Vec::new();
        for pass in passes {
            this_tick.extend(pass.unwrap().into_iter().map(|j| j.id));
        }
        let tick = at(10 * step);
        assert_eq!(
            this_tick,
            vec![format!("inventory-sync-10s@{}", tick.timestamp_millis())]
        );
        fired.extend(this_tick);
    }
    let jobs = queues[0]
        .list(&JobFilter {
            limit: Some(100),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(jobs.len(), 6);
    let listed = schedulers[1].list().await.unwrap();
    assert_eq!(listed[0].last_fired_at, Some(at(60)));
}

/// A tick missed while no scheduler ran fires once after a restart; ticks older than
/// the catch-up window are skipped; pause, resume and remove work.
pub async fn cron_catch_up_pause_remove(make: &MakeQueue) {
    let clock = round_clock();
    let queue = make(clock.clone(), crate::jobs::QueueOptions::default()).await;
    let options = SchedulerOptions {
        catch_up_window: Duration::from_secs(15),
        max_catch_up: 10,
    };
    let first = Scheduler::new(queue.clone(), Arc::new(clock.clone()), options);
    first.add(every_ten_seconds()).await.unwrap();
    clock.advance(Duration::from_secs(10));
    assert_eq!(first.tick().await.unwrap().len(), 1);
    drop(first);
    clock.advance(Duration::from_secs(15));
    let restarted = Scheduler::new(queue.clone(), Arc::new(clock.clone()), options);
    let caught_up = restarted.tick().await.unwrap();
    assert_eq!(caught_up.len(), 1);
    assert_eq!(
        caught_up[0].id,
        format!("inventory-sync-10s@{}", at(20).timestamp_millis())
    );
    assert!(restarted.tick().await.unwrap().is_empty());
    clock.advance(Duration::from_secs(35));
    let late: Vec<String> = restarted
        .tick()
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    let expect: Vec<String> = [50, 60]
        .iter()
        .map(|s| format!("inventory-sync-10s@{}", at(*s).timestamp_millis()))
        .collect();
    assert_eq!(late, expect);

    restarted
        .set_paused("inventory-sync-10s", true)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(30));
    assert!(restarted.tick().await.unwrap().is_empty());
    restarted
        .set_paused("inventory-sync-10s", false)
        .await
        .unwrap();
    assert!(restarted.tick().await.unwrap().is_empty());
    clock.advance(Duration::from_secs(10));
    assert_eq!(restarted.tick().await.unwrap().len(), 1);
    let mut bad = every_ten_seconds();
    bad.cron = "every tuesday".into();
    assert!(
        matches!(restarted.add(bad).await, Err(Error::Invalid { field, .. }) if field == "cron")
    );
    restarted.remove("inventory-sync-10s").await.unwrap();
    assert!(restarted.list().await.unwrap().is_empty());
    assert!(matches!(
        restarted.remove("inventory-sync-10s").await,
        Err(Error::NotFound { .. })
    ));
}
