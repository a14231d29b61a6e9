//! Turning script replies back into outcomes, renewals and stats.

use super::super::stats::{fill_windows, Bucket};
use super::super::{Job, JobStats, LeaseRenewal};
use super::spec::job_from;
use crate::{Error, Result};
use chrono::DateTime;
use redis::Value;

fn malformed(what: &str) -> Error {
    Error::Backend(format!("malformed job field `{what}` in Redis").into())
}

/// The parts after an `ok` status; `missing` and `conflict` become errors.
pub(super) fn status_of(reply: Value, id: &str) -> Result<Vec<Value>> {
    let mut parts: Vec<Value> = redis::from_redis_value(reply)?;
    if parts.is_empty() {
        return Err(Error::Backend("empty script reply".into()));
    }
    let status: String = redis::from_redis_value(parts.remove(0))?;
    outcome(&status, id).map(|()| parts)
}

/// The outcome of one transition from its status word.
pub(super) fn outcome(status: &str, id: &str) -> Result<()> {
    match status {
        "ok" => Ok(()),
        "missing" => Err(Error::not_found("job", id)),
        _ => Err(Error::Conflict(format!(
            "job `{id}` is not leased with this token (its lease ran out or it finished)"
        ))),
    }
}

/// The job that is the first part of a reply.
pub(super) fn first_job(parts: Vec<Value>) -> Result<Job> {
    job_from(parts.into_iter().next().unwrap_or(Value::Nil))
}

/// `{leaseEnd, cancelFlag, scriptTime}` of an extend reply (the lease end is a sorted set
/// score, on the script's clock), the lease end moved onto the caller's clock, whose
/// reading is `now_ms`, so the caller can compare it with its own time.
pub(super) fn renewal_from(parts: Vec<Value>, now_ms: i64) -> Result<LeaseRenewal> {
    let (until, cancel, script_now): (Option<String>, Option<String>, Option<String>) =
        redis::from_redis_value(Value::Array(parts))?;
    let until = until.and_then(|u| u.parse::<f64>().ok());
    let script_now = script_now.and_then(|n| n.parse::<i64>().ok());
    let until = match (until, script_now) {
        (Some(until), Some(then)) => {
            DateTime::from_timestamp_millis(now_ms.saturating_add(until as i64 - then))
        }
        _ => None,
    };
    Ok(LeaseRenewal {
        expires_at: until.ok_or_else(|| malformed("lease end"))?,
        cancel_requested: cancel.is_some_and(|c| c == "1"),
    })
}

/// Stats from `{counts, buckets, scriptTime}`: the per-minute buckets are keyed by the
/// script's clock, so their windows are counted back from its time.
pub(super) fn stats_from(reply: Value) -> Result<JobStats> {
    let (counts, buckets, now_ms): (Vec<u64>, Vec<Vec<String>>, i64) =
        redis::from_redis_value(reply)?;
    let count = |i: usize| counts.get(i).copied().unwrap_or_default();
    let mut stats = JobStats {
        waiting: count(0),
        delayed: count(1),
        active: count(2),
        completed: count(3),
        failed: count(4),
        ..JobStats::default()
    };
    for rank in 0..4u8 {
        stats
            .waiting_by_priority
            .bump(rank, count(5 + usize::from(rank)));
    }
    let number = |row: &[String], i: usize| -> u64 {
        row.get(i).and_then(|v| v.parse().ok()).unwrap_or_default()
    };
    let buckets: Vec<(i64, Bucket)> = buckets
        .iter()
        .map(|row| {
            let minute = row.first().and_then(|v| v.parse().ok()).unwrap_or_default();
            let bucket = Bucket {
                completed: number(row, 1),
                failed: number(row, 2),
                started: number(row, 3),
                wait_ms: number(row, 4),
                run_ms: number(row, 5),
            };
            (minute, bucket)
        })
        .collect();
    fill_windows(&mut stats, &buckets, now_ms);
    Ok(stats)
}
