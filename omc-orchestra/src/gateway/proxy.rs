//! The forwarding half: a pooled keep-alive HTTP/1 client and the header rewriting a
//! reverse proxy owes both sides.

use super::GatewayBody;
use crate::registry::ServiceInstance;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::net::IpAddr;
use std::time::Duration;

/// The upstream client: one connection pool for every upstream.
pub type UpstreamClient = Client<HttpConnector, GatewayBody>;

/// A client with keep-alive connections pooled per upstream (idle ones closed after 90 s).
pub fn upstream_client() -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(60)));
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .build(connector)
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The instance id, or `static:{service}` for a static fallback.
    pub id: String,
    /// `scheme://host:port`.
    pub origin: String,
    /// A path the upstream is mounted under (from a static URL), without trailing `/`.
    pub base_path: String,
}

impl Target {
    /// A discovered instance (`https` when its metadata says `scheme = "https"`).
    pub fn instance(instance: &ServiceInstance) -> Self {
        let scheme = instance
            .metadata
            .get("scheme")
            .map_or("http", String::as_str);
        let host = if instance.host.contains(':') && !instance.host.starts_with('[') {
            format!("[{}]", instance.host)
        } else {
            instance.host.clone()
        };
        Self {
            id: instance.id.clone(),
            origin: format!("{scheme}://{host}:{}", instance.port),
            base_path: String::new(),
        }
    }

    /// A static fallback URL such as `http://pricing-service:3006` or
    /// `http://h:1/base`; `None` when it does not parse.
    pub fn fixed(service: &str, url: &str) -> Option<Self> {
        let uri: Uri = url.parse().ok()?;
        let scheme = uri.scheme_str()?;
        let authority = uri.authority()?;
        Some(Self {
            id: format!("static:{service}"),
            origin: format!("{scheme}://{authority}"),
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The upstream URI for `path` and `query`.
    pub fn uri(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let mut text = format!("{}{}{}", self.origin, self.base_path, path);
        if let Some(query) = query {
            text.push('?');
            text.push_str(query);
        }
        Ok(Uri::try_from(text)?)
    }
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

/// Remove hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(http::header::PROXY_AUTHENTICATE);
}

/// Rewrite request headers for the upstream: hop-by-hop ones out, `Host` left to the
/// client (the upstream's authority), `X-Forwarded-For/Proto/Host` added.
pub(crate) fn forward_headers(headers: &mut HeaderMap, client_ip: IpAddr) {
    strip_hop_by_hop(headers);
    let host = headers.remove(http::header::HOST);
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(previous) if !previous.trim().is_empty() => format!("{previous}, {client_ip}"),
        _ => client_ip.to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert("x-forwarded-for", value);
    }
    if !headers.contains_key("x-forwarded-proto") {
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    if let Some(host) = host {
        if !headers.contains_key("x-forwarded-host") {
            headers.insert("x-forwarded-host", host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_rewritten() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", "keep-alive, x-private".parse().unwrap());
        headers.insert("x-private", "1".parse().unwrap());
        headers.insert("te", "trailers".parse().unwrap());
        headers.insert("host", "gw.example:3000".parse().unwrap());
        headers.insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
        headers.insert("accept", "*/*".parse().unwrap());
        forward_headers(&mut headers, "127.0.0.1".parse().unwrap());
        assert!(!headers.contains_key("connection"));
        assert!(!headers.contains_key("x-private"));
        assert!(!headers.contains_key("te"));
        assert!(!headers.contains_key("host"));
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(headers["x-forwarded-host"], "gw.example:3000");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["accept"], "*/*");
    }

    #[test]
    fn static_targets_keep_their_base_path() {
        let t = Target::fixed("p", "http://pricing:3006/v1/").unwrap();
        assert_eq!(
            t.uri("/prices", Some("a=1")).unwrap(),
            "http://pricing:3006/v1/prices?a=1"
        );
        assert!(Target::fixed("p", "not a url").is_none());
    }
}
