//! What the receivers are configured with, and the checks that turn it into endpoints
//! before anything is sent.

use super::delivery::{Endpoint, RetryPolicy};
use crate::redact::{redact, MASK};
use crate::{Error, Result};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

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

/// The endpoint of an Alertmanager base URL (its v2 alerts path added unless given).
pub(super) fn alertmanager_endpoint(base: &str) -> Result<Endpoint> {
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

pub(super) fn webhook_endpoint(hook: &WebhookReceiver) -> Result<Endpoint> {
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
