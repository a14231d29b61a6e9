//! OpenTelemetry end to end: the servers export spans to a real OTLP/HTTP receiver (a small
//! one here, decoding with `opentelemetry-proto`), one trace runs from a caller through the
//! gateway, a service, the jobs server and a job run; OTLP log batches land in the log
//! store.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use omc_orchestra::jobs::Job;
use omc_orchestra::telemetry::{self, ExportSettings};
use omc_orchestra::testkit::eventually;
use omc_orchestra_server::app::{App, Config, ServerKind};
use omc_orchestra_server::jobs_dispatch::JobRoute;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A span as the receiver got it.
#[derive(Debug, Clone)]
struct Received {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    service: String,
    attributes: Vec<(String, String)>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

type Spans = Arc<Mutex<Vec<Received>>>;

/// An OTLP/HTTP traces receiver on a free port: its base URL and what it got.
async fn receiver() -> (String, Spans) {
    async fn take(State(spans): State<Spans>, body: Bytes) -> Vec<u8> {
        let request = ExportTraceServiceRequest::decode(body).expect("an OTLP traces request");
        for resource in request.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    let attributes = span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), format!("{:?}", kv.value)))
                        .collect();
                    spans.lock().unwrap().push(Received {
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        service: service.clone(),
                        attributes,
                    });
                }
            }
        }
        Vec::new()
    }
    let spans = Spans::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/v1/traces", post(take))
        .with_state(spans.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, spans)
}

/// What the pricing service saw: the `traceparent` of each call, by path.
type Calls = Arc<Mutex<Vec<(String, String)>>>;

/// A service that, called through the gateway, enqueues a job on the jobs server carrying
/// the `traceparent` it was given (as OpenTelemetry's HTTP instrumentation does), and that
/// runs the job when the jobs server dispatches it.
async fn pricing_service(jobs: String) -> (u16, Calls) {
    #[derive(Clone)]
    struct Service {
        jobs: String,
        calls: Calls,
    }
    fn traceparent(headers: &HeaderMap) -> String {
        headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }
    async fn price(State(svc): State<Service>, headers: HeaderMap) -> Json<Value> {
        let trace = traceparent(&headers);
        svc.calls
            .lock()
            .unwrap()
            .push(("/price".into(), trace.clone()));
        let job: Value = reqwest::Client::new()
            .post(format!("{}/jobs", svc.jobs))
            .header("traceparent", trace)
            .json(&json!({"type": "price-calculation", "data": {"stationId": "STN001"}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Json(job)
    }
    async fn run(State(svc): State<Service>, headers: HeaderMap) -> Json<Value> {
        svc.calls
            .lock()
            .unwrap()
            .push(("/run".into(), traceparent(&headers)));
        Json(json!({"total": 7.45}))
    }
    let calls = Calls::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = Router::new()
        .route("/price", post(price))
        .route("/run", post(run))
        .with_state(Service {
            jobs,
            calls: calls.clone(),
        });
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_caller_through_the_gateway_a_service_and_a_job() {
    let (collector, spans) = receiver().await;
    let export = telemetry::install(ExportSettings {
        endpoint: collector,
        traces_path_given: false,
        service: "orchestra".into(),
        batch_delay: Some(Duration::from_millis(50)),
    })
    .unwrap();
    let mut config = Config::ephemeral();
    config.job_routes.insert(
        "price-calculation".into(),
        JobRoute {
            service: "pricing-service".into(),
            path: "/run".into(),
        },
    );
    let app = App::start(config, &ServerKind::ALL).await.unwrap();
    let (port, calls) = pricing_service(app.url(ServerKind::Jobs)).await;
    let http = reqwest::Client::new();
    let registered = http
        .post(format!(
            "{}/registry/register",
            app.url(ServerKind::Registry)
        ))
        .json(&json!({"name": "pricing-service", "host": "127.0.0.1", "port": port}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let answer = http
        .post(format!(
            "{}/api/pricing-service/price",
            app.url(ServerKind::Gateway)
        ))
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let job: Job = answer.json().await.unwrap();
    // The job keeps the trace it was enqueued in.
    let kept = job.traceparent.clone().unwrap_or_default();
    assert!(kept.starts_with(&format!("00-{trace_id}-")), "{kept}");

    let find = |name: &'static str| {
        let spans = spans.clone();
        move || {
            let found = spans
                .lock()
                .unwrap()
                .iter()
                .find(|s| s.name.starts_with(name))
                .cloned();
            async move { found }
        }
    };
    let wait = Duration::from_secs(20);
    let gateway = eventually("the gateway's span", wait, find("POST /api/")).await;
    assert_eq!(gateway.trace_id, trace_id);
    assert_eq!(gateway.parent_span_id, caller_span, "{gateway:?}");
    assert!(gateway.service.contains("orchestra"), "{gateway:?}");
    let attribute = |span: &Received, key: &str| {
        span.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert!(attribute(&gateway, "orchestra.service").contains("pricing-service"));
    assert!(attribute(&gateway, "http.response.status_code").contains("200"));

    // The service was called as a child of the gateway's span.
    let seen = calls.lock().unwrap().clone();
    let (_, price_trace) = seen.iter().find(|(path, _)| path == "/price").unwrap();
    assert_eq!(
        price_trace,
        &format!("00-{trace_id}-{}-01", gateway.span_id)
    );

    // The jobs server's span for the enqueue continues the service's call.
    let enqueue = eventually("the jobs server's span", wait, find("POST /jobs")).await;
    assert_eq!(enqueue.trace_id, trace_id);
    assert_eq!(enqueue.parent_span_id, gateway.span_id);

    // The job runs in a span of the same trace, and its dispatch call carries it on.
    let run = eventually("the job run's span", wait, find("job price-calculation")).await;
    assert_eq!(run.trace_id, trace_id);
    assert_eq!(run.parent_span_id, enqueue.span_id);
    assert!(attribute(&run, "orchestra.job.outcome").contains("completed"));
    let dispatched = eventually("the dispatch call", wait, || {
        let found = calls
            .lock()
            .unwrap()
            .iter()
            .find(|(path, _)| path == "/run")
            .map(|(_, trace)| trace.clone());
        async move { found }
    })
    .await;
    assert_eq!(dispatched, format!("00-{trace_id}-{}-01", run.span_id));

    // A job the SDK's worker runs gets its span in the same trace, and what its handler
    // enqueues continues that span.
    let client = omc_orchestra_client::OrchestraClient::new(app.url(ServerKind::Registry))
        .with_jobs_url(app.url(ServerKind::Jobs));
    let orc = omc_orchestra_client::Orchestra::with_client("inventory-service", client);
    let sync = orc
        .client()
        .enqueue(omc_orchestra_client::NewJob {
            traceparent: Some(format!("00-{trace_id}-{caller_span}-01")),
            ..omc_orchestra_client::NewJob::new("inventory-sync", json!({}))
        })
        .await
        .unwrap();
    let made = orc.clone();
    let worker = orc
        .worker()
        .handle("inventory-sync", move |_job| {
            let orc = made.clone();
            async move {
                let follow = orc.enqueue("report-generation", json!({})).await?;
                Ok(json!({"follow": follow.traceparent}))
            }
        })
        .spawn();
    let sdk_run = eventually("the SDK worker's span", wait, find("job inventory-sync")).await;
    assert_eq!(sdk_run.trace_id, trace_id);
    assert_eq!(sdk_run.parent_span_id, caller_span);
    let done = eventually("the sync done", wait, || {
        let orc = orc.clone();
        let id = sync.id.clone();
        async move {
            let job = orc.client().job(&id).await.ok()?;
            (job.state == omc_orchestra_client::JobState::Completed).then_some(job)
        }
    })
    .await;
    // The follow-up was enqueued inside the jobs server's span of the SDK's call, a child
    // of the run's span.
    let follow = done.result.unwrap()["follow"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let parent = follow
        .strip_prefix(&format!("00-{trace_id}-"))
        .and_then(|rest| rest.strip_suffix("-01"))
        .unwrap_or_else(|| panic!("the run's trace: {follow}"))
        .to_owned();
    let enqueued = eventually("the enqueue's span", wait, || {
        let (spans, parent) = (spans.clone(), parent.clone());
        async move {
            let found = spans
                .lock()
                .unwrap()
                .iter()
                .find(|s| s.span_id == parent)
                .cloned();
            found
        }
    })
    .await;
    assert_eq!(enqueued.name, "POST /jobs");
    assert_eq!(enqueued.parent_span_id, sdk_run.span_id);
    orc.shutdown().await.unwrap();
    drop(worker);

    app.shutdown().await;
    tokio::task::spawn_blocking(move || export.shutdown())
        .await
        .unwrap();
}
