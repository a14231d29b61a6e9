//! Alert receivers: Alertmanager (its v2 API, as Prometheus sends) and webhooks (the body
//! Alertmanager's webhook receiver sends), fed from an [`AlertEngine`]'s notices.
//!
//! Like Prometheus, a firing alert is sent to every Alertmanager again each
//! `resend_every`, with `endsAt` four intervals ahead so Alertmanager resolves it by itself
//! if this process dies; a resolved one is sent once with `endsAt` at its resolve time.
//! Webhooks hear of an alert when it fires, again each `repeat_every` and when it
//! resolves, as an Alertmanager route would tell them. A new alert waits `group_wait`
//! first, so that a dependency failing in the same round can inhibit it
//! ([`inhibitor`](super::inhibit::inhibitor)); an inhibited alert reaches no receiver.

mod delivery;
mod payload;

pub use delivery::RetryPolicy;
pub use payload::{alertmanager_body, webhook_bodies, OutgoingAlert};

use super::inhibit::{inhibitor, ServiceDependencies};
use super::{AlertEngine, AlertNotice, AlertState, Labels, Severity};
use crate::redact::{redact, MASK};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use delivery::{Endpoint, Sender};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// A webhook that receives alerts (`[[alert_receivers]]` in the server's TOML file).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookReceiver {
    /// The URL POSTed to.
    pub url: String,
    /// The receiver's name in the body (`receiver`); `webhook` when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// Headers sent with each request (`Authorization`, …); never logged or shown.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

// Hand-written so that a printed configuration never shows a header's secret.
impl std::fmt::Debug for WebhookReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: BTreeMap<&str, &str> =
            self.headers.keys().map(|k| (k.as_str(), MASK)).collect();
        f.debug_struct("WebhookReceiver")
            .field("url", &redact(&self.url))
            .field("name", &self.name)
            .field("headers", &headers)
            .finish()
    }
}

/// Where alerts go and how often. Its `Debug` masks passwords and header values.
#[derive(Clone)]
pub struct ReceiverOptions {
    /// Alertmanager base URLs (`http://alertmanager:9093`); alerts go to `/api/v2/alerts`.
    pub alertmanagers: Vec<String>,
    /// Webhooks.
    pub webhooks: Vec<WebhookReceiver>,
    /// How often a firing alert is sent to Alertmanager again (60 s, as Prometheus).
    pub resend_every: Duration,
    /// How long a new alert waits before it is first sent (10 s).
    pub group_wait: Duration,
    /// How often a webhook hears again of an alert still firing (4 h, as Alertmanager).
    pub repeat_every: Duration,
    /// How often what is due is looked at (1 s).
    pub tick: Duration,
    /// Retries of a failed delivery.
    pub retry: RetryPolicy,
    /// Deadline of one request (10 s).
    pub timeout: Duration,
    /// Bodies waiting per receiver before new ones are dropped (256).
    pub queue: usize,
    /// This orchestra's URL, for `externalURL` and `generatorURL` (`{url}/alerts`).
    pub external_url: String,
}

impl Default for ReceiverOptions {
    fn default() -> Self {
        Self {
            alertmanagers: Vec::new(),
            webhooks: Vec::new(),
            resend_every: Duration::from_secs(60),
            group_wait: Duration::from_secs(10),
            repeat_every: Duration::from_secs(4 * 3600),
            tick: Duration::from_secs(1),
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(10),
            queue: 256,
            external_url: String::new(),
        }
    }
}

impl std::fmt::Debug for ReceiverOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let managers: Vec<String> = self.alertmanagers.iter().map(|u| redact(u)).collect();
        f.debug_struct("ReceiverOptions")
            .field("alertmanagers", &managers)
            .field("webhooks", &self.webhooks)
            .field("resend_every", &self.resend_every)
            .field("group_wait", &self.group_wait)
            .field("repeat_every", &self.repeat_every)
            .field("external_url", &redact(&self.external_url))
            .finish_non_exhaustive()
    }
}

impl ReceiverOptions {
    /// Check every URL, header name and header value; the error names the field and
    /// never holds a password or a header's value.
    pub fn validate(&self) -> Result<()> {
        for url in &self.alertmanagers {
            alertmanager_endpoint(url)?;
        }
        for hook in &self.webhooks {
            webhook_endpoint(hook)?;
        }
        if self.resend_every.is_zero() {
            return Err(Error::invalid(
                "alert_resend_every",
                "must be at least 1 second",
            ));
        }
        Ok(())
    }
}

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

/// The endpoint of an Alertmanager base URL (its v2 alerts path added unless given).
fn alertmanager_endpoint(base: &str) -> Result<Endpoint> {
    let trimmed = base.trim().trim_end_matches('/');
    let full = if trimmed.ends_with("/api/v2/alerts") {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/api/v2/alerts")
    };
    Ok(Endpoint {
        url: parse_url("alertmanager_urls", &full)?,
        headers: HeaderMap::new(),
    })
}

fn parse_url(field: &str, url: &str) -> Result<reqwest::Url> {
    match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(parsed),
        _ => Err(Error::invalid(
            field,
            format!("`{}` is not an http(s) URL", redact(url)),
        )),
    }
}

fn webhook_endpoint(hook: &WebhookReceiver) -> Result<Endpoint> {
    let mut headers = HeaderMap::new();
    for (name, value) in &hook.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            Error::invalid(
                "alert_receivers.headers",
                format!("`{name}` is not a header name"),
            )
        })?;
        // The value is left out of the message: it is most likely a secret.
        let mut value = HeaderValue::from_str(value).map_err(|_| {
            Error::invalid(
                "alert_receivers.headers",
                format!("the value of `{name}` is not a header value"),
            )
        })?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    Ok(Endpoint {
        url: parse_url("alert_receivers.url", &hook.url)?,
        headers,
    })
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
                        let due = dispatch.due(engine.clock().now(), &engine.service_dependencies());
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
