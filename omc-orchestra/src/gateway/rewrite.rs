//! What the gateway changes in a request's headers on its way upstream, applied as the
//! upstream request's head is written rather than by editing the client's header map.

use super::auth::Identity;
use super::h1::{append_lines, put_header};
use super::http1::{connection_listed, hop_by_hop};
use super::names::{
    TRACEPARENT, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REQUEST_ID, X_USER_ID,
    X_USER_ROLES,
};
use super::proxy::IpText;
use crate::telemetry::TraceParent;
use http::header::{HeaderName, HeaderValue, CONNECTION, HOST};
use http::HeaderMap;
use std::net::IpAddr;

/// The client's headers the upstream does not get, and those the gateway adds: hop-by-hop
/// ones (and those `Connection` names) out; names with `_` out (nginx's default: a
/// CGI-style upstream would read `X_User_Id` as `X-User-Id`); `Host` out (the upstream's
/// goes in), becoming `X-Forwarded-Host` unless a trusted caller sent one;
/// `X-Forwarded-For` extended with the client's address (started afresh for a caller
/// outside `trusted_callers`, whose list could be forged); `X-Forwarded-Proto` unless a
/// trusted caller sent it; the verified identity in `X-User-Id`/`X-User-Roles` (the
/// client's never pass); a new `traceparent`; the request id the gateway settled on (the
/// client's own only when the gateway kept it).
pub(crate) struct Rewrite<'a> {
    identity: Option<&'a Identity>,
    traceparent: &'a TraceParent,
    request_id: &'a HeaderValue,
    forwarded_for: Option<HeaderValue>,
    forwarded_proto: bool,
    forwarded_host: Option<HeaderValue>,
    client_ip: IpAddr,
    /// Whether the client is a trusted proxy whose `X-Forwarded-*` headers pass on.
    trusted: bool,
    /// Names the client's `Connection` lists (beyond `keep-alive` and `close`).
    listed: Vec<HeaderName>,
}

impl<'a> Rewrite<'a> {
    /// The rewrite of a request with `headers` from `client_ip` (a trusted proxy when
    /// `trusted`).
    pub(super) fn new(
        headers: &HeaderMap,
        (client_ip, trusted): (IpAddr, bool),
        identity: Option<&'a Identity>,
        traceparent: &'a TraceParent,
        request_id: &'a HeaderValue,
    ) -> Self {
        let mut rewrite = Self {
            identity,
            traceparent,
            request_id,
            forwarded_for: None,
            forwarded_proto: true,
            forwarded_host: None,
            client_ip,
            trusted,
            listed: Vec::new(),
        };
        // One pass over the client's headers (a few lookups by name would hash each).
        let (mut host, mut forwarded_host) = (None, false);
        for (name, value) in headers {
            if name == CONNECTION {
                rewrite.list(value);
            } else if name == HOST {
                host.get_or_insert(value);
            } else if !trusted {
                // An untrusted caller's forwarding headers are replaced, never extended.
            } else if name == X_FORWARDED_FOR {
                let given = value.to_str().is_ok_and(|v| !v.trim().is_empty());
                if given && rewrite.forwarded_for.is_none() {
                    rewrite.forwarded_for = Some(value.clone());
                }
            } else if name == X_FORWARDED_PROTO {
                rewrite.forwarded_proto = false;
            } else if name == X_FORWARDED_HOST {
                forwarded_host = true;
            }
        }
        if !forwarded_host {
            rewrite.forwarded_host = host.cloned();
        }
        rewrite
    }

    /// Note the names a `Connection` value lists.
    fn list(&mut self, value: &HeaderValue) {
        let names = connection_listed(value.as_bytes());
        self.listed
            .extend(names.filter_map(|token| HeaderName::from_bytes(token).ok()));
    }

    /// The verified subject the request goes upstream as.
    pub(super) fn subject(&self) -> Option<&'a str> {
        self.identity.map(|identity| identity.subject.as_str())
    }

    /// Whether the client's header `name` stays behind (or is replaced).
    pub(super) fn drops(&self, name: &HeaderName) -> bool {
        // Told by length first (names are lowercase): most names are compared with at
        // most one other.
        let text = name.as_str().as_bytes();
        let replaced = |other: &HeaderName| text == other.as_str().as_bytes();
        let replaced = match text.len() {
            4 => replaced(&HOST),
            9 => replaced(&X_USER_ID),
            11 => replaced(&TRACEPARENT),
            12 => replaced(&X_USER_ROLES) || replaced(&X_REQUEST_ID),
            15 => replaced(&X_FORWARDED_FOR),
            16 => !self.trusted && replaced(&X_FORWARDED_HOST),
            17 => !self.trusted && replaced(&X_FORWARDED_PROTO),
            _ => false,
        };
        replaced
            || hop_by_hop(text)
            || text.contains(&b'_')
            || (!self.listed.is_empty() && self.listed.contains(name))
    }

    /// Append the headers the gateway adds, in wire form.
    pub(super) fn put(&self, wire: &mut Vec<u8>) {
        if let Some(identity) = self.identity {
            if valid_value(identity.subject.as_bytes()) {
                put_header(
                    wire,
                    X_USER_ID.as_str().as_bytes(),
                    identity.subject.as_bytes(),
                );
            }
            let roles = &identity.roles;
            if roles.iter().all(|role| valid_value(role.as_bytes())) {
                start(wire, &X_USER_ROLES);
                for (i, role) in roles.iter().enumerate() {
                    if i > 0 {
                        wire.push(b',');
                    }
                    wire.extend_from_slice(role.as_bytes());
                }
                wire.extend_from_slice(b"\r\n");
            }
        }
        let line = |wire: &mut Vec<u8>, name: &HeaderName, value: &[u8]| {
            put_header(wire, name.as_str().as_bytes(), value);
        };
        start(wire, &TRACEPARENT);
        self.traceparent.put(wire);
        wire.extend_from_slice(b"\r\n");
        line(wire, &X_REQUEST_ID, self.request_id.as_bytes());
        if self.forwarded_proto {
            line(wire, &X_FORWARDED_PROTO, b"http");
        }
        if let Some(host) = &self.forwarded_host {
            line(wire, &X_FORWARDED_HOST, host.as_bytes());
        }
        start(wire, &X_FORWARDED_FOR);
        if let Some(previous) = &self.forwarded_for {
            wire.extend_from_slice(previous.as_bytes());
            wire.extend_from_slice(b", ");
        }
        wire.extend_from_slice(IpText::new(self.client_ip).as_bytes());
        wire.extend_from_slice(b"\r\n");
    }

    /// The same rewrite made on `headers`, for a request sent as an `http::Request` (an
    /// upgrade): the names [`Rewrite::drops`] leaves behind go, and the lines
    /// [`Rewrite::put`] writes come in, so that both forms follow one rule.
    pub(super) fn apply(&self, headers: &mut HeaderMap) {
        let dropped: Vec<HeaderName> = headers
            .keys()
            .filter(|name| self.drops(name))
            .cloned()
            .collect();
        for name in dropped {
            headers.remove(name);
        }
        let mut lines = Vec::with_capacity(256);
        self.put(&mut lines);
        append_lines(headers, &lines);
    }
}

/// Append `name: `.
fn start(wire: &mut Vec<u8>, name: &HeaderName) {
    wire.extend_from_slice(name.as_str().as_bytes());
    wire.extend_from_slice(b": ");
}

/// What `HeaderValue` accepts: visible ASCII, obs-text, spaces and tabs.
fn valid_value(value: &[u8]) -> bool {
    value.iter().all(|&b| (b >= 32 && b != 127) || b == b'\t')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::h1::put_head;
    use http::Method;

    #[test]
    fn dropped_names_are_the_hop_by_hop_and_the_replaced_ones() {
        let headers = HeaderMap::new();
        let id = HeaderValue::from_static("id");
        let trace = crate::gateway::next_traceparent(None);
        let rewrite = Rewrite::new(&headers, ([127, 0, 0, 1].into(), true), None, &trace, &id);
        let hop_by_hop = [
            "connection",
            "keep-alive",
            "te",
            "transfer-encoding",
            "upgrade",
        ]
        .map(HeaderName::from_static);
        let replaced = [
            HOST,
            X_USER_ID,
            X_USER_ROLES,
            X_REQUEST_ID,
            TRACEPARENT,
            X_FORWARDED_FOR,
        ];
        for name in hop_by_hop.iter().chain(&replaced) {
            assert!(rewrite.drops(name), "{name}");
        }
        for name in [
            "accept",
            "x-user-idx",
            "hosts",
            "x-request-ids",
            "authorization",
        ] {
            assert!(!rewrite.drops(&HeaderName::from_static(name)), "{name}");
        }
    }

    fn client_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("host", "gw.example:3000"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("te", "trailers"),
            ("keep-alive", "timeout=5"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
            ("x-user-id", "forged"),
            ("x_user_id", "forged-too"),
            ("x-request-id", "the-client's"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("accept", "*/*"),
            ("x-many", "1"),
            ("x-many", "2"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        headers
    }

    /// The headers of a head written by `put_head`, sorted.
    fn written(head: &[u8]) -> Vec<(String, String)> {
        let mut slots = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut slots);
        assert!(request.parse(head).is_ok_and(|s| s.is_complete()));
        let mut all: Vec<_> = request
            .headers
            .iter()
            .map(|h| {
                let value = String::from_utf8_lossy(h.value).into_owned();
                (h.name.to_ascii_lowercase(), value)
            })
            .collect();
        all.sort();
        all
    }

    #[test]
    fn the_wire_rewrite_and_the_map_rewrite_agree() {
        let identity = Identity {
            subject: "user-1".into(),
            roles: vec!["reader".into(), "writer".into()],
        };
        let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01".to_owned();
        let parent = TraceParent::parse(&trace).unwrap();
        let id = HeaderValue::from_static("req-1");
        let cases = [(Some(&identity), true), (None, true), (None, false)];
        for (identity, trusted) in cases {
            let headers = client_headers();
            let ip: IpAddr = "127.0.0.1".parse().unwrap();
            let rewrite = Rewrite::new(&headers, (ip, trusted), identity, &parent, &id);
            let mut wire = Vec::new();
            let host = Some("up:80");
            let get = Method::GET;
            put_head(
                &mut wire,
                &get,
                &["/x"],
                host,
                &headers,
                Some(0),
                Some(&rewrite),
            );
            let mut map = headers.clone();
            rewrite.apply(&mut map);
            map.insert(HOST, HeaderValue::from_static("up:80"));
            let mut from_map = Vec::new();
            put_head(&mut from_map, &get, &["/x"], None, &map, Some(0), None);
            let wired = written(&wire);
            assert_eq!(wired, written(&from_map), "{identity:?}, trusted {trusted}");
            let names: Vec<_> = wired.iter().map(|(n, _)| n.as_str()).collect();
            for gone in ["connection", "x-private", "te", "keep-alive", "x_user_id"] {
                assert!(!names.contains(&gone), "{gone} in {wired:?}");
            }
            // A trusted proxy's chain is extended; anyone else's is replaced.
            let (chain, proto) = if trusted {
                ("10.0.0.1, 127.0.0.1", "https")
            } else {
                ("127.0.0.1", "http")
            };
            assert!(wired.contains(&("x-forwarded-for".into(), chain.into())));
            assert!(wired.contains(&("x-forwarded-proto".into(), proto.into())));
            let protos = names.iter().filter(|n| **n == "x-forwarded-proto").count();
            assert_eq!(protos, 1, "{wired:?}");
            assert!(wired.contains(&("x-forwarded-host".into(), "gw.example:3000".into())));
            assert!(wired.contains(&("host".into(), "up:80".into())));
            let ids: Vec<_> = wired.iter().filter(|(n, _)| n == "x-request-id").collect();
            assert_eq!(
                ids,
                [&("x-request-id".into(), "req-1".into())],
                "the client's is replaced"
            );
            assert!(wired.contains(&("traceparent".into(), trace.clone())));
            let user = wired.iter().find(|(n, _)| n == "x-user-id");
            match identity {
                Some(_) => {
                    assert_eq!(user.map(|(_, v)| v.as_str()), Some("user-1"));
                    let roles = ("x-user-roles".into(), "reader,writer".into());
                    assert!(wired.contains(&roles));
                }
                None => assert!(user.is_none(), "a forged identity never passes"),
            }
        }
    }

    #[test]
    fn identities_that_are_no_header_value_are_left_out() {
        let identity = Identity {
            subject: "a\r\nb".into(),
            roles: vec!["ok".into()],
        };
        let headers = HeaderMap::new();
        let id = HeaderValue::from_static("r");
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let trace = crate::gateway::next_traceparent(None);
        let rewrite = Rewrite::new(&headers, (ip, true), Some(&identity), &trace, &id);
        let mut wire = Vec::new();
        rewrite.put(&mut wire);
        let text = String::from_utf8(wire).unwrap();
        assert!(!text.contains("x-user-id"), "{text}");
        assert!(text.contains("x-user-roles: ok\r\n"), "{text}");
        assert!(text.contains("x-forwarded-for: 10.1.2.3\r\n"), "{text}");
    }
}
