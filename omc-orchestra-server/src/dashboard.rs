//! The real-time dashboard page at `GET /dashboard`, shipped inside the binary: one HTML
//! file, one stylesheet, one script, no build step and nothing fetched from elsewhere.
//!
//! The page talks to port 3010 alone: `/dashboard/api/{jobs|gateway|logging}/…` is
//! forwarded by this server to the sibling server (with the caller's token, which the
//! sibling checks), so every panel fills where only the registry's port is reachable.

use crate::http::ApiError;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde::Serialize;
use std::net::IpAddr;
use std::time::Duration;

const PAGE: &str = include_str!("../assets/dashboard.html");
const SCRIPT: &str = include_str!("../assets/dashboard.js");
const STYLE: &str = include_str!("../assets/dashboard.css");

/// What the page needs to know about the other servers.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DashboardConfig {
    /// Port of the jobs server, when it runs beside this one.
    pub jobs_port: Option<u16>,
    /// Port of the gateway, when it runs beside this one.
    pub gateway_port: Option<u16>,
    /// Port of the logging server, when it runs beside this one.
    pub logging_port: Option<u16>,
    /// Whether the API needs a bearer token (the page then asks for one).
    pub auth_required: bool,
}

/// Whether `path` belongs to the page itself (served without a token: it holds no data);
/// the page's data routes (`/dashboard/api/…`) are not.
pub(crate) fn is_page(path: &str) -> bool {
    path == "/"
        || path == "/dashboard"
        || (path.starts_with("/dashboard/") && !path.starts_with("/dashboard/api/"))
}

/// Where the sibling servers answer, for the page's forwarded calls.
#[derive(Debug, Clone)]
pub(crate) struct Siblings {
    http: reqwest::Client,
    host: String,
    config: DashboardConfig,
}

impl Siblings {
    /// The siblings of `config` on `host` (this server's bind address; loopback when it
    /// binds every address).
    pub(crate) fn new(host: IpAddr, config: DashboardConfig) -> Self {
        let host = match host {
            IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".to_owned(),
            IpAddr::V6(v6) if v6.is_unspecified() => "[::1]".to_owned(),
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self { http, host, config }
    }

    fn base(&self, server: &str) -> Option<String> {
        let port = match server {
            "jobs" => self.config.jobs_port,
            "gateway" => self.config.gateway_port,
            "logging" => self.config.logging_port,
            _ => None,
        }?;
        Some(format!("http://{}:{port}", self.host))
    }
}

/// The page's routes, its data forwarded to `siblings`.
pub(crate) fn router(config: DashboardConfig, siblings: Siblings) -> Router {
    let forwarding = Router::new()
        .route("/dashboard/api/{server}/{*rest}", any(forward))
        .with_state(siblings);
    Router::new()
        .merge(forwarding)
        .route("/", get(|| async { Redirect::temporary("/dashboard") }))
        .route(
            "/dashboard",
            get(|| async { asset("text/html; charset=utf-8", PAGE) }),
        )
        .route(
            "/dashboard/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/dashboard/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/dashboard/config.json",
            get(move || async move { Json(config) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// Forward one of the page's calls to the sibling server it names, with the caller's token.
async fn forward(
    State(siblings): State<Siblings>,
    Path((server, rest)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(base) = siblings.base(&server) else {
        return ApiError::invalid(
            "server",
            format!("`{server}` is not a server running beside this one (jobs, gateway, logging)"),
        )
        .into_response();
    };
    if !matches!(method, Method::GET | Method::POST | Method::DELETE) {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not forwarded"),
        )
        .into_response();
    }
    let mut url = format!("{base}/{rest}");
    if let Some(query) = query {
        url.push('?');
        url.push_str(&query);
    }
    let mut request = siblings.http.request(method, &url).body(body);
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
        if let Some(value) = headers.get(&name) {
            request = request.header(name, value);
        }
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(_) => {
            return ApiError::new(
                StatusCode::BAD_GATEWAY,
                "unreachable",
                format!("the {server} server did not answer"),
            )
            .into_response()
        }
    };
    let status = answer.status();
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    let body = answer.bytes().await.unwrap_or_default();
    let mut response = (status, body).into_response();
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    response
}
