//! Alerts to receivers end to end: a real registry server checks real tiny services and
//! sends its alerts to a real Alertmanager (Debian's `prometheus-alertmanager`, started
//! by the test) and to a webhook; a service whose declared database is down pages nobody
//! on its own.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Json;
use omc_orchestra::health::receivers::OutgoingAlert;
use omc_orchestra::health::{Labels, ReceiverOptions, RetryPolicy, WebhookReceiver};
use omc_orchestra::testkit::eventually;
use omc_orchestra_server::app::{App, Config, ServerKind};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tests::{free_port, get_json, serve, Alertmanager, FakeService};
use tokio::sync::Mutex;

const WAIT: Duration = Duration::from_secs(30);

/// A registry server probing every 150 ms and sending alerts quickly.
async fn orchestra(receivers: ReceiverOptions, postgres: Option<String>) -> App {
    let mut config = Config {
        health_interval: Duration::from_millis(150),
        alert_receivers: ReceiverOptions {
            resend_every: Duration::from_secs(1),
            // Long enough for a database failing a round after its dependents, under load.
            group_wait: Duration::from_millis(1500),
            tick: Duration::from_millis(100),
            retry: RetryPolicy {
                attempts: 5,
                first_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(400),
            },
            ..receivers
        },
        ..Config::ephemeral()
    };
    if let Some(url) = postgres {
        config.health_dependencies.insert("postgres".into(), url);
    }
    App::start(config, &[ServerKind::Registry])
        .await
        .expect("the registry server starts")
}

/// Register `name` at `service` with `dependencies`; its instance id.
async fn register(app: &App, name: &str, service: &FakeService, dependencies: &[&str]) -> String {
    let registered: Value = reqwest::Client::new()
        .post(format!(
            "{}/registry/register",
            app.url(ServerKind::Registry)
        ))
        .json(
            &json!({"name": name, "host": "127.0.0.1", "port": service.port,
                      "healthEndpoint": "/health", "ttlSeconds": 3600,
                      "dependencies": dependencies}),
        )
        .send()
        .await
        .expect("the registry answers")
        .json()
        .await
        .expect("JSON");
    registered["id"].as_str().unwrap_or_default().to_owned()
}

/// The Alertmanager alert whose labels include all of `wanted`.
fn find<'a>(alerts: &'a [Value], wanted: &[(&str, &str)]) -> Option<&'a Value> {
    alerts
        .iter()
        .find(|a| wanted.iter().all(|(k, v)| a["labels"][*k] == *v))
}

#[tokio::test]
async fn a_failing_service_alert_reaches_alertmanager_with_its_labels_and_resolves() {
    let alertmanager = Alertmanager::start();
    let receivers = ReceiverOptions {
        alertmanagers: vec![alertmanager.url()],
        ..ReceiverOptions::default()
    };
    let app = orchestra(receivers, None).await;
    let service = FakeService::start().await;
    let id = register(&app, "pricing-service", &service, &[]).await;
    service.set_health(500);
    let wanted = [
        ("alertname", "ServiceUnavailable"),
        ("service", "pricing-service"),
        ("instance", id.as_str()),
    ];
    let alert = eventually("the alert in Alertmanager", WAIT, || async {
        find(&alertmanager.alerts().await, &wanted).cloned()
    })
    .await;
    assert_eq!(alert["labels"]["severity"], "critical", "{alert}");
    assert_eq!(alert["status"]["state"], "active", "{alert}");
    let summary = alert["annotations"]["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("health checks"), "{alert}");
    let generator = alert["generatorURL"].as_str().unwrap_or_default();
    assert_eq!(
        generator,
        format!("{}/alerts", app.url(ServerKind::Registry))
    );
    // Alertmanager computes the same fingerprint as the webhook bodies carry.
    let labels: Labels = serde_json::from_value(alert["labels"].clone()).unwrap_or_default();
    let ours = OutgoingAlert {
        labels,
        annotations: Labels::new(),
        starts_at: chrono::Utc::now(),
        ends_at: chrono::Utc::now(),
        resolved: false,
    };
    assert_eq!(alert["fingerprint"], ours.fingerprint(), "{alert}");

    service.set_health(200);
    eventually("the alert resolved in Alertmanager", WAIT, || async {
        find(&alertmanager.alerts().await, &wanted)
            .is_none()
            .then_some(())
    })
    .await;
}

/// Webhook bodies received, and how many requests came in all.
#[derive(Default)]
struct Hook {
    attempts: usize,
    failures_left: usize,
    bodies: Vec<Value>,
    authorization: Vec<String>,
}

/// A webhook receiver that answers 500 to its first `failures` requests.
async fn webhook(failures: usize) -> (String, Arc<Mutex<Hook>>) {
    let hook = Arc::new(Mutex::new(Hook {
        failures_left: failures,
        ..Hook::default()
    }));
    let app = axum::Router::new()
        .route(
            "/hook",
            post(
                |State(hook): State<Arc<Mutex<Hook>>>,
                 headers: HeaderMap,
                 Json(body): Json<Value>| async move {
                    let mut hook = hook.lock().await;
                    hook.attempts += 1;
                    if hook.failures_left > 0 {
                        hook.failures_left -= 1;
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
                    hook.authorization.push(auth.unwrap_or_default().to_owned());
                    hook.bodies.push(body);
                    StatusCode::OK
                },
            ),
        )
        .with_state(hook.clone());
    let port = serve(app).await;
    (format!("http://127.0.0.1:{port}/hook"), hook)
}

fn to_webhook(url: String) -> WebhookReceiver {
    WebhookReceiver {
        url,
        name: Some("ops".into()),
        headers: BTreeMap::from([("Authorization".into(), "Bearer hook-secret".into())]),
    }
}

#[tokio::test]
async fn a_webhook_that_fails_twice_gets_each_notification_once() {
    let (url, hook) = webhook(2).await;
    let receivers = ReceiverOptions {
        webhooks: vec![to_webhook(url)],
        ..ReceiverOptions::default()
    };
    let app = orchestra(receivers, None).await;
    let service = FakeService::start().await;
    let id = register(&app, "pricing-service", &service, &[]).await;
    service.set_health(500);
    eventually("the firing notification", WAIT, || async {
        (!hook.lock().await.bodies.is_empty()).then_some(())
    })
    .await;
    // Several resend intervals: a webhook hears again only after `repeat_every` (4 h).
    tokio::time::sleep(Duration::from_secs(3)).await;
    {
        let hook = hook.lock().await;
        assert_eq!(hook.attempts, 3, "two failures, then one delivery");
        assert_eq!(hook.bodies.len(), 1, "delivered once: {:?}", hook.bodies);
        assert_eq!(hook.authorization, ["Bearer hook-secret"]);
        let body = &hook.bodies[0];
        assert_eq!(body["version"], "4", "{body}");
        assert_eq!(body["status"], "firing", "{body}");
        assert_eq!(body["receiver"], "ops", "{body}");
        assert_eq!(
            body["groupKey"], "{}:{alertname=\"ServiceUnavailable\"}",
            "{body}"
        );
        assert_eq!(body["groupLabels"]["alertname"], "ServiceUnavailable");
        assert_eq!(body["commonLabels"]["service"], "pricing-service");
        assert_eq!(body["externalURL"], app.url(ServerKind::Registry));
        let alert = &body["alerts"][0];
        assert_eq!(alert["status"], "firing", "{body}");
        assert_eq!(alert["labels"]["instance"], id.as_str(), "{body}");
        assert_eq!(alert["fingerprint"].as_str().map(str::len), Some(16));
    }
    service.set_health(200);
    let resolved = eventually("the resolved notification", WAIT, || async {
        let hook = hook.lock().await;
        hook.bodies.get(1).cloned()
    })
    .await;
    assert_eq!(resolved["status"], "resolved", "{resolved}");
    assert_eq!(resolved["alerts"][0]["status"], "resolved", "{resolved}");
    assert_eq!(hook.lock().await.bodies.len(), 2);
}

#[tokio::test]
async fn only_the_database_alert_reaches_receivers_when_a_dependents_database_is_down() {
    let alertmanager = Alertmanager::start();
    let (url, hook) = webhook(0).await;
    let receivers = ReceiverOptions {
        alertmanagers: vec![alertmanager.url()],
        webhooks: vec![to_webhook(url)],
        ..ReceiverOptions::default()
    };
    let postgres = format!("postgres://postgres@127.0.0.1:{}/postgres", free_port());
    let app = orchestra(receivers, Some(postgres)).await;
    // Down because its database is: it declared `postgres`.
    let inventory = FakeService::start().await;
    let inventory_id = register(&app, "inventory-service", &inventory, &["postgres"]).await;
    // Down on its own: it declared nothing, so it still pages.
    let fleet = FakeService::start().await;
    register(&app, "fleet-service", &fleet, &[]).await;
    inventory.set_health(503);
    fleet.set_health(503);

    let database = [
        ("alertname", "DatabaseUnreachable"),
        ("dependency", "postgres"),
    ];
    let fleet_down = [
        ("alertname", "ServiceUnavailable"),
        ("service", "fleet-service"),
    ];
    eventually(
        "the database and fleet alerts in Alertmanager",
        WAIT,
        || async {
            let alerts = alertmanager.alerts().await;
            (find(&alerts, &database).is_some() && find(&alerts, &fleet_down).is_some())
                .then_some(())
        },
    )
    .await;
    // Resends come every second: the inhibited alert would have had its chances.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let inventory_down = [
        ("alertname", "ServiceUnavailable"),
        ("service", "inventory-service"),
    ];
    let alerts = alertmanager.alerts().await;
    assert!(find(&alerts, &inventory_down).is_none(), "{alerts:?}");
    assert!(find(&alerts, &database).is_some(), "{alerts:?}");
    let sent: Vec<Value> = hook
        .lock()
        .await
        .bodies
        .iter()
        .flat_map(|b| b["alerts"].as_array().cloned().unwrap_or_default())
        .collect();
    let names: Vec<(&str, &str)> = sent
        .iter()
        .map(|a| {
            let label = |k: &str| a["labels"][k].as_str().unwrap_or_default();
            (label("alertname"), label("service"))
        })
        .collect();
    assert!(names.contains(&("DatabaseUnreachable", "")), "{names:?}");
    assert!(
        names.contains(&("ServiceUnavailable", "fleet-service")),
        "{names:?}"
    );
    assert!(
        !names.contains(&("ServiceUnavailable", "inventory-service")),
        "{names:?}"
    );

    // It stays visible, labelled, on the server's own alerts list.
    let listed = get_json(&format!("{}/alerts", app.url(ServerKind::Registry))).await;
    let active = listed["active"].as_array().cloned().unwrap_or_default();
    let mine = active
        .iter()
        .find(|a| a["labels"]["instance"] == inventory_id.as_str())
        .cloned()
        .unwrap_or_default();
    assert_eq!(mine["state"], "firing", "{listed}");
    assert_eq!(
        mine["labels"]["inhibited_by"], "DatabaseUnreachable/postgres",
        "{listed}"
    );
}
