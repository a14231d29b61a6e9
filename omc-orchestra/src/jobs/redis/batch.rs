//! Group commit of enqueues: what queued up while earlier batches were in flight goes
//! in one script call.

use super::Inner;
use crate::jobs::{Job, NewJob};
use crate::Result;
use chrono::{DateTime, Utc};
use redis::Value;
use std::sync::Arc;
use tokio::sync::mpsc;

/// One enqueue waiting for its batch, and where to answer.
pub(super) type PendingEnqueue = crate::backend::Pending<NewJob, Job>;

/// The job a fresh enqueue of `new` as `id` at `now` stored (what `get` reads back).
fn fresh_job(new: &NewJob, id: String, now: DateTime<Utc>) -> Job {
    let run_at =
        DateTime::from_timestamp_millis(new.first_run(now).timestamp_millis()).unwrap_or_default();
    new.clone().into_job(id, now, run_at)
}

/// Send the enqueues that queued up meanwhile in one script call, until the queue handle
/// is dropped.
pub(super) async fn enqueue_in_batches(
    inner: Arc<Inner>,
    pending: mpsc::UnboundedReceiver<PendingEnqueue>,
) {
    crate::backend::group_commit(pending, 256, 2, move |jobs: Vec<NewJob>| {
        let inner = inner.clone();
        async move { inner.enqueue_now(&jobs).await }
    })
    .await;
}

impl Inner {
    /// Enqueue validated jobs in one script call. New jobs are built here from what was
    /// sent; only jobs that already existed come back from Redis.
    async fn enqueue_now(&self, jobs: &[NewJob]) -> Result<Vec<Job>> {
        let now_ms = self.clock.now_ms();
        let now = DateTime::from_timestamp_millis(now_ms).unwrap_or_default();
        let mut args = Vec::with_capacity(1 + jobs.len() * 7);
        args.push(jobs.len().to_string());
        for job in jobs {
            args.push(job.id.clone().unwrap_or_default());
            args.extend(super::spec::job_args(job, now_ms, self.backend_time)?);
        }
        // The batch's key is fixed before the first attempt: a resend after a timeout
        // finds the answer of an attempt that got through, and stores nothing twice.
        let batch = format!("{}{}", self.batch_base, uuid::Uuid::new_v4().simple());
        let reply = self
            .invoke(now_ms, &self.scripts.enqueue, &args, Some(&batch))
            .await?;
        let rows: Vec<Value> = redis::from_redis_value(reply)?;
        rows.into_iter()
            .zip(jobs)
            .map(|(reply, new)| match reply {
                Value::Array(_) => super::spec::job_from(reply),
                id => Ok(fresh_job(new, redis::from_redis_value(id)?, now)),
            })
            .collect()
    }
}
