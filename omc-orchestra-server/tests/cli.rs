//! The operators' commands of the real `orchestra` binary against real servers: every
//! group in table and `--json` form, the one-line failure of a server that is down, and
//! each command's help holding its own options only.

use futures::{SinkExt, StreamExt};
use omc_orchestra::testkit::eventually;
use omc_orchestra::testkit::redis::free_port;
use omc_orchestra_server::app::{App, Config, ServerKind};
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;

/// What one run of the binary printed and how it ended.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ran {
    /// The run succeeded; its stdout.
    fn ok(self) -> String {
        assert_eq!(
            self.code, 0,
            "stderr: {}\nstdout: {}",
            self.stderr, self.stdout
        );
        // Output to a pipe is never coloured.
        assert!(!self.stdout.contains('\x1b'), "{}", self.stdout);
        self.stdout
    }

    /// The run succeeded; its stdout as JSON.
    fn json(self) -> Value {
        let stdout = self.ok();
        serde_json::from_str(&stdout).unwrap_or_else(|err| panic!("{err}: {stdout}"))
    }
}

/// The binary, with the servers' URLs of `app` (or of nothing) and nothing else from the
/// machine's environment that would change what it does.
fn orchestra(urls: &Urls) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_orchestra"));
    for var in ["ORCHESTRA_TOKEN", "JWT_SECRET", "NO_COLOR", "PORT"] {
        command.env_remove(var);
    }
    command
        .env("SERVICE_REGISTRY_URL", &urls.registry)
        .env("JOB_SCHEDULER_URL", &urls.jobs)
        .env("LOGGING_SERVICE_URL", &urls.logging)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn run(urls: &Urls, args: &[&str]) -> Ran {
    let output = orchestra(urls).args(args).output().await.unwrap();
    Ran {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Where the three servers the commands call are.
struct Urls {
    registry: String,
    jobs: String,
    logging: String,
}

/// The four servers in this process, on free ports.
async fn servers() -> (App, Urls) {
    let app = App::start(Config::ephemeral(), &ServerKind::ALL)
        .await
        .unwrap();
    let urls = Urls {
        registry: app.url(ServerKind::Registry),
        jobs: app.url(ServerKind::Jobs),
        logging: app.url(ServerKind::Logging),
    };
    (app, urls)
}

async fn post(url: String, body: Value) -> Value {
    let answer = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
    answer.json().await.unwrap()
}

/// Enqueue a one-attempt job, take it as worker `w` and fail it: a failed job's id.
async fn failed_job(urls: &Urls, job_type: &str) -> String {
    let job = post(
        format!("{}/jobs", urls.jobs),
        json!({"type": job_type, "maxAttempts": 1}),
    )
    .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let leased = post(
        format!("{}/jobs/lease", urls.jobs),
        json!({"worker": "w", "types": [job_type]}),
    )
    .await;
    assert_eq!(leased["jobs"][0]["job"]["id"], id.as_str(), "{leased}");
    let token = leased["jobs"][0]["token"].as_str().unwrap();
    post(
        format!("{}/jobs/{id}/fail", urls.jobs),
        json!({"token": token, "error": "claim portal down"}),
    )
    .await;
    id
}

async fn job_state(urls: &Urls, id: &str) -> String {
    let job: Value = reqwest::get(format!("{}/jobs/{id}", urls.jobs))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    job["state"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn services_are_listed_shown_discovered_and_deregistered() {
    let (app, urls) = servers().await;
    let instance = post(
        format!("{}/registry/register", urls.registry),
        json!({"name": "pricing-service", "version": "1.4.2", "host": "localhost",
               "port": 3006, "type": "api", "healthEndpoint": "/health", "tags": ["pricing"]}),
    )
    .await;
    let id = instance["id"].as_str().unwrap().to_owned();

    let table = run(&urls, &["services"]).await.ok();
    let row = table.lines().find(|l| l.contains(&id)).expect(&table);
    for shown in [
        "pricing-service",
        "1.4.2",
        "localhost:3006",
        "passing",
        "pricing",
    ] {
        assert!(row.contains(shown), "{shown} in {table}");
    }
    assert!(table.starts_with("ID "), "{table}");
    let listed = run(
        &urls,
        &["services", "ls", "--json", "--name", "pricing-service"],
    )
    .await
    .json();
    assert_eq!(listed[0]["id"], id.as_str(), "{listed}");
    let shown = run(&urls, &["services", "show", &id, "--json"])
        .await
        .json();
    assert_eq!(shown["version"], "1.4.2");
    let record = run(&urls, &["services", "show", &id]).await.ok();
    assert!(
        record
            .lines()
            .any(|l| l.starts_with("port") && l.ends_with("3006")),
        "{record}"
    );
    let discovered = run(&urls, &["services", "discover", "pricing-service"])
        .await
        .ok();
    assert!(
        discovered.contains(&format!("selected: {id}")),
        "{discovered}"
    );
    let discovered = run(
        &urls,
        &["services", "discover", "pricing-service", "--json"],
    )
    .await
    .json();
    assert_eq!(discovered["selected"]["id"], id.as_str());

    let gone = run(&urls, &["services", "deregister", &id]).await.ok();
    assert!(gone.contains(&id), "{gone}");
    let listed = run(&urls, &["services", "ls", "--json"]).await.json();
    assert_eq!(listed, json!([]));
    assert_eq!(
        run(&urls, &["services"]).await.ok().trim(),
        "no instances registered"
    );
    let missing = run(&urls, &["services", "show", &id]).await;
    assert_eq!(missing.code, 1);
    assert_eq!(
        missing.stderr,
        format!("error: no instance `{id}` is registered\n")
    );
    let again = run(&urls, &["services", "deregister", &id]).await;
    assert_eq!(again.code, 1);
    assert!(
        again.stderr.starts_with("error: the registry at "),
        "{}",
        again.stderr
    );
    assert!(again.stderr.contains("404"), "{}", again.stderr);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_jobs_are_listed_retried_and_cancelled() {
    let (app, urls) = servers().await;
    let id = failed_job(&urls, "uppf-claim").await;

    let table = run(
        &urls,
        &["jobs", "ls", "--state", "failed", "--type", "uppf-claim"],
    )
    .await
    .ok();
    let row = table.lines().find(|l| l.contains(&id)).expect(&table);
    for shown in ["uppf-claim", "failed", "1/1", "claim portal down"] {
        assert!(row.contains(shown), "{shown} in {table}");
    }
    let listed = run(&urls, &["jobs", "ls", "--state", "failed", "--json"])
        .await
        .json();
    assert_eq!(listed[0]["id"], id.as_str());
    let shown = run(&urls, &["jobs", "show", &id, "--json"]).await.json();
    assert_eq!(shown["error"], "claim portal down");
    let attempts = shown["failedAttempts"].as_array().expect("failedAttempts");
    assert_eq!(attempts.len(), 1, "{shown}");
    assert_eq!(
        (
            &attempts[0]["attempt"],
            &attempts[0]["error"],
            &attempts[0]["worker"]
        ),
        (&json!(1), &json!("claim portal down"), &json!("w")),
        "{shown}"
    );
    assert!(attempts[0]["failedAt"].is_string(), "{shown}");
    let record = run(&urls, &["jobs", "show", &id]).await.ok();
    let row = record
        .lines()
        .find(|l| l.starts_with("attempt 1 "))
        .expect(&record);
    assert!(row.ends_with(" on w: claim portal down"), "{record}");

    let retried = run(&urls, &["jobs", "retry", &id, "--json"]).await.json();
    assert_eq!(
        (retried["state"].as_str(), retried["attempts"].as_u64()),
        (Some("waiting"), Some(0))
    );
    assert_eq!(job_state(&urls, &id).await, "waiting");
    let twice = run(&urls, &["jobs", "retry", &id]).await;
    assert_eq!(twice.code, 1);
    assert!(twice.stderr.contains("409"), "{}", twice.stderr);
    assert_eq!(twice.stderr.lines().count(), 1, "{}", twice.stderr);

    // The retried job runs and fails again; retry-failed brings back every failed job.
    let leased = post(
        format!("{}/jobs/lease", urls.jobs),
        json!({"worker": "w", "types": ["uppf-claim"]}),
    )
    .await;
    let token = leased["jobs"][0]["token"].as_str().unwrap();
    post(
        format!("{}/jobs/{id}/fail", urls.jobs),
        json!({"token": token, "error": "again"}),
    )
    .await;
    let other = failed_job(&urls, "price-calculation").await;
    let all = run(&urls, &["jobs", "retry-failed", "--json"]).await.json();
    assert_eq!(all, json!({"retried": 2}));
    assert_eq!(job_state(&urls, &id).await, "waiting");
    assert_eq!(job_state(&urls, &other).await, "waiting");

    let third = failed_job(&urls, "inventory-sync").await;
    let typed = run(&urls, &["jobs", "retry-failed", "--type", "inventory-sync"])
        .await
        .ok();
    assert_eq!(typed, "RETRIED\n1\n");
    assert_eq!(job_state(&urls, &third).await, "waiting");

    let cancelled = run(&urls, &["jobs", "cancel", &third]).await.ok();
    assert!(
        cancelled
            .lines()
            .any(|l| l.starts_with("state") && l.ends_with("cancelled")),
        "{cancelled}"
    );
    let gone = run(&urls, &["jobs", "show", &third]).await;
    assert_eq!(
        (gone.code, gone.stderr.lines().count()),
        (1, 1),
        "{}",
        gone.stderr
    );

    let stats = run(&urls, &["jobs", "stats", "--json"]).await.json();
    assert_eq!(stats["waiting"], 2, "{stats}");
    let table = run(&urls, &["jobs", "stats"]).await.ok();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("waiting") && l.ends_with(" 2")),
        "{table}"
    );
    let types = run(&urls, &["jobs", "types", "--json"]).await.json();
    let total: u64 = types
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t["waiting"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(total, 2, "{types}");
    let table = run(&urls, &["jobs", "types"]).await.ok();
    assert!(table.starts_with("TYPE"), "{table}");
    let workers = run(&urls, &["jobs", "workers", "--json"]).await.json();
    assert_eq!(workers[0]["worker"], "w", "{workers}");
    let table = run(&urls, &["jobs", "workers"]).await.ok();
    assert!(table.lines().any(|l| l.starts_with("w ")), "{table}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn schedules_are_added_listed_and_removed() {
    let (app, urls) = servers().await;
    let added = run(
        &urls,
        &[
            "schedules",
            "add",
            "0 2 * * *",
            "--type",
            "report-generation",
            "--id",
            "nightly",
            "--data",
            "{\"report\":\"uppf\"}",
            "--json",
        ],
    )
    .await
    .json();
    assert_eq!(
        (
            added["id"].as_str(),
            added["job"]["data"]["report"].as_str()
        ),
        (Some("nightly"), Some("uppf"))
    );
    let table = run(&urls, &["schedules"]).await.ok();
    let row = table
        .lines()
        .find(|l| l.starts_with("nightly"))
        .expect(&table);
    assert!(
        row.contains("0 2 * * *") && row.contains("report-generation") && row.contains("never"),
        "{row}"
    );
    // The next run, at 02:00 (UTC) of some day.
    assert!(row.contains(" 02:00:00"), "{row}");
    let listed = run(&urls, &["schedules", "ls", "--json"]).await.json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert!(
        listed[0]["nextRunAt"]
            .as_str()
            .is_some_and(|at| at.contains("T02:00:00")),
        "{listed}"
    );
    let bad = run(&urls, &["schedules", "add", "every tuesday", "--type", "x"]).await;
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("400") && bad.stderr.contains("cron"),
        "{}",
        bad.stderr
    );
    run(&urls, &["schedules", "rm", "nightly"]).await.ok();
    assert_eq!(run(&urls, &["schedules", "--json"]).await.json(), json!([]));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events_are_published_followed_and_replayed() {
    let (app, urls) = servers().await;
    let mut tail = orchestra(&urls)
        .args(["events", "tail", "--type", "STOCK_LOW", "--json"])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    let event = |event_type: &'static str| {
        let url = format!("{}/events", urls.registry);
        async move {
            let event = post(
                url,
                json!({"type": event_type, "source": "depot-7", "data": {}}),
            )
            .await;
            event["id"].as_str().unwrap().to_owned()
        }
    };
    // Events published before the tail has subscribed pass it by: publish a pair of
    // another type and its type until one of its type arrives.
    let mut rounds = 0;
    loop {
        event("PRICE_ALERT").await;
        event("STOCK_LOW").await;
        match tokio::time::timeout(Duration::from_millis(250), lines.next_line()).await {
            Ok(line) => {
                let line: Value = serde_json::from_str(&line.unwrap().unwrap()).unwrap();
                assert_eq!(line["type"], "STOCK_LOW", "{line}");
                break;
            }
            Err(_) => {
                rounds += 1;
                assert!(rounds < 120, "the tail printed nothing");
            }
        }
    }
    // The tail follows the registry's live feed: besides this probe, a WebSocket is open.
    let feed = urls.registry.replacen("http://", "ws://", 1) + "/ws";
    let (mut probe, _) = tokio_tungstenite::connect_async(feed).await.unwrap();
    let ask = json!({"event": "get_system_dashboard"}).to_string();
    probe.send(Message::Text(ask.into())).await.unwrap();
    let connections = loop {
        let frame = probe.next().await.unwrap().unwrap();
        let frame: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
        if frame["event"] == "system_dashboard" {
            break frame["data"]["connections"].as_u64().unwrap();
        }
    };
    assert_eq!(connections, 2, "the probe and the tail");
    // Subscribed now: of a pair published in order, only the second, its type, arrives
    // (after any of the earlier rounds still on their way).
    event("PRICE_ALERT").await;
    let last = event("STOCK_LOW").await;
    loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the tail prints the event")
            .unwrap()
            .expect("the tail is still running");
        let line: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            (&line["type"], &line["source"]),
            (&json!("STOCK_LOW"), &json!("depot-7")),
            "{line}"
        );
        if line["id"] == last.as_str() {
            break;
        }
    }
    tail.kill().await.unwrap();

    let published = run(
        &urls,
        &[
            "events",
            "publish",
            "PRICE_UPDATED",
            "--data",
            "{\"stationId\":\"STN001\"}",
            "--json",
        ],
    )
    .await
    .json();
    assert_eq!(published["source"], "orchestra-cli");
    assert_eq!(published["data"]["stationId"], "STN001");

    let table = run(
        &urls,
        &[
            "events",
            "publish",
            "PRICE_UPDATED",
            "--data",
            "{\"stationId\":\"STN002\"}",
        ],
    )
    .await
    .ok();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("type") && l.ends_with("PRICE_UPDATED")),
        "{table}"
    );
    let replayed = run(
        &urls,
        &[
            "events",
            "replay",
            "--since",
            "10m",
            "--type",
            "PRICE_UPDATED",
            "--json",
        ],
    )
    .await
    .json();
    let stations: Vec<&Value> = replayed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["data"]["stationId"])
        .collect();
    assert_eq!(stations, [&json!("STN001"), &json!("STN002")]);
    let table = run(&urls, &["events", "replay", "--since", "10m"])
        .await
        .ok();
    assert!(
        table.starts_with("TIME ") && table.contains("STN002"),
        "{table}"
    );
    let bad = run(&urls, &["events", "publish", "X", "--data", "{not json"]).await;
    assert_eq!(
        (bad.code, bad.stderr.lines().count()),
        (1, 1),
        "{}",
        bad.stderr
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn log_records_are_searched_and_followed() {
    let (app, urls) = servers().await;
    post(
        format!("{}/logs", urls.logging),
        json!([{"level": "error", "service": "pricing-service", "message": "price feed timed out"},
               {"level": "info", "service": "pricing-service", "message": "price feed ok"}]),
    )
    .await;
    let found = eventually(
        "the records are searchable",
        Duration::from_secs(10),
        || async {
            let found = run(
                &urls,
                &["logs", "search", "feed", "--since", "1h", "--json"],
            )
            .await
            .json();
            (found.as_array().map(Vec::len) == Some(2)).then_some(found)
        },
    )
    .await;
    assert_eq!(found[0]["service"], "pricing-service");
    let errors = run(&urls, &["logs", "search", "--level", "error"])
        .await
        .ok();
    assert!(
        errors.contains("price feed timed out") && !errors.contains("price feed ok"),
        "{errors}"
    );

    let mut tail = orchestra(&urls)
        .args([
            "logs",
            "tail",
            "--level",
            "error",
            "--service",
            "inventory-service",
            "--count",
            "1",
        ])
        .spawn()
        .unwrap();
    // Records go on arriving until the tail, once connected, has printed one and stopped.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tail.try_wait().unwrap().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tail printed nothing"
        );
        post(
            format!("{}/logs", urls.logging),
            json!([{"level": "info", "service": "inventory-service", "message": "noise"},
                   {"level": "error", "service": "inventory-service", "message": "tank sensor offline"}]),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let output = tail.wait_with_output().await.unwrap();
    let line = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{line}");
    assert!(
        line.contains("error") && line.contains("tank sensor offline") && !line.contains("noise"),
        "{line}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_and_the_status_screen_show_what_runs() {
    let (app, urls) = servers().await;
    post(
        format!("{}/registry/register", urls.registry),
        json!({"name": "inventory-service", "version": "2.0.0", "host": "localhost",
               "port": free_port(), "type": "api", "healthEndpoint": "/health"}),
    )
    .await;
    failed_job(&urls, "uppf-claim").await;
    let alerts = run(&urls, &["alerts", "--json"]).await.json();
    assert!(alerts.is_array(), "{alerts}");
    let history = run(&urls, &["alerts", "history", "--json"]).await.json();
    assert!(history.is_array(), "{history}");
    let table = run(&urls, &["alerts", "history"]).await.ok();
    assert!(
        table.starts_with("AT ") || table.trim() == "no alert has fired",
        "{table}"
    );

    // The registry itself is an upstream that answers; inventory-service (on a port where
    // nothing listens) is one that does not: 5xx.
    let registry_port = urls
        .registry
        .rsplit(':')
        .next()
        .unwrap()
        .parse::<u16>()
        .unwrap();
    post(
        format!("{}/registry/register", urls.registry),
        json!({"name": "registry-mirror", "version": "1.0.0", "host": "127.0.0.1",
               "port": registry_port, "type": "api", "healthEndpoint": "/health"}),
    )
    .await;
    let gateway = app.url(ServerKind::Gateway);
    let proxied = |service: &'static str| {
        let url = format!("{gateway}/api/{service}/health");
        async move { reqwest::get(url).await.unwrap().status().as_u16() }
    };
    for _ in 0..3 {
        assert_eq!(proxied("registry-mirror").await, 200);
    }
    assert!(proxied("inventory-service").await >= 500);

    let screen = run(&urls, &["status"]).await.ok();
    for shown in [
        "2 instances of 2 services",
        "1 failed",
        "error rate",
        "alerts",
        "proxied req/s",
        "4 proxied since start",
        "breakers: ",
    ] {
        assert!(screen.contains(shown), "{shown} in {screen}");
    }
    // Requests go on through the gateway while the status command samples it.
    let mut status = Box::pin(run(&urls, &["status", "--json", "--sample", "1s"]));
    let status = loop {
        tokio::select! {
            ran = &mut status => break ran.json(),
            _ = proxied("registry-mirror") => {}
        }
    };
    assert_eq!(status["dashboard"]["services"]["total"], 2, "{status}");
    assert_eq!(status["jobs"]["failed"], 1, "{status}");
    assert!(status["logs"]["errorRate"].is_number(), "{status}");
    let figures = &status["gateway"];
    assert!(
        figures["requestsPerSecond"].as_f64().unwrap() > 0.0,
        "{status}"
    );
    assert!(figures["p50Ms"].as_f64().unwrap() > 0.0, "{status}");
    assert!(figures["requestsTotal"].as_u64().unwrap() > 4, "{status}");
    assert_eq!(figures["errorsTotal"], 1, "{status}");
    assert!(figures["errorsPerSecond"].is_number(), "{status}");
    assert!(figures["openBreakers"].is_array(), "{status}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn status_without_a_gateway_beside_the_registry_says_so_and_succeeds() {
    let kinds = [ServerKind::Registry, ServerKind::Jobs, ServerKind::Logging];
    let app = App::start(Config::ephemeral(), &kinds).await.unwrap();
    let urls = Urls {
        registry: app.url(ServerKind::Registry),
        jobs: app.url(ServerKind::Jobs),
        logging: app.url(ServerKind::Logging),
    };
    let screen = run(&urls, &["status"]).await.ok();
    let line = screen
        .lines()
        .find(|l| l.starts_with("gateway"))
        .expect(&screen);
    assert!(
        line.ends_with("not running beside the registry"),
        "{screen}"
    );
    let status = run(&urls, &["status", "--json"]).await.json();
    assert_eq!(status["gateway"], Value::Null, "{status}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_is_down_is_one_line_on_stderr_and_exit_status_1() {
    let port = free_port();
    let down = format!("http://127.0.0.1:{port}");
    let urls = Urls {
        registry: down.clone(),
        jobs: down.clone(),
        logging: down.clone(),
    };
    let cases: [(&[&str], &str); 12] = [
        (&["services"], "registry"),
        (&["services", "show", "x", "--json"], "registry"),
        (&["services", "discover", "pricing-service"], "registry"),
        (&["jobs", "ls"], "jobs server"),
        (&["jobs", "retry-failed", "--json"], "jobs server"),
        (&["jobs", "stats"], "jobs server"),
        (&["schedules"], "jobs server"),
        (&["events", "replay", "--since", "10m"], "registry"),
        (&["events", "tail"], "registry"),
        (&["logs", "search", "x", "--json"], "logging server"),
        (&["logs", "tail"], "logging server"),
        (&["alerts"], "registry"),
    ];
    for (args, server) in cases {
        let ran = run(&urls, args).await;
        assert_eq!(ran.code, 1, "{args:?}");
        assert_eq!(ran.stdout, "", "{args:?}");
        assert_eq!(
            ran.stderr,
            format!("error: cannot reach the {server} at {down}: connection refused\n"),
            "{args:?}"
        );
    }
    let status = run(&urls, &["status"]).await;
    assert_eq!(status.code, 1);
    assert_eq!(status.stderr.lines().count(), 1, "{}", status.stderr);
    assert!(status.stdout.contains("unreachable"), "{}", status.stdout);
    let gateway = status.stdout.lines().find(|l| l.starts_with("gateway"));
    assert!(
        gateway.is_some_and(|l| l.ends_with("unreachable")),
        "{}",
        status.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_command_help_shows_its_own_options_with_defaults() {
    let urls = Urls {
        registry: String::new(),
        jobs: String::new(),
        logging: String::new(),
    };
    let help = |args: &'static [&'static str]| {
        let urls = &urls;
        async move { run(urls, args).await.ok() }
    };
    let jobs = help(&["jobs", "--help"]).await;
    for own in [
        "--port",
        "[default: 3013]",
        "[env: PORT",
        "--redis",
        "[env: REDIS_URL",
        "[default: orc]",
        "retry-failed",
    ] {
        assert!(jobs.contains(own), "{own} in {jobs}");
    }
    for others in [
        "--gateway-port",
        "--panic-threshold",
        "_SERVICE_URL",
        "--log-dir",
        "--default-ttl",
        "--registry-url",
    ] {
        assert!(!jobs.contains(others), "{others} in {jobs}");
    }
    let gateway = help(&["gateway", "--help"]).await;
    assert!(
        gateway.contains("<NAME>_SERVICE_URL") && gateway.contains("[default: 3000]"),
        "{gateway}"
    );
    assert!(
        !gateway.contains("--log-dir") && !gateway.contains("--grace"),
        "{gateway}"
    );
    for server in ["up", "registry", "gateway", "jobs", "logging"] {
        let text = run(&urls, &[server, "--help"]).await.ok();
        assert!(
            text.contains("OTEL_EXPORTER_OTLP_ENDPOINT"),
            "{server}: {text}"
        );
    }
    let logging = help(&["logging", "--help"]).await;
    assert!(
        logging.contains("[env: LOG_DIR") && logging.contains("[env: ELASTICSEARCH_URL"),
        "{logging}"
    );
    let registry = help(&["registry", "--help"]).await;
    assert!(registry.contains("[env: ALERTMANAGER_URL"), "{registry}");
    assert!(!gateway.contains("--alertmanager-url"), "{gateway}");
    assert!(
        registry.contains("[env: DATABASE_URL") && registry.contains("[default: 30]"),
        "{registry}"
    );
    let up = help(&["up", "--help"]).await;
    for all in [
        "--registry-port",
        "--gateway-port",
        "--log-dir",
        "--panic-threshold",
        "[env: HEALTH_INTERVAL",
    ] {
        assert!(up.contains(all), "{all} in {up}");
    }
    let ls = help(&["jobs", "ls", "--help"]).await;
    for own in [
        "--state",
        "[env: JOB_SCHEDULER_URL",
        "[env: ORCHESTRA_TOKEN",
        "--json",
        "[default: 50]",
    ] {
        assert!(ls.contains(own), "{own} in {ls}");
    }
    assert!(!ls.contains("--redis"), "{ls}");
}
