//! Job queue: prioritised background jobs taken by workers under a lease, retried with
//! backoff, trimmed once finished; cron schedules on top, and a worker pool to run them.
//!
//! Delivery is at-least-once: a worker that dies or stalls loses its lease and the job
//! runs again. Every transition checks the lease token, so a worker that lost its lease
//! cannot complete or fail a job that runs elsewhere.
//!
//! Measured against BullMQ (the anchor), on the points its users raise most:
//! - finished jobs are trimmed by count and age by default, so Redis does not grow
//!   without bound (BullMQ keeps every completed job unless told otherwise);
//! - a unique key holds only while its job is pending, so a finished job does not block
//!   the next one with the same key (BullMQ's custom job id dedups against finished jobs);
//! - cron ticks are recorded atomically with their enqueue, so any number of schedulers
//!   fire each tick once and catch up ticks missed while down, within a window;
//! - every time in the Redis scripts comes from the injected clock, so delays, backoff
//!   and lease expiry are tested on Redis without sleeping.
//!
//! The contract comes in capabilities, as apalis and object_store split theirs:
//! [`JobQueue`] is what producers and workers need (enqueue, lease, complete, fail…, and
//! two batch paths with defaults a backend may beat), [`JobAdmin`] adds listing and
//! administration, [`ScheduleStore`] the cron schedules, and [`JobStore`] is all of them,
//! what the servers run on. Both backends have every capability and keep one contract
//! (`testkit::jobs`).

mod attendance;
mod backoff;
#[cfg(feature = "cron")]
pub mod cron;
mod memory;
mod model;
#[cfg(feature = "redis")]
mod redis;
mod stats;

pub mod worker;

#[cfg(feature = "cron")]
pub use self::cron::{NewSchedule, Schedule, Scheduler, SchedulerOptions};
#[cfg(feature = "redis")]
pub use self::redis::RedisJobQueue;
pub use attendance::{count_by_type, waiting_by_type, Attendance, UnattendedType, MOST_COUNTED};
pub use backoff::{Backoff, BackoffKind, MAX_BACKOFF_MS};
pub use memory::MemoryJobQueue;
pub use model::{
    FailedAttempt, FetchRequest, Job, JobFilter, JobLease, JobPriority, JobState, LeaseRenewal,
    Maintenance, NewJob, QueueOptions, FAILED_ATTEMPTS_KEPT,
};
pub use stats::{JobStats, PriorityCounts, Window};
pub use worker::{JobContext, WorkerPool, WorkerPoolBuilder};

use crate::Result;
use async_trait::async_trait;
#[cfg(feature = "cron")]
use chrono::{DateTime, Utc};
use std::time::Duration;

/// The queue operations every backend has: what producers and a [`WorkerPool`] need.
#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Validate and enqueue a job. A pending job with the same `uniqueKey`, or any job
    /// with the same `id`, is returned instead of a new one.
    async fn enqueue(&self, job: NewJob) -> Result<Job>;

    /// One job by id.
    async fn get(&self, id: &str) -> Result<Job>;

    /// Take up to `request.max` due jobs, highest priority first, each under a lease.
    /// Due delayed jobs are promoted and expired leases recovered first.
    async fn fetch_batch(&self, request: &FetchRequest) -> Result<Vec<JobLease>>;

    /// Take the next due job under a lease of `lease` for `worker`, if any waits.
    async fn fetch(&self, worker: &str, lease: Duration) -> Result<Option<JobLease>> {
        let request = FetchRequest::new(worker, lease, 1);
        Ok(self.fetch_batch(&request).await?.into_iter().next())
    }

    /// Renew a lease for `lease` from now.
    async fn extend(&self, id: &str, token: &str, lease: Duration) -> Result<LeaseRenewal>;

    /// Record progress of a leased job.
    async fn progress(
        &self,
        id: &str,
        token: &str,
        progress: serde_json::Value,
    ) -> Result<LeaseRenewal>;

    /// Complete a leased job with its result.
    async fn complete(&self, id: &str, token: &str, result: serde_json::Value) -> Result<Job>;

    /// Complete a leased job and take the next ones in the same round trip.
    async fn complete_and_fetch(
        &self,
        id: &str,
        token: &str,
        result: serde_json::Value,
        next: &FetchRequest,
    ) -> Result<(Job, Vec<JobLease>)> {
        let job = self.complete(id, token, result).await?;
        let leases = if next.max > 0 {
            self.fetch_batch(next).await?
        } else {
            Vec::new()
        };
        Ok((job, leases))
    }

    /// Complete several leased jobs and take up to `next.max` new ones, in one round trip
    /// where the backend can; one outcome per completion, in order.
    async fn complete_many(
        &self,
        done: &[Completion],
        next: &FetchRequest,
    ) -> Result<(Vec<Result<()>>, Vec<JobLease>)> {
        let mut outcomes = Vec::with_capacity(done.len());
        for c in done {
            outcomes.push(
                self.complete(&c.id, &c.token, c.result.clone())
                    .await
                    .map(|_| ()),
            );
        }
        let leases = if next.max > 0 {
            self.fetch_batch(next).await?
        } else {
            Vec::new()
        };
        Ok((outcomes, leases))
    }

    /// Fail a leased job: it runs again after its backoff, or fails for good when out of
    /// attempts.
    async fn fail(&self, id: &str, token: &str, error: &str) -> Result<Job>;

    /// Fail a leased job for good, whatever attempts it has left (a worker that knows a
    /// retry cannot help).
    async fn fail_for_good(&self, id: &str, token: &str, error: &str) -> Result<Job>;

    /// Give a leased job back unrun (a worker shutting down): waiting again, the attempt
    /// not counted.
    async fn release(&self, id: &str, token: &str) -> Result<Job>;

    /// Cancel a job: a job that is not running is removed; a running one is flagged and
    /// its worker told at its next renewal.
    async fn cancel(&self, id: &str) -> Result<Job>;

    /// Promote due delayed jobs, recover expired leases and trim finished jobs.
    async fn maintain(&self) -> Result<Maintenance>;
}

/// Listing and administration, for dashboards, operators and the CLI: a capability a
/// queue adds to the [`JobQueue`] operations that producers and workers need.
#[async_trait]
pub trait JobAdmin: JobQueue {
    /// Jobs by state and type, paged (newest finished first, else queue order).
    async fn list(&self, filter: &JobFilter) -> Result<Vec<Job>>;

    /// Counts, throughput and timings.
    async fn stats(&self) -> Result<JobStats>;

    /// Put every failed job back to waiting with fresh attempts; returns how many.
    async fn retry_failed(&self) -> Result<u64>;

    /// Put one failed job back to waiting with fresh attempts, as [`retry_failed`] does
    /// for all of them, so an operator can retry the one job they looked at. A job that
    /// is not failed is a [`Error::Conflict`](crate::Error::Conflict).
    ///
    /// [`retry_failed`]: JobAdmin::retry_failed
    async fn retry(&self, id: &str) -> Result<Job>;
}

/// Cron schedules kept beside the queue, so a tick is recorded and its job enqueued in
/// one step: the capability the [`Scheduler`] needs.
#[cfg(feature = "cron")]
#[async_trait]
pub trait ScheduleStore: JobQueue {
    /// Store a cron schedule (insert or replace; its last fired tick is kept).
    async fn save_schedule(&self, schedule: &Schedule) -> Result<()>;

    /// Every stored schedule, by id.
    async fn schedules(&self) -> Result<Vec<Schedule>>;

    /// Remove a schedule; answers it as it was.
    async fn delete_schedule(&self, id: &str) -> Result<Schedule>;

    /// Fire schedule `id` for `tick`: when the tick is later than the schedule's last
    /// fired one, record it and enqueue `job` with the id `{id}@{tick ms}`, atomically.
    /// Any number of schedulers may call this for the same tick; one enqueues.
    async fn fire_schedule(
        &self,
        id: &str,
        tick: DateTime<Utc>,
        job: NewJob,
    ) -> Result<Option<Job>>;
}

/// A queue with every capability, what the servers run on ([`crate::Backends::jobs`]):
/// both backends are one. A queue of another kind may implement [`JobQueue`] alone and
/// still run a [`WorkerPool`].
#[cfg(feature = "cron")]
pub trait JobStore: JobAdmin + ScheduleStore {}
#[cfg(feature = "cron")]
impl<T: JobAdmin + ScheduleStore + ?Sized> JobStore for T {}

/// A queue with every capability, what the servers run on ([`crate::Backends::jobs`]).
#[cfg(not(feature = "cron"))]
pub trait JobStore: JobAdmin {}
#[cfg(not(feature = "cron"))]
impl<T: JobAdmin + ?Sized> JobStore for T {}

/// A successful run to record: which job, under which lease, with what result.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Job id.
    pub id: String,
    /// Lease token.
    pub token: String,
    /// What the handler returned.
    pub result: serde_json::Value,
}

/// The id a schedule's job for `tick` gets.
#[cfg(feature = "cron")]
pub fn tick_job_id(schedule: &str, tick: DateTime<Utc>) -> String {
    format!("{schedule}@{}", tick.timestamp_millis())
}
