//! The jobs server's API on 3013: the seed's paths plus schedules.

use crate::http::{ApiJson, ApiQuery, ApiResult, ErrorBody};
use crate::status::{self, ServerStatus};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use omc_orchestra::events::{EventBus, NewEvent};
use omc_orchestra::jobs::{
    count_by_type, waiting_by_type, Backoff, BackoffKind, FailedAttempt, Job, JobFilter,
    JobPriority, JobState, JobStats, JobStore, NewJob, NewSchedule, PriorityCounts, Schedule,
    Scheduler, UnattendedType, Window,
};
use serde::Serialize;
use std::sync::Arc;
use utoipa::OpenApi;

/// What the jobs handlers share.
#[derive(Clone)]
pub(crate) struct JobsState {
    /// The queue.
    pub queue: Arc<dyn JobStore>,
    /// Cron schedules over the same store.
    pub scheduler: Scheduler,
    /// Facts for `GET /health`.
    pub status: ServerStatus,
    /// Where `JOB_QUEUED` events go (and from there the WebSocket `jobs` channel).
    pub events: Arc<dyn EventBus>,
    /// Lease requests waiting for jobs, and the workers seen.
    pub leases: crate::jobs_lease::Leases,
}

/// The OpenAPI document of the jobs server.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "omc-orchestra jobs",
        description = "Background jobs and cron schedules."
    ),
    paths(
        enqueue,
        list_jobs,
        get_job,
        cancel_job,
        retry_job,
        stats,
        types,
        retry_failed,
        add_schedule,
        list_schedules,
        remove_schedule,
        crate::jobs_lease::lease,
        crate::jobs_lease::complete,
        crate::jobs_lease::fail,
        crate::jobs_lease::progress,
        crate::jobs_lease::extend,
        crate::jobs_lease::workers,
        crate::status::health
    ),
    components(schemas(
        NewJob,
        Job,
        FailedAttempt,
        crate::jobs_lease::LeaseRequest,
        crate::jobs_lease::Leased,
        crate::jobs_lease::CompleteRequest,
        crate::jobs_lease::FailRequest,
        crate::jobs_lease::ProgressRequest,
        crate::jobs_lease::ExtendRequest,
        crate::jobs_lease::Renewed,
        crate::jobs_lease::WorkerSeen,
        ListedSchedule,
        TypeCounts,
        JobPriority,
        JobState,
        Backoff,
        BackoffKind,
        JobStats,
        StatsAnswer,
        UnattendedType,
        PriorityCounts,
        Window,
        JobPage,
        Retried,
        NewSchedule,
        Schedule,
        ErrorBody,
        crate::status::HealthAnswer
    ))
)]
pub(crate) struct JobsDoc;

/// The jobs router.
pub(crate) fn router(state: JobsState) -> Router {
    Router::new()
        .route("/jobs", post(enqueue).get(list_jobs))
        .route("/jobs/stats", get(stats))
        .route("/jobs/types", get(types))
        .route("/jobs/retry-failed", post(retry_failed))
        .route("/jobs/{id}", get(get_job).delete(cancel_job))
        .route("/jobs/{id}/retry", post(retry_job))
        .route("/schedules", post(add_schedule).get(list_schedules))
        .route("/schedules/{id}", delete(remove_schedule))
        .route(
            "/health",
            get(status::health).with_state(state.status.clone()),
        )
        .route("/openapi.json", get(|| async { Json(JobsDoc::openapi()) }))
        .merge(crate::jobs_lease::routes())
        .with_state(state)
}

/// Enqueue a job (a pending job with the same `uniqueKey` is returned instead).
#[utoipa::path(post, path = "/jobs", request_body = NewJob,
    responses((status = 201, body = Job), (status = 400, body = ErrorBody)))]
async fn enqueue(
    State(state): State<JobsState>,
    ApiJson(job): ApiJson<NewJob>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    let job = state.queue.enqueue(job).await?;
    state.leases.queued();
    let data = serde_json::json!({
        "id": job.id, "type": job.job_type, "state": job.state, "priority": job.priority,
    });
    // The job is stored; a lost notice only delays a dashboard's refresh.
    if let Err(err) = state
        .events
        .publish(NewEvent::new("JOB_QUEUED", "job-scheduler", data))
        .await
    {
        tracing::debug!(error = %err, "JOB_QUEUED not published");
    }
    Ok((StatusCode::CREATED, Json(job)))
}

/// A page of jobs.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobPage {
    /// The jobs.
    pub jobs: Vec<Job>,
    /// How many matches were skipped.
    pub offset: usize,
    /// The page size.
    pub limit: usize,
}

/// Jobs by state and type, paged with `offset` and `limit`.
#[utoipa::path(get, path = "/jobs", params(JobFilter),
    responses((status = 200, body = JobPage), (status = 400, body = ErrorBody)))]
async fn list_jobs(
    State(state): State<JobsState>,
    ApiQuery(filter): ApiQuery<JobFilter>,
) -> ApiResult<Json<JobPage>> {
    let jobs = state.queue.list(&filter).await?;
    Ok(Json(JobPage {
        jobs,
        offset: filter.offset,
        limit: filter.page_size(),
    }))
}

/// One job.
#[utoipa::path(get, path = "/jobs/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody)))]
async fn get_job(State(state): State<JobsState>, Path(id): Path<String>) -> ApiResult<Json<Job>> {
    Ok(Json(state.queue.get(&id).await?))
}

/// Cancel a job: removed unless running; a running job's worker is told to stop.
#[utoipa::path(delete, path = "/jobs/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody)))]
async fn cancel_job(
    State(state): State<JobsState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Job>> {
    Ok(Json(state.queue.cancel(&id).await?))
}

/// Put one failed job back to waiting with fresh attempts.
#[utoipa::path(post, path = "/jobs/{id}/retry", params(("id" = String, Path)),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
async fn retry_job(State(state): State<JobsState>, Path(id): Path<String>) -> ApiResult<Json<Job>> {
    let job = state.queue.retry(&id).await?;
    // The job waits again: a waiting lease request may take it now.
    state.leases.queued();
    Ok(Json(job))
}

/// The queue's figures and the job types nothing runs.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StatsAnswer {
    /// Counts per state and priority, throughput, failure rate and timings.
    #[serde(flatten)]
    pub stats: JobStats,
    /// Types with waiting jobs and no worker seen for them (no lease request naming
    /// them, or taking any type, in the last minute; none of this server's own
    /// `[job_routes]`; no job of theirs in flight), busiest first.
    pub unattended: Vec<UnattendedType>,
}

/// Counts per state and priority, throughput, failure rate and timings, and the job types
/// that have waiting jobs and no worker.
#[utoipa::path(get, path = "/jobs/stats", responses((status = 200, body = StatsAnswer)))]
async fn stats(State(state): State<JobsState>) -> ApiResult<Json<StatsAnswer>> {
    let stats = state.queue.stats().await?;
    let unattended = if stats.waiting > 0 {
        unattended(&state).await?
    } else {
        Vec::new()
    };
    Ok(Json(StatsAnswer { stats, unattended }))
}

/// The types with waiting jobs that no worker takes.
async fn unattended(state: &JobsState) -> ApiResult<Vec<UnattendedType>> {
    let mut attendance = state.leases.attendance();
    // A job in flight has a worker, maybe one that this replica never saw.
    let active = JobFilter {
        state: Some(JobState::Active),
        limit: Some(1_000),
        ..JobFilter::default()
    };
    for job in state.queue.list(&active).await? {
        attendance.job_type(job.job_type);
    }
    let waiting = waiting_by_type(state.queue.as_ref()).await?;
    Ok(attendance.unattended(waiting))
}

/// One job type's counts by state.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TypeCounts {
    /// The job type.
    #[serde(rename = "type")]
    pub job_type: String,
    /// Waiting to run.
    pub waiting: u64,
    /// Delayed (a run-at or a backoff ahead).
    pub delayed: u64,
    /// Running now.
    pub active: u64,
    /// Failed for good.
    pub failed: u64,
}

/// Jobs by type and state (waiting, delayed, active, failed), each state counted over at
/// most its first 10,000 jobs so that a deep queue costs a bounded read.
#[utoipa::path(get, path = "/jobs/types", responses((status = 200, body = [TypeCounts])))]
async fn types(State(state): State<JobsState>) -> ApiResult<Json<Vec<TypeCounts>>> {
    let queue = state.queue.as_ref();
    let mut by_type: std::collections::BTreeMap<String, TypeCounts> = Default::default();
    for job_state in [
        JobState::Waiting,
        JobState::Delayed,
        JobState::Active,
        JobState::Failed,
    ] {
        for (job_type, count) in count_by_type(queue, job_state).await? {
            let counts = by_type
                .entry(job_type.clone())
                .or_insert_with(|| TypeCounts {
                    job_type,
                    ..TypeCounts::default()
                });
            match job_state {
                JobState::Waiting => counts.waiting = count,
                JobState::Delayed => counts.delayed = count,
                JobState::Active => counts.active = count,
                _ => counts.failed = count,
            }
        }
    }
    Ok(Json(by_type.into_values().collect()))
}

/// How many failed jobs went back to waiting.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Retried {
    /// The count.
    pub retried: u64,
}

/// Put every failed job back to waiting.
#[utoipa::path(post, path = "/jobs/retry-failed", responses((status = 200, body = Retried)))]
async fn retry_failed(State(state): State<JobsState>) -> ApiResult<Json<Retried>> {
    Ok(Json(Retried {
        retried: state.queue.retry_failed().await?,
    }))
}

/// Add a cron schedule.
#[utoipa::path(post, path = "/schedules", request_body = NewSchedule,
    responses((status = 201, body = Schedule), (status = 400, body = ErrorBody)))]
async fn add_schedule(
    State(state): State<JobsState>,
    ApiJson(schedule): ApiJson<NewSchedule>,
) -> ApiResult<(StatusCode, Json<Schedule>)> {
    Ok((
        StatusCode::CREATED,
        Json(state.scheduler.add(schedule).await?),
    ))
}

/// Every schedule.
#[utoipa::path(get, path = "/schedules", responses((status = 200, body = [ListedSchedule])))]
async fn list_schedules(State(state): State<JobsState>) -> ApiResult<Json<Vec<ListedSchedule>>> {
    let scheduler = &state.scheduler;
    let listed = scheduler
        .list()
        .await?
        .into_iter()
        .map(|schedule| ListedSchedule {
            next_run_at: scheduler.next_run(&schedule),
            schedule,
        });
    Ok(Json(listed.collect()))
}

/// A schedule as `GET /schedules` lists it: the stored schedule and when it fires next.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListedSchedule {
    /// The schedule.
    #[serde(flatten)]
    pub schedule: Schedule,
    /// Its next tick after now; none while paused.
    pub next_run_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Remove a schedule.
#[utoipa::path(delete, path = "/schedules/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Schedule), (status = 404, body = ErrorBody)))]
async fn remove_schedule(
    State(state): State<JobsState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Schedule>> {
    Ok(Json(state.scheduler.remove(&id).await?))
}
