//! The in-memory job queue.

mod state;

use super::stats::{fill_windows, Bucket};
#[cfg(feature = "cron")]
use super::{tick_job_id, Schedule, ScheduleStore};
use super::{
    FailedAttempt, FetchRequest, Job, JobAdmin, JobFilter, JobLease, JobQueue, JobState, JobStats,
    LeaseRenewal, Maintenance, NewJob, QueueOptions,
};
use crate::clock::SharedClock;
use crate::{Error, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use state::{lease_end, ms, Entry, State};
use std::time::Duration;

/// A job queue inside one process.
pub struct MemoryJobQueue {
    state: Mutex<State>,
    clock: SharedClock,
    options: QueueOptions,
}

impl std::fmt::Debug for MemoryJobQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryJobQueue").finish_non_exhaustive()
    }
}

impl MemoryJobQueue {
    /// An empty queue with default trimming.
    pub fn new(clock: SharedClock) -> Self {
        Self::with_options(clock, QueueOptions::default())
    }

    /// An empty queue trimming as `options` say.
    pub fn with_options(clock: SharedClock, options: QueueOptions) -> Self {
        Self {
            state: Mutex::new(State::default()),
            clock,
            options,
        }
    }

    fn take(state: &mut State, request: &FetchRequest, now: DateTime<Utc>) -> Vec<JobLease> {
        let mut taken = Vec::new();
        let candidates = state.first_ready(&request.types, request.max);
        let expires_at = lease_end(now, request.lease);
        for key in candidates {
            let job_type = state.jobs.get(&key.2).map(|e| e.job.job_type.clone());
            state.remove_ready(&key, job_type.as_deref().unwrap_or_default());
            let id = key.2;
            let token = format!("{}:{}", request.worker, uuid::Uuid::new_v4().simple());
            let Some(e) = state.jobs.get_mut(&id) else {
                continue;
            };
            e.job.state = JobState::Active;
            e.job.attempts += 1;
            e.job.started_at = Some(now);
            e.job.worker = Some(request.worker.clone());
            e.token = Some(token.clone());
            e.lease_until = ms(expires_at);
            let wait = (ms(now) - ms(e.job.run_at)).max(0) as u64;
            let job = e.job.clone();
            state.active.insert((ms(expires_at), id));
            let bucket = state.bucket(now);
            bucket.started += 1;
            bucket.wait_ms += wait;
            taken.push(JobLease {
                job,
                token,
                expires_at,
            });
        }
        taken
    }

    fn renew(&self, id: &str, token: &str, lease: Option<Duration>) -> Result<(Job, i64)> {
        let now = self.clock.now();
        let mut state = self.state.lock();
        let e = state.held(id, token)?;
        let old = e.lease_until;
        if let Some(lease) = lease {
            e.lease_until = ms(lease_end(now, lease));
        }
        let (job, until) = (e.job.clone(), e.lease_until);
        state.active.remove(&(old, id.to_owned()));
        state.active.insert((until, id.to_owned()));
        Ok((job, until))
    }
}

fn renewal(job: &Job, until: i64) -> LeaseRenewal {
    LeaseRenewal {
        expires_at: DateTime::from_timestamp_millis(until).unwrap_or_default(),
        cancel_requested: job.cancel_requested,
    }
}

#[async_trait]
impl JobQueue for MemoryJobQueue {
    async fn enqueue(&self, new: NewJob) -> Result<Job> {
        new.validate()?;
        let new = new.in_current_trace();
        let id = new.id.clone();
        Ok(self.state.lock().insert(new, id, self.clock.now()))
    }

    async fn get(&self, id: &str) -> Result<Job> {
        self.state
            .lock()
            .jobs
            .get(id)
            .map(|e| e.job.clone())
            .ok_or_else(|| Error::not_found("job", id))
    }

    async fn fetch_batch(&self, request: &FetchRequest) -> Result<Vec<JobLease>> {
        let now = self.clock.now();
        let mut state = self.state.lock();
        state.promote(now, &mut Maintenance::default());
        Ok(Self::take(&mut state, request, now))
    }

    async fn extend(&self, id: &str, token: &str, lease: Duration) -> Result<LeaseRenewal> {
        let (job, until) = self.renew(id, token, Some(lease))?;
        Ok(renewal(&job, until))
    }

    async fn progress(
        &self,
        id: &str,
        token: &str,
        progress: serde_json::Value,
    ) -> Result<LeaseRenewal> {
        let mut state = self.state.lock();
        let e = state.held(id, token)?;
        e.job.progress = Some(progress);
        Ok(renewal(&e.job, e.lease_until))
    }

    async fn complete(&self, id: &str, token: &str, result: serde_json::Value) -> Result<Job> {
        let now = self.clock.now();
        let mut state = self.state.lock();
        let e = state.held(id, token)?;
        e.job.result = Some(result);
        let run = (ms(now) - e.job.started_at.map(ms).unwrap_or(ms(now))).max(0) as u64;
        state.release_lease(id)?;
        state.finish(id, JobState::Completed, now);
        let bucket = state.bucket(now);
        bucket.completed += 1;
        bucket.run_ms += run;
        let job = state.jobs.get(id).map(|e| e.job.clone());
        state.trim(now, &self.options);
        job.ok_or_else(|| Error::not_found("job", id))
    }

    async fn fail(&self, id: &str, token: &str, error: &str) -> Result<Job> {
        self.fail_with(id, token, error, false)
    }

    async fn fail_for_good(&self, id: &str, token: &str, error: &str) -> Result<Job> {
        self.fail_with(id, token, error, true)
    }

    async fn release(&self, id: &str, token: &str) -> Result<Job> {
        let mut state = self.state.lock();
        let e = state.held(id, token)?;
        e.token = None;
        e.job.attempts = e.job.attempts.saturating_sub(1);
        state.release_lease(id)?;
        state.make_ready(id);
        self.state_job(&state, id)
    }

    async fn cancel(&self, id: &str) -> Result<Job> {
        let mut state = self.state.lock();
        match state.jobs.get_mut(id) {
            None => Err(Error::not_found("job", id)),
            Some(e) if e.job.state == JobState::Active => {
                e.job.cancel_requested = true;
                Ok(e.job.clone())
            }
            Some(_) => {
                let mut job = state
                    .remove(id)
                    .ok_or_else(|| Error::not_found("job", id))?;
                job.state = JobState::Cancelled;
                Ok(job)
            }
        }
    }

    async fn maintain(&self) -> Result<Maintenance> {
        let now = self.clock.now();
        let mut state = self.state.lock();
        let mut result = Maintenance::default();
        state.promote(now, &mut result);
        result.trimmed = state.trim(now, &self.options);
        Ok(result)
    }
}

#[async_trait]
impl JobAdmin for MemoryJobQueue {
    async fn list(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        let state = self.state.lock();
        let mut ids: Vec<&String> = Vec::new();
        let all = filter.state.is_none();
        let wants = |s: JobState| all || filter.state == Some(s);
        if wants(JobState::Waiting) {
            ids.extend(state.ready.iter().map(|k| &k.2));
        }
        if wants(JobState::Delayed) {
            ids.extend(state.delayed.iter().map(|k| &k.2));
        }
        if wants(JobState::Active) {
            let mut active: Vec<&Entry> = state
                .active
                .iter()
                .filter_map(|k| state.jobs.get(&k.1))
                .collect();
            active.sort_by_key(|e| e.seq);
            ids.extend(active.into_iter().map(|e| &e.job.id));
        }
        if wants(JobState::Completed) {
            ids.extend(state.completed.iter().rev().map(|k| &k.2));
        }
        if wants(JobState::Failed) {
            ids.extend(state.failed.iter().rev().map(|k| &k.2));
        }
        Ok(ids
            .into_iter()
            .filter_map(|id| state.jobs.get(id))
            .filter(|e| filter.matches(&e.job))
            .skip(filter.offset)
            .take(filter.page_size())
            .map(|e| e.job.clone())
            .collect())
    }

    async fn stats(&self) -> Result<JobStats> {
        let now = self.clock.now();
        let state = self.state.lock();
        let mut stats = JobStats {
            waiting: state.ready.len() as u64,
            delayed: state.delayed.len() as u64,
            active: state.active.len() as u64,
            completed: state.completed.len() as u64,
            failed: state.failed.len() as u64,
            ..JobStats::default()
        };
        for (rank, _, _) in &state.ready {
            stats.waiting_by_priority.bump(*rank, 1);
        }
        let buckets: Vec<(i64, Bucket)> = state.buckets.iter().map(|(m, b)| (*m, *b)).collect();
        fill_windows(&mut stats, &buckets, ms(now));
        Ok(stats)
    }

    async fn retry_failed(&self) -> Result<u64> {
        let mut state = self.state.lock();
        let failed = std::mem::take(&mut state.failed);
        for (_, _, id) in &failed {
            if let Some(e) = state.jobs.get_mut(id) {
                e.job.attempts = 0;
                e.job.finished_at = None;
            }
            state.make_ready(id);
        }
        Ok(failed.len() as u64)
    }

    async fn retry(&self, id: &str) -> Result<Job> {
        let mut state = self.state.lock();
        let (seq, finished) = match state.jobs.get(id) {
            None => return Err(Error::not_found("job", id)),
            Some(e) if e.job.state != JobState::Failed => {
                return Err(Error::Conflict(format!(
                    "job `{id}` is {}, not failed",
                    e.job.state.as_str()
                )))
            }
            Some(e) => (e.seq, e.job.finished_at),
        };
        if let Some(finished) = finished {
            state.failed.remove(&(ms(finished), seq, id.to_owned()));
        }
        if let Some(e) = state.jobs.get_mut(id) {
            e.job.attempts = 0;
            e.job.finished_at = None;
        }
        state.make_ready(id);
        state
            .jobs
            .get(id)
            .map(|e| e.job.clone())
            .ok_or_else(|| Error::not_found("job", id))
    }
}

#[cfg(feature = "cron")]
#[async_trait]
impl ScheduleStore for MemoryJobQueue {
    async fn save_schedule(&self, schedule: &Schedule) -> Result<()> {
        let stored = schedule.to_stored()?;
        self.state
            .lock()
            .schedules
            .insert(schedule.id.clone(), stored);
        Ok(())
    }

    async fn schedules(&self) -> Result<Vec<Schedule>> {
        let state = self.state.lock();
        Ok(state
            .schedules
            .values()
            .map(|s| Schedule {
                last_fired_at: state.last_fired.get(&s.id).copied(),
                ..s.clone()
            })
            .collect())
    }

    async fn delete_schedule(&self, id: &str) -> Result<Schedule> {
        let mut state = self.state.lock();
        let mut schedule = state
            .schedules
            .remove(id)
            .ok_or_else(|| Error::not_found("schedule", id))?;
        schedule.last_fired_at = state.last_fired.remove(id);
        Ok(schedule)
    }

    async fn fire_schedule(
        &self,
        id: &str,
        tick: DateTime<Utc>,
        job: NewJob,
    ) -> Result<Option<Job>> {
        job.validate()?;
        let now = self.clock.now();
        let mut state = self.state.lock();
        if !state.schedules.contains_key(id) {
            return Err(Error::not_found("schedule", id));
        }
        if state.last_fired.get(id).is_some_and(|last| *last >= tick) {
            return Ok(None);
        }
        state.last_fired.insert(id.to_owned(), tick);
        Ok(Some(state.insert(job, Some(tick_job_id(id, tick)), now)))
    }
}

impl MemoryJobQueue {
    fn state_job(&self, state: &State, id: &str) -> Result<Job> {
        state
            .jobs
            .get(id)
            .map(|e| e.job.clone())
            .ok_or_else(|| Error::not_found("job", id))
    }

    /// Fail a leased job: after its backoff, or for good when out of attempts or `for_good`.
    fn fail_with(&self, id: &str, token: &str, error: &str, for_good: bool) -> Result<Job> {
        let now = self.clock.now();

        let random: f64 = rand::random();
        let mut state = self.state.lock();
        let e = state.held(id, token)?;
        e.job.error = Some(error.to_owned());
        let failed = FailedAttempt {
            attempt: e.job.attempts,
            error: error.to_owned(),
            failed_at: now,
            worker: e.job.worker.clone(),
        };
        FailedAttempt::record(&mut e.job.failed_attempts, failed);
        let run = (ms(now) - e.job.started_at.map(ms).unwrap_or(ms(now))).max(0) as u64;
        let out_of_attempts = for_good || e.job.attempts >= e.job.max_attempts;
        let delay = e.job.backoff.delay_ms(e.job.attempts, random);
        state.release_lease(id)?;
        let bucket = state.bucket(now);
        bucket.failed += 1;
        bucket.run_ms += run;
        if out_of_attempts {
            state.finish(id, JobState::Failed, now);
            let job = state.jobs.get(id).map(|e| e.job.clone());
            state.trim(now, &self.options);
            return job.ok_or_else(|| Error::not_found("job", id));
        }
        let e = state
            .jobs
            .get_mut(id)
            .ok_or_else(|| Error::not_found("job", id))?;
        e.token = None;
        e.job.state = JobState::Delayed;
        e.job.run_at = now + chrono::Duration::milliseconds(delay as i64);
        let (job, seq) = (e.job.clone(), e.seq);
        state.delayed.insert((ms(job.run_at), seq, id.to_owned()));
        Ok(job)
    }
}
