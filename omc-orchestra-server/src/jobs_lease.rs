//! The job-lease API on 3013: any service, in any language, runs jobs over HTTP with the
//! library's leases (one implementation): take jobs with `POST /jobs/lease` (long-polling
//! up to `waitMs`), then complete, fail, report progress on or extend each with its token.
//! A stale token (the lease ran out and the job went to another worker) is 409 and
//! changes nothing.

use crate::http::{ApiJson, ApiResult, ErrorBody};
use crate::jobs_api::JobsState;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use omc_orchestra::jobs::{
    Attendance, FetchRequest, Job, JobFilter, JobLease, JobState, LeaseRenewal,
};
use omc_orchestra::Error;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The longest a lease request waits for a job; the request deadline of this path is
/// stretched by as much (see `http::layers`).
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(30);
/// How often a waiting lease request looks again for jobs queued through other servers
/// (those queued through this one wake it at once).
const LOOK_AGAIN: Duration = Duration::from_millis(250);
/// How long a worker counts as seen after its last lease request.
const SEEN_FOR: Duration = Duration::from_secs(60);
/// Most jobs one lease request takes.
const MOST: usize = 100;

/// Who asked for jobs lately, and the signal that jobs were queued here.
#[derive(Clone, Default)]
pub(crate) struct Leases {
    seen: Arc<Mutex<BTreeMap<String, Seen>>>,
    queued: Arc<Notify>,
    /// Types this server runs itself (`[job_routes]`), which need no lease request.
    in_process: Arc<BTreeSet<String>>,
}

struct Seen {
    types: BTreeSet<String>,
    at: Instant,
}

impl Leases {
    /// Wake the lease requests waiting for jobs: one was just queued here.
    pub(crate) fn queued(&self) {
        self.queued.notify_waiters();
    }

    /// Leases for a server whose own worker pool runs `types`.
    pub(crate) fn with_in_process<I: IntoIterator<Item = String>>(types: I) -> Self {
        Self {
            in_process: Arc::new(types.into_iter().collect()),
            ..Self::default()
        }
    }

    /// The job types some worker takes: the workers seen in the last minute and the
    /// types this server runs itself.
    pub(crate) fn attendance(&self) -> Attendance {
        let mut attendance = Attendance::default();
        for job_type in self.in_process.iter() {
            attendance.job_type(job_type.clone());
        }
        let seen = self.seen.lock();
        for s in seen.values().filter(|s| s.at.elapsed() < SEEN_FOR) {
            attendance.worker(s.types.iter().cloned());
        }
        attendance
    }

    fn saw(&self, worker: &str, types: &[String]) {
        let mut seen = self.seen.lock();
        seen.retain(|_, s| s.at.elapsed() < SEEN_FOR);
        seen.insert(
            worker.to_owned(),
            Seen {
                types: types.iter().cloned().collect(),
                at: Instant::now(),
            },
        );
    }
}

/// `POST /jobs/lease`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct LeaseRequest {
    /// The worker's name (shown by `GET /jobs/workers` and on each job).
    pub worker: String,
    /// Job types it runs; any type when empty.
    #[serde(default)]
    pub types: Vec<String>,
    /// Most jobs to take (1 to 100, default 1).
    pub max: Option<usize>,
    /// How long each lease lasts unless extended, in ms (1,000 to 3,600,000; default 30,000).
    pub lease_ms: Option<u64>,
    /// How long to wait when no job is ready, in ms (0 to 30,000; default 0).
    pub wait_ms: Option<u64>,
}

impl LeaseRequest {
    fn check(&self) -> Result<(usize, Duration, Duration), Error> {
        if self.worker.is_empty() || self.worker.len() > 200 {
            return Err(Error::invalid("worker", "must be 1 to 200 characters"));
        }
        let max = self.max.unwrap_or(1);
        if !(1..=MOST).contains(&max) {
            return Err(Error::invalid("max", "must be between 1 and 100"));
        }
        let lease = self.lease_ms.unwrap_or(30_000);
        if !(1_000..=3_600_000).contains(&lease) {
            return Err(Error::invalid(
                "leaseMs",
                "must be between 1000 and 3600000",
            ));
        }
        let wait = Duration::from_millis(self.wait_ms.unwrap_or(0));
        if wait > MAX_WAIT {
            return Err(Error::invalid("waitMs", "must be at most 30000"));
        }
        Ok((max, Duration::from_millis(lease), wait))
    }
}

/// The jobs a lease request took (none when none was ready in time).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Leased {
    /// Each job with its lease token and when the lease runs out.
    #[schema(value_type = Vec<Object>)]
    pub jobs: Vec<JobLease>,
}

/// `POST /jobs/{id}/complete`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CompleteRequest {
    /// The lease token.
    pub token: String,
    /// What the job produced.
    #[serde(default)]
    pub result: serde_json::Value,
}

/// `POST /jobs/{id}/fail`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct FailRequest {
    /// The lease token.
    pub token: String,
    /// Why it failed.
    pub error: String,
    /// Run it again after its backoff while attempts are left (default), or fail it for
    /// good now.
    #[serde(default = "yes")]
    pub retry: bool,
}

fn yes() -> bool {
    true
}

/// `POST /jobs/{id}/progress`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ProgressRequest {
    /// The lease token.
    pub token: String,
    /// How far it is (any JSON, e.g. a percentage).
    pub progress: serde_json::Value,
}

/// `POST /jobs/{id}/extend`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ExtendRequest {
    /// The lease token.
    pub token: String,
    /// The lease from now, in ms (1,000 to 3,600,000).
    pub lease_ms: u64,
}

/// The lease after a renewal or a progress report.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Renewed {
    /// When the lease runs out.
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// Someone asked to cancel the job: stop and fail it.
    pub cancel_requested: bool,
}

impl From<LeaseRenewal> for Renewed {
    fn from(renewal: LeaseRenewal) -> Self {
        Self {
            expires_at: renewal.expires_at,
            cancel_requested: renewal.cancel_requested,
        }
    }
}

/// A worker seen in the last minute.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WorkerSeen {
    /// Its name.
    pub worker: String,
    /// The types it asked for (empty: any).
    pub types: Vec<String>,
    /// Seconds since its last lease request.
    pub last_seen_secs: u64,
    /// Jobs it holds now.
    pub in_flight: usize,
}

/// The lease routes, merged into the jobs router.
pub(crate) fn routes() -> Router<JobsState> {
    Router::new()
        .route("/jobs/lease", post(lease))
        .route("/jobs/workers", get(workers))
        .route("/jobs/{id}/complete", post(complete))
        .route("/jobs/{id}/fail", post(fail))
        .route("/jobs/{id}/progress", post(progress))
        .route("/jobs/{id}/extend", post(extend))
}

/// Take up to `max` ready jobs of `types`, waiting up to `waitMs` for one.
#[utoipa::path(post, path = "/jobs/lease", request_body = LeaseRequest,
    responses((status = 200, body = Leased), (status = 400, body = ErrorBody)))]
pub(crate) async fn lease(
    State(state): State<JobsState>,
    ApiJson(request): ApiJson<LeaseRequest>,
) -> ApiResult<Json<Leased>> {
    let (max, lease, wait) = request.check()?;
    state.leases.saw(&request.worker, &request.types);
    let mut fetch = FetchRequest::new(request.worker.clone(), lease, max);
    fetch.types = request.types;
    let until = tokio::time::Instant::now() + wait;
    loop {
        // Asked for before looking, so a job queued meanwhile is not missed.
        let queued = state.leases.queued.notified();
        tokio::pin!(queued);
        queued.as_mut().enable();
        let jobs = state.queue.fetch_batch(&fetch).await?;
        let now = tokio::time::Instant::now();
        if !jobs.is_empty() || now >= until {
            return Ok(Json(Leased { jobs }));
        }
        let next = (now + LOOK_AGAIN).min(until);
        tokio::select! {
            () = queued => {}
            () = tokio::time::sleep_until(next) => {}
        }
    }
}

/// Complete a leased job with its result.
#[utoipa::path(post, path = "/jobs/{id}/complete", params(("id" = String, Path)),
    request_body = CompleteRequest,
    responses((status = 200, body = Job), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(crate) async fn complete(
    State(state): State<JobsState>,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<CompleteRequest>,
) -> ApiResult<Json<Job>> {
    let job = state
        .queue
        .complete(&id, &request.token, request.result)
        .await?;
    Ok(Json(job))
}

/// Fail a leased job: again after its backoff, or for good with `"retry": false`.
#[utoipa::path(post, path = "/jobs/{id}/fail", params(("id" = String, Path)),
    request_body = FailRequest,
    responses((status = 200, body = Job), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(crate) async fn fail(
    State(state): State<JobsState>,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<FailRequest>,
) -> ApiResult<Json<Job>> {
    let queue = &state.queue;
    let job = if request.retry {
        queue.fail(&id, &request.token, &request.error).await?
    } else {
        queue
            .fail_for_good(&id, &request.token, &request.error)
            .await?
    };
    Ok(Json(job))
}

/// Record a leased job's progress.
#[utoipa::path(post, path = "/jobs/{id}/progress", params(("id" = String, Path)),
    request_body = ProgressRequest,
    responses((status = 200, body = Renewed), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(crate) async fn progress(
    State(state): State<JobsState>,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<ProgressRequest>,
) -> ApiResult<Json<Renewed>> {
    let renewal = state
        .queue
        .progress(&id, &request.token, request.progress)
        .await?;
    Ok(Json(renewal.into()))
}

/// Extend a leased job's lease to `leaseMs` from now.
#[utoipa::path(post, path = "/jobs/{id}/extend", params(("id" = String, Path)),
    request_body = ExtendRequest,
    responses((status = 200, body = Renewed), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(crate) async fn extend(
    State(state): State<JobsState>,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<ExtendRequest>,
) -> ApiResult<Json<Renewed>> {
    if !(1_000..=3_600_000).contains(&request.lease_ms) {
        return Err(Error::invalid("leaseMs", "must be between 1000 and 3600000").into());
    }
    let lease = Duration::from_millis(request.lease_ms);
    let renewal = state.queue.extend(&id, &request.token, lease).await?;
    Ok(Json(renewal.into()))
}

/// The workers that asked this server for jobs in the last minute, the types each takes
/// and the jobs each holds now.
#[utoipa::path(get, path = "/jobs/workers",
    responses((status = 200, body = [WorkerSeen]), (status = 503, body = ErrorBody)))]
pub(crate) async fn workers(State(state): State<JobsState>) -> ApiResult<Json<Vec<WorkerSeen>>> {
    let filter = JobFilter {
        state: Some(JobState::Active),
        limit: Some(1_000),
        ..JobFilter::default()
    };
    let mut held: BTreeMap<String, usize> = BTreeMap::new();
    for job in state.queue.list(&filter).await? {
        if let Some(worker) = job.worker {
            *held.entry(worker).or_default() += 1;
        }
    }
    let seen = state.leases.seen.lock();
    let workers = seen
        .iter()
        .filter(|(_, s)| s.at.elapsed() < SEEN_FOR)
        .map(|(worker, s)| WorkerSeen {
            worker: worker.clone(),
            types: s.types.iter().cloned().collect(),
            last_seen_secs: s.at.elapsed().as_secs(),
            in_flight: held.get(worker).copied().unwrap_or(0),
        })
        .collect();
    Ok(Json(workers))
}
