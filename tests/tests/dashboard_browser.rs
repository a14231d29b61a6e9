//! The dashboard in a real headless Chromium: a service registered over HTTP appears on
//! the open page without a reload, and an alert appears when it goes down.

use fantoccini::Locator;
use omc_orchestra::testkit::eventually;
use omc_orchestra_server::app::{App, Config, ServerKind};
use serde_json::json;
use std::time::Duration;
use tests::{ChromeDriver, FakeService};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_services_live() {
    // Probes every 200 ms (not the 30 s default): with the fall threshold of 3 a service
    // that goes down turns critical in well under a second.
    let config = Config {
        health_interval: Duration::from_millis(200),
        ..Config::ephemeral()
    };
    let app = App::start(config, &ServerKind::ALL).await.unwrap();
    let base = app.url(ServerKind::Registry);
    let driver = ChromeDriver::start();
    let browser = driver.browser().await;

    browser.goto(&format!("{base}/")).await.unwrap();
    assert!(
        browser
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/dashboard"),
        "/ redirects to /dashboard"
    );
    browser
        .wait()
        .for_element(Locator::Id("services"))
        .await
        .unwrap();

    let service = FakeService::start().await;
    let http = reqwest::Client::new();
    let body = json!({"name": "uppf-service", "version": "3.2.1", "host": "127.0.0.1",
                      "port": service.port, "tags": ["uppf", "claims"]});
    let res = http
        .post(format!("{base}/registry/register"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());

    let row = Locator::Css("tr[data-service='uppf-service']");
    let text = eventually(
        "the service row on the page",
        Duration::from_secs(30),
        || {
            let browser = browser.clone();
            async move { browser.find(row).await.ok()?.text().await.ok() }
        },
    )
    .await;
    assert!(
        text.contains("3.2.1") && text.contains("passing") && text.contains("uppf, claims"),
        "{text}"
    );

    let png = browser.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&out, &png).unwrap();

    // The service goes down: the checker marks it critical and the alert streams in.
    service.set_health(500);
    let firing =
        Locator::Css("#alerts li[data-alert-state='firing'][data-alert-subject='uppf-service']");
    let alert = eventually(
        "a firing alert on the page",
        Duration::from_secs(60),
        || {
            let browser = browser.clone();
            async move { browser.find(firing).await.ok()?.text().await.ok() }
        },
    )
    .await;
    assert!(alert.contains("critical"), "{alert}");
    let down = Locator::Css("tr[data-service='uppf-service'][data-status='critical']");
    eventually(
        "the service row turning critical",
        Duration::from_secs(30),
        || {
            let browser = browser.clone();
            async move { browser.find(down).await.ok() }
        },
    )
    .await;
    let png = browser.screenshot().await.unwrap();
    std::fs::write(out.with_file_name("dashboard-alert.png"), &png).unwrap();

    browser.close().await.unwrap();
    app.shutdown().await;
}
