//! The registry server's API on 3010: the seed's paths, exactly.

use crate::http::{ApiError, ApiJson, ApiQuery, ApiResult, ErrorBody};
use crate::status::{self, ServerStatus};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::Extension;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use omc_orchestra::access::{Caller, Scope};
use omc_orchestra::health::{DependencyHealth, HealthChecker, ProbeResult};
use omc_orchestra::registry::{
    Discovered, Discovery, HealthStatus, Registration, ServiceFilter, ServiceInstance,
};
use omc_orchestra::SharedClock;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use utoipa::OpenApi;

/// What the registry handlers share.
#[derive(Clone)]
pub struct RegistryState {
    /// Discovery over the registry (and the registry itself).
    pub discovery: Arc<Discovery>,
    /// The clock.
    pub clock: SharedClock,
    /// Facts for `GET /health`.
    pub status: ServerStatus,
    /// The health checker, for probe results.
    pub checker: Arc<HealthChecker>,
}

/// The OpenAPI document of the registry server.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "omc-orchestra registry",
        description = "Service registry and discovery."
    ),
    paths(
        register,
        list_services,
        get_service,
        discover,
        heartbeat,
        deregister,
        service_health,
        service_metrics,
        crate::status::health
    ),
    components(schemas(
        Registration,
        ServiceInstance,
        HealthStatus,
        Discovered,
        ErrorBody,
        InstanceHealth,
        InstanceMetrics,
        ProbeResult,
        DependencyHealth,
        crate::status::HealthAnswer
    ))
)]
pub struct RegistryDoc;

/// The registry router.
pub fn router(state: RegistryState) -> Router {
    Router::new()
        .route("/registry/register", post(register))
        .route("/registry/services", get(list_services))
        .route(
            "/registry/services/{id}",
            get(get_service).delete(deregister),
        )
        .route("/registry/services/{id}/health", get(service_health))
        .route("/registry/services/{id}/metrics", get(service_metrics))
        .route("/registry/discovery/{service_name}", get(discover))
        .route("/registry/heartbeat/{service_id}", put(heartbeat))
        .route(
            "/health",
            get(status::health).with_state(state.status.clone()),
        )
        .route(
            "/openapi.json",
            get(|| async {
                let mut doc = RegistryDoc::openapi();
                doc.merge(crate::events_api::EventsDoc::openapi());
                doc.merge(crate::health_api::HealthDoc::openapi());
                Json(doc)
            }),
        )
        .with_state(state)
}

/// Register an instance (or update it: same name, host and port).
#[utoipa::path(post, path = "/registry/register", request_body = Registration,
    responses((status = 201, body = ServiceInstance), (status = 400, body = ErrorBody),
              (status = 413, body = ErrorBody)))]
async fn register(
    State(state): State<RegistryState>,
    Extension(caller): Extension<Caller>,
    ApiJson(registration): ApiJson<Registration>,
) -> ApiResult<(StatusCode, Json<ServiceInstance>)> {
    caller
        .write_service(&registration.name)
        .map_err(|denied| ApiError::forbidden("name", &denied))?;
    // An explicit id must not take over another service's instance.
    if let Some(id) = registration
        .id
        .as_deref()
        .filter(|_| !caller.grants().contains(Scope::Admin))
    {
        owned_instance(&state, &caller, id, "id").await?;
    }
    let instance = state.discovery.registry().register(registration).await?;
    Ok((StatusCode::CREATED, Json(instance)))
}

/// The most instances one page of the listing holds.
const MAX_PAGE: usize = 1_000;
/// The header that carries where the next page of a listing starts.
const NEXT_CURSOR_HEADER: &str = "x-orchestra-next-cursor";

/// Paging of the listing.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Paging {
    /// At most this many instances (1 to 1,000); without it, every instance.
    limit: Option<usize>,
    /// Where to go on: the `X-Orchestra-Next-Cursor` of the page before. It stays valid
    /// while instances come and go.
    cursor: Option<String>,
}

/// List instances, filtered by name, tag, status and type, ordered by name then id. With
/// `limit`, one page; `X-Orchestra-Next-Cursor` then says where the next one starts.
#[utoipa::path(get, path = "/registry/services", params(ServiceFilter, Paging),
    responses((status = 200, body = [ServiceInstance],
        headers(("x-orchestra-next-cursor" = String, description = "where the next page starts, when there is one"))),
        (status = 400, body = ErrorBody)))]
async fn list_services(
    State(state): State<RegistryState>,
    ApiQuery(filter): ApiQuery<ServiceFilter>,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let registry = state.discovery.registry();
    let limit = match (paging.limit, &paging.cursor) {
        (None, None) => return Ok(Json(registry.list(&filter).await?).into_response()),
        (Some(limit), _) if (1..=MAX_PAGE).contains(&limit) => limit,
        (None, Some(_)) => MAX_PAGE,
        (Some(_), _) => return Err(ApiError::invalid("limit", "must be 1 to 1000")),
    };
    let page = registry
        .list_page(&filter, limit, paging.cursor.as_deref())
        .await?;
    let mut response = Json(page.instances).into_response();
    if let Some(next) = page
        .next
        .and_then(|n| axum::http::HeaderValue::from_str(&n).ok())
    {
        response.headers_mut().insert(NEXT_CURSOR_HEADER, next);
    }
    Ok(response)
}

/// One instance.
#[utoipa::path(get, path = "/registry/services/{id}", params(("id" = String, Path)),
    responses((status = 200, body = ServiceInstance), (status = 404, body = ErrorBody)))]
async fn get_service(
    State(state): State<RegistryState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ServiceInstance>> {
    Ok(Json(state.discovery.registry().get(&id).await?))
}

/// The longest a blocking discovery query waits (`wait` is capped to it).
pub const MAX_DISCOVERY_WAIT: Duration = Duration::from_secs(300);
/// How long a blocking discovery query waits when it gives an `index` and no `wait`.
const DEFAULT_DISCOVERY_WAIT: Duration = Duration::from_secs(30);
/// The header that carries a service's change index (a constant: no name is parsed per
/// answer on this hot path).
const INDEX_HEADER: axum::http::HeaderName =
    axum::http::HeaderName::from_static("x-orchestra-index");

/// A blocking discovery query's parameters.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DiscoveryQuery {
    /// Answer once the service's index is no longer this (the `X-Orchestra-Index` of an
    /// earlier answer), or after `wait`.
    index: Option<u64>,
    /// How long to wait for a change with `index`: `30s` (the default), `500ms`, `5m`
    /// or whole seconds; at most 5 minutes.
    wait: Option<String>,
}

/// `30s`, `500ms`, `5m` or whole seconds, as a duration.
fn parse_wait(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    match unit {
        "" | "s" => Some(Duration::from_secs(number)),
        "ms" => Some(Duration::from_millis(number)),
        "m" => Some(Duration::from_secs(number.checked_mul(60)?)),
        _ => None,
    }
}

/// Healthy instances of a service and the one the weighted balancer picks. With `index`
/// it is a blocking query (as Consul's): the answer comes once the service changed past
/// that index, or after `wait`; every answer carries the service's current index in
/// `X-Orchestra-Index`.
#[utoipa::path(get, path = "/registry/discovery/{service_name}",
    params(("service_name" = String, Path), DiscoveryQuery),
    responses((status = 200, body = Discovered,
        headers(("x-orchestra-index" = u64, description = "the service's change index"))),
        (status = 400, body = ErrorBody)))]
async fn discover(
    State(state): State<RegistryState>,
    Path(service_name): Path<String>,
    ApiQuery(query): ApiQuery<DiscoveryQuery>,
) -> ApiResult<(
    [(axum::http::HeaderName, axum::http::HeaderValue); 1],
    Json<Discovered>,
)> {
    omc_orchestra::registry::check_name("serviceName", &service_name)?;
    let wait = match &query.wait {
        Some(text) => parse_wait(text)
            .ok_or_else(|| ApiError::invalid("wait", "must be like `30s`, `500ms` or `5m`"))?,
        None => DEFAULT_DISCOVERY_WAIT,
    }
    .min(MAX_DISCOVERY_WAIT);
    let found = match query.index {
        Some(index) => {
            // A little jitter, so clients woken by one change do not come back as a herd.
            let jitter = wait.mul_f64(rand::random::<f64>() / 16.0);
            state
                .discovery
                .discover_after(&service_name, index, wait + jitter)
                .await?
        }
        None => state.discovery.discover(&service_name).await?,
    };
    let index = axum::http::HeaderValue::from(found.index);
    Ok(([(INDEX_HEADER, index)], Json(found)))
}

/// Record a heartbeat.
#[utoipa::path(put, path = "/registry/heartbeat/{service_id}",
    params(("service_id" = String, Path)),
    responses((status = 200, body = ServiceInstance), (status = 404, body = ErrorBody)))]
async fn heartbeat(
    State(state): State<RegistryState>,
    Extension(caller): Extension<Caller>,
    Path(service_id): Path<String>,
) -> ApiResult<Json<ServiceInstance>> {
    owned_instance(&state, &caller, &service_id, "serviceId").await?;
    Ok(Json(
        state.discovery.registry().heartbeat(&service_id).await?,
    ))
}

/// Deregister an instance; answers it as it was.
#[utoipa::path(delete, path = "/registry/services/{id}", params(("id" = String, Path)),
    responses((status = 200, body = ServiceInstance), (status = 404, body = ErrorBody)))]
async fn deregister(
    State(state): State<RegistryState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<ServiceInstance>> {
    owned_instance(&state, &caller, &id, "serviceId").await?;
    Ok(Json(state.discovery.registry().deregister(&id).await?))
}

/// Refuse (403 naming `field`) when instance `id` exists and belongs to a service the
/// caller may not write. An admin is not asked, so it costs no lookup; an unknown id
/// passes, for the operation itself to answer 404 or to create it.
async fn owned_instance(
    state: &RegistryState,
    caller: &Caller,
    id: &str,
    field: &str,
) -> ApiResult<()> {
    if caller.grants().contains(Scope::Admin) {
        return Ok(());
    }
    match state.discovery.registry().get(id).await {
        Ok(instance) => caller
            .write_service(&instance.name)
            .map_err(|denied| ApiError::forbidden(field, &denied)),
        Err(omc_orchestra::Error::NotFound { .. }) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// An instance's health as the registry sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceHealth {
    /// Instance id.
    pub id: String,
    /// Service name.
    pub name: String,
    /// Effective status.
    pub status: HealthStatus,
    /// The health checks' verdict alone.
    pub check_status: HealthStatus,
    /// Whether the heartbeat is older than the TTL.
    pub heartbeat_expired: bool,
    /// The last heartbeat.
    pub last_heartbeat: DateTime<Utc>,
    /// When the heartbeat runs out.
    pub expires_at: DateTime<Utc>,
    /// Since when the health checks' verdict holds (registration until first checked).
    pub since: DateTime<Utc>,
    /// The last probe results, oldest first.
    pub results: Vec<ProbeResult>,
    /// The dependencies the instance names that the checker probes.
    pub dependencies: Vec<DependencyHealth>,
}

/// An instance's health.
#[utoipa::path(get, path = "/registry/services/{id}/health", params(("id" = String, Path)),
    responses((status = 200, body = InstanceHealth), (status = 404, body = ErrorBody)))]
async fn service_health(
    State(state): State<RegistryState>,
    Path(id): Path<String>,
) -> ApiResult<Json<InstanceHealth>> {
    let instance = state.discovery.registry().get(&id).await?;
    let view = state.checker.instance(&instance.id);
    let dependencies = state.checker.dependencies_named(&instance.dependencies);
    Ok(Json(InstanceHealth {
        since: view.as_ref().map_or(instance.registered_at, |v| v.since),
        results: view.map(|v| v.results).unwrap_or_default(),
        dependencies,
        heartbeat_expired: instance.is_expired(state.clock.now()),
        expires_at: instance.expires_at(),
        id: instance.id,
        name: instance.name,
        status: instance.status,
        check_status: instance.check_status,
        last_heartbeat: instance.last_heartbeat,
    }))
}

/// An instance's figures.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceMetrics {
    /// Instance id.
    pub id: String,
    /// Seconds since the instance first registered.
    pub uptime_seconds: i64,
    /// Seconds since the last heartbeat.
    pub seconds_since_heartbeat: i64,
    /// Heartbeat TTL in seconds.
    pub ttl_seconds: u32,
    /// Load-balancing weight.
    pub weight: u32,
    /// Health probes run.
    pub checks_total: u64,
    /// Health probes that were not passing.
    pub failures_total: u64,
    /// Share of the recent probes that were not passing.
    pub error_rate: f64,
    /// Mean response time of the recent probes, in milliseconds.
    pub mean_response_ms: f64,
    /// The last probe's response time, in milliseconds.
    pub last_response_ms: Option<f64>,
}

/// An instance's metrics.
#[utoipa::path(get, path = "/registry/services/{id}/metrics", params(("id" = String, Path)),
    responses((status = 200, body = InstanceMetrics), (status = 404, body = ErrorBody)))]
async fn service_metrics(
    State(state): State<RegistryState>,
    Path(id): Path<String>,
) -> ApiResult<Json<InstanceMetrics>> {
    let instance = state.discovery.registry().get(&id).await?;
    let now = state.clock.now();
    let view = state.checker.instance(&instance.id);
    Ok(Json(InstanceMetrics {
        checks_total: view.as_ref().map_or(0, |v| v.checks_total),
        failures_total: view.as_ref().map_or(0, |v| v.failures_total),
        error_rate: view.as_ref().map_or(0.0, |v| v.error_rate),
        mean_response_ms: view.as_ref().map_or(0.0, |v| v.mean_latency_ms),
        last_response_ms: view
            .as_ref()
            .and_then(|v| v.results.last().map(|r| r.latency_ms)),
        uptime_seconds: (now - instance.registered_at).num_seconds(),
        seconds_since_heartbeat: (now - instance.last_heartbeat).num_seconds(),
        ttl_seconds: instance.ttl_seconds,
        weight: instance.weight,
        id: instance.id,
    }))
}
