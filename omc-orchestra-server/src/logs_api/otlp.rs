//! `POST /v1/logs`: OTLP/HTTP log batches (protobuf or JSON, optionally gzipped) mapped onto
//! log records, so services instrumented with OpenTelemetry ship logs without an adapter.
//!
//! | OTLP | record |
//! | --- | --- |
//! | `timeUnixNano` (else `observedTimeUnixNano`, else now) | `timestamp` |
//! | `severityNumber` (else `severityText`) | `level`: 1–8 debug, 9–12 info, 13–16 warn, 17–24 error |
//! | `body` (a string as is; anything else as JSON) | `message` |
//! | resource `service.name` | `service` (`unknown_service` without one) |
//! | record attributes, `event.name` | `fields` |
//! | `traceId`, `spanId` (hex) | `traceId`, `spanId` |

use crate::http::error::ApiError;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use omc_orchestra::logs::{LogLevel, LogRecord};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use prost::Message;
use serde_json::{Map, Value};
use std::io::Read;

/// How a batch is encoded, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json`.
    Json,
}

impl Encoding {
    /// The encoding a `Content-Type` names; 415 naming the header for any other.
    pub(crate) fn of(content_type: Option<&str>) -> Result<Self, ApiError> {
        let essence = content_type
            .and_then(|t| t.split(';').next())
            .map(|t| t.trim().to_ascii_lowercase());
        match essence.as_deref() {
            Some("application/x-protobuf") => Ok(Self::Protobuf),
            Some("application/json") => Ok(Self::Json),
            _ => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Content-Type: OTLP/HTTP logs are `application/x-protobuf` or `application/json`",
            )),
        }
    }

    /// The body of a successful answer: an empty `ExportLogsServiceResponse`.
    pub(crate) fn success(self) -> (&'static str, Vec<u8>) {
        match self {
            Self::Protobuf => ("application/x-protobuf", Vec::new()),
            Self::Json => ("application/json", b"{}".to_vec()),
        }
    }
}

/// The body, gunzipped when `Content-Encoding: gzip`, at most `limit` bytes either way: a
/// small compressed body must not expand past what an uncompressed one may be.
pub(crate) fn decoded_body(
    body: &[u8],
    content_encoding: Option<&str>,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    match content_encoding
        .map(|e| e.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("identity") => Ok(body.to_vec()),
        Some("gzip") => {
            let mut out = Vec::new();
            let read = flate2::read::GzDecoder::new(body)
                .take(limit as u64 + 1)
                .read_to_end(&mut out);
            match read {
                Err(err) => Err(ApiError::invalid("body", format!("not valid gzip: {err}"))),
                Ok(n) if n > limit => Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("body: more than {limit} bytes once decompressed"),
                )),
                Ok(_) => Ok(out),
            }
        }
        Some(other) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("Content-Encoding: `{other}` is not supported; send gzip or none"),
        )),
    }
}

/// The records of an OTLP logs batch.
pub(crate) fn parse(
    body: &[u8],
    encoding: Encoding,
    now: DateTime<Utc>,
) -> Result<Vec<LogRecord>, ApiError> {
    let request = match encoding {
        Encoding::Protobuf => ExportLogsServiceRequest::decode(body)
            .map_err(|err| ApiError::invalid("body", format!("not an OTLP logs request: {err}")))?,
        Encoding::Json => serde_json::from_slice::<ExportLogsServiceRequest>(body)
            .map_err(|err| ApiError::invalid("body", format!("not an OTLP logs request: {err}")))?,
    };
    let mut records = Vec::new();
    for resource_logs in request.resource_logs {
        let resource = resource_logs
            .resource
            .map(|r| r.attributes)
            .unwrap_or_default();
        let service = resource
            .iter()
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(name) if !name.trim().is_empty() => {
                    Some(name.clone())
                }
                _ => None,
            })
            .unwrap_or_else(|| "unknown_service".to_owned());
        for scope_logs in resource_logs.scope_logs {
            for log in scope_logs.log_records {
                let nanos = [log.time_unix_nano, log.observed_time_unix_nano]
                    .into_iter()
                    .find(|&n| n != 0);
                let timestamp = nanos
                    .and_then(|n| i64::try_from(n).ok())
                    .map_or(now, DateTime::from_timestamp_nanos);
                let mut fields = attributes(log.attributes);
                if !log.event_name.is_empty() {
                    fields.insert("event.name".into(), Value::String(log.event_name));
                }
                let mut record = LogRecord::new(
                    timestamp,
                    level(log.severity_number, &log.severity_text),
                    service.clone(),
                    message(log.body),
                );
                record.fields = fields;
                record.trace_id = hex_id(&log.trace_id, 16);
                record.span_id = hex_id(&log.span_id, 8);
                records.push(record);
            }
        }
    }
    Ok(records)
}

/// OTLP's severity numbers onto the record's levels; the text when the number is unset.
fn level(number: i32, text: &str) -> LogLevel {
    match number {
        1..=8 => LogLevel::Debug,
        9..=12 => LogLevel::Info,
        13..=16 => LogLevel::Warn,
        17..=24 => LogLevel::Error,
        _ => match text.to_ascii_lowercase().as_str() {
            "trace" | "debug" => LogLevel::Debug,
            "warn" | "warning" => LogLevel::Warn,
            "error" | "fatal" | "critical" => LogLevel::Error,
            _ => LogLevel::Info,
        },
    }
}

fn message(body: Option<AnyValue>) -> String {
    match json(body) {
        Value::String(text) => text,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn attributes(list: Vec<KeyValue>) -> Map<String, Value> {
    list.into_iter()
        .map(|kv| (kv.key, json(kv.value)))
        .collect()
}

/// An OTLP value as JSON; bytes as lowercase hex.
fn json(value: Option<AnyValue>) -> Value {
    match value.and_then(|v| v.value) {
        None | Some(any_value::Value::StringValueStrindex(_)) => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::String(s),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(b),
        Some(any_value::Value::IntValue(i)) => Value::from(i),
        Some(any_value::Value::DoubleValue(d)) => Value::from(d),
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.into_iter().map(|v| json(Some(v))).collect())
        }
        Some(any_value::Value::KvlistValue(list)) => Value::Object(attributes(list.values)),
        Some(any_value::Value::BytesValue(bytes)) => Value::String(hex(&bytes)),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A trace or span id of `len` bytes as hex; `None` when absent, all zero or malformed.
fn hex_id(bytes: &[u8], len: usize) -> Option<String> {
    (bytes.len() == len && bytes.iter().any(|&b| b != 0)).then(|| hex(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_map_onto_levels() {
        assert_eq!(level(5, ""), LogLevel::Debug);
        assert_eq!(level(9, "ignored"), LogLevel::Info);
        assert_eq!(level(13, ""), LogLevel::Warn);
        assert_eq!(level(21, ""), LogLevel::Error);
        assert_eq!(level(0, "WARNING"), LogLevel::Warn);
        assert_eq!(level(0, ""), LogLevel::Info);
    }

    #[test]
    fn content_types_and_encodings_are_checked() {
        assert_eq!(
            Encoding::of(Some("application/json; charset=utf-8")).unwrap(),
            Encoding::Json
        );
        assert!(Encoding::of(Some("text/plain")).is_err());
        assert!(Encoding::of(None).is_err());
        assert!(decoded_body(b"x", Some("br"), 10).is_err());
        assert!(decoded_body(b"not gzip", Some("gzip"), 10).is_err());
        let mut zipped = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut zipped, &[b'a'; 100]).unwrap();
        let zipped = zipped.finish().unwrap();
        assert_eq!(decoded_body(&zipped, Some("gzip"), 100).unwrap().len(), 100);
        assert!(decoded_body(&zipped, Some("gzip"), 99).is_err());
    }

    #[test]
    fn garbage_is_a_clear_error_not_a_panic() {
        let now = Utc::now();
        assert!(parse(b"\xff\xff\xff", Encoding::Protobuf, now).is_err());
        assert!(parse(b"[1,2]", Encoding::Json, now).is_err());
        assert!(parse(b"{}", Encoding::Json, now).unwrap().is_empty());
    }
}
