//! Publishing events and enqueueing jobs over HTTP.

use crate::client::Server;
use crate::{OrchestraClient, Result};
use omc_orchestra::events::{Event, NewEvent};
use omc_orchestra::jobs::{Job, NewJob};
use reqwest::Method;

impl OrchestraClient {
    /// Publish one event (`POST /events` on the registry server); returns it stamped with
    /// its id and time.
    pub async fn publish(&self, event: NewEvent) -> Result<Event> {
        event.validate().map_err(crate::ClientError::from)?;
        let request = self
            .request_to(Server::Registry, Method::POST, &["events"])?
            .json(&event);
        self.send(request).await
    }

    /// Publish an event of `event_type` from `source` with `data` at normal priority, e.g.
    /// `client.emit("PRICE_UPDATED", "pricing-service", json!({"stationId": "STN001"}))`.
    pub async fn emit(
        &self,
        event_type: &str,
        source: &str,
        data: serde_json::Value,
    ) -> Result<Event> {
        self.publish(NewEvent::new(event_type, source, data)).await
    }

    /// Enqueue a job (`POST /jobs` on the jobs server).
    pub async fn enqueue(&self, job: NewJob) -> Result<Job> {
        job.validate().map_err(crate::ClientError::from)?;
        let request = self
            .request_to(Server::Jobs, Method::POST, &["jobs"])?
            .json(&job);
        self.send(request).await
    }

    /// One job by id (`GET /jobs/{id}`).
    pub async fn job(&self, id: &str) -> Result<Job> {
        let request = self.request_to(Server::Jobs, Method::GET, &["jobs", id])?;
        self.send(request).await
    }
}
