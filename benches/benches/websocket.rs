//! A broadcast to many WebSocket clients: the registry server's `/ws` with 100, 1,000 and
//! 10,000 connected clients subscribed to `events`, an event published on the bus, and the
//! time until every client has it. The cost should grow with the clients (each needs its
//! copy) and nothing else: the per-client figure is the one to compare across sizes.
//!
//! The clients run in a child process (this binary again, with `BENCH_WS_ROLE=clients`),
//! on loopback, each on its own connection, so each process holds one end of each
//! connection: 10,000 clients need about 10,000 descriptors in each, not 20,000 in one.
//! The child says on its standard output when every client is subscribed and when every
//! client got each event. Each size publishes `BENCH_EVENTS` events (default 20) one
//! after another and prints, over them, the p50 and p99 of the time until the last
//! client got the event, that time per client, and the RSS per client of the server's
//! process and of the clients' process: what each grew by while the clients connected,
//! so the server's figure holds for the first size of a run and for any size larger
//! than the ones before it by far (freed memory stays in the process); one size per run
//! gives a clean figure for each.
//!
//! Run: `cargo bench -p benches --bench websocket` (`ulimit -n` a little above the
//! largest size). Pick sizes with `BENCH_CLIENTS=100,1000,9000`.

use futures::{SinkExt, StreamExt};
use omc_orchestra::events::NewEvent;
use omc_orchestra_server::app::{App, Config, ServerKind};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |pages| pages * 4096.0 / 1e6)
}

/// The environment variable that makes this binary the clients' process; the others
/// it reads there are `BENCH_WS_URL`, `BENCH_WS_CLIENTS` and `BENCH_EVENTS`.
const ROLE: &str = "BENCH_WS_ROLE";

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

fn env_number(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|s| s.trim().parse().ok())
}

/// The clients' process: connect `BENCH_WS_CLIENTS` clients to `BENCH_WS_URL`, print
/// `ready RSS_MB` once all are subscribed, then `got N` once every client got event `N`.
async fn clients_process() {
    let url = std::env::var("BENCH_WS_URL").unwrap_or_default();
    let clients = env_number("BENCH_WS_CLIENTS").unwrap_or(0);
    let events = env_number("BENCH_EVENTS").unwrap_or(20);
    let tally = Arc::new(Tally {
        got: (0..events).map(|_| AtomicUsize::new(0)).collect(),
        clients,
        all: Notify::new(),
    });
    let rss_before = rss_mb();
    let ready = Arc::new(AtomicUsize::new(0));
    for n in 1..=clients {
        tokio::spawn(client(url.clone(), tally.clone(), ready.clone()));
        // Connect in waves: the listen backlog is finite.
        if n % 500 == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while ready.load(Ordering::Acquire) < clients && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connected = ready.load(Ordering::Acquire);
    if connected < clients {
        eprintln!("only {connected} of {clients} clients subscribed");
        std::process::exit(1);
    }
    let say = |line: String| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    };
    say(format!("ready {}", rss_mb() - rss_before));
    for n in 0..events {
        while tally.got[n].load(Ordering::Acquire) < clients {
            tally.all.notified().await;
        }
        say(format!("got {n}"));
    }
    // The server's process ends this one once it has read the last line.
    std::future::pending::<()>().await;
}

/// The clients' next line, within `wait`.
async fn next_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    wait: Duration,
) -> Result<String, String> {
    match tokio::time::timeout(wait, lines.next_line()).await {
        Ok(Ok(Some(line))) => Ok(line),
        Ok(_) => Err("the clients' process ended".into()),
        Err(_) => Err(format!("nothing from the clients in {wait:?}")),
    }
}

/// One size: a registry server here, `clients` clients in a child process; prints a row.
async fn broadcast_to(clients: usize, events: usize) -> Result<(), String> {
    let mut config = Config::ephemeral();
    config.connections.max_connections = clients + 1_000;
    let app = App::start(config, &[ServerKind::Registry])
        .await
        .map_err(|e| format!("the registry does not start: {e}"))?;
    let url = format!("{}/ws", app.url(ServerKind::Registry)).replacen("http", "ws", 1);
    let rss_before = rss_mb();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = tokio::process::Command::new(exe)
        .env(ROLE, "clients")
        .env("BENCH_WS_URL", &url)
        .env("BENCH_WS_CLIENTS", clients.to_string())
        .env("BENCH_EVENTS", events.to_string())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("the clients' process does not start: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout from the clients")?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = next_line(&mut lines, Duration::from_secs(180)).await?;
    let clients_rss_mb: f64 = ready
        .strip_prefix("ready ")
        .and_then(|mb| mb.parse().ok())
        .ok_or_else(|| format!("the clients said `{ready}`"))?;
    let server_rss_kb = (rss_mb() - rss_before) * 1000.0 / clients as f64;
    let bus = app.backends().events.clone();
    let mut times = Vec::with_capacity(events);
    for n in 0..events {
        let started = Instant::now();
        let event = NewEvent::new(
            "PRICE_UPDATED",
            "pricing-service",
            serde_json::json!({"n": n, "stationId": "STN001", "newPrice": 7.45}),
        );
        bus.publish(event).await.map_err(|e| e.to_string())?;
        let got = next_line(&mut lines, Duration::from_secs(60)).await?;
        if got != format!("got {n}") {
            return Err(format!("event {n}: the clients said `{got}`"));
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let _ = child.kill().await;
    app.shutdown().await;
    times.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
    let per_client_us = p50 * 1000.0 / clients as f64;
    let clients_rss_kb = clients_rss_mb * 1000.0 / clients as f64;
    println!(
        "{clients:>8}  {p50:>12.2}  {p99:>12.2}  {per_client_us:>13.2} µs  {server_rss_kb:>12.1} KB  {clients_rss_kb:>12.1} KB"
    );
    Ok(())
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if std::env::var(ROLE).as_deref() == Ok("clients") {
        runtime.block_on(clients_process());
        return;
    }
    let sizes: Vec<usize> = std::env::var("BENCH_CLIENTS")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 1_000, 10_000]);
    let events = env_number("BENCH_EVENTS").unwrap_or(20);
    println!("a broadcast on /ws to every subscribed client ({events} events per size, one after another)");
    println!(
        "{:>8}  {:>12}  {:>12}  {:>16}  {:>15}  {:>15}",
        "clients",
        "p50 all (ms)",
        "p99 all (ms)",
        "p50 per client",
        "server RSS/cl.",
        "clients RSS/cl."
    );
    for clients in sizes {
        if let Err(err) = runtime.block_on(broadcast_to(clients, events)) {
            eprintln!("{clients} clients: {err}: no figure");
            std::process::exit(1);
        }
    }
}
