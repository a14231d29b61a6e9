//! Delivery to one receiver: a background task with a bounded queue that POSTs each body
//! with retries and bounded exponential back-off, so a slow or failing receiver never
//! holds up alert evaluation or the other receivers.

use crate::redact::redact;
use reqwest::header::HeaderMap;
use serde_json::Value;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How a failed delivery is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (5).
    pub attempts: u32,
    /// The pause after the first failure (500 ms); it doubles after each one.
    pub first_backoff: Duration,
    /// The longest pause (30 s).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The pause after failed attempt `attempt` (1-based): doubling, at most the maximum.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.first_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Where one receiver's bodies go.
pub(super) struct Endpoint {
    /// The URL POSTed to.
    pub(super) url: reqwest::Url,
    /// Sent with every request; values are marked sensitive.
    pub(super) headers: HeaderMap,
}

/// A queue of bodies for one endpoint; a full queue drops (and logs) rather than waits.
pub(super) struct Sender {
    tx: mpsc::Sender<Value>,
    name: String,
}

impl Sender {
    /// Start the task delivering to `endpoint`, with at most `capacity` bodies waiting.
    pub(super) fn spawn(
        endpoint: Endpoint,
        client: reqwest::Client,
        retry: RetryPolicy,
        capacity: usize,
    ) -> (Self, JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Value>(capacity.max(1));
        // Logged in place of the URL, whose userinfo or query may hold a password.
        let name = redact(endpoint.url.as_str());
        let task_name = name.clone();
        let task = tokio::spawn(async move {
            while let Some(body) = rx.recv().await {
                deliver(&client, &endpoint, &body, retry, &task_name).await;
            }
        });
        (Self { tx, name }, task)
    }

    /// Queue `body`, never waiting.
    pub(super) fn offer(&self, body: Value) {
        if self.tx.try_send(body).is_err() {
            tracing::warn!(receiver = %self.name, "alert receiver queue full; notification dropped");
        }
    }
}

/// POST `body` until a 2xx, a refusal that retrying cannot change (4xx but 408 and 429), or
/// the last attempt; whether it was delivered.
async fn deliver(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    body: &Value,
    retry: RetryPolicy,
    name: &str,
) -> bool {
    let attempts = retry.attempts.max(1);
    for attempt in 1..=attempts {
        let sent = client
            .post(endpoint.url.clone())
            .headers(endpoint.headers.clone())
            .json(body)
            .send()
            .await;
        let reason = match sent {
            Ok(answer) if answer.status().is_success() => return true,
            Ok(answer) => {
                let status = answer.status();
                let final_refusal = status.is_client_error()
                    && status != reqwest::StatusCode::REQUEST_TIMEOUT
                    && status != reqwest::StatusCode::TOO_MANY_REQUESTS;
                if final_refusal {
                    tracing::warn!(receiver = %name, %status, "alert receiver refused the notification");
                    return false;
                }
                status.to_string()
            }
            // Without the error's text: reqwest's message repeats the URL.
            Err(err) if err.is_timeout() => "timed out".to_owned(),
            Err(err) if err.is_connect() => "cannot connect".to_owned(),
            Err(_) => "request failed".to_owned(),
        };
        if attempt == attempts {
            tracing::warn!(receiver = %name, %reason, attempts, "alert notification not delivered");
            return false;
        }
        tracing::debug!(receiver = %name, %reason, attempt, "alert notification failed; retrying");
        tokio::time::sleep(retry.backoff(attempt)).await;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        let retry = RetryPolicy {
            attempts: 40,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        let pauses: Vec<_> = (1..=6).map(|a| retry.backoff(a).as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(retry.backoff(u32::MAX), Duration::from_secs(1));
    }
}
