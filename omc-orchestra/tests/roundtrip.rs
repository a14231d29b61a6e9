//! First round trips of the event bus, job queue, log store and TCP probe in memory.

use omc_orchestra::clock;
use omc_orchestra::events::MemoryEventBus;
use omc_orchestra::health::{HealthProbe, TcpProbe};
use omc_orchestra::jobs::MemoryJobQueue;
use omc_orchestra::logs::MemoryLogSink;
use omc_orchestra::registry::HealthStatus;
use omc_orchestra::testkit::roundtrip;
use std::time::Duration;

#[tokio::test]
async fn memory_event_bus_round_trip() {
    roundtrip::events_publish_then_history(&MemoryEventBus::new(clock::system())).await;
}

#[tokio::test]
async fn memory_job_queue_round_trip() {
    roundtrip::jobs_enqueue_fetch_complete(&MemoryJobQueue::new(clock::system())).await;
}

#[tokio::test]
async fn memory_log_sink_round_trip() {
    roundtrip::logs_write_then_search(&MemoryLogSink::new()).await;
}

#[tokio::test]
async fn tcp_probe_checks_a_real_socket() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open = listener.local_addr().unwrap();
    let passing = TcpProbe::new(open.to_string(), Duration::from_secs(2))
        .check()
        .await;
    assert_eq!(passing.status, HealthStatus::Passing, "{}", passing.reason);
    drop(listener);
    let refused = TcpProbe::new(open.to_string(), Duration::from_secs(2))
        .check()
        .await;
    assert_eq!(refused.status, HealthStatus::Critical);
    assert!(!refused.reason.is_empty());
}
