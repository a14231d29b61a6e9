//! `orchestra events …`: follow (over the registry's WebSocket), publish and replay events
//! on the registry server.

use super::span::parse_since;
use super::{
    cell, feed_failure, record_table, ClientArgs, Failure, Operator, Outcome, Server, Table,
};
use clap::{Args, Subcommand};
use futures::{SinkExt, StreamExt};
use omc_orchestra_client::NewEvent;
use serde_json::{json, Value};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue};
use tokio_tungstenite::tungstenite::Message;

/// How many events one page of a replay asks for.
const PAGE: usize = 1_000;

/// `orchestra events [tail --type T|publish TYPE --data JSON|replay --since 10m]`.
#[derive(Debug, Subcommand)]
pub enum EventsAction {
    /// Print events as they are published (the registry's live WebSocket feed), until
    /// Ctrl-C.
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
pub(crate) async fn run(action: EventsAction) -> Outcome {
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

/// The registry's WebSocket (`ws://host:port/ws`) for its URL.
fn feed_url(registry: &str) -> Result<String, Failure> {
    let (scheme, rest) = registry
        .split_once("://")
        .ok_or_else(|| Failure(format!("`{registry}` is not a URL")))?;
    let scheme = match scheme {
        "http" => "ws",
        "https" => "wss",
        other => return Err(Failure(format!("`{other}` URLs are not served: use http"))),
    };
    Ok(format!("{scheme}://{rest}/ws"))
}

/// Follow the registry's live feed: subscribe to the `events` channel (of one type with
/// `--type`) and print each event as it comes, until Ctrl-C or `--count`.
async fn tail(args: TailArgs) -> Outcome {
    let op = Operator::new(&args.client)?;
    let registry = op.registry_url().to_owned();
    let failed = |err| feed_failure(&registry, err);
    let mut request = feed_url(&registry)?.into_client_request().map_err(failed)?;
    if let Some(token) = op.token() {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| Failure("ORCHESTRA_TOKEN is not a header value".into()))?;
        request.headers_mut().insert(header::AUTHORIZATION, value);
    }
    let (mut socket, _) = connect_async(request).await.map_err(failed)?;
    let types: Vec<&String> = args.event_type.iter().collect();
    let subscribe = json!({"event": "subscribe", "data": {"channels": ["events"], "types": types}});
    socket
        .send(Message::Text(subscribe.to_string().into()))
        .await
        .map_err(failed)?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut shown = 0u64;
    while args.count.is_none_or(|count| shown < count) {
        let message = tokio::select! {
            _ = &mut ctrl_c => break,
            message = socket.next() => message,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None => {
                return Err(Failure(format!(
                    "the registry at {registry} closed the live feed"
                )))
            }
            Some(Ok(_)) => continue,
            Some(Err(err)) => return Err(failed(err)),
        };
        let frame: Value = serde_json::from_str(&text).unwrap_or_default();
        match frame["event"].as_str() {
            Some("event") => {
                let event = &frame["data"];
                if op.out.json {
                    op.out.json_line(event);
                } else {
                    op.out.line(&event_row(event).join("  "));
                }
                shown += 1;
            }
            Some("lagged") => eprintln!(
                "warning: {} events were missed: this terminal fell behind the feed",
                cell(&frame["data"]["missed"])
            ),
            Some("error") => {
                return Err(Failure(format!(
                    "the registry at {registry} refused the subscription: {}",
                    cell(&frame["data"]["message"])
                )))
            }
            _ => {}
        }
    }
    let _ = socket.close(None).await;
    Ok(())
}
