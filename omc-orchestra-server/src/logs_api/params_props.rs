//! Properties of the record parser: no body makes it panic, and the typed fast path and
//! the general path read every record the fast path takes the same way.

use super::{parse_plain, parse_records, to_record};
use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{json, Value};

/// A member value: usually of the right type, sometimes not.
fn member(right: Value) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        6 => Just(Some(right)),
        1 => Just(None),
        1 => Just(Some(Value::Null)),
        1 => Just(Some(json!(7))),
    ]
}

fn record() -> impl Strategy<Value = Value> {
    let level = prop::sample::select(vec!["error", "warn", "info", "http", "debug", "loud"]);
    let time = prop::sample::select(vec![
        "2026-01-02T03:04:05Z",
        "2026-01-02T03:04:05.123+02:00",
        "2026-01-02 03:04:05Z",
        "yesterday",
    ]);
    (
        level.prop_flat_map(|l| member(json!(l))),
        time.prop_flat_map(|t| member(json!(t))),
        member(json!("billing")),
        "[a-z ]{0,8}".prop_flat_map(|m| member(json!(m))),
        member(json!({"orderId": 7})),
        member(json!("req-1")),
    )
        .prop_map(|(level, timestamp, service, message, fields, request_id)| {
            let mut object = serde_json::Map::new();
            for (name, value) in [
                ("level", level),
                ("timestamp", timestamp),
                ("service", service),
                ("message", message),
                ("fields", fields),
                ("requestId", request_id),
            ] {
                if let Some(value) = value {
                    object.insert(name.to_owned(), value);
                }
            }
            Value::Object(object)
        })
}

proptest! {
    #[test]
    fn both_paths_read_a_record_alike(records in prop::collection::vec(record(), 1..4)) {
        let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let body = serde_json::to_vec(&records).unwrap();
        if let Some(plain) = parse_plain(&body, now) {
            let general: Vec<_> = records
                .iter()
                .map(|r| to_record(r.clone(), now).ok())
                .collect();
            let plain: Vec<_> = plain.into_iter().map(Some).collect();
            prop_assert_eq!(plain, general);
        }
        let _ = parse_records(&body, now);
    }

    #[test]
    fn no_body_panics(body in prop::collection::vec(any::<u8>(), 0..128)) {
        let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let _ = parse_records(&body, now);
    }
}
