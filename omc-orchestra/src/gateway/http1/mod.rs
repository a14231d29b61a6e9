//! The gateway's rulebook for HTTP/1: which headers are hop-by-hop, how `Connection` is
//! read, how a message's body is framed ([`framing`]) and which requests the lane (the
//! fast path in [`super::h1`]) takes. The lane's request and answer parsers, the hyper
//! path (upgrades, relayed answers) and the rewrite of the upstream request
//! ([`super::rewrite`]) all ask it, so that no two of them can read a message two ways.

mod framing;

pub(crate) use framing::{
    bodiless, chunk_end, chunk_size, declared, has_bare_lf, trailer_line, Dechunk, Dechunked,
    Declared, Malformed,
};

use http::header::{CONNECTION, EXPECT, ORIGIN, UPGRADE};
use http::{HeaderMap, HeaderName};

/// Whether `name` (any case) is hop-by-hop: a header for one connection, never relayed.
/// RFC 9110's `Connection`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade` and the
/// proxy credentials, and the older `Keep-Alive` and `Proxy-Connection`; told by length
/// first, so most names are compared with at most two others.
pub(crate) fn hop_by_hop(name: &[u8]) -> bool {
    let is = |other: &[u8]| name.eq_ignore_ascii_case(other);
    match name.len() {
        2 => is(b"te"),
        7 => is(b"trailer") || is(b"upgrade"),
        10 => is(b"connection") || is(b"keep-alive"),
        16 => is(b"proxy-connection"),
        17 => is(b"transfer-encoding"),
        18 => is(b"proxy-authenticate"),
        19 => is(b"proxy-authorization"),
        _ => false,
    }
}

/// Remove hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|value| connection_listed(value.as_bytes()))
        .filter_map(|name| HeaderName::from_bytes(name).ok())
        .collect();
    let dropped: Vec<HeaderName> = headers
        .keys()
        .filter(|name| hop_by_hop(name.as_str().as_bytes()))
        .cloned()
        .chain(listed)
        .collect();
    for name in dropped {
        headers.remove(name);
    }
}

/// The comma-separated tokens of a header value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
}

/// The header names a `Connection` value lists, which are hop-by-hop too (its own
/// `keep-alive` and `close` options aside).
pub(crate) fn connection_listed(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    tokens(value).filter(|token| {
        !token.eq_ignore_ascii_case(b"keep-alive") && !token.eq_ignore_ascii_case(b"close")
    })
}

/// What a message's `Connection` lines ask for, read with [`Connection::read`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Connection {
    /// `close`: the connection ends after this message.
    pub(crate) close: bool,
    /// `upgrade`: the request asks to switch protocols.
    pub(crate) upgrade: bool,
}

impl Connection {
    /// Take in one `Connection` value (a message may have several lines).
    pub(crate) fn read(&mut self, value: &[u8]) {
        for token in tokens(value) {
            self.close |= token.eq_ignore_ascii_case(b"close");
            self.upgrade |= token.eq_ignore_ascii_case(b"upgrade");
        }
    }

    /// What the `Connection` lines of `headers` ask for.
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let mut connection = Self::default();
        for value in headers.get_all(CONNECTION) {
            connection.read(value.as_bytes());
        }
        connection
    }
}

/// Whether the lane takes a request, told from its head one header at a time: only
/// HTTP/1.1 (1.0's connection rules are hyper's to keep), and nothing that needs more
/// than a request and its answer: no upgrade (`Upgrade`, `Connection: upgrade`), no
/// `Expect` (a `100 Continue` goes first), no `Origin` (CORS is the router's layer's).
/// The body's size is the lane's own setting, checked beside this.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LaneFit {
    /// What the request's `Connection` lines ask for.
    pub(crate) connection: Connection,
    /// A header the lane leaves to the general-purpose server was seen.
    elsewhere: bool,
}

impl LaneFit {
    /// Take in one request header.
    pub(crate) fn note(&mut self, name: &HeaderName, value: &[u8]) {
        if name == CONNECTION {
            self.connection.read(value);
        } else if name == UPGRADE || name == EXPECT || name == ORIGIN {
            self.elsewhere = true;
        }
    }

    /// Whether the lane takes the request, an HTTP/1.1 one when `http11`, whose headers
    /// were all noted.
    pub(crate) fn takes(&self, http11: bool) -> bool {
        http11 && !self.elsewhere && !self.connection.upgrade
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_names_are_told_in_any_case() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
            "proxy-authenticate",
        ] {
            assert!(hop_by_hop(name.as_bytes()), "{name}");
            assert!(hop_by_hop(name.to_uppercase().as_bytes()), "{name}");
        }
        for name in [
            "date",
            "server",
            "content-type",
            "x-upgrade",
            "tee",
            "trailers",
        ] {
            assert!(!hop_by_hop(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn connection_tokens_are_read_in_any_case_and_spacing() {
        let mut connection = Connection::default();
        connection.read(b" Keep-Alive ,X-Private");
        assert_eq!(connection, Connection::default());
        connection.read(b"UPGRADE,  close");
        assert!(connection.close && connection.upgrade);
        let listed: Vec<&[u8]> = connection_listed(b"keep-alive, X-Private,, close").collect();
        assert_eq!(listed, [b"X-Private".as_slice()]);
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_stripped() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("te", "trailers"),
            ("keep-alive", "timeout=5"),
            ("accept", "*/*"),
        ] {
            headers.append(name, value.parse().unwrap());
        }
        let asked = Connection::of(&headers);
        assert!(!asked.close && !asked.upgrade);
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["accept"]);
    }

    #[test]
    fn the_lane_takes_plain_http11_requests_only() {
        let fit = |headers: &[(&'static str, &str)], http11: bool| {
            let mut fit = LaneFit::default();
            for (name, value) in headers {
                fit.note(&HeaderName::from_static(name), value.as_bytes());
            }
            fit.takes(http11)
        };
        assert!(fit(
            &[("accept", "*/*"), ("connection", "keep-alive")],
            true
        ));
        assert!(!fit(&[("accept", "*/*")], false));
        assert!(!fit(&[("connection", "Upgrade")], true));
        assert!(!fit(&[("upgrade", "websocket")], true));
        assert!(!fit(&[("expect", "100-continue")], true));
        assert!(!fit(&[("origin", "https://a.example")], true));
        assert!(fit(&[("connection", "close")], true));
    }
}
