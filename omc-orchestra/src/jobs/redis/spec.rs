//! How a job is stored, and the job (or lease) read back from it.
//!
//! A job is the hash `{prefix}:job:{queue}:j:{id}`. What never changes after the enqueue
//! and the scripts need not read is one short JSON field, written by the client (a small
//! job stays within Redis's compact hash encoding); the scripts read and write the rest:
//!
//! | field | holds |
//! | --- | --- |
//! | `id`, `type` | id and type |
//! | `j` | data, priority, unique key, timeout, creation time and trace (JSON, see `Spec`) |
//! | `rp` | the retry policy: `{max attempts} {fixed or exponential} {delay ms} {jitter}` |
//! | `sc` | the wait score: the priority rank, then the sequence in 13 digits |
//! | `uk` | the unique key, when there is one |
//! | `state`, `att`, `ra` | state, attempts so far, run-at (ms) |
//! | `st`, `wk`, `tok` | start (ms), worker and lease token of the current attempt |
//! | `fi`, `rs`, `er`, `pg`, `cx` | finish (ms), result and progress (JSON), last error, `1` once cancelled |
//! | `fa` | the failed attempts, oldest first: a JSON array of `{"a": attempt, "e": error, "t": ms, "w": worker or ""}`, written only by `FAIL` |

use super::super::{
    Backoff, BackoffKind, FailedAttempt, Job, JobLease, JobPriority, JobState, NewJob,
};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use redis::Value;
use serde::{Deserialize, Serialize};
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

/// What never changes about a job: the `j` field.
#[derive(Debug, Serialize, Deserialize)]
struct Spec<D> {
    /// The data.
    d: D,
    /// The priority rank.
    p: u8,
    /// The unique key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    u: Option<String>,
    /// The timeout (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    o: Option<u64>,
    /// When it was enqueued (ms).
    c: i64,
    /// The trace it belongs to (`traceparent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    t: Option<String>,
}

/// The six enqueue arguments of a job after its id: unique key or '', type, priority
/// rank, the `j` field, the retry policy and the first run-at (ms), as of `now_ms`; with
/// `backend_time` a delay goes as `+ms`, counted from the script's clock.
pub(super) fn job_args(job: &NewJob, now_ms: i64, backend_time: bool) -> Result<[String; 6]> {
    let now = DateTime::from_timestamp_millis(now_ms).unwrap_or_default();
    let backoff = job.backoff.unwrap_or_default();
    let max = job.max_attempts.unwrap_or(3);
    let spec = Spec {
        d: &job.data,
        p: job.priority.rank(),
        u: job.unique_key.clone(),
        o: job.timeout_ms,
        c: now_ms,
        t: job.traceparent.clone(),
    };
    let kind = match backoff.kind {
        BackoffKind::Fixed => "fixed",
        BackoffKind::Exponential => "exponential",
    };
    Ok([
        job.unique_key.clone().unwrap_or_default(),
        job.job_type.clone(),
        job.priority.rank().to_string(),
        serde_json::to_string(&spec)?,
        format!("{max} {kind} {} {}", backoff.delay_ms, backoff.jitter),
        match job.run_at {
            None if backend_time => format!("+{}", job.delay_ms.unwrap_or(0)),
            _ => job.first_run(now).timestamp_millis().to_string(),
        },
    ])
}

/// Most attempts and the backoff, from the `rp` field.
fn policy(rp: &str) -> Option<(u32, Backoff)> {
    let mut parts = rp.split(' ');
    let max = parts.next()?.parse().ok()?;
    let kind = match parts.next()? {
        "fixed" => BackoffKind::Fixed,
        _ => BackoffKind::Exponential,
    };
    let delay_ms = parts.next()?.parse().ok()?;
    let jitter = parts.next()?.parse().ok()?;
    Some((
        max,
        Backoff {
            kind,
            delay_ms,
            jitter,
        },
    ))
}

/// One entry of the `fa` field.
#[derive(Debug, Deserialize)]
struct StoredAttempt {
    a: u32,
    e: String,
    t: i64,
    #[serde(default)]
    w: String,
}

/// The failed attempts of an `fa` field; none when absent or unreadable (a job's history
/// is no reason to fail reading the job).
fn failed_attempts(text: Option<&String>) -> Vec<FailedAttempt> {
    // Lua's cjson writes an empty list as `{}`.
    let stored: Vec<StoredAttempt> = text
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default();
    stored
        .into_iter()
        .filter_map(|s| {
            Some(FailedAttempt {
                attempt: s.a,
                error: s.e,
                failed_at: DateTime::from_timestamp_millis(s.t)?,
                worker: (!s.w.is_empty()).then_some(s.w),
            })
        })
        .collect()
}

/// A job from its id, type, `j` field and the other fields (looked up by name).
fn job_from_parts<'a>(
    id: String,
    job_type: String,
    spec: &str,
    look: &dyn Fn(&str) -> Option<&'a String>,
) -> Result<Job> {
    let spec: Spec<serde_json::Value> = serde_json::from_str(spec).map_err(|_| malformed("j"))?;
    let (max_attempts, backoff) = look("rp")
        .and_then(|rp| policy(rp))
        .ok_or_else(|| malformed("rp"))?;
    let get = |k: &str| look(k).filter(|v| !v.is_empty());
    let need = |k: &str| get(k).ok_or_else(|| malformed(k));
    let at = |k: &str| get(k).and_then(|v| time(v));
    Ok(Job {
        id,
        job_type,
        data: spec.d,
        priority: JobPriority::from_rank(spec.p),
        state: JobState::parse(need("state")?).ok_or_else(|| malformed("state"))?,
        attempts: need("att")?.parse().map_err(|_| malformed("att"))?,
        max_attempts,
        backoff,
        unique_key: spec.u,
        timeout_ms: spec.o,
        traceparent: spec.t,
        created_at: DateTime::from_timestamp_millis(spec.c).ok_or_else(|| malformed("j"))?,
        run_at: at("ra").ok_or_else(|| malformed("ra"))?,
        started_at: at("st"),
        finished_at: at("fi"),
        worker: get("wk").cloned(),
        progress: json(look("pg")),
        result: json(look("rs")),
        error: get("er").cloned(),
        failed_attempts: failed_attempts(get("fa")),
        cancel_requested: get("cx").is_some_and(|c| c == "1"),
    })
}

/// A job from its hash fields.
pub(super) fn job_from_map(mut f: HashMap<String, String>) -> Result<Job> {
    let id = f.remove("id").ok_or_else(|| malformed("id"))?;
    let job_type = f.remove("type").ok_or_else(|| malformed("type"))?;
    let spec = f.remove("j").ok_or_else(|| malformed("j"))?;
    job_from_parts(id, job_type, &spec, &|k| f.get(k))
}

/// A job from an `HGETALL` reply.
pub(super) fn job_from(value: Value) -> Result<Job> {
    let map: HashMap<String, String> = redis::from_redis_value(value)?;
    if map.is_empty() {
        return Err(Error::Backend("job vanished during a transition".into()));
    }
    job_from_map(map)
}

/// The fields of a job a fetch answers, in this order (the scripts' `TAKEN`), then the
/// id.
const TAKEN: [&str; 9] = ["type", "j", "rp", "att", "ra", "pg", "er", "cx", "fa"];

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

/// A fetch's answer: the leases, and the jobs it took whose stored hash cannot be read
/// (id and why), for the caller to fail alone.
#[derive(Debug, Default)]
pub(super) struct Taken {
    /// The jobs to hand out.
    pub(super) leases: Vec<JobLease>,
    /// Taken jobs that cannot be read: id, and what is wrong with them.
    pub(super) unreadable: Vec<(String, String)>,
}

/// What is wrong with a stored job, without the `backend error` wrapping.
fn reason(err: Error) -> String {
    match err {
        Error::Backend(inner) => inner.to_string(),
        other => other.to_string(),
    }
}

/// Leases from a fetch's answer: a JSON array of each job's `TAKEN` fields (`""` for a
/// missing one), then its id; or nothing. A row that does not make a job is set apart
/// in `unreadable`, so it cannot hold up the others.
pub(super) fn leases_from(value: Value, taking: &Taking) -> Result<Taken> {
    let text: String = match value {
        Value::Nil => String::new(),
        other => redis::from_redis_value(other)?,
    };
    if text.is_empty() {
        return Ok(Taken::default());
    }
    let rows: Vec<Vec<String>> = serde_json::from_str(&text).map_err(|_| malformed("lease"))?;
    let started_at =
        DateTime::from_timestamp_millis(taking.now_ms).ok_or_else(|| malformed("st"))?;
    let expires_at = DateTime::from_timestamp_millis(taking.now_ms.saturating_add(taking.lease_ms))
        .ok_or_else(|| malformed("lease end"))?;
    let active = JobState::Active.as_str().to_owned();
    let mut taken = Taken::default();
    for mut row in rows {
        let mut take = |i: usize, what: &str| {
            row.get_mut(i)
                .map(std::mem::take)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| malformed(what))
        };
        // The script always sends the id: without one the whole answer is suspect.
        let id = take(TAKEN.len(), "id")?;
        let (job_type, spec) = (take(0, "type"), take(1, "j"));
        let look = |k: &str| match k {
            "state" => Some(&active),
            _ => TAKEN.iter().position(|f| *f == k).and_then(|i| row.get(i)),
        };
        let parsed =
            job_type.and_then(|job_type| job_from_parts(id.clone(), job_type, &spec?, &look));
        match parsed {
            Ok(mut job) => {
                job.started_at = Some(started_at);
                job.worker = Some(taking.worker.clone());
                taken.leases.push(JobLease {
                    token: format!("{}{}", taking.token_base, job.id),
                    job,
                    expires_at,
                });
            }
            Err(err) => taken.unreadable.push((id, reason(err))),
        }
    }
    Ok(taken)
}
