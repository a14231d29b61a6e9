//! The WebSocket hub at `/ws`: live updates for dashboards, NestJS `WsAdapter` style.
//!
//! Every message, both ways, is `{"event": NAME, "data": ...}`. A client sends
//! `subscribe` / `unsubscribe` with `{"channels": [...], "types": [...]}` (types filter
//! the `events` channel), `get_system_dashboard`, or `ping`. It receives, per channel:
//! `service_update` (services), `alert` (alerts), `metric` (metrics), `event` (events),
//! `log` (logs), `job` (jobs), with the bus event as `data`; plus `subscribed`,
//! `unsubscribed`, `system_dashboard`, `pong`, `lagged` and `error` answers.
//!
//! Updates reach the hub only through the event bus, so with a Redis bus every replica's
//! clients see every replica's changes. The hub fans out through one `broadcast` channel
//! per channel; each connection is one task that `select!`s over its socket, its
//! subscriptions and a ping timer. A slow client misses updates (and is told so), and one
//! that cannot take a message within the send timeout is disconnected: neither slows
//! anyone else.

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::{SinkExt, StreamExt};
use omc_orchestra::events::{types, Event, EventBus};
use omc_orchestra::logs::LogTail;
use omc_orchestra::registry::Registry;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The channels a client can subscribe to, in a fixed order.
pub(crate) const CHANNELS: [&str; 6] = ["services", "alerts", "metrics", "events", "logs", "jobs"];
const EVENTS: usize = 3;
const LOGS: usize = 4;

/// How the hub treats connections.
#[derive(Debug, Clone, Copy)]
pub struct WsConfig {
    /// Updates a client may fall behind by, per channel, before it is told it lagged.
    pub buffer: usize,
    /// How often the server pings; a client silent for two intervals is disconnected.
    pub ping_every: Duration,
    /// How long one send may take before the client is cut off as too slow.
    pub send_timeout: Duration,
    /// Most connections at once.
    pub max_connections: usize,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            buffer: 256,
            ping_every: Duration::from_secs(30),
            send_timeout: Duration::from_secs(5),
            max_connections: 10_000,
        }
    }
}

/// An update serialized once for every client of a channel.
#[derive(Debug)]
pub(crate) struct Update {
    event_type: String,
    text: Utf8Bytes,
}

/// Fans bus events out to the channels.
pub(crate) struct Hub {
    channels: [broadcast::Sender<Arc<Update>>; 6],
    connections: AtomicUsize,
    config: WsConfig,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

/// The channels an event belongs to (always `events`).
pub(crate) fn channels_of(event: &Event) -> Vec<usize> {
    let t = event.event_type.as_str();
    let mut found = vec![EVENTS];
    if t.starts_with("SERVICE_") {
        found.push(0);
    }
    if t == types::SYSTEM_ALERT {
        found.push(1);
    }
    if t == types::PERFORMANCE_METRIC {
        found.push(2);
    }
    if t.starts_with("LOG_") {
        found.push(4);
    }
    if t.starts_with("JOB_") {
        found.push(5);
    }
    found
}

fn message_name(channel: usize) -> &'static str {
    ["service_update", "alert", "metric", "event", "log", "job"][channel]
}

fn frame(event: &str, data: Value) -> Message {
    Message::Text(json!({ "event": event, "data": data }).to_string().into())
}

impl Hub {
    /// A hub fed by `bus`, and the task feeding it.
    pub(crate) fn spawn(bus: &dyn EventBus, config: WsConfig) -> (Arc<Hub>, JoinHandle<()>) {
        let hub = Arc::new(Hub {
            channels: std::array::from_fn(|_| broadcast::channel(config.buffer.max(1)).0),
            connections: AtomicUsize::new(0),
            config,
        });
        let mut events = bus.subscribe();
        let feeding = hub.clone();
        let task = tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => feeding.dispatch(&event),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "the WebSocket hub fell behind the bus");
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        (hub, task)
    }

    /// Stream the log store's live tail to the `logs` channel: every replica's records
    /// reach every replica's clients when the store is Redis, without copying each record
    /// onto the event bus.
    pub(crate) fn feed_logs(self: &Arc<Self>, mut tail: LogTail) -> JoinHandle<()> {
        let hub = self.clone();
        tokio::spawn(async move {
            while let Some(record) = tail.next().await {
                let channel = &hub.channels[LOGS];
                if channel.receiver_count() == 0 {
                    continue;
                }
                let text = json!({ "event": message_name(LOGS), "data": record }).to_string();
                let _ = channel.send(Arc::new(Update {
                    event_type: "LOG_RECORD".to_owned(),
                    text: text.into(),
                }));
            }
        })
    }

    fn dispatch(&self, event: &Event) {
        let listened: Vec<usize> = channels_of(event)
            .into_iter()
            .filter(|&c| self.channels[c].receiver_count() > 0)
            .collect();
        if listened.is_empty() {
            return;
        }
        let data = serde_json::to_value(event).unwrap_or(Value::Null);
        for channel in listened {
            let text = json!({ "event": message_name(channel), "data": data }).to_string();
            let _ = self.channels[channel].send(Arc::new(Update {
                event_type: event.event_type.clone(),
                text: text.into(),
            }));
        }
    }

    /// Clients connected now.
    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

/// What the WebSocket endpoint needs.
#[derive(Clone)]
pub(crate) struct WsState {
    /// The hub.
    pub hub: Arc<Hub>,
    /// The registry, for the dashboard's counts.
    pub registry: Arc<dyn Registry>,
    /// The bus, for the dashboard's recent alerts and counts.
    pub bus: Arc<dyn EventBus>,
    /// The registry server's request metrics, for the dashboard's request and error rates.
    pub metrics: crate::http::HttpMetrics,
    /// When the server started.
    pub started: std::time::Instant,
    /// The browser origins that may open the feed besides same-origin pages.
    pub origins: crate::http::Origins,
}

/// The `/ws` router.
pub(crate) fn router(state: WsState) -> Router {
    Router::new().route("/ws", get(upgrade)).with_state(state)
}

async fn upgrade(
    ws: WebSocketUpgrade,
    headers: HeaderMap,
    State(state): State<WsState>,
) -> Response {
    // A browser sends `Origin` on every upgrade and lets any page open a socket anywhere:
    // the server must refuse foreign pages itself (cross-site WebSocket hijacking).
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let allowed = origin
            .to_str()
            .is_ok_and(|origin| state.origins.allows(origin, host));
        if !allowed {
            let mut refused = crate::http::ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "forbidden",
                "this origin may not open the live feed; list it with --cors-origin",
            );
            refused.body.details =
                vec![json!({ "field": "origin", "reason": "not same-origin nor listed" })];
            return refused.into_response();
        }
    }
    let hub = &state.hub;
    if hub.connections.fetch_add(1, Ordering::SeqCst) >= hub.config.max_connections {
        hub.connections.fetch_sub(1, Ordering::SeqCst);
        return crate::http::ApiError::from(omc_orchestra::Error::Overloaded(
            "too many WebSocket connections".into(),
        ))
        .into_response();
    }
    ws.max_message_size(64 * 1024)
        .on_failed_upgrade({
            let hub = hub.clone();
            move |_| {
                hub.connections.fetch_sub(1, Ordering::SeqCst);
            }
        })
        .on_upgrade(move |socket| async move {
            connection(socket, &state).await;
            state.hub.connections.fetch_sub(1, Ordering::SeqCst);
        })
}

/// Wait for the next update on any subscribed channel.
async fn next_update(
    subs: &mut [Option<broadcast::Receiver<Arc<Update>>>; 6],
) -> (usize, Result<Arc<Update>, RecvError>) {
    let waits: Vec<_> = subs
        .iter_mut()
        .enumerate()
        .filter_map(|(i, rx)| {
            rx.as_mut()
                .map(|rx| Box::pin(async move { (i, rx.recv().await) }))
        })
        .collect();
    if waits.is_empty() {
        return std::future::pending().await;
    }
    futures::future::select_all(waits).await.0
}

/// A client's message.
#[derive(Debug, Deserialize)]
struct Incoming {
    event: String,
    #[serde(default)]
    data: Value,
}

/// `subscribe` / `unsubscribe` data.
#[derive(Debug, Default, Deserialize)]
struct ChannelRequest {
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    types: Option<Vec<String>>,
}

/// One connection's subscriptions.
struct Subscriptions {
    receivers: [Option<broadcast::Receiver<Arc<Update>>>; 6],
    types: Option<HashSet<String>>,
}

impl Subscriptions {
    fn names(&self) -> Vec<&'static str> {
        (0..6)
            .filter(|&i| self.receivers[i].is_some())
            .map(|i| CHANNELS[i])
            .collect()
    }
}

async fn connection(socket: WebSocket, state: &WsState) {
    let config = state.hub.config;
    let (mut sink, mut stream) = socket.split();
    let mut subs = Subscriptions {
        receivers: Default::default(),
        types: None,
    };
    let mut ping = tokio::time::interval(config.ping_every);
    ping.tick().await;
    let mut last_heard = Instant::now();
    loop {
        let outgoing = tokio::select! {
            incoming = stream.next() => {
                last_heard = Instant::now();
                match incoming {
                    Some(Ok(Message::Text(text))) => vec![answer(&text, &mut subs, state).await],
                    Some(Ok(Message::Binary(_))) => vec![error("send JSON text frames")],
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => Vec::new(),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                }
            }
            (channel, update) = next_update(&mut subs.receivers) => match update {
                Ok(update) => {
                    let filtered_out = channel == EVENTS
                        && subs.types.as_ref().is_some_and(|t| !t.contains(&update.event_type));
                    if filtered_out { Vec::new() } else { vec![Message::Text(update.text.clone())] }
                }
                Err(RecvError::Lagged(missed)) => {
                    vec![frame("lagged", json!({ "channel": CHANNELS[channel], "missed": missed }))]
                }
                Err(RecvError::Closed) => {
                    subs.receivers[channel] = None;
                    Vec::new()
                }
            },
            _ = ping.tick() => {
                if last_heard.elapsed() > config.ping_every * 2 {
                    return;
                }
                vec![Message::Ping(Vec::new().into())]
            }
        };
        for message in outgoing {
            match tokio::time::timeout(config.send_timeout, sink.send(message)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    }
}

fn error(message: impl Into<String>) -> Message {
    frame("error", json!({ "message": message.into() }))
}

/// The answer to one client message; never a reason to drop the socket.
async fn answer(text: &str, subs: &mut Subscriptions, state: &WsState) -> Message {
    let incoming: Incoming = match serde_json::from_str(text) {
        Ok(incoming) => incoming,
        Err(err) => {
            return error(format!(
                "expected {{\"event\": NAME, \"data\": ...}}: {err}"
            ))
        }
    };
    match incoming.event.as_str() {
        "subscribe" | "unsubscribe" => {
            let subscribe = incoming.event == "subscribe";
            let request: ChannelRequest = if incoming.data.is_null() {
                ChannelRequest::default()
            } else {
                match serde_json::from_value(incoming.data) {
                    Ok(request) => request,
                    Err(err) => return error(format!("data: {err}")),
                }
            };
            let mut indexes = Vec::new();
            for name in &request.channels {
                match CHANNELS.iter().position(|c| c == name) {
                    Some(i) => indexes.push(i),
                    None => {
                        return error(format!(
                            "unknown channel `{name}`; channels are {}",
                            CHANNELS.join(", ")
                        ))
                    }
                }
            }
            for i in indexes {
                if subscribe && subs.receivers[i].is_none() {
                    subs.receivers[i] = Some(state.hub.channels[i].subscribe());
                } else if !subscribe {
                    subs.receivers[i] = None;
                }
            }
            if subscribe {
                if let Some(types) = request.types {
                    // An empty list means every type again.
                    subs.types = (!types.is_empty()).then(|| types.into_iter().collect());
                }
            } else if subs.receivers[EVENTS].is_none() {
                subs.types = None;
            }
            let name = if subscribe {
                "subscribed"
            } else {
                "unsubscribed"
            };
            frame(
                name,
                json!({ "channels": subs.names(), "types": subs.types }),
            )
        }
        "get_system_dashboard" => match crate::ws_dashboard::system_dashboard(state).await {
            Ok(data) => frame("system_dashboard", data),
            Err(err) => error(format!("dashboard unavailable: {err}")),
        },
        "ping" => frame("pong", json!({ "at": chrono::Utc::now() })),
        other => error(format!(
            "unknown event `{other}`; send subscribe, unsubscribe, get_system_dashboard or ping"
        )),
    }
}
