//! The worker pool: one handler per job type, concurrency that grows from a minimum to a
//! maximum while the queue is deep and shrinks back when it is idle, lease renewal for long
//! jobs, and a graceful shutdown that lets running jobs finish (or gives them back).
//!
//! A handler that panics fails its attempt with the panic message (the job is retried as
//! its policy says) and its slot goes on taking jobs: no job can poison a worker.
//!
//! ```no_run
//! # async fn demo(queue: std::sync::Arc<dyn omc_orchestra::jobs::JobQueue>) {
//! use omc_orchestra::jobs::WorkerPool;
//! let pool = WorkerPool::builder(queue)
//!     .handle("price-calculation", |ctx| async move { Ok(ctx.job.data.clone()) })
//!     .concurrency(1, 16)
//!     .start();
//! pool.shutdown(std::time::Duration::from_secs(10)).await;
//! # }
//! ```

mod run;

pub use run::panicked;

use super::{FetchRequest, Job, JobQueue};
use crate::events::{EventBus, NewEvent};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};

/// What a handler returns: the job's result, or why it failed.
pub type HandlerResult = std::result::Result<serde_json::Value, String>;

/// A job handler.
pub type JobHandler = Arc<dyn Fn(JobContext) -> BoxFuture<'static, HandlerResult> + Send + Sync>;

/// What a handler gets: the job, progress reporting and the cancellation signal.
#[derive(Clone)]
pub struct JobContext {
    /// The job, as fetched.
    pub job: Job,
    token: String,
    queue: Arc<dyn JobQueue>,
    cancel: watch::Receiver<bool>,
}

impl std::fmt::Debug for JobContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobContext")
            .field("job", &self.job.id)
            .finish_non_exhaustive()
    }
}

impl JobContext {
    /// Whether someone cancelled the job (or its lease was lost): stop soon.
    pub fn is_cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    /// Resolves once the job is cancelled.
    pub async fn cancelled(&mut self) {
        let _ = self.cancel.wait_for(|c| *c).await;
    }

    /// Record progress (also renews nothing; the pool renews leases by itself).
    pub async fn progress(&self, value: serde_json::Value) -> crate::Result<()> {
        self.queue
            .progress(&self.job.id, &self.token, value)
            .await
            .map(|_| ())
    }
}

/// Builds a [`WorkerPool`].
pub struct WorkerPoolBuilder {
    queue: Arc<dyn JobQueue>,
    handlers: HashMap<String, JobHandler>,
    fallback: Option<JobHandler>,
    min: usize,
    max: usize,
    lease: Duration,
    poll: Duration,
    events: Option<Arc<dyn EventBus>>,
}

impl WorkerPoolBuilder {
    /// Run `handler` for jobs of `job_type`.
    pub fn handle<F, Fut>(mut self, job_type: &str, handler: F) -> Self
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        let handler: JobHandler = Arc::new(move |ctx| Box::pin(handler(ctx)));
        self.handlers.insert(job_type.to_owned(), handler);
        self
    }

    /// Run `handler` for every type without a handler of its own (the pool then takes
    /// jobs of any type).
    pub fn fallback<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.fallback = Some(Arc::new(move |ctx| Box::pin(handler(ctx))));
        self
    }

    /// Run between `min` and `max` jobs at once (default 1 to 10).
    pub fn concurrency(mut self, min: usize, max: usize) -> Self {
        self.min = min.max(1);
        self.max = max.max(self.min);
        self
    }

    /// Lease length (default 30 s); leases are renewed every third of it.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(30));
        self
    }

    /// How long to sleep when the queue is empty (default 100 ms).
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// Publish `JOB_ACTIVE`, `JOB_COMPLETED`, `JOB_FAILED`, `JOB_RETRIED` and
    /// `JOB_STALLED` events on `bus`.
    pub fn events(mut self, bus: Arc<dyn EventBus>) -> Self {
        self.events = Some(bus);
        self
    }

    /// Start the pool with a fresh worker id.
    pub fn start(self) -> WorkerPool {
        let worker_id = format!(
            "{}-{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into()),
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let types = if self.fallback.is_some() {
            Vec::new()
        } else {
            let mut t: Vec<String> = self.handlers.keys().cloned().collect();
            t.sort();
            t
        };
        let (completions, pending) = mpsc::unbounded_channel();
        let template = FetchRequest {
            worker: worker_id.clone(),
            lease: self.lease,
            max: 0,
            types: types.clone(),
        };
        tokio::spawn(run::complete_in_batches(
            self.queue.clone(),
            template,
            pending,
        ));
        let shared = Arc::new(Shared {
            completions,
            queue: self.queue,
            handlers: self.handlers,
            fallback: self.fallback,
            events: self.events,
            worker_id: worker_id.clone(),
            lease: self.lease,
            types,
            running: AtomicUsize::new(0),
            target: AtomicUsize::new(self.min),
            min: self.min,
            max: self.max,
            poll: self.poll,
            finished: Notify::new(),
            stopping: watch::channel(false).0,
            aborting: watch::channel(false).0,
        });
        let dispatcher = tokio::spawn(run::dispatch(shared.clone()));
        WorkerPool { shared, dispatcher }
    }
}

struct Shared {
    queue: Arc<dyn JobQueue>,
    handlers: HashMap<String, JobHandler>,
    fallback: Option<JobHandler>,
    events: Option<Arc<dyn EventBus>>,
    worker_id: String,
    lease: Duration,
    types: Vec<String>,
    running: AtomicUsize,
    target: AtomicUsize,
    min: usize,
    max: usize,
    poll: Duration,
    finished: Notify,
    completions: mpsc::UnboundedSender<run::PendingCompletion>,
    stopping: watch::Sender<bool>,
    aborting: watch::Sender<bool>,
}

impl Shared {
    fn request(&self, max: usize) -> FetchRequest {
        FetchRequest {
            worker: self.worker_id.clone(),
            lease: self.lease,
            max,
            types: self.types.clone(),
        }
    }

    fn stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    async fn publish(&self, event_type: &str, job: &Job) {
        if let Some(bus) = &self.events {
            let data = serde_json::json!({
                "id": job.id, "type": job.job_type, "state": job.state,
                "attempts": job.attempts, "error": job.error, "worker": self.worker_id,
            });
            if let Err(err) = bus
                .publish(NewEvent::new(event_type, "job-scheduler", data))
                .await
            {
                tracing::debug!(error = %err, "job event not published");
            }
        }
    }
}

/// Running workers over one queue.
pub struct WorkerPool {
    shared: Arc<Shared>,
    dispatcher: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("worker_id", &self.shared.worker_id)
            .finish_non_exhaustive()
    }
}

impl WorkerPool {
    /// A builder over `queue`.
    pub fn builder(queue: Arc<dyn JobQueue>) -> WorkerPoolBuilder {
        WorkerPoolBuilder {
            queue,
            handlers: HashMap::new(),
            fallback: None,
            min: 1,
            max: 10,
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(100),
            events: None,
        }
    }

    /// This pool's worker id (fresh at every start).
    pub fn worker_id(&self) -> &str {
        &self.shared.worker_id
    }

    /// How many jobs it runs at most right now.
    pub fn concurrency(&self) -> usize {
        self.shared.target.load(Ordering::Relaxed)
    }

    /// How many jobs run right now.
    pub fn running(&self) -> usize {
        self.shared.running.load(Ordering::Relaxed)
    }

    /// Stop taking jobs, let running ones finish for up to `grace`, then give the rest
    /// back to the queue (waiting again, the attempt not counted).
    pub async fn shutdown(self, grace: Duration) {
        self.shared.stopping.send_replace(true);
        self.shared.finished.notify_waiters();
        let _ = self.dispatcher.await;
        let deadline = tokio::time::Instant::now() + grace;
        while self.shared.running.load(Ordering::Acquire) > 0 {
            if tokio::time::Instant::now() >= deadline {
                self.shared.aborting.send_replace(true);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.shared.running.load(Ordering::Acquire) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
