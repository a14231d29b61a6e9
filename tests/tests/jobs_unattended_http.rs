//! `GET /jobs/stats` names the job types that have waiting jobs and no worker: a queue
//! that nothing will ever run says so instead of growing in silence.

use omc_orchestra_server::app::{App, Config, ServerKind};
use omc_orchestra_server::jobs_dispatch::JobRoute;
use serde_json::{json, Value};
use tests::get_json;

async fn post(http: &reqwest::Client, url: String, body: Value) -> Value {
    let res = http.post(url).json(&body).send().await.unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    res.json().await.unwrap()
}

async fn unattended(jobs: &str) -> Value {
    let stats = get_json(&format!("{jobs}/jobs/stats")).await;
    assert!(stats["waiting"].is_u64(), "the figures stay flat: {stats}");
    stats["unattended"].clone()
}

#[tokio::test]
async fn stats_flag_waiting_types_that_no_worker_takes() {
    let mut config = Config::ephemeral();
    // The server runs this type itself, so it never counts as unattended.
    config.job_routes.insert(
        "report-generation".into(),
        JobRoute {
            service: "report-service".into(),
            path: "/jobs/run".into(),
        },
    );
    let app = App::start(config, &[ServerKind::Jobs]).await.unwrap();
    let jobs = app.url(ServerKind::Jobs);
    let http = reqwest::Client::new();
    assert_eq!(unattended(&jobs).await, json!([]), "nothing waits");

    for job_type in [
        "uppf-processing",
        "uppf-processing",
        "uppf-processing",
        "price-calculation",
        "price-calculation",
        "report-generation",
    ] {
        let job = json!({"type": job_type, "data": {}});
        post(&http, format!("{jobs}/jobs"), job).await;
    }
    assert_eq!(
        unattended(&jobs).await,
        json!([{"type": "uppf-processing", "waiting": 3},
               {"type": "price-calculation", "waiting": 2}])
    );

    // A pricing worker asks for its type: that type is attended from now on, even with
    // a job of it still waiting.
    let lease = json!({"worker": "pricing-1", "types": ["price-calculation"]});
    let leased = post(&http, format!("{jobs}/jobs/lease"), lease).await;
    assert_eq!(leased["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(
        unattended(&jobs).await,
        json!([{"type": "uppf-processing", "waiting": 3}])
    );

    // A worker that takes any type attends to them all.
    let lease = json!({"worker": "generalist", "max": 1});
    post(&http, format!("{jobs}/jobs/lease"), lease).await;
    assert_eq!(unattended(&jobs).await, json!([]));

    // The field is in the OpenAPI document, for generated clients.
    let doc = get_json(&format!("{jobs}/openapi.json")).await;
    let answer = &doc["components"]["schemas"]["StatsAnswer"];
    assert!(
        answer.to_string().contains("unattended"),
        "{answer} in {}",
        doc["paths"]["/jobs/stats"]
    );
    let unattended_type = &doc["components"]["schemas"]["UnattendedType"]["properties"];
    assert!(unattended_type["type"].is_object() && unattended_type["waiting"].is_object());
    app.shutdown().await;
}
