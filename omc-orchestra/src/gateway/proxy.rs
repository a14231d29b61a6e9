//! Where a request goes: an upstream target and its address. Connections are pooled by
//! [`super::UpstreamPool`]; the header rewrite is [`super::rewrite`]'s.

use crate::registry::ServiceInstance;
use http::header::HeaderValue;
use http::uri::PathAndQuery;
use http::Uri;
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
