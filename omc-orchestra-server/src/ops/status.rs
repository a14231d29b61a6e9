//! `orchestra status`: what an operator looks at first, on one screen: service counts,
//! firing alerts, queue depths, error rates and the gateway's traffic.

use super::gateway::{self, Scrape};
use super::span::parse_span;
use super::{cell, percent, ClientArgs, Failure, Operator, Outcome, Server, Table};
use clap::Args;
use omc_orchestra_client::ClientError;
use serde_json::{json, Value};
use std::time::Duration;

/// `orchestra status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The span the logs' error rate covers: 30s, 15m, 1h.
    #[arg(long, default_value = "15m")]
    pub window: String,
    /// How long to watch the gateway for its request and 5xx rates and latencies:
    /// 1s, 5s, 1m.
    #[arg(long, default_value = "1s", value_parser = parse_sample)]
    pub sample: Duration,
    /// Where the servers are and how to print.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Run `orchestra status`: every server is asked at once; one that does not answer is
/// shown as such, and the exit status is then 1.
pub(crate) async fn run(args: StatusArgs) -> Outcome {
    let op = Operator::new(&args.client)?;
    let window = [("window", args.window.clone())];
    let (dashboard, alerts, jobs, logs, traffic) = tokio::join!(
        op.client.dashboard(),
        op.client.alerts(),
        op.client.job_stats(),
        op.client.log_stats(&window),
        gateway_traffic(&op, args.sample),
    );
    let mut failures: Vec<Failure> = Vec::new();
    let mut keep = |server: Server, answer: omc_orchestra_client::Result<Value>| match answer {
        Ok(value) => value,
        Err(err) => {
            failures.push(op.fail(server, err));
            Value::Null
        }
    };
    // What the gateway's line says when there are no figures.
    let mut no_gateway = "not running beside the registry";
    let gateway = match traffic {
        Traffic::Figures(figures) => figures,
        Traffic::NotBeside => Value::Null,
        Traffic::Failed(err) => {
            no_gateway = "unreachable";
            keep(Server::Registry, Err(err))
        }
    };
    let status = json!({
        "dashboard": keep(Server::Registry, dashboard),
        "alerts": keep(Server::Registry, alerts)["active"].clone(),
        "jobs": keep(Server::Jobs, jobs),
        "logs": keep(Server::Logging, logs),
        "gateway": gateway,
    });
    op.out
        .show(&status, |status| screen(status, &args.window, no_gateway));
    match failures.into_iter().next() {
        Some(first) => Err(first),
        None => Ok(()),
    }
}

/// `--sample`: a span of at least one second and at most ten minutes.
fn parse_sample(text: &str) -> Result<Duration, String> {
    let span = parse_span(text)?;
    if !(1..=600).contains(&span.as_secs()) {
        return Err("--sample is between 1s and 10m".into());
    }
    Ok(span)
}

/// What the gateway's figures came to.
enum Traffic {
    /// Its figures (see [`gateway::figures`]).
    Figures(Value),
    /// No gateway runs beside the registry: nothing to show, and not a failure.
    NotBeside,
    /// The registry or the gateway did not answer.
    Failed(ClientError),
}

/// The gateway's figures over `sample`: two scrapes of its metrics `sample` apart, and
/// its breakers.
async fn gateway_traffic(op: &Operator, sample: Duration) -> Traffic {
    let scrape = || async {
        let body = op.client.gateway_metrics().await?;
        Ok::<_, ClientError>((tokio::time::Instant::now(), Scrape::parse(&body)))
    };
    let answer = async {
        let (start, before) = scrape().await?;
        tokio::time::sleep(sample).await;
        let ((end, after), breakers) = tokio::try_join!(scrape(), op.client.gateway_breakers())?;
        Ok::<_, ClientError>(gateway::figures(&before, &after, end - start, &breakers))
    };
    match answer.await {
        Ok(figures) => Traffic::Figures(figures),
        // A registry with no gateway beside it answers 400 (naming `server`); one without
        // the dashboard, 404.
        Err(ClientError::Http {
            status: 400 | 404, ..
        }) => Traffic::NotBeside,
        Err(err) => Traffic::Failed(err),
    }
}

/// The one screen; `no_gateway` is the gateway's line when it has no figures.
fn screen(status: &Value, window: &str, no_gateway: &str) -> Table {
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
    let gateway = &status["gateway"];
    table.row(vec![
        "gateway".into(),
        if gateway.is_null() {
            no_gateway.to_owned()
        } else {
            gateway::line(gateway)
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
