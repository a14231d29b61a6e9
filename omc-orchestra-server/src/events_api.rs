//! The event API on 3010: publish (one or a batch), history, replay, stats, dead letters.

use crate::http::extract::parse_json;
use crate::http::{ApiError, ApiQuery, ApiResult, ErrorBody};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use omc_orchestra::events::{
    replay_to_group, DeadLetter, Event, EventBus, EventId, EventPriority, EventQuery, EventStats,
    GroupLag, LagCounts, NewEvent, ReplayFrom, TypeStats,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::OpenApi;

/// Most events one `POST /events` may carry.
pub(crate) const MAX_BATCH: usize = 1000;

/// What the event handlers share.
#[derive(Clone)]
pub(crate) struct EventsState {
    /// The bus.
    pub bus: Arc<dyn EventBus>,
}

/// The OpenAPI document of the event API.
#[derive(OpenApi)]
#[openapi(
    paths(publish, history, replay, stats, dead_letters),
    components(schemas(
        NewEvent,
        Event,
        EventPriority,
        EventStats,
        TypeStats,
        GroupLag,
        LagCounts,
        DeadLetter,
        ReplayRequest,
        ReplayPage,
        ErrorBody
    ))
)]
pub(crate) struct EventsDoc;

/// The event router.
pub(crate) fn router(state: EventsState) -> Router {
    Router::new()
        .route("/events", post(publish).get(history))
        .route("/events/replay", post(replay))
        .route("/events/stats", get(stats))
        .route("/events/dead-letters", get(dead_letters))
        .with_state(state)
}

/// Publish one event (an object) or a batch (an array); a batch is validated whole before
/// any of it is published, and an error names `[index].field`.
#[utoipa::path(post, path = "/events", request_body = NewEvent,
    responses((status = 201, body = Event, description = "one event, or an array for a batch"),
              (status = 400, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn publish(State(state): State<EventsState>, body: Bytes) -> ApiResult<Response> {
    let batch = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    if !batch {
        let event: NewEvent = parse_json(&body)?;
        let published = state.bus.publish(event).await?;
        return Ok((StatusCode::CREATED, Json(published)).into_response());
    }
    let events: Vec<NewEvent> = parse_json(&body)?;
    if events.is_empty() || events.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            "body",
            format!("a batch holds 1 to {MAX_BATCH} events"),
        ));
    }
    for (i, event) in events.iter().enumerate() {
        if let Err(omc_orchestra::Error::Invalid { field, reason }) = event.validate() {
            return Err(ApiError::invalid(&format!("[{i}].{field}"), reason));
        }
    }
    let mut published = Vec::with_capacity(events.len());
    for event in events {
        published.push(state.bus.publish(event).await?);
    }
    Ok((StatusCode::CREATED, Json(published)).into_response())
}

/// Past events, oldest first: the newest `limit` (default 100) that match.
#[utoipa::path(get, path = "/events",
    params(("type" = Option<String>, Query), ("source" = Option<String>, Query),
           ("tag" = Option<String>, Query), ("since" = Option<DateTime<Utc>>, Query),
           ("until" = Option<DateTime<Utc>>, Query), ("limit" = Option<usize>, Query)),
    responses((status = 200, body = [Event]), (status = 400, body = ErrorBody)))]
async fn history(
    State(state): State<EventsState>,
    ApiQuery(query): ApiQuery<EventQuery>,
) -> ApiResult<Json<Vec<Event>>> {
    check_limit(query.limit)?;
    Ok(Json(state.bus.history(&query).await?))
}

fn check_limit(limit: Option<usize>) -> ApiResult<()> {
    if limit.is_some_and(|l| l == 0 || l > EventQuery::MAX_LIMIT) {
        return Err(ApiError::invalid(
            "limit",
            format!("must be between 1 and {}", EventQuery::MAX_LIMIT),
        ));
    }
    Ok(())
}

/// A replay: from after an event id, or from a time, filtered.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ReplayRequest {
    /// Replay the events after this id (exclusive).
    pub from_id: Option<String>,
    /// Replay the events at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only this type.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Only this source.
    pub source: Option<String>,
    /// Only events with this tag.
    pub tag: Option<String>,
    /// Published before this time.
    pub until: Option<DateTime<Utc>>,
    /// Most events in the page (default 100).
    pub limit: Option<usize>,
    /// Publish the replayed events again to this consumer group only (answering the
    /// copies) instead of just returning them.
    pub group: Option<String>,
}

/// A page of replayed events.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ReplayPage {
    /// The events, oldest first.
    pub events: Vec<Event>,
    /// Pass as `fromId` for the next page; absent when the page was empty.
    pub next_from_id: Option<String>,
}

/// Replay history from an event id or a time, a page at a time; with `group`, into that
/// consumer group (the page then lists the re-published copies).
#[utoipa::path(post, path = "/events/replay", request_body = ReplayRequest,
    responses((status = 200, body = ReplayPage), (status = 400, body = ErrorBody)))]
async fn replay(State(state): State<EventsState>, body: Bytes) -> ApiResult<Json<ReplayPage>> {
    let request: ReplayRequest = parse_json(&body)?;
    check_limit(request.limit)?;
    let from = match (&request.from_id, request.since) {
        (Some(id), None) => ReplayFrom::After(
            id.parse::<EventId>()
                .map_err(|_| ApiError::invalid("fromId", "must look like `1700000000000-0`"))?,
        ),
        (None, Some(since)) => ReplayFrom::Since(since),
        _ => {
            return Err(ApiError::invalid(
                "fromId",
                "give exactly one of `fromId` and `since`",
            ))
        }
    };
    let query = EventQuery {
        event_type: request.event_type,
        source: request.source,
        tag: request.tag,
        since: None,
        until: request.until,
        limit: request.limit,
    };
    let events = match &request.group {
        Some(group) => replay_to_group(state.bus.as_ref(), group, &from, &query).await?,
        None => state.bus.replay(&from, &query).await?,
    };
    let next_from_id = events.last().map(|e| e.id.clone());
    Ok(Json(ReplayPage {
        events,
        next_from_id,
    }))
}

/// Published, delivered, redelivered and dead counts per event type; lag and pending per
/// consumer group; events the backlog cap dropped unread.
#[utoipa::path(get, path = "/events/stats", responses((status = 200, body = EventStats)))]
async fn stats(State(state): State<EventsState>) -> ApiResult<Json<EventStats>> {
    Ok(Json(state.bus.stats().await?))
}

/// `?limit=` of `GET /events/dead-letters`.
#[derive(Debug, Deserialize)]
struct DeadLetterQuery {
    limit: Option<usize>,
}

/// The newest dead letters, newest first.
#[utoipa::path(get, path = "/events/dead-letters", params(("limit" = Option<usize>, Query)),
    responses((status = 200, body = [DeadLetter]), (status = 400, body = ErrorBody)))]
async fn dead_letters(
    State(state): State<EventsState>,
    ApiQuery(query): ApiQuery<DeadLetterQuery>,
) -> ApiResult<Json<Vec<DeadLetter>>> {
    check_limit(query.limit)?;
    Ok(Json(
        state.bus.dead_letters(query.limit.unwrap_or(100)).await?,
    ))
}
