//! The log store contract against the in-memory backend.

use omc_orchestra::logs::{LogSink, MemoryLogSink};
use omc_orchestra::testkit::logs::{run_all, MakeLogSink};
use std::sync::Arc;

#[tokio::test]
async fn memory_log_sink_keeps_the_contract() {
    let make: MakeLogSink = Arc::new(|_clock| {
        Box::pin(async move { Arc::new(MemoryLogSink::new()) as Arc<dyn LogSink> })
    });
    run_all(make).await;
}
