//! End to end: how far the consumer groups are behind, on the registry server's
//! `/events/stats`, `/metrics` and `/alerts`.

use omc_orchestra::events::{BusOptions, ConsumerOptions, EventConsumer, MemoryEventBus};
use omc_orchestra::registry::RegistryOptions;
use omc_orchestra::testkit::eventually;
use omc_orchestra::{Backends, ManualClock};
use omc_orchestra_server::app::{App, Config, ServerKind};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// A registry server on memory backends timed by `clock`, its bus capped at `cap`, once
/// it has published its first host sample: groups made after that see only the test's
/// events (the next sample is an hour away).
async fn start(clock: &ManualClock, cap: usize) -> App {
    let shared: omc_orchestra::SharedClock = Arc::new(clock.clone());
    let mut backends = Backends::memory_with(shared.clone(), RegistryOptions::default());
    let options = BusOptions {
        backlog: cap.min(10),
        backlog_cap: cap,
        ..BusOptions::default()
    };
    backends.events = Arc::new(MemoryEventBus::with_options(shared, options));
    let config = Config {
        system_sample_every: Duration::from_secs(3600),
        ..Config::ephemeral()
    };
    let app = App::start_with(config, &[ServerKind::Registry], backends)
        .await
        .unwrap();
    let sampled = format!(
        "{}/events?type=PERFORMANCE_METRIC",
        app.url(ServerKind::Registry)
    );
    let http = reqwest::Client::new();
    eventually("the first host sample", Duration::from_secs(15), || async {
        let events = get_json(&http, &sampled).await?;
        (!events.as_array()?.is_empty()).then_some(())
    })
    .await;
    app
}

/// The JSON at `url`, or `None` while it does not answer with JSON.
async fn get_json(http: &reqwest::Client, url: &str) -> Option<Value> {
    http.get(url).send().await.ok()?.json().await.ok()
}

async fn group_consumer(app: &App, group: &str) -> Box<dyn EventConsumer> {
    let options = ConsumerOptions::new(group, "c1");
    app.backends().events.consumer(options).await.unwrap()
}

/// Publish `count` events over HTTP, in batches of at most 1000.
async fn publish(http: &reqwest::Client, base: &str, count: usize) {
    let mut left = count;
    while left > 0 {
        let batch: Vec<Value> = (0..left.min(1000))
            .map(|n| json!({"type": "SALE_RECORDED", "source": "station", "data": {"n": n}}))
            .collect();
        left -= batch.len();
        let answer = http
            .post(format!("{base}/events"))
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 201);
    }
}

/// `/metrics` once it has every line of `want`.
async fn metrics_with(http: &reqwest::Client, base: &str, want: &[&str]) -> String {
    eventually(
        &format!("metrics with {want:?}"),
        Duration::from_secs(15),
        || async {
            let text = http
                .get(format!("{base}/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            want.iter()
                .all(|line| text.lines().any(|l| l == *line))
                .then_some(text)
        },
    )
    .await
}

#[tokio::test]
async fn group_lag_and_pending_and_what_the_cap_dropped_are_shown() {
    let clock = ManualClock::starting_now();
    let app = start(&clock, 20).await;
    let base = app.url(ServerKind::Registry);
    let http = reqwest::Client::new();
    let mut reports = group_consumer(&app, "reports").await;
    let _audit = group_consumer(&app, "audit").await;
    publish(&http, &base, 10).await;
    // `reports` takes four and acknowledges three.
    for i in 0..4 {
        let delivery = reports.next(Duration::from_secs(5)).await.unwrap().unwrap();
        if i < 3 {
            assert!(reports.ack(&delivery.event.id).await.unwrap());
        }
    }
    let stats = get_json(&http, &format!("{base}/events/stats"))
        .await
        .unwrap();
    assert_eq!(
        stats["groups"],
        json!([
            {"group": "audit", "lag": 10, "pending": 0, "byPriority": {
                "critical": {"lag": 0, "pending": 0}, "high": {"lag": 0, "pending": 0},
                "normal": {"lag": 10, "pending": 0}, "low": {"lag": 0, "pending": 0}}},
            {"group": "reports", "lag": 6, "pending": 1, "byPriority": {
                "critical": {"lag": 0, "pending": 0}, "high": {"lag": 0, "pending": 0},
                "normal": {"lag": 6, "pending": 1}, "low": {"lag": 0, "pending": 0}}},
        ]),
        "{stats}"
    );
    assert_eq!(stats["trimmedUnread"], 0);
    // Fifteen more: `audit` goes five past the cap of 20, `reports` one (one it shares).
    publish(&http, &base, 15).await;
    metrics_with(
        &http,
        &base,
        &[
            r#"orchestra_event_group_lag{group="audit"} 20"#,
            r#"orchestra_event_group_lag{group="reports"} 20"#,
            r#"orchestra_event_group_pending{group="reports"} 1"#,
            r#"orchestra_event_group_pending{group="audit"} 0"#,
            "orchestra_events_trimmed_unread_total 5",
        ],
    )
    .await;
    let doc = get_json(&http, &format!("{base}/openapi.json"))
        .await
        .unwrap();
    assert!(doc["components"]["schemas"]["GroupLag"].is_object());
    app.shutdown().await;
}

#[tokio::test]
async fn a_group_far_behind_for_five_minutes_raises_event_consumer_lagging() {
    let clock = ManualClock::starting_now();
    let app = start(&clock, 100_000).await;
    let base = app.url(ServerKind::Registry);
    let http = reqwest::Client::new();
    let _stuck = group_consumer(&app, "reports").await;
    publish(&http, &base, 1001).await;
    // Seen behind once; five minutes later still behind.
    metrics_with(
        &http,
        &base,
        &[r#"orchestra_event_group_lag{group="reports"} 1001"#],
    )
    .await;
    clock.advance(Duration::from_secs(301));
    let alerts = eventually(
        "EventConsumerLagging firing",
        Duration::from_secs(15),
        || async {
            let answer = get_json(&http, &format!("{base}/alerts")).await?;
            let firing = answer["active"].as_array()?.iter().any(|a| {
                a["rule"] == "EventConsumerLagging"
                    && a["state"] == "firing"
                    && a["labels"]["group"] == "reports"
            });
            firing.then_some(answer)
        },
    )
    .await;
    // Other built-in rules may fire beside it (a busy machine trips HighCpu).
    let recorded = alerts["history"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|entry| {
            entry["rule"] == "EventConsumerLagging" && entry["labels"]["group"] == "reports"
        });
    assert!(recorded, "no history entry: {alerts}");
    app.shutdown().await;
}
