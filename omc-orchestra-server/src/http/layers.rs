//! The tower stack every server shares: request id, tracing span, metrics, body limit,
//! CORS, service-to-service JWT, panic safety, JSON 404/405.

use super::error::ApiError;
use super::metrics::HttpMetrics;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::sync::Arc;
use std::time::Instant;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

/// What the shared stack needs to know.
#[derive(Clone)]
pub struct StackConfig {
    /// The server's name in metrics and logs.
    pub server: &'static str,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// When set, every endpoint but `/health` and `/metrics` needs a bearer token signed
    /// with this secret (HS256).
    pub jwt_secret: Option<String>,
    /// Allowed CORS origins; empty allows any.
    pub cors_origins: Vec<String>,
    /// The server's metrics.
    pub metrics: HttpMetrics,
    /// The router answers unmatched paths itself (the gateway proxies them); otherwise
    /// they get a JSON 404.
    pub own_fallback: bool,
}

/// The request-id header.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Wrap `router` in the shared stack and add `GET /metrics`.
pub fn with_stack(router: Router, config: StackConfig) -> Router {
    let metrics = config.metrics.clone();
    let auth = config
        .jwt_secret
        .as_deref()
        .map(|secret| Arc::new(Jwt::new(secret)));
    let server = config.server;
    let cors = cors(&config.cors_origins);
    let router = router.route("/metrics", get(render_metrics).with_state(metrics.clone()));
    let router = if config.own_fallback {
        router
    } else {
        router.fallback(not_found)
    };
    router
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(auth, require_jwt))
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

/// CORS for `origins` (any when empty).
pub(crate) fn cors(origins: &[String]) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers([REQUEST_ID.clone()]);
    if origins.is_empty() {
        return layer.allow_origin(Any);
    }
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    layer.allow_origin(AllowOrigin::list(list))
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
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    metrics.start(&method);
    let response = next.run(req).await;
    metrics.finish(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Verifies service-to-service tokens.
pub struct Jwt {
    key: DecodingKey,
    validation: Validation,
}

impl Jwt {
    /// HS256 tokens signed with `secret`; `exp` is required.
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_nbf = true;
        validation.required_spec_claims = ["exp".to_owned()].into_iter().collect();
        Self {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// Check an `Authorization` header value; the error says why it failed.
    pub fn verify(&self, header: Option<&HeaderValue>) -> Result<(), ApiError> {
        let header = header.ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
            })?;
        jsonwebtoken::decode::<serde_json::Value>(token.trim(), &self.key, &self.validation)
            .map(|_| ())
            .map_err(|err| ApiError::unauthorized(format!("invalid token: {err}")))
    }
}

fn is_public(path: &str) -> bool {
    matches!(path, "/health" | "/metrics") || crate::dashboard::is_page(path)
}

/// A browser cannot set headers on a WebSocket, so `/ws` also takes `?token=`.
fn query_token(req: &Request) -> Option<HeaderValue> {
    if req.uri().path() != "/ws" {
        return None;
    }
    let token = form_urlencoded::parse(req.uri().query()?.as_bytes())
        .find(|(key, _)| key == "token")?
        .1;
    HeaderValue::from_str(&format!("Bearer {token}")).ok()
}

async fn require_jwt(State(auth): State<Option<Arc<Jwt>>>, req: Request, next: Next) -> Response {
    if let Some(auth) = auth {
        if req.method() != Method::OPTIONS && !is_public(req.uri().path()) {
            let from_query = query_token(&req);
            let header = req.headers().get(axum::http::header::AUTHORIZATION);
            if let Err(err) = auth.verify(header.or(from_query.as_ref())) {
                return err.into_response();
            }
        }
    }
    next.run(req).await
}
