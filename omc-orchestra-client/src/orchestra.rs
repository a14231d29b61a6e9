//! [`Orchestra`]: everything a business service does with the orchestra, one line each,
//! with the service's name given once.

use crate::catalog::Catalog;
use crate::logs::{OrchestraLayer, ShipperStats};
use crate::registered::Live;
use crate::work::EventBuilder;
use crate::{Logger, OrchestraClient, Registered, Result, Worker};
use omc_orchestra::events::Event;
use omc_orchestra::jobs::{Job, NewJob};
use omc_orchestra::registry::{Registration, ServiceInstance};
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::{watch, Notify};

/// One service's handle on the orchestra: register, publish, log, enqueue, discover and
/// run jobs, then [`Orchestra::shutdown`]. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Orchestra {
    inner: Arc<Inner>,
}

struct Inner {
    client: OrchestraClient,
    service: String,
    host: String,
    registrations: Mutex<Vec<Weak<Live>>>,
    shippers: Mutex<Vec<ShipperStats>>,
    workers_made: AtomicUsize,
    stopping: Stopping,
    /// Local copies of the services discovered, kept current by blocking queries.
    catalog: Catalog,
}

impl std::fmt::Debug for Orchestra {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestra")
            .field("service", &self.inner.service)
            .field("host", &self.inner.host)
            .field("client", &self.inner.client)
            .finish_non_exhaustive()
    }
}

impl Orchestra {
    /// The orchestra for `service`, configured from the environment: the servers at
    /// `SERVICE_REGISTRY_URL`, `JOB_SCHEDULER_URL` and `LOGGING_SERVICE_URL` (default the
    /// local ports 3010, 3013 and 3014), `ORCHESTRA_TOKEN` or else `JWT_SECRET` when
    /// set, and this host's name from `SERVICE_HOST`, else `HOSTNAME`, else `localhost`.
    pub fn from_env(service: impl Into<String>) -> Self {
        Self::with_client(service, OrchestraClient::from_env())
    }

    /// The orchestra for `service` through `client` (its URLs and credentials), e.g. for
    /// servers on other ports than the environment says.
    pub fn with_client(service: impl Into<String>, client: OrchestraClient) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let host = var("SERVICE_HOST")
            .or_else(|| var("HOSTNAME"))
            .unwrap_or_else(|| "localhost".to_owned());
        Self::build(service.into(), client, host)
    }

    fn build(service: String, client: OrchestraClient, host: String) -> Self {
        let client = client.with_service_name(service.clone());
        let stopping = Stopping::default();
        let inner = Inner {
            catalog: Catalog::new(client.clone(), stopping.subscribe()),
            client,
            service,
            host,
            registrations: Mutex::new(Vec::new()),
            shippers: Mutex::new(Vec::new()),
            workers_made: AtomicUsize::new(0),
            stopping,
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Register under another host name than the environment's (e.g. `127.0.0.1`). Call
    /// it first: what was registered or started before stays with the old handle.
    pub fn with_host(self, host: impl Into<String>) -> Self {
        Self::build(
            self.inner.service.clone(),
            self.inner.client.clone(),
            host.into(),
        )
    }

    /// The service's name.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// The HTTP client underneath, for what the one-liners do not cover (a job with a
    /// priority or delay, listing services, …).
    pub fn client(&self) -> &OrchestraClient {
        &self.inner.client
    }

    /// What [`Orchestra::register`] sends for `port`: this service on this host, health at
    /// `/health`. Change it (tags, version, dependencies) and pass it to
    /// [`Orchestra::register_with`].
    pub fn registration(&self, port: u16) -> Registration {
        Registration::new(self.inner.service.clone(), self.inner.host.clone(), port)
    }

    /// Register this service on `port` and keep it registered with heartbeats until
    /// [`Registered::deregister`] or [`Orchestra::shutdown`].
    pub async fn register(&self, port: u16) -> Result<Registered> {
        self.register_with(self.registration(port)).await
    }

    /// Register `registration` (see [`Orchestra::registration`]) as
    /// [`Orchestra::register`] does.
    pub async fn register_with(&self, registration: Registration) -> Result<Registered> {
        let registered = self.inner.client.register(registration).await?;
        let mut live = lock(&self.inner.registrations);
        live.retain(|r| r.strong_count() > 0);
        live.push(registered.live());
        Ok(registered)
    }

    /// Publish an event of `event_type` with `data` at normal priority, from this service.
    pub async fn emit(&self, event_type: &str, data: Value) -> Result<Event> {
        self.event(event_type, data).send().await
    }

    /// An event of `event_type` with `data` from this service, to give a priority, tags
    /// or a target before [`EventBuilder::send`].
    pub fn event(&self, event_type: &str, data: Value) -> EventBuilder {
        EventBuilder::new(
            self.inner.client.clone(),
            event_type,
            &self.inner.service,
            data,
        )
    }

    /// A logger writing this service's records (`orc.log().info(message, fields)`).
    pub fn log(&self) -> Logger {
        self.inner.client.logger(self.inner.service.clone())
    }

    /// A `tracing` layer shipping this service's own events in batches;
    /// [`Orchestra::shutdown`] flushes it.
    pub fn tracing_layer(&self) -> (OrchestraLayer, ShipperStats) {
        let (layer, stats) = self.inner.client.tracing_layer(self.inner.service.clone());
        lock(&self.inner.shippers).push(stats.clone());
        (layer, stats)
    }

    /// Enqueue a normal-priority job of `job_type` with `data`; for priorities, delays or
    /// unique keys, `orc.client().enqueue(NewJob { .. })`.
    pub async fn enqueue(&self, job_type: &str, data: Value) -> Result<Job> {
        self.inner.client.enqueue(NewJob::new(job_type, data)).await
    }

    /// An instance of `service` to call (weighted round-robin over its healthy ones), or
    /// `None` when it has no healthy one. The first call for a service asks the registry;
    /// later calls answer from a local copy that blocking queries keep current (a change
    /// arrives within one round trip), so they cost no request.
    pub async fn discover(&self, service: &str) -> Result<Option<ServiceInstance>> {
        self.inner.catalog.pick(service).await
    }

    /// A worker of this service taking jobs over the jobs server's lease API: add
    /// handlers with [`Worker::handle`], then [`Worker::run`] or [`Worker::spawn`].
    pub fn worker(&self) -> Worker {
        let n = self.inner.workers_made.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{}@{}:{}/{n}",
            self.inner.service,
            self.inner.host,
            std::process::id()
        );
        Worker::new(self.inner.client.clone(), name, self.inner.stopping.clone())
    }

    /// Everything at once, before the process exits: stop the workers and let their jobs
    /// finish (within each worker's drain period), deregister every live registration,
    /// and flush the tracing layer. Returns the first error, after trying everything.
    pub async fn shutdown(&self) -> Result<()> {
        self.inner.stopping.stop();
        self.inner.stopping.drained().await;
        let live: Vec<Arc<Live>> = lock(&self.inner.registrations)
            .drain(..)
            .filter_map(|r| r.upgrade())
            .collect();
        let mut first_error = None;
        for registration in live {
            if let Err(err) = registration.deregister().await {
                first_error.get_or_insert(err);
            }
        }
        let shippers: Vec<ShipperStats> = lock(&self.inner.shippers).clone();
        for shipper in shippers {
            shipper.flush().await;
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The stop signal the workers of one [`Orchestra`] share, and how many still run.
#[derive(Clone, Default)]
pub(crate) struct Stopping {
    inner: Arc<StopState>,
}

struct StopState {
    stop: watch::Sender<bool>,
    running: AtomicUsize,
    idle: Notify,
}

impl Default for StopState {
    fn default() -> Self {
        Self {
            stop: watch::Sender::new(false),
            running: AtomicUsize::new(0),
            idle: Notify::new(),
        }
    }
}

/// Counts one worker as running until dropped.
pub(crate) struct Running(Arc<StopState>);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Stopping {
    /// Tell every worker to stop taking jobs and drain.
    pub(crate) fn stop(&self) {
        self.inner.stop.send_replace(true);
    }

    /// The stop signal, for a worker's loop.
    pub(crate) fn subscribe(&self) -> watch::Receiver<bool> {
        self.inner.stop.subscribe()
    }

    /// Count a worker as running for as long as the guard lives.
    pub(crate) fn running(&self) -> Running {
        self.inner.running.fetch_add(1, Ordering::AcqRel);
        Running(Arc::clone(&self.inner))
    }

    /// Wait until no worker runs.
    pub(crate) async fn drained(&self) {
        loop {
            let idle = self.inner.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.inner.running.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Resolve on Ctrl-C or, on Unix, SIGTERM (what container runtimes send); never when
    /// the signals cannot be listened to.
    pub(crate) async fn on_signal(&self) {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut term) = signal(SignalKind::terminate()) else {
                return std::future::pending().await;
            };
            tokio::select! {
                interrupted = tokio::signal::ctrl_c() => {
                    if interrupted.is_err() {
                        term.recv().await;
                    }
                }
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn lock<T>(shared: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
