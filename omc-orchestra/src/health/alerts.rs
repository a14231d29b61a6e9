//! The alert engine: evaluates [`AlertRule`]s over observed series, publishes firing and
//! resolved alerts as `SYSTEM_ALERT` events, dedupes while firing and keeps a history.

use super::inhibit::{inhibitor, ServiceDependencies, INHIBITED_BY};
use super::{AlertRule, Severity};
use crate::events::{types, EventBus, EventPriority, NewEvent};
use crate::SharedClock;
use chrono::{DateTime, Utc};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Labels of a series (`service`, `instance`, `mount`, …).
pub type Labels = BTreeMap<String, String>;

/// Alert notices kept for `GET /alerts` (500).
pub const DEFAULT_ALERT_HISTORY: usize = 500;

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// Bad, but not yet for the rule's `for` duration.
    Pending,
    /// Firing.
    Firing,
    /// Back to good.
    Resolved,
}

/// An alert that is pending or firing now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ActiveAlert {
    /// The rule.
    pub rule: String,
    /// Pending or firing.
    pub state: AlertState,
    /// Severity.
    pub severity: Severity,
    /// The series' labels.
    pub labels: Labels,
    /// The last observed value.
    pub value: f64,
    /// Since when it is bad (pending) or firing.
    pub since: DateTime<Utc>,
    /// What the rule says.
    pub summary: String,
}

/// A firing or resolved alert, as published and kept in the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AlertNotice {
    /// The rule.
    pub rule: String,
    /// `firing` or `resolved`.
    pub state: AlertState,
    /// Severity.
    pub severity: Severity,
    /// The series' labels.
    pub labels: Labels,
    /// The value that fired or resolved it.
    pub value: f64,
    /// The threshold it crossed.
    pub threshold: f64,
    /// What the rule says.
    pub summary: String,
    /// When the alert started firing.
    pub firing_since: DateTime<Utc>,
    /// When this notice was sent.
    pub at: DateTime<Utc>,
    /// Whether this is a repeat of a notice already sent.
    pub repeat: bool,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Inactive,
    Pending {
        since: DateTime<Utc>,
    },
    Firing {
        since: DateTime<Utc>,
        last_sent: DateTime<Utc>,
    },
}

struct Series {
    labels: Labels,
    value: f64,
    phase: Phase,
}

struct Inner {
    series: HashMap<(usize, Labels), Series>,
    history: VecDeque<AlertNotice>,
}

/// Evaluates rules over observed values; see the module docs.
pub struct AlertEngine {
    rules: Vec<AlertRule>,
    clock: SharedClock,
    events: Option<Arc<dyn EventBus>>,
    source: String,
    keep: usize,
    inner: Mutex<Inner>,
    dependencies: RwLock<Arc<ServiceDependencies>>,
    subscribers: Mutex<Vec<mpsc::Sender<AlertNotice>>>,
}

impl std::fmt::Debug for AlertEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertEngine")
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

/// `seconds` as a chrono duration, saturating: `Duration::seconds` panics past
/// `i64::MAX / 1000`, which a `u64` from a rule can pass.
fn secs(seconds: u64) -> chrono::Duration {
    i64::try_from(seconds)
        .ok()
        .and_then(chrono::Duration::try_seconds)
        .unwrap_or(chrono::Duration::MAX)
}

impl AlertEngine {
    /// An engine over `rules` on `clock`; rules that do not validate are skipped (logged).
    pub fn new(rules: Vec<AlertRule>, clock: SharedClock) -> Self {
        let rules = rules
            .into_iter()
            .filter(|rule| match rule.validate() {
                Ok(()) => true,
                Err(err) => {
                    tracing::warn!(rule = %rule.name, error = %err, "alert rule skipped");
                    false
                }
            })
            .collect();
        Self {
            rules,
            clock,
            events: None,
            source: "omc-orchestra".to_owned(),
            keep: DEFAULT_ALERT_HISTORY,
            inner: Mutex::new(Inner {
                series: HashMap::new(),
                history: VecDeque::new(),
            }),
            dependencies: RwLock::new(Arc::default()),
            subscribers: Mutex::new(Vec::new()),
        }
    }

    /// The clock the engine dates its alerts with.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Record each registered service's declared dependencies (the health checker does,
    /// every round), so [`AlertEngine::active`] and the receivers can tell which
    /// `ServiceUnavailable` alerts a dependency's alert inhibits.
    pub fn set_service_dependencies(&self, dependencies: ServiceDependencies) {
        let mut current = self.dependencies.write();
        if **current != dependencies {
            *current = Arc::new(dependencies);
        }
    }

    /// Each registered service's declared dependencies, as last recorded.
    pub fn service_dependencies(&self) -> Arc<ServiceDependencies> {
        self.dependencies.read().clone()
    }

    /// A stream of every notice from now on, for the receivers. The engine never waits
    /// for a subscriber: past `capacity` unread notices, new ones are dropped (logged).
    pub fn subscribe(&self, capacity: usize) -> mpsc::Receiver<AlertNotice> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.subscribers.lock().push(tx);
        rx
    }

    fn hand_out(&self, notices: &[AlertNotice]) {
        if notices.is_empty() {
            return;
        }
        let mut subscribers = self.subscribers.lock();
        subscribers.retain(|tx| !tx.is_closed());
        for tx in subscribers.iter() {
            for notice in notices {
                if tx.try_send(notice.clone()).is_err() {
                    tracing::warn!(rule = %notice.rule, "alert receivers behind; notice dropped");
                }
            }
        }
    }

    /// Publish notices as `SYSTEM_ALERT` events on `events`, from `source`.
    pub fn with_events(mut self, events: Arc<dyn EventBus>, source: impl Into<String>) -> Self {
        self.events = Some(events);
        self.source = source.into();
        self
    }

    /// The rules in force.
    pub fn rules(&self) -> &[AlertRule] {
        &self.rules
    }

    /// Record `value` for the series `metric{labels}` and evaluate the rules that watch
    /// it; returns (and publishes) the notices this caused.
    pub async fn observe(&self, metric: &str, labels: Labels, value: f64) -> Vec<AlertNotice> {
        let now = self.clock.now();
        let notices = {
            let mut inner = self.inner.lock();
            let mut notices = Vec::new();
            for (index, rule) in self.rules.iter().enumerate() {
                if !rule.selects(metric, &labels) {
                    continue;
                }
                let series = inner
                    .series
                    .entry((index, labels.clone()))
                    .or_insert_with(|| Series {
                        labels: labels.clone(),
                        value,
                        phase: Phase::Inactive,
                    });
                series.value = value;
                notices.extend(step(rule, series, now));
            }
            self.remember(&mut inner, &notices);
            notices
        };
        self.hand_out(&notices);
        self.publish(&notices).await;
        notices
    }

    /// Evaluate every `every` until the returned task is aborted, so an alert whose `for`
    /// passes between two observations fires on time and repeats come due.
    pub fn spawn(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            // A late round is not made up for: one evaluation covers any time passed.
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                self.evaluate().await;
            }
        })
    }

    /// Evaluate every series again with its last value (a pending alert whose `for` has
    /// passed fires; a repeat comes due); [`AlertEngine::spawn`] calls it on a timer.
    pub async fn evaluate(&self) -> Vec<AlertNotice> {
        let now = self.clock.now();
        let notices = {
            let mut inner = self.inner.lock();
            let mut notices = Vec::new();
            for ((index, _), series) in inner.series.iter_mut() {
                if let Some(rule) = self.rules.get(*index) {
                    notices.extend(step(rule, series, now));
                }
            }
            // An inactive series holds nothing the next observation would not rebuild, so
            // series of departed instances and disks do not pile up.
            inner
                .series
                .retain(|_, series| !matches!(series.phase, Phase::Inactive));
            self.remember(&mut inner, &notices);
            notices
        };
        self.hand_out(&notices);
        self.publish(&notices).await;
        notices
    }

    fn remember(&self, inner: &mut Inner, notices: &[AlertNotice]) {
        for notice in notices {
            if inner.history.len() >= self.keep {
                inner.history.pop_front();
            }
            inner.history.push_back(notice.clone());
        }
    }

    async fn publish(&self, notices: &[AlertNotice]) {
        let Some(events) = &self.events else { return };
        for notice in notices {
            let data = serde_json::to_value(notice).unwrap_or_default();
            let mut event = NewEvent::new(types::SYSTEM_ALERT, self.source.clone(), data);
            event.priority = match (notice.state, notice.severity) {
                (AlertState::Firing, Severity::Critical) => EventPriority::Critical,
                (AlertState::Firing, _) => EventPriority::High,
                _ => EventPriority::Normal,
            };
            event.tags = vec![
                "alert".to_owned(),
                notice.rule.clone(),
                format!("{:?}", notice.state).to_ascii_lowercase(),
            ];
            if let Err(err) = events.publish(event).await {
                tracing::warn!(error = %err, rule = %notice.rule, "cannot publish alert");
            }
        }
    }

    /// Alerts pending or firing now, by rule then labels; a firing `ServiceUnavailable`
    /// alert that a dependency's firing alert inhibits carries an `inhibited_by` label.
    pub fn active(&self) -> Vec<ActiveAlert> {
        let inner = self.inner.lock();
        let mut all: Vec<ActiveAlert> = inner
            .series
            .iter()
            .filter_map(|((index, _), series)| {
                let rule = self.rules.get(*index)?;
                let (state, since) = match series.phase {
                    Phase::Inactive => return None,
                    Phase::Pending { since } => (AlertState::Pending, since),
                    Phase::Firing { since, .. } => (AlertState::Firing, since),
                };
                Some(ActiveAlert {
                    rule: rule.name.clone(),
                    state,
                    severity: rule.severity,
                    labels: series.labels.clone(),
                    value: series.value,
                    since,
                    summary: rule.summary.clone(),
                })
            })
            .collect();
        all.sort_by(|a, b| (&a.rule, &a.labels).cmp(&(&b.rule, &b.labels)));
        let dependencies = self.service_dependencies();
        let inhibitors: Vec<Option<String>> = all
            .iter()
            .map(|alert| {
                let firing = all
                    .iter()
                    .filter(|a| a.state == AlertState::Firing)
                    .map(|a| (a.rule.as_str(), &a.labels));
                (alert.state == AlertState::Firing)
                    .then(|| inhibitor(&alert.rule, &alert.labels, firing, &dependencies))
                    .flatten()
            })
            .collect();
        for (alert, by) in all.iter_mut().zip(inhibitors) {
            if let Some(by) = by {
                alert.labels.insert(INHIBITED_BY.to_owned(), by);
            }
        }
        all
    }

    /// The last `limit` notices, oldest first.
    pub fn history(&self, limit: usize) -> Vec<AlertNotice> {
        let inner = self.inner.lock();
        let skip = inner.history.len().saturating_sub(limit);
        inner.history.iter().skip(skip).cloned().collect()
    }
}

/// Move one series along; a notice when it fires, repeats or resolves.
fn step(rule: &AlertRule, series: &mut Series, now: DateTime<Utc>) -> Option<AlertNotice> {
    let value = series.value;
    let notice = |state, firing_since, repeat| AlertNotice {
        rule: rule.name.clone(),
        state,
        severity: rule.severity,
        labels: series.labels.clone(),
        value,
        threshold: rule.threshold,
        summary: rule.summary.clone(),
        firing_since,
        at: now,
        repeat,
    };
    match series.phase {
        Phase::Inactive | Phase::Pending { .. } if !rule.breached(value) => {
            series.phase = Phase::Inactive;
            None
        }
        Phase::Inactive | Phase::Pending { .. } => {
            let since = match series.phase {
                Phase::Pending { since } => since,
                _ => now,
            };
            if now - since >= secs(rule.for_seconds) {
                series.phase = Phase::Firing {
                    since: now,
                    last_sent: now,
                };
                Some(notice(AlertState::Firing, now, false))
            } else {
                series.phase = Phase::Pending { since };
                None
            }
        }
        Phase::Firing { since, .. } if rule.cleared(value) => {
            series.phase = Phase::Inactive;
            Some(notice(AlertState::Resolved, since, false))
        }
        Phase::Firing { since, last_sent } => {
            let due = rule
                .repeat_seconds
                .is_some_and(|r| now - last_sent >= secs(r));
            if !due {
                return None;
            }
            series.phase = Phase::Firing {
                since,
                last_sent: now,
            };
            Some(notice(AlertState::Firing, since, true))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_saturate_instead_of_panicking() {
        assert_eq!(secs(60), chrono::Duration::minutes(1));
        for huge in [9_000_000_000_000_000_000, i64::MAX as u64, u64::MAX] {
            assert_eq!(secs(huge), chrono::Duration::MAX);
        }
    }
}
