//! The registry contract against a real Redis, plus what only a shared store can show:
//! two registries on one Redis, and a Redis restart.

use omc_orchestra::registry::{
    ChangeKind, HealthStatus, RedisRegistry, Registration, Registry, RegistryOptions, ServiceFilter,
};
use omc_orchestra::testkit::redis::{store, RedisProcess};
use omc_orchestra::testkit::registry::{expect_change, run_all, seed_registration, MakeRegistry};
use omc_orchestra::{clock, RedisStore};
use std::sync::Arc;

#[tokio::test]
async fn redis_registry_keeps_the_contract() {
    let prefixes = Arc::new(cleanup::Prefixes::default());
    let seen = prefixes.clone();
    let make: MakeRegistry = Arc::new(move |clock, options| {
        let seen = seen.clone();
        Box::pin(async move {
            let store = store().await;
            seen.push(store.clone());
            Arc::new(
                RedisRegistry::new(store, Arc::new(clock), options)
                    .await
                    .unwrap(),
            ) as Arc<dyn Registry>
        })
    });
    run_all(make).await;
    prefixes.clean().await;
}

#[tokio::test]
async fn two_registries_on_one_redis_share_state_and_changes() {
    let first_store = store().await;
    let second_store = RedisStore::connect(
        &omc_orchestra::testkit::redis::url().await,
        first_store.prefix(),
    )
    .await
    .unwrap();
    let options = RegistryOptions::default();
    let a = RedisRegistry::new(first_store.clone(), clock::system(), options)
        .await
        .unwrap();
    let b = RedisRegistry::new(second_store, clock::system(), options)
        .await
        .unwrap();
    let mut watch_b = b.watch();
    let instance = a.register(seed_registration()).await.unwrap();
    assert_eq!(b.get(&instance.id).await.unwrap().name, "pricing-service");
    expect_change(&mut watch_b, ChangeKind::Registered, &instance.id).await;
    b.set_health(&instance.id, HealthStatus::Critical)
        .await
        .unwrap();
    assert_eq!(
        a.get(&instance.id).await.unwrap().status,
        HealthStatus::Critical
    );
    b.deregister(&instance.id).await.unwrap();
    assert!(a.list(&ServiceFilter::default()).await.unwrap().is_empty());
    first_store.delete_prefix().await.unwrap();
}

#[tokio::test]
async fn reconnects_by_itself_after_a_redis_restart() {
    let redis = RedisProcess::start(true).expect("redis-server must be installed for this test");
    let store = RedisStore::connect(&redis.url(), "orc").await.unwrap();
    let registry = RedisRegistry::new(store, clock::system(), RegistryOptions::default())
        .await
        .unwrap();
    let mut watch = registry.watch();
    let first = registry.register(seed_registration()).await.unwrap();
    expect_change(&mut watch, ChangeKind::Registered, &first.id).await;

    redis.restart().unwrap();

    // With an append-only file the registration survives the restart ...
    assert_eq!(registry.get(&first.id).await.unwrap().id, first.id);
    // ... and new changes flow, through the same handle and its watch stream.
    let second = registry
        .register(Registration::new("inventory-service", "127.0.0.1", 3007))
        .await
        .unwrap();
    assert_eq!(
        registry
            .list(&ServiceFilter::default())
            .await
            .unwrap()
            .len(),
        2
    );
    expect_change(&mut watch, ChangeKind::Registered, &second.id).await;
}

/// Remembers each test store so the suite can delete its own prefixes at the end.
mod cleanup {
    use omc_orchestra::RedisStore;
    use std::sync::Mutex;

    #[derive(Default)]
    pub(crate) struct Prefixes(Mutex<Vec<RedisStore>>);

    impl Prefixes {
        pub(crate) fn push(&self, store: RedisStore) {
            self.0.lock().unwrap().push(store);
        }
        pub(crate) async fn clean(&self) {
            let stores = std::mem::take(&mut *self.0.lock().unwrap());
            for store in stores {
                store.delete_prefix().await.unwrap();
            }
        }
    }
}

/// Instances stored by a version without the per-service sets and the listing index are
/// indexed when a registry starts, so discovery and listing still find them after an
/// upgrade.
#[tokio::test]
async fn instances_stored_before_the_service_index_are_discovered() {
    let store = store().await;
    let old = RedisRegistry::new(store.clone(), clock::system(), RegistryOptions::default())
        .await
        .unwrap();
    let mut ids = Vec::new();
    for port in [3006, 3016] {
        let mut registration = Registration::new("pricing-service", "127.0.0.1", port);
        registration.tags = vec!["pricing".into()];
        ids.push(old.register(registration).await.unwrap().id);
    }
    drop(old);
    // What the earlier version left: no service sets or listing indexes, no mark that
    // they were built.
    let mut conn = store.connection();
    for name in [
        "svc:pricing-service",
        "svc:~indexed-2",
        "all",
        "tag:pricing",
        "type:api",
        "status:passing",
    ] {
        let key = store.key("reg", "registry", name);
        let _: () = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let registry = RedisRegistry::new(store.clone(), clock::system(), RegistryOptions::default())
        .await
        .unwrap();
    let found = registry.service("pricing-service").await.unwrap();
    let mut found: Vec<String> = found.instances.into_iter().map(|i| i.id).collect();
    found.sort();
    ids.sort();
    assert_eq!(found, ids);
    let listed = registry
        .list_page(&ServiceFilter::default(), 10, None)
        .await
        .unwrap();
    let listed: Vec<String> = listed.instances.into_iter().map(|i| i.id).collect();
    assert_eq!(listed, ids, "in the listing index too");
    let by_tag = ServiceFilter {
        tag: Some("pricing".into()),
        ..ServiceFilter::default()
    };
    let by_type = ServiceFilter {
        service_type: Some("api".into()),
        ..ServiceFilter::default()
    };
    let by_status = ServiceFilter {
        status: Some(HealthStatus::Passing),
        ..ServiceFilter::default()
    };
    for filter in [by_tag, by_type, by_status] {
        let listed = registry.list_page(&filter, 10, None).await.unwrap();
        let listed: Vec<String> = listed.instances.into_iter().map(|i| i.id).collect();
        assert_eq!(listed, ids, "{filter:?}: in its index too");
    }
    store.delete_prefix().await.unwrap();
}
