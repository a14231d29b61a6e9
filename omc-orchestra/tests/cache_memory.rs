//! The response-cache contract, in process.

use omc_orchestra::gateway::{CacheConfig, CacheStore, MemoryCacheStore};
use omc_orchestra::testkit::cache::{run_all, MakeCache};
use std::sync::Arc;

#[tokio::test]
async fn memory_cache_keeps_the_contract() {
    let make: MakeCache = Arc::new(|clock| {
        Box::pin(async move {
            Arc::new(MemoryCacheStore::new(
                CacheConfig::default(),
                Arc::new(clock),
            )) as Arc<dyn CacheStore>
        })
    });
    run_all(make).await;
}
