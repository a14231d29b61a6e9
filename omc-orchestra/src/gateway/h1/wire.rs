//! An answer's headers kept in wire form, the one form the HTTP/1.1 fast path writes.

use super::put_header;
use crate::gateway::http1::{connection_listed, hop_by_hop, Connection, Declared};
use crate::gateway::names::X_REQUEST_ID;
use crate::gateway::GatewayBody;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH};
use http::{HeaderMap, Response, StatusCode};

/// An answer's headers as `name: value\r\n` lines, less the framing ones, whose facts
/// are kept apart: the `Content-Length` and whether a `Date` is among them.
///
/// An upstream's answer comes this way straight from its head (less the hop-by-hop
/// headers, those its `Connection` names and its `X-Request-Id`: the gateway sets its
/// own), and an answer the gateway makes (an error, a cache hit) is turned into it once
/// ([`Answer::from`]). What the gateway sets over either (rate-limit headers, the
/// request id) is appended, so that an HTTP/1.1 writer copies the lines as they are
/// rather than rebuild them from a header map; [`Answer::into_response`] moves them into
/// one for anyone else.
#[derive(Debug, Clone, Default)]
pub struct WireHeaders {
    lines: Vec<u8>,
    /// The `Content-Length`, when one valid value was given and no chunking.
    length: Option<u64>,
    /// The lines hold a `Date`.
    date: bool,
    /// The lines hold rate-limit headers, which the gateway's replace.
    foreign_rate: bool,
}

/// What a header of an upstream answer is to the gateway.
enum Kind {
    /// Hop-by-hop, or one the gateway sets itself: never relayed as it is.
    Dropped,
    Connection,
    ContentLength,
    TransferEncoding,
    Date,
    RateLimit,
    Other,
}

fn kind(name: &[u8]) -> Kind {
    let is = |other: &[u8]| name.eq_ignore_ascii_case(other);
    // Sorted by length first: most names are compared with at most one or two others.
    match name.len() {
        4 if is(b"date") => Kind::Date,
        10 if is(b"connection") => Kind::Connection,
        14 if is(b"content-length") => Kind::ContentLength,
        17 if is(b"transfer-encoding") => Kind::TransferEncoding,
        _ if is(X_REQUEST_ID.as_str().as_bytes()) || hop_by_hop(name) => Kind::Dropped,
        _ if starts_with_ignore_case(name, b"x-ratelimit-")
            || starts_with_ignore_case(name, b"ratelimit-") =>
        {
            Kind::RateLimit
        }
        _ => Kind::Other,
    }
}

fn starts_with_ignore_case(name: &[u8], prefix: &[u8]) -> bool {
    name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// An upstream answer's headers, sorted out.
pub(super) struct Sorted {
    pub(super) wire: WireHeaders,
    pub(super) declared: Declared,
    /// The upstream's `Connection` asks to close.
    pub(super) close: bool,
}

/// Sort out the headers of an upstream answer whose body is framed as `declared` (see
/// [`crate::gateway::http1::declared`]).
pub(super) fn sort(headers: &[httparse::Header<'_>], declared: Declared) -> Sorted {
    // The names `Connection` lists are hop-by-hop too.
    let mut listed: Vec<&[u8]> = Vec::new();
    let mut connection = Connection::default();
    for header in headers {
        if header.name.eq_ignore_ascii_case("connection") {
            connection.read(header.value);
            listed.extend(connection_listed(header.value));
        }
    }
    let mut wire = WireHeaders {
        // Room for the rate-limit and request-id lines the gateway adds.
        lines: Vec::with_capacity(headers.iter().map(|h| h.value.len() + 24).sum::<usize>() + 320),
        ..WireHeaders::default()
    };
    for header in headers {
        let name = header.name.as_bytes();
        match kind(name) {
            // The framing lines are the gateway's to write.
            Kind::Dropped | Kind::Connection | Kind::ContentLength | Kind::TransferEncoding => {
                continue
            }
            Kind::Date => wire.date = true,
            Kind::RateLimit => wire.foreign_rate = true,
            Kind::Other => {}
        }
        if !listed.is_empty() && listed.iter().any(|l| l.eq_ignore_ascii_case(name)) {
            continue;
        }
        put_header(&mut wire.lines, name, header.value);
    }
    if let Declared::Length(length) = declared {
        wire.length = Some(length);
    }
    Sorted {
        wire,
        declared,
        close: connection.close,
    }
}

impl WireHeaders {
    /// The headers of `map` in wire form; its `Transfer-Encoding` and `X-Request-Id`
    /// are left out (the writer frames the body, the gateway sets the id) and its
    /// `Content-Length` is kept apart.
    pub fn from_map(map: &HeaderMap) -> Self {
        let mut wire = Self {
            lines: Vec::with_capacity(map.len() * 40 + 160),
            ..Self::default()
        };
        for (name, value) in map {
            let name = name.as_str().as_bytes();
            match kind(name) {
                Kind::ContentLength => {
                    wire.length = value.to_str().ok().and_then(|v| v.parse().ok());
                    continue;
                }
                Kind::TransferEncoding => continue,
                Kind::Date => wire.date = true,
                Kind::RateLimit => wire.foreign_rate = true,
                Kind::Dropped if name == X_REQUEST_ID.as_str().as_bytes() => continue,
                // The gateway's own answers name only what they mean to send (an
                // upgrade's `Connection`, for one).
                Kind::Dropped | Kind::Connection | Kind::Other => {}
            }
            put_header(&mut wire.lines, name, value.as_bytes());
        }
        wire
    }

    /// The header lines, each ending in `\r\n`.
    pub fn lines(&self) -> &[u8] {
        &self.lines
    }

    /// The `Content-Length`, when one was given.
    pub fn length(&self) -> Option<u64> {
        self.length
    }

    /// Whether the lines hold a `Date`.
    pub fn has_date(&self) -> bool {
        self.date
    }

    /// Set `name` to `value`. A rate-limit header replaces what the lines hold under
    /// its name; any other name is added, for the gateway sets only names the lines
    /// cannot hold already (`X-Request-Id` is never among them).
    pub fn set(&mut self, name: &HeaderName, value: &[u8]) {
        if self.foreign_rate {
            self.remove(name.as_str().as_bytes());
        }
        put_header(&mut self.lines, name.as_str().as_bytes(), value);
    }

    /// Set each of `lines`' lowercase names to its decimal value (see
    /// [`WireHeaders::set`]), in one go.
    pub(crate) fn set_numbers(&mut self, lines: &[(&'static str, u64)]) {
        if self.foreign_rate {
            for (name, _) in lines {
                self.remove(name.as_bytes());
            }
        }
        let mut digits = itoa::Buffer::new();
        self.lines.reserve(lines.len() * 48);
        for (name, value) in lines {
            put_header(
                &mut self.lines,
                name.as_bytes(),
                digits.format(*value).as_bytes(),
            );
        }
    }

    fn remove(&mut self, name: &[u8]) {
        let mut kept = Vec::with_capacity(self.lines.len());
        for line in self.lines.split_inclusive(|&b| b == b'\n') {
            let named = line
                .iter()
                .position(|&b| b == b':')
                .is_some_and(|colon| line[..colon].eq_ignore_ascii_case(name));
            if !named {
                kept.extend_from_slice(line);
            }
        }
        self.lines = kept;
    }

    /// Add the lines to `headers`, with the `Content-Length`; a line `http` does not
    /// accept is dropped.
    fn add_to(&self, headers: &mut HeaderMap) {
        append_lines(headers, &self.lines);
        if let Some(length) = self.length {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
        }
    }
}

/// An answer to write: a status, its headers in wire form and a body; what
/// [`LaneService::call`](super::LaneService::call) gives the lane to write.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// Every header of the answer, the framing ones aside.
    pub headers: WireHeaders,
    /// The body.
    pub body: GatewayBody,
}

impl From<Response<GatewayBody>> for Answer {
    fn from(response: Response<GatewayBody>) -> Self {
        let (parts, body) = response.into_parts();
        Self {
            status: parts.status,
            headers: WireHeaders::from_map(&parts.headers),
            body,
        }
    }
}

impl Answer {
    /// The answer as a response, its headers in the header map.
    pub fn into_response(self) -> Response<GatewayBody> {
        let mut response = Response::new(self.body);
        *response.status_mut() = self.status;
        self.headers.add_to(response.headers_mut());
        response
    }

    /// The answer's status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The length of the body as the headers (or, without one there, the body) say.
    pub fn length(&self) -> Option<u64> {
        self.headers
            .length()
            .or_else(|| hyper::body::Body::size_hint(&self.body).exact())
    }
}

/// Append the `name: value\r\n` lines of `lines` (as [`put_header`] writes them) to
/// `headers`; a line `http` does not accept is left out.
pub(crate) fn append_lines(headers: &mut HeaderMap, lines: &[u8]) {
    let mut text = Vec::with_capacity(lines.len() + 2);
    text.extend_from_slice(lines);
    text.extend_from_slice(b"\r\n");
    let mut slots = vec![httparse::EMPTY_HEADER; lines.len() / 4 + 1];
    if let Ok(httparse::Status::Complete((_, parsed))) = httparse::parse_headers(&text, &mut slots)
    {
        for header in parsed {
            let name = HeaderName::from_bytes(header.name.as_bytes());
            let value = HeaderValue::from_bytes(header.value);
            if let (Ok(name), Ok(value)) = (name, value) {
                headers.append(name, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(raw: &[u8]) -> Sorted {
        let mut slots = [httparse::EMPTY_HEADER; 32];
        let Ok(httparse::Status::Complete((_, headers))) = httparse::parse_headers(raw, &mut slots)
        else {
            panic!("the test headers parse");
        };
        let declared = crate::gateway::http1::declared(headers, true).unwrap_or(Declared::Unknown);
        sort(headers, declared)
    }

    #[test]
    fn hop_by_hop_framing_and_request_ids_are_not_relayed() {
        let raw = b"Server: up\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\
            Keep-Alive: timeout=5\r\nContent-Length: 12\r\nX-Request-Id: theirs\r\n\
            Date: Tue, 24 Nov 2026 08:00:00 GMT\r\nTE: trailers\r\nETag: \"x\"\r\n\r\n";
        let sorted = sorted(raw);
        assert_eq!(
            sorted.wire.lines(),
            b"Server: up\r\nDate: Tue, 24 Nov 2026 08:00:00 GMT\r\nETag: \"x\"\r\n"
        );
        assert_eq!(sorted.declared, Declared::Length(12));
        assert_eq!(sorted.wire.length(), Some(12));
        assert!(sorted.wire.has_date());
        assert!(!sorted.close);
    }

    #[test]
    fn framing_is_read_from_the_headers() {
        let chunked = sorted(b"Transfer-Encoding: chunked\r\nX: 3\r\n\r\n");
        assert_eq!(chunked.declared, Declared::Chunked);
        assert_eq!(chunked.wire.length(), None);
        assert_eq!(chunked.wire.lines(), b"X: 3\r\n");
        let closing = sorted(b"Connection: close\r\n\r\n");
        assert_eq!(closing.declared, Declared::Unknown);
        assert!(closing.close);
    }

    #[test]
    fn the_gateways_rate_headers_replace_the_upstreams() {
        let mut plain = sorted(b"A: b\r\n\r\n").wire;
        plain.set_numbers(&[("ratelimit-limit", 7)]);
        assert_eq!(plain.lines(), b"A: b\r\nratelimit-limit: 7\r\n");
        let lines = [("x-ratelimit-limit-second", 10), ("ratelimit-reset", 1)];
        let mut wire = sorted(b"X-RateLimit-Limit-Second: 5\r\nA: b\r\n\r\n").wire;
        wire.set_numbers(&lines);
        assert_eq!(
            wire.lines(),
            b"A: b\r\nx-ratelimit-limit-second: 10\r\nratelimit-reset: 1\r\n"
        );
    }

    #[test]
    fn a_header_map_turns_into_lines_with_its_framing_apart() {
        let mut map = HeaderMap::new();
        map.insert("content-type", HeaderValue::from_static("application/json"));
        map.insert("content-length", HeaderValue::from_static("17"));
        map.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        map.insert("x-request-id", HeaderValue::from_static("stale"));
        map.insert(
            "date",
            HeaderValue::from_static("Tue, 24 Nov 2026 08:00:00 GMT"),
        );
        map.insert("x-ratelimit-limit-second", HeaderValue::from_static("5"));
        let mut wire = WireHeaders::from_map(&map);
        assert_eq!(wire.length(), Some(17));
        assert!(wire.has_date());
        assert_eq!(
            wire.lines(),
            b"content-type: application/json\r\ndate: Tue, 24 Nov 2026 08:00:00 GMT\r\n\
              x-ratelimit-limit-second: 5\r\n"
        );
        // The map's rate-limit header gives way to the gateway's, as an upstream's does.
        wire.set_numbers(&[("x-ratelimit-limit-second", 9)]);
        assert!(!wire.lines().windows(2).any(|w| w == b": 5"));
        assert!(wire.lines().ends_with(b"x-ratelimit-limit-second: 9\r\n"));
    }

    #[test]
    fn restored_headers_land_in_the_map() {
        let wire =
            sorted(b"Server: up\r\nX-Many: 1\r\nX-Many: 2\r\nContent-Length: 5\r\n\r\n").wire;
        let answer = Answer {
            status: StatusCode::OK,
            headers: wire,
            body: crate::gateway::empty_body(),
        };
        assert_eq!(answer.length(), Some(5));
        let response = answer.into_response();
        let headers = response.headers();
        assert_eq!(headers["server"], "up");
        assert_eq!(headers.get_all("x-many").iter().count(), 2);
        assert_eq!(headers["content-length"], "5");
    }

    #[test]
    fn a_response_and_its_answer_hold_the_same_headers() {
        let mut response = Response::new(crate::gateway::full_body("four"));
        *response.status_mut() = StatusCode::CREATED;
        let headers = response.headers_mut();
        headers.insert("connection", HeaderValue::from_static("upgrade"));
        headers.append("set-cookie", HeaderValue::from_static("a=1"));
        headers.append("set-cookie", HeaderValue::from_static("b=2"));
        let answer = Answer::from(response);
        assert_eq!(answer.status(), StatusCode::CREATED);
        assert_eq!(answer.length(), Some(4));
        let back = answer.into_response();
        assert_eq!(back.status(), StatusCode::CREATED);
        assert_eq!(back.headers()["connection"], "upgrade");
        assert_eq!(back.headers().get_all("set-cookie").iter().count(), 2);
    }
}
