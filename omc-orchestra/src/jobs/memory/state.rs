//! The in-memory queue's state: every set a job can be in, and the moves between them.

use crate::jobs::stats::{Bucket, BUCKET_MINUTES};
#[cfg(feature = "cron")]
use crate::jobs::Schedule;
use crate::jobs::{Job, JobState, Maintenance, NewJob, QueueOptions};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

type Finished = BTreeSet<(i64, u64, String)>;

/// A waiting job's place: (priority rank, sequence, id), so sets pop in priority, then
/// FIFO, order.
pub(super) type ReadyKey = (u8, u64, String);

pub(super) struct Entry {
    pub(super) job: Job,
    pub(super) seq: u64,
    pub(super) token: Option<String>,
    pub(super) lease_until: i64,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) sequence: u64,
    pub(super) jobs: HashMap<String, Entry>,
    /// Every waiting job. Changed only through `add_ready` and `remove_ready`, which keep
    /// `ready_by_type` in step.
    pub(super) ready: BTreeSet<ReadyKey>,
    /// The waiting jobs of each type, so a typed fetch skips what waits of other types.
    pub(super) ready_by_type: HashMap<String, BTreeSet<ReadyKey>>,
    /// (run at ms, sequence, id).
    pub(super) delayed: BTreeSet<(i64, u64, String)>,
    /// (lease end ms, id).
    pub(super) active: BTreeSet<(i64, String)>,
    /// (finished ms, sequence, id).
    pub(super) completed: Finished,
    pub(super) failed: Finished,
    pub(super) unique: HashMap<String, String>,
    #[cfg(feature = "cron")]
    pub(super) schedules: BTreeMap<String, Schedule>,
    #[cfg(feature = "cron")]
    pub(super) last_fired: HashMap<String, DateTime<Utc>>,
    pub(super) buckets: BTreeMap<i64, Bucket>,
}

pub(super) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(super) fn lease_end(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::days(365))
}

impl State {
    pub(super) fn bucket(&mut self, now: DateTime<Utc>) -> &mut Bucket {
        let minute = ms(now).div_euclid(60_000);
        self.buckets
            .retain(|m, _| *m > minute - BUCKET_MINUTES && *m <= minute);
        self.buckets.entry(minute).or_default()
    }

    pub(super) fn make_ready(&mut self, id: &str) {
        if let Some(e) = self.jobs.get_mut(id) {
            e.job.state = JobState::Waiting;
            let key = (e.job.priority.rank(), e.seq, id.to_owned());
            let job_type = e.job.job_type.clone();
            self.add_ready(key, job_type);
        }
    }

    fn add_ready(&mut self, key: ReadyKey, job_type: String) {
        self.ready.insert(key.clone());
        self.ready_by_type.entry(job_type).or_default().insert(key);
    }

    pub(super) fn remove_ready(&mut self, key: &ReadyKey, job_type: &str) {
        self.ready.remove(key);
        if let Some(set) = self.ready_by_type.get_mut(job_type) {
            set.remove(key);
            if set.is_empty() {
                self.ready_by_type.remove(job_type);
            }
        }
    }

    /// The first `max` waiting jobs (of `types`, unless empty) in queue order.
    pub(super) fn first_ready(&self, types: &[String], max: usize) -> Vec<ReadyKey> {
        if types.is_empty() {
            return self.ready.iter().take(max).cloned().collect();
        }
        let mut found: BTreeSet<&ReadyKey> = BTreeSet::new();
        for set in types.iter().filter_map(|t| self.ready_by_type.get(t)) {
            found.extend(set.iter().take(max));
        }
        found.into_iter().take(max).cloned().collect()
    }

    pub(super) fn promote(&mut self, now: DateTime<Utc>, result: &mut Maintenance) {
        while let Some(first) = self.delayed.first().cloned() {
            if first.0 > ms(now) {
                break;
            }
            self.delayed.remove(&first);
            self.make_ready(&first.2);
            result.promoted += 1;
        }
        while let Some(first) = self.active.first().cloned() {
            if first.0 > ms(now) {
                break;
            }
            self.active.remove(&first);
            let id = first.1;
            let Some(e) = self.jobs.get_mut(&id) else {
                continue;
            };
            e.token = None;
            result.stalled.push(id.clone());
            if e.job.attempts >= e.job.max_attempts {
                e.job.error = Some("lease expired: the worker stalled or died".into());
                self.finish(&id, JobState::Failed, now);
            } else {
                self.make_ready(&id);
            }
        }
    }

    /// Move a job to completed or failed, and trim that set.
    pub(super) fn finish(&mut self, id: &str, state: JobState, now: DateTime<Utc>) {
        let Some(e) = self.jobs.get_mut(id) else {
            return;
        };
        e.job.state = state;
        e.job.finished_at = Some(now);
        e.token = None;
        let seq = e.seq;
        if let Some(key) = &e.job.unique_key {
            if self.unique.get(key).is_some_and(|held| held == id) {
                self.unique.remove(key);
            }
        }
        let entry = (ms(now), seq, id.to_owned());
        if state == JobState::Completed {
            self.completed.insert(entry);
        } else {
            self.failed.insert(entry);
        }
    }

    pub(super) fn trim(&mut self, now: DateTime<Utc>, options: &QueueOptions) -> u64 {
        let mut gone = Vec::new();
        for (set, keep, age) in [
            (
                &mut self.completed,
                options.keep_completed,
                options.completed_max_age,
            ),
            (
                &mut self.failed,
                options.keep_failed,
                options.failed_max_age,
            ),
        ] {
            let oldest = ms(now) - age.as_millis() as i64;
            while let Some(first) = set.first().cloned() {
                if set.len() <= keep && first.0 >= oldest {
                    break;
                }
                set.remove(&first);
                gone.push(first.2);
            }
        }
        for id in &gone {
            self.jobs.remove(id);
        }
        gone.len() as u64
    }

    pub(super) fn held(&mut self, id: &str, token: &str) -> Result<&mut Entry> {
        match self.jobs.get_mut(id) {
            Some(e) if e.job.state == JobState::Active && e.token.as_deref() == Some(token) => {
                Ok(e)
            }
            Some(_) => Err(Error::Conflict(format!(
                "job `{id}` is not leased with this token (its lease ran out or it finished)"
            ))),
            None => Err(Error::not_found("job", id)),
        }
    }

    pub(super) fn release_lease(&mut self, id: &str) -> Result<()> {
        let until = self.jobs.get(id).map(|e| e.lease_until).unwrap_or_default();
        self.active.remove(&(until, id.to_owned()));
        Ok(())
    }

    pub(super) fn insert(&mut self, new: NewJob, id: Option<String>, now: DateTime<Utc>) -> Job {
        if let Some(existing) = new
            .unique_key
            .as_ref()
            .and_then(|k| self.unique.get(k))
            .and_then(|id| self.jobs.get(id))
        {
            return existing.job.clone();
        }
        if let Some(existing) = id.as_ref().and_then(|id| self.jobs.get(id)) {
            return existing.job.clone();
        }
        self.sequence += 1;
        let seq = self.sequence;
        let id = id.unwrap_or_else(|| seq.to_string());
        let run_at = new.first_run(now);
        let job = new.into_job(id.clone(), now, run_at);
        if job.state == JobState::Delayed {
            self.delayed.insert((ms(run_at), seq, id.clone()));
        } else {
            self.add_ready((job.priority.rank(), seq, id.clone()), job.job_type.clone());
        }
        if let Some(key) = &job.unique_key {
            self.unique.insert(key.clone(), id.clone());
        }
        self.jobs.insert(
            id,
            Entry {
                job: job.clone(),
                seq,
                token: None,
                lease_until: 0,
            },
        );
        job
    }

    pub(super) fn remove(&mut self, id: &str) -> Option<Job> {
        let e = self.jobs.remove(id)?;
        let rank = e.job.priority.rank();
        self.remove_ready(&(rank, e.seq, id.to_owned()), &e.job.job_type);
        self.delayed
            .remove(&(ms(e.job.run_at), e.seq, id.to_owned()));
        if let Some(f) = e.job.finished_at {
            self.completed.remove(&(ms(f), e.seq, id.to_owned()));
            self.failed.remove(&(ms(f), e.seq, id.to_owned()));
        }
        if let Some(key) = &e.job.unique_key {
            if self.unique.get(key).is_some_and(|held| held == id) {
                self.unique.remove(key);
            }
        }
        Some(e.job)
    }
}
