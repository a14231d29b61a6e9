//! The response-cache contract against a real Redis.

use omc_orchestra::gateway::{CacheConfig, CacheStore, RedisCacheStore};
use omc_orchestra::testkit::cache::{run_all, MakeCache};
use omc_orchestra::testkit::redis::store;
use omc_orchestra::RedisStore;
use parking_lot::Mutex;
use std::sync::Arc;

#[tokio::test]
async fn redis_cache_keeps_the_contract() {
    let stores: Arc<Mutex<Vec<RedisStore>>> = Arc::default();
    let seen = stores.clone();
    let make: MakeCache = Arc::new(move |clock| {
        let seen = seen.clone();
        Box::pin(async move {
            let store = store().await;
            seen.lock().push(store.clone());
            Arc::new(RedisCacheStore::new(
                store,
                CacheConfig::default(),
                Arc::new(clock),
            )) as Arc<dyn CacheStore>
        })
    });
    run_all(make).await;
    let all: Vec<RedisStore> = stores.lock().drain(..).collect();
    for store in all {
        store.delete_prefix().await.unwrap();
    }
}
