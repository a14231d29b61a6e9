//! Request metrics in Prometheus text format, one registry per server.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// The metrics every server keeps about the requests it serves.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGaugeVec,
}

impl HttpMetrics {
    /// Metrics for the server called `server` (`registry`, `gateway`, …).
    pub fn new(server: &str) -> Self {
        let registry = Registry::new_custom(Some("orchestra".into()), None).unwrap_or_default();
        let labels = || {
            [("server".to_owned(), server.to_owned())]
                .into_iter()
                .collect()
        };
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests served, by route and status.",
            )
            .const_labels(labels()),
            &["method", "route", "status"],
        )
        .expect("static metric definition");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time to answer HTTP requests, by route.",
            )
            .const_labels(labels())
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["method", "route"],
        )
        .expect("static metric definition");
        let in_flight = IntGaugeVec::new(
            Opts::new("http_requests_in_flight", "HTTP requests being served.")
                .const_labels(labels()),
            &["method"],
        )
        .expect("static metric definition");
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(in_flight.clone()),
        ] {
            registry
                .register(collector)
                .expect("metrics registered once into a fresh registry");
        }
        Self {
            registry,
            requests,
            duration,
            in_flight,
        }
    }

    /// The Prometheus registry, for servers that add metrics of their own.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A request started.
    pub fn start(&self, method: &str) {
        self.in_flight.with_label_values(&[method]).inc();
    }

    /// A request finished.
    pub fn finish(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.in_flight.with_label_values(&[method]).dec();
        let status = status.to_string();
        self.requests
            .with_label_values(&[method, route, &status])
            .inc();
        self.duration
            .with_label_values(&[method, route])
            .observe(seconds);
    }

    /// The `method` label of `method`: one of the standard methods, or `_OTHER`, so a
    /// client inventing methods cannot add series (as OpenTelemetry's HTTP conventions).
    pub fn method_label(method: &axum::http::Method) -> &'static str {
        use axum::http::Method;
        const STANDARD: [Method; 9] = [
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::CONNECT,
            Method::OPTIONS,
            Method::TRACE,
            Method::PATCH,
        ];
        STANDARD
            .iter()
            .find(|m| *m == method)
            .map_or("_OTHER", |m| m.as_str())
    }

    /// Everything in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(err) = encoder.encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %err, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn invented_methods_share_one_label() {
        assert_eq!(HttpMetrics::method_label(&Method::PATCH), "PATCH");
        for invented in ["FOOBAR", "get", "BREW"] {
            let method = Method::from_bytes(invented.as_bytes()).unwrap();
            assert_eq!(HttpMetrics::method_label(&method), "_OTHER", "{invented}");
        }
    }
}
