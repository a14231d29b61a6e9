//! [`Worker`]: runs this service's job handlers over the jobs server's lease API, so a
//! service needs no Redis credentials to be a worker.
//!
//! One loop asks `POST /jobs/lease` for as many jobs as there are free slots (waiting up to
//! two seconds when none is ready); each job runs in a task of its own while its lease is
//! extended every third of the lease; the result completes it, an error or a panic fails
//! it (retried after its backoff while attempts are left), and a job cancelled meanwhile
//! (`DELETE /jobs/{id}`) stops and fails for good. On shutdown the loop stops asking and
//! the jobs in hand finish, within the drain period.

use crate::client::Server;
use crate::orchestra::{Running, Stopping};
use crate::{ClientError, OrchestraClient, Result};
use omc_orchestra::jobs::worker::panicked;
use omc_orchestra::jobs::{Job, JobLease, LeaseRenewal};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// What a job handler returns: the job's result, or why it failed (any error converts,
/// so `?` works inside a handler).
pub type JobResult = std::result::Result<Value, Box<dyn std::error::Error + Send + Sync>>;

type Handler = Arc<dyn Fn(Job) -> Pin<Box<dyn Future<Output = JobResult> + Send>> + Send + Sync>;

/// How long one lease request waits for a job when none is ready: short, since shutdown
/// waits for the request in flight.
const LONG_POLL: Duration = Duration::from_secs(2);

/// A worker being set up: its handlers, concurrency and lease. Made by
/// [`crate::Orchestra::worker`]; [`Worker::run`] runs it until shutdown.
#[must_use = "a worker does nothing until `run` or `spawn`"]
pub struct Worker {
    client: OrchestraClient,
    name: String,
    handlers: BTreeMap<String, Handler>,
    concurrency: usize,
    lease: Duration,
    drain: Duration,
    stopping: Stopping,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.name)
            .field("types", &self.handlers.keys().collect::<Vec<_>>())
            .field("concurrency", &self.concurrency)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl Worker {
    pub(crate) fn new(client: OrchestraClient, name: String, stopping: Stopping) -> Self {
        Self {
            client,
            name,
            handlers: BTreeMap::new(),
            concurrency: 4,
            lease: Duration::from_secs(30),
            drain: Duration::from_secs(30),
            stopping,
        }
    }

    /// Run `handler` for jobs of `job_type`; its `Ok` value is the job's result.
    pub fn handle<F, Fut>(mut self, job_type: &str, handler: F) -> Self
    where
        F: Fn(Job) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = JobResult> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |job| Box::pin(handler(job)));
        self.handlers.insert(job_type.to_owned(), handler);
        self
    }

    /// How many jobs run at once (default 4, at least 1).
    pub fn concurrency(mut self, jobs: usize) -> Self {
        self.concurrency = jobs.clamp(1, 100);
        self
    }

    /// How long each lease lasts between extensions (default 30 s, 1 s to 1 h): a worker
    /// that dies loses its jobs to another after at most this long.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.clamp(Duration::from_secs(1), Duration::from_secs(3600));
        self
    }

    /// How long shutdown waits for the jobs in hand (default 30 s); those still running
    /// then stop, and run again elsewhere once their lease runs out.
    pub fn drain_within(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
    }

    /// The name the jobs server knows this worker by (`GET /jobs/workers`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Take and run jobs until [`crate::Orchestra::shutdown`], Ctrl-C or SIGTERM, then
    /// drain. An error is a refusal that will not pass by itself (a bad token, a handler
    /// type the server rejects); a jobs server that is away is retried.
    pub async fn run(self) -> Result<()> {
        let running = self.stopping.running();
        self.run_counted(running).await
    }

    /// Run the worker in a background task; [`crate::Orchestra::shutdown`] drains it.
    pub fn spawn(self) -> tokio::task::JoinHandle<Result<()>> {
        // Counted now, so a shutdown right after this call still waits for it.
        let running = self.stopping.running();
        tokio::spawn(self.run_counted(running))
    }

    /// [`Worker::run`], counted by `_running` among the workers shutdown waits for.
    async fn run_counted(self, _running: Running) -> Result<()> {
        if self.handlers.is_empty() {
            return Err(ClientError::Invalid {
                field: "types".into(),
                reason: "a worker needs at least one handler".into(),
            });
        }
        let stopping = self.stopping.clone();
        // A signal only starts the drain: the work future goes on until it is done.
        let signals = async move {
            stopping.on_signal().await;
            stopping.stop();
            std::future::pending::<Result<()>>().await
        };
        tokio::select! {
            result = self.work() => result,
            never = signals => never,
        }
    }

    /// The lease loop, then the drain.
    async fn work(self) -> Result<()> {
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let mut running = JoinSet::new();
        let mut stop = self.stopping.subscribe();
        let mut failures = 0u32;
        let mut refused = None;
        while !*stop.borrow() {
            let first = tokio::select! {
                permit = slots.clone().acquire_owned() => permit,
                _ = stop.changed() => continue,
            };
            // The semaphore is never closed.
            let Ok(first) = first else {
                break;
            };
            let mut permits = vec![first];
            while let Ok(more) = slots.clone().try_acquire_owned() {
                permits.push(more);
            }
            match self.take(permits.len()).await {
                Ok(leases) => {
                    failures = 0;
                    for (lease, permit) in leases.into_iter().zip(permits.drain(..)) {
                        running.spawn(self.job(lease, permit));
                    }
                }
                Err(
                    err @ ClientError::Http {
                        status: 400..=404, ..
                    },
                ) => {
                    // Asking again cannot help; the jobs in hand still finish.
                    refused = Some(err);
                    break;
                }
                Err(err) => {
                    failures = (failures + 1).min(6);
                    tracing::warn!(worker = %self.name, error = %err, "lease request failed; retrying");
                    let pause = Duration::from_millis(100 << failures);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
            // Finished jobs are reaped as they go, so the set stays as big as what runs.
            while running.try_join_next().is_some() {}
        }
        let drained = tokio::time::timeout(self.drain, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(worker = %self.name, left = running.len(), "drain period over; abandoning jobs");
            running.shutdown().await;
        }
        refused.map_or(Ok(()), Err)
    }

    /// `POST /jobs/lease` for up to `max` jobs of the handled types.
    async fn take(&self, max: usize) -> Result<Vec<JobLease>> {
        #[derive(Deserialize)]
        struct Leased {
            jobs: Vec<JobLease>,
        }
        let body = json!({
            "worker": self.name,
            "types": self.handlers.keys().collect::<Vec<_>>(),
            "max": max,
            "leaseMs": self.lease.as_millis() as u64,
            "waitMs": LONG_POLL.as_millis() as u64,
        });
        let request = self
            .client
            .request_to(Server::Jobs, Method::POST, &["jobs", "lease"])?
            .json(&body);
        let leased: Leased = self.client.send(request).await?;
        Ok(leased.jobs)
    }

    /// Run one leased job to its end, holding `permit` (a concurrency slot) meanwhile.
    fn job(
        &self,
        lease: JobLease,
        permit: OwnedSemaphorePermit,
    ) -> impl Future<Output = ()> + Send + 'static {
        let job_lease = lease;
        let run = self.handlers.get(&job_lease.job.job_type).cloned();
        let held = Held {
            client: self.client.clone(),
            id: job_lease.job.id.clone(),
            token: job_lease.token.clone(),
            lease: self.lease,
        };
        async move {
            let _permit = permit;
            let Some(run) = run else {
                // The server only hands out the types asked for; a stray one goes back.
                let error = format!("no handler for `{}`", job_lease.job.job_type);
                held.finish(Outcome::Failed(error)).await;
                return;
            };
            // Its own task, so a panic ends the task, not this worker; aborted with this
            // future, so a job given up at the end of the drain stops running too.
            let parent = job_lease
                .job
                .traceparent
                .as_deref()
                .and_then(omc_orchestra::telemetry::TraceParent::parse);
            // A span for the run when export is on (feature `otlp`); the handler's own
            // calls (events, jobs, logs) continue the run's trace either way.
            let mut span = omc_orchestra::telemetry::enabled()
                .then(|| {
                    omc_orchestra::telemetry::start(
                        format!("job {}", job_lease.job.job_type),
                        omc_orchestra::telemetry::SpanKind::Consumer,
                        parent.as_ref(),
                        None,
                    )
                })
                .flatten();
            if let Some(span) = &mut span {
                span.set_str("orchestra.job.id", job_lease.job.id.clone());
                span.set_str("orchestra.job.type", job_lease.job.job_type.clone());
            }
            let trace = span.as_ref().map(|s| s.context().clone()).or(parent);
            let job = job_lease.job;
            let mut handler = AbortOnDrop(tokio::spawn(omc_orchestra::telemetry::within(
                trace,
                run(job),
            )));
            let mut extend = tokio::time::interval(held.lease / 3);
            extend.tick().await;
            let outcome = loop {
                tokio::select! {
                    joined = &mut handler.0 => break outcome_of(joined),
                    _ = extend.tick() => match held.extend().await {
                        Ok(renewal) if renewal.cancel_requested => {
                            handler.0.abort();
                            break Outcome::Cancelled;
                        }
                        Ok(_) => {}
                        Err(ClientError::Http { status: 404 | 409, .. }) => {
                            // The lease went to another worker (or the job was removed):
                            // this run's result no longer counts.
                            handler.0.abort();
                            tracing::warn!(job = %held.id, "lease lost; the job stopped here");
                            return;
                        }
                        Err(err) => tracing::warn!(job = %held.id, error = %err, "lease extension failed"),
                    },
                }
            };
            if let Some(mut span) = span {
                match &outcome {
                    Outcome::Done(_) => span.set_str("orchestra.job.outcome", "completed"),
                    Outcome::Failed(error) => {
                        span.set_str("orchestra.job.outcome", "failed");
                        span.fail(error.clone());
                    }
                    Outcome::Cancelled => {
                        span.set_str("orchestra.job.outcome", "cancelled");
                        span.fail("cancelled");
                    }
                }
                span.end();
            }
            held.finish(outcome).await;
        }
    }
}

/// A job in hand: what it takes to extend, complete or fail it.
struct Held {
    client: OrchestraClient,
    id: String,
    token: String,
    lease: Duration,
}

impl Held {
    async fn extend(&self) -> Result<LeaseRenewal> {
        let body = json!({"token": self.token, "leaseMs": self.lease.as_millis() as u64});
        let request = self
            .client
            .request_to(Server::Jobs, Method::POST, &["jobs", &self.id, "extend"])?
            .json(&body);
        self.client.send(request).await
    }

    /// Complete the job with its result or fail it with the error; a refusal is logged,
    /// since the job then belongs to someone else or runs again after its lease.
    async fn finish(&self, outcome: Outcome) {
        let (verb, body) = match outcome {
            Outcome::Done(result) => ("complete", json!({"token": self.token, "result": result})),
            Outcome::Failed(error) => ("fail", json!({"token": self.token, "error": error})),
            // Asked to stop: running it again would undo the cancellation.
            Outcome::Cancelled => (
                "fail",
                json!({"token": self.token, "error": "cancelled", "retry": false}),
            ),
        };
        let sent =
            match self
                .client
                .request_to(Server::Jobs, Method::POST, &["jobs", &self.id, verb])
            {
                Ok(request) => self.client.execute(request.json(&body)).await.map(drop),
                Err(err) => Err(err),
            };
        if let Err(err) = sent {
            tracing::warn!(job = %self.id, error = %err, "could not {verb} the job");
        }
    }
}

/// How a run ended.
enum Outcome {
    /// The handler's result.
    Done(Value),
    /// Why it failed: retried after its backoff while attempts are left.
    Failed(String),
    /// Someone cancelled the job: failed for good.
    Cancelled,
}

/// The handler task's end as a job outcome: a panic fails the job with its message.
fn outcome_of(joined: std::result::Result<JobResult, tokio::task::JoinError>) -> Outcome {
    match joined {
        Ok(Ok(result)) => Outcome::Done(result),
        Ok(Err(error)) => Outcome::Failed(error.to_string()),
        Err(join) => match join.try_into_panic() {
            Ok(panic) => Outcome::Failed(panicked(panic.as_ref())),
            Err(_) => Outcome::Cancelled,
        },
    }
}

/// A task handle that aborts its task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
