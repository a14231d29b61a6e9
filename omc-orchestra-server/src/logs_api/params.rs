//! The wire format of the logging server: query parameters and incoming records.

use crate::http::ApiError;
use chrono::{DateTime, Utc};
use omc_orchestra::logs::{LogCategory, LogLevel, LogQuery, LogRecord};
use serde::Deserialize;
use serde_json::{Map, Value};

/// A record as services post it: like [`LogRecord`], with the timestamp optional (the
/// server's time when absent), `metadata` accepted for `fields`, and any other top-level
/// member taken as a field (Winston's JSON format spreads metadata at the top level).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncomingLog {
    /// When it happened; now when absent.
    #[serde(default)]
    pub timestamp: Option<DateTime<Utc>>,
    /// Level: `error`, `warn`, `info`, `http`, `verbose` or `debug`.
    pub level: LogLevel,
    /// Category; `application` when absent.
    #[serde(default)]
    pub category: LogCategory,
    /// The service that logged it.
    pub service: String,
    /// The message.
    pub message: String,
    /// Structured fields.
    #[serde(default, alias = "metadata")]
    #[schema(value_type = Object)]
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// Request id.
    #[serde(default)]
    pub request_id: Option<String>,
    /// Trace id.
    #[serde(default)]
    pub trace_id: Option<String>,
    /// Span id.
    #[serde(default)]
    pub span_id: Option<String>,
    /// Other top-level members, taken as fields.
    #[serde(flatten)]
    #[schema(ignore)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Parse a `POST /logs` body: one record or an array of them. A failure names the field
/// (`level`, `message`, …) and, in an array, the index of the record.
pub(super) fn parse_records(body: &[u8], now: DateTime<Utc>) -> Result<Vec<LogRecord>, ApiError> {
    if let Some(records) = parse_plain(body, now) {
        return Ok(records);
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|err| ApiError::invalid("body", format!("not valid JSON: {err}")))?;
    let (items, many) = match value {
        Value::Array(items) => (items, true),
        one @ Value::Object(_) => (vec![one], false),
        _ => {
            return Err(ApiError::invalid(
                "body",
                "must be a log record or an array of them",
            ))
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            to_record(item, now).map_err(|(field, reason)| {
                let reason = if many {
                    format!("record {index}: {reason}")
                } else {
                    reason
                };
                ApiError::invalid(field, reason)
            })
        })
        .collect()
}

/// A record with only the members a record has: the fast path, one typed pass.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Plain {
    #[serde(default)]
    timestamp: Option<DateTime<Utc>>,
    level: LogLevel,
    #[serde(default)]
    category: LogCategory,
    service: String,
    message: String,
    #[serde(default)]
    fields: Map<String, Value>,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    trace_id: Option<String>,
    #[serde(default)]
    span_id: Option<String>,
}

impl Plain {
    fn into_record(self, now: DateTime<Utc>) -> LogRecord {
        LogRecord {
            timestamp: self.timestamp.unwrap_or(now),
            level: self.level,
            category: self.category,
            service: self.service,
            message: self.message,
            fields: self.fields,
            request_id: self.request_id,
            trace_id: self.trace_id,
            span_id: self.span_id,
        }
    }
}

/// The records of a body whose records have only the usual members; `None` for anything
/// else (extra members, `metadata`, errors), which the general path handles and explains.
fn parse_plain(body: &[u8], now: DateTime<Utc>) -> Option<Vec<LogRecord>> {
    match body.iter().find(|b| !b.is_ascii_whitespace())? {
        b'[' => serde_json::from_slice::<Vec<Plain>>(body)
            .ok()
            .map(|plain| plain.into_iter().map(|p| p.into_record(now)).collect()),
        b'{' => serde_json::from_slice::<Plain>(body)
            .ok()
            .map(|plain| vec![plain.into_record(now)]),
        _ => None,
    }
}

type FieldError = (&'static str, String);

/// One record from its JSON object, taking members out rather than deserializing twice
/// (this is the hot path of batch ingest).
fn to_record(item: Value, now: DateTime<Utc>) -> Result<LogRecord, FieldError> {
    let Value::Object(mut object) = item else {
        return Err(("body", "each record must be a JSON object".into()));
    };
    let level = match object.remove("level") {
        Some(Value::String(level)) => level.parse::<LogLevel>().map_err(reason_of("level"))?,
        Some(_) => return Err(("level", "must be a string".into())),
        None => return Err(("level", "is required".into())),
    };
    let category = match object.remove("category") {
        None | Some(Value::Null) => LogCategory::default(),
        Some(Value::String(c)) => c.parse::<LogCategory>().map_err(reason_of("category"))?,
        Some(_) => return Err(("category", "must be a string".into())),
    };
    let timestamp = match object.remove("timestamp") {
        None | Some(Value::Null) => now,
        Some(Value::String(t)) => DateTime::parse_from_rfc3339(&t)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| ("timestamp", "must be an RFC 3339 time".to_owned()))?,
        Some(_) => return Err(("timestamp", "must be an RFC 3339 string".into())),
    };
    let service = required_string(&mut object, "service")?;
    let message = required_string(&mut object, "message")?;
    let request_id = optional_string(&mut object, "requestId")?;
    let trace_id = optional_string(&mut object, "traceId")?;
    let span_id = optional_string(&mut object, "spanId")?;
    let mut fields = Map::new();
    for name in ["fields", "metadata"] {
        match object.remove(name) {
            None | Some(Value::Null) => {}
            Some(Value::Object(given)) => fields.extend(given),
            Some(_) => return Err((name, "must be an object".into())),
        }
    }
    for (name, value) in object {
        fields.entry(name).or_insert(value);
    }
    Ok(LogRecord {
        timestamp,
        level,
        category,
        service,
        message,
        fields,
        request_id,
        trace_id,
        span_id,
    })
}

fn reason_of(field: &'static str) -> impl Fn(omc_orchestra::Error) -> FieldError {
    move |err| match err {
        omc_orchestra::Error::Invalid { reason, .. } => (field, reason),
        other => (field, other.to_string()),
    }
}

fn required_string(
    object: &mut Map<String, Value>,
    field: &'static str,
) -> Result<String, FieldError> {
    match object.remove(field) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err((field, "must be a string".into())),
        None => Err((field, "is required".into())),
    }
}

fn optional_string(
    object: &mut Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, FieldError> {
    match object.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err((field, "must be a string".into())),
    }
}

/// What `GET /logs`, `/logs/stats` and `/logs/stream` take besides the filters.
#[derive(Debug, Default)]
pub(super) struct Extras {
    /// `top`: top error messages in stats.
    pub top: Option<usize>,
    /// `window`: stats over the last `30s`, `15m`, `1h`, `7d`; at most [`MAX_WINDOW_DAYS`].
    pub window: Option<chrono::Duration>,
}

/// The longest stats window, in days: a year answers any question about recent logs, and
/// the bound keeps `now - window` far from the limits of time arithmetic.
pub(super) const MAX_WINDOW_DAYS: u64 = 365;

/// Parse the filters of a query string: `level`, `category`, `service`, `since`,
/// `until` (RFC 3339), `text`, `words`, `requestId`, `traceId`, `limit`, `cursor`,
/// `field.NAME=value` (field equality), and for stats `top` and `window`.
pub(super) fn parse_query(raw: Option<&str>) -> Result<(LogQuery, Extras), ApiError> {
    let mut query = LogQuery::default();
    let mut extras = Extras::default();
    for (name, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let value = value.into_owned();
        let invalid = |reason: &str| ApiError::invalid(&name, reason.to_owned());
        let time = |v: &str| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| invalid("must be an RFC 3339 time, e.g. 2026-03-01T12:00:00Z"))
        };
        let number = |v: &str| {
            v.parse::<usize>()
                .map_err(|_| invalid("must be a non-negative integer"))
        };
        match name.as_ref() {
            "level" => query.level = Some(value.parse().map_err(ApiError::from)?),
            "category" => query.category = Some(value.parse().map_err(ApiError::from)?),
            "service" => query.service = Some(value),
            "since" => query.since = Some(time(&value)?),
            "until" => query.until = Some(time(&value)?),
            "text" => query.text = Some(value),
            "words" => query.words = Some(value),
            "requestId" => query.request_id = Some(value),
            "traceId" => query.trace_id = Some(value),
            "limit" => query.limit = Some(number(&value)?),
            "cursor" => query.cursor = Some(value),
            "top" => extras.top = Some(number(&value)?),
            "window" => extras.window = Some(parse_window(&value).map_err(|r| invalid(&r))?),
            other => match other.strip_prefix("field.") {
                Some(field) if !field.is_empty() => {
                    query.fields.insert(field.to_owned(), value);
                }
                _ => return Err(invalid("unknown parameter")),
            },
        }
    }
    Ok((query, extras))
}

/// `30s`, `15m`, `1h` or `7d`, more than nothing and at most [`MAX_WINDOW_DAYS`]; else
/// why not.
fn parse_window(value: &str) -> Result<chrono::Duration, String> {
    let malformed = || "must be a number and a unit: 30s, 15m, 1h, 7d".to_owned();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(malformed)?;
    let (n, unit) = value.split_at(split);
    let seconds_per_unit: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(malformed()),
    };
    // Digits too many for a u64 are still a number, only far too long a window.
    let too_long = || format!("must be at most {MAX_WINDOW_DAYS}d");
    let n: u64 = match n.parse() {
        Ok(n) => n,
        Err(_) if !n.is_empty() => return Err(too_long()),
        Err(_) => return Err(malformed()),
    };
    if n == 0 {
        return Err("must be longer than nothing".to_owned());
    }
    let max_seconds = MAX_WINDOW_DAYS * 86_400;
    match n.checked_mul(seconds_per_unit) {
        Some(seconds) if seconds <= max_seconds => i64::try_from(seconds)
            .ok()
            .and_then(chrono::Duration::try_seconds)
            .ok_or_else(too_long),
        _ => Err(too_long()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows() {
        assert_eq!(parse_window("15m").ok(), chrono::Duration::try_minutes(15));
        assert_eq!(parse_window("2d").ok(), chrono::Duration::try_days(2));
        assert_eq!(parse_window("365d").ok(), chrono::Duration::try_days(365));
        assert_eq!(
            parse_window(&format!("{}s", 365 * 86_400)).ok(),
            chrono::Duration::try_days(365)
        );
        for bad in ["0s", "1w", "h", "", "s", "-1s", "1.5h", "1 h"] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
        for long in [
            "366d",
            "8761h",
            "9000000000000000s",
            "9223372036854775807s",
            "18446744073709551615d",
            "99999999999999999999999s",
        ] {
            assert_eq!(parse_window(long), Err("must be at most 365d".to_owned()));
        }
    }

    #[test]
    fn query_fields() {
        let (q, _) = parse_query(Some(
            "service=pricing-service&level=warn&field.stationId=STN001",
        ))
        .unwrap();
        assert_eq!(q.service.as_deref(), Some("pricing-service"));
        assert_eq!(q.level, Some(LogLevel::Warn));
        assert_eq!(q.fields["stationId"], "STN001");
        let err = parse_query(Some("level=fatal")).unwrap_err();
        assert_eq!(err.body.details[0]["field"], "level");
        let err = parse_query(Some("colour=red")).unwrap_err();
        assert_eq!(err.body.details[0]["field"], "colour");
    }
}

#[cfg(test)]
#[path = "params_props.rs"]
mod props;
