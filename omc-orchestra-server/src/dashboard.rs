//! The real-time dashboard page at `GET /dashboard`, shipped inside the binary: one HTML
//! file, one stylesheet, one script, no build step and nothing fetched from elsewhere.

use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

const PAGE: &str = include_str!("../assets/dashboard.html");
const SCRIPT: &str = include_str!("../assets/dashboard.js");
const STYLE: &str = include_str!("../assets/dashboard.css");

/// What the page needs to know about the other servers.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DashboardConfig {
    /// Port of the jobs server, when it runs beside this one.
    pub jobs_port: Option<u16>,
    /// Port of the gateway, when it runs beside this one.
    pub gateway_port: Option<u16>,
    /// Port of the logging server, when it runs beside this one.
    pub logging_port: Option<u16>,
    /// Whether the API needs a bearer token (the page then asks for one).
    pub auth_required: bool,
}

/// Whether `path` belongs to the page itself (served without a token: it holds no data).
pub fn is_page(path: &str) -> bool {
    path == "/" || path == "/dashboard" || path.starts_with("/dashboard/")
}

/// The page's routes.
pub fn router(config: DashboardConfig) -> Router {
    Router::new()
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
