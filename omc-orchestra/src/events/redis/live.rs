//! The live stream of the Redis bus: each publish script call also publishes its new
//! events, as one message, on the bus's channel; every bus follows that channel, and
//! after each (re)connection first reads from history what it missed while it was not
//! subscribed, so a dropped connection loses nothing history still holds.
//!
//! A message is one line per event, `{id} {event JSON}`, joined by `\n` (compact JSON
//! holds neither a space before its first character nor a line break).

use super::{decode_event, Event, EventId};
use crate::backend::RedisStore;
use crate::{Error, Result};
use futures::StreamExt;
use std::time::Duration;
use tokio::sync::broadcast;

/// How long the channel may stay silent before the connection is checked with a ping.
const QUIET: Duration = Duration::from_secs(1);

/// Entries read from history per round trip when catching up.
const PAGE: usize = 512;

/// Where the live stream comes from and goes to.
pub(super) struct LiveFeed {
    /// The bus's store.
    pub store: RedisStore,
    /// The history stream.
    pub hist: String,
    /// The channel the publish script announces new events on.
    pub channel: String,
    /// The bus's live subscribers.
    pub live: broadcast::Sender<Event>,
}

impl LiveFeed {
    /// Pass on every event after `after` (an entry id of history), until aborted.
    pub(super) fn spawn(self, after: String) -> tokio::task::JoinHandle<()> {
        let mut last = after.parse().unwrap_or(EventId { ms: 0, seq: 0 });
        tokio::spawn(async move {
            loop {
                if let Err(err) = self.follow(&mut last).await {
                    tracing::warn!(error = %err, "event watch interrupted; reconnecting");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        })
    }

    /// One connection's worth of following, until an error.
    async fn follow(&self, last: &mut EventId) -> Result<()> {
        let (mut sink, mut messages) = self.store.pubsub().await?.split();
        sink.subscribe(&self.channel).await?;
        // Subscribed: whatever is published from now on arrives as a message, so what
        // history holds past `last` is all that was missed.
        self.catch_up(last).await?;
        loop {
            match tokio::time::timeout(QUIET, messages.next()).await {
                Ok(Some(message)) => {
                    for line in message.get_payload_bytes().split(|&b| b == b'\n') {
                        let Some(at) = line.iter().position(|&b| b == b' ') else {
                            continue;
                        };
                        let (id, json) = (&line[..at], &line[at + 1..]);
                        match std::str::from_utf8(id) {
                            Ok(id) => self.pass_on(last, id, json),
                            Err(_) => tracing::warn!("skipping a malformed live event"),
                        }
                    }
                }
                Ok(None) => return Err(Error::Backend("the live connection closed".into())),
                Err(_) => {
                    // Read as any value: on a subscribed RESP2 connection Redis answers
                    // `["pong", ""]`, not `PONG`, and any answer shows the connection is
                    // alive (an error reply comes back as an error).
                    let pong = tokio::time::timeout(QUIET * 2, sink.ping::<redis::Value>()).await;
                    pong.map_err(|_| {
                        Error::Backend("the live connection stopped answering".into())
                    })??;
                }
            }
        }
    }

    /// Pass on what history holds after `last`.
    async fn catch_up(&self, last: &mut EventId) -> Result<()> {
        loop {
            let from = format!("({last}");
            let page: Vec<(String, std::collections::HashMap<String, String>)> = self
                .store
                .retry(|mut conn| {
                    let mut cmd = redis::cmd("XRANGE");
                    cmd.arg(&self.hist)
                        .arg(&from)
                        .arg("+")
                        .arg("COUNT")
                        .arg(PAGE);
                    async move { cmd.query_async(&mut conn).await }
                })
                .await?;
            let full = page.len() == PAGE;
            for (id, fields) in page {
                let json = fields.get("e").map_or("", String::as_str);
                self.pass_on(last, &id, json.as_bytes());
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Send event `id` to the live subscribers unless it was passed on already.
    fn pass_on(&self, last: &mut EventId, id: &str, json: &[u8]) {
        let Ok(parsed) = id.parse::<EventId>() else {
            tracing::warn!(id, "skipping a live event with a malformed id");
            return;
        };
        if parsed <= *last {
            return;
        }
        *last = parsed;
        // Nobody listens: an event seen now was published before any later
        // subscription, so nobody will miss it.
        if self.live.receiver_count() == 0 {
            return;
        }
        let Ok(json) = std::str::from_utf8(json) else {
            tracing::warn!(id, "skipping a malformed live event");
            return;
        };
        match decode_event(id, json) {
            Ok(event) => {
                let _ = self.live.send(event);
            }
            Err(err) => tracing::warn!(error = %err, id, "skipping a malformed event"),
        }
    }
}
