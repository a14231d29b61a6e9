//! Wiring: build the backends once, start the engines' background tasks, and serve each
//! server's router on its port.

pub use crate::config::{Config, ServerKind};
use crate::dashboard::{self, DashboardConfig};
use crate::event_gauges::{self, EventGauges};
use crate::events_api::{self, EventsState};
use crate::gateway_api;
use crate::gateway_lanes;
use crate::health_api::{self, HealthState};
use crate::http::{with_stack, Guard, HttpMetrics, Origins, StackConfig};
use crate::jobs_api::{self, JobsState};
use crate::jobs_dispatch;
use crate::logs_api::{self, LogsState};
use crate::registry_api::{self, RegistryState};
use crate::status::ServerStatus;
use crate::ws::{self, Hub, WsState};
use axum::Router;
use omc_orchestra::durability::Durability;
use omc_orchestra::events::announce_registry;
use omc_orchestra::gateway::Gateway;
use omc_orchestra::jobs::{JobStore, Scheduler, SchedulerOptions, WorkerPool};
use omc_orchestra::logs::elastic::{ElasticForwarder, ElasticOptions};
use omc_orchestra::logs::{
    FileSink, FileSinkOptions, IngestOptions, LogExport, LogIngest, LogQuery,
};
use omc_orchestra::registry::{spawn_reaper, Discovery, HealthStatus, ServiceFilter};
use omc_orchestra::Backends;
use prometheus::{IntGaugeVec, Opts};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Running servers.
pub struct App {
    addrs: Vec<(ServerKind, SocketAddr)>,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<std::io::Result<()>>>,
    tasks: Vec<JoinHandle<()>>,
    pools: Vec<WorkerPool>,
    backends: Backends,
    gateway: Option<Arc<Gateway>>,
    /// Trace export, when `OTEL_EXPORTER_OTLP_ENDPOINT` asked for it.
    telemetry: Option<omc_orchestra::telemetry::Telemetry>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Build the backends, start the background tasks and serve `kinds`.
    pub async fn start(config: Config, kinds: &[ServerKind]) -> startup::Result<Self> {
        let backends = match &config.redis_url {
            Some(url) => {
                let (prefix, level) = (&config.redis_prefix, config.durability);
                Backends::redis_durable(url, prefix, config.registry, level).await?
            }
            None if config.durability != Durability::Memory => {
                return Err(omc_orchestra::Error::invalid(
                    "durability",
                    format!(
                        "`{}` needs Redis (--redis): the in-memory stores keep nothing \
                         across a restart",
                        config.durability
                    ),
                )
                .into())
            }
            None => {
                let backends =
                    Backends::memory_with(omc_orchestra::clock::system(), config.registry);
                backends.durability.log();
                backends
            }
        };
        Self::start_with(config, kinds, backends).await
    }

    /// Serve `kinds` over backends built elsewhere.
    pub async fn start_with(
        config: Config,
        kinds: &[ServerKind],
        backends: Backends,
    ) -> startup::Result<Self> {
        let (stop, stopped) = watch::channel(false);
        let mut app = Self {
            addrs: Vec::new(),
            stop,
            servers: Vec::new(),
            tasks: Vec::new(),
            pools: Vec::new(),
            backends: backends.clone(),
            gateway: None,
            telemetry: omc_orchestra::telemetry::install_from_env("orchestra")?,
        };
        app.tasks
            .push(crate::narrate::spawn(backends.events.as_ref()));
        let mut listeners = Vec::with_capacity(kinds.len());
        for &kind in kinds {
            let addr = SocketAddr::new(config.bind, config.port(kind));
            let listener =
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|err| startup::Error::Bind {
                        kind: kind.name(),
                        addr,
                        err,
                    })?;
            app.addrs.push((kind, listener.local_addr()?));
            listeners.push((kind, listener));
        }
        let mut config = config;
        if config.alert_receivers.external_url.is_empty() {
            if let Some(addr) = app.addr(ServerKind::Registry) {
                config.alert_receivers.external_url = format!("http://{addr}");
            }
        }
        let dashboard = DashboardConfig {
            jobs_port: app.addr(ServerKind::Jobs).map(|a| a.port()),
            gateway_port: app.addr(ServerKind::Gateway).map(|a| a.port()),
            logging_port: app.addr(ServerKind::Logging).map(|a| a.port()),
            auth_required: config.service_tokens.is_some(),
        };
        for (kind, listener) in listeners {
            let mut proxy = None;
            let metrics = HttpMetrics::new(kind.name());
            let status = ServerStatus {
                server: kind.name(),
                backend: backends.kind,
                durability: backends.durability.clone(),
                started: Instant::now(),
            };
            status
                .register_durability(metrics.registry())
                .map_err(std::io::Error::other)?;
            let router = match kind {
                ServerKind::Registry => {
                    if let Some(task) = app.registry_tasks(&config, &metrics) {
                        app.tasks.push(task);
                    }
                    let (health, tasks) = HealthState::start(&config, &backends, &metrics).await;
                    app.tasks.extend(tasks);
                    let gauges = EventGauges::register(metrics.registry())
                        .map_err(|err| tracing::warn!(error = %err, "event gauges not registered"))
                        .ok();
                    app.tasks.push(event_gauges::spawn(
                        backends.events.clone(),
                        gauges,
                        health.alerts.clone(),
                    ));
                    let discovery = Discovery::new(backends.registry.clone())
                        .with_panic_threshold(config.panic_threshold);
                    app.tasks.push(announce_registry(
                        backends.registry.clone(),
                        backends.events.clone(),
                    ));
                    let (hub, feeding) = Hub::spawn(backends.events.as_ref(), config.ws);
                    app.tasks.push(feeding);
                    app.tasks
                        .push(hub.feed_logs(backends.logs.tail(LogQuery::default())));
                    registry_api::router(RegistryState {
                        discovery: Arc::new(discovery),
                        clock: backends.clock.clone(),
                        status,
                        checker: health.checker.clone(),
                    })
                    .merge(dashboard::router(
                        dashboard.clone(),
                        dashboard::Siblings::new(config.bind, dashboard.clone()),
                    ))
                    .merge(events_api::router(EventsState {
                        bus: backends.events.clone(),
                    }))
                    .merge(ws::router(WsState {
                        hub,
                        registry: backends.registry.clone(),
                        bus: backends.events.clone(),
                        metrics: metrics.clone(),
                        started: Instant::now(),
                        origins: Origins::new(&config.cors_origins),
                    }))
                    .merge(health_api::router(health))
                }
                ServerKind::Logging => logs_api::router(LogsState {
                    ingest: Arc::new(app.log_ingest(&config)?),
                    clock: backends.clock.clone(),
                    status,
                    shutdown: stopped.clone(),
                }),
                ServerKind::Gateway => {
                    let started = gateway_api::start(&config, &backends, status, &metrics).await?;
                    app.tasks.extend(started.tasks);
                    app.gateway = Some(started.gateway);
                    proxy = Some(started.state);
                    started.router
                }
                ServerKind::Jobs => app.jobs_router(&config, status),
            };
            let body_limit = match kind {
                ServerKind::Logging => config.body_limit.max(logs_api::BODY_LIMIT),
                _ => config.body_limit,
            };
            let router = with_stack(
                router,
                StackConfig {
                    server: kind.name(),
                    body_limit,
                    guard: Guard::new(config.service_tokens.clone()),
                    origins: Origins::new(&config.cors_origins).with_dashboard_port(
                        app.addr(ServerKind::Registry)
                            .filter(|_| kind != ServerKind::Registry)
                            .map(|a| a.port()),
                    ),
                    metrics,
                    backends: backends.clone(),
                    request_timeout: config.connections.request_timeout,
                    own_fallback: kind == ServerKind::Gateway,
                },
            );
            // Proxied requests bypass the stack: the pipeline does its own bookkeeping.
            let server = match proxy.take() {
                Some(state) => {
                    let router = router.fallback_service(gateway_api::proxy_service(
                        state.clone(),
                        &Origins::new(&config.cors_origins),
                    ));
                    let workers = config.gateway.workers;
                    tokio::spawn(gateway_lanes::serve(
                        listener,
                        workers,
                        state,
                        router,
                        stopped.clone(),
                        config.connections,
                    ))
                }
                None => tokio::spawn(crate::http::serve::serve(
                    listener,
                    router,
                    config.connections,
                    stopped.clone(),
                )),
            };
            app.servers.push(server);
        }
        if kinds.contains(&ServerKind::Registry) {
            app.tasks
                .push(spawn_reaper(backends.registry.clone(), config.reap_every));
        }
        Ok(app)
    }

    /// The logging server's ingest buffer: the store, plus the file sink when a log folder
    /// is configured (with its hourly archive cleanup) and the Elasticsearch forwarder
    /// when a URL is.
    fn log_ingest(&mut self, config: &Config) -> startup::Result<LogIngest> {
        let mut exports: Vec<Arc<dyn LogExport>> = Vec::new();
        if let Some(dir) = &config.log_dir {
            let file = FileSink::open(FileSinkOptions::new(dir), self.backends.clock.clone())?;
            self.tasks
                .push(file.spawn_cleanup(Duration::from_secs(3600)));
            exports.push(Arc::new(file));
        }
        if let Some(url) = &config.elasticsearch_url {
            let forwarder = ElasticForwarder::spawn(ElasticOptions::new(url))?;
            exports.push(Arc::new(forwarder));
        }
        Ok(LogIngest::new(
            self.backends.logs.clone(),
            exports,
            IngestOptions::default(),
        ))
    }

    /// The jobs server: its API, the cron scheduler, queue maintenance and the workers of
    /// HTTP-dispatched job types.
    fn jobs_router(&mut self, config: &Config, status: ServerStatus) -> Router {
        let backends = &self.backends;
        let scheduler = Scheduler::new(
            backends.jobs.clone(),
            backends.clock.clone(),
            SchedulerOptions::default(),
        );
        self.tasks.push(scheduler.clone().spawn(config.cron_every));
        self.tasks.push(spawn_maintenance(backends.jobs.clone()));
        if !config.job_routes.is_empty() {
            let discovery = Discovery::new(backends.registry.clone())
                .with_panic_threshold(config.panic_threshold);
            self.pools.push(jobs_dispatch::start(
                backends.jobs.clone(),
                Arc::new(discovery),
                backends.events.clone(),
                &config.job_routes,
            ));
        }
        jobs_api::router(JobsState {
            events: backends.events.clone(),
            queue: backends.jobs.clone(),
            scheduler,
            status,
            leases: crate::jobs_lease::Leases::with_in_process(config.job_routes.keys().cloned()),
        })
    }

    fn registry_tasks(&self, _config: &Config, metrics: &HttpMetrics) -> Option<JoinHandle<()>> {
        let gauge = IntGaugeVec::new(
            Opts::new(
                "registry_instances",
                "Registered instances by effective status.",
            ),
            &["status"],
        )
        .ok()?;
        metrics.registry().register(Box::new(gauge.clone())).ok()?;
        let registry = self.backends.registry.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tick.tick().await;
                if let Ok(all) = registry.list(&ServiceFilter::default()).await {
                    for status in [
                        HealthStatus::Passing,
                        HealthStatus::Warning,
                        HealthStatus::Critical,
                    ] {
                        let count = all.iter().filter(|i| i.status == status).count();
                        gauge
                            .with_label_values(&[status.as_str()])
                            .set(count as i64);
                    }
                }
            }
        }))
    }

    /// The address `kind` listens on, if it runs.
    pub fn addr(&self, kind: ServerKind) -> Option<SocketAddr> {
        self.addrs.iter().find(|(k, _)| *k == kind).map(|(_, a)| *a)
    }

    /// `http://addr` of `kind`; panics if `kind` does not run (a test's mistake).
    pub fn url(&self, kind: ServerKind) -> String {
        let addr = self
            .addr(kind)
            .unwrap_or_else(|| panic!("the {} server is not running", kind.name()));
        format!("http://{addr}")
    }

    /// Every running server and its address.
    pub fn addrs(&self) -> &[(ServerKind, SocketAddr)] {
        &self.addrs
    }

    /// The gateway, when it runs (to reload its configuration).
    pub fn gateway(&self) -> Option<&Arc<Gateway>> {
        self.gateway.as_ref()
    }

    /// The backends the servers share.
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// Stop accepting, let requests in flight finish, stop background tasks.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for server in self.servers {
            let _ = server.await;
        }
        for pool in self.pools {
            pool.shutdown(Duration::from_secs(10)).await;
        }
        for task in self.tasks {
            task.abort();
        }
        // The spans of the last requests and job runs go out before the process ends.
        if let Some(telemetry) = self.telemetry {
            let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
        }
    }
}

/// Promote due jobs, recover expired leases and trim, every few seconds, so the queue's
/// state stays current even when no worker polls.
fn spawn_maintenance(queue: Arc<dyn JobStore>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            if let Err(err) = queue.maintain().await {
                tracing::warn!(error = %err, "job maintenance failed");
            }
        }
    })
}

/// Start-up errors.
pub mod startup {
    use std::net::SocketAddr;

    /// Why the servers could not start.
    #[derive(Debug, thiserror::Error)]
    pub enum Error {
        /// A port could not be bound.
        #[error("cannot listen for the {kind} server on {addr}: {err}")]
        Bind {
            /// Which server.
            kind: &'static str,
            /// Where.
            addr: SocketAddr,
            /// Why.
            #[source]
            err: std::io::Error,
        },
        /// The backends could not be built (Redis unreachable, …).
        #[error(transparent)]
        Backend(#[from] omc_orchestra::Error),
        /// Another I/O failure.
        #[error(transparent)]
        Io(#[from] std::io::Error),
    }

    /// Start-up result.
    pub type Result<T> = std::result::Result<T, Error>;
}
