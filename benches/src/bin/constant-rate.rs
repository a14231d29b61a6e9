//! An open-loop load driver: requests at a fixed rate, latency counted from each
//! request's scheduled start (so a stall is not hidden by the driver waiting for it, the
//! coordinated-omission mistake a closed loop like wrk's makes).
//!
//! `constant-rate URL RATE SECONDS CONNECTIONS [HEADER: VALUE]...` prints one line:
//! `sent=N errors=N rps=R p50_ms=X p99_ms=Y`.
//!
//! The slots are released by a pacing thread of their own that sleeps to each one
//! (a request starts within some tens of microseconds of its slot, the kernel's timer
//! slack), not by the async runtime's timer: that one ticks every millisecond and
//! rounds a wake up to the next tick, which made requests start up to two milliseconds
//! late, in bursts of a millisecond's worth at a time, and hid what a proxy adds below
//! that. What is left of the driver's own delay is the same for every target, so
//! compare targets (latency added over direct), not absolute figures.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;

struct Plan {
    authority: String,
    /// The request, written whole on each send.
    request: Vec<u8>,
    interval: Duration,
    total: u64,
    /// The next slot a connection takes.
    next: AtomicU64,
    /// One permit per slot that is due: the pacing thread adds them.
    due: Semaphore,
}

/// Release each slot when it is due, then one permit per connection more, so that each
/// finds no slot left and stops.
fn pace(plan: &Plan, start: std::time::Instant, connections: usize) {
    let mut released = 0;
    while released < plan.total {
        let due = start + plan.interval.mul_f64(released as f64);
        if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
            std::thread::sleep(wait);
        }
        // Every slot due by now, whatever the sleep overran by.
        let elapsed = start.elapsed().as_secs_f64();
        let upto = ((elapsed / plan.interval.as_secs_f64()) as u64 + 1).min(plan.total);
        let upto = upto.max(released + 1);
        plan.due.add_permits((upto - released) as usize);
        released = upto;
    }
    plan.due.add_permits(connections);
}

/// One keep-alive connection and the bytes read on it not yet used.
struct Client {
    stream: TcpStream,
    buffer: Vec<u8>,
}

/// How an answer's body is delimited.
enum Framing {
    Length(usize),
    Chunked,
}

impl Client {
    async fn open(authority: &str) -> Result<Self, String> {
        let stream = TcpStream::connect(authority)
            .await
            .map_err(|err| format!("cannot connect to {authority}: {err}"))?;
        let _ = stream.set_nodelay(true);
        Ok(Self {
            stream,
            buffer: Vec::with_capacity(8192),
        })
    }

    /// Read more bytes onto the buffer; an end of stream is an error.
    async fn fill(&mut self) -> Result<(), String> {
        if self.buffer.capacity() - self.buffer.len() < 1024 {
            self.buffer.reserve(8192);
        }
        match self.stream.read_buf(&mut self.buffer).await {
            Ok(0) => Err("the connection closed".into()),
            Ok(_) => Ok(()),
            Err(err) => Err(format!("read failed: {err}")),
        }
    }

    /// Send `request` and read its answer whole: its status, and whether the
    /// connection stays open.
    async fn exchange(&mut self, request: &[u8]) -> Result<(u16, bool), String> {
        self.stream
            .write_all(request)
            .await
            .map_err(|err| format!("write failed: {err}"))?;
        let (status, framing, open, head) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut answer = httparse::Response::new(&mut headers);
            match answer.parse(&self.buffer) {
                Ok(httparse::Status::Complete(head)) => {
                    let mut framing = Framing::Length(0);
                    let mut open = answer.version == Some(1);
                    for header in answer.headers.iter() {
                        if header.name.eq_ignore_ascii_case("content-length") {
                            let length = std::str::from_utf8(header.value)
                                .ok()
                                .and_then(|v| v.trim().parse().ok())
                                .ok_or("a bad Content-Length")?;
                            framing = Framing::Length(length);
                        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                            framing = Framing::Chunked;
                        } else if header.name.eq_ignore_ascii_case("connection") {
                            open = !header.value.eq_ignore_ascii_case(b"close");
                        }
                    }
                    break (answer.code.unwrap_or(0), framing, open, head);
                }
                Ok(httparse::Status::Partial) => self.fill().await?,
                Err(err) => return Err(format!("a bad answer head: {err}")),
            }
        };
        self.buffer.drain(..head);
        match framing {
            Framing::Length(length) => {
                while self.buffer.len() < length {
                    self.fill().await?;
                }
                self.buffer.drain(..length);
            }
            Framing::Chunked => self.skip_chunks().await?,
        }
        Ok((status, open))
    }

    /// Read past a chunked body and its trailer section.
    async fn skip_chunks(&mut self) -> Result<(), String> {
        loop {
            let line = self.line().await?;
            let size = std::str::from_utf8(&self.buffer[..line])
                .ok()
                .and_then(|l| usize::from_str_radix(l.split(';').next()?.trim(), 16).ok())
                .ok_or("a bad chunk size")?;
            self.buffer.drain(..line + 2);
            if size == 0 {
                // Trailer lines, up to an empty one.
                loop {
                    let line = self.line().await?;
                    self.buffer.drain(..line + 2);
                    if line == 0 {
                        return Ok(());
                    }
                }
            }
            while self.buffer.len() < size + 2 {
                self.fill().await?;
            }
            self.buffer.drain(..size + 2);
        }
    }

    /// The length of the buffer's first line (without its CRLF), read until whole.
    async fn line(&mut self) -> Result<usize, String> {
        loop {
            if let Some(at) = self.buffer.windows(2).position(|w| w == b"\r\n") {
                return Ok(at);
            }
            self.fill().await?;
        }
    }
}

async fn connection(plan: Arc<Plan>, start: Instant) -> Result<(Vec<u32>, u64), String> {
    let mut client = Some(Client::open(&plan.authority).await?);
    let mut latencies = Vec::new();
    let mut errors = 0;
    loop {
        match plan.due.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return Err("the pacing stopped".into()),
        }
        let slot = plan.next.fetch_add(1, Ordering::Relaxed);
        if slot >= plan.total {
            return Ok((latencies, errors));
        }
        let scheduled = start + plan.interval.mul_f64(slot as f64);
        // A connection the server closed is opened again, on the request's time.
        let current = match client.as_mut() {
            Some(current) => current,
            None => client.insert(Client::open(&plan.authority).await?),
        };
        let ok = match current.exchange(&plan.request).await {
            Ok((status, open)) => {
                if !open {
                    client = None;
                }
                (200..300).contains(&status)
            }
            Err(_) => {
                client = None;
                false
            }
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
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\n");
    for (name, value) in args[4..].iter().filter_map(|h| h.split_once(':')) {
        request.push_str(&format!("{}: {}\r\n", name.trim(), value.trim()));
    }
    request.push_str("\r\n");
    let plan = Arc::new(Plan {
        authority: authority.to_string(),
        request: request.into_bytes(),
        interval: Duration::from_secs_f64(1.0 / rate as f64),
        total: rate * seconds,
        next: AtomicU64::new(0),
        due: Semaphore::new(0),
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
        let paced = plan.clone();
        let pacer = std::thread::spawn(move || pace(&paced, start.into_std(), connections));
        let mut latencies = Vec::with_capacity(plan.total as usize);
        let mut errors = 0;
        for worker in workers {
            let (mut part, failed) = worker.await.map_err(|err| err.to_string())??;
            latencies.append(&mut part);
            errors += failed;
        }
        let elapsed = start.elapsed();
        pacer.join().map_err(|_| "the pacing thread failed")?;
        Ok::<_, String>((latencies, errors, elapsed))
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
