//! Log ingest throughput: library → file sink, and batched `POST /logs` over HTTP, each
//! beside the machine's raw sequential write speed for the same bytes (the ceiling).
//!
//! `cargo bench -p benches --bench logs` (optional: `LOGS_BENCH_RECORDS=400000`).
//! Goals: library → file sink ≥ 200k records/s, HTTP batch ingest ≥ 100k records/s.

use omc_orchestra::clock;
use omc_orchestra::logs::{FileSink, FileSinkOptions, LogLevel, LogRecord};
use omc_orchestra_server::app::{App, Config, ServerKind};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BATCH: usize = 1_000;
const HTTP_CLIENTS: usize = 4;

fn records(n: usize) -> Vec<LogRecord> {
    let now = chrono::Utc::now();
    (0..n)
        .map(|i| {
            let mut record = LogRecord::new(
                now,
                if i % 50 == 0 {
                    LogLevel::Error
                } else {
                    LogLevel::Info
                },
                "pricing-service",
                "Price calculation completed",
            )
            .with_field("stationId", json!(format!("STN{:03}", i % 500)))
            .with_field("calculationTime", json!(100 + i % 100))
            .with_field("newPrice", json!(7.45));
            record.request_id = Some(format!("req-{i}"));
            record
        })
        .collect()
}

/// Write `chunks` to a fresh file the plain way (buffered, flushed per chunk, like the
/// sink flushes per batch); answers the time it took.
fn raw_write(path: &Path, chunks: &[Vec<u8>]) -> std::io::Result<Duration> {
    let started = Instant::now();
    let mut file = std::io::BufWriter::with_capacity(256 * 1024, std::fs::File::create(path)?);
    for chunk in chunks {
        file.write_all(chunk)?;
        file.flush()?;
    }
    Ok(started.elapsed())
}

fn rate(n: usize, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64()
}

fn mib_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1024.0 / 1024.0 / took.as_secs_f64()
}

fn report(what: &str, n: usize, bytes: u64, ours: Duration, raw: Duration, goal: f64) {
    let ours_rate = rate(n, ours);
    println!("{what}");
    println!(
        "  ours:             {:>12.0} records/s  {:>8.1} MiB/s  ({n} records, {bytes} bytes, {ours:.2?})",
        ours_rate,
        mib_s(bytes, ours)
    );
    println!(
        "  raw write (peak): {:>12.0} records/s  {:>8.1} MiB/s  (same bytes, {raw:.2?})",
        rate(n, raw),
        mib_s(bytes, raw)
    );
    println!(
        "  ratio ours/raw:   {:.3}   goal {goal:.0} records/s: {}",
        raw.as_secs_f64() / ours.as_secs_f64(),
        if ours_rate >= goal { "met" } else { "NOT met" }
    );
}

fn library_to_file(dir: &Path, n: usize) -> std::io::Result<()> {
    let data = records(n);
    let mut options = FileSinkOptions::new(dir.join("sink"));
    options.max_bytes = 1 << 40;
    let sink = FileSink::open(options, clock::system()).map_err(std::io::Error::other)?;
    let started = Instant::now();
    for chunk in data.chunks(BATCH) {
        sink.append(chunk).map_err(std::io::Error::other)?;
    }
    let ours = started.elapsed();
    let written = std::fs::read(dir.join("sink").join("app.log"))?;
    let chunks: Vec<Vec<u8>> = written
        .split_inclusive(|b| *b == b'\n')
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .map(|lines| lines.concat())
        .collect();
    let raw = raw_write(&dir.join("raw-file.log"), &chunks)?;
    report(
        "library -> file sink (JSON lines, batches of 1000)",
        n,
        written.len() as u64,
        ours,
        raw,
        200_000.0,
    );
    Ok(())
}

async fn http_batches(dir: &Path, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let app = App::start(Config::ephemeral(), &[ServerKind::Logging]).await?;
    let url = format!("{}/logs", app.url(ServerKind::Logging));
    let bodies: Vec<Vec<u8>> = records(n)
        .chunks(BATCH)
        .map(serde_json::to_vec)
        .collect::<Result<_, _>>()?;
    let bytes: u64 = bodies.iter().map(|b| b.len() as u64).sum();
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..HTTP_CLIENTS {
        let mine: Vec<Vec<u8>> = bodies
            .iter()
            .skip(worker)
            .step_by(HTTP_CLIENTS)
            .cloned()
            .collect();
        let client = client.clone();
        let url = url.clone();
        workers.push(tokio::spawn(async move {
            for body in mine {
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                if response.status() != 202 {
                    return Err(format!("POST /logs answered {}", response.status()).into());
                }
            }
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    for worker in workers {
        worker.await?.map_err(|e| e.to_string())?;
    }
    let ours = started.elapsed();
    app.shutdown().await;
    let raw = raw_write(&dir.join("raw-http.log"), &bodies)?;
    report(
        "HTTP POST /logs (memory store, batches of 1000, 4 clients)",
        n,
        bytes,
        ours,
        raw,
        100_000.0,
    );
    Ok(())
}

fn scratch() -> PathBuf {
    std::env::temp_dir().join(format!("orchestra-logs-bench-{}", std::process::id()))
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("LOGS_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let dir = scratch();
    let outcome = async {
        std::fs::create_dir_all(&dir)?;
        library_to_file(&dir, n)?;
        http_batches(&dir, n).await
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(err) = outcome {
        eprintln!("logs bench failed: {err}");
        std::process::exit(1);
    }
}
