//! `orchestra jobs …`: list, show, retry and cancel jobs; the queue's figures; workers.

use super::Table;
use super::{
    age, cell, percent, record_table, ClientArgs, Failure, IdArgs, Operator, Outcome, PlainArgs,
    Server,
};
use clap::{Args, Subcommand};
use omc_orchestra_client::{JobFilter, JobState};
use serde_json::{json, Value};

/// How many failed jobs one page of `retry-failed --type` reads.
const RETRY_PAGE: usize = 500;

/// `orchestra jobs [ls|show ID|retry ID|retry-failed|cancel ID|stats|types|workers]`.
#[derive(Debug, Subcommand)]
pub enum JobsAction {
    /// List jobs, by state and type.
    Ls(ListArgs),
    /// One job in full: data, attempts, error, result, and each failed attempt.
    Show(IdArgs),
    /// Put one failed job back to waiting with fresh attempts.
    Retry(IdArgs),
    /// Put every failed job (of one type, with --type) back to waiting.
    RetryFailed(RetryFailedArgs),
    /// Cancel a job: removed unless running; a running job's worker is told to stop.
    Cancel(IdArgs),
    /// Counts by state, throughput, failure rate, and job types nothing runs.
    Stats(PlainArgs),
    /// Counts by job type: waiting, delayed, active and failed.
    Types(PlainArgs),
    /// The workers seen in the last minute.
    Workers(PlainArgs),
}

/// `orchestra jobs ls`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only jobs in this state: waiting, delayed, active, completed or failed.
    #[arg(long)]
    pub state: Option<String>,
    /// Only jobs of this type.
    #[arg(long = "type")]
    pub job_type: Option<String>,
    /// Most jobs listed (at most 1000).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Where the servers are and how to print.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `orchestra jobs retry-failed`.
#[derive(Debug, Args)]
pub struct RetryFailedArgs {
    /// Only failed jobs of this type (retried one by one, with progress on a terminal).
    #[arg(long = "type")]
    pub job_type: Option<String>,
    /// Where the servers are and how to print.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Run `orchestra jobs …`.
pub(crate) async fn run(action: JobsAction) -> Outcome {
    match action {
        JobsAction::Ls(args) => list(args).await,
        JobsAction::Show(args) => one(args, Verb::Show).await,
        JobsAction::Retry(args) => one(args, Verb::Retry).await,
        JobsAction::Cancel(args) => one(args, Verb::Cancel).await,
        JobsAction::RetryFailed(args) => retry_failed(args).await,
        JobsAction::Stats(args) => stats(args).await,
        JobsAction::Types(args) => types(args).await,
        JobsAction::Workers(args) => workers(args).await,
    }
}

/// The state a `--state` word names.
fn state_of(text: &str) -> Result<JobState, Failure> {
    serde_json::from_value(Value::String(text.to_ascii_lowercase())).map_err(|_| {
        Failure(format!(
            "--state `{text}`: use waiting, delayed, active, completed or failed"
        ))
    })
}

async fn list(args: ListArgs) -> Outcome {
    let op = Operator::new(&args.client)?;
    let filter = JobFilter {
        state: args.state.as_deref().map(state_of).transpose()?,
        job_type: args.job_type,
        offset: 0,
        limit: Some(args.limit.clamp(1, 1000)),
    };
    let jobs = op
        .client
        .jobs(&filter)
        .await
        .map_err(|err| op.fail(Server::Jobs, err))?;
    op.out
        .show(&serde_json::to_value(&jobs).unwrap_or_default(), job_table);
    Ok(())
}

/// One row per job.
fn job_table(jobs: &Value) -> Table {
    let mut table = Table::new(
        &[
            "ID", "TYPE", "STATE", "PRIORITY", "ATTEMPTS", "CREATED", "ERROR",
        ],
        "no jobs match",
    );
    for job in jobs.as_array().into_iter().flatten() {
        table.row(vec![
            cell(&job["id"]),
            cell(&job["type"]),
            cell(&job["state"]),
            cell(&job["priority"]),
            format!("{}/{}", cell(&job["attempts"]), cell(&job["maxAttempts"])),
            format!("{} ago", age(&job["createdAt"])),
            cell(&job["error"]),
        ]);
    }
    table
}

/// What `show`, `retry` and `cancel` do to one job.
#[derive(Clone, Copy)]
enum Verb {
    Show,
    Retry,
    Cancel,
}

async fn one(args: IdArgs, verb: Verb) -> Outcome {
    let op = Operator::new(&args.client)?;
    let job = match verb {
        Verb::Show => op.client.job(&args.id).await,
        Verb::Retry => op.client.retry_job(&args.id).await,
        Verb::Cancel => op.client.cancel_job(&args.id).await,
    }
    .map_err(|err| op.fail(Server::Jobs, err))?;
    op.out
        .show(&serde_json::to_value(&job).unwrap_or_default(), job_record);
    Ok(())
}

/// One job as `FIELD VALUE` rows, its failed attempts one row each, oldest first.
fn job_record(job: &Value) -> Table {
    let mut fields = job.clone();
    let attempts = fields
        .as_object_mut()
        .and_then(|fields| fields.remove("failedAttempts"));
    let mut table = record_table(&fields);
    for attempt in attempts
        .as_ref()
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let worker = match attempt["worker"].as_str() {
            Some(worker) => format!(" on {worker}"),
            None => String::new(),
        };
        table.row(vec![
            format!("attempt {}", cell(&attempt["attempt"])),
            format!(
                "failed {}{worker}: {}",
                cell(&attempt["failedAt"]),
                cell(&attempt["error"])
            ),
        ]);
    }
    table
}

async fn retry_failed(args: RetryFailedArgs) -> Outcome {
    let op = Operator::new(&args.client)?;
    let retried = match &args.job_type {
        None => {
            let waiting = op
                .client
                .job_stats()
                .await
                .map_err(|err| op.fail(Server::Jobs, err))?;
            op.out.progress(&format!(
                "retrying {} failed jobs…",
                cell(&waiting["failed"])
            ));
            // One call: the server moves them in batches, atomically per batch.
            let retried = op.client.retry_failed().await;
            op.out.progress_done();
            retried.map_err(|err| op.fail(Server::Jobs, err))?
        }
        Some(job_type) => retry_failed_of_type(&op, job_type).await?,
    };
    let value = json!({"retried": retried});
    op.out.show(&value, |_| {
        let mut table = Table::new(&["RETRIED"], "");
        table.row(vec![retried.to_string()]);
        table
    });
    Ok(())
}

/// Retry the failed jobs of one type a page at a time, counting on the terminal.
async fn retry_failed_of_type(op: &Operator, job_type: &str) -> Result<u64, Failure> {
    let filter = JobFilter {
        state: Some(JobState::Failed),
        job_type: Some(job_type.to_owned()),
        offset: 0,
        limit: Some(RETRY_PAGE),
    };
    let mut retried = 0u64;
    loop {
        // Each retried job leaves the failed set, so the first page is always the next.
        let page = op
            .client
            .jobs(&filter)
            .await
            .map_err(|err| op.fail(Server::Jobs, err))?;
        if page.is_empty() {
            break;
        }
        let mut moved = 0;
        for job in &page {
            match op.client.retry_job(&job.id).await {
                Ok(_) => {
                    moved += 1;
                    retried += 1;
                }
                // Retried or removed meanwhile by someone else: not ours to count.
                Err(err) if matches!(err.status(), Some(404 | 409)) => {}
                Err(err) => {
                    op.out.progress_done();
                    return Err(op.fail(Server::Jobs, err));
                }
            }
            op.out
                .progress(&format!("retried {retried} failed {job_type} jobs…"));
        }
        if moved == 0 {
            break;
        }
    }
    op.out.progress_done();
    Ok(retried)
}

async fn stats(args: PlainArgs) -> Outcome {
    let op = Operator::new(&args.client)?;
    let stats = op
        .client
        .job_stats()
        .await
        .map_err(|err| op.fail(Server::Jobs, err))?;
    op.out.show(&stats, stats_table);
    Ok(())
}

async fn types(args: PlainArgs) -> Outcome {
    let op = Operator::new(&args.client)?;
    let types = op
        .client
        .job_types()
        .await
        .map_err(|err| op.fail(Server::Jobs, err))?;
    op.out.show(&types, |types| {
        let mut table = Table::new(
            &["TYPE", "WAITING", "DELAYED", "ACTIVE", "FAILED"],
            "no jobs waiting, delayed, running or failed",
        );
        for counts in types.as_array().into_iter().flatten() {
            table.row(
                ["type", "waiting", "delayed", "active", "failed"]
                    .iter()
                    .map(|field| cell(&counts[*field]))
                    .collect(),
            );
        }
        table
    });
    Ok(())
}

/// The queue's counts and the last minute's and hour's figures.
pub(crate) fn stats_table(stats: &Value) -> Table {
    let mut table = Table::new(&["FIGURE", "VALUE"], "");
    for state in ["waiting", "delayed", "active", "completed", "failed"] {
        table.row(vec![state.to_owned(), cell(&stats[state])]);
    }
    for (label, window) in [("last minute", "lastMinute"), ("last hour", "lastHour")] {
        let w = &stats[window];
        table.row(vec![
            label.to_owned(),
            format!(
                "{} completed, {} failed, {:.2}/s, failure rate {}",
                cell(&w["completed"]),
                cell(&w["failed"]),
                w["throughputPerSec"].as_f64().unwrap_or(0.0),
                percent(&w["failureRate"])
            ),
        ]);
    }
    for unattended in stats["unattended"].as_array().into_iter().flatten() {
        table.row(vec![
            "no worker for".to_owned(),
            format!(
                "{} ({} waiting)",
                cell(&unattended["type"]),
                cell(&unattended["waiting"])
            ),
        ]);
    }
    table
}

async fn workers(args: PlainArgs) -> Outcome {
    let op = Operator::new(&args.client)?;
    let workers = op
        .client
        .workers()
        .await
        .map_err(|err| op.fail(Server::Jobs, err))?;
    op.out.show(&workers, |workers| {
        let mut table = Table::new(
            &["WORKER", "TYPES", "IN FLIGHT", "LAST SEEN"],
            "no worker asked for jobs in the last minute",
        );
        for worker in workers.as_array().into_iter().flatten() {
            let types = cell(&worker["types"]);
            table.row(vec![
                cell(&worker["worker"]),
                if types.is_empty() {
                    "any".into()
                } else {
                    types
                },
                cell(&worker["inFlight"]),
                format!("{}s ago", cell(&worker["lastSeenSecs"])),
            ]);
        }
        table
    });
    Ok(())
}
