//! A broadcast to many WebSocket clients: the registry server's `/ws` with 100, 1,000 and
//! 10,000 connected clients subscribed to `events`, an event published on the bus, and the
//! time until every client has it. The cost should grow with the clients (each needs its
//! copy) and nothing else: the per-client figure is the one to compare across sizes.
//!
//! The clients run in this process beside the server, on loopback, each on its own
//! connection. Each size publishes `BENCH_EVENTS` events (default 20) one after another
//! and prints, over them, the p50 and p99 of the time until the last client got the
//! event, that time per client, and this process's RSS (server and clients) per client.
//!
//! Run: `cargo bench -p benches --bench websocket`. 10,000 clients need 20,000 descriptors
//! (both ends live here): raise `ulimit -n` past that, or pick sizes with
//! `BENCH_CLIENTS=100,1000,9000`.

use futures::{SinkExt, StreamExt};
use omc_orchestra::events::NewEvent;
use omc_orchestra_server::app::{App, Config, ServerKind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |pages| pages * 4096.0 / 1e6)
}

/// Every client counts the events it got into `got`; `all` wakes when a count reaches
/// the number of clients.
struct Tally {
    got: Vec<AtomicUsize>,
    clients: usize,
    all: Notify,
}

async fn client(url: String, tally: Arc<Tally>, ready: Arc<AtomicUsize>) {
    let Ok((mut socket, _)) = tokio_tungstenite::connect_async(&url).await else {
        eprintln!("a client could not connect");
        return;
    };
    let subscribe = r#"{"event":"subscribe","data":{"channels":["events"]}}"#;
    if socket.send(Message::text(subscribe)).await.is_err() {
        return;
    }
    while let Some(Ok(message)) = socket.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        if text.contains(r#""event":"subscribed""#) {
            ready.fetch_add(1, Ordering::AcqRel);
            continue;
        }
        // The event's number is in its data: `"n":K`.
        let Some(n) = text
            .split(r#""n":"#)
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|digits| digits.parse::<usize>().ok())
        else {
            continue;
        };
        if let Some(count) = tally.got.get(n) {
            if count.fetch_add(1, Ordering::AcqRel) + 1 == tally.clients {
                tally.all.notify_one();
            }
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let sizes: Vec<usize> = std::env::var("BENCH_CLIENTS")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 1_000, 10_000]);
    let events: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    println!("a broadcast on /ws to every subscribed client ({events} events per size, one after another)");
    println!(
        "{:>8}  {:>12}  {:>12}  {:>16}  {:>14}",
        "clients", "p50 all (ms)", "p99 all (ms)", "p50 per client", "RSS per client"
    );
    let mut first_per_client = None;
    for clients in sizes {
        runtime.block_on(async {
            let mut config = Config::ephemeral();
            config.connections.max_connections = clients + 1_000;
            let app = App::start(config, &[ServerKind::Registry])
                .await
                .expect("the registry starts");
            let url = format!("{}/ws", app.url(ServerKind::Registry)).replacen("http", "ws", 1);
            let tally = Arc::new(Tally {
                got: (0..events).map(|_| AtomicUsize::new(0)).collect(),
                clients,
                all: Notify::new(),
            });
            let rss_before = rss_mb();
            let ready = Arc::new(AtomicUsize::new(0));
            let mut tasks = Vec::with_capacity(clients);
            for _ in 0..clients {
                tasks.push(tokio::spawn(client(
                    url.clone(),
                    tally.clone(),
                    ready.clone(),
                )));
                // Connect in waves: the listen backlog is finite.
                if tasks.len() % 500 == 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            let deadline = Instant::now() + Duration::from_secs(120);
            while ready.load(Ordering::Acquire) < clients && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let connected = ready.load(Ordering::Acquire);
            if connected < clients {
                eprintln!("only {connected} of {clients} clients subscribed: no figure");
                std::process::exit(1);
            }
            let rss_per_client_kb = (rss_mb() - rss_before) * 1000.0 / clients as f64;
            let bus = app.backends().events.clone();
            let mut times = Vec::with_capacity(events);
            for n in 0..events {
                let started = Instant::now();
                let notified = tally.all.notified();
                let event = NewEvent::new(
                    "PRICE_UPDATED",
                    "pricing-service",
                    serde_json::json!({"n": n, "stationId": "STN001", "newPrice": 7.45}),
                );
                bus.publish(event).await.expect("publish");
                if tokio::time::timeout(Duration::from_secs(60), notified)
                    .await
                    .is_err()
                {
                    let got = tally.got[n].load(Ordering::Acquire);
                    eprintln!("event {n} reached {got} of {clients} clients in 60 s: no figure");
                    std::process::exit(1);
                }
                times.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            times.sort_by(f64::total_cmp);
            let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
            let per_client_us = p50 * 1000.0 / clients as f64;
            first_per_client.get_or_insert(per_client_us);
            println!(
                "{clients:>8}  {p50:>12.2}  {p99:>12.2}  {:>13.2} µs  {rss_per_client_kb:>11.1} KB",
                per_client_us
            );
            for task in tasks {
                task.abort();
            }
            app.shutdown().await;
        });
    }
}
