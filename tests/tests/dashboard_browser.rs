//! The dashboard in a real headless Chromium: a service registered over HTTP appears on
//! the open page without a reload, and an alert appears when it goes down; with a service
//! secret the page asks for a token and, given one, shows the same live data, its panels
//! on the other servers' ports included.

use fantoccini::{Client, Locator};
use omc_orchestra::access::{Grants, Scope, TokenIssuer};
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

    let text = service_row(&browser, "uppf-service").await;
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

/// Whether the element with `id` is on the page and shown.
async fn shown(browser: &Client, id: &str) -> bool {
    match browser.find(Locator::Id(id)).await {
        Ok(element) => element.is_displayed().await.unwrap_or(false),
        Err(_) => false,
    }
}

/// Type `token` into the page's token form and press its button, as a person would.
async fn enter_token(browser: &Client, token: &str) {
    let input = browser.find(Locator::Id("token")).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(token).await.unwrap();
    browser
        .find(Locator::Css("#login-form button[type='submit']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_works_with_auth_on() {
    const SECRET: &str = "dashboard-browser-test-secret-of-40-bytes";
    let config = Config::ephemeral().with_service_secret(SECRET).unwrap();
    let app = App::start(config, &ServerKind::ALL).await.unwrap();
    let (base, jobs) = (app.url(ServerKind::Registry), app.url(ServerKind::Jobs));
    let issuer = TokenIssuer::from_secret(SECRET.as_bytes()).unwrap();
    let hour = Duration::from_secs(3600);
    let admin = issuer.mint("ops", Grants::admin(), hour).unwrap();
    let driver = ChromeDriver::start();
    let browser = driver.browser().await;

    // Without a token the page shows the token form and nothing of the API.
    browser.goto(&format!("{base}/dashboard")).await.unwrap();
    eventually("the token form", Duration::from_secs(10), || {
        let browser = browser.clone();
        async move { shown(&browser, "login").await.then_some(()) }
    })
    .await;
    assert!(
        !shown(&browser, "main").await,
        "the panels hide behind the token form"
    );
    let conn = browser.find(Locator::Id("conn")).await.unwrap();
    assert_eq!(
        conn.attr("data-state").await.unwrap().as_deref(),
        Some("connecting"),
        "no live feed without a token"
    );
    let rows = browser
        .find_all(Locator::Css("#services tbody tr"))
        .await
        .unwrap();
    assert!(rows.is_empty(), "no service loaded without a token");
    let stats = browser
        .find_all(Locator::Css("#job-stats dt"))
        .await
        .unwrap();
    assert!(stats.is_empty(), "no job stats loaded without a token");

    // A wrong token: the feed refuses it, the APIs answer 401 and the page asks again.
    enter_token(&browser, "not-a-token").await;
    let refused = Locator::Css("#conn[data-state='disconnected']");
    eventually(
        "the feed refusing the wrong token",
        Duration::from_secs(10),
        || {
            let browser = browser.clone();
            async move { browser.find(refused).await.ok() }
        },
    )
    .await;
    eventually(
        "the token form again after a refused token",
        Duration::from_secs(15),
        || {
            let browser = browser.clone();
            async move { shown(&browser, "login").await.then_some(()) }
        },
    )
    .await;
    let error = browser.find(Locator::Id("login-error")).await.unwrap();
    let said = error.text().await.unwrap();
    assert!(said.contains("refused"), "{said}");

    // The admin token: the feed goes live and the panels show.
    enter_token(&browser, &admin).await;
    let live = Locator::Css("#conn[data-state='live']");
    eventually("the live feed", Duration::from_secs(20), || {
        let browser = browser.clone();
        async move { browser.find(live).await.ok() }
    })
    .await;
    assert!(shown(&browser, "main").await && !shown(&browser, "login").await);

    // A service registers with a token of its own: its row appears without a reload.
    let service = FakeService::start().await;
    let own = issuer
        .mint("uppf-service", Grants::of([Scope::RegistryWrite]), hour)
        .unwrap();
    let http = reqwest::Client::new();
    let body = json!({"name": "uppf-service", "version": "3.2.1", "host": "127.0.0.1",
                      "port": service.port, "tags": ["uppf", "claims"]});
    let res = http
        .post(format!("{base}/registry/register"))
        .bearer_auth(&own)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let text = service_row(&browser, "uppf-service").await;
    assert!(
        text.contains("3.2.1") && text.contains("uppf, claims"),
        "{text}"
    );

    // A job waits on the jobs server (no worker takes its type): the page, served from
    // the registry's port, reads the jobs server's stats across origins with its token.
    let res = http
        .post(format!("{jobs}/jobs"))
        .bearer_auth(&admin)
        .json(&json!({"type": "report-generation", "data": {"month": "2026-03"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let waiting =
        Locator::XPath("//dl[@id='job-stats']/dt[text()='waiting']/following-sibling::dd[1]");
    eventually(
        "one waiting job in the jobs panel",
        Duration::from_secs(30),
        || {
            let browser = browser.clone();
            async move {
                let count = browser.find(waiting).await.ok()?.text().await.ok()?;
                (count == "1").then_some(())
            }
        },
    )
    .await;

    // Nothing takes that type: the panel says so, in the same refresh.
    let warning = browser.find(Locator::Id("job-unattended")).await.unwrap();
    let said = warning.text().await.unwrap();
    assert!(said.contains("report-generation"), "{said}");

    let png = browser.screenshot().await.unwrap();
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-auth.png");
    std::fs::write(&out, &png).unwrap();

    browser.close().await.unwrap();
    app.shutdown().await;
}

/// The text of `service`'s row once it shows on the page.
async fn service_row(browser: &fantoccini::Client, service: &str) -> String {
    let css = format!("tr[data-service='{service}']");
    eventually(
        "the service row on the page",
        Duration::from_secs(30),
        || {
            let (browser, css) = (browser.clone(), css.clone());
            async move {
                browser
                    .find(Locator::Css(&css))
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()
            }
        },
    )
    .await
}
