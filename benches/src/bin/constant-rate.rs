//! An open-loop load driver: requests at a fixed rate, latency counted from each
//! request's scheduled start (so a stall is not hidden by the driver waiting for it, the
//! coordinated-omission mistake a closed loop like wrk's makes).
//!
//! `constant-rate URL RATE SECONDS CONNECTIONS [HEADER: VALUE]...` prints one line:
//! `sent=N errors=N rps=R p50_ms=X p99_ms=Y`.
//!
//! The driver's timer ticks every millisecond, so a request can start up to 1 ms after
//! its slot and that delay counts; it is the same for every target driven, so compare
//! targets (latency added over direct), not absolute figures.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

struct Plan {
    authority: String,
    path: String,
    headers: Vec<(String, String)>,
    interval: Duration,
    total: u64,
    next: AtomicU64,
}

async fn connection(plan: Arc<Plan>, start: Instant) -> Result<(Vec<u32>, u64), String> {
    let stream = TcpStream::connect(&plan.authority)
        .await
        .map_err(|err| format!("cannot connect to {}: {err}", plan.authority))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|err| format!("handshake failed: {err}"))?;
    tokio::spawn(conn);
    let mut latencies = Vec::new();
    let mut errors = 0;
    loop {
        let slot = plan.next.fetch_add(1, Ordering::Relaxed);
        if slot >= plan.total {
            return Ok((latencies, errors));
        }
        let scheduled = start + plan.interval.mul_f64(slot as f64);
        tokio::time::sleep_until(scheduled).await;
        let mut request = hyper::Request::get(plan.path.as_str()).header("host", &plan.authority);
        for (name, value) in &plan.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
            .body(Empty::new())
            .map_err(|err| format!("bad request: {err}"))?;
        if sender.ready().await.is_err() {
            return Err("the connection closed".into());
        }
        let ok = match sender.send_request(request).await {
            Ok(response) => {
                let status = response.status();
                response.into_body().collect().await.is_ok() && status.is_success()
            }
            Err(_) => false,
        };
        if !ok {
            errors += 1;
        }
        let micros = scheduled.elapsed().as_micros();
        latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[index.min(sorted.len() - 1)]) / 1000.0
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: constant-rate URL RATE SECONDS CONNECTIONS [HEADER: VALUE]...");
        return ExitCode::from(2);
    }
    let Ok(uri) = args[0].parse::<hyper::Uri>() else {
        eprintln!("not a URL: {}", args[0]);
        return ExitCode::from(2);
    };
    let (Ok(rate), Ok(seconds), Ok(connections)) = (
        args[1].parse::<u64>(),
        args[2].parse::<u64>(),
        args[3].parse::<usize>(),
    ) else {
        eprintln!("RATE, SECONDS and CONNECTIONS must be whole numbers");
        return ExitCode::from(2);
    };
    let (Some(authority), true) = (uri.authority(), rate > 0 && connections > 0) else {
        eprintln!("the URL needs a host, RATE and CONNECTIONS must be above 0");
        return ExitCode::from(2);
    };
    let headers = args[4..]
        .iter()
        .filter_map(|h| h.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let plan = Arc::new(Plan {
        authority: authority.to_string(),
        path: uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.to_string()),
        headers,
        interval: Duration::from_secs_f64(1.0 / rate as f64),
        total: rate * seconds,
        next: AtomicU64::new(0),
    });
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("no runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let start = Instant::now() + Duration::from_millis(50);
        let workers: Vec<_> = (0..connections)
            .map(|_| tokio::spawn(connection(plan.clone(), start)))
            .collect();
        let mut latencies = Vec::with_capacity(plan.total as usize);
        let mut errors = 0;
        for worker in workers {
            let (mut part, failed) = worker.await.map_err(|err| err.to_string())??;
            latencies.append(&mut part);
            errors += failed;
        }
        Ok::<_, String>((latencies, errors, start.elapsed()))
    });
    match outcome {
        Ok((mut latencies, errors, elapsed)) => {
            latencies.sort_unstable();
            println!(
                "sent={} errors={errors} rps={:.0} p50_ms={:.3} p99_ms={:.3}",
                latencies.len(),
                latencies.len() as f64 / elapsed.as_secs_f64(),
                percentile(&latencies, 0.50),
                percentile(&latencies, 0.99)
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}
