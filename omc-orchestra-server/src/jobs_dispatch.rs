//! Jobs the jobs server runs itself: types mapped to an HTTP endpoint of a registered
//! service. The job is POSTed (as JSON) to an instance found through discovery; a 2xx
//! completes it with the response body, anything else fails it with status and body.

use omc_orchestra::events::EventBus;
use omc_orchestra::jobs::{JobContext, JobStore, WorkerPool};
use omc_orchestra::redact::redact;
use omc_orchestra::registry::Discovery;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Where jobs of one type go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobRoute {
    /// The registered service to call (`report-service`).
    pub service: String,
    /// The path to POST the job to (`/jobs/run`).
    pub path: String,
}

/// Longest a dispatched call may take when the job sets no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Start a worker pool that dispatches the routed job types over HTTP, publishing job
/// events on `events`.
pub fn start(
    queue: Arc<dyn JobStore>,
    discovery: Arc<Discovery>,
    events: Arc<dyn EventBus>,
    routes: &BTreeMap<String, JobRoute>,
) -> WorkerPool {
    let client = reqwest::Client::new();
    let mut builder = WorkerPool::builder(queue).concurrency(1, 32).events(events);
    for (job_type, route) in routes {
        let (client, discovery, route) = (client.clone(), discovery.clone(), route.clone());
        builder = builder.handle(job_type, move |ctx| {
            dispatch(client.clone(), discovery.clone(), route.clone(), ctx)
        });
    }
    builder.start()
}

async fn dispatch(
    client: reqwest::Client,
    discovery: Arc<Discovery>,
    route: JobRoute,
    ctx: JobContext,
) -> Result<serde_json::Value, String> {
    let found = discovery
        .discover(&route.service)
        .await
        .map_err(|e| e.to_string())?;
    let instance = found
        .selected
        .ok_or_else(|| format!("no healthy instance of `{}`", route.service))?;
    let url = format!("http://{}:{}{}", instance.host, instance.port, route.path);
    let timeout = ctx
        .job
        .timeout_ms
        .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
    let mut request = client.post(&url).timeout(timeout).json(&ctx.job);
    // The service continues the job's trace (the run's span when export is on).
    if let Some(trace) = omc_orchestra::telemetry::current_header() {
        request = request.header("traceparent", trace);
    }
    let response = request.send().await.map_err(|e| failed(&url, e))?;
    let status = response.status();
    let body = response.text().await.map_err(|e| failed(&url, e))?;
    if status.is_success() {
        Ok(serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)))
    } else {
        Err(format!("{} answered {status}: {body}", route.service))
    }
}

/// A failed call as the job's error, which the jobs API shows: a route's path may carry a
/// token in its query, and the client's error quotes the URL again.
fn failed(url: &str, err: reqwest::Error) -> String {
    redact(&format!("POST {url}: {err}"))
}
