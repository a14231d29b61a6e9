//! Alert receivers: Alertmanager (its v2 API, as Prometheus sends) and webhooks (the body
//! Alertmanager's webhook receiver sends), fed from an [`AlertEngine`]'s notices.
//!
//! Like Prometheus, a firing alert is sent to every Alertmanager again each
//! `resend_every`, with `endsAt` four intervals ahead so Alertmanager resolves it by itself
//! if this process dies; a resolved one is sent once with `endsAt` at its resolve time.
//! Webhooks hear of an alert when it fires, again each `repeat_every` and when it
//! resolves, as an Alertmanager route would tell them. A new alert waits `group_wait`
//! first, so that a dependency failing in the same round can inhibit it
//! ([`inhibitor`]); an inhibited alert reaches no receiver.

mod delivery;
mod options;
mod payload;

pub use delivery::RetryPolicy;
pub use options::{ReceiverOptions, WebhookReceiver};
pub use payload::{alertmanager_body, webhook_bodies, OutgoingAlert};

use super::inhibit::{inhibitor, ServiceDependencies, INHIBITED_BY};
use super::{AlertEngine, AlertNotice, AlertState, Labels, Severity};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use delivery::Sender;
use options::{alertmanager_endpoint, webhook_endpoint};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// One alert the receivers know of.
#[derive(Debug, Clone)]
struct Tracked {
    severity: Severity,
    summary: String,
    starts_at: DateTime<Utc>,
    seen_at: DateTime<Utc>,
    resolved_at: Option<DateTime<Utc>>,
    pushed_at: Option<DateTime<Utc>>,
    notified_at: Option<DateTime<Utc>>,
}

/// What is due now: for Alertmanager and for the webhooks.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Due {
    /// Alerts to send to every Alertmanager.
    pub alertmanager: Vec<OutgoingAlert>,
    /// Alerts to send to every webhook.
    pub webhooks: Vec<OutgoingAlert>,
}

/// The receivers' view of the alerts: what was sent, when, and what is due; no I/O, so
/// the schedule and the inhibition are tested without a network.
#[derive(Debug)]
pub struct Dispatch {
    alerts: BTreeMap<(String, Labels), Tracked>,
    resend_every: chrono::Duration,
    group_wait: chrono::Duration,
    repeat_every: chrono::Duration,
}

fn chrono_of(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

impl Dispatch {
    /// A dispatch with `options`' intervals.
    pub fn new(options: &ReceiverOptions) -> Self {
        Self {
            alerts: BTreeMap::new(),
            resend_every: chrono_of(options.resend_every),
            group_wait: chrono_of(options.group_wait),
            repeat_every: chrono_of(options.repeat_every),
        }
    }

    /// Take in a notice from the engine.
    pub fn absorb(&mut self, notice: AlertNotice) {
        let key = (notice.rule, notice.labels);
        match notice.state {
            AlertState::Firing => {
                let fresh = Tracked {
                    severity: notice.severity,
                    summary: notice.summary,
                    starts_at: notice.firing_since,
                    seen_at: notice.at,
                    resolved_at: None,
                    pushed_at: None,
                    notified_at: None,
                };
                let entry = self.alerts.entry(key).or_insert_with(|| fresh.clone());
                if entry.resolved_at.is_some() {
                    *entry = fresh;
                }
            }
            AlertState::Resolved => {
                if let Some(entry) = self.alerts.get_mut(&key) {
                    entry.resolved_at = Some(notice.at);
                }
            }
            AlertState::Pending => {}
        }
    }

    /// Resolve, as of `now`, every alert the view holds as firing that is not among the
    /// engine's `firing` alerts (rule and own labels): a resolve notice dropped from a
    /// full queue must not leave an alert firing at the receivers for ever.
    pub fn reconcile(&mut self, firing: &BTreeSet<(String, Labels)>, now: DateTime<Utc>) {
        for (key, tracked) in self.alerts.iter_mut() {
            if tracked.resolved_at.is_none() && !firing.contains(key) {
                tracked.resolved_at = Some(now);
            }
        }
    }

    /// What is due at `now`, marked as sent; resolved alerts leave the view.
    pub fn due(&mut self, now: DateTime<Utc>, dependencies: &ServiceDependencies) -> Due {
        let firing: Vec<(String, Labels)> = self
            .alerts
            .iter()
            .filter(|(_, t)| t.resolved_at.is_none())
            .map(|(key, _)| key.clone())
            .collect();
        let mut due = Due::default();
        let valid_for = self
            .resend_every
            .checked_mul(4)
            .unwrap_or(chrono::Duration::MAX);
        for ((rule, labels), tracked) in self.alerts.iter_mut() {
            let outgoing = |ends_at, resolved| {
                let mut all = labels.clone();
                all.insert("alertname".into(), rule.clone());
                all.insert("severity".into(), severity_name(tracked.severity).into());
                OutgoingAlert {
                    labels: all,
                    annotations: Labels::from([("summary".to_owned(), tracked.summary.clone())]),
                    starts_at: tracked.starts_at,
                    ends_at,
                    resolved,
                }
            };
            if let Some(resolved_at) = tracked.resolved_at {
                if tracked.pushed_at.is_some() {
                    due.alertmanager.push(outgoing(resolved_at, true));
                }
                if tracked.notified_at.is_some() {
                    due.webhooks.push(outgoing(resolved_at, true));
                }
                continue;
            }
            if now - tracked.seen_at < self.group_wait {
                continue;
            }
            let sources = firing.iter().map(|(r, l)| (r.as_str(), l));
            if inhibitor(rule, labels, sources, dependencies).is_some() {
                continue;
            }
            let stale =
                |last: Option<DateTime<Utc>>, every| last.is_none_or(|at| now - at >= every);
            if stale(tracked.pushed_at, self.resend_every) {
                let until = now
                    .checked_add_signed(valid_for)
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                due.alertmanager.push(outgoing(until, false));
                tracked.pushed_at = Some(now);
            }
            if stale(tracked.notified_at, self.repeat_every) {
                due.webhooks.push(outgoing(now, false));
                tracked.notified_at = Some(now);
            }
        }
        self.alerts.retain(|_, t| t.resolved_at.is_none());
        due
    }
}

fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

/// The engine's firing alerts by rule and own labels (without `inhibited_by`).
fn firing_now(engine: &AlertEngine) -> BTreeSet<(String, Labels)> {
    engine
        .active()
        .into_iter()
        .filter(|alert| alert.state == AlertState::Firing)
        .map(|mut alert| {
            alert.labels.remove(INHIBITED_BY);
            (alert.rule, alert.labels)
        })
        .collect()
}

/// Sends an [`AlertEngine`]'s alerts to Alertmanagers and webhooks; see the module docs.
#[derive(Debug)]
pub struct AlertReceivers;

impl AlertReceivers {
    /// Check `options` (URLs, header names and values) and start delivering `engine`'s
    /// alerts: one task that follows the notices and one sender per receiver. No tasks
    /// when no receiver is configured.
    pub fn spawn(
        engine: Arc<AlertEngine>,
        options: ReceiverOptions,
    ) -> Result<Vec<JoinHandle<()>>> {
        let managers = options
            .alertmanagers
            .iter()
            .map(|url| alertmanager_endpoint(url))
            .collect::<Result<Vec<_>>>()?;
        let hooks = options
            .webhooks
            .iter()
            .map(|hook| {
                Ok((
                    hook.name.clone().unwrap_or_else(|| "webhook".into()),
                    webhook_endpoint(hook)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        if managers.is_empty() && hooks.is_empty() {
            return Ok(Vec::new());
        }
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .build()
            .map_err(|err| Error::invalid("alert receivers", err.to_string()))?;
        let mut tasks = Vec::new();
        let mut start = |endpoint| {
            let (sender, task) =
                Sender::spawn(endpoint, client.clone(), options.retry, options.queue);
            tasks.push(task);
            sender
        };
        let managers: Vec<Sender> = managers.into_iter().map(&mut start).collect();
        let hooks: Vec<(String, Sender)> = hooks
            .into_iter()
            .map(|(name, endpoint)| (name, start(endpoint)))
            .collect();
        let mut notices = engine.subscribe(options.queue.max(1024));
        let mut dispatch = Dispatch::new(&options);
        let external = options.external_url.trim_end_matches('/').to_owned();
        let generator = if external.is_empty() {
            String::new()
        } else {
            format!("{external}/alerts")
        };
        let tick = options.tick.max(Duration::from_millis(10));
        tasks.push(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(tick);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    notice = notices.recv() => match notice {
                        Some(notice) => dispatch.absorb(notice),
                        None => break,
                    },
                    _ = ticker.tick() => {
                        let now = engine.clock().now();
                        dispatch.reconcile(&firing_now(&engine), now);
                        let due = dispatch.due(now, &engine.service_dependencies());
                        if !due.alertmanager.is_empty() {
                            let body = alertmanager_body(&due.alertmanager, &generator);
                            for manager in &managers {
                                manager.offer(body.clone());
                            }
                        }
                        if !due.webhooks.is_empty() {
                            for (name, hook) in &hooks {
                                for body in webhook_bodies(&due.webhooks, name, &external, &generator) {
                                    hook.offer(body);
                                }
                            }
                        }
                    }
                }
            }
        }));
        Ok(tasks)
    }
}

#[cfg(test)]
mod tests;
