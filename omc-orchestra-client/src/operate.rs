//! The operators' calls: listing, retrying and cancelling jobs, schedules, event history
//! and replay, log search and tail, alerts and the dashboard figures. The `orchestra` CLI
//! is built on them; answers without a model type in the library come back as JSON.

use crate::client::Server;
use crate::{ClientError, OrchestraClient, Result};
use omc_orchestra::events::{Event, EventQuery};
use omc_orchestra::jobs::{Job, JobFilter};
use omc_orchestra::logs::{LogPage, LogRecord};
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// A page of `GET /jobs`.
#[derive(Deserialize)]
struct JobPage {
    jobs: Vec<Job>,
}

/// The answer of `POST /jobs/retry-failed`.
#[derive(Deserialize)]
struct Retried {
    retried: u64,
}

impl OrchestraClient {
    /// Jobs by state and type, a page at a time (`GET /jobs`).
    pub async fn jobs(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        let request = self
            .request_to(Server::Jobs, Method::GET, &["jobs"])?
            .query(filter);
        Ok(self.send::<JobPage>(request).await?.jobs)
    }

    /// The queue's counts, throughput and the job types no worker takes
    /// (`GET /jobs/stats`).
    pub async fn job_stats(&self) -> Result<Value> {
        self.get_json(Server::Jobs, &["jobs", "stats"], &[]).await
    }

    /// Jobs by type and state: waiting, delayed, active and failed (`GET /jobs/types`).
    pub async fn job_types(&self) -> Result<Value> {
        self.get_json(Server::Jobs, &["jobs", "types"], &[]).await
    }

    /// Put one failed job back to waiting with fresh attempts (`POST /jobs/{id}/retry`).
    pub async fn retry_job(&self, id: &str) -> Result<Job> {
        let request = self.request_to(Server::Jobs, Method::POST, &["jobs", id, "retry"])?;
        self.send(request).await
    }

    /// Put every failed job back to waiting; returns how many (`POST /jobs/retry-failed`).
    pub async fn retry_failed(&self) -> Result<u64> {
        let request = self.request_to(Server::Jobs, Method::POST, &["jobs", "retry-failed"])?;
        Ok(self.send::<Retried>(request).await?.retried)
    }

    /// Cancel a job: removed unless running, a running one's worker is told to stop
    /// (`DELETE /jobs/{id}`).
    pub async fn cancel_job(&self, id: &str) -> Result<Job> {
        let request = self.request_to(Server::Jobs, Method::DELETE, &["jobs", id])?;
        self.send(request).await
    }

    /// The workers seen in the last minute (`GET /jobs/workers`).
    pub async fn workers(&self) -> Result<Value> {
        self.get_json(Server::Jobs, &["jobs", "workers"], &[]).await
    }

    /// Every cron schedule (`GET /schedules`).
    pub async fn schedules(&self) -> Result<Value> {
        self.get_json(Server::Jobs, &["schedules"], &[]).await
    }

    /// Add a cron schedule, `{"cron": "0 2 * * *", "job": {"type": …}}`
    /// (`POST /schedules`).
    pub async fn add_schedule(&self, schedule: &Value) -> Result<Value> {
        let request = self
            .request_to(Server::Jobs, Method::POST, &["schedules"])?
            .json(schedule);
        self.send(request).await
    }

    /// Remove a schedule; answers it as it was (`DELETE /schedules/{id}`).
    pub async fn remove_schedule(&self, id: &str) -> Result<Value> {
        let request = self.request_to(Server::Jobs, Method::DELETE, &["schedules", id])?;
        self.send(request).await
    }

    /// Past events, oldest first (`GET /events`).
    pub async fn events(&self, query: &EventQuery) -> Result<Vec<Event>> {
        let request = self
            .request_to(Server::Registry, Method::GET, &["events"])?
            .query(query);
        self.send(request).await
    }

    /// One page of a replay (`POST /events/replay`): `{"since": …}` or `{"fromId": …}`
    /// plus filters; the answer holds `events` and `nextFromId`.
    pub async fn replay_events(&self, request: &Value) -> Result<Value> {
        let request = self
            .request_to(Server::Registry, Method::POST, &["events", "replay"])?
            .json(request);
        self.send(request).await
    }

    /// Search the logs, newest first (`GET /logs`); `query` holds the wire parameters
    /// (`level`, `service`, `text`, `since`, `limit`, `cursor`, …).
    pub async fn search_logs(&self, query: &[(&str, String)]) -> Result<LogPage> {
        let request = self
            .request_to(Server::Logging, Method::GET, &["logs"])?
            .query(query);
        self.send(request).await
    }

    /// Log counts, error rate and top errors (`GET /logs/stats`), e.g. over
    /// `[("window", "15m")]`.
    pub async fn log_stats(&self, query: &[(&str, String)]) -> Result<Value> {
        self.get_json(Server::Logging, &["logs", "stats"], query)
            .await
    }

    /// Follow new log records matching `query` (`GET /logs/stream`, server-sent events).
    pub async fn tail_logs(&self, query: &[(&str, String)]) -> Result<LogStream> {
        let request = self
            .request_to(Server::Logging, Method::GET, &["logs", "stream"])?
            .query(query)
            // A tail lasts as long as the caller wants, past the client's request deadline.
            .timeout(Duration::from_secs(365 * 86_400));
        let response = request.send().await.map_err(ClientError::Transport)?;
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await.map_err(ClientError::Transport)?;
            return Err(ClientError::from_response(status, &body));
        }
        Ok(LogStream {
            response,
            buffer: Vec::new(),
        })
    }

    /// Alerts active now, their history and the rules (`GET /alerts`).
    pub async fn alerts(&self) -> Result<Value> {
        self.get_json(Server::Registry, &["alerts"], &[]).await
    }

    /// Service counts, firing alerts, host sample and probe figures
    /// (`GET /system/dashboard`).
    pub async fn dashboard(&self) -> Result<Value> {
        self.get_json(Server::Registry, &["system", "dashboard"], &[])
            .await
    }

    /// The gateway's Prometheus text, read through the registry, which forwards
    /// `/dashboard/api/gateway/…` to a gateway running beside it
    /// (`GET /dashboard/api/gateway/metrics`).
    pub async fn gateway_metrics(&self) -> Result<String> {
        let request = self.request_to(
            Server::Registry,
            Method::GET,
            &["dashboard", "api", "gateway", "metrics"],
        )?;
        let body = self.execute(request).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// The gateway's circuit breakers, read through the registry as
    /// [`gateway_metrics`](Self::gateway_metrics) is
    /// (`GET /dashboard/api/gateway/gateway/breakers`).
    pub async fn gateway_breakers(&self) -> Result<Value> {
        self.get_json(
            Server::Registry,
            &["dashboard", "api", "gateway", "gateway", "breakers"],
            &[],
        )
        .await
    }

    async fn get_json(
        &self,
        server: Server,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Value> {
        let request = self.request_to(server, Method::GET, segments)?.query(query);
        self.send(request).await
    }
}

/// New log records as the logging server streams them; see
/// [`OrchestraClient::tail_logs`].
#[derive(Debug)]
pub struct LogStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl LogStream {
    /// The next record, or `None` when the server closed the stream.
    pub async fn next_record(&mut self) -> Result<Option<LogRecord>> {
        loop {
            if let Some(end) = find_event_end(&self.buffer) {
                let event: Vec<u8> = self.buffer.drain(..end).collect();
                if let Some(record) = record_of(&event)? {
                    return Ok(Some(record));
                }
                continue;
            }
            match self
                .response
                .chunk()
                .await
                .map_err(ClientError::Transport)?
            {
                Some(chunk) => self.buffer.extend_from_slice(&chunk),
                None => return Ok(None),
            }
        }
    }
}

/// Where the first server-sent event in `buffer` ends, past its blank line.
fn find_event_end(buffer: &[u8]) -> Option<usize> {
    buffer
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|at| at + 2)
}

/// The record of one `event: log` message; comments and keep-alives have none.
fn record_of(event: &[u8]) -> Result<Option<LogRecord>> {
    let text = String::from_utf8_lossy(event);
    let data: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    if data.is_empty() {
        return Ok(None);
    }
    serde_json::from_str(&data.join("\n"))
        .map(Some)
        .map_err(ClientError::Decode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_sent_events_split_on_blank_lines_and_comments_carry_no_record() {
        let stream = b": tail open\n\nevent: log\ndata: {\"timestamp\":\"2026-01-01T00:00:00Z\",\"level\":\"error\",\"category\":\"system\",\"service\":\"pricing\",\"message\":\"down\"}\n\n";
        let first = find_event_end(stream).unwrap();
        assert!(record_of(&stream[..first]).unwrap().is_none());
        let rest = &stream[first..];
        let second = find_event_end(rest).unwrap();
        let record = record_of(&rest[..second]).unwrap().unwrap();
        assert_eq!(
            (record.service.as_str(), record.message.as_str()),
            ("pricing", "down")
        );
        assert_eq!(find_event_end(b"event: log\ndata: {"), None);
        assert!(record_of(b"data: not json\n\n").is_err());
    }
}
