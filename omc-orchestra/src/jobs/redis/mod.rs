//! The Redis job queue: any number of producers, workers and schedulers share one queue.
//!
//! Keys (the queue name is the hash tag, so every script works on Redis Cluster):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `{prefix}:job:{queue}:wait` | zset | waiting ids, score `priority × 10¹³ + sequence` |
//! | `{prefix}:job:{queue}:wait:{type}` | zset | the waiting ids of one job type, scored as in `wait` |
//! | `{prefix}:job:{queue}:waitidx` | string | how far waiting jobs queued before the type sets are indexed: a `wait` score, or `done` |
//! | `{prefix}:job:{queue}:delayed` | zset | delayed ids by run-at (ms) |
//! | `{prefix}:job:{queue}:active` | zset | leased ids by lease end (ms) |
//! | `{prefix}:job:{queue}:completed` | zset | by finish time; trimmed by count and age |
//! | `{prefix}:job:{queue}:failed` | zset | by finish time; trimmed by count and age |
//! | `{prefix}:job:{queue}:unique` | hash | unique key → id of the pending job holding it |
//! | `{prefix}:job:{queue}:seq` | string | the sequence (FIFO order and default ids) |
//! | `{prefix}:job:{queue}:sched` | hash | schedule id → schedule JSON |
//! | `{prefix}:job:{queue}:schedlast` | hash | schedule id → last fired tick (ms) |
//! | `{prefix}:job:{queue}:j:{id}` | hash | one job (fields in `spec.rs`); deleted when trimmed or cancelled |
//! | `{prefix}:job:{queue}:m:{minute}` | hash | per-minute figures; expire after an hour |
//! | `{prefix}:job:{queue}:sent:{batch}` | string | an enqueue batch's answer, so a resend stores nothing twice; expires after a minute |
//!
//! A typed fetch reads the first entries of its types' sets, so jobs of other types waiting
//! ahead cost it nothing. Scripts name a type set `WAIT .. ':' .. type` (and the cursor
//! `WAIT .. 'idx'`): built from a declared key, so under the same hash tag. Each type set
//! holds only waiting jobs, so it is bounded as `wait` is. Jobs left waiting by a version
//! without type sets are indexed by `maintain`, 500 per call; until that is through, a
//! typed fetch also scans the first 1,000 of `wait` as that version did. Such a version
//! still running queues into `wait` only, so once the last of it has stopped, deleting
//! `waitidx` has `maintain` index everything again.
//!
//! Every transition is one Lua script. Leases, delays and expiry are decided on Redis's
//! clock (`TIME` inside the script), so a worker whose host clock runs fast or slow
//! requeues or runs nothing early; the times a caller gets back are moved onto its own
//! clock. A clock a test drives (`ManualClock`, see `Clock::defers_to_backend`) is sent
//! along instead, so it drives Redis exactly as it drives memory.
//!
//! A job whose stored hash cannot be read (written by hand, or by another version) is
//! failed alone when a fetch comes to it, with `cannot read the stored job: …` as its
//! error; the rest of the batch is delivered.

mod batch;
mod parse;
mod scripts;
mod spec;

use super::{
    tick_job_id, Completion, FetchRequest, Job, JobAdmin, JobFilter, JobLease, JobQueue, JobState,
    JobStats, LeaseRenewal, Maintenance, NewJob, QueueOptions, Schedule, ScheduleStore,
    FAILED_ATTEMPTS_KEPT,
};
use crate::backend::RedisStore;
use crate::clock::SharedClock;
use crate::{Error, Result};
use async_trait::async_trait;
use batch::{enqueue_in_batches, PendingEnqueue};
use chrono::{DateTime, Utc};
use parse::{stats_from, status_of};
use redis::{Script, Value};
use scripts::Scripts;
use spec::{job_from, leases_from, Taken, Taking};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A job queue kept in Redis.
///
/// Concurrent enqueues through one handle are sent together: whatever queued up while
/// the previous batch was in flight goes in one script call (group commit).
pub struct RedisJobQueue {
    inner: Arc<Inner>,
    batcher: OnceLock<mpsc::UnboundedSender<PendingEnqueue>>,
}

/// What every call needs: the store, the keys, the scripts, the clock.
struct Inner {
    store: RedisStore,
    keys: [String; 9],
    job_base: String,
    /// Where an enqueue batch keeps its answer: this and the batch's own key.
    batch_base: String,
    metrics_base: String,
    scripts: Scripts,
    clock: SharedClock,
    /// Whether scripts read Redis's clock rather than `clock` (see the module docs).
    backend_time: bool,
    options: QueueOptions,
}

impl std::fmt::Debug for RedisJobQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisJobQueue")
            .field("wait", &self.inner.keys[0])
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("wait", &self.keys[0])
            .finish_non_exhaustive()
    }
}

fn ms(d: Duration) -> String {
    d.as_millis().min(i64::MAX as u128).to_string()
}

impl RedisJobQueue {
    /// The queue `queue` (e.g. `default`) in `store`.
    pub fn new(
        store: RedisStore,
        queue: &str,
        clock: SharedClock,
        options: QueueOptions,
    ) -> Result<Self> {
        if queue.is_empty() || queue.contains(['{', '}', ':']) {
            return Err(Error::invalid(
                "queue",
                "must be non-empty without braces or colons",
            ));
        }
        let keys = [
            "wait",
            "delayed",
            "active",
            "completed",
            "failed",
            "unique",
            "seq",
            "sched",
            "schedlast",
        ]
        .map(|name| store.key("job", queue, name));
        let inner = Inner {
            job_base: store.key("job", queue, "j:"),
            batch_base: store.key("job", queue, "sent:"),
            metrics_base: store.key("job", queue, "m:"),
            store,
            keys,
            scripts: Scripts::new(),
            backend_time: clock.defers_to_backend(),
            clock,
            options,
        };
        Ok(Self {
            inner: Arc::new(inner),
            batcher: OnceLock::new(),
        })
    }
}

impl Inner {
    async fn run(&self, script: &Script, args: &[String]) -> Result<Value> {
        self.run_at(self.clock.now_ms(), script, args).await
    }

    /// Run `script` as of `now_ms`, again after a timeout or a dropped connection: for
    /// scripts that do nothing twice when run twice.
    async fn run_at(&self, now_ms: i64, script: &Script, args: &[String]) -> Result<Value> {
        self.invoke(now_ms, script, args, None).await
    }

    /// Run `script` as of `now_ms`, again after a timeout or a dropped connection. A
    /// script that would do its work twice if run twice (an enqueue numbers new jobs
    /// itself) gets `batch`, a key fixed before the first attempt, as `KEYS[10]`: it keeps
    /// its answer there, and a resend finds it.
    async fn invoke(
        &self,
        now_ms: i64,
        script: &Script,
        args: &[String],
        batch: Option<&str>,
    ) -> Result<Value> {
        let now = if self.backend_time {
            String::new()
        } else {
            now_ms.to_string()
        };
        let lead = [
            now,
            self.job_base.clone(),
            self.metrics_base.clone(),
            self.options.keep_completed.to_string(),
            ms(self.options.completed_max_age),
            self.options.keep_failed.to_string(),
            ms(self.options.failed_max_age),
        ];
        if let Some(batch) = batch {
            // A write batch: acknowledged at the store's durability level.
            let keys: Vec<&str> = self
                .keys
                .iter()
                .map(String::as_str)
                .chain([batch])
                .collect();
            let args: Vec<String> = lead.into_iter().chain(args.iter().cloned()).collect();
            return self.store.eval_batch(script, &keys, &args).await;
        }
        self.store
            .retry(|mut conn| {
                let mut invocation = script.prepare_invoke();
                for key in &self.keys {
                    invocation.key(key);
                }
                for arg in lead.iter().chain(args) {
                    invocation.arg(arg);
                }
                async move { invocation.invoke_async::<Value>(&mut conn).await }
            })
            .await
    }

    /// The fetch arguments of `request` (appended to `args`), and what reading the
    /// leases back needs.
    fn fetch_args(&self, request: &FetchRequest, args: &mut Vec<String>) -> Taking {
        let taking = Taking {
            now_ms: self.clock.now_ms(),
            worker: request.worker.clone(),
            token_base: format!("{}:", uuid::Uuid::new_v4().simple()),
            lease_ms: request.lease.as_millis().min(i64::MAX as u128) as i64,
        };
        args.extend([
            request.max.to_string(),
            request.worker.clone(),
            taking.token_base.clone(),
            taking.lease_ms.to_string(),
        ]);
        args.extend(request.types.iter().cloned());
        taking
    }

    /// The leases of a fetch's answer. A job taken but unreadable is failed alone, for
    /// good and with why, so the rest of the batch goes out and nothing waits for its
    /// lease to run out.
    async fn deliver(&self, taken: Taken, taking: &Taking) -> Vec<JobLease> {
        for (id, why) in taken.unreadable {
            let error = format!("cannot read the stored job: {why}");
            tracing::warn!(job = %id, %error, "failing an unreadable job");
            let token = format!("{}{id}", taking.token_base);
            let args = vec![
                id.clone(),
                token,
                error,
                "0".into(),
                "1".into(),
                FAILED_ATTEMPTS_KEPT.to_string(),
            ];
            if let Err(err) = self.held_op(&self.scripts.fail, &id, args).await {
                tracing::warn!(job = %id, error = %err, "could not fail an unreadable job");
            }
        }
        taken.leases
    }

    /// Extend a lease or record progress; the lease end comes back on this clock.
    async fn renew(&self, id: &str, args: Vec<String>) -> Result<LeaseRenewal> {
        let parts = self.held_op(&self.scripts.extend, id, args).await?;
        parse::renewal_from(parts, self.clock.now_ms())
    }

    /// Fail a leased job: after its backoff, or for good when out of attempts or
    /// `for_good`.
    async fn fail(&self, id: &str, token: &str, error: &str, for_good: bool) -> Result<Job> {
        let random: f64 = rand::random();
        let args = vec![
            id.into(),
            token.into(),
            error.into(),
            random.to_string(),
            if for_good { "1" } else { "" }.into(),
            FAILED_ATTEMPTS_KEPT.to_string(),
        ];
        parse::first_job(self.held_op(&self.scripts.fail, id, args).await?)
    }

    async fn held_op(&self, script: &Script, id: &str, args: Vec<String>) -> Result<Vec<Value>> {
        let reply = self.run(script, &args).await?;
        status_of(reply, id)
    }
}

#[async_trait]
impl JobQueue for RedisJobQueue {
    async fn enqueue(&self, new: NewJob) -> Result<Job> {
        new.validate()?;
        // Before the batcher's task takes it: the trace is this task's.
        let new = new.in_current_trace();
        let sender = self.batcher.get_or_init(|| {
            let (sender, pending) = mpsc::unbounded_channel();
            tokio::spawn(enqueue_in_batches(self.inner.clone(), pending));
            sender
        });
        let (reply, answer) = oneshot::channel();
        sender
            .send((new, reply))
            .map_err(|_| Error::Backend("the enqueue batcher stopped".into()))?;
        match answer.await {
            Ok(Ok(job)) => Ok(job),
            Ok(Err(message)) => Err(Error::Backend(message.into())),
            Err(_) => Err(Error::Backend("the enqueue batcher stopped".into())),
        }
    }

    async fn get(&self, id: &str) -> Result<Job> {
        let key = format!("{}{id}", self.inner.job_base);
        let fields: HashMap<String, String> = self
            .inner
            .store
            .retry(|mut conn| {
                let mut cmd = redis::cmd("HGETALL");
                cmd.arg(&key);
                async move { cmd.query_async(&mut conn).await }
            })
            .await?;
        if fields.is_empty() {
            return Err(Error::not_found("job", id));
        }
        spec::job_from_map(fields)
    }

    async fn fetch_batch(&self, request: &FetchRequest) -> Result<Vec<JobLease>> {
        let mut args = Vec::with_capacity(4 + request.types.len());
        let taking = self.inner.fetch_args(request, &mut args);
        let reply = self
            .inner
            .run_at(taking.now_ms, &self.inner.scripts.fetch, &args)
            .await?;
        let taken = leases_from(reply, &taking)?;
        Ok(self.inner.deliver(taken, &taking).await)
    }

    async fn extend(&self, id: &str, token: &str, lease: Duration) -> Result<LeaseRenewal> {
        let args = vec![id.into(), token.into(), ms(lease), String::new()];
        self.inner.renew(id, args).await
    }

    async fn progress(
        &self,
        id: &str,
        token: &str,
        progress: serde_json::Value,
    ) -> Result<LeaseRenewal> {
        let args = vec![
            id.into(),
            token.into(),
            String::new(),
            serde_json::to_string(&progress)?,
        ];
        self.inner.renew(id, args).await
    }

    async fn complete(&self, id: &str, token: &str, result: serde_json::Value) -> Result<Job> {
        let none = FetchRequest::new("", Duration::ZERO, 0);
        Ok(self.complete_and_fetch(id, token, result, &none).await?.0)
    }

    async fn complete_and_fetch(
        &self,
        id: &str,
        token: &str,
        result: serde_json::Value,
        next: &FetchRequest,
    ) -> Result<(Job, Vec<JobLease>)> {
        let mut args = vec![id.into(), token.into(), serde_json::to_string(&result)?];
        let taking = self.inner.fetch_args(next, &mut args);
        let reply = self
            .inner
            .run_at(taking.now_ms, &self.inner.scripts.complete, &args)
            .await?;
        let mut parts = status_of(reply, id)?.into_iter();
        let job = job_from(parts.next().unwrap_or(Value::Nil))?;
        let taken = leases_from(parts.next().unwrap_or(Value::Nil), &taking)?;
        Ok((job, self.inner.deliver(taken, &taking).await))
    }

    async fn complete_many(
        &self,
        done: &[Completion],
        next: &FetchRequest,
    ) -> Result<(Vec<Result<()>>, Vec<JobLease>)> {
        let mut args = Vec::with_capacity(1 + done.len() * 3 + 4 + next.types.len());
        args.push(done.len().to_string());
        for c in done {
            args.extend([
                c.id.clone(),
                c.token.clone(),
                serde_json::to_string(&c.result)?,
            ]);
        }
        let taking = self.inner.fetch_args(next, &mut args);
        let (statuses, leases): (String, Value) = redis::from_redis_value(
            self.inner
                .run_at(taking.now_ms, &self.inner.scripts.complete_many, &args)
                .await?,
        )?;
        let statuses: Vec<&str> = statuses.split(' ').filter(|s| !s.is_empty()).collect();
        if statuses.len() != done.len() {
            return Err(Error::Backend(
                format!("{} outcomes for {} completions", statuses.len(), done.len()).into(),
            ));
        }
        let outcomes = statuses
            .iter()
            .zip(done)
            .map(|(status, c)| parse::outcome(status, &c.id))
            .collect();
        let taken = leases_from(leases, &taking)?;
        Ok((outcomes, self.inner.deliver(taken, &taking).await))
    }

    async fn fail(&self, id: &str, token: &str, error: &str) -> Result<Job> {
        self.inner.fail(id, token, error, false).await
    }

    async fn fail_for_good(&self, id: &str, token: &str, error: &str) -> Result<Job> {
        self.inner.fail(id, token, error, true).await
    }

    async fn release(&self, id: &str, token: &str) -> Result<Job> {
        let args = vec![id.into(), token.into()];
        parse::first_job(
            self.inner
                .held_op(&self.inner.scripts.release, id, args)
                .await?,
        )
    }

    async fn cancel(&self, id: &str) -> Result<Job> {
        let mut job = parse::first_job(
            self.inner
                .held_op(&self.inner.scripts.cancel, id, vec![id.into()])
                .await?,
        )?;
        if job.state != JobState::Active {
            job.state = JobState::Cancelled;
        }
        Ok(job)
    }

    async fn maintain(&self) -> Result<Maintenance> {
        let (promoted, stalled, trimmed): (u64, Vec<String>, u64) =
            redis::from_redis_value(self.inner.run(&self.inner.scripts.maintain, &[]).await?)?;
        Ok(Maintenance {
            promoted,
            stalled,
            trimmed,
        })
    }
}

#[async_trait]
impl JobAdmin for RedisJobQueue {
    async fn list(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        let args = vec![
            filter.state.map(|s| s.as_str()).unwrap_or("").to_owned(),
            filter.job_type.clone().unwrap_or_default(),
            filter.offset.to_string(),
            filter.page_size().to_string(),
        ];
        let rows: Vec<Value> =
            redis::from_redis_value(self.inner.run(&self.inner.scripts.list, &args).await?)?;
        rows.into_iter().map(job_from).collect()
    }

    async fn stats(&self) -> Result<JobStats> {
        let reply = self.inner.run(&self.inner.scripts.stats, &[]).await?;
        stats_from(reply)
    }

    async fn retry_failed(&self) -> Result<u64> {
        let mut total = 0;
        loop {
            let n: u64 = redis::from_redis_value(
                self.inner
                    .run(&self.inner.scripts.retry_failed, &[])
                    .await?,
            )?;
            total += n;
            if n < 1000 {
                return Ok(total);
            }
        }
    }

    async fn retry(&self, id: &str) -> Result<Job> {
        parse::first_job(
            self.inner
                .held_op(&self.inner.scripts.retry, id, vec![id.into()])
                .await?,
        )
        .map_err(|err| match err {
            Error::Conflict(_) => Error::Conflict(format!("job `{id}` is not failed")),
            other => other,
        })
    }
}

#[async_trait]
impl ScheduleStore for RedisJobQueue {
    async fn save_schedule(&self, schedule: &Schedule) -> Result<()> {
        let stored = schedule.to_stored()?;
        let json = serde_json::to_string(&stored)?;
        self.inner
            .store
            .retry(|mut conn| {
                let mut cmd = redis::cmd("HSET");
                cmd.arg(&self.inner.keys[7]).arg(&schedule.id).arg(&json);
                async move { cmd.query_async::<()>(&mut conn).await }
            })
            .await
    }

    async fn schedules(&self) -> Result<Vec<Schedule>> {
        let (all, last): (HashMap<String, String>, HashMap<String, i64>) = self
            .inner
            .store
            .retry(|mut conn| {
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .hgetall(&self.inner.keys[7])
                    .hgetall(&self.inner.keys[8]);
                async move { pipe.query_async(&mut conn).await }
            })
            .await?;
        let mut schedules = Vec::with_capacity(all.len());
        for (id, json) in all {
            let mut schedule: Schedule = serde_json::from_str(&json)?;
            schedule.last_fired_at = last
                .get(&id)
                .and_then(|t| DateTime::from_timestamp_millis(*t));
            schedules.push(schedule);
        }
        schedules.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(schedules)
    }

    async fn delete_schedule(&self, id: &str) -> Result<Schedule> {
        let (json, last, _, _): (Option<String>, Option<i64>, u64, u64) = self
            .inner
            .store
            .retry(|mut conn| {
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .hget(&self.inner.keys[7], id)
                    .hget(&self.inner.keys[8], id)
                    .hdel(&self.inner.keys[7], id)
                    .hdel(&self.inner.keys[8], id);
                async move { pipe.query_async(&mut conn).await }
            })
            .await?;
        let json = json.ok_or_else(|| Error::not_found("schedule", id))?;
        let mut schedule: Schedule = serde_json::from_str(&json)?;
        schedule.last_fired_at = last.and_then(DateTime::from_timestamp_millis);
        Ok(schedule)
    }

    async fn fire_schedule(
        &self,
        id: &str,
        tick: DateTime<Utc>,
        job: NewJob,
    ) -> Result<Option<Job>> {
        job.validate()?;
        let mut args = vec![
            id.to_owned(),
            tick.timestamp_millis().to_string(),
            tick_job_id(id, tick),
        ];
        let now_ms = self.inner.clock.now_ms();
        args.extend(spec::job_args(&job, now_ms, self.inner.backend_time)?);
        let reply: Vec<Value> = redis::from_redis_value(
            self.inner
                .run_at(now_ms, &self.inner.scripts.fire, &args)
                .await?,
        )?;
        let mut parts = reply.into_iter();
        let status: String = redis::from_redis_value(parts.next().unwrap_or(Value::Nil))?;
        match status.as_str() {
            "ok" => Ok(Some(job_from(parts.next().unwrap_or(Value::Nil))?)),
            "skip" => Ok(None),
            _ => Err(Error::not_found("schedule", id)),
        }
    }
}
