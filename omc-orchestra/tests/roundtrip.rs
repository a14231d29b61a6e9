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

/// TypeScript enums are often upper-case: every wire enum takes its name in any letter
/// case and answers in lower case; an unknown name says what it expected.
#[test]
fn wire_enums_take_any_letter_case_and_answer_in_lower_case() {
    use omc_orchestra::events::EventPriority;
    use omc_orchestra::jobs::{JobPriority, JobState};
    use omc_orchestra::logs::{LogCategory, LogLevel};
    fn check<T>(names: &[&str], want: T, wire: &str)
    where
        T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
    {
        for name in names {
            let got: T = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(got, want, "{name}");
        }
        assert_eq!(
            serde_json::to_value(&want).unwrap(),
            serde_json::json!(wire)
        );
    }
    check(&["HIGH", "High", "hIgH"], JobPriority::High, "high");
    check(
        &["COMPLETED", "Completed"],
        JobState::Completed,
        "completed",
    );
    check(
        &["CRITICAL", "Critical"],
        EventPriority::Critical,
        "critical",
    );
    check(&["WARN", "Warn"], LogLevel::Warn, "warn");
    check(&["SECURITY", "Security"], LogCategory::Security, "security");
    check(&["PASSING", "Passing"], HealthStatus::Passing, "passing");
    let err = serde_json::from_value::<JobPriority>(serde_json::json!("URGENT")).unwrap_err();
    let err = err.to_string();
    assert!(
        err.contains("unknown variant `URGENT`") && err.contains("`background`"),
        "{err}"
    );
}
