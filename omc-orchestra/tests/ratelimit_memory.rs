//! The rate-limit contract, in process.

use omc_orchestra::gateway::{MemoryRateLimits, RateLimitStore};
use omc_orchestra::testkit::ratelimit::{run_all, MakeRateLimits};
use std::sync::Arc;

#[tokio::test]
async fn memory_rate_limits_keep_the_contract() {
    let make: MakeRateLimits = Arc::new(|clock| {
        Box::pin(async move {
            Arc::new(MemoryRateLimits::new(Arc::new(clock))) as Arc<dyn RateLimitStore>
        })
    });
    run_all(make).await;
}
