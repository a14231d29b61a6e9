//! `orchestra status`: what an operator looks at first, on one screen: service counts,
//! firing alerts, queue depths and error rates.

use super::{cell, percent, ClientArgs, Failure, Operator, Outcome, Server, Table};
use clap::Args;
use serde_json::{json, Value};

/// `orchestra status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The span the logs' error rate covers: 30s, 15m, 1h.
    #[arg(long, default_value = "15m")]
    pub window: String,
    /// Where the servers are and how to print.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Run `orchestra status`: every server is asked at once; one that does not answer is
/// shown as such, and the exit status is then 1.
pub async fn run(args: StatusArgs) -> Outcome {
    let op = Operator::new(&args.client)?;
    let window = [("window", args.window.clone())];
    let (dashboard, alerts, jobs, logs) = tokio::join!(
        op.client.dashboard(),
        op.client.alerts(),
        op.client.job_stats(),
        op.client.log_stats(&window),
    );
    let mut failures: Vec<Failure> = Vec::new();
    let mut keep = |server: Server, answer: omc_orchestra_client::Result<Value>| match answer {
        Ok(value) => value,
        Err(err) => {
            failures.push(op.fail(server, err));
            Value::Null
        }
    };
    let status = json!({
        "dashboard": keep(Server::Registry, dashboard),
        "alerts": keep(Server::Registry, alerts)["active"].clone(),
        "jobs": keep(Server::Jobs, jobs),
        "logs": keep(Server::Logging, logs),
    });
    op.out.show(&status, |status| screen(status, &args.window));
    match failures.into_iter().next() {
        Some(first) => Err(first),
        None => Ok(()),
    }
}

/// The one screen.
fn screen(status: &Value, window: &str) -> Table {
    let mut table = Table::new(&["AREA", "NOW"], "");
    let unreachable = || "unreachable".to_owned();
    let dashboard = &status["dashboard"];
    table.row(vec![
        "services".into(),
        if dashboard.is_null() {
            unreachable()
        } else {
            let counts = &dashboard["services"];
            format!(
                "{} instances of {} services: {} passing, {} warning, {} critical",
                cell(&counts["total"]),
                cell(&dashboard["serviceNames"]),
                cell(&counts["passing"]),
                cell(&counts["warning"]),
                cell(&counts["critical"]),
            )
        },
    ]);
    let firing: Vec<String> = status["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|alert| alert["state"] == "firing")
        .map(|alert| format!("{} ({})", cell(&alert["rule"]), cell(&alert["severity"])))
        .collect();
    table.row(vec![
        "alerts".into(),
        if status["alerts"].is_null() {
            unreachable()
        } else if firing.is_empty() {
            "none firing".into()
        } else {
            format!("{} firing: {}", firing.len(), firing.join(", "))
        },
    ]);
    let jobs = &status["jobs"];
    table.row(vec![
        "jobs".into(),
        if jobs.is_null() {
            unreachable()
        } else {
            format!(
                "{} waiting, {} active, {} delayed, {} failed; last hour {} completed, failure rate {}",
                cell(&jobs["waiting"]),
                cell(&jobs["active"]),
                cell(&jobs["delayed"]),
                cell(&jobs["failed"]),
                cell(&jobs["lastHour"]["completed"]),
                percent(&jobs["lastHour"]["failureRate"]),
            )
        },
    ]);
    let logs = &status["logs"];
    table.row(vec![
        "logs".into(),
        if logs.is_null() {
            unreachable()
        } else {
            format!(
                "last {window}: {} records, error rate {}",
                cell(&logs["total"]),
                percent(&logs["errorRate"]),
            )
        },
    ]);
    if !dashboard.is_null() {
        table.row(vec![
            "probes".into(),
            format!(
                "health-check error rate {}",
                percent(&dashboard["probeErrorRate"])
            ),
        ]);
        let system = &dashboard["system"];
        if !system.is_null() {
            table.row(vec![
                "host".into(),
                format!(
                    "{}: cpu {:.1}%, memory {:.1}%",
                    cell(&system["host"]),
                    system["cpu"]["totalPercent"].as_f64().unwrap_or(0.0),
                    system["memoryPercent"].as_f64().unwrap_or(0.0),
                ),
            ]);
        }
    }
    table
}
