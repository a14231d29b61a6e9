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

/// `{leaseEnd, cancelFlag}` of an extend reply (the lease end is a sorted set score).
pub(super) fn renewal_from(parts: Vec<Value>) -> Result<LeaseRenewal> {
    let (until, cancel): (Option<String>, Option<String>) =
        redis::from_redis_value(Value::Array(parts))?;
    let until = until
        .and_then(|u| u.parse::<f64>().ok())
        .and_then(|u| DateTime::from_timestamp_millis(u as i64));
    Ok(LeaseRenewal {
        expires_at: until.ok_or_else(|| malformed("lease end"))?,
        cancel_requested: cancel.is_some_and(|c| c == "1"),
    })
}

/// Stats from `{counts, buckets}`.
pub(super) fn stats_from(reply: Value, now_ms: i64) -> Result<JobStats> {
    let (counts, buckets): (Vec<u64>, Vec<Vec<String>>) = redis::from_redis_value(reply)?;
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
