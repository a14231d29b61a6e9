//! The logging server's API on 3014: ingest, search, stats and a live tail over
//! server-sent events.

mod otlp;
mod params;

pub use params::IncomingLog;

/// Parse a `POST /logs` body as the server does, for the fuzz targets in `fuzz/`.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn fuzz_records(body: &[u8]) {
    let _ = params::parse_records(body, chrono::DateTime::UNIX_EPOCH);
}

use crate::http::{ApiError, ApiResult, ErrorBody};
use crate::status::{self, ServerStatus};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use omc_orchestra::logs::{
    FieldPercentiles, LogCategory, LogIngest, LogLevel, LogPage, LogRecord, LogStats, StatsQuery,
    TopError,
};
use omc_orchestra::SharedClock;
use serde::Serialize;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::watch;
use utoipa::OpenApi;

/// Largest `POST /logs` body the logging server accepts (batches are big), in bytes.
pub const BODY_LIMIT: usize = 8 * 1024 * 1024;

/// What the logging handlers share.
#[derive(Clone)]
pub struct LogsState {
    /// The ingest buffer, and through it the store.
    pub ingest: Arc<LogIngest>,
    /// The clock.
    pub clock: SharedClock,
    /// Facts for `GET /health`.
    pub status: ServerStatus,
    /// Turns `true` when the server shuts down; live tails end then, so a graceful
    /// shutdown does not wait for them forever.
    pub shutdown: watch::Receiver<bool>,
}

/// The answer of `POST /logs`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// Records stored.
    pub accepted: usize,
}

/// The OpenAPI document of the logging server.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "omc-orchestra logging",
        description = "Centralized logging: ingest, search, stats and live tail."
    ),
    paths(ingest, ingest_otlp, search, stats, stream, crate::status::health),
    components(schemas(
        IncomingLog,
        LogRecord,
        LogLevel,
        LogCategory,
        LogPage,
        LogStats,
        TopError,
        FieldPercentiles,
        Accepted,
        ErrorBody,
        crate::status::HealthAnswer
    ))
)]
pub struct LogsDoc;

/// The logging router.
pub fn router(state: LogsState) -> Router {
    Router::new()
        .route("/logs", get(search).post(ingest))
        .route("/logs/stats", get(stats))
        .route("/v1/logs", axum::routing::post(ingest_otlp))
        .route("/logs/stream", get(stream))
        .route(
            "/health",
            get(status::health).with_state(state.status.clone()),
        )
        .route("/openapi.json", get(|| async { Json(LogsDoc::openapi()) }))
        .with_state(state)
}

/// Store one record or an array of them; answers once they are stored.
#[utoipa::path(post, path = "/logs", request_body = Vec<IncomingLog>,
    responses((status = 202, body = Accepted), (status = 400, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn ingest(
    State(state): State<LogsState>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    let records = params::parse_records(&body, state.clock.now())?;
    let accepted = records.len();
    state.ingest.submit(records).await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { accepted })))
}

/// Store an OTLP/HTTP logs batch (`application/x-protobuf` or `application/json`,
/// optionally gzipped); answers an empty `ExportLogsServiceResponse` in the same encoding
/// once the records are stored, as `POST /logs` answers.
#[utoipa::path(post, path = "/v1/logs",
    request_body(content = Vec<u8>, content_type = "application/x-protobuf",
                 description = "an OTLP ExportLogsServiceRequest (also application/json)"),
    responses((status = 200, description = "stored"), (status = 400, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
async fn ingest_otlp(
    State(state): State<LogsState>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> ApiResult<axum::response::Response> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let encoding = otlp::Encoding::of(header(axum::http::header::CONTENT_TYPE))?;
    let body = otlp::decoded_body(
        &body,
        header(axum::http::header::CONTENT_ENCODING),
        BODY_LIMIT,
    )?;
    let records = otlp::parse(&body, encoding, state.clock.now())?;
    if !records.is_empty() {
        state.ingest.submit(records).await?;
    }
    let (content_type, answer) = encoding.success();
    Ok(([(axum::http::header::CONTENT_TYPE, content_type)], answer).into_response())
}

/// Search, newest first, a page at a time.
#[utoipa::path(get, path = "/logs",
    params(
        ("level" = Option<String>, Query, description = "this level and above"),
        ("category" = Option<String>, Query), ("service" = Option<String>, Query),
        ("since" = Option<String>, Query, description = "RFC 3339"),
        ("until" = Option<String>, Query, description = "RFC 3339"),
        ("text" = Option<String>, Query, description = "substring of the message, any case"),
        ("words" = Option<String>, Query, description = "whole words of the message"),
        ("requestId" = Option<String>, Query), ("traceId" = Option<String>, Query),
        ("limit" = Option<usize>, Query), ("cursor" = Option<String>, Query),
        ("field.NAME" = Option<String>, Query, description = "field NAME equals this")),
    responses((status = 200, body = LogPage), (status = 400, body = ErrorBody)))]
async fn search(
    State(state): State<LogsState>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<LogPage>> {
    let (query, _) = params::parse_query(raw.as_deref())?;
    Ok(Json(state.ingest.sink().search_page(&query).await?))
}

/// Stats over a window (`window=15m`, or `since`/`until`) of the filtered records.
#[utoipa::path(get, path = "/logs/stats",
    params(("window" = Option<String>, Query, description = "30s, 15m, 1h, 7d; at most 365d"),
           ("top" = Option<usize>, Query, description = "top error messages")),
    responses((status = 200, body = LogStats), (status = 400, body = ErrorBody)))]
async fn stats(
    State(state): State<LogsState>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<LogStats>> {
    let (mut filter, extras) = params::parse_query(raw.as_deref())?;
    if let Some(window) = extras.window {
        // A window is at most a year, but the clock is injected: no time may panic.
        let since = state
            .clock
            .now()
            .checked_sub_signed(window)
            .ok_or_else(|| {
                ApiError::invalid("window", "reaches before the earliest representable time")
            })?;
        filter.since = Some(since);
    }
    let query = StatsQuery {
        filter,
        top: extras.top,
    };
    Ok(Json(state.ingest.sink().stats(&query).await?))
}

/// Live tail as server-sent events (`event: log`, the record as JSON), with the search
/// filters.
#[utoipa::path(get, path = "/logs/stream",
    responses((status = 200, description = "text/event-stream of records"),
              (status = 400, body = ErrorBody)))]
async fn stream(
    State(state): State<LogsState>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let (filter, _) = params::parse_query(raw.as_deref())?;
    let tail = state.ingest.sink().tail(filter);
    let opened = futures::stream::once(async { Ok(Event::default().comment("tail open")) });
    let records = tail.into_stream().map(|record| {
        Ok(Event::default()
            .event("log")
            .json_data(&record)
            .unwrap_or_else(|_| Event::default().comment("unserializable record")))
    });
    let mut shutdown = state.shutdown.clone();
    let stopped = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    let events = opened.chain(records).take_until(stopped);
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
