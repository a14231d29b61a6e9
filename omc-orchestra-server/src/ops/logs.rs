//! `orchestra logs …`: follow and search the logging server's records.

use super::span::parse_since;
use super::{cell, ClientArgs, Failure, Operator, Outcome, Server, Table};
use clap::{Args, Subcommand};
use serde_json::Value;

/// `orchestra logs [tail --level error --service S|search TEXT --since 1h]`.
#[derive(Debug, Subcommand)]
pub enum LogsAction {
    /// Print new records as they arrive, until Ctrl-C.
    Tail(TailArgs),
    /// Search the stored records, newest first.
    Search(SearchArgs),
}

/// Filters both commands take.
#[derive(Debug, Args)]
pub struct LogFilter {
    /// This level and above: debug, info, warn, error.
    #[arg(long)]
    pub level: Option<String>,
    /// Only this service's records.
    #[arg(long)]
    pub service: Option<String>,
}

impl LogFilter {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        if let Some(level) = &self.level {
            query.push(("level", level.clone()));
        }
        if let Some(service) = &self.service {
            query.push(("service", service.clone()));
        }
        query
    }
}

/// `orchestra logs tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// Which records.
    #[command(flatten)]
    pub filter: LogFilter,
    /// Stop after this many records [default: never].
    #[arg(long)]
    pub count: Option<u64>,
    /// Where the servers are and how to print.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `orchestra logs search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Text the message contains, any case.
    pub text: Option<String>,
    /// How far back: 90s, 10m, 1h, 7d [default: all that is kept].
    #[arg(long, value_parser = parse_since)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Which records.
    #[command(flatten)]
    pub filter: LogFilter,
    /// Most records shown (at most 1000).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Where the servers are and how to print.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Run `orchestra logs …`.
pub(crate) async fn run(action: LogsAction) -> Outcome {
    match action {
        LogsAction::Tail(args) => tail(args).await,
        LogsAction::Search(args) => search(args).await,
    }
}

fn record_row(record: &Value) -> Vec<String> {
    vec![
        cell(&record["timestamp"]),
        cell(&record["level"]),
        cell(&record["service"]),
        cell(&record["message"]),
    ]
}

async fn search(args: SearchArgs) -> Outcome {
    let op = Operator::new(&args.client)?;
    let mut query = args.filter.query();
    if let Some(text) = args.text.filter(|t| !t.is_empty()) {
        query.push(("text", text));
    }
    if let Some(since) = args.since {
        query.push(("since", since.to_rfc3339()));
    }
    query.push(("limit", args.limit.clamp(1, 1000).to_string()));
    let page = op
        .client
        .search_logs(&query)
        .await
        .map_err(|err| op.fail(Server::Logging, err))?;
    let records = serde_json::to_value(&page.records).unwrap_or_default();
    op.out.show(&records, |records| {
        let mut table = Table::new(&["TIME", "LEVEL", "SERVICE", "MESSAGE"], "no records match");
        for record in records.as_array().into_iter().flatten() {
            table.row(record_row(record));
        }
        table
    });
    Ok(())
}

async fn tail(args: TailArgs) -> Outcome {
    let op = Operator::new(&args.client)?;
    let mut stream = op
        .client
        .tail_logs(&args.filter.query())
        .await
        .map_err(|err| op.fail(Server::Logging, err))?;
    let mut shown = 0u64;
    while args.count.is_none_or(|count| shown < count) {
        let Some(record) = stream
            .next_record()
            .await
            .map_err(|err| op.fail(Server::Logging, err))?
        else {
            return Err(Failure("the logging server closed the tail".into()));
        };
        let value = serde_json::to_value(&record).unwrap_or_default();
        if op.out.json {
            op.out.json_line(&value);
        } else {
            let mut row = record_row(&value);
            row[1] = op.out.paint(&row[1]);
            op.out.line(&row.join("  "));
        }
        shown += 1;
    }
    Ok(())
}
