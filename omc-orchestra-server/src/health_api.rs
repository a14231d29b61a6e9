//! Health monitoring on the registry server (3010): the checker, the system monitor and
//! the alert engine as background tasks, and `GET /system/metrics`, `GET /system/dashboard`,
//! `GET /health/dependencies` and `GET /alerts`.

use crate::app::Config;
use crate::http::{ApiQuery, ApiResult, ErrorBody, HttpMetrics};
use crate::system_gauges::{ProbeGauges, SystemGauges};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use omc_orchestra::health::{
    spawn_instance_views, summarize, ActiveAlert, AlertEngine, AlertNotice, AlertReceivers,
    AlertRule, CheckerOptions, DependencyHealth, HealthChecker, HealthSummary, ServiceCounts,
    SummarySources, SystemMonitor, SystemSample, DEFAULT_SYSTEM_HISTORY,
};
use omc_orchestra::Backends;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use utoipa::OpenApi;

/// How often the probe gauges are refreshed from the checker: a copy under a lock, cheap
/// enough to run well inside a scrape interval.
const PROBE_GAUGES_EVERY: Duration = Duration::from_secs(2);

/// The health engines the registry server runs and its handlers read.
#[derive(Clone, Debug)]
pub struct HealthState {
    /// Probes every instance and dependency.
    pub checker: Arc<HealthChecker>,
    /// Samples the host.
    pub monitor: Arc<SystemMonitor>,
    /// Evaluates alert rules.
    pub alerts: Arc<AlertEngine>,
    /// The stores.
    pub backends: Backends,
}

impl HealthState {
    /// Build the engines and start their background tasks (returned, for the app to stop).
    pub async fn start(
        config: &Config,
        backends: &Backends,
        metrics: &HttpMetrics,
    ) -> (Self, Vec<JoinHandle<()>>) {
        let clock = backends.clock.clone();
        let alerts = Arc::new(
            AlertEngine::new(config.alert_rules.clone(), clock.clone())
                .with_events(backends.events.clone(), "registry"),
        );
        let options = CheckerOptions {
            interval: config.health_interval,
            dependencies: config.health_dependencies.clone(),
            ..CheckerOptions::default()
        };
        let mut checker = HealthChecker::new(backends.registry.clone(), clock.clone(), options)
            .with_alerts(alerts.clone());
        match backends.redis_store().await {
            Ok(Some(store)) => {
                checker = checker.with_redis_lock(store, uuid::Uuid::new_v4().to_string());
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(error = %err, "health checks not shared between replicas"),
        }
        let checker = Arc::new(checker);
        let monitor = Arc::new(
            SystemMonitor::new(clock, DEFAULT_SYSTEM_HISTORY)
                .with_alerts(alerts.clone())
                .with_events(backends.events.clone()),
        );
        let gauges = SystemGauges::register(metrics.registry())
            .map_err(|err| tracing::warn!(error = %err, "system gauges not registered"))
            .ok();
        let tick = config.health_interval.min(Duration::from_secs(1));
        let mut tasks = vec![
            checker.clone().spawn(tick),
            monitor
                .clone()
                .spawn(config.system_sample_every, move |sample| {
                    if let Some(gauges) = &gauges {
                        gauges.update(sample);
                    }
                }),
        ];
        if let Ok(probe_gauges) = ProbeGauges::register(metrics.registry()) {
            tasks.push(spawn_instance_views(
                checker.clone(),
                PROBE_GAUGES_EVERY,
                move |instances| probe_gauges.update(instances),
            ));
        }
        // The options were checked when the configuration was read; a failure here is
        // logged rather than stopping the health engines.
        match AlertReceivers::spawn(alerts.clone(), config.alert_receivers.clone()) {
            Ok(receivers) => tasks.extend(receivers),
            Err(err) => tracing::warn!(error = %err, "alerts go to no receiver"),
        }
        tasks.push(alerts.clone().spawn(config.alert_eval_every));
        let state = Self {
            checker,
            monitor,
            alerts,
            backends: backends.clone(),
        };
        (state, tasks)
    }
}

/// The OpenAPI paths of the health endpoints (merged into the registry's document).
#[derive(OpenApi)]
#[openapi(
    paths(system_metrics, dashboard, dependencies, alerts),
    components(schemas(
        SystemMetrics,
        HealthSummary,
        AlertsAnswer,
        ServiceCounts,
        DependencyHealth
    ))
)]
pub struct HealthDoc;

/// The health router.
pub fn router(state: HealthState) -> Router {
    Router::new()
        .route("/system/metrics", get(system_metrics))
        .route("/system/dashboard", get(dashboard))
        .route("/health/dependencies", get(dependencies))
        .route("/alerts", get(alerts))
        .with_state(state)
}

/// How many entries to answer.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Most entries (newest kept).
    pub limit: Option<usize>,
}

/// The host now and its recent past.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SystemMetrics {
    /// The newest sample (absent until the first one is taken).
    pub latest: Option<SystemSample>,
    /// Recent samples, oldest first.
    pub history: Vec<SystemSample>,
}

/// Host metrics.
#[utoipa::path(get, path = "/system/metrics", params(Limit),
    responses((status = 200, body = SystemMetrics), (status = 400, body = ErrorBody)))]
async fn system_metrics(
    State(state): State<HealthState>,
    ApiQuery(limit): ApiQuery<Limit>,
) -> Json<SystemMetrics> {
    Json(SystemMetrics {
        latest: state.monitor.latest(),
        history: state.monitor.history(limit.limit.unwrap_or(60)),
    })
}

/// Dashboard figures.
#[utoipa::path(get, path = "/system/dashboard",
    responses((status = 200, body = HealthSummary), (status = 503, body = ErrorBody)))]
async fn dashboard(State(state): State<HealthState>) -> ApiResult<Json<HealthSummary>> {
    Ok(Json(state.dashboard().await?))
}

impl HealthState {
    /// The dashboard figures (also what the WebSocket's `get_system_dashboard` counts).
    pub async fn dashboard(&self) -> omc_orchestra::Result<HealthSummary> {
        let sources = SummarySources {
            checker: Some(&self.checker),
            monitor: Some(&self.monitor),
            alerts: Some(&self.alerts),
        };
        summarize(self.backends.registry.as_ref(), sources).await
    }
}

/// Dependencies (databases, caches, external services) and their probes.
#[utoipa::path(get, path = "/health/dependencies",
    responses((status = 200, body = [DependencyHealth])))]
async fn dependencies(State(state): State<HealthState>) -> Json<Vec<DependencyHealth>> {
    Json(state.checker.dependencies())
}

/// Alerts now and before.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertsAnswer {
    /// Alerts pending or firing now.
    pub active: Vec<ActiveAlert>,
    /// Firing and resolved notices, oldest first.
    pub history: Vec<AlertNotice>,
    /// The rules in force.
    pub rules: Vec<AlertRule>,
}

/// Alerts: active, history and rules.
#[utoipa::path(get, path = "/alerts", params(Limit),
    responses((status = 200, body = AlertsAnswer), (status = 400, body = ErrorBody)))]
async fn alerts(
    State(state): State<HealthState>,
    ApiQuery(limit): ApiQuery<Limit>,
) -> Json<AlertsAnswer> {
    Json(AlertsAnswer {
        active: state.alerts.active(),
        history: state.alerts.history(limit.limit.unwrap_or(100)),
        rules: state.alerts.rules().to_vec(),
    })
}
