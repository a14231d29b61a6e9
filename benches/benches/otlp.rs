//! The gateway with OpenTelemetry trace export on, beside the same gateway with it off and
//! nginx proxying the same upstream, in the same run.
//!
//! Two `orchestra up` processes serve the same routes (discovery with JWT authentication
//! and a local rate limit, as in the `gateway` bench): one without `OTEL_*` variables, one
//! exporting a span per request over OTLP/HTTP to a receiver inside this bench, which
//! decodes each batch (`opentelemetry-proto`) and counts the spans, so the export is
//! real work end to end. The three take turns for several rounds under wrk; the medians
//! are printed, with the spans the receiver got.
//!
//! Run: `cargo bench -p benches --bench otlp`. Needs `wrk` and `nginx`. Settings:
//! `BENCH_ROUNDS` (default 6, a multiple of three), `BENCH_ROUND_SECONDS` (default 3),
//! `BENCH_CONNECTIONS` (default 64), `BENCH_SAMPLE_RATIO` (the exporting process samples
//! this share of traces, `parentbased_traceidratio`; default all).

use benches::{free_port, orchestra_binary, wrk_with, Load, Nginx, Orchestra};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// An OTLP/HTTP traces receiver on `port` counting the spans it decodes.
async fn receive(listener: tokio::net::TcpListener, spans: Arc<AtomicU64>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let spans = spans.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let spans = spans.clone();
                async move {
                    let body = req.into_body().collect().await?.to_bytes();
                    if let Ok(batch) = ExportTraceServiceRequest::decode(body) {
                        let count: usize = batch
                            .resource_spans
                            .iter()
                            .flat_map(|r| &r.scope_spans)
                            .map(|s| s.spans.len())
                            .sum();
                        spans.fetch_add(count as u64, Ordering::Relaxed);
                    }
                    Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::new())))
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let connections: u32 = setting("BENCH_CONNECTIONS", 64);
    let rounds = setting::<usize>("BENCH_ROUNDS", 6)
        .max(1)
        .next_multiple_of(3);
    let round_seconds: u64 = setting("BENCH_ROUND_SECONDS", 3);
    benches::require(&["wrk", "nginx"]);

    let body =
        br#"{"sku":"A-1001","price":12.5,"currency":"EUR","updatedAt":"2026-01-01T00:00:00Z"}"#;
    let upstream = Nginx::static_body(free_port(), body).expect("the upstream nginx starts");
    let peer = Nginx::proxy(free_port(), "/api/bench-service", upstream.port())
        .expect("the proxying nginx starts");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let spans = Arc::new(AtomicU64::new(0));
    let receiver_port = free_port();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(("127.0.0.1", receiver_port)))
        .expect("the receiver listens");
    runtime.spawn(receive(listener, spans.clone()));

    let secret = "bench-secret";
    let toml = format!(
        "[gateway.discovery]\nauth = true\n\
         [gateway.discovery.limits]\nsecond = 10000000\n\
         [gateway.auth]\njwt_secret = \"{secret}\"\n"
    );
    let binary = orchestra_binary().expect("the orchestra binary");
    let upstream_url = format!("http://127.0.0.1:{}", upstream.port());
    let collector = format!("http://127.0.0.1:{receiver_port}");
    let off = Orchestra::up(
        &binary,
        &toml,
        &[("BENCH_SERVICE_URL", upstream_url.as_str())],
    )
    .expect("orchestra up starts");
    let ratio_setting = std::env::var("BENCH_SAMPLE_RATIO").ok();
    let mut on_env = vec![
        ("BENCH_SERVICE_URL", upstream_url.as_str()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str()),
        ("OTEL_SERVICE_NAME", "orchestra-bench"),
    ];
    if let Some(ratio) = &ratio_setting {
        on_env.push(("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"));
        on_env.push(("OTEL_TRACES_SAMPLER_ARG", ratio.as_str()));
    }
    let on = Orchestra::up(&binary, &toml, &on_env).expect("orchestra up with export starts");

    let token = benches::reader_token(secret);
    let auth = format!("Authorization: Bearer {token}");
    let path = "/api/bench-service/body.json";
    let urls = [off.url(path), on.url(path), peer.url(path)];
    for url in &urls {
        let status = runtime.block_on(async {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(&token)
                .send()
                .await
                .map(|r| r.status().as_u16())
        });
        if status.as_ref().ok() != Some(&200) {
            eprintln!("{url} does not route the benchmark path: {status:?}");
            std::process::exit(1);
        }
    }

    let mut loads: [Vec<Load>; 3] = Default::default();
    for round in 0..rounds {
        for turn in 0..3 {
            let which = (round + turn) % 3;
            loads[which].push(wrk_with(&urls[which], connections, round_seconds, &[&auth]));
        }
    }
    // The last batch leaves within the export's schedule delay (5 s by default).
    std::thread::sleep(std::time::Duration::from_secs(6));
    let exported = spans.load(Ordering::Relaxed);
    for (name, load) in ["export off", "export on", "nginx"].iter().zip(&loads) {
        if load.iter().any(|l| l.failures > 0) {
            eprintln!("{name} answered with errors: no comparison");
            std::process::exit(1);
        }
    }
    let ratio = |a: usize, b: usize| {
        let mut ratios: Vec<f64> = loads[a]
            .iter()
            .zip(&loads[b])
            .map(|(x, y)| x.rps / y.rps)
            .collect();
        median(&mut ratios)
    };
    let rps = |which: usize| {
        let mut all: Vec<f64> = loads[which].iter().map(|l| l.rps).collect();
        median(&mut all)
    };
    let requests_on: f64 = loads[1].iter().map(|l| l.rps * round_seconds as f64).sum();
    println!(
        "orchestra up, proxying a {} byte JSON answer, {connections} connections; {rounds} rounds of {round_seconds} s, taking turns (medians); export samples {}",
        body.len(),
        ratio_setting.as_deref().unwrap_or("every trace")
    );
    println!(
        "  req/s: export off {:.0}, export on {:.0}, nginx {:.0}",
        rps(0),
        rps(1),
        rps(2)
    );
    println!(
        "  ratio: export on / export off {:.2}x; export off / nginx {:.2}x; export on / nginx {:.2}x",
        ratio(1, 0),
        ratio(0, 2),
        ratio(1, 2)
    );
    println!(
        "  spans received: {exported} for about {requests_on:.0} requests with export on (a full export queue drops spans rather than slow requests)"
    );
    drop(on);
    drop(off);
    drop(peer);
    drop(upstream);
}
