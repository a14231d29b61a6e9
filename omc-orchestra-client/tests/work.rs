//! The SDK's events, jobs and logs helpers against the real servers.

use omc_orchestra::testkit::eventually;
use omc_orchestra_client::OrchestraClient;
use omc_orchestra_server::app::{App, Config, ServerKind};
use serde_json::{json, Value};
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;

fn client_for(app: &App) -> OrchestraClient {
    OrchestraClient::new(app.url(ServerKind::Registry))
        .with_jobs_url(app.url(ServerKind::Jobs))
        .with_logging_url(app.url(ServerKind::Logging))
        .with_service_name("pricing-service")
}

#[tokio::test]
async fn publish_enqueue_and_log_in_one_line_each() {
    let app = App::start(Config::ephemeral(), &ServerKind::ALL)
        .await
        .unwrap();
    let client = client_for(&app);
    let http = reqwest::Client::new();

    let event = client
        .emit(
            "PRICE_UPDATED",
            "pricing-service",
            json!({"stationId": "STN001", "newPrice": 7.45}),
        )
        .await
        .unwrap();
    let history: Vec<Value> = http
        .get(format!(
            "{}/events?type=PRICE_UPDATED",
            app.url(ServerKind::Registry)
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        history.iter().any(|e| e["id"] == event.id.as_str()),
        "{history:?}"
    );

    let job = client
        .enqueue(omc_orchestra::jobs::NewJob::new(
            "price-calculation",
            json!({"stationId": "STN001"}),
        ))
        .await
        .unwrap();
    assert_eq!(client.job(&job.id).await.unwrap().id, job.id);

    let logger = client.logger("pricing-service");
    logger
        .info(
            "Price calculation completed",
            json!({"stationId": "STN001", "calculationTime": 150}),
        )
        .await
        .unwrap();
    let found: Value = http
        .get(format!(
            "{}/logs?service=pricing-service&text=calculation",
            app.url(ServerKind::Logging)
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        found.to_string().contains("Price calculation completed"),
        "{found}"
    );

    let bad = client.emit("", "pricing-service", json!(null)).await;
    assert!(bad.is_err());
    app.shutdown().await;
}

#[tokio::test]
async fn the_tracing_layer_ships_a_services_own_events() {
    let app = App::start(Config::ephemeral(), &ServerKind::ALL)
        .await
        .unwrap();
    let client = client_for(&app);
    let (layer, stats) = client.tracing_layer("inventory-service");
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        tracing::error!(
            station = "STN002",
            litres = 1200,
            "tank level sensor offline"
        );
        tracing::info!("stock sync finished");
    });
    let url = format!(
        "{}/logs?service=inventory-service&level=error",
        app.url(ServerKind::Logging)
    );
    let http = reqwest::Client::new();
    let found = eventually("the shipped error record", Duration::from_secs(20), || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let body: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
            body.to_string()
                .contains("tank level sensor offline")
                .then_some(body)
        }
    })
    .await;
    let text = found.to_string();
    assert!(
        text.contains("STN002") && !text.contains("stock sync finished"),
        "{text}"
    );
    assert_eq!(stats.dropped(), 0);
    assert!(stats.sent() >= 2);
    app.shutdown().await;
}

const SECRET: &str = "worker-refusal-test-secret-of-40-bytes!!";

#[tokio::test]
async fn a_refused_worker_stops_and_a_signed_one_runs() {
    let config = Config::ephemeral().with_service_secret(SECRET).unwrap();
    let app = App::start(config, &ServerKind::ALL).await.unwrap();
    // No token: every lease request is 401, which asking again cannot fix.
    let orc = omc_orchestra_client::Orchestra::with_client("pricing-service", client_for(&app));
    let refused = orc
        .worker()
        .handle("price-calculation", |_job| async { Ok(json!(null)) })
        .run()
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(401), "{refused}");

    // With the secret the SDK signs its own service tokens, and the same worker runs.
    let client = client_for(&app).with_jwt_secret(SECRET);
    let orc = omc_orchestra_client::Orchestra::with_client("pricing-service", client);
    let job = orc.enqueue("price-calculation", json!({})).await.unwrap();
    let worker = orc
        .worker()
        .handle("price-calculation", |_job| async { Ok(json!("priced")) })
        .spawn();
    let done = eventually(
        "the signed worker's result",
        Duration::from_secs(20),
        || {
            let orc = orc.clone();
            let id = job.id.clone();
            async move { orc.client().job(&id).await.ok()?.result }
        },
    )
    .await;
    assert_eq!(done, json!("priced"));
    orc.shutdown().await.unwrap();
    worker.await.unwrap().unwrap();
    app.shutdown().await;
}
