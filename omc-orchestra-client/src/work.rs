//! Publishing events and enqueueing jobs over HTTP.

use crate::client::Server;
use crate::{OrchestraClient, Result};
use omc_orchestra::events::{Event, EventPriority, NewEvent};
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

/// An event about to be published: give it a priority, tags or a target, then
/// [`EventBuilder::send`] it. Made by [`crate::Orchestra::event`].
#[derive(Debug, Clone)]
#[must_use = "an event is published only by `send`"]
pub struct EventBuilder {
    client: OrchestraClient,
    event: NewEvent,
}

impl EventBuilder {
    pub(crate) fn new(
        client: OrchestraClient,
        event_type: &str,
        source: &str,
        data: serde_json::Value,
    ) -> Self {
        Self {
            client,
            event: NewEvent::new(event_type, source, data),
        }
    }

    /// How urgent it is (default normal): consumers that are behind get it sooner.
    pub fn priority(mut self, priority: EventPriority) -> Self {
        self.event.priority = priority;
        self
    }

    /// Tags subscribers and history searches filter on.
    pub fn tags<I, S>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.event.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// Deliver it only to consumers of `service`.
    pub fn target(mut self, service: impl Into<String>) -> Self {
        self.event.target = Some(service.into());
        self
    }

    /// Tie it to other events of one business process.
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.event.correlation_id = Some(id.into());
        self
    }

    /// Publish it; returns it stamped with its id and time.
    pub async fn send(self) -> Result<Event> {
        self.client.publish(self.event).await
    }
}
