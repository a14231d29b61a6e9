//! `POST /v1/logs` on the logging server: OTLP/HTTP log batches in protobuf, JSON and
//! gzip land in the store and are found by trace id, mapped onto the record's fields.

use omc_orchestra_server::app::{App, Config, ServerKind};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::{json, Value};
use std::io::Write;

fn attribute(key: &str, value: Option<AnyValue>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value,
        ..KeyValue::default()
    }
}

fn text(value: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(value.into())),
    })
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// One batch of one record from `service`, in trace `trace_id`.
fn batch(service: &str, message: &str, trace_id: &str) -> ExportLogsServiceRequest {
    let record = LogRecord {
        time_unix_nano: 1_764_000_000_000_000_000,
        severity_number: 17,
        severity_text: "ERROR".into(),
        body: text(message),
        attributes: vec![
            attribute("station", text("STN003")),
            attribute(
                "litres",
                Some(AnyValue {
                    value: Some(any_value::Value::IntValue(42)),
                }),
            ),
        ],
        trace_id: hex(trace_id),
        span_id: hex("00f067aa0ba902b7"),
        ..LogRecord::default()
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![attribute("service.name", text(service))],
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![record],
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
}

async fn by_trace(logs: &str, trace_id: &str) -> Vec<Value> {
    let page: Value = reqwest::get(format!("{logs}/logs?traceId={trace_id}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["records"]
        .as_array()
        .or_else(|| page["items"].as_array())
        .cloned()
        .unwrap_or_else(|| panic!("a page of records: {page}"))
}

#[tokio::test]
async fn otlp_batches_in_protobuf_json_and_gzip_are_stored_and_found_by_trace() {
    let app = App::start(Config::ephemeral(), &[ServerKind::Logging])
        .await
        .unwrap();
    let logs = app.url(ServerKind::Logging);
    let http = reqwest::Client::new();
    let url = format!("{logs}/v1/logs");

    // Protobuf.
    let proto_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let answer = http
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .body(batch("pricing-service", "price feed stale", proto_trace).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], "application/x-protobuf");
    let found = by_trace(&logs, proto_trace).await;
    assert_eq!(found.len(), 1, "{found:?}");
    let record = &found[0];
    assert_eq!(record["service"], "pricing-service");
    assert_eq!(record["message"], "price feed stale");
    assert_eq!(record["level"], "error");
    assert_eq!(record["spanId"], "00f067aa0ba902b7");
    assert_eq!(record["fields"]["station"], "STN003");
    assert_eq!(record["fields"]["litres"], 42);
    assert!(
        record["timestamp"]
            .as_str()
            .unwrap()
            .starts_with("2025-11-24"),
        "{record}"
    );

    // JSON, as OTLP/HTTP's JSON encoding spells it (hex ids, camelCase, values by type).
    let json_trace = "5bf92f3577b34da6a3ce929d0e0e4737";
    let body = json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "inventory-service"}}]},
        "scopeLogs": [{"logRecords": [{
            "timeUnixNano": "1764000000000000000",
            "severityNumber": 13,
            "body": {"stringValue": "tank 4 below reorder level"},
            "attributes": [{"key": "tank", "value": {"intValue": "4"}}],
            "traceId": json_trace,
            "spanId": "10f067aa0ba902b7"
        }]}]
    }]});
    let answer = http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    let found = by_trace(&logs, json_trace).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["service"], "inventory-service");
    assert_eq!(found[0]["level"], "warn");
    assert_eq!(found[0]["message"], "tank 4 below reorder level");
    assert_eq!(found[0]["fields"]["tank"], 4);

    // Gzipped protobuf, as collectors send it by default.
    let gzip_trace = "6bf92f3577b34da6a3ce929d0e0e4738";
    let mut zipped = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    zipped
        .write_all(&batch("uppf-service", "claim 7 rejected", gzip_trace).encode_to_vec())
        .unwrap();
    let answer = http
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(zipped.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(by_trace(&logs, gzip_trace).await.len(), 1);

    // Bad input: a clear JSON error naming what is wrong.
    let answer = http
        .post(&url)
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 415);
    let error: Value = answer.json().await.unwrap();
    assert!(error.to_string().contains("Content-Type"), "{error}");
    let answer = http
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .body(vec![0xff, 0xff, 0xff])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let error: Value = answer.json().await.unwrap();
    assert!(error.to_string().contains("body"), "{error}");
    // A record the store refuses is refused as `POST /logs` refuses it.
    let long = "x".repeat(70 * 1024);
    let answer = http
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .body(batch("pricing-service", &long, proto_trace).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    app.shutdown().await;
}
