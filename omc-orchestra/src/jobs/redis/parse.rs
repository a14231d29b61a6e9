//! Turning script replies back into jobs, leases and stats.

use super::super::stats::{fill_windows, Bucket};
use super::super::{
    Backoff, BackoffKind, Job, JobLease, JobPriority, JobState, JobStats, LeaseRenewal,
};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use redis::Value;
use std::collections::HashMap;

fn malformed(what: &str) -> Error {
    Error::Backend(format!("malformed job field `{what}` in Redis").into())
}

fn time(ms: &str) -> Option<DateTime<Utc>> {
    ms.parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_millis)
}

fn json(text: Option<&String>) -> Option<serde_json::Value> {
    text.filter(|t| !t.is_empty())
        .map(|t| serde_json::from_str(t).unwrap_or(serde_json::Value::String(t.clone())))
}

/// A job from its hash fields.
pub(super) fn job_from_map(f: HashMap<String, String>) -> Result<Job> {
    job_from_fields(&|k| f.get(k))
}

/// The job fields a fetch answers, in this order (the scripts' `TAKEN`), then the id.
const TAKEN: [&str; 15] = [
    "type", "data", "pri", "att", "max", "bk", "bd", "bj", "uk", "to", "cr", "ra", "pg", "er", "cx",
];

/// What a fetch asked for: with its answer, the whole leases.
#[derive(Debug)]
pub(super) struct Taking {
    /// The time the script ran at (ms).
    pub(super) now_ms: i64,
    /// Who takes the jobs.
    pub(super) worker: String,
    /// Each token is this followed by the job id.
    pub(super) token_base: String,
    /// How long the leases last (ms).
    pub(super) lease_ms: i64,
}

/// A job from a lookup of its fields.
fn job_from_fields<'a>(look: &dyn Fn(&str) -> Option<&'a String>) -> Result<Job> {
    let get = |k: &str| look(k).filter(|v| !v.is_empty());
    let need = |k: &str| get(k).ok_or_else(|| malformed(k));
    let number = |k: &str| -> Result<u64> { need(k)?.parse().map_err(|_| malformed(k)) };
    let at = |k: &str| get(k).and_then(|v| time(v));
    let state = JobState::parse(need("state")?).ok_or_else(|| malformed("state"))?;
    Ok(Job {
        id: need("id")?.clone(),
        job_type: need("type")?.clone(),
        data: json(look("data")).unwrap_or(serde_json::Value::Null),
        priority: JobPriority::from_rank(number("pri")? as u8),
        state,
        attempts: number("att")? as u32,
        max_attempts: number("max")? as u32,
        backoff: Backoff {
            kind: if get("bk").is_some_and(|k| k == "fixed") {
                BackoffKind::Fixed
            } else {
                BackoffKind::Exponential
            },
            delay_ms: number("bd")?,
            jitter: need("bj")?.parse().map_err(|_| malformed("bj"))?,
        },
        unique_key: get("uk").cloned(),
        timeout_ms: get("to").and_then(|v| v.parse().ok()),
        created_at: at("cr").ok_or_else(|| malformed("cr"))?,
        run_at: at("ra").ok_or_else(|| malformed("ra"))?,
        started_at: at("st"),
        finished_at: at("fi"),
        worker: get("wk").cloned(),
        progress: json(look("pg")),
        result: json(look("rs")),
        error: get("er").cloned(),
        cancel_requested: get("cx").is_some_and(|c| c == "1"),
    })
}

/// A job from an `HGETALL` reply.
pub(super) fn job_from(value: Value) -> Result<Job> {
    let map: HashMap<String, String> = redis::from_redis_value(value)?;
    if map.is_empty() {
        return Err(Error::Backend("job vanished during a transition".into()));
    }
    job_from_map(map)
}

/// Leases from a fetch's answer: each job's `TAKEN` fields, then its id.
pub(super) fn leases_from(value: Value, taking: &Taking) -> Result<Vec<JobLease>> {
    let rows: Vec<Vec<Option<String>>> = match value {
        Value::Nil => Vec::new(),
        other => redis::from_redis_value(other)?,
    };
    let started_at =
        DateTime::from_timestamp_millis(taking.now_ms).ok_or_else(|| malformed("st"))?;
    let expires_at = DateTime::from_timestamp_millis(taking.now_ms.saturating_add(taking.lease_ms))
        .ok_or_else(|| malformed("lu"))?;
    let active = JobState::Active.as_str().to_owned();
    rows.into_iter()
        .map(|mut row| {
            let id = row
                .get_mut(TAKEN.len())
                .and_then(Option::take)
                .ok_or_else(|| malformed("id"))?;
            let look = |k: &str| match k {
                "id" => Some(&id),
                "state" => Some(&active),
                _ => TAKEN
                    .iter()
                    .position(|f| *f == k)
                    .and_then(|i| row.get(i)?.as_ref()),
            };
            let mut job = job_from_fields(&look)?;
            job.started_at = Some(started_at);
            job.worker = Some(taking.worker.clone());
            Ok(JobLease {
                token: format!("{}{}", taking.token_base, job.id),
                job,
                expires_at,
            })
        })
        .collect()
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
