//! The gateway server on 3000: `/health`, `/openapi.json`, `/gateway/breakers` and
//! `DELETE /gateway/cache` of its own; every other request goes through the library's
//! [`Gateway`] pipeline.

use crate::app::Config;
use crate::http::{ApiError, ErrorBody, HttpMetrics, Origins};
use crate::status::{self, ServerStatus};
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use http_body_util::BodyExt;
use omc_orchestra::gateway::h1::Answer;
use omc_orchestra::gateway::{
    BreakerPhase, BreakerState, Gateway, MemoryRateLimits, ProxyInfo, RateLimitStore,
    RedisCacheStore, RedisRateLimits,
};
use omc_orchestra::per_thread::PerThread;
use omc_orchestra::Backends;
use parking_lot::Mutex;
use prometheus::core::{Collector, Desc};
use prometheus::local::{LocalHistogram, LocalIntCounter};
use prometheus::proto::MetricFamily;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use utoipa::OpenApi;

/// What the gateway handlers share.
#[derive(Clone)]
pub(crate) struct GatewayState {
    /// The pipeline.
    pub gateway: Arc<Gateway>,
    /// Facts for `GET /health`.
    pub status: ServerStatus,
    /// Per-route metrics.
    pub metrics: GatewayMetrics,
}

/// The gateway's own Prometheus metrics, next to the shared HTTP ones.
#[derive(Clone, Debug)]
pub(crate) struct GatewayMetrics {
    proxied: Proxied,
    breakers: IntGaugeVec,
    degraded: IntCounterVec,
    cache: IntCounterVec,
}

/// The per-request counts and latencies. Each serving thread tallies its own (see
/// [`Tallies`]); a scrape folds every thread's tallies in before it reads them.
#[derive(Clone)]
struct Proxied {
    requests: IntCounterVec,
    duration: HistogramVec,
    tallies: Arc<PerThread<Mutex<Tallies>>>,
}

impl std::fmt::Debug for Proxied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxied").finish_non_exhaustive()
    }
}

/// One thread's counts not yet folded into the shared metrics: counting them costs no
/// shared memory write, where the shared metrics cost several atomic writes to lines
/// every serving thread touches.
#[derive(Default)]
struct Tallies {
    /// Where each route and service's tally is in `all`. Route and service names can come
    /// from a client's path, so the maps keep their keyed hasher.
    index: HashMap<String, HashMap<String, usize>>,
    all: Vec<Tally>,
    /// The tally used last: a thread's requests tend to come in runs to one route, and
    /// comparing two names costs less than hashing them.
    last: usize,
}

/// Route and service pairs a thread tallies; past this, requests count straight into
/// the shared metrics.
const MOST_TALLIED: usize = 1024;

/// A route and service's tallies.
struct Tally {
    route: String,
    service: String,
    duration: LocalHistogram,
    statuses: Vec<(http::StatusCode, LocalIntCounter)>,
}

impl Tallies {
    /// Where the tally of `route` and `service` is, if the thread keeps one.
    fn find(&mut self, route: &str, service: &str) -> Option<usize> {
        if let Some(tally) = self.all.get(self.last) {
            if tally.route == route && tally.service == service {
                return Some(self.last);
            }
        }
        let at = *self.index.get(route)?.get(service)?;
        self.last = at;
        Some(at)
    }
}

impl Proxied {
    fn observe(&self, route: &str, service: &str, status: http::StatusCode, seconds: f64) {
        let mut tallies = self.tallies.get().lock();
        let at = match tallies.find(route, service) {
            Some(at) => at,
            None if tallies.all.len() >= MOST_TALLIED => {
                drop(tallies);
                self.requests
                    .with_label_values(&[route, service, status.as_str()])
                    .inc();
                self.duration
                    .with_label_values(&[route, service])
                    .observe(seconds);
                return;
            }
            None => {
                let at = tallies.all.len();
                tallies.all.push(Tally {
                    route: route.to_owned(),
                    service: service.to_owned(),
                    duration: self.duration.with_label_values(&[route, service]).local(),
                    statuses: Vec::new(),
                });
                tallies
                    .index
                    .entry(route.to_owned())
                    .or_default()
                    .insert(service.to_owned(), at);
                tallies.last = at;
                at
            }
        };
        let Some(tally) = tallies.all.get_mut(at) else {
            return;
        };
        tally.duration.observe(seconds);
        match tally.statuses.iter().find(|(s, _)| *s == status) {
            Some((_, count)) => count.inc(),
            None => {
                let count = self
                    .requests
                    .with_label_values(&[route, service, status.as_str()])
                    .local();
                count.inc();
                tally.statuses.push((status, count));
            }
        }
    }

    /// Fold every thread's tallies into the shared metrics.
    fn fold(&self) {
        for tallies in self.tallies.iter() {
            for tally in &tallies.lock().all {
                tally.duration.flush();
                for (_, count) in &tally.statuses {
                    count.flush();
                }
            }
        }
    }
}

impl Collector for Proxied {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = self.requests.desc();
        descs.extend(self.duration.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.fold();
        let mut families = self.requests.collect();
        families.extend(self.duration.collect());
        families
    }
}

impl GatewayMetrics {
    /// Register the gateway's metrics in `metrics`' registry.
    pub(crate) fn new(metrics: &HttpMetrics) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "gateway_requests_total",
                "Proxied requests by route, service and status.",
            ),
            &["route", "service", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "gateway_request_duration_seconds",
                "Time to answer proxied requests, by route and service.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["route", "service"],
        )?;
        let breakers = IntGaugeVec::new(
            Opts::new(
                "gateway_breaker_state",
                "Circuit breaker per upstream instance: 0 closed, 1 half-open, 2 open.",
            ),
            &["service", "instance"],
        )?;
        let degraded = IntCounterVec::new(
            Opts::new(
                "gateway_ratelimit_degraded_total",
                "Requests decided by the failure policy because the rate-limit store failed.",
            ),
            &["route"],
        )?;
        let cache = IntCounterVec::new(
            Opts::new("gateway_cache_total", "Response cache lookups by result."),
            &["result"],
        )?;
        let proxied = Proxied {
            requests,
            duration,
            tallies: Arc::new(PerThread::new(|| Mutex::new(Tallies::default()))),
        };
        let registry = metrics.registry();
        registry.register(Box::new(proxied.clone()))?;
        registry.register(Box::new(breakers.clone()))?;
        registry.register(Box::new(degraded.clone()))?;
        registry.register(Box::new(cache.clone()))?;
        Ok(Self {
            proxied,
            breakers,
            degraded,
            cache,
        })
    }

    fn observe(&self, info: &ProxyInfo, status: http::StatusCode, seconds: f64) {
        let service = if info.service.is_empty() {
            "-"
        } else {
            &info.service
        };
        self.proxied.observe(&info.route, service, status, seconds);
        if info.rate_limit_degraded {
            self.degraded.with_label_values(&[&*info.route]).inc();
        }
        if let Some(result) = info.cache {
            self.cache.with_label_values(&[result]).inc();
        }
    }

    fn breakers(&self, states: &[BreakerState]) {
        self.breakers.reset();
        for state in states {
            let value = match state.phase {
                BreakerPhase::Closed => 0,
                BreakerPhase::HalfOpen => 1,
                BreakerPhase::Open => 2,
            };
            self.breakers
                .with_label_values(&[state.service.as_str(), state.instance.as_str()])
                .set(value);
        }
    }
}

/// The OpenAPI document of the gateway server.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "omc-orchestra gateway",
        description = "API gateway: `/api/{service}/...` and configured routes are proxied."
    ),
    paths(breakers, purge_cache, crate::status::health),
    components(schemas(
        BreakerState,
        BreakerPhase,
        ErrorBody,
        Purged,
        crate::status::HealthAnswer
    ))
)]
pub(crate) struct GatewayDoc;

/// Build the gateway from `config` over `backends` and start its background tasks.
pub(crate) async fn start(
    config: &Config,
    backends: &Backends,
    status: ServerStatus,
    metrics: &HttpMetrics,
) -> omc_orchestra::Result<Started> {
    // End-user auth has its own keys: `JWT_SECRET` signs control-plane tokens only.
    let gateway_config = config.gateway.clone();
    let redis = backends.redis_store().await?;
    let rate_store: Arc<dyn RateLimitStore> = match &redis {
        Some(store) if gateway_config.rate_limit.redis => {
            Arc::new(RedisRateLimits::new(store.clone(), backends.clock.clone()))
        }
        _ => Arc::new(MemoryRateLimits::new(backends.clock.clone())),
    };
    let access_log = gateway_config.access_log;
    let cache_config = gateway_config.cache.clone();
    let mut gateway = Gateway::new(
        gateway_config,
        backends.registry.clone(),
        backends.clock.clone(),
        rate_store,
        config.panic_threshold,
    )?;
    if let Some(store) = redis.filter(|_| cache_config.redis) {
        let cache = RedisCacheStore::new(store, cache_config, backends.clock.clone());
        gateway = gateway.with_cache_store(Arc::new(cache));
    }
    let mut tasks = Vec::new();
    if access_log {
        tasks.push(gateway.log_to(backends.logs.clone()));
    }
    let gateway = Arc::new(gateway);
    let metrics = GatewayMetrics::new(metrics).map_err(omc_orchestra::Error::backend)?;
    tasks.extend(gateway.spawn());
    let (watched, gauges) = (gateway.clone(), metrics.clone());
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tick.tick().await;
            gauges.breakers(&watched.breakers().snapshot());
        }
    }));
    let state = GatewayState {
        gateway: gateway.clone(),
        status,
        metrics,
    };
    Ok(Started {
        router: router(state.clone()),
        state,
        gateway,
        tasks,
    })
}

/// A started gateway server.
pub(crate) struct Started {
    /// Its own routes, to wrap in the shared stack.
    pub router: Router,
    /// What the proxy serves with (see [`proxy_service`]).
    pub state: GatewayState,
    /// The pipeline (for reloads).
    pub gateway: Arc<Gateway>,
    /// Background tasks.
    pub tasks: Vec<JoinHandle<()>>,
}

/// The proxying half of the gateway server: every path the gateway router does not
/// answer itself. It skips the shared stack: the pipeline sets the request id, logs and
/// counts each request itself (`orchestra_gateway_*` metrics), so only CORS and panic
/// safety wrap it here.
pub(crate) fn proxy_service(
    state: GatewayState,
    origins: &Origins,
) -> impl tower::Service<
    Request,
    Response = impl IntoResponse,
    Error = std::convert::Infallible,
    Future = impl Send + 'static,
> + Clone
       + Send
       + Sync
       + 'static {
    let handler = move |req: Request| {
        let state = state.clone();
        async move { proxy(State(state), req).await }
    };
    tower::ServiceBuilder::new()
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            crate::http::layers::panic_answer,
        ))
        .layer(origins.cors_layer())
        .service(axum::handler::HandlerWithoutStateExt::into_service(handler))
}

/// The gateway's own routes (`/health`, `/openapi.json`, `/gateway/*`, which the shared
/// stack keeps to `admin` tokens). Everything else goes to [`proxy_service`].
pub(crate) fn router(state: GatewayState) -> Router {
    Router::new()
        .route(
            "/health",
            get(status::health).with_state(state.status.clone()),
        )
        .route(
            "/openapi.json",
            get(|| async { Json(GatewayDoc::openapi()) }),
        )
        .route("/gateway/breakers", get(breakers))
        .route("/gateway/cache", delete(purge_cache))
        .with_state(state)
}

async fn proxy(State(state): State<GatewayState>, req: Request) -> Response {
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |c| c.0.ip());
    let req = req.map(|body| body.map_err(Into::into).boxed_unsync());
    let (answer, info) = state.gateway.serve(req, client).await;
    state.count(&answer, &info);
    answer.into_response().map(axum::body::Body::new)
}

impl GatewayState {
    /// Count a proxied request in the metrics.
    pub(crate) fn count(&self, answer: &Answer, info: &ProxyInfo) {
        let seconds = info.elapsed.as_secs_f64();
        self.metrics.observe(info, answer.status(), seconds);
    }
}

/// Every upstream instance's circuit breaker.
#[utoipa::path(get, path = "/gateway/breakers",
    responses((status = 200, body = [BreakerState])))]
async fn breakers(State(state): State<GatewayState>) -> Json<Vec<BreakerState>> {
    let snapshot = state.gateway.breakers().snapshot();
    state.metrics.breakers(&snapshot);
    Json(snapshot)
}

/// Which cached entries to drop.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct PurgeQuery {
    /// The route's name (`/api/pricing-service` for a discovery route).
    pub route: String,
    /// One path with its query; the whole route when absent.
    pub path: Option<String>,
}

/// How many entries were dropped.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Purged {
    /// Entries dropped.
    pub purged: usize,
}

/// Drop cached answers of a route, or of one path under it.
#[utoipa::path(delete, path = "/gateway/cache", params(PurgeQuery),
    responses((status = 200, body = Purged), (status = 400, body = ErrorBody)))]
async fn purge_cache(
    State(state): State<GatewayState>,
    query: Result<Query<PurgeQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return ApiError::invalid("route", "the `route` query parameter is required")
            .into_response();
    };
    let cache = state.gateway.cache();
    let purged = match &query.path {
        Some(path) => cache.purge_key(&query.route, path).await,
        None => cache.purge_route(&query.route).await,
    };
    match purged {
        Ok(purged) => Json(Purged { purged }).into_response(),
        Err(err) => ApiError::from(err).into_response(),
    }
}
