//! Discovery lookups per second over HTTP (memory backend), beside nginx serving a static
//! JSON body of the same size on the same machine, driven by the same load generator (wrk)
//! in the same run.
//!
//! Run: `cargo bench -p benches --bench discovery`. Needs `wrk` and `nginx`
//! (`apt-get install wrk nginx`). Settings: `BENCH_SECONDS` (default 5),
//! `BENCH_CONNECTIONS` (default 64).

use benches::{free_port, wrk, Nginx};
use omc_orchestra_server::app::{App, Config, ServerKind};
use serde_json::json;

fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let connections: u32 = std::env::var("BENCH_CONNECTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    benches::require(&["wrk", "nginx"]);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (app, body) = runtime.block_on(async {
        let app = App::start(Config::ephemeral(), &[ServerKind::Registry])
            .await
            .expect("the registry server starts");
        let base = app.url(ServerKind::Registry);
        let http = reqwest::Client::new();
        for (port, weight) in [(3006, 1), (3007, 2), (3008, 7)] {
            http.post(format!("{base}/registry/register"))
                .json(&json!({"name": "pricing-service", "host": "10.0.0.5", "port": port, "weight": weight}))
                .send()
                .await
                .expect("register");
        }
        let body = http
            .get(format!("{base}/registry/discovery/pricing-service"))
            .send()
            .await
            .expect("discover")
            .bytes()
            .await
            .expect("body");
        (app, body)
    });
    let ours_url = format!(
        "{}/registry/discovery/pricing-service",
        app.url(ServerKind::Registry)
    );

    let nginx = Nginx::static_body(free_port(), &body).expect("nginx starts");
    let peer_url = nginx.url("/body.json");

    let ours = wrk(&ours_url, connections, seconds);
    let peer = wrk(&peer_url, connections, seconds);
    drop(nginx);
    runtime.block_on(app.shutdown());

    println!(
        "discovery over HTTP, {connections} connections, {seconds} s each, {} byte answers",
        body.len()
    );
    println!(
        "  orchestra discovery  {:>10.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms",
        ours.rps, ours.p50_ms, ours.p99_ms
    );
    println!(
        "  nginx static JSON    {:>10.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms",
        peer.rps, peer.p50_ms, peer.p99_ms
    );
    println!(
        "  ratio (orchestra / nginx): {:.2}x  (goal: at least 0.5x)",
        ours.rps / peer.rps
    );
}
