//! The registry contract against the in-memory backend.

use omc_orchestra::registry::{MemoryRegistry, Registry};
use omc_orchestra::testkit::registry::{run_all, MakeRegistry};
use std::sync::Arc;

#[tokio::test]
async fn memory_registry_keeps_the_contract() {
    let make: MakeRegistry = Arc::new(|clock, options| {
        Box::pin(async move {
            Arc::new(MemoryRegistry::new(Arc::new(clock), options)) as Arc<dyn Registry>
        })
    });
    run_all(make).await;
}
