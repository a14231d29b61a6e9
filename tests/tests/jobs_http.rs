//! The jobs server end to end: a job type mapped to a small HTTP service registered in the
//! registry is POSTed to it and completes; failures, validation, stats, retry-failed,
//! cancellation and schedules over HTTP.

use axum::routing::post;
use axum::{Json, Router};
use omc_orchestra::testkit::eventually;
use omc_orchestra_server::app::{App, Config, ServerKind};
use omc_orchestra_server::jobs_dispatch::JobRoute;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A report service: `/run` records the job and answers 200, `/broken` answers 500.
async fn report_service(received: Arc<Mutex<Vec<Value>>>) -> u16 {
    let app = Router::new()
        .route(
            "/run",
            post(move |Json(job): Json<Value>| {
                let received = received.clone();
                async move {
                    received.lock().unwrap().push(job);
                    Json(json!({"rendered": true}))
                }
            }),
        )
        .route(
            "/broken",
            post(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "disk full") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

async fn job_state(http: &reqwest::Client, url: &str, want: &str) -> Value {
    eventually(
        &format!("job {url} {want}"),
        Duration::from_secs(15),
        || async {
            let job: Value = http.get(url).send().await.ok()?.json().await.ok()?;
            (job["state"] == want).then_some(job)
        },
    )
    .await
}

#[tokio::test]
async fn jobs_mapped_to_a_registered_service_run_over_http() {
    let received = Arc::new(Mutex::new(Vec::new()));
    let port = report_service(received.clone()).await;
    let mut config = Config::ephemeral();
    let route = |path: &str| JobRoute {
        service: "report-service".into(),
        path: path.into(),
    };
    config
        .job_routes
        .insert("report-generation".into(), route("/run"));
    config
        .job_routes
        .insert("database-backup".into(), route("/broken"));
    let app = App::start(config, &[ServerKind::Registry, ServerKind::Jobs])
        .await
        .unwrap();
    let (registry, jobs) = (app.url(ServerKind::Registry), app.url(ServerKind::Jobs));
    let http = reqwest::Client::new();
    let registration = json!({"name": "report-service", "host": "127.0.0.1", "port": port});
    let answer = http
        .post(format!("{registry}/registry/register"))
        .json(&registration)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);

    let answer = http
        .post(format!("{jobs}/jobs"))
        .json(
            &json!({"type": "report-generation", "data": {"month": "2026-03"}, "priority": "high"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    let id = answer.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = job_state(&http, &format!("{jobs}/jobs/{id}"), "completed").await;
    assert_eq!(done["result"], json!({"rendered": true}));
    let seen = received.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0]["id"].as_str(), &seen[0]["data"]["month"]),
        (Some(id.as_str()), &json!("2026-03"))
    );

    let answer = http
        .post(format!("{jobs}/jobs"))
        .json(&json!({"type": "database-backup", "maxAttempts": 1}))
        .send()
        .await
        .unwrap();
    let id = answer.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let failed = job_state(&http, &format!("{jobs}/jobs/{id}"), "failed").await;
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("500") && error.contains("disk full"),
        "{error}"
    );

    for (body, field) in [
        (json!({"type": ""}), "type"),
        (
            json!({"type": "report-generation", "priority": "urgent"}),
            "priority",
        ),
        (
            json!({"type": "report-generation", "maxAttempts": 0}),
            "maxAttempts",
        ),
        (json!({"data": {}}), "type"),
    ] {
        let answer = http
            .post(format!("{jobs}/jobs"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400, "{body}");
        let error: Value = answer.json().await.unwrap();
        assert_eq!(error["details"][0]["field"], field, "{error}");
    }

    let stats: Value = http
        .get(format!("{jobs}/jobs/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (stats["completed"].as_u64(), stats["failed"].as_u64()),
        (Some(1), Some(1)),
        "{stats}"
    );
    let page: Value = http
        .get(format!(
            "{jobs}/jobs?state=completed&type=report-generation&limit=10"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["jobs"].as_array().map(Vec::len), Some(1));
    let bad = http
        .get(format!("{jobs}/jobs?state=bogus"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let retried: Value = http
        .post(format!("{jobs}/jobs/retry-failed"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(retried["retried"], 1);

    let answer = http
        .post(format!("{jobs}/jobs"))
        .json(&json!({"type": "inventory-sync", "delayMs": 60000}))
        .send()
        .await
        .unwrap();
    let id = answer.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cancelled: Value = http
        .delete(format!("{jobs}/jobs/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cancelled["state"], "cancelled");
    assert_eq!(
        http.get(format!("{jobs}/jobs/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let schedule = json!({"id": "nightly-report", "cron": "* * * * * *", "job": {"type": "report-generation"}});
    let answer = http
        .post(format!("{jobs}/schedules"))
        .json(&schedule)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    let bad = json!({"cron": "sometimes", "job": {"type": "report-generation"}});
    let answer = http
        .post(format!("{jobs}/schedules"))
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    eventually("a cron job ran", Duration::from_secs(15), || async {
        let seen = received.lock().unwrap().clone();
        seen.iter()
            .any(|j| {
                j["id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("nightly-report@"))
            })
            .then_some(())
    })
    .await;
    let listed: Value = http
        .get(format!("{jobs}/schedules"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed[0]["id"], "nightly-report");
    let url = format!("{jobs}/schedules/nightly-report");
    assert_eq!(http.delete(&url).send().await.unwrap().status(), 200);
    assert_eq!(http.delete(&url).send().await.unwrap().status(), 404);
    let doc: Value = http
        .get(format!("{jobs}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/jobs/{id}"].is_object());
    let schemas = &doc["components"]["schemas"];
    assert!(
        schemas["Job"]["properties"]["failedAttempts"].is_object()
            && schemas["FailedAttempt"]["properties"]["failedAt"].is_object(),
        "{schemas}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn the_jobs_api_works_on_redis_backends() {
    let store = omc_orchestra::testkit::redis::store().await;
    let mut config = Config::ephemeral();
    config.redis_url = Some(omc_orchestra::testkit::redis::url().await);
    config.redis_prefix = store.prefix().to_owned();
    let app = App::start(config, &[ServerKind::Jobs]).await.unwrap();
    let jobs = app.url(ServerKind::Jobs);
    let http = reqwest::Client::new();
    let body = json!({"type": "uppf-processing", "data": {"claim": 7}, "uniqueKey": "claim-7"});
    let first: Value = http
        .post(format!("{jobs}/jobs"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let again: Value = http
        .post(format!("{jobs}/jobs"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["id"], again["id"]);
    let id = first["id"].as_str().unwrap();
    let job: Value = http
        .get(format!("{jobs}/jobs/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (job["state"].as_str(), &job["data"]),
        (Some("waiting"), &json!({"claim": 7}))
    );
    let stats: Value = http
        .get(format!("{jobs}/jobs/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["waitingByPriority"]["normal"], 1);
    app.shutdown().await;
    store.delete_prefix().await.unwrap();
}

#[tokio::test]
async fn one_failed_job_is_retried_by_id_and_any_other_is_refused() {
    let app = App::start(Config::ephemeral(), &[ServerKind::Jobs])
        .await
        .unwrap();
    let jobs = app.url(ServerKind::Jobs);
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| http.post(format!("{jobs}{path}")).json(&body).send();
    let job: Value = post("/jobs", json!({"type": "uppf-claim", "maxAttempts": 1}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    let waiting = post(&format!("/jobs/{id}/retry"), json!({})).await.unwrap();
    assert_eq!(waiting.status(), 409, "a waiting job is not failed");
    let leased: Value = post(
        "/jobs/lease",
        json!({"worker": "w", "types": ["uppf-claim"]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let token = leased["jobs"][0]["token"].as_str().unwrap().to_owned();
    let failed = post(
        &format!("/jobs/{id}/fail"),
        json!({"token": token, "error": "claim portal down"}),
    )
    .await
    .unwrap();
    assert_eq!(failed.status(), 200);
    let retried = post(&format!("/jobs/{id}/retry"), json!({})).await.unwrap();
    assert_eq!(retried.status(), 200);
    let retried: Value = retried.json().await.unwrap();
    assert_eq!(
        (retried["state"].as_str(), retried["attempts"].as_u64()),
        (Some("waiting"), Some(0))
    );
    let missing = post("/jobs/no-such-job/retry", json!({})).await.unwrap();
    assert_eq!(missing.status(), 404);
    app.shutdown().await;
}
