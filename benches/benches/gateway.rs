//! Requests per second and latency through the gateway, beside nginx proxying the same
//! upstream, driven by the same load generator (wrk) in the same run.
//!
//! The upstream is an nginx serving a small JSON body. The gateway routes
//! `/api/bench-service/body.json` by discovery, with a request id, metrics, a local rate
//! limit and JWT authentication on; the peer nginx proxies the same path to the same
//! upstream over keep-alive connections. Direct hits on the upstream show the latency
//! each proxy adds. The two proxies take turns for several rounds, the first of each
//! pair alternating, and the medians over the rounds are printed: on a shared machine
//! whose speed drifts, one run each would compare two different machines.
//!
//! Users do not start the gateway inside a bench: they run `orchestra up`. So the bench
//! also starts the `orchestra` binary that way (all four servers, default logging and
//! settings, the same routes, token and limits, the upstream as a static
//! `BENCH_SERVICE_URL`), found as [`benches::orchestra_binary`] says, and it takes its
//! turn in every round beside the other two; its ratio to nginx is printed beside the
//! in-process gateway's.
//!
//! Then each of the three is driven at half of the gateway's peak at a constant rate
//! (this crate's open-loop `constant-rate` driver) for the latency the proxies add
//! there, and again at a quarter of it, in rounds as well: the three take turns, and
//! what a proxy adds is read against the same round's direct run, the median round
//! printed with the share of the machine's CPU time that was busy meanwhile. Last, the
//! CPU time each proxy spent per request.
//!
//! Run: `cargo bench -p benches --bench gateway`. Needs `wrk` and `nginx`
//! (`apt-get install wrk nginx`). Settings: `BENCH_ROUNDS` (default 6, made a multiple of three) and
//! `BENCH_ROUND_SECONDS` (default 3) for the turns at peak, `BENCH_PACED_ROUNDS` (default
//! 3) and `BENCH_SECONDS` (default 5) for the paced rounds and each paced run,
//! `BENCH_CONNECTIONS` (default 64), `BENCH_GATEWAY_WORKERS` (the gateway's serving
//! threads, default one per core, as nginx's `worker_processes auto`), `BENCH_RESYNC`
//! (seconds between the gateway's registry resyncs and its breaker and pool pruning,
//! default 10 as in the gateway's own configuration).

use benches::{
    constant_rate, cpu_seconds, free_port, orchestra_binary, wrk, wrk_with, Nginx, Orchestra,
    RateLoad,
};
use omc_orchestra::gateway::{GatewayConfig, Limits};
use omc_orchestra::registry::{Registration, MAX_TTL_SECONDS};
use omc_orchestra_server::app::{App, Config, ServerKind};
use std::time::Duration;

fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let seconds: u64 = setting("BENCH_SECONDS", 5);
    let connections: u32 = setting("BENCH_CONNECTIONS", 64);
    // A multiple of three rounds: each of the three goes first as often as the others.
    let rounds = setting::<usize>("BENCH_ROUNDS", 6)
        .max(1)
        .next_multiple_of(3);
    let round_seconds: u64 = setting("BENCH_ROUND_SECONDS", 3);
    let paced_count = setting::<usize>("BENCH_PACED_ROUNDS", 3).max(1);
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
    gateway.resync_secs = setting("BENCH_RESYNC", 10);
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
            .register(Registration {
                // No heartbeats during the run: the registration outlives it.
                ttl_seconds: Some(MAX_TTL_SECONDS),
                ..Registration::new("bench-service", "127.0.0.1", upstream_port)
            })
            .await
            .expect("register the upstream");
        // The gateway's view follows the registry's watch stream.
        tokio::time::sleep(Duration::from_millis(300)).await;
        app
    });

    let binary = orchestra_binary().expect("the orchestra binary");
    let upstream_url = format!("http://127.0.0.1:{upstream_port}");
    let users = Orchestra::up(
        &binary,
        &format!(
            "workers = {}\nresync_secs = {}\n\
             [gateway.discovery]\nauth = true\n\
             [gateway.discovery.limits]\nsecond = 10000000\n\
             [gateway.auth]\njwt_secret = \"{secret}\"\n",
            setting("BENCH_GATEWAY_WORKERS", 0),
            setting("BENCH_RESYNC", 10)
        ),
        &[("BENCH_SERVICE_URL", upstream_url.as_str())],
    )
    .expect("orchestra up starts");

    let token = benches::reader_token(secret);
    let auth = format!("Authorization: Bearer {token}");

    let ours_url = format!(
        "{}/api/bench-service/body.json",
        app.url(ServerKind::Gateway)
    );
    let binary_url = users.url("/api/bench-service/body.json");
    for (name, url) in [("gateway", &ours_url), ("orchestra binary", &binary_url)] {
        let check = runtime.block_on(async {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(&token)
                .send()
                .await
                .map(|r| r.status().as_u16())
        });
        if check.as_ref().ok() != Some(&200) {
            eprintln!("the {name} does not route the benchmark path: {check:?}");
            std::process::exit(1);
        }
    }

    // The two proxies take turns, round after round, the one that goes first changing
    // each round: a machine whose speed drifts (other tenants, clock changes) weighs on
    // both alike, and the medians of the rounds set aside a round that a burst spoiled.
    let direct = wrk(&upstream.url("/body.json"), connections, round_seconds);
    let theirs_url = peer.url("/api/bench-service/body.json");
    // The three (in process, the binary, nginx) in an order that turns each round.
    let (mut ours_rounds, mut binary_rounds, mut theirs_rounds) =
        (Vec::new(), Vec::new(), Vec::new());
    let (mut ours_cpu, mut binary_cpu, mut theirs_cpu) = (0.0, 0.0, 0.0);
    for round in 0..rounds {
        for turn in 0..3 {
            let (url, rounds, cpu, cpu_now): (_, _, _, &dyn Fn() -> f64) = match (round + turn) % 3
            {
                0 => (&ours_url, &mut ours_rounds, &mut ours_cpu, &|| {
                    cpu_seconds(std::process::id())
                }),
                1 => (&binary_url, &mut binary_rounds, &mut binary_cpu, &|| {
                    users.cpu_seconds()
                }),
                _ => (&theirs_url, &mut theirs_rounds, &mut theirs_cpu, &|| {
                    peer.cpu_seconds()
                }),
            };
            let before = cpu_now();
            rounds.push(wrk_with(url, connections, round_seconds, &[&auth]));
            *cpu += cpu_now() - before;
        }
    }
    let ratios_of = |rounds: &[benches::Load]| -> Vec<f64> {
        rounds
            .iter()
            .zip(&theirs_rounds)
            .map(|(ours, theirs)| ours.rps / theirs.rps)
            .collect()
    };
    let ratios = ratios_of(&ours_rounds);
    let binary_ratios = ratios_of(&binary_rounds);
    // An error answer costs a proxy far less than a proxied one: a run with any would
    // compare something else.
    for (name, rounds) in [
        ("gateway", &ours_rounds),
        ("orchestra binary", &binary_rounds),
        ("nginx", &theirs_rounds),
    ] {
        let failures: u64 = rounds.iter().map(|l| l.failures).sum();
        if failures > 0 {
            eprintln!("the {name} answered {failures} requests with errors: no comparison");
            std::process::exit(1);
        }
    }
    let ours = median_load(&ours_rounds);
    let binary = median_load(&binary_rounds);
    let theirs = median_load(&theirs_rounds);

    // Latency at half of the gateway's peak, at a fixed rate (open loop), on all three;
    // then at a quarter of it. An open-loop driver sends each request on its own, where
    // wrk's connections batch, so half of wrk's peak keeps the machine far busier than
    // half: the share of CPU time the machine was busy is printed beside each rate.
    let half = ((ours.rps / 2.0) as u64).max(100);
    let driver = env!("CARGO_BIN_EXE_constant-rate");
    let direct_url = upstream.url("/body.json");
    let targets: [(&str, &[&str]); 3] = [
        (&direct_url, &[]),
        (&ours_url, &[&auth]),
        (&theirs_url, &[&auth]),
    ];
    let paced_at = |rate: u64| {
        paced_rounds(paced_count, |which| {
            let (url, headers) = targets[which];
            constant_rate(driver, url, rate, seconds, connections, headers)
        })
    };
    let paced = [("half", half), ("a quarter", half / 2)]
        .map(|(share, rate)| (share, rate, paced_at(rate)));
    drop(users);
    drop(peer);
    drop(upstream);
    runtime.block_on(app.shutdown());

    println!(
        "proxying a {} byte JSON answer, {connections} connections; {rounds} rounds of {round_seconds} s each, the proxies taking turns (medians of the rounds)",
        body.len()
    );
    for (name, load) in [
        ("upstream direct", direct),
        ("orchestra gateway", ours),
        ("orchestra up", binary),
        ("nginx proxy", theirs),
    ] {
        println!(
            "  {name:<18} {:>10.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms",
            load.rps, load.p50_ms, load.p99_ms
        );
    }
    let shown: Vec<String> = ours_rounds
        .iter()
        .zip(&theirs_rounds)
        .zip(&ratios)
        .map(|((ours, theirs), ratio)| format!("{:.0}/{:.0}={ratio:.2}", ours.rps, theirs.rps))
        .collect();
    println!("  rounds (gateway/nginx req/s): {}", shown.join("  "));
    let shown: Vec<String> = binary_ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!("  rounds (orchestra up / nginx): {}", shown.join("  "));
    println!(
        "  ratio (gateway / nginx): {:.2}x req/s in process, {:.2}x as `orchestra up`, the median round (goal: at least 1.0x); p99 added over direct: gateway {:.3} ms, orchestra up {:.3} ms, nginx {:.3} ms",
        median(&ratios),
        median(&binary_ratios),
        ours.p99_ms - direct.p99_ms,
        binary.p99_ms - direct.p99_ms,
        theirs.p99_ms - direct.p99_ms
    );
    for (share, rate, rounds) in &paced {
        let at = format!("{share} of the gateway's peak, {rate}");
        // The goal is set at half of the peak.
        print_paced(&at, rounds, *share == "half");
    }
    // CPU per request tells the two proxies apart even on a busy machine.
    let served = |rounds: &[benches::Load]| -> f64 {
        rounds.iter().map(|l| l.rps * round_seconds as f64).sum()
    };
    println!(
        "  CPU per proxied request (all rounds): gateway {:.1} us, orchestra up {:.1} us, nginx {:.1} us",
        ours_cpu * 1e6 / served(&ours_rounds),
        binary_cpu * 1e6 / served(&binary_rounds),
        theirs_cpu * 1e6 / served(&theirs_rounds)
    );
}

/// `count` rounds of a paced run of each of the three targets (direct, gateway, nginx)
/// by `run(target)`, in an order that turns from round to round: what a proxy adds is
/// read against the direct run of the same round, so that a burst of other work spoils
/// one round, not the comparison. Stops the bench when a proxy failed requests.
fn paced_rounds(count: usize, run: impl Fn(usize) -> RateLoad) -> Vec<[RateLoad; 3]> {
    let mut rounds = Vec::with_capacity(count);
    for round in 0..count {
        let mut loads = [None, None, None];
        for turn in 0..3 {
            let which = (round + turn) % 3;
            loads[which] = Some(run(which));
        }
        let [Some(direct), Some(ours), Some(theirs)] = loads else {
            unreachable!("each of the three ran in the round");
        };
        for (name, load) in [("gateway", &ours), ("nginx", &theirs)] {
            if load.errors > 0 {
                eprintln!(
                    "the {name} failed {} paced requests: no comparison",
                    load.errors
                );
                std::process::exit(1);
            }
        }
        rounds.push([direct, ours, theirs]);
    }
    rounds
}

/// Print the paced rounds at one rate: each target's medians, each round's p99 added
/// over its direct run, and the median round's (against the goal when `goal`).
fn print_paced(rate: &str, rounds: &[[RateLoad; 3]], goal: bool) {
    println!(
        "at {rate} req/s (constant rate, open loop; medians of {} rounds, the three taking turns):",
        rounds.len()
    );
    let of = |i: usize, figure: fn(&RateLoad) -> f64| {
        median(&rounds.iter().map(|r| figure(&r[i])).collect::<Vec<_>>())
    };
    for (i, name) in ["upstream direct", "orchestra gateway", "nginx proxy"]
        .iter()
        .enumerate()
    {
        println!(
            "  {name:<18} {:>10.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  machine busy {:>3.0} %",
            of(i, |l| l.rps),
            of(i, |l| l.p50_ms),
            of(i, |l| l.p99_ms),
            of(i, |l| l.busy) * 100.0
        );
    }
    let added =
        |i: usize| -> Vec<f64> { rounds.iter().map(|r| r[i].p99_ms - r[0].p99_ms).collect() };
    let (ours, theirs) = (added(1), added(2));
    let shown: Vec<String> = ours
        .iter()
        .zip(&theirs)
        .map(|(ours, theirs)| format!("{ours:.3}/{theirs:.3}"))
        .collect();
    println!(
        "  rounds (p99 added over the round's direct run, gateway/nginx ms): {}",
        shown.join("  ")
    );
    println!(
        "  p99 added over direct: gateway {:.3} ms{}, nginx {:.3} ms, the median round",
        median(&ours),
        if goal { " (goal: at most 1 ms)" } else { "" },
        median(&theirs)
    );
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    }
}

/// Each figure's median over `rounds`.
fn median_load(rounds: &[benches::Load]) -> benches::Load {
    let of =
        |figure: fn(&benches::Load) -> f64| median(&rounds.iter().map(figure).collect::<Vec<_>>());
    benches::Load {
        rps: of(|l| l.rps),
        p50_ms: of(|l| l.p50_ms),
        p99_ms: of(|l| l.p99_ms),
        failures: rounds.iter().map(|l| l.failures).sum(),
    }
}
