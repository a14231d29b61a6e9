//! The tower stack every server shares: request id, tracing span, metrics, body limit,
//! CORS, control-plane authorization, panic safety, JSON 404/405.

use super::access::{self, Guard};
use super::error::ApiError;
use super::metrics::HttpMetrics;
use super::origins::Origins;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use omc_orchestra::telemetry::{self, TraceParent};
use omc_orchestra::Backends;
use std::time::{Duration, Instant};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

/// What the shared stack needs to know.
#[derive(Clone)]
pub struct StackConfig {
    /// The server's name in metrics and logs.
    pub server: &'static str,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Who may call which route (`http::access`).
    pub guard: Guard,
    /// Which browser origins may call.
    pub origins: Origins,
    /// The server's metrics.
    pub metrics: HttpMetrics,
    /// The stores `GET /health/ready` asks.
    pub backends: Backends,
    /// How long a request may take before it is answered 503 (the server's own deadline
    /// over every backend call made for it).
    pub request_timeout: Duration,
    /// The router answers unmatched paths itself (the gateway proxies them); otherwise
    /// they get a JSON 404.
    pub own_fallback: bool,
}

/// The request-id header.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Wrap `router` in the shared stack and add `GET /metrics`.
pub fn with_stack(router: Router, config: StackConfig) -> Router {
    let metrics = config.metrics.clone();
    let server = config.server;
    let cors = config.origins.cors_layer();
    let router = router
        .route("/metrics", get(render_metrics).with_state(metrics.clone()))
        .route("/health/ready", get(ready).with_state(config.backends));
    let router = if config.own_fallback {
        router
    } else {
        router.fallback(not_found)
    };
    router
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            config.request_timeout,
            deadline,
        ))
        .layer(middleware::from_fn_with_state(config.guard, access::authorize))
        .layer(middleware::from_fn(trace_context))
        .layer(middleware::from_fn_with_state(metrics, record_metrics))
        .layer(DefaultBodyLimit::max(config.body_limit))
        .layer(cors)
        .layer(CatchPanicLayer::custom(panic_answer))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(move |req: &Request| {
            let request_id = req
                .headers()
                .get(&REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("request", server, method = %req.method(), path = %req.uri().path(), request_id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
}

/// The JSON 500 a request gets when its handler panicked.
pub(crate) fn panic_answer(_: Box<dyn std::any::Any + Send>) -> Response {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the server failed to answer this request",
    )
    .into_response()
}

async fn render_metrics(State(metrics): State<HttpMetrics>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
}

/// Answer 503 when the handler has not answered within `limit`: a stalled Redis must not
/// hold callers for as long as it stalls. Streams and WebSocket upgrades answer at once and
/// go on past it, since only producing the answer counts.
async fn deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    // A lease request may wait for a job on purpose, as long as it asked to.
    let path = req.uri().path();
    let limit = if path == "/jobs/lease" {
        limit + crate::jobs_lease::MAX_WAIT
    } else if path.starts_with("/registry/discovery/") && req.uri().query().is_some() {
        // A blocking discovery query waits for a change on purpose (plus its jitter).
        limit + crate::registry_api::MAX_DISCOVERY_WAIT.mul_f64(17.0 / 16.0)
    } else {
        limit
    };
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("no answer within {limit:?}: the backing store is slow or away; retry"),
        )
        .into_response(),
    }
}

/// Readiness, as Kubernetes asks it: 200 while the backend answers, 503 naming it when
/// not. `GET /health` stays liveness: the process answers.
async fn ready(State(backends): State<Backends>) -> Response {
    match backends.ready().await {
        Ok(()) => axum::Json(serde_json::json!({"status": "ready", "backend": backends.kind}))
            .into_response(),
        Err(err) => {
            let mut answer = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                err.to_string(),
            );
            answer.body.details = vec![serde_json::json!({ "backend": backends.kind })];
            answer.into_response()
        }
    }
}

async fn not_found(req: Request) -> ApiError {
    ApiError::no_route(req.uri().path())
}

async fn method_not_allowed(method: Method, req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", req.uri().path()),
    )
}

async fn record_metrics(State(metrics): State<HttpMetrics>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = HttpMetrics::method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    metrics.start(method);
    let response = next.run(req).await;
    metrics.finish(
        method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// The caller's trace carried through the request: with export on, a server span that
/// continues the caller's `traceparent`; either way the trace is current while the handler
/// runs, so the events it publishes and the jobs it enqueues carry it on. Unmatched paths
/// get none: on the gateway's port they are proxied, and the proxy makes its own span.
async fn trace_context(req: Request, next: Next) -> Response {
    let Some(route) = req.extensions().get::<MatchedPath>().cloned() else {
        return next.run(req).await;
    };
    let incoming = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse);
    let method = req.method().clone();
    let span = telemetry::start(
        format!("{method} {}", route.as_str()),
        telemetry::SpanKind::Server,
        incoming.as_ref(),
        None,
    );
    let context = span.as_ref().map(|s| s.context().clone()).or(incoming);
    let response = telemetry::within(context, next.run(req)).await;
    if let Some(mut span) = span {
        let status = response.status().as_u16();
        span.set_str("http.request.method", method.as_str());
        span.set_str("http.route", route.as_str());
        span.set_i64("http.response.status_code", i64::from(status));
        if status >= 500 {
            span.fail(format!("answered {status}"));
        }
        span.end();
    }
    response
}
