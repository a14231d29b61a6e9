//! The gateway's figures for `orchestra status`: proxied requests/s, 5xx/s and p50/p99
//! latency between two scrapes of its `orchestra_gateway_*` metrics (the proxied requests
//! only, never its admin calls), and the breakers that are not closed.
//!
//! Both are read through the registry, which forwards `/dashboard/api/gateway/…` to a
//! gateway running beside it, as the dashboard does.

use serde_json::{json, Value};
use std::time::Duration;

const REQUESTS: &str = "orchestra_gateway_requests_total{";
const BUCKETS: &str = "orchestra_gateway_request_duration_seconds_bucket{";

/// The proxied requests' counters at one scrape, summed over routes and services.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Scrape {
    /// Proxied requests so far.
    requests: f64,
    /// Of them, answered 5xx.
    errors: f64,
    /// Cumulative latency buckets: upper bound (seconds) and count, by bound.
    buckets: Vec<(f64, f64)>,
}

impl Scrape {
    /// The counters in a Prometheus text body.
    pub(crate) fn parse(body: &str) -> Self {
        let mut scrape = Scrape::default();
        for line in body.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let value: f64 = value.parse().unwrap_or(0.0);
            if let Some(labels) = series.strip_prefix(REQUESTS) {
                scrape.requests += value;
                if label(labels, "status").is_some_and(|s| s.starts_with('5')) {
                    scrape.errors += value;
                }
            } else if let Some(labels) = series.strip_prefix(BUCKETS) {
                let bound = match label(labels, "le") {
                    Some("+Inf") => f64::INFINITY,
                    Some(le) => match le.parse() {
                        Ok(le) => le,
                        Err(_) => continue,
                    },
                    None => continue,
                };
                match scrape.buckets.iter_mut().find(|(b, _)| *b == bound) {
                    Some((_, count)) => *count += value,
                    None => scrape.buckets.push((bound, value)),
                }
            }
        }
        scrape.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        scrape
    }

    /// The upper bound (ms) of the bucket holding quantile `q` of the requests answered
    /// since `before`; `None` without any, or when it lies past the last finite bound.
    fn quantile_ms(&self, before: &Scrape, q: f64) -> Option<f64> {
        let count = |bound: f64| {
            let now = self.bucket(bound);
            now - before.bucket(bound)
        };
        let total = count(f64::INFINITY);
        if total <= 0.0 {
            return None;
        }
        self.buckets
            .iter()
            .map(|(bound, _)| *bound)
            .find(|&bound| count(bound) >= q * total)
            .filter(|bound| bound.is_finite())
            .map(|bound| bound * 1000.0)
    }

    fn bucket(&self, bound: f64) -> f64 {
        self.buckets
            .iter()
            .find(|(b, _)| *b == bound)
            .map_or(0.0, |(_, count)| *count)
    }
}

/// The label `name`'s value in `labels` (`a="x",b="y"}`).
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let rest = &labels[start..];
    rest.find('"').map(|end| &rest[..end])
}

/// The figures between `before` and `after`, `elapsed` apart, with the breakers.
pub(crate) fn figures(
    before: &Scrape,
    after: &Scrape,
    elapsed: Duration,
    breakers: &Value,
) -> Value {
    let seconds = elapsed.as_secs_f64().max(f64::EPSILON);
    let rate = |now: f64, then: f64| ((now - then).max(0.0) / seconds * 100.0).round() / 100.0;
    let not_closed: Vec<Value> = breakers
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["phase"] != "closed")
        .map(|b| json!({"service": b["service"], "instance": b["instance"], "phase": b["phase"]}))
        .collect();
    json!({
        "sampleSeconds": (seconds * 1000.0).round() / 1000.0,
        "requestsPerSecond": rate(after.requests, before.requests),
        "errorsPerSecond": rate(after.errors, before.errors),
        "p50Ms": after.quantile_ms(before, 0.5),
        "p99Ms": after.quantile_ms(before, 0.99),
        "requestsTotal": after.requests.round() as u64,
        "errorsTotal": after.errors.round() as u64,
        "breakers": breakers.as_array().map_or(0, Vec::len),
        "openBreakers": not_closed,
    })
}

/// The status screen's line for `gateway` figures.
pub(crate) fn line(gateway: &Value) -> String {
    let ms = |v: &Value| match v.as_f64() {
        Some(ms) if ms < 1.0 => format!("≤ {ms:.1} ms"),
        Some(ms) => format!("≤ {ms:.0} ms"),
        None => "–".to_owned(),
    };
    let open: Vec<String> = gateway["openBreakers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            format!(
                "{} {} ({})",
                super::cell(&b["service"]),
                super::cell(&b["instance"]),
                super::cell(&b["phase"])
            )
        })
        .collect();
    format!(
        "{:.1} proxied req/s, {:.2} 5xx/s, p50 {} p99 {} over {}s; {} proxied since start; breakers: {}",
        gateway["requestsPerSecond"].as_f64().unwrap_or(0.0),
        gateway["errorsPerSecond"].as_f64().unwrap_or(0.0),
        ms(&gateway["p50Ms"]),
        ms(&gateway["p99Ms"]),
        super::cell(&gateway["sampleSeconds"]),
        super::cell(&gateway["requestsTotal"]),
        if open.is_empty() {
            "none open".to_owned()
        } else {
            format!("{} not closed: {}", open.len(), open.join(", "))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"# TYPE orchestra_gateway_requests_total counter
orchestra_gateway_requests_total{route="/api/a",service="a",status="200"} 10
orchestra_gateway_requests_total{route="/api/b",service="b",status="502"} 1
orchestra_gateway_request_duration_seconds_bucket{route="/api/a",service="a",le="0.005"} 10
orchestra_gateway_request_duration_seconds_bucket{route="/api/a",service="a",le="0.01"} 10
orchestra_gateway_request_duration_seconds_bucket{route="/api/a",service="a",le="+Inf"} 10
orchestra_gateway_request_duration_seconds_bucket{route="/api/b",service="b",le="0.005"} 0
orchestra_gateway_request_duration_seconds_bucket{route="/api/b",service="b",le="0.01"} 1
orchestra_gateway_request_duration_seconds_bucket{route="/api/b",service="b",le="+Inf"} 1
orchestra_http_requests_total{path="/gateway/breakers",status="200"} 99
"#;

    #[test]
    fn rates_and_quantiles_come_from_the_proxied_requests_between_two_scrapes() {
        let before = Scrape::parse(BEFORE);
        assert_eq!((before.requests, before.errors), (11.0, 1.0));
        let after = Scrape::parse(
            &BEFORE
                .replace("status=\"200\"} 10", "status=\"200\"} 28")
                .replace("status=\"502\"} 1", "status=\"502\"} 3")
                .replace("le=\"0.005\"} 10", "le=\"0.005\"} 28")
                .replace("le=\"0.01\"} 10", "le=\"0.01\"} 28")
                .replace(
                    "service=\"a\",le=\"+Inf\"} 10",
                    "service=\"a\",le=\"+Inf\"} 28",
                )
                .replace(
                    "service=\"b\",le=\"0.01\"} 1",
                    "service=\"b\",le=\"0.01\"} 2",
                )
                .replace(
                    "service=\"b\",le=\"+Inf\"} 1",
                    "service=\"b\",le=\"+Inf\"} 3",
                ),
        );
        let figures = figures(
            &before,
            &after,
            Duration::from_secs(2),
            &json!([
                {"service": "b", "instance": "b-1", "phase": "open"},
                {"service": "a", "instance": "a-1", "phase": "closed"},
            ]),
        );
        assert_eq!(figures["requestsPerSecond"], 10.0);
        assert_eq!(figures["errorsPerSecond"], 1.0);
        assert_eq!(figures["p50Ms"], 5.0);
        // 19 of 20 answered within 10 ms; the last one past every finite bound.
        assert_eq!(figures["p99Ms"], Value::Null);
        assert_eq!(figures["requestsTotal"], 31);
        assert_eq!(
            figures["openBreakers"],
            json!([{"service": "b", "instance": "b-1", "phase": "open"}])
        );
        let line = line(&figures);
        assert!(
            line.starts_with("10.0 proxied req/s, 1.00 5xx/s, p50 ≤ 5 ms"),
            "{line}"
        );
        assert!(
            line.ends_with("breakers: 1 not closed: b b-1 (open)"),
            "{line}"
        );
    }

    #[test]
    fn no_request_between_the_scrapes_gives_no_quantile() {
        let scrape = Scrape::parse(BEFORE);
        let figures = figures(&scrape, &scrape, Duration::from_secs(1), &json!([]));
        assert_eq!(figures["requestsPerSecond"], 0.0);
        assert_eq!(figures["p50Ms"], Value::Null);
        assert!(line(&figures).ends_with("breakers: none open"));
    }
}
