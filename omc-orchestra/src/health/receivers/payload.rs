//! The JSON receivers expect: Alertmanager's v2 `POST /api/v2/alerts` body, as Prometheus
//! sends it, and the v4 body Alertmanager's own webhook receiver sends.

use super::super::Labels;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// One alert as the receivers see it: the rule's name and severity are labels, as in
/// Prometheus.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingAlert {
    /// `alertname`, `severity` and the series' labels (`service`, `instance`, …).
    pub labels: Labels,
    /// `summary`.
    pub annotations: Labels,
    /// When it started firing.
    pub starts_at: DateTime<Utc>,
    /// When it resolved, or for a firing alert until when it holds unless sent again.
    pub ends_at: DateTime<Utc>,
    /// Whether it resolved.
    pub resolved: bool,
}

impl OutgoingAlert {
    /// `firing` or `resolved`.
    pub fn status(&self) -> &'static str {
        if self.resolved {
            "resolved"
        } else {
            "firing"
        }
    }

    /// Alertmanager's fingerprint of the labels: FNV-1a 64 over the sorted names and
    /// values, each followed by a 0xff byte, in 16 hex digits.
    pub fn fingerprint(&self) -> String {
        const OFFSET: u64 = 14_695_981_039_346_656_037;
        const PRIME: u64 = 1_099_511_628_211;
        let mut hash = OFFSET;
        let mut add = |bytes: &[u8]| {
            for byte in bytes.iter().chain(&[0xff]) {
                hash ^= u64::from(*byte);
                hash = hash.wrapping_mul(PRIME);
            }
        };
        // A BTreeMap iterates in name order already.
        for (name, value) in &self.labels {
            add(name.as_bytes());
            add(value.as_bytes());
        }
        format!("{hash:016x}")
    }
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The body of `POST /api/v2/alerts`: a JSON array of postable alerts.
pub fn alertmanager_body(alerts: &[OutgoingAlert], generator_url: &str) -> Value {
    Value::Array(
        alerts
            .iter()
            .map(|alert| {
                let mut one = json!({
                    "labels": alert.labels,
                    "annotations": alert.annotations,
                    "startsAt": time(alert.starts_at),
                    "endsAt": time(alert.ends_at),
                });
                if !generator_url.is_empty() {
                    one["generatorURL"] = json!(generator_url);
                }
                one
            })
            .collect(),
    )
}

/// The label pairs every alert of `alerts` shares.
fn common(alerts: &[&OutgoingAlert], pick: impl Fn(&OutgoingAlert) -> &Labels) -> Labels {
    let Some(first) = alerts.first() else {
        return Labels::new();
    };
    pick(first)
        .iter()
        .filter(|(k, v)| alerts.iter().all(|a| pick(a).get(*k) == Some(*v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The webhook bodies for `alerts`, one per group as Alertmanager's default route makes
/// them (grouped by `alertname`), each in Alertmanager's webhook format version 4.
pub fn webhook_bodies(
    alerts: &[OutgoingAlert],
    receiver: &str,
    external_url: &str,
    generator_url: &str,
) -> Vec<Value> {
    let mut groups: BTreeMap<&str, Vec<&OutgoingAlert>> = BTreeMap::new();
    for alert in alerts {
        let name = alert.labels.get("alertname").map_or("", String::as_str);
        groups.entry(name).or_default().push(alert);
    }
    groups
        .into_iter()
        .map(|(name, group)| {
            let status = if group.iter().all(|a| a.resolved) {
                "resolved"
            } else {
                "firing"
            };
            let group_labels = Labels::from([("alertname".to_owned(), name.to_owned())]);
            json!({
                "version": "4",
                "groupKey": format!("{{}}:{{alertname={name:?}}}"),
                "truncatedAlerts": 0,
                "status": status,
                "receiver": receiver,
                "groupLabels": group_labels,
                "commonLabels": common(&group, |a| &a.labels),
                "commonAnnotations": common(&group, |a| &a.annotations),
                "externalURL": external_url,
                "alerts": group.iter().map(|alert| json!({
                    "status": alert.status(),
                    "labels": alert.labels,
                    "annotations": alert.annotations,
                    "startsAt": time(alert.starts_at),
                    // Alertmanager's zero time: a firing alert has no end yet.
                    "endsAt": if alert.resolved {
                        time(alert.ends_at)
                    } else {
                        "0001-01-01T00:00:00Z".to_owned()
                    },
                    "generatorURL": generator_url,
                    "fingerprint": alert.fingerprint(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn alert(name: &str, instance: &str, resolved: bool) -> OutgoingAlert {
        let at = |s| {
            Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, s)
                .single()
                .unwrap_or_default()
        };
        OutgoingAlert {
            labels: Labels::from([
                ("alertname".to_owned(), name.to_owned()),
                ("severity".to_owned(), "critical".to_owned()),
                ("service".to_owned(), "pricing-service".to_owned()),
                ("instance".to_owned(), instance.to_owned()),
            ]),
            annotations: Labels::from([("summary".to_owned(), "down".to_owned())]),
            starts_at: at(5),
            ends_at: at(45),
            resolved,
        }
    }

    #[test]
    fn alertmanager_v2_body_is_an_array_of_postable_alerts() {
        let body = alertmanager_body(
            &[alert("ServiceUnavailable", "p1", false)],
            "http://o/alerts",
        );
        assert_eq!(
            body,
            json!([{
                "labels": {"alertname": "ServiceUnavailable", "severity": "critical",
                           "service": "pricing-service", "instance": "p1"},
                "annotations": {"summary": "down"},
                "startsAt": "2026-01-02T03:04:05.000Z",
                "endsAt": "2026-01-02T03:04:45.000Z",
                "generatorURL": "http://o/alerts",
            }])
        );
        let body = alertmanager_body(&[alert("X", "p1", true)], "");
        assert!(body[0].get("generatorURL").is_none(), "{body}");
    }

    #[test]
    fn webhook_body_is_alertmanagers_version_4_one_per_alertname() {
        let alerts = [
            alert("ServiceUnavailable", "p1", false),
            alert("ServiceUnavailable", "p2", true),
            alert("DatabaseUnreachable", "p1", true),
        ];
        let bodies = webhook_bodies(&alerts, "ops", "http://o", "http://o/alerts");
        assert_eq!(bodies.len(), 2);
        let down = &bodies[1];
        assert_eq!(down["version"], "4");
        assert_eq!(down["groupKey"], "{}:{alertname=\"ServiceUnavailable\"}");
        assert_eq!(down["status"], "firing");
        assert_eq!(down["receiver"], "ops");
        assert_eq!(down["truncatedAlerts"], 0);
        assert_eq!(down["externalURL"], "http://o");
        assert_eq!(
            down["groupLabels"],
            json!({"alertname": "ServiceUnavailable"})
        );
        assert_eq!(
            down["commonLabels"],
            json!({"alertname": "ServiceUnavailable", "severity": "critical",
                   "service": "pricing-service"})
        );
        assert_eq!(down["commonAnnotations"], json!({"summary": "down"}));
        let first = &down["alerts"][0];
        assert_eq!(first["status"], "firing");
        assert_eq!(first["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(first["generatorURL"], "http://o/alerts");
        assert_eq!(first["fingerprint"].as_str().map(str::len), Some(16));
        assert_eq!(down["alerts"][1]["status"], "resolved");
        assert_eq!(down["alerts"][1]["endsAt"], "2026-01-02T03:04:45.000Z");
        assert_eq!(bodies[0]["status"], "resolved");
    }

    #[test]
    fn fingerprint_is_alertmanagers() {
        // Alertmanager's fingerprint of an empty label set is FNV-1a's offset basis, and
        // of {a="b"} FNV-1a over "a\xffb\xff".
        let mut empty = alert("X", "i", false);
        empty.labels.clear();
        assert_eq!(empty.fingerprint(), "cbf29ce484222325");
        let mut one = empty.clone();
        one.labels.insert("a".into(), "b".into());
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in b"a\xffb\xff" {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x100_0000_01b3);
        }
        assert_eq!(one.fingerprint(), format!("{hash:016x}"));
    }
}
