//! The SDK carries trace context: a job's trace is current while its handler runs in the
//! SDK's worker, so the jobs, events and log records the handler makes through the SDK
//! carry it on.

use omc_orchestra::testkit::eventually;
use omc_orchestra_client::{json, JobState, NewJob, Orchestra, OrchestraClient};
use omc_orchestra_server::app::{App, Config, ServerKind};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handlers_jobs_events_and_logs_continue_its_jobs_trace() {
    let app = App::start(Config::ephemeral(), &ServerKind::ALL)
        .await
        .unwrap();
    let client = OrchestraClient::new(app.url(ServerKind::Registry))
        .with_jobs_url(app.url(ServerKind::Jobs))
        .with_logging_url(app.url(ServerKind::Logging));
    let orc = Orchestra::with_client("uppf-service", client);
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let claim = orc
        .client()
        .enqueue(NewJob {
            traceparent: Some(trace.into()),
            ..NewJob::new("uppf-processing", json!({"claim": 7}))
        })
        .await
        .unwrap();
    assert_eq!(claim.traceparent.as_deref(), Some(trace));

    let made = orc.clone();
    let worker = orc
        .worker()
        .handle("uppf-processing", move |_job| {
            let orc = made.clone();
            async move {
                orc.log().info("claim 7 processed", json!({})).await?;
                let event = orc
                    .emit("UPPF_CLAIM_PROCESSED", json!({"claim": 7}))
                    .await?;
                let report = orc
                    .enqueue("report-generation", json!({"claim": 7}))
                    .await?;
                Ok(json!({"event": event.traceparent, "report": report.traceparent}))
            }
        })
        .spawn();
    let done = eventually("the claim processed", Duration::from_secs(30), || async {
        let job = orc.client().job(&claim.id).await.ok()?;
        (job.state == JobState::Completed).then_some(job)
    })
    .await;
    let result = done.result.unwrap();
    assert_eq!(result["event"], trace, "{result}");
    assert_eq!(result["report"], trace, "{result}");

    // What the handler logged is found by the trace.
    let page: serde_json::Value = reqwest::get(format!(
        "{}/logs?traceId=4bf92f3577b34da6a3ce929d0e0e4736",
        app.url(ServerKind::Logging)
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert!(page.to_string().contains("claim 7 processed"), "{page}");

    // Outside a job's run, nothing is made up.
    let plain = orc.enqueue("report-generation", json!({})).await.unwrap();
    assert_eq!(plain.traceparent, None);

    // A malformed traceparent is refused with the field named.
    let refused = orc
        .client()
        .enqueue(NewJob {
            traceparent: Some("00-not-a-trace".into()),
            ..NewJob::new("uppf-processing", json!({}))
        })
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("traceparent"), "{refused}");

    orc.shutdown().await.unwrap();
    drop(worker);
    app.shutdown().await;
}
