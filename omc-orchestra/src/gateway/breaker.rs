//! Circuit breakers, one per upstream instance.
//!
//! Closed → open after `consecutive_failures` failures in a row, or when the failure
//! ratio over a rolling window reaches `failure_ratio` with at least `min_requests`
//! requests. Open lasts `base_open_ms`, doubling with each opening in a row (capped at
//! `max_open_ms`). Then half-open lets a share of requests through that grows linearly
//! from `half_open_start_percent` to all over `half_open_ramp_ms`; any failure reopens,
//! a full ramp without failure closes. At most `max_ejection_percent` of a service's
//! instances are open at once, so a bad deploy cannot eject a whole service.

use crate::{Error, Result, SharedClock};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{HashSet, VecDeque};

/// Breaker thresholds and timings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Failures in a row that open the breaker.
    pub consecutive_failures: u32,
    /// Failure ratio (0-1] over the window that opens the breaker.
    pub failure_ratio: f64,
    /// Rolling window, in seconds.
    pub window_secs: u64,
    /// Requests the window needs before the ratio counts.
    pub min_requests: u32,
    /// First open period, in milliseconds.
    pub base_open_ms: u64,
    /// Longest open period, in milliseconds.
    pub max_open_ms: u64,
    /// Half-open ramp from the start share to all requests, in milliseconds.
    pub half_open_ramp_ms: u64,
    /// Share of requests let through when half-open starts, in percent.
    pub half_open_start_percent: u8,
    /// Most of a service's instances open at once, in percent.
    pub max_ejection_percent: u8,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_ratio: 0.5,
            window_secs: 10,
            min_requests: 20,
            base_open_ms: 5_000,
            max_open_ms: 60_000,
            half_open_ramp_ms: 10_000,
            half_open_start_percent: 10,
            max_ejection_percent: 50,
        }
    }
}

impl BreakerConfig {
    /// Check the thresholds; the error names the field.
    pub fn validate(&self) -> Result<()> {
        if self.consecutive_failures == 0 {
            return Err(Error::invalid(
                "breaker.consecutiveFailures",
                "must be at least 1",
            ));
        }
        if !(self.failure_ratio > 0.0 && self.failure_ratio <= 1.0) {
            return Err(Error::invalid("breaker.failureRatio", "must be in (0, 1]"));
        }
        if self.window_secs == 0 {
            return Err(Error::invalid("breaker.windowSecs", "must be at least 1"));
        }
        if self.base_open_ms == 0 || self.max_open_ms < self.base_open_ms {
            return Err(Error::invalid(
                "breaker.maxOpenMs",
                "base_open_ms must be at least 1 and max_open_ms at least base_open_ms",
            ));
        }
        if self.half_open_start_percent == 0 || self.half_open_start_percent > 100 {
            return Err(Error::invalid(
                "breaker.halfOpenStartPercent",
                "must be 1-100",
            ));
        }
        if self.max_ejection_percent > 100 {
            return Err(Error::invalid(
                "breaker.maxEjectionPercent",
                "must be 0-100",
            ));
        }
        Ok(())
    }
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BreakerPhase {
    /// Requests flow.
    Closed,
    /// Requests are kept away.
    Open,
    /// A growing share of requests probes the instance.
    HalfOpen,
}

/// One breaker as `GET /gateway/breakers` shows it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct BreakerState {
    /// The upstream instance.
    pub instance: String,
    /// Its service.
    pub service: String,
    /// The phase.
    pub phase: BreakerPhase,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Requests in the rolling window.
    pub window_requests: u64,
    /// Failures in the rolling window.
    pub window_failures: u64,
    /// Openings in a row (resets when a half-open ramp completes).
    pub openings: u32,
    /// When an open breaker turns half-open (ms since the epoch).
    pub open_until_ms: Option<i64>,
    /// Share of requests let through now, in percent.
    pub admitting_percent: u8,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed,
    Open { until: i64 },
    HalfOpen { since: i64, credit: u64 },
}

#[derive(Debug)]
struct Bucket {
    start: i64,
    ok: u64,
    failed: u64,
}

#[derive(Debug)]
struct Breaker {
    service: String,
    phase: Phase,
    consecutive: u32,
    buckets: VecDeque<Bucket>,
    openings: u32,
}

const BUCKETS: i64 = 10;

impl Breaker {
    fn new(service: &str) -> Self {
        Self {
            service: service.to_owned(),
            phase: Phase::Closed,
            consecutive: 0,
            buckets: VecDeque::new(),
            openings: 0,
        }
    }

    fn window(&mut self, now: i64, window_ms: i64) -> (u64, u64) {
        while self
            .buckets
            .front()
            .is_some_and(|b| b.start <= now - window_ms)
        {
            self.buckets.pop_front();
        }
        self.buckets
            .iter()
            .fold((0, 0), |(ok, failed), b| (ok + b.ok, failed + b.failed))
    }

    fn count(&mut self, now: i64, window_ms: i64, success: bool) {
        let width = (window_ms / BUCKETS).max(1);
        let start = now - now.rem_euclid(width);
        if self.buckets.back().is_none_or(|b| b.start != start) {
            // Buckets that left the window go as new ones come, so that a breaker that
            // only ever sees successes keeps a bounded history.
            while self
                .buckets
                .front()
                .is_some_and(|b| b.start <= now - window_ms)
            {
                self.buckets.pop_front();
            }
            self.buckets.push_back(Bucket {
                start,
                ok: 0,
                failed: 0,
            });
        }
        if let Some(bucket) = self.buckets.back_mut() {
            if success {
                bucket.ok += 1;
            } else {
                bucket.failed += 1;
            }
        }
    }
}

/// The breakers of every upstream instance the gateway has used.
#[derive(Debug)]
pub struct Breakers {
    config: BreakerConfig,
    clock: SharedClock,
    /// By instance id. The ids are the registry's and the config's, never a client's, so
    /// a fast hasher is safe here.
    all: Mutex<foldhash::HashMap<String, Breaker>>,
}

impl Breakers {
    /// Breakers with `config`, timed by `clock`.
    pub fn new(config: BreakerConfig, clock: SharedClock) -> Self {
        Self {
            config,
            clock,
            all: Mutex::new(foldhash::HashMap::default()),
        }
    }

    fn share(&self, since: i64, now: i64) -> f64 {
        let start = f64::from(self.config.half_open_start_percent) / 100.0;
        let ramp = self.config.half_open_ramp_ms.max(1) as f64;
        (start + (1.0 - start) * ((now - since) as f64 / ramp)).clamp(start, 1.0)
    }

    fn permille(&self, since: i64, now: i64) -> u64 {
        (self.share(since, now) * 1000.0).round() as u64
    }

    /// May a request go to `instance` of `service` now? Counts the request towards the
    /// half-open share when it does.
    pub fn admit(&self, service: &str, instance: &str) -> bool {
        let mut all = self.all.lock();
        let Some(breaker) = all.get_mut(instance) else {
            return true;
        };
        if matches!(breaker.phase, Phase::Closed) {
            return true;
        }
        let now = self.clock.now_ms();
        if let Phase::Open { until } = breaker.phase {
            if now < until {
                return false;
            }
            // The first probe goes through at once.
            breaker.phase = Phase::HalfOpen {
                since: now,
                credit: 1000 - self.permille(now, now),
            };
        }
        let share = match breaker.phase {
            Phase::HalfOpen { since, .. } => self.permille(since, now),
            _ => return true,
        };
        let _ = service;
        // Each request earns the current share as credit; a whole request's worth of
        // credit lets one through, so admissions follow the share with no bursts.
        if let Phase::HalfOpen { credit, .. } = &mut breaker.phase {
            *credit += share;
            if *credit >= 1000 {
                *credit -= 1000;
                return true;
            }
        }
        false
    }

    /// Record the outcome of a request to `instance` of `service`, which has `instances`
    /// instances in all.
    pub fn record(&self, service: &str, instance: &str, success: bool, instances: usize) {
        let now = self.clock.now_ms();
        let window_ms = (self.config.window_secs as i64).saturating_mul(1000);
        let mut all = self.all.lock();
        // Only a failure of a closed breaker may need the count of open ones.
        let open_now = if success {
            0
        } else {
            all.values()
                .filter(|b| b.service == service && matches!(b.phase, Phase::Open { .. }))
                .count()
        };
        let breaker = match all.get_mut(instance) {
            Some(breaker) => breaker,
            None => all
                .entry(instance.to_owned())
                .or_insert_with(|| Breaker::new(service)),
        };
        breaker.count(now, window_ms, success);
        match breaker.phase {
            Phase::Open { .. } => {}
            Phase::HalfOpen { since, .. } => {
                if !success {
                    self.open(breaker, now);
                } else if self.share(since, now) >= 1.0 {
                    breaker.phase = Phase::Closed;
                    breaker.openings = 0;
                    breaker.consecutive = 0;
                    breaker.buckets.clear();
                }
            }
            Phase::Closed => {
                if success {
                    breaker.consecutive = 0;
                    return;
                }
                breaker.consecutive += 1;
                let (ok, failed) = breaker.window(now, window_ms);
                let total = ok + failed;
                let tripped = breaker.consecutive >= self.config.consecutive_failures
                    || (total >= u64::from(self.config.min_requests)
                        && total > 0
                        && failed as f64 / total as f64 >= self.config.failure_ratio);
                let allowed = instances * usize::from(self.config.max_ejection_percent) / 100;
                if tripped && open_now < allowed {
                    self.open(breaker, now);
                }
            }
        }
    }

    fn open(&self, breaker: &mut Breaker, now: i64) {
        breaker.openings = breaker.openings.saturating_add(1);
        let factor = 1u64 << breaker.openings.saturating_sub(1).min(20);
        let open_ms = self
            .config
            .base_open_ms
            .saturating_mul(factor)
            .min(self.config.max_open_ms);
        breaker.phase = Phase::Open {
            until: now.saturating_add(i64::try_from(open_ms).unwrap_or(i64::MAX)),
        };
        breaker.consecutive = 0;
        breaker.buckets.clear();
    }

    /// Forget breakers of instances not in `live` (they left the registry).
    pub fn retain(&self, live: &HashSet<String>) {
        self.all.lock().retain(|id, _| live.contains(id));
    }

    /// Every breaker, ordered by service then instance.
    pub fn snapshot(&self) -> Vec<BreakerState> {
        let now = self.clock.now_ms();
        let window_ms = (self.config.window_secs as i64).saturating_mul(1000);
        let mut all = self.all.lock();
        let mut states: Vec<BreakerState> = all
            .iter_mut()
            .map(|(id, b)| {
                let (ok, failed) = b.window(now, window_ms);
                let (phase, open_until_ms, share) = match b.phase {
                    Phase::Closed => (BreakerPhase::Closed, None, 1.0),
                    Phase::Open { until } if now < until => (BreakerPhase::Open, Some(until), 0.0),
                    Phase::Open { .. } => (BreakerPhase::HalfOpen, None, self.share(now, now)),
                    Phase::HalfOpen { since, .. } => {
                        (BreakerPhase::HalfOpen, None, self.share(since, now))
                    }
                };
                BreakerState {
                    instance: id.clone(),
                    service: b.service.clone(),
                    phase,
                    consecutive_failures: b.consecutive,
                    window_requests: ok + failed,
                    window_failures: failed,
                    openings: b.openings,
                    open_until_ms,
                    admitting_percent: (share * 100.0).round() as u8,
                }
            })
            .collect();
        states.sort_by(|a, b| (&a.service, &a.instance).cmp(&(&b.service, &b.instance)));
        states
    }
}

#[cfg(test)]
#[path = "breaker_tests.rs"]
mod tests;
