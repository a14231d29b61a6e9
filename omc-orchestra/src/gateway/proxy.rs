//! The forwarding half: where a request goes and the header rewriting a reverse proxy
//! owes both sides. Connections are pooled by [`super::UpstreamPool`].

use super::h1::connection_listed;
use super::names::{X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};
use crate::registry::ServiceInstance;
use http::header::{HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Uri};
use std::net::IpAddr;
use std::sync::Arc;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The instance id, or `static:{service}` for a static fallback.
    pub id: Arc<str>,
    /// `scheme://host:port`.
    pub origin: String,
    /// A path the upstream is mounted under (from a static URL), without trailing `/`.
    pub base_path: String,
    /// `host:port`, what the connection pool connects to.
    pub authority: Arc<str>,
    /// The upstream speaks TLS (`https`).
    pub secure: bool,
}

impl Target {
    fn new(id: String, scheme: &str, authority: String, base_path: String) -> Self {
        Self {
            id: id.into(),
            origin: format!("{scheme}://{authority}"),
            base_path,
            authority: authority.into(),
            secure: scheme.eq_ignore_ascii_case("https"),
        }
    }

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
        let authority = format!("{host}:{}", instance.port);
        Self::new(instance.id.clone(), scheme, authority, String::new())
    }

    /// A static fallback URL such as `http://pricing-service:3006` or
    /// `http://h:1/base`; `None` when it does not parse.
    pub fn fixed(service: &str, url: &str) -> Option<Self> {
        let uri: Uri = url.parse().ok()?;
        let scheme = uri.scheme_str()?;
        let authority = uri.authority()?;
        let port = authority
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        Some(Self::new(
            format!("static:{service}"),
            scheme,
            format!("{}:{port}", authority.host()),
            uri.path().trim_end_matches('/').to_owned(),
        ))
    }

    /// The full upstream URI for `path` and `query`.
    pub fn uri(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let target = self.path(path, query)?;
        Ok(Uri::try_from(format!("{}{}", self.origin, target))?)
    }

    /// The origin-form request target (`/base/path?query`) sent to the upstream.
    pub fn path(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let mut text = String::with_capacity(
            self.base_path.len() + path.len() + query.map_or(0, str::len) + 1,
        );
        text.push_str(&self.base_path);
        text.push_str(path);
        if let Some(query) = query {
            text.push('?');
            text.push_str(query);
        }
        Ok(Uri::from(PathAndQuery::try_from(text)?))
    }

    /// The `Host` header for the upstream.
    pub fn host_header(&self) -> Option<HeaderValue> {
        HeaderValue::from_str(&self.authority).ok()
    }
}

pub(super) const HOP_BY_HOP: [HeaderName; 9] = [
    http::header::CONNECTION,
    super::names::KEEP_ALIVE,
    super::names::PROXY_CONNECTION,
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
    http::header::PROXY_AUTHORIZATION,
    http::header::PROXY_AUTHENTICATE,
];

/// Remove hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(http::header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(http::header::CONNECTION)
            .iter()
            .flat_map(|v| connection_listed(v.as_bytes()))
            .filter_map(|name| HeaderName::from_bytes(name).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// An address in its usual text form, written on the stack (IPv4 without the formatting
/// machinery).
pub(crate) struct IpText {
    text: [u8; 45],
    len: usize,
}

impl IpText {
    /// The text of `ip`.
    pub(crate) fn new(ip: IpAddr) -> Self {
        let mut text = [0u8; 45];
        let len = match ip {
            IpAddr::V4(v4) => {
                let mut len = 0;
                let mut put = |b: u8| {
                    text[len] = b;
                    len += 1;
                };
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        put(b'.');
                    }
                    if octet >= 100 {
                        put(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        put(b'0' + octet / 10 % 10);
                    }
                    put(b'0' + octet % 10);
                }
                len
            }
            IpAddr::V6(v6) => {
                use std::io::Write;
                let mut rest = &mut text[..];
                // The longest IPv6 text is 45 bytes: the write always fits.
                let _ = write!(rest, "{v6}");
                45 - rest.len()
            }
        };
        Self { text, len }
    }

    /// The text.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.text[..self.len]
    }
}

/// Append `ip` in its usual text form.
pub(crate) fn push_ip(out: &mut String, ip: IpAddr) {
    let text = IpText::new(ip);
    out.push_str(std::str::from_utf8(text.as_bytes()).unwrap_or_default());
}

/// Rewrite request headers for the upstream: hop-by-hop ones out, `Host` left to the
/// client (the upstream's authority), `X-Forwarded-For/Proto/Host` added.
pub(crate) fn forward_headers(headers: &mut HeaderMap, client_ip: IpAddr) {
    strip_hop_by_hop(headers);
    let host = headers.remove(http::header::HOST);
    let mut forwarded_for = String::with_capacity(48);
    match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(previous) if !previous.trim().is_empty() => {
            forwarded_for.push_str(previous);
            forwarded_for.push_str(", ");
        }
        _ => {}
    }
    push_ip(&mut forwarded_for, client_ip);
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if let Some(host) = host {
        if !headers.contains_key(&X_FORWARDED_HOST) {
            headers.insert(X_FORWARDED_HOST, host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_the_standard_library_writes_them() {
        for ip in [
            "0.0.0.0",
            "10.0.0.1",
            "127.0.0.1",
            "192.168.100.255",
            "::1",
            "fe80::1ff:fe23:4567:890a",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:192.0.2.128",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(IpText::new(ip).as_bytes(), ip.to_string().as_bytes());
        }
    }

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
    fn addresses_print_as_usual() {
        for ip in [
            "127.0.0.1",
            "10.20.0.255",
            "0.0.0.0",
            "192.168.100.9",
            "::1",
            "fe80::1",
        ] {
            let mut text = String::new();
            push_ip(&mut text, ip.parse().unwrap());
            assert_eq!(text, ip);
        }
    }

    #[test]
    fn static_targets_keep_their_base_path() {
        let t = Target::fixed("p", "http://pricing:3006/v1/").unwrap();
        assert_eq!(
            t.uri("/prices", Some("a=1")).unwrap(),
            "http://pricing:3006/v1/prices?a=1"
        );
        assert_eq!(t.path("/prices", None).unwrap(), "/v1/prices");
        assert_eq!(&*t.authority, "pricing:3006");
        assert!(Target::fixed("p", "not a url").is_none());
    }
}
