//! `orchestra schedules …`: the cron schedules of the jobs server.

use super::{age, cell, ClientArgs, Failure, IdArgs, Operator, Outcome, PlainArgs, Server, Table};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

/// `orchestra schedules [ls|add|rm]`; `ls` when none is named.
#[derive(Debug, Subcommand)]
pub enum SchedulesAction {
    /// List the schedules.
    Ls(PlainArgs),
    /// Add a schedule: a job enqueued at every tick of a cron expression.
    Add(AddArgs),
    /// Remove a schedule.
    Rm(IdArgs),
}

/// `orchestra schedules add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// Cron expression with seconds or without, e.g. "0 2 * * *".
    pub cron: String,
    /// The type of job it enqueues.
    #[arg(long = "type")]
    pub job_type: String,
    /// The job's data, as JSON.
    #[arg(long, default_value = "{}")]
    pub data: String,
    /// The schedule's id [default: a fresh one].
    #[arg(long)]
    pub id: Option<String>,
    /// Time zone of the cron expression, e.g. Africa/Accra [default: UTC].
    #[arg(long)]
    pub timezone: Option<String>,
    /// Where the servers are and how to print.
    #[command(flatten)]
    pub client: ClientArgs,
}

impl SchedulesAction {
    /// `ls` over `client`: what the group command runs without a subcommand.
    pub fn listing(client: ClientArgs) -> Self {
        Self::Ls(PlainArgs { client })
    }
}

/// Run `orchestra schedules …`.
pub(crate) async fn run(action: SchedulesAction) -> Outcome {
    match action {
        SchedulesAction::Ls(args) => {
            let op = Operator::new(&args.client)?;
            let schedules = op
                .client
                .schedules()
                .await
                .map_err(|err| op.fail(Server::Jobs, err))?;
            op.out.show(&schedules, schedule_table);
        }
        SchedulesAction::Add(args) => {
            let op = Operator::new(&args.client)?;
            let data: Value = serde_json::from_str(&args.data)
                .map_err(|err| Failure(format!("--data is not JSON: {err}")))?;
            let mut body = json!({"cron": args.cron, "job": {"type": args.job_type, "data": data}});
            if let Some(id) = args.id {
                body["id"] = json!(id);
            }
            if let Some(timezone) = args.timezone {
                body["timezone"] = json!(timezone);
            }
            let added = op
                .client
                .add_schedule(&body)
                .await
                .map_err(|err| op.fail(Server::Jobs, err))?;
            op.out.show(&added, |added| schedule_table(&json!([added])));
        }
        SchedulesAction::Rm(args) => {
            let op = Operator::new(&args.client)?;
            let removed = op
                .client
                .remove_schedule(&args.id)
                .await
                .map_err(|err| op.fail(Server::Jobs, err))?;
            op.out
                .show(&removed, |removed| schedule_table(&json!([removed])));
        }
    }
    Ok(())
}

/// One row per schedule.
fn schedule_table(schedules: &Value) -> Table {
    let mut table = Table::new(
        &[
            "ID",
            "CRON",
            "TIMEZONE",
            "JOB TYPE",
            "PAUSED",
            "NEXT RUN",
            "LAST FIRED",
        ],
        "no schedules",
    );
    for schedule in schedules.as_array().into_iter().flatten() {
        let fired = age(&schedule["lastFiredAt"]);
        table.row(vec![
            cell(&schedule["id"]),
            cell(&schedule["cron"]),
            cell(&schedule["timezone"]),
            cell(&schedule["job"]["type"]),
            cell(&schedule["paused"]),
            // `2026-12-06T02:00:00Z` read as `2026-12-06 02:00:00`; none while paused.
            match schedule["nextRunAt"].as_str() {
                Some(at) => at.get(..19).unwrap_or(at).replace('T', " "),
                None => "-".into(),
            },
            if fired.is_empty() {
                "never".into()
            } else {
                format!("{fired} ago")
            },
        ]);
    }
    table
}
