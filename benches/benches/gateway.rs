//! Requests per second and latency through the gateway, beside nginx proxying the same
//! upstream, driven by the same load generator (wrk) in the same run.
//!
//! The upstream is an nginx serving a small JSON body. The gateway routes
//! `/api/bench-service/body.json` by discovery, with a request id, metrics, a local rate
//! limit and JWT authentication on; the peer nginx proxies the same path to the same
//! upstream over keep-alive connections. Direct hits on the upstream show the latency
//! each proxy adds.
//!
//! Then each of the three is driven at half of the gateway's peak at a constant rate
//! (this crate's open-loop `constant-rate` driver) for the latency the proxies add
//! there, and the CPU time each proxy spent per request is printed.
//!
//! Run: `cargo bench -p benches --bench gateway`. Needs `wrk` and `nginx`
//! (`apt-get install wrk nginx`). Settings: `BENCH_SECONDS` (default 5),
//! `BENCH_CONNECTIONS` (default 64), `BENCH_GATEWAY_WORKERS` (the gateway's serving
//! threads, default one per core, as nginx's `worker_processes auto`).

use benches::{constant_rate, cpu_seconds, free_port, wrk, wrk_with, Nginx};
use omc_orchestra::gateway::{GatewayConfig, Limits};
use omc_orchestra::registry::Registration;
use omc_orchestra_server::app::{App, Config, ServerKind};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let seconds: u64 = setting("BENCH_SECONDS", 5);
    let connections: u32 = setting("BENCH_CONNECTIONS", 64);
    benches::require(&["wrk", "nginx"]);

    let body =
        br#"{"sku":"A-1001","price":12.5,"currency":"EUR","updatedAt":"2026-01-01T00:00:00Z"}"#;
    let upstream = Nginx::static_body(free_port(), body).expect("the upstream nginx starts");
    let upstream_port = upstream.port();
    let peer = Nginx::proxy(free_port(), "/api/bench-service", upstream_port)
        .expect("the proxying nginx starts");

    let secret = "bench-secret";
    let mut gateway = GatewayConfig::default();
    gateway.discovery.auth = true;
    gateway.discovery.limits = Limits {
        second: Some(10_000_000),
        ..Limits::default()
    };
    gateway.auth.jwt_secret = Some(secret.into());
    gateway.workers = setting("BENCH_GATEWAY_WORKERS", 0);
    // Background work only (the registry view, metrics gauges): the port is served by
    // the gateway's own threads.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let app = runtime.block_on(async {
        let config = Config {
            gateway,
            ..Config::ephemeral()
        };
        let app = App::start(config, &[ServerKind::Gateway])
            .await
            .expect("the gateway starts");
        app.backends()
            .registry
            .register(Registration::new(
                "bench-service",
                "127.0.0.1",
                upstream_port,
            ))
            .await
            .expect("register the upstream");
        // The gateway's view follows the registry's watch stream.
        tokio::time::sleep(Duration::from_millis(300)).await;
        app
    });

    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 3600;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "bench", "exp": exp, "roles": ["reader"]}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("a token");
    let auth = format!("Authorization: Bearer {token}");

    let ours_url = format!(
        "{}/api/bench-service/body.json",
        app.url(ServerKind::Gateway)
    );
    let check = runtime.block_on(async {
        reqwest::Client::new()
            .get(&ours_url)
            .bearer_auth(&token)
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    if check.as_ref().ok() != Some(&200) {
        eprintln!("the gateway does not route the benchmark path: {check:?}");
        std::process::exit(1);
    }

    let direct = wrk(&upstream.url("/body.json"), connections, seconds);
    let before = cpu_seconds(std::process::id());
    let ours = wrk_with(&ours_url, connections, seconds, &[&auth]);
    let ours_cpu = cpu_seconds(std::process::id()) - before;
    let before = peer.cpu_seconds();
    let theirs = wrk_with(
        &peer.url("/api/bench-service/body.json"),
        connections,
        seconds,
        &[&auth],
    );
    let theirs_cpu = peer.cpu_seconds() - before;

    // Latency at half of the gateway's peak, at a fixed rate (open loop), on all three.
    let half = ((ours.rps / 2.0) as u64).max(100);
    let driver = env!("CARGO_BIN_EXE_constant-rate");
    let paced = |url: &str, headers: &[&str]| {
        constant_rate(driver, url, half, seconds, connections, headers)
    };
    let paced_direct = paced(&upstream.url("/body.json"), &[]);
    let paced_ours = paced(&ours_url, &[&auth]);
    let paced_theirs = paced(&peer.url("/api/bench-service/body.json"), &[&auth]);
    drop(peer);
    drop(upstream);
    runtime.block_on(app.shutdown());

    println!(
        "proxying a {} byte JSON answer, {connections} connections, {seconds} s each",
        body.len()
    );
    for (name, load) in [
        ("upstream direct", direct),
        ("orchestra gateway", ours),
        ("nginx proxy", theirs),
    ] {
        println!(
            "  {name:<18} {:>10.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms",
            load.rps, load.p50_ms, load.p99_ms
        );
    }
    println!(
        "  ratio (gateway / nginx): {:.2}x req/s  (goal: at least 1.0x); p99 added over direct: gateway {:.3} ms, nginx {:.3} ms",
        ours.rps / theirs.rps,
        ours.p99_ms - direct.p99_ms,
        theirs.p99_ms - direct.p99_ms
    );
    println!("at half of the gateway's peak, {half} req/s (constant rate, open loop):");
    for (name, load) in [
        ("upstream direct", paced_direct),
        ("orchestra gateway", paced_ours),
        ("nginx proxy", paced_theirs),
    ] {
        println!(
            "  {name:<18} {:>10.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms",
            load.rps, load.p50_ms, load.p99_ms
        );
    }
    println!(
        "  p99 added over direct: gateway {:.3} ms (goal: at most 1 ms), nginx {:.3} ms",
        paced_ours.p99_ms - paced_direct.p99_ms,
        paced_theirs.p99_ms - paced_direct.p99_ms
    );
    // CPU per request tells the two proxies apart even on a busy machine.
    let per_request = |cpu: f64, load: &benches::Load| cpu * 1e6 / (load.rps * seconds as f64);
    println!(
        "  CPU per proxied request: gateway {:.1} us, nginx {:.1} us",
        per_request(ours_cpu, &ours),
        per_request(theirs_cpu, &theirs)
    );
}
