//! The job-lease API end to end: a worker speaking only HTTP takes jobs, reports progress,
//! extends and completes them; a lease that runs out goes to another worker and the first
//! one's late completion is 409; a waiting lease request answers as soon as a job comes;
//! typed workers get only their types, whatever waits ahead.

use omc_orchestra::jobs::NewJob;
use omc_orchestra_server::app::{App, Config, ServerKind};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

struct Jobs {
    app: App,
    http: reqwest::Client,
    base: String,
}

impl Jobs {
    async fn start() -> Self {
        let app = App::start(Config::ephemeral(), &[ServerKind::Jobs])
            .await
            .unwrap();
        let base = app.url(ServerKind::Jobs);
        // A bound that only keeps a regression from hanging the suite.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        Self { app, http, base }
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let res = self.http.post(format!("{}{path}", self.base)).json(&body);
        let res = res.send().await.unwrap();
        (res.status(), res.json().await.unwrap_or(Value::Null))
    }

    async fn enqueue(&self, job_type: &str, n: u64) -> String {
        let job = json!({"type": job_type, "data": {"n": n}});
        let (status, body) = self.post("/jobs", job).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    async fn lease(&self, request: Value) -> Vec<Value> {
        let (status, body) = self.post("/jobs/lease", request).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["jobs"].as_array().cloned().unwrap()
    }
}

#[tokio::test]
async fn a_job_is_leased_progressed_extended_and_completed_over_http() {
    let jobs = Jobs::start().await;
    let id = jobs.enqueue("price-calculation", 1).await;
    let leased = jobs
        .lease(json!({"worker": "pricing-7b98", "types": ["price-calculation"], "max": 10}))
        .await;
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0]["job"]["id"], id.as_str());
    assert_eq!(leased[0]["job"]["state"], "active");
    let token = leased[0]["token"].as_str().unwrap();

    let (status, renewed) = jobs
        .post(
            &format!("/jobs/{id}/progress"),
            json!({"token": token, "progress": 50}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    assert_eq!(renewed["cancelRequested"], false);
    let (status, renewed) = jobs
        .post(
            &format!("/jobs/{id}/extend"),
            json!({"token": token, "leaseMs": 120000}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    let until: chrono::DateTime<chrono::Utc> =
        renewed["expiresAt"].as_str().unwrap().parse().unwrap();
    assert!(
        until > chrono::Utc::now() + chrono::Duration::seconds(100),
        "{renewed}"
    );

    let (status, done) = jobs
        .post(
            &format!("/jobs/{id}/complete"),
            json!({"token": token, "result": {"total": 7.45}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["state"], "completed");
    assert_eq!(done["progress"], 50);
    assert_eq!(done["result"]["total"], 7.45);
    let (status, again) = jobs
        .post(&format!("/jobs/{id}/complete"), json!({"token": token}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");

    // A job failed for good is failed at once; the API names a bad field.
    let id = jobs.enqueue("uppf-processing", 2).await;
    let leased = jobs
        .lease(json!({"worker": "uppf-1", "types": ["uppf-processing"]}))
        .await;
    let token = leased[0]["token"].as_str().unwrap();
    let (status, failed) = jobs
        .post(
            &format!("/jobs/{id}/fail"),
            json!({"token": token, "error": "claim rejected", "retry": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{failed}");
    assert_eq!(
        (&failed["state"], &failed["attempts"]),
        (&json!("failed"), &json!(1))
    );
    let (status, refused) = jobs
        .post("/jobs/lease", json!({"worker": "w", "max": 0}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(refused["details"][0]["field"], "max", "{refused}");
    jobs.app.shutdown().await;
}

#[tokio::test]
async fn a_lapsed_lease_goes_to_another_worker_and_the_late_completion_is_409() {
    let jobs = Jobs::start().await;
    let id = jobs.enqueue("reconciliation", 1).await;
    let first = jobs.lease(json!({"worker": "slow", "leaseMs": 1000})).await;
    let late_token = first[0]["token"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let second = jobs
        .lease(json!({"worker": "quick", "leaseMs": 30000}))
        .await;
    assert_eq!(second.len(), 1, "the lapsed job goes to the next worker");
    assert_eq!(second[0]["job"]["id"], id.as_str());
    assert_eq!(second[0]["job"]["attempts"], 2);
    let (status, refused) = jobs
        .post(
            &format!("/jobs/{id}/complete"),
            json!({"token": late_token}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    let token = second[0]["token"].as_str().unwrap();
    let (status, done) = jobs
        .post(
            &format!("/jobs/{id}/complete"),
            json!({"token": token, "result": "ok"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["worker"], "quick");
    jobs.app.shutdown().await;
}

#[tokio::test]
async fn a_waiting_lease_request_answers_as_soon_as_a_job_comes() {
    let jobs = Jobs::start().await;
    // Waits up to 30 s; the client gives up after 20 s, so only an early answer passes.
    let waiting = {
        let request = jobs
            .http
            .post(format!("{}/jobs/lease", jobs.base))
            .json(&json!({"worker": "w", "types": ["report-generation"], "waitMs": 30000}));
        tokio::spawn(async move { request.send().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "answered before any job came");
    let id = jobs.enqueue("report-generation", 1).await;
    let answer = waiting.await.unwrap().expect("answered once the job came");
    assert_eq!(answer.status(), StatusCode::OK);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["jobs"][0]["job"]["id"], id.as_str(), "{body}");
    jobs.app.shutdown().await;
}

#[tokio::test]
async fn typed_workers_get_their_types_whatever_waits_ahead() {
    let jobs = Jobs::start().await;
    let queue = jobs.app.backends().jobs.clone();
    for n in 0..5_000 {
        let job = NewJob::new("inventory-sync", json!({ "n": n }));
        queue.enqueue(job).await.unwrap();
    }
    let backup = jobs.enqueue("backup", 1).await;
    let taken = jobs
        .lease(json!({"worker": "backups", "types": ["backup"], "max": 10}))
        .await;
    assert_eq!(taken.len(), 1, "only its own type");
    assert_eq!(taken[0]["job"]["id"], backup.as_str());
    let synced = jobs
        .lease(json!({"worker": "sync", "types": ["inventory-sync"], "max": 10}))
        .await;
    assert_eq!(synced.len(), 10);
    assert!(synced.iter().all(|l| l["job"]["type"] == "inventory-sync"));

    let res = jobs
        .http
        .get(format!("{}/jobs/workers", jobs.base))
        .send()
        .await
        .unwrap();
    let workers: Value = res.json().await.unwrap();
    let sync = workers
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["worker"] == "sync")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(sync["types"], json!(["inventory-sync"]), "{workers}");
    assert_eq!(sync["inFlight"], 10, "{workers}");
    jobs.app.shutdown().await;
}

#[tokio::test]
async fn a_node_worker_with_fetch_alone_runs_jobs() {
    let jobs = Jobs::start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/node/worker.mjs");
    let mut node = tokio::process::Command::new("node")
        .arg(script)
        .env("JOB_SCHEDULER_URL", &jobs.base)
        .kill_on_drop(true)
        .spawn()
        .expect("node (Node.js 18 or newer; `scripts/test` installs it)");
    let mut ids = Vec::new();
    for n in 0..5 {
        let job = json!({"type": "price-calculation", "data": {"stationId": format!("STN00{n}")}});
        let (status, body) = jobs.post("/jobs", job).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let url = format!("{}/jobs/{id}", jobs.base);
        let done = omc_orchestra::testkit::eventually(
            "the node worker completed the job",
            Duration::from_secs(20),
            || async {
                let job: Value = jobs.http.get(&url).send().await.ok()?.json().await.ok()?;
                (job["state"] == "completed").then_some(job)
            },
        )
        .await;
        assert_eq!(done["result"]["total"], 7.45, "{done}");
        assert!(done["worker"]
            .as_str()
            .unwrap()
            .starts_with("pricing-node-"));
    }
    node.kill().await.unwrap();
    jobs.app.shutdown().await;
}
