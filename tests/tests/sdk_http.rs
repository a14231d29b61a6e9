//! The SDK's one-liners against the real servers (`orchestra up` in-process): every line
//! of the crate overview, and the SDK worker taking jobs over the lease API.

use omc_orchestra::testkit::eventually;
use omc_orchestra_client::{
    json, EventPriority, Job, JobResult, JobState, NewJob, Orchestra, OrchestraClient, Value,
};
use omc_orchestra_server::app::{App, Config, ServerKind};
use std::time::Duration;
use tests::{get_json, FakeService};
use tracing_subscriber::layer::SubscriberExt;

/// The job once it has reached `state`.
async fn job_in(orc: &Orchestra, id: &str, state: JobState) -> Job {
    eventually("the job's end", Duration::from_secs(30), || async {
        let job = orc.client().job(id).await.ok()?;
        (job.state == state).then_some(job)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sdk_line_and_the_worker_run_against_the_real_servers() {
    let app = App::start(Config::ephemeral(), &ServerKind::ALL)
        .await
        .unwrap();
    let (registry, logging) = (app.url(ServerKind::Registry), app.url(ServerKind::Logging));
    let client = OrchestraClient::new(&registry)
        .with_jobs_url(app.url(ServerKind::Jobs))
        .with_logging_url(&logging);
    let orc = Orchestra::with_client("pricing-service", client).with_host("127.0.0.1");
    let service = FakeService::start().await;

    // Registered, and discoverable by others.
    let me = orc.register(service.port).await.unwrap();
    let found = orc.discover("pricing-service").await.unwrap().unwrap();
    assert_eq!(
        (found.id.as_str(), found.port),
        (me.id().as_str(), service.port)
    );
    assert_eq!(found.health_endpoint, "/health");
    assert_eq!(orc.discover("inventory-service").await.unwrap(), None);

    // Both events are in the history, from this service, the second with its options.
    let plain = orc
        .emit("PRICE_UPDATED", json!({"stationId": "STN001"}))
        .await
        .unwrap();
    let urgent = orc
        .event(
            "PRICE_UPDATED",
            json!({"stationId": "STN002", "newPrice": 7.45}),
        )
        .priority(EventPriority::High)
        .tags(["pricing"])
        .send()
        .await
        .unwrap();
    let history = get_json(&format!("{registry}/events?type=PRICE_UPDATED")).await;
    let by_id = |id: &str| {
        history
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(by_id(&plain.id)["source"], "pricing-service", "{history}");
    let urgent = by_id(&urgent.id);
    assert_eq!(urgent["priority"], "high", "{urgent}");
    assert_eq!(urgent["tags"], json!(["pricing"]), "{urgent}");

    // The log record is searchable at once.
    orc.log()
        .info(
            "Price calculation completed",
            json!({"calculationTime": 150}),
        )
        .await
        .unwrap();
    let found = get_json(&format!(
        "{logging}/logs?service=pricing-service&text=calculation"
    ))
    .await;
    assert!(
        found.to_string().contains("\"calculationTime\":150"),
        "{found}"
    );

    // Jobs queued before the worker starts: one that completes, one whose handler
    // panics, and one that outlives its lease and is still running at shutdown.
    let priced = orc
        .enqueue("price-calculation", json!({"stationId": "STN001"}))
        .await
        .unwrap();
    let once = NewJob {
        max_attempts: Some(1),
        ..NewJob::new("uppf-processing", json!({"claim": 7}))
    };
    let panicking = orc.client().enqueue(once).await.unwrap();
    let slow = orc.enqueue("inventory-sync", json!({})).await.unwrap();
    let endless = orc.enqueue("report-generation", json!({})).await.unwrap();
    let worker = orc
        .worker()
        .concurrency(4)
        .lease(Duration::from_secs(1))
        .handle("price-calculation", |job| async move {
            Ok(json!({"total": 7.45, "stationId": job.data["stationId"]}))
        })
        .handle("uppf-processing", |_job| async move {
            panic!("claim file missing")
        })
        .handle("report-generation", |_job| {
            std::future::pending::<JobResult>()
        })
        .handle("inventory-sync", |_job| async move {
            tokio::time::sleep(Duration::from_millis(2_500)).await;
            Ok(json!("synced"))
        });
    let name = worker.name().to_owned();
    let running = worker.spawn();

    let done = job_in(&orc, &priced.id, JobState::Completed).await;
    assert_eq!(
        done.result,
        Some(json!({"total": 7.45, "stationId": "STN001"}))
    );
    assert_eq!(done.worker.as_deref(), Some(name.as_str()));
    let failed = job_in(&orc, &panicking.id, JobState::Failed).await;
    let error = failed.error.unwrap_or_default();
    assert!(
        error.contains("handler panicked: claim file missing"),
        "{error}"
    );
    job_in(&orc, &slow.id, JobState::Active).await;

    // Cancelled while it runs: the worker learns it at the next extension, stops the
    // handler and fails the job for good.
    job_in(&orc, &endless.id, JobState::Active).await;
    let url = format!("{}/jobs/{}", app.url(ServerKind::Jobs), endless.id);
    let cancelled = reqwest::Client::new().delete(url).send().await.unwrap();
    assert_eq!(cancelled.status(), 200);
    let endless = job_in(&orc, &endless.id, JobState::Failed).await;
    assert_eq!(endless.error.as_deref(), Some("cancelled"));

    // Deregistered: gone from the registry.
    me.deregister().await.unwrap();
    assert_eq!(orc.discover("pricing-service").await.unwrap(), None);

    // A second registration, a tracing layer and the running slow job: shutdown waits for
    // the job (its lease extended past its 1 s), deregisters, and flushes the layer.
    let again = orc.register(service.port).await.unwrap();
    let (layer, shipped) = orc.tracing_layer();
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        tracing::warn!(station = "STN003", "pump 2 meter drift");
    });
    orc.shutdown().await.unwrap();
    let slow = orc.client().job(&slow.id).await.unwrap();
    assert_eq!(slow.state, JobState::Completed, "{slow:?}");
    assert_eq!((slow.attempts, slow.result), (1, Some(json!("synced"))));
    running.await.unwrap().unwrap();
    let listed = get_json(&format!(
        "{registry}/registry/services?name=pricing-service"
    ))
    .await;
    assert_eq!(listed, json!([]), "{} still listed", again.id());
    assert_eq!(shipped.sent(), 1);
    let found = get_json(&format!(
        "{logging}/logs?service=pricing-service&text=drift"
    ))
    .await;
    assert!(found.to_string().contains("STN003"), "{found}");
    drop(again);
    app.shutdown().await;
}
