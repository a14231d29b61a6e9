//! `orchestra events …`: follow, publish and replay events on the registry server.

use super::span::parse_since;
use super::{cell, record_table, ClientArgs, Failure, Operator, Outcome, Server, Table};
use clap::{Args, Subcommand};
use omc_orchestra_client::{EventQuery, NewEvent};
use serde_json::{json, Value};
use std::time::Duration;

/// How many events one page of a replay asks for.
const PAGE: usize = 1_000;
/// How often `tail` asks for new events.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// `orchestra events [tail --type T|publish TYPE --data JSON|replay --since 10m]`.
#[derive(Debug, Subcommand)]
pub enum EventsAction {
    /// Print events as they are published, until Ctrl-C.
    Tail(TailArgs),
    /// Publish one event.
    Publish(PublishArgs),
    /// Print (or re-deliver to a consumer group) the events of a past span.
    Replay(ReplayArgs),
}

/// `orchestra events tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// Only events of this type, e.g. PRICE_UPDATED.
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// Stop after this many events [default: never].
    #[arg(long)]
    pub count: Option<u64>,
    /// Where the servers are and how to print.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `orchestra events publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The event type, e.g. PRICE_UPDATED.
    pub event_type: String,
    /// The event's data, as JSON.
    #[arg(long, default_value = "{}")]
    pub data: String,
    /// The service it comes from.
    #[arg(long, default_value = "orchestra-cli")]
    pub source: String,
    /// Where the servers are and how to print.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `orchestra events replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// How far back to start: 90s, 10m, 2h, 1d.
    #[arg(long, value_parser = parse_since)]
    pub since: chrono::DateTime<chrono::Utc>,
    /// Only events of this type.
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// Publish the events again to this consumer group only, instead of just printing
    /// them.
    #[arg(long)]
    pub group: Option<String>,
    /// Where the servers are and how to print.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Run `orchestra events …`.
pub async fn run(action: EventsAction) -> Outcome {
    match action {
        EventsAction::Tail(args) => tail(args).await,
        EventsAction::Publish(args) => publish(args).await,
        EventsAction::Replay(args) => replay(args).await,
    }
}

/// One row per event.
fn event_table(events: &Value) -> Table {
    let mut table = Table::new(&["TIME", "TYPE", "SOURCE", "ID", "DATA"], "no events");
    for event in events.as_array().into_iter().flatten() {
        table.row(event_row(event));
    }
    table
}

fn event_row(event: &Value) -> Vec<String> {
    vec![
        cell(&event["time"]),
        cell(&event["type"]),
        cell(&event["source"]),
        cell(&event["id"]),
        event["data"].to_string(),
    ]
}

async fn publish(args: PublishArgs) -> Outcome {
    let op = Operator::new(&args.client)?;
    let data: Value = serde_json::from_str(&args.data)
        .map_err(|err| Failure(format!("--data is not JSON: {err}")))?;
    let event = op
        .client
        .publish(NewEvent::new(args.event_type, args.source, data))
        .await
        .map_err(|err| op.fail(Server::Registry, err))?;
    op.out.show(
        &serde_json::to_value(&event).unwrap_or_default(),
        record_table,
    );
    Ok(())
}

/// The body of one replay page: from after `from_id`, or else from `since`.
fn page_request(from_id: Option<&str>, since: &str, args_type: &Option<String>) -> Value {
    let mut body = match from_id {
        Some(id) => json!({"fromId": id, "limit": PAGE}),
        None => json!({"since": since, "limit": PAGE}),
    };
    if let Some(event_type) = args_type {
        body["type"] = json!(event_type);
    }
    body
}

async fn replay(args: ReplayArgs) -> Outcome {
    let op = Operator::new(&args.client)?;
    let since = args.since.to_rfc3339();
    let mut events: Vec<Value> = Vec::new();
    let mut from_id: Option<String> = None;
    loop {
        let mut body = page_request(from_id.as_deref(), &since, &args.event_type);
        if let Some(group) = &args.group {
            body["group"] = json!(group);
        }
        let page = op.client.replay_events(&body).await.map_err(|err| {
            op.out.progress_done();
            op.fail(Server::Registry, err)
        })?;
        let got = page["events"].as_array().cloned().unwrap_or_default();
        let done = got.len() < PAGE;
        events.extend(got);
        op.out
            .progress(&format!("replayed {} events…", events.len()));
        match page["nextFromId"].as_str() {
            Some(next) if !done => from_id = Some(next.to_owned()),
            _ => break,
        }
    }
    op.out.progress_done();
    op.out.show(&Value::Array(events), event_table);
    Ok(())
}

async fn tail(args: TailArgs) -> Outcome {
    let op = Operator::new(&args.client)?;
    let newest = op
        .client
        .events(&EventQuery {
            limit: Some(1),
            ..EventQuery::default()
        })
        .await
        .map_err(|err| op.fail(Server::Registry, err))?;
    let mut from_id = newest.last().map(|event| event.id.clone());
    let since = chrono::Utc::now().to_rfc3339();
    let mut shown = 0u64;
    loop {
        if args.count.is_some_and(|count| shown >= count) {
            return Ok(());
        }
        let page = op
            .client
            .replay_events(&page_request(from_id.as_deref(), &since, &args.event_type))
            .await
            .map_err(|err| op.fail(Server::Registry, err))?;
        for event in page["events"].as_array().into_iter().flatten() {
            if args.count.is_some_and(|count| shown >= count) {
                return Ok(());
            }
            if op.out.json {
                op.out.json_line(event);
            } else {
                op.out.line(&event_row(event).join("  "));
            }
            shown += 1;
        }
        match page["nextFromId"].as_str() {
            Some(next) => from_id = Some(next.to_owned()),
            None => tokio::time::sleep(POLL_EVERY).await,
        }
    }
}
