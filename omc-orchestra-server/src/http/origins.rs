//! Which browser origins may call the servers: CORS answers and the `/ws` upgrade ask
//! the same list, so a page that may not read the API may not open the live feed either.

use axum::http::request::Parts;
use axum::http::HeaderValue;
use std::sync::Arc;
use tower_http::cors::{AllowHeaders, AllowOrigin, Any, CorsLayer};

/// The origins a browser page may call from: those listed with `--cors-origin`, the
/// server's own (same origin), and the dashboard's when it runs beside this server.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    listed: Arc<[String]>,
    dashboard_port: Option<u16>,
}

impl Origins {
    /// Allow `listed` (`https://erp.example.com`; scheme, host and port as a browser
    /// sends them) besides same-origin requests.
    pub fn new(listed: &[String]) -> Self {
        Self {
            listed: listed
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            dashboard_port: None,
        }
    }

    /// Also allow the dashboard served on `port` of the same host: `orchestra up` runs
    /// the page on the registry's port and its panels call the other servers.
    pub fn with_dashboard_port(mut self, port: Option<u16>) -> Self {
        self.dashboard_port = port;
        self
    }

    /// Whether a request from `origin` to the server addressed as `host` (its `Host`
    /// header) is allowed.
    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.trim().to_ascii_lowercase();
        if self.listed.contains(&origin) {
            return true;
        }
        let (Some(authority), Some(host)) = (authority_of(&origin), host) else {
            return false;
        };
        let host = host.trim().to_ascii_lowercase();
        if authority == host {
            return true;
        }
        match (self.dashboard_port, split_port(authority)) {
            (Some(port), (origin_host, Some(origin_port))) => {
                origin_port == port && origin_host == split_port(&host).0
            }
            _ => false,
        }
    }

    /// The CORS layer: an allowed origin gets `Access-Control-Allow-Origin` echoed back,
    /// any other none, so the browser keeps the answer from the page.
    pub fn cors_layer(&self) -> CorsLayer {
        let origins = self.clone();
        CorsLayer::new()
            .allow_methods(Any)
            // `*` does not cover `Authorization` (Fetch standard), which every call here
            // carries; the origin is already checked, so the asked headers are echoed.
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers([super::layers::REQUEST_ID.clone()])
            .allow_origin(AllowOrigin::predicate(
                move |origin: &HeaderValue, parts: &Parts| {
                    let host = parts
                        .headers
                        .get(axum::http::header::HOST)
                        .and_then(|h| h.to_str().ok());
                    origin
                        .to_str()
                        .is_ok_and(|origin| origins.allows(origin, host))
                },
            ))
    }
}

/// `host[:port]` of `scheme://host[:port]`.
fn authority_of(origin: &str) -> Option<&str> {
    let (_, rest) = origin.split_once("://")?;
    (!rest.is_empty() && !rest.contains('/')).then_some(rest)
}

/// `host` and its port, if any (`[::1]:3010` keeps its brackets).
fn split_port(authority: &str) -> (&str, Option<u16>) {
    match authority.rsplit_once(':') {
        Some((host, port))
            if !host.ends_with(':') && (!host.starts_with('[') || host.ends_with(']')) =>
        {
            match port.parse() {
                Ok(port) => (host, Some(port)),
                Err(_) => (authority, None),
            }
        }
        _ => (authority, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_same_origin_and_the_dashboard_are_allowed_and_nothing_else() {
        let origins =
            Origins::new(&["https://erp.example.com/".into()]).with_dashboard_port(Some(3010));
        let host = Some("localhost:3013");
        assert!(origins.allows("https://ERP.example.com", host));
        assert!(origins.allows("http://localhost:3013", host));
        assert!(origins.allows("http://localhost:3010", host));
        assert!(!origins.allows("http://evil.example:3010", host));
        assert!(!origins.allows("http://localhost:8080", host));
        assert!(!origins.allows("null", host));
        assert!(!origins.allows("http://localhost:3013", None));
        assert!(origins.allows("http://[::1]:3010", Some("[::1]:3013")));
        assert!(!origins.allows("http://[::1]:3010", Some("[::2]:3013")));

        let closed = Origins::new(&[]);
        assert!(!closed.allows("http://localhost:3010", host));
        assert!(closed.allows("http://localhost:3013", host));
    }
}
