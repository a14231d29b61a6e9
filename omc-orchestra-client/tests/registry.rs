//! The client against the real registry server, started in-process on free ports.

use omc_orchestra_client::{
    ClientError, OrchestraClient, RegisterOptions, Registration, ServiceFilter, ServiceInstance,
};
use omc_orchestra_server::app::{App, Config, ServerKind};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;

/// The messages of the `WARN` events it sees.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Warnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        if *event.metadata().level() == tracing::Level::WARN {
            let mut message = Message(String::new());
            event.record(&mut message);
            self.0.lock().unwrap().push(message.0);
        }
    }
}

async fn start(config: Config) -> (App, String) {
    let app = App::start(config, &ServerKind::ALL)
        .await
        .expect("the server starts");
    let url = app.url(ServerKind::Registry);
    (app, url)
}

fn pricing(port: u16) -> Registration {
    let mut registration = Registration::new("pricing-service", "127.0.0.1", port);
    registration.version = "1.0.0".into();
    registration.tags = vec!["pricing".into()];
    registration.dependencies = vec!["postgres".into(), "redis".into()];
    registration
}

/// Poll `check` every 25 ms until it is true or `within` runs out.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `GET /registry/services?name=…` without the client, to see what the server holds.
async fn raw_list(url: &str, name: &str) -> Vec<ServiceInstance> {
    reqwest::Client::new()
        .get(format!("{url}/registry/services"))
        .query(&[("name", name)])
        .send()
        .await
        .expect("the server answers")
        .error_for_status()
        .expect("listing succeeds")
        .json()
        .await
        .expect("a JSON array of instances")
}

#[tokio::test]
async fn register_discover_deregister() {
    let (app, url) = start(Config::ephemeral()).await;
    let client = OrchestraClient::new(&url);

    let registered = client.register(pricing(3006)).await.unwrap();
    let instance = registered.instance();
    assert_eq!(instance.name, "pricing-service");
    assert_eq!(instance.port, 3006);
    assert_eq!(instance.tags, vec!["pricing".to_owned()]);
    assert_eq!(registered.id(), instance.id);
    assert_eq!(registered.heartbeat_every(), Duration::from_secs(10));

    let selected = client.discover("pricing-service").await.unwrap();
    assert_eq!(selected.map(|i| i.id), Some(instance.id.clone()));

    let found = client.discover_all("pricing-service").await.unwrap();
    assert_eq!(found.service, "pricing-service");
    assert_eq!(
        (found.total, found.healthy, found.panic_mode),
        (1, 1, false)
    );
    assert_eq!(found.instances.len(), 1);
    assert_eq!(found.selected.map(|i| i.id), Some(instance.id.clone()));

    let by_name = client
        .services(&ServiceFilter::by_name("pricing-service"))
        .await
        .unwrap();
    assert_eq!(by_name.len(), 1);
    let by_tag = ServiceFilter {
        tag: Some("pricing".into()),
        ..ServiceFilter::default()
    };
    assert_eq!(client.services(&by_tag).await.unwrap().len(), 1);
    let other_tag = ServiceFilter {
        tag: Some("inventory".into()),
        ..ServiceFilter::default()
    };
    assert!(client.services(&other_tag).await.unwrap().is_empty());
    assert!(client.instance(&instance.id).await.unwrap().is_some());

    registered.deregister().await.unwrap();
    assert!(client.instance(&instance.id).await.unwrap().is_none());
    assert!(raw_list(&url, "pricing-service").await.is_empty());
    assert_eq!(client.discover("pricing-service").await.unwrap(), None);

    app.shutdown().await;
}

#[tokio::test]
async fn heartbeats_keep_the_instance_fresh() {
    let (app, url) = start(Config::ephemeral()).await;
    let client = OrchestraClient::new(&url);
    let options = RegisterOptions {
        heartbeat_every: Some(Duration::from_millis(100)),
    };
    let registered = client.register_with(pricing(3007), options).await.unwrap();
    let first = registered.instance();

    let fresher = eventually(Duration::from_secs(5), || async {
        registered.instance().last_heartbeat > first.last_heartbeat
    })
    .await;
    assert!(fresher, "the handle saw no heartbeat answer");
    let on_server = client.instance(&first.id).await.unwrap().unwrap();
    assert!(on_server.last_heartbeat > first.last_heartbeat);

    registered.deregister().await.unwrap();
    app.shutdown().await;
}

#[tokio::test]
async fn a_heartbeat_registers_again_when_the_registry_forgot_the_instance() {
    let (app, url) = start(Config::ephemeral()).await;
    let client = OrchestraClient::new(&url);
    let options = RegisterOptions {
        heartbeat_every: Some(Duration::from_millis(100)),
    };
    let registered = client.register_with(pricing(3008), options).await.unwrap();
    let first = registered.instance();

    // Forget the instance behind the client's back.
    let deleted = reqwest::Client::new()
        .delete(format!("{url}/registry/services/{}", first.id))
        .send()
        .await
        .unwrap();
    assert!(
        deleted.status().is_success(),
        "DELETE answered {}",
        deleted.status()
    );

    // The next heartbeat gets a 404 and registers again: a new registration time.
    let back = eventually(Duration::from_secs(5), || async {
        raw_list(&url, "pricing-service")
            .await
            .iter()
            .any(|i| i.id == first.id && i.registered_at > first.registered_at)
    })
    .await;
    assert!(back, "the instance did not come back");
    let again = eventually(Duration::from_secs(5), || async {
        registered.instance().registered_at > first.registered_at
    })
    .await;
    assert!(again, "the handle still holds the forgotten instance");

    registered.deregister().await.unwrap();
    assert!(raw_list(&url, "pricing-service").await.is_empty());
    app.shutdown().await;
}

#[tokio::test]
async fn dropping_the_handle_warns_and_deregisters() {
    let (app, url) = start(Config::ephemeral()).await;
    let client = OrchestraClient::new(&url);
    let options = RegisterOptions {
        heartbeat_every: Some(Duration::from_millis(50)),
    };
    let registered = client.register_with(pricing(3009), options).await.unwrap();
    let warnings = Warnings::default();
    let subscriber = tracing_subscriber::registry().with(warnings.clone());
    tracing::subscriber::with_default(subscriber, || drop(registered));
    let said = warnings.0.lock().unwrap().join("\n");
    assert!(said.contains("dropped without deregister()"), "{said:?}");

    let gone = eventually(Duration::from_secs(5), || async {
        raw_list(&url, "pricing-service").await.is_empty()
    })
    .await;
    assert!(
        gone,
        "the instance is still registered after the handle dropped"
    );
    // And no heartbeat brings it back.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(raw_list(&url, "pricing-service").await.is_empty());
    app.shutdown().await;
}

#[tokio::test]
async fn server_errors_carry_status_and_code() {
    let (app, url) = start(Config::ephemeral()).await;
    let client = OrchestraClient::new(&url);

    let err = client.heartbeat("no-such-instance").await.unwrap_err();
    match &err {
        ClientError::Http { status, error, .. } => {
            assert_eq!(*status, 404);
            assert!(!error.is_empty());
        }
        other => panic!("expected a 404, got {other:?}"),
    }
    assert_eq!(err.status(), Some(404));
    let err = client.deregister("no-such-instance").await.unwrap_err();
    assert_eq!(err.status(), Some(404));

    app.shutdown().await;
}

#[tokio::test]
async fn jwt_is_required_when_the_server_has_a_secret() {
    let config = Config::ephemeral()
        .with_service_secret("test-secret-of-at-least-32-bytes!")
        .unwrap();
    let (app, url) = start(config).await;

    let trusted = OrchestraClient::new(&url)
        .with_jwt_secret("test-secret-of-at-least-32-bytes!")
        .with_service_name("pricing-service");
    let registered = trusted.register(pricing(3010)).await.unwrap();
    let selected = trusted.discover("pricing-service").await.unwrap();
    assert_eq!(selected.map(|i| i.id), Some(registered.id()));

    let anonymous = OrchestraClient::new(&url);
    let err = anonymous.register(pricing(3011)).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Http { status: 401, .. }),
        "{err:?}"
    );
    let err = anonymous.discover("pricing-service").await.unwrap_err();
    assert!(
        matches!(err, ClientError::Http { status: 401, .. }),
        "{err:?}"
    );

    let forger = OrchestraClient::new(&url).with_jwt_secret("wrong-secret-of-at-least-32-bytes!");
    let err = forger
        .services(&ServiceFilter::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Http { status: 401, .. }),
        "{err:?}"
    );

    // Holding the secret but given no service name, the client signs as the service it
    // registers, for the registration's heartbeats and deregistration too.
    let unnamed = OrchestraClient::new(&url).with_jwt_secret("test-secret-of-at-least-32-bytes!");
    let second = unnamed.register(pricing(3012)).await.unwrap();
    second.deregister().await.unwrap();

    // A minted token is sent as it is, and covers its own service only.
    let issuer =
        omc_orchestra::access::TokenIssuer::from_secret(b"test-secret-of-at-least-32-bytes!")
            .unwrap();
    let token = issuer
        .mint(
            "inventory-service",
            omc_orchestra::access::Grants::service(),
            Duration::from_secs(60),
        )
        .unwrap();
    let inventory = OrchestraClient::new(&url).with_token(&token);
    let err = inventory.register(pricing(3013)).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Http { status: 403, .. }),
        "{err:?}"
    );
    assert!(inventory.discover("pricing-service").await.is_ok());

    registered.deregister().await.unwrap();
    assert!(trusted
        .services(&ServiceFilter::by_name("pricing-service"))
        .await
        .unwrap()
        .is_empty());
    app.shutdown().await;
}
