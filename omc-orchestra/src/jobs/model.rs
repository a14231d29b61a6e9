//! The job model: what producers enqueue, what the queue reports, and the options that
//! shape retries, leases and trimming.

use super::backoff::{Backoff, MAX_BACKOFF_MS};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Queue priority: `high` jobs run before `normal`, before `low`, before `background`;
/// FIFO within a priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum JobPriority {
    /// First.
    High,
    /// The default.
    #[default]
    Normal,
    /// After normal.
    Low,
    /// When nothing else waits.
    Background,
}

any_case_names!(JobPriority);

impl JobPriority {
    /// All four, highest first.
    pub const ALL: [JobPriority; 4] = [Self::High, Self::Normal, Self::Low, Self::Background];

    /// 0 for `high` … 3 for `background`: the order jobs leave the queue in.
    pub fn rank(self) -> u8 {
        self as u8
    }

    /// The priority of a rank; `background` for anything past it.
    pub fn from_rank(rank: u8) -> Self {
        Self::ALL
            .get(usize::from(rank))
            .copied()
            .unwrap_or(Self::Background)
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Normal => "normal",
            Self::Low => "low",
            Self::Background => "background",
        }
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Ready to run.
    Waiting,
    /// Waiting for its run-at time (a delay or a retry backoff).
    Delayed,
    /// Held by a worker under a lease.
    Active,
    /// Done, with a result.
    Completed,
    /// Out of attempts.
    Failed,
    /// Removed before it ran.
    Cancelled,
}

any_case_names!(JobState);

impl JobState {
    /// Every state, in the order of a job's life.
    pub const ALL: [JobState; 6] = [
        Self::Waiting,
        Self::Delayed,
        Self::Active,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Delayed => "delayed",
            Self::Active => "active",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parse a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "waiting" => Self::Waiting,
            "delayed" => Self::Delayed,
            "active" => Self::Active,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    /// Whether the job has yet to finish (a unique key still holds).
    pub fn is_pending(self) -> bool {
        matches!(self, Self::Waiting | Self::Delayed | Self::Active)
    }
}

/// A job to enqueue: what a producer supplies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct NewJob {
    /// Job type (`price-calculation`, …).
    #[serde(rename = "type")]
    pub job_type: String,
    /// The payload.
    #[serde(default)]
    pub data: serde_json::Value,
    /// Priority (default `normal`).
    #[serde(default)]
    pub priority: JobPriority,
    /// Run no earlier than this many milliseconds from now.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Run no earlier than this time (wins over `delayMs`).
    #[serde(default)]
    pub run_at: Option<DateTime<Utc>>,
    /// Attempts before the job fails for good (default 3).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Wait between attempts (default exponential from 1 s, no jitter).
    #[serde(default)]
    pub backoff: Option<Backoff>,
    /// While a job with this key is pending, enqueueing another returns that one.
    #[serde(default)]
    pub unique_key: Option<String>,
    /// A handler running longer than this fails the attempt.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// A caller-chosen id; enqueueing an id that exists returns the existing job.
    #[serde(default)]
    pub id: Option<String>,
    /// The W3C `traceparent` of the work that enqueued it; the enqueuing request's trace
    /// when not given, so its runs continue that trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

fn valid_token(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b))
}

impl NewJob {
    /// This job carrying the running task's trace (see [`crate::telemetry::current`]) when
    /// it names none itself.
    pub fn in_current_trace(mut self) -> Self {
        if self.traceparent.is_none() {
            self.traceparent = crate::telemetry::current_header();
        }
        self
    }

    /// A normal-priority job of `job_type` with `data`.
    pub fn new(job_type: impl Into<String>, data: serde_json::Value) -> Self {
        Self {
            job_type: job_type.into(),
            data,
            priority: JobPriority::Normal,
            delay_ms: None,
            run_at: None,
            max_attempts: None,
            backoff: None,
            unique_key: None,
            timeout_ms: None,
            traceparent: None,
            id: None,
        }
    }

    /// Check every field; the error names the first field that is wrong.
    pub fn validate(&self) -> Result<()> {
        if !valid_token(&self.job_type, 128) || self.job_type.contains('@') {
            return Err(Error::invalid(
                "type",
                "must be 1-128 letters, digits, `-`, `_`, `.` or `:`",
            ));
        }
        if self.max_attempts.is_some_and(|n| !(1..=100).contains(&n)) {
            return Err(Error::invalid("maxAttempts", "must be between 1 and 100"));
        }
        if self.delay_ms.is_some_and(|d| d > 366 * 24 * 3_600_000) {
            return Err(Error::invalid("delayMs", "must be at most one year"));
        }
        if let Some(b) = &self.backoff {
            if b.delay_ms > MAX_BACKOFF_MS {
                return Err(Error::invalid("backoff.delayMs", "must be at most one day"));
            }
            if !(0.0..=1.0).contains(&b.jitter) {
                return Err(Error::invalid("backoff.jitter", "must be between 0 and 1"));
            }
        }
        if self
            .unique_key
            .as_ref()
            .is_some_and(|k| k.is_empty() || k.len() > 256)
        {
            return Err(Error::invalid("uniqueKey", "must be 1-256 characters"));
        }
        if self
            .timeout_ms
            .is_some_and(|t| t == 0 || t > 24 * 3_600_000)
        {
            return Err(Error::invalid(
                "timeoutMs",
                "must be between 1 ms and one day",
            ));
        }
        if self.id.as_ref().is_some_and(|id| !valid_token(id, 200)) {
            return Err(Error::invalid(
                "id",
                "must be 1-200 letters, digits, `-`, `_`, `.`, `:` or `@`",
            ));
        }
        crate::telemetry::TraceParent::check(self.traceparent.as_deref())
    }

    /// When the job may first run, given the current time.
    pub fn first_run(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.run_at.unwrap_or_else(|| {
            now + chrono::Duration::milliseconds(self.delay_ms.unwrap_or(0) as i64)
        })
    }

    /// The job a fresh enqueue stores as `id` at `now`, first due at `run_at` (which each
    /// backend rounds as it keeps time), so every backend reports a new job alike.
    pub(crate) fn into_job(self, id: String, now: DateTime<Utc>, run_at: DateTime<Utc>) -> Job {
        Job {
            id,
            job_type: self.job_type,
            data: self.data,
            priority: self.priority,
            state: if run_at > now {
                JobState::Delayed
            } else {
                JobState::Waiting
            },
            attempts: 0,
            max_attempts: self.max_attempts.unwrap_or(3),
            backoff: self.backoff.unwrap_or_default(),
            unique_key: self.unique_key,
            timeout_ms: self.timeout_ms,
            traceparent: self.traceparent,
            created_at: now,
            run_at,
            started_at: None,
            finished_at: None,
            worker: None,
            progress: None,
            result: None,
            error: None,
            failed_attempts: Vec::new(),
            cancel_requested: false,
        }
    }
}

/// A job as the queue reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// Job id.
    pub id: String,
    /// Job type.
    #[serde(rename = "type")]
    pub job_type: String,
    /// The payload.
    pub data: serde_json::Value,
    /// Priority.
    pub priority: JobPriority,
    /// State.
    pub state: JobState,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Wait between attempts.
    pub backoff: Backoff,
    /// The unique key, if any.
    pub unique_key: Option<String>,
    /// Time limit of one attempt.
    pub timeout_ms: Option<u64>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When it may run next.
    pub run_at: DateTime<Utc>,
    /// When the current (or last) attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished (completed or failed for good).
    pub finished_at: Option<DateTime<Utc>>,
    /// The worker holding (or last holding) it.
    pub worker: Option<String>,
    /// The last progress report.
    pub progress: Option<serde_json::Value>,
    /// What the handler returned.
    pub result: Option<serde_json::Value>,
    /// The last failure.
    pub error: Option<String>,
    /// Its failed attempts, oldest first: the last [`FAILED_ATTEMPTS_KEPT`]. Written only
    /// when an attempt fails.
    #[serde(default)]
    pub failed_attempts: Vec<FailedAttempt>,
    /// Whether cancellation was asked for while it ran.
    pub cancel_requested: bool,
    /// The trace it belongs to (W3C `traceparent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// How many failed attempts a job keeps, the newest (as BullMQ's `stackTraceLimit`): a
/// job retried without end stays small.
pub const FAILED_ATTEMPTS_KEPT: usize = 10;

/// One failed attempt of a job, as [`Job::failed_attempts`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct FailedAttempt {
    /// Which attempt it was: 1 for the first (counted afresh after a retry from failed).
    pub attempt: u32,
    /// What it failed with.
    pub error: String,
    /// When it failed.
    pub failed_at: DateTime<Utc>,
    /// The worker that ran it, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

impl FailedAttempt {
    /// Add `attempt` to `attempts`, dropping the oldest past [`FAILED_ATTEMPTS_KEPT`].
    pub fn record(attempts: &mut Vec<FailedAttempt>, attempt: FailedAttempt) {
        attempts.push(attempt);
        let excess = attempts.len().saturating_sub(FAILED_ATTEMPTS_KEPT);
        attempts.drain(..excess);
    }
}

/// A job held by a worker. Complete or fail it with the `token`, before `expires_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobLease {
    /// The job.
    pub job: Job,
    /// Proof of holding the lease.
    pub token: String,
    /// When the lease runs out and the job may run elsewhere.
    pub expires_at: DateTime<Utc>,
}

/// The answer to a lease renewal or a progress report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRenewal {
    /// The new end of the lease.
    pub expires_at: DateTime<Utc>,
    /// Someone asked to cancel the job: the handler should stop.
    pub cancel_requested: bool,
}

/// What a worker asks for when it fetches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// The worker's id (it becomes part of each lease token).
    pub worker: String,
    /// How long the lease lasts unless renewed.
    pub lease: Duration,
    /// Most jobs to take at once.
    pub max: usize,
    /// Only jobs of these types; empty takes any.
    pub types: Vec<String>,
}

impl FetchRequest {
    /// Up to `max` jobs of any type for `worker` under `lease`.
    pub fn new(worker: impl Into<String>, lease: Duration, max: usize) -> Self {
        Self {
            worker: worker.into(),
            lease,
            max,
            types: Vec::new(),
        }
    }
}

/// How many jobs a queue keeps once they finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueOptions {
    /// Most completed jobs kept (oldest go first).
    pub keep_completed: usize,
    /// Completed jobs older than this go.
    pub completed_max_age: Duration,
    /// Most failed jobs kept.
    pub keep_failed: usize,
    /// Failed jobs older than this go.
    pub failed_max_age: Duration,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            keep_completed: 1000,
            completed_max_age: Duration::from_secs(24 * 3600),
            keep_failed: 5000,
            failed_max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Filters and paging of a job listing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(rename_all = "camelCase")]
pub struct JobFilter {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs of this type.
    #[serde(rename = "type")]
    pub job_type: Option<String>,
    /// Skip this many matches.
    #[serde(default)]
    pub offset: usize,
    /// Return at most this many (default 50, at most 1000).
    pub limit: Option<usize>,
}

impl JobFilter {
    /// The page size asked for, within bounds.
    pub fn page_size(&self) -> usize {
        self.limit.unwrap_or(50).clamp(1, 1000)
    }

    /// Whether `job` matches the state and type filters.
    pub fn matches(&self, job: &Job) -> bool {
        self.state.is_none_or(|s| s == job.state)
            && self.job_type.as_ref().is_none_or(|t| *t == job.job_type)
    }
}

/// What one maintenance pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// Delayed jobs that became due.
    pub promoted: u64,
    /// Jobs whose lease ran out: back to waiting (or failed when out of attempts).
    pub stalled: Vec<String>,
    /// Finished jobs trimmed away.
    pub trimmed: u64,
}
