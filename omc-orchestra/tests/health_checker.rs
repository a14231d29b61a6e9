//! The health checker against real sockets: a tiny axum service whose `/health` answer the
//! test controls, on a [`ManualClock`] so rounds come due without sleeping. The flapping
//! scenario runs over the memory registry and the Redis registry alike.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use omc_orchestra::events::{types, EventBus, EventQuery, MemoryEventBus};
use omc_orchestra::health::{
    builtin_rules, spawn_instance_views, summarize, AlertEngine, AlertState, CheckerOptions,
    HealthChecker, SummarySources,
};
use omc_orchestra::registry::{
    Discovery, HealthStatus, MemoryRegistry, RedisRegistry, Registration, Registry, RegistryOptions,
};
use omc_orchestra::testkit::redis::store;
use omc_orchestra::{ManualClock, SharedClock};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A service on a free port whose `/health` answers whatever `code` holds.
async fn tiny_service() -> (u16, Arc<AtomicU16>) {
    let code = Arc::new(AtomicU16::new(200));
    let app = Router::new()
        .route(
            "/health",
            get(|State(code): State<Arc<AtomicU16>>| async move {
                StatusCode::from_u16(code.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK)
            }),
        )
        .with_state(code.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, code)
}

fn registration(name: &str, port: u16) -> Registration {
    let mut reg = Registration::new(name, "127.0.0.1", port);
    reg.health_endpoint = "/health".into();
    reg.ttl_seconds = Some(86_400);
    reg.metadata.insert("healthInterval".into(), "10s".into());
    reg.metadata.insert("healthTimeout".into(), "2s".into());
    reg
}

/// A memory registry on a manual clock, with the clock as the checker takes it.
fn memory_registry() -> (ManualClock, SharedClock, Arc<dyn Registry>) {
    let clock = ManualClock::starting_now();
    let shared: SharedClock = Arc::new(clock.clone());
    let registry = Arc::new(MemoryRegistry::new(
        shared.clone(),
        RegistryOptions::default(),
    ));
    (clock, shared, registry)
}

/// One round: move the clock past the interval and probe whatever is due.
async fn round(clock: &ManualClock, checker: &Arc<HealthChecker>) -> usize {
    clock.advance(Duration::from_secs(10));
    checker.run_due().await.unwrap()
}

async fn flapping_endpoint(registry: Arc<dyn Registry>, clock: ManualClock) {
    let shared: SharedClock = Arc::new(clock.clone());
    let (port, code) = tiny_service().await;
    let name = format!("flappy-{port}");
    let instance = registry.register(registration(&name, port)).await.unwrap();
    let events = Arc::new(MemoryEventBus::new(shared.clone()));
    let alerts = Arc::new(
        AlertEngine::new(builtin_rules(), shared.clone()).with_events(events.clone(), "test"),
    );
    let checker = Arc::new(
        HealthChecker::new(registry.clone(), shared.clone(), CheckerOptions::default())
            .with_alerts(alerts.clone()),
    );
    let discovery = Discovery::new(registry.clone());
    let serving = || async { discovery.discover(&name).await.unwrap().instances.len() };

    assert_eq!(checker.run_due().await.unwrap(), 1, "first round probes");
    assert_eq!(checker.run_due().await.unwrap(), 0, "not due again yet");

    // One failure between passes changes nothing.
    code.store(500, Ordering::SeqCst);
    round(&clock, &checker).await;
    code.store(200, Ordering::SeqCst);
    round(&clock, &checker).await;
    assert_eq!(serving().await, 1);

    // Three failures in a row: critical once, out of discovery.
    code.store(500, Ordering::SeqCst);
    for _ in 0..2 {
        round(&clock, &checker).await;
        assert_eq!(serving().await, 1, "two failures are not enough");
    }
    round(&clock, &checker).await;
    let seen = registry.get(&instance.id).await.unwrap();
    assert_eq!(seen.check_status, HealthStatus::Critical);
    assert_eq!(serving().await, 0);
    round(&clock, &checker).await;
    let view = checker.instance(&instance.id).unwrap();
    assert_eq!(view.status, HealthStatus::Critical);
    assert_eq!(view.results.last().unwrap().reason, "HTTP 500");
    assert!(view.error_rate > 0.5);

    // Two passes bring it back.
    code.store(200, Ordering::SeqCst);
    round(&clock, &checker).await;
    assert_eq!(serving().await, 0, "one pass is not enough");
    round(&clock, &checker).await;
    assert_eq!(serving().await, 1);

    let notices = alerts.history(100);
    let states: Vec<_> = notices.iter().map(|n| (n.rule.as_str(), n.state)).collect();
    assert_eq!(
        states,
        [
            ("ServiceUnavailable", AlertState::Firing),
            ("ServiceUnavailable", AlertState::Resolved)
        ]
    );
    let published = events
        .history(&EventQuery {
            event_type: Some(types::SYSTEM_ALERT.into()),
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(published.len(), 2);
    assert_eq!(
        published[0].data["labels"]["instance"],
        instance.id.as_str()
    );
}

#[tokio::test]
async fn memory_registry_flapping_endpoint_goes_critical_once_and_recovers() {
    let clock = ManualClock::starting_now();
    let registry = Arc::new(MemoryRegistry::new(
        Arc::new(clock.clone()),
        RegistryOptions::default(),
    ));
    flapping_endpoint(registry, clock).await;
}

#[tokio::test]
async fn redis_registry_flapping_endpoint_goes_critical_once_and_recovers() {
    let clock = ManualClock::starting_now();
    let store = store().await;
    let registry = RedisRegistry::new(
        store.clone(),
        Arc::new(clock.clone()),
        RegistryOptions::default(),
    )
    .await
    .unwrap();
    flapping_endpoint(Arc::new(registry), clock).await;
    store.delete_prefix().await.unwrap();
}

#[tokio::test]
async fn two_replicas_on_one_redis_probe_each_instance_once_per_interval() {
    let clock = ManualClock::starting_now();
    let shared: SharedClock = Arc::new(clock.clone());
    let store = store().await;
    let registry: Arc<dyn Registry> = Arc::new(
        RedisRegistry::new(store.clone(), shared.clone(), RegistryOptions::default())
            .await
            .unwrap(),
    );
    let (port, _code) = tiny_service().await;
    registry
        .register(registration("shared-svc", port))
        .await
        .unwrap();
    let replica = |name: &str| {
        Arc::new(
            HealthChecker::new(registry.clone(), shared.clone(), CheckerOptions::default())
                .with_redis_lock(store.clone(), name),
        )
    };
    let (a, b) = (replica("a"), replica("b"));
    let (ran_a, ran_b) = tokio::join!(a.run_due(), b.run_due());
    assert_eq!(ran_a.unwrap() + ran_b.unwrap(), 1, "one replica probes");
    store.delete_prefix().await.unwrap();
}

#[tokio::test]
async fn dependencies_are_probed_and_an_unreachable_database_alerts() {
    let (clock, shared, registry) = memory_registry();
    let (port, _code) = tiny_service().await;
    let mut reg = registration("orders", port);
    reg.dependencies = vec!["postgres".into(), "redis".into(), "billing-db".into()];
    registry.register(reg).await.unwrap();
    let mut options = CheckerOptions {
        interval: Duration::from_secs(10),
        ..CheckerOptions::default()
    };
    options.dependencies.insert(
        "postgres".into(),
        "postgres://postgres@127.0.0.1:5432/postgres".into(),
    );
    options
        .dependencies
        .insert("redis".into(), omc_orchestra::testkit::redis::url().await);
    // Nothing listens on port 1: refused at once.
    options.dependencies.insert(
        "billing-db".into(),
        "postgres://postgres@127.0.0.1:1/postgres".into(),
    );
    let alerts = Arc::new(AlertEngine::new(builtin_rules(), shared.clone()));
    let checker =
        Arc::new(HealthChecker::new(registry, shared, options).with_alerts(alerts.clone()));
    for _ in 0..3 {
        checker.run_due().await.unwrap();
        clock.advance(Duration::from_secs(10));
    }
    let deps = checker.dependencies();
    let status = |name: &str| {
        let dep = deps.iter().find(|d| d.name == name).unwrap();
        (
            dep.health.status,
            dep.health.results.last().unwrap().reason.clone(),
        )
    };
    assert_eq!(
        status("postgres").0,
        HealthStatus::Passing,
        "{:?} (needs PostgreSQL on 127.0.0.1:5432; `scripts/test` sets one up)",
        status("postgres")
    );
    assert_eq!(
        status("redis").0,
        HealthStatus::Passing,
        "{:?}",
        status("redis")
    );
    assert_eq!(
        status("billing-db"),
        (HealthStatus::Critical, "connection refused".to_owned())
    );
    let firing = alerts.active();
    assert_eq!(firing.len(), 1);
    assert_eq!(firing[0].rule, "DatabaseUnreachable");
    assert_eq!(firing[0].labels["dependency"], "billing-db");
}

/// A port that accepts connections and never answers.
async fn silent_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    port
}

#[tokio::test]
async fn a_silent_service_never_holds_up_the_others() {
    let shared = omc_orchestra::clock::system();
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new(
        shared.clone(),
        RegistryOptions::default(),
    ));
    let (port, _code) = tiny_service().await;
    let mut fast = registration("fast", port);
    fast.metadata.insert("healthInterval".into(), "50ms".into());
    let fast = registry.register(fast).await.unwrap();
    let mut slow = registration("slow", silent_port().await);
    slow.metadata.insert("healthInterval".into(), "50ms".into());
    // Longer than the test waits: the probe stays in flight throughout.
    slow.metadata.insert("healthTimeout".into(), "60s".into());
    let slow = registry.register(slow).await.unwrap();
    let checker = Arc::new(HealthChecker::new(
        registry,
        shared,
        CheckerOptions::default(),
    ));
    let task = checker.clone().spawn(Duration::from_millis(20));
    omc_orchestra::testkit::eventually(
        "fast probed again and again",
        Duration::from_secs(20),
        || {
            let checker = checker.clone();
            let id = fast.id.clone();
            async move { (checker.instance(&id)?.results.len() >= 3).then_some(()) }
        },
    )
    .await;
    let slow_view = checker.instance(&slow.id).unwrap();
    assert!(
        slow_view.results.is_empty(),
        "the slow probe is still running"
    );
    task.abort();
}

#[tokio::test]
async fn a_critical_instance_that_deregisters_resolves_its_alert() {
    let (clock, shared, registry) = memory_registry();
    let (port, code) = tiny_service().await;
    code.store(503, Ordering::SeqCst);
    let instance = registry
        .register(registration("leaving", port))
        .await
        .unwrap();
    let alerts = Arc::new(AlertEngine::new(builtin_rules(), shared.clone()));
    let checker = Arc::new(
        HealthChecker::new(registry.clone(), shared, CheckerOptions::default())
            .with_alerts(alerts.clone()),
    );
    for _ in 0..3 {
        round(&clock, &checker).await;
    }
    assert_eq!(alerts.active().len(), 1);
    registry.deregister(&instance.id).await.unwrap();
    round(&clock, &checker).await;
    assert!(alerts.active().is_empty());
    let last = alerts.history(1).pop().unwrap();
    assert_eq!(last.state, AlertState::Resolved);
    assert!(checker.instance(&instance.id).is_none());
}

#[tokio::test]
async fn huge_interval_and_timeout_metadata_do_not_stop_the_rounds() {
    let (clock, shared, registry) = memory_registry();
    let (port, _) = tiny_service().await;
    // A service sets its own interval and timeout; nothing it sets may panic a round.
    let mut huge = registration("huge-service", port);
    huge.metadata
        .insert("healthInterval".into(), u64::MAX.to_string());
    huge.metadata
        .insert("healthTimeout".into(), u64::MAX.to_string());
    let huge = registry.register(huge).await.unwrap();
    let mut minutes = registration("minutes-service", port);
    minutes
        .metadata
        .insert("healthInterval".into(), format!("{}m", u64::MAX / 60));
    let minutes = registry.register(minutes).await.unwrap();
    let normal = registry
        .register(registration("normal-service", port))
        .await
        .unwrap();
    let checker = Arc::new(HealthChecker::new(
        registry.clone(),
        shared,
        CheckerOptions::default(),
    ));

    assert_eq!(checker.run_due().await.unwrap(), 3);
    for _ in 0..3 {
        assert_eq!(
            round(&clock, &checker).await,
            1,
            "only the normal one is due"
        );
    }
    for id in [&huge.id, &minutes.id] {
        assert_eq!(checker.instance(id).unwrap().checks_total, 1);
    }
    assert_eq!(checker.instance(&normal.id).unwrap().checks_total, 4);
}

/// The dashboard's first figures: instances by status, services counted by name however
/// the listing orders them, firing alerts and the probes' mean figures.
#[tokio::test]
async fn the_summary_counts_instances_services_alerts_and_probes() {
    let (clock, shared, registry) = memory_registry();
    let (up, _) = tiny_service().await;
    let (down, code) = tiny_service().await;
    code.store(500, Ordering::SeqCst);
    // Names registered out of order, so a count of neighbours in the listing would be off.
    for (name, port) in [("pricing", up), ("inventory", down), ("pricing", down)] {
        registry.register(registration(name, port)).await.unwrap();
    }
    let alerts = Arc::new(AlertEngine::new(builtin_rules(), shared.clone()));
    let checker = Arc::new(
        HealthChecker::new(registry.clone(), shared.clone(), CheckerOptions::default())
            .with_alerts(alerts.clone()),
    );
    for _ in 0..3 {
        checker.run_due().await.unwrap();
        clock.advance(Duration::from_secs(10));
    }
    alerts.evaluate().await;
    let summary = summarize(
        registry.as_ref(),
        SummarySources {
            checker: Some(&checker),
            alerts: Some(&alerts),
            monitor: None,
        },
    )
    .await
    .unwrap();
    let listed = registry.list(&Default::default()).await.unwrap();
    let critical = listed
        .iter()
        .filter(|i| i.status == HealthStatus::Critical)
        .count();
    assert_eq!(summary.services.total, listed.len());
    assert_eq!(summary.services.critical, critical);
    assert!(
        critical >= 1,
        "the failing instances went critical: {listed:?}"
    );
    assert_eq!(summary.services.passing, listed.len() - critical);
    assert_eq!(summary.service_names, 2);
    assert!(summary.alerts_firing >= 1, "{:?}", alerts.active());
    assert!(summary.probe_error_rate > 0.0 && summary.probe_error_rate < 1.0);
    assert!(summary.system.is_none());

    let bare = summarize(registry.as_ref(), SummarySources::default())
        .await
        .unwrap();
    assert_eq!(bare.services, summary.services);
    assert_eq!((bare.alerts_firing, bare.probe_error_rate), (0, 0.0));
}

/// The instance-views loop reads the checker again on every tick: an instance probed after
/// the loop started reaches the callback, which a loop that read once (or never) would miss.
#[tokio::test]
async fn the_instance_views_loop_hands_on_what_later_rounds_found() {
    let (_clock, shared, registry) = memory_registry();
    let (port, _code) = tiny_service().await;
    let instance = registry
        .register(registration("pricing", port))
        .await
        .unwrap();
    let checker = Arc::new(HealthChecker::new(
        registry,
        shared,
        CheckerOptions::default(),
    ));
    let (seen, mut read) = tokio::sync::mpsc::unbounded_channel();
    let views = spawn_instance_views(checker.clone(), Duration::from_millis(10), move |now| {
        let _ = seen.send(now.to_vec());
    });
    // Hang guards, not speed checks.
    let first = tokio::time::timeout(Duration::from_secs(30), read.recv())
        .await
        .expect("the loop read the checker")
        .expect("a reading");
    assert!(first.is_empty(), "nothing probed yet: {first:?}");
    assert_eq!(checker.run_due().await.unwrap(), 1);
    let later = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let now = read.recv().await.expect("a reading");
            if !now.is_empty() {
                return now;
            }
        }
    })
    .await
    .expect("the loop read the checker again after the round");
    views.abort();
    assert_eq!(later.len(), 1);
    let (service, id, view) = &later[0];
    assert_eq!(
        (service.as_str(), id.as_str()),
        ("pricing", instance.id.as_str())
    );
    assert_eq!(view.status, HealthStatus::Passing);
    assert_eq!(view.checks_total, 1);
}
