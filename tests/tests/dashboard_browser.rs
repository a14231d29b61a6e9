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
    click(
        browser,
        "the token form's button",
        "#login-form button[type='submit']",
    )
    .await;
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
    text_of(browser, "the service row on the page", &css).await
}

/// A service answering `POST /run` 200: what a job route dispatches to.
async fn job_runner() -> u16 {
    let app = axum::Router::new().route(
        "/run",
        axum::routing::post(|| async { axum::Json(json!({"backedUp": true})) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// The text of the element `css` once it shows: WebDriver reads a hidden element's text
/// as empty, so an element the page fills in later (`#job-detail`) is waited for.
async fn text_of(browser: &Client, what: &str, css: &str) -> String {
    eventually(what, Duration::from_secs(30), || {
        let (browser, css) = (browser.clone(), css.to_owned());
        async move {
            let text = browser
                .find(Locator::Css(&css))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (!text.is_empty()).then_some(text)
        }
    })
    .await
}

/// Click the element `css` once it shows; found again if the page redrew it meanwhile.
async fn click(browser: &Client, what: &str, css: &str) {
    eventually(what, Duration::from_secs(30), || {
        let (browser, css) = (browser.clone(), css.to_owned());
        async move {
            let element = browser.find(Locator::Css(&css)).await.ok()?;
            element.click().await.ok()
        }
    })
    .await;
}

/// Seconds in a heartbeat age the page shows (`"7 s ago"`); minutes and hours as many.
fn age_seconds(text: &str) -> Option<u64> {
    let mut words = text.split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    match words.next()? {
        "s" => Some(n),
        "min" => Some(n * 60),
        "h" => Some(n * 3600),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_figures_are_true_and_come_through_one_port() {
    let mut config = Config::ephemeral();
    config.job_routes.insert(
        "database-backup".into(),
        omc_orchestra_server::jobs_dispatch::JobRoute {
            service: "backup-service".into(),
            path: "/run".into(),
        },
    );
    let app = App::start(config, &ServerKind::ALL).await.unwrap();
    let base = app.url(ServerKind::Registry);
    let (gateway, jobs, logs) = (
        app.url(ServerKind::Gateway),
        app.url(ServerKind::Jobs),
        app.url(ServerKind::Logging),
    );
    let http = reqwest::Client::new();
    let register = |name: &'static str, port: u16| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let answer = http
                .post(format!("{base}/registry/register"))
                .json(&json!({"name": name, "host": "127.0.0.1", "port": port}))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 201);
            answer.json::<serde_json::Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let pricing = FakeService::start().await;
    register("pricing-service", pricing.port).await;

    // A steady stream of proxied requests, about 20 a second.
    let stream = {
        let (http, gateway) = (http.clone(), gateway.clone());
        tokio::spawn(async move {
            loop {
                let _ = http
                    .get(format!("{gateway}/api/pricing-service/health"))
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let driver = ChromeDriver::start();
    let browser = driver.browser().await;
    browser.goto(&format!("{base}/dashboard")).await.unwrap();

    // The gateway panel counts the proxied requests, per route and service.
    let rate = eventually(
        "the proxied rate on the page",
        Duration::from_secs(40),
        || {
            let browser = browser.clone();
            async move {
                let text = browser
                    .find(Locator::Id("gw-rps"))
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                let rate: f64 = text.parse().ok()?;
                (rate >= 5.0).then_some(rate)
            }
        },
    )
    .await;
    assert!(
        rate < 40.0,
        "about 20 proxied requests a second, shown {rate}"
    );
    let row = text_of(
        &browser,
        "the route's row",
        "#gw-routes tr[data-service='pricing-service'] td.rps",
    )
    .await;
    assert!(row.parse::<f64>().unwrap_or(0.0) >= 5.0, "{row}");

    // A log line posted once shows once, with its date.
    let message = format!("tank 9 calibrated {}", uuid::Uuid::new_v4().simple());
    let answer = http
        .post(format!("{logs}/logs"))
        .json(&json!({"level": "info", "service": "inventory-service", "message": message}))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());
    eventually("the log line on the page", Duration::from_secs(30), || {
        let (browser, message) = (browser.clone(), message.clone());
        async move {
            let text = browser
                .find(Locator::Id("logs"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            text.contains(&message).then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let shown_logs = browser
        .find(Locator::Id("logs"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(shown_logs.matches(&message).count(), 1, "{shown_logs}");
    let line = shown_logs.lines().find(|l| l.contains(&message)).unwrap();
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert!(line.starts_with(&today), "a full timestamp: {line}");

    // A heartbeat age grows, and resets after a heartbeat.
    let inventory = FakeService::start().await;
    let id = register("inventory-service", inventory.port).await;
    let cell = format!("tr[data-id='{id}'] td.heartbeat");
    eventually("an age of 7 s or more", Duration::from_secs(30), || {
        let (browser, cell) = (browser.clone(), cell.clone());
        async move {
            let text = browser
                .find(Locator::Css(&cell))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (age_seconds(&text)? >= 7).then_some(())
        }
    })
    .await;
    let beat = http
        .put(format!("{base}/registry/heartbeat/{id}"))
        .send()
        .await
        .unwrap();
    assert!(beat.status().is_success());
    eventually("the age reset", Duration::from_secs(15), || {
        let (browser, cell) = (browser.clone(), cell.clone());
        async move {
            let text = browser
                .find(Locator::Css(&cell))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (age_seconds(&text)? < 7).then_some(())
        }
    })
    .await;
    let summary = browser
        .find(Locator::Id("summary"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(summary.starts_with("2 services"), "{summary}");

    // Services are grouped by name; an instance opens to its health and dependencies.
    let group = text_of(
        &browser,
        "the pricing-service group",
        "tr.group[data-group='pricing-service']",
    )
    .await;
    assert!(group.contains("1 instance"), "{group}");
    click(
        &browser,
        "the instance's row",
        "tr[data-service='pricing-service'][data-id]",
    )
    .await;
    let detail = text_of(&browser, "the instance's detail", "#svc-detail").await;
    assert!(
        detail.contains("dependencies") && detail.contains("health"),
        "{detail}"
    );

    // Events stream in, and the type filter narrows them.
    let answer = http
        .post(format!("{base}/events"))
        .json(
            &json!({"type": "PRICE_UPDATED", "source": "pricing-service",
                      "data": {"stationId": "STN001", "newPrice": 7.45}}),
        )
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());
    text_of(
        &browser,
        "the event in the feed",
        "#events li[data-type='PRICE_UPDATED']",
    )
    .await;
    browser
        .find(Locator::Id("ev-type"))
        .await
        .unwrap()
        .send_keys("INVENTORY")
        .await
        .unwrap();
    eventually("the filter hiding it", Duration::from_secs(10), || {
        let browser = browser.clone();
        async move {
            let found = browser
                .find_all(Locator::Css("#events li[data-type='PRICE_UPDATED']"))
                .await
                .ok()?;
            found.is_empty().then_some(())
        }
    })
    .await;

    // A schedule shows its next fire time; a waiting job can be cancelled from the page.
    let answer = http
        .post(format!("{jobs}/schedules"))
        .json(&json!({"id": "nightly-report", "cron": "0 0 2 * * *",
                      "job": {"type": "report-generation"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    let schedule = text_of(
        &browser,
        "the schedule",
        "#job-schedules li[data-schedule='nightly-report']",
    )
    .await;
    assert!(schedule.contains("next 20"), "{schedule}");
    let waiting: serde_json::Value = http
        .post(format!("{jobs}/jobs"))
        .json(&json!({"type": "uppf-processing"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let waiting_id = waiting["id"].as_str().unwrap().to_owned();
    let state = browser.find(Locator::Id("job-state")).await.unwrap();
    state.select_by_value("waiting").await.unwrap();
    let cancel = format!("#job-failures button.job-cancel[data-job='{waiting_id}']");
    text_of(
        &browser,
        "the waiting job",
        &format!("#job-failures li[data-job='{waiting_id}']"),
    )
    .await;
    click(&browser, "the waiting job's cancel button", &cancel).await;
    eventually("the job cancelled", Duration::from_secs(15), || {
        let (http, url) = (http.clone(), format!("{jobs}/jobs/{waiting_id}"));
        async move {
            let job: serde_json::Value = http.get(url).send().await.ok()?.json().await.ok()?;
            (job["state"] != "waiting").then_some(())
        }
    })
    .await;

    // A job fails (nothing runs its service yet); it can be opened and retried from the page.
    let job: serde_json::Value = http
        .post(format!("{jobs}/jobs"))
        .json(&json!({"type": "database-backup", "maxAttempts": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job_id = job["id"].as_str().unwrap().to_owned();
    state.select_by_value("failed").await.unwrap();
    eventually(
        "the failed count of its type",
        Duration::from_secs(30),
        || {
            let browser = browser.clone();
            async move {
                let css = "#job-types tr[data-type='database-backup'] td.failed";
                let text = browser
                    .find(Locator::Css(css))
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                (text == "1").then_some(())
            }
        },
    )
    .await;
    let open = format!("#job-failures li[data-job='{job_id}'] button.job-retry");
    text_of(&browser, "the failed job's retry button", &open).await;
    let open = format!("#job-failures a.job-open[data-job='{job_id}']");
    text_of(&browser, "the failed job on the page", &open).await;
    click(&browser, "the failed job's link", &open).await;
    let detail = text_of(&browser, "the job's detail", "#job-detail").await;
    assert!(
        detail.contains(&job_id) && detail.contains("database-backup"),
        "{detail}"
    );
    let attempt = text_of(
        &browser,
        "the job's failed attempt",
        "#job-attempts li[data-attempt='1']",
    )
    .await;
    assert!(attempt.starts_with("attempt 1"), "{attempt}");
    register("backup-service", job_runner().await).await;
    click(
        &browser,
        "the failed job's retry button",
        &format!("#job-failures button.job-retry[data-job='{job_id}']"),
    )
    .await;
    eventually("the retried job done", Duration::from_secs(30), || {
        let (http, url) = (http.clone(), format!("{jobs}/jobs/{job_id}"));
        async move {
            let job: serde_json::Value = http.get(url).send().await.ok()?.json().await.ok()?;
            (job["state"] == "completed").then_some(())
        }
    })
    .await;

    // Everything the page loaded came from the registry's port.
    let loaded = browser
        .execute(
            "return performance.getEntriesByType('resource').map((e) => e.name);",
            vec![],
        )
        .await
        .unwrap();
    let loaded: Vec<String> = serde_json::from_value(loaded).unwrap();
    assert!(
        loaded.iter().any(|u| u.contains("/dashboard/api/jobs/")),
        "{loaded:?}"
    );
    for url in &loaded {
        assert!(
            url.starts_with(&base),
            "the page called another port: {url}"
        );
    }

    let breaker = text_of(
        &browser,
        "the upstream's breaker",
        "#gw-breakers li[data-breaker]",
    )
    .await;
    assert!(breaker.contains("closed"), "{breaker}");

    browser
        .execute("window.scrollTo(0, 0);", vec![])
        .await
        .unwrap();
    let png = browser.screenshot().await.unwrap();
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-truth.png");
    std::fs::write(&out, &png).unwrap();

    stream.abort();
    browser.close().await.unwrap();
    app.shutdown().await;
}
