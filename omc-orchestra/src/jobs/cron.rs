//! Cron schedules: each due tick becomes one enqueue with a deterministic job id
//! (`{schedule}@{tick ms}`), recorded atomically with the schedule's last fired tick, so
//! any number of schedulers on one store fire each tick once; ticks missed while no
//! scheduler ran are caught up within a window.

use super::{Job, NewJob, ScheduleStore};
use crate::clock::SharedClock;
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// A stored cron schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// Schedule id.
    pub id: String,
    /// Cron expression with seconds (`sec min hour day month weekday [year]`); a
    /// five-field expression runs at second 0.
    pub cron: String,
    /// IANA time zone the expression is read in (default `UTC`).
    pub timezone: String,
    /// The job each tick enqueues.
    pub job: NewJob,
    /// A paused schedule fires nothing.
    pub paused: bool,
    /// Only ticks after this time fire (creation, or the last resume).
    pub active_since: DateTime<Utc>,
    /// The last tick that fired.
    pub last_fired_at: Option<DateTime<Utc>>,
}

/// A schedule to create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct NewSchedule {
    /// An id of the caller's choosing (a fresh one otherwise).
    #[serde(default)]
    pub id: Option<String>,
    /// Cron expression, see [`Schedule::cron`].
    pub cron: String,
    /// IANA time zone (default `UTC`).
    #[serde(default)]
    pub timezone: Option<String>,
    /// The job each tick enqueues.
    pub job: NewJob,
    /// Start paused.
    #[serde(default)]
    pub paused: bool,
}

fn parse_cron(expr: &str) -> Result<cron::Schedule> {
    let fields = expr.split_whitespace().count();
    let full = if fields == 5 {
        format!("0 {expr}")
    } else {
        expr.to_owned()
    };
    cron::Schedule::from_str(&full).map_err(|err| Error::invalid("cron", err.to_string()))
}

fn parse_tz(tz: &str) -> Result<Tz> {
    Tz::from_str(tz).map_err(|_| Error::invalid("timezone", "not an IANA time zone name"))
}

impl Schedule {
    /// Check every field; the error names the first field that is wrong.
    pub fn validate(&self) -> Result<()> {
        if self.id.is_empty()
            || self.id.len() > 128
            || !self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return Err(Error::invalid(
                "id",
                "must be 1-128 letters, digits, `-`, `_`, `.` or `:`",
            ));
        }
        parse_cron(&self.cron)?;
        parse_tz(&self.timezone)?;
        self.job.validate().map_err(|err| match err {
            Error::Invalid { field, reason } => Error::invalid(format!("job.{field}"), reason),
            other => other,
        })
    }

    /// The schedule as a store saves it: checked, and without its last fire, which stores
    /// keep apart so that a save never changes when a schedule last fired.
    pub(crate) fn to_stored(&self) -> Result<Schedule> {
        self.validate()?;
        Ok(Schedule {
            last_fired_at: None,
            ..self.clone()
        })
    }

    /// Ticks after `after` up to and including `until`, oldest first, at most `limit`
    /// (the newest ones when there are more).
    pub fn ticks(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DateTime<Utc>>> {
        let cron = parse_cron(&self.cron)?;
        let tz = parse_tz(&self.timezone)?;
        let mut ticks: Vec<DateTime<Utc>> = cron
            .after(&after.with_timezone(&tz))
            .map(|t| t.with_timezone(&Utc))
            .take_while(|t| *t <= until)
            .take(10_000)
            .collect();
        if ticks.len() > limit {
            ticks.drain(..ticks.len() - limit);
        }
        Ok(ticks)
    }

    /// The next tick after `now`.
    pub fn next_after(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let cron = parse_cron(&self.cron).ok()?;
        let tz = parse_tz(&self.timezone).ok()?;
        cron.after(&now.with_timezone(&tz))
            .next()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// How a [`Scheduler`] catches up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerOptions {
    /// Ticks missed longer ago than this are skipped after a restart.
    pub catch_up_window: Duration,
    /// Most missed ticks of one schedule fired in one pass (the newest).
    pub max_catch_up: usize,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            catch_up_window: Duration::from_secs(3600),
            max_catch_up: 10,
        }
    }
}

/// Turns due cron ticks into jobs. Run one per replica: they agree through the store.
#[derive(Clone)]
pub struct Scheduler {
    queue: Arc<dyn ScheduleStore>,
    clock: SharedClock,
    options: SchedulerOptions,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// A scheduler over `queue`, whose schedules live in the same store.
    pub fn new(
        queue: Arc<dyn ScheduleStore>,
        clock: SharedClock,
        options: SchedulerOptions,
    ) -> Self {
        Self {
            queue,
            clock,
            options,
        }
    }

    /// Validate and store a schedule.
    pub async fn add(&self, new: NewSchedule) -> Result<Schedule> {
        let schedule = Schedule {
            id: new
                .id
                .unwrap_or_else(|| format!("sched-{}", uuid::Uuid::new_v4().simple())),
            cron: new.cron,
            timezone: new.timezone.unwrap_or_else(|| "UTC".into()),
            job: new.job,
            paused: new.paused,
            active_since: self.clock.now(),
            last_fired_at: None,
        };
        schedule.validate()?;
        self.queue.save_schedule(&schedule).await?;
        Ok(schedule)
    }

    /// Every schedule.
    pub async fn list(&self) -> Result<Vec<Schedule>> {
        self.queue.schedules().await
    }

    /// Pause or resume a schedule; ticks while paused never fire.
    pub async fn set_paused(&self, id: &str, paused: bool) -> Result<Schedule> {
        let mut schedule = self
            .list()
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| Error::not_found("schedule", id))?;
        if schedule.paused && !paused {
            schedule.active_since = self.clock.now();
        }
        schedule.paused = paused;
        self.queue.save_schedule(&schedule).await?;
        Ok(schedule)
    }

    /// When `schedule` fires next, by this scheduler's clock; `None` while it is paused or
    /// when its expression has no later tick.
    pub fn next_run(&self, schedule: &Schedule) -> Option<DateTime<Utc>> {
        if schedule.paused {
            return None;
        }
        schedule.next_after(self.clock.now())
    }

    /// Remove a schedule.
    pub async fn remove(&self, id: &str) -> Result<Schedule> {
        self.queue.delete_schedule(id).await
    }

    /// Fire every due tick of every schedule; returns the jobs this call enqueued (ticks
    /// another scheduler fired first are not among them).
    pub async fn tick(&self) -> Result<Vec<Job>> {
        let now = self.clock.now();
        let window = chrono::Duration::from_std(self.options.catch_up_window)
            .unwrap_or(chrono::Duration::days(1));
        let mut fired = Vec::new();
        for schedule in self.queue.schedules().await? {
            if schedule.paused {
                continue;
            }
            let after = [
                Some(schedule.active_since),
                schedule.last_fired_at,
                Some(now - window),
            ]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(now);
            let ticks = match schedule.ticks(after, now, self.options.max_catch_up) {
                Ok(ticks) => ticks,
                Err(err) => {
                    tracing::warn!(schedule = %schedule.id, error = %err, "unreadable schedule");
                    continue;
                }
            };
            for tick in ticks {
                match self
                    .queue
                    .fire_schedule(&schedule.id, tick, schedule.job.clone())
                    .await
                {
                    Ok(Some(job)) => {
                        tracing::info!(
                            target: "orchestra::schedules",
                            schedule = %schedule.id,
                            job = %job.id,
                            job_type = %job.job_type,
                            tick = %tick.to_rfc3339(),
                            "schedule fired"
                        );
                        fired.push(job);
                    }
                    Ok(None) | Err(Error::NotFound { .. }) => {}
                    Err(err) => return Err(err),
                }
            }
        }
        Ok(fired)
    }

    /// Run [`Scheduler::tick`] every `every` until the task is aborted.
    pub fn spawn(self, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                interval.tick().await;
                if let Err(err) = self.tick().await {
                    tracing::warn!(error = %err, "cron pass failed");
                }
            }
        })
    }
}
