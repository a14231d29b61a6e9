//! The upstream half: one HTTP/1.1 exchange on one connection, driven by the task that
//! awaits the answer. No connection task and no channel sit between the request and the
//! socket: the request head (and a small body) goes out in one write, the answer's head
//! is parsed from the first read, and the answer's body reads the socket itself,
//! handing the connection back to the pool at its end.

use super::body::{Chunk, Framing, UpstreamBody};
use super::{
    field, is_token_in, put_header, put_length, read_more, shared_headers, BODY_IN_ONE_WRITE,
    MAX_HEAD,
};
use crate::gateway::forward::idempotent;
use crate::gateway::pool::Home;
use crate::gateway::{GatewayBody, UpstreamError};
use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Body;
use std::task::Context;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// An open upstream connection and the bytes read from it but not used yet.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    pub(super) buf: BytesMut,
}

impl Conn {
    pub(crate) fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(8 * 1024),
        }
    }

    /// Whether an idle connection looks usable: nothing unread, and the reactor has not
    /// seen it become readable (an idle connection turns readable only when the
    /// upstream closes it or sends garbage).
    pub(crate) fn looks_idle(&self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        self.stream.poll_read_ready(&mut cx).is_pending()
    }
}

/// Why an exchange failed, and whether the request could be sent again elsewhere: it
/// can when a reused connection turned out closed before any answer came.
pub(crate) struct Failed {
    pub(crate) error: UpstreamError,
    pub(crate) request: Option<Request<GatewayBody>>,
}

fn io_error(error: std::io::Error) -> UpstreamError {
    UpstreamError::Io(error)
}

/// The request head in HTTP/1.1 wire form, the body's framing settled: a body known in
/// full goes in `wire` too (returned as `true`), anything else is streamed after it.
async fn encode_request(
    wire: &mut Vec<u8>,
    parts: &http::request::Parts,
    body: &mut GatewayBody,
) -> Result<(bool, bool), UpstreamError> {
    wire.extend_from_slice(parts.method.as_str().as_bytes());
    wire.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    wire.extend_from_slice(target.as_bytes());
    wire.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        if name != CONTENT_LENGTH && name != TRANSFER_ENCODING && name != CONNECTION {
            put_header(wire, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    let exact = body.size_hint().exact();
    let wants_length = matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
    match exact {
        Some(0) if body.is_end_stream() => {
            if wants_length {
                wire.extend_from_slice(b"content-length: 0\r\n");
            }
            wire.extend_from_slice(b"\r\n");
            Ok((true, false))
        }
        Some(len) if len as usize <= BODY_IN_ONE_WRITE => {
            let bytes = std::mem::replace(body, crate::gateway::empty_body())
                .collect()
                .await
                .map_err(UpstreamError::Body)?
                .to_bytes();
            put_length(wire, bytes.len() as u64);
            wire.extend_from_slice(b"\r\n");
            wire.extend_from_slice(&bytes);
            Ok((true, false))
        }
        Some(len) => {
            put_length(wire, len);
            wire.extend_from_slice(b"\r\n");
            Ok((false, false))
        }
        None => {
            wire.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
            Ok((false, true))
        }
    }
}

/// Send `request` on `conn` and read the answer's head. `reused`: the connection came
/// from the pool, so a close before any answer means it was stale, not that the
/// upstream failed; the request then comes back in [`Failed`] to be sent again.
pub(crate) async fn exchange(
    mut conn: Conn,
    request: Request<GatewayBody>,
    home: Home,
    reused: bool,
) -> Result<Response<GatewayBody>, Failed> {
    let encoded = request.extensions().get::<Encoded>().cloned();
    let (parts, mut body) = request.into_parts();
    let (wire, complete, chunked) = match encoded {
        Some(Encoded(wire)) => (wire, true, false),
        None => {
            let mut wire = Vec::with_capacity(1024);
            match encode_request(&mut wire, &parts, &mut body).await {
                Ok((complete, chunked)) => (Bytes::from(wire), complete, chunked),
                Err(error) => {
                    return Err(Failed {
                        error,
                        request: None,
                    })
                }
            }
        }
    };
    // Only a request held whole in `wire` can be sent again.
    let again = |error: UpstreamError, wire: Bytes, parts: http::request::Parts| Failed {
        error,
        request: (reused && complete).then(|| {
            let mut request = Request::from_parts(parts, crate::gateway::empty_body());
            request.extensions_mut().insert(Encoded(wire));
            request
        }),
    };
    if let Err(err) = conn.stream.write_all(&wire).await {
        return Err(again(io_error(err), wire, parts));
    }
    if !complete {
        if let Err(error) = stream_body(&mut conn.stream, body, chunked).await {
            return Err(Failed {
                error,
                request: None,
            });
        }
    }
    let head = match read_head(&mut conn).await {
        Ok(head) => head,
        // The request went out: the upstream may have acted on it before closing, so
        // only a request that may be repeated is sent again.
        Err(HeadError::ClosedEarly(err)) if idempotent(&parts.method) => {
            return Err(again(err, wire, parts))
        }
        Err(HeadError::ClosedEarly(error) | HeadError::Other(error)) => {
            return Err(Failed {
                error,
                request: None,
            })
        }
    };
    Ok(answer(conn, head, &parts.method, home))
}

/// A request put in wire form by a first attempt that met a stale connection.
#[derive(Clone)]
struct Encoded(Bytes);

async fn stream_body(
    stream: &mut TcpStream,
    mut body: GatewayBody,
    chunked: bool,
) -> Result<(), UpstreamError> {
    let mut out = Vec::with_capacity(16 * 1024);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(UpstreamError::Body)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        out.clear();
        if chunked {
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        out.extend_from_slice(&data);
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
        stream.write_all(&out).await.map_err(io_error)?;
    }
    if chunked {
        stream.write_all(b"0\r\n\r\n").await.map_err(io_error)?;
    }
    Ok(())
}

struct Head {
    status: StatusCode,
    headers: HeaderMap,
    keep_alive: bool,
}

enum HeadError {
    /// The connection closed (or reset) before a byte of the answer came.
    ClosedEarly(UpstreamError),
    Other(UpstreamError),
}

async fn read_head(conn: &mut Conn) -> Result<Head, HeadError> {
    let mut seen_any = false;
    loop {
        if !conn.buf.is_empty() {
            seen_any = true;
            match parse_head(&mut conn.buf).map_err(HeadError::Other)? {
                Some(head) => {
                    // Interim answers (100 Continue, 103 Early Hints) are not relayed.
                    if head.status.is_informational() {
                        continue;
                    }
                    return Ok(head);
                }
                None if conn.buf.len() > MAX_HEAD => {
                    return Err(HeadError::Other(UpstreamError::Protocol(
                        "the upstream's answer head is too large".into(),
                    )))
                }
                None => {}
            }
        }
        let read = read_more(&mut conn.stream, &mut conn.buf).await;
        match read {
            Ok(0) | Err(_) if !seen_any => {
                let err = read.err().unwrap_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the upstream closed the connection",
                    )
                });
                return Err(HeadError::ClosedEarly(io_error(err)));
            }
            Ok(0) => {
                return Err(HeadError::Other(UpstreamError::Protocol(
                    "the upstream closed the connection mid-answer".into(),
                )))
            }
            Ok(_) => {}
            Err(err) => return Err(HeadError::Other(io_error(err))),
        }
    }
}

/// The answer head at the start of `buf`, split off it; `None` while incomplete. Header
/// values share the head's bytes.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, UpstreamError> {
    let mut slots = [httparse::EMPTY_HEADER; 100];
    let mut parsed = httparse::Response::new(&mut slots);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(err) => {
            return Err(UpstreamError::Protocol(format!(
                "the upstream's answer does not parse: {err}"
            )))
        }
    };
    let status = parsed
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| UpstreamError::Protocol("the upstream's status is invalid".into()))?;
    let mut fields = Vec::with_capacity(parsed.headers.len());
    for header in parsed.headers.iter() {
        fields.push(field(buf, header).ok_or_else(|| {
            UpstreamError::Protocol(format!(
                "the upstream sent an invalid header `{}`",
                header.name
            ))
        })?);
    }
    let http11 = parsed.version == Some(1);
    let head = buf.split_to(len).freeze();
    let headers = shared_headers(&head, fields, 4);
    let keep_alive = http11 && !is_token_in(&headers, CONNECTION, "close");
    Ok(Some(Head {
        status,
        headers,
        keep_alive,
    }))
}

/// The answer, its body reading the rest from `conn`.
fn answer(conn: Conn, head: Head, method: &Method, home: Home) -> Response<GatewayBody> {
    let Head {
        status,
        mut headers,
        keep_alive,
    } = head;
    let framing = if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Length(0)
    } else if is_token_in(&headers, TRANSFER_ENCODING, "chunked") {
        Framing::Chunked(Chunk::Size)
    } else {
        let lengths: Vec<_> = headers.get_all(CONTENT_LENGTH).iter().collect();
        match lengths.as_slice() {
            [one] => one
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(Framing::UntilClose, Framing::Length),
            _ => Framing::UntilClose,
        }
    };
    headers.remove(TRANSFER_ENCODING);
    let reusable = keep_alive && !matches!(framing, Framing::UntilClose);
    let mut body = UpstreamBody {
        conn: Some(conn),
        framing,
        home: reusable.then_some(home),
    };
    body.finish_if_done();
    let mut response = Response::new(body.boxed_unsync());
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}
