//! The upstream half: one HTTP/1.1 exchange on one connection, driven by the task that
//! awaits the answer. No connection task and no channel sit between the request and the
//! socket: the request head (and a small body) goes out in one write, the answer's head
//! is parsed from the first read, and the answer's body reads the socket itself,
//! handing the connection back to the pool at its end.

use super::body::{Chunk, Framing, UpstreamBody};
use super::wire::{sort, Answer, Sorted};
use super::{put_header, put_length, read_more, Deadline, BODY_IN_ONE_WRITE, MAX_HEAD};
use crate::gateway::forward::idempotent;
use crate::gateway::http1::{bodiless, declared, Declared};
use crate::gateway::pool::Home;
use crate::gateway::rewrite::Rewrite;
use crate::gateway::{GatewayBody, UpstreamError};
use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Body;
use std::mem::MaybeUninit;
use std::task::Context;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// An open upstream connection and the bytes read from it but not used yet.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    pub(super) buf: BytesMut,
    /// The timer of its exchanges' deadlines, kept from one to the next.
    timer: Option<Deadline>,
}

impl Conn {
    pub(crate) fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(8 * 1024),
            timer: None,
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

/// Why an exchange failed, and whether the request may be sent again elsewhere: it may
/// when a reused connection turned out closed before any answer came, and the request
/// was held whole.
pub(crate) struct Failed {
    pub(crate) error: UpstreamError,
    pub(crate) again: bool,
}

impl Failed {
    fn end(error: UpstreamError) -> Self {
        Self {
            error,
            again: false,
        }
    }
}

/// A request in wire form, its head and body held whole, so that it can be sent again.
#[derive(Debug, Clone)]
pub(crate) struct Whole {
    /// The head and the body, as sent.
    pub(crate) wire: Vec<u8>,
    /// The request's method (how to read the answer; whether it may be repeated).
    pub(crate) method: Method,
}

fn io_error(error: std::io::Error) -> UpstreamError {
    UpstreamError::Io(error)
}

/// Append a request head: the request line for `method` and the target made of
/// `target` pieces, `host` (when given) as `Host` in place of the request's own, the
/// request's `headers` but for the framing ones, rewritten by `rewrite` when given, and
/// the `Content-Length` of a body of `length` bytes (also 0 where the method expects a
/// body); the blank line ends it.
pub(crate) fn put_head(
    wire: &mut Vec<u8>,
    method: &Method,
    target: &[&str],
    host: Option<&str>,
    headers: &HeaderMap,
    length: Option<u64>,
    rewrite: Option<&Rewrite<'_>>,
) {
    wire.extend_from_slice(method.as_str().as_bytes());
    wire.push(b' ');
    for piece in target {
        wire.extend_from_slice(piece.as_bytes());
    }
    wire.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(host) = host {
        put_header(wire, b"host", host.as_bytes());
    }
    for (name, value) in headers {
        let framing = name == CONTENT_LENGTH || name == TRANSFER_ENCODING || name == CONNECTION;
        let replaced = host.is_some() && name == HOST;
        if !framing && !replaced && !rewrite.is_some_and(|r| r.drops(name)) {
            put_header(wire, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    if let Some(rewrite) = rewrite {
        rewrite.put(wire);
    }
    let wants_length = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    match length {
        Some(0) if !wants_length => {}
        Some(len) => put_length(wire, len),
        None => wire.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    wire.extend_from_slice(b"\r\n");
}

/// The body of a request, whole when its size is known and small enough to travel with
/// the head; `Err` gives the body back to be streamed.
pub(crate) async fn hold_whole(
    body: GatewayBody,
) -> Result<Result<Bytes, GatewayBody>, UpstreamError> {
    match body.size_hint().exact() {
        Some(0) if body.is_end_stream() => Ok(Ok(Bytes::new())),
        Some(len) if len as usize <= BODY_IN_ONE_WRITE => Ok(Ok(body
            .collect()
            .await
            .map_err(UpstreamError::Body)?
            .to_bytes())),
        _ => Ok(Err(body)),
    }
}

/// `head` (see [`put_head`]) and `body` as one [`Whole`].
pub(crate) fn whole(mut head: Vec<u8>, method: Method, body: &[u8]) -> Whole {
    head.extend_from_slice(body);
    Whole { wire: head, method }
}

/// Send `whole` on `conn` and read the answer's head, by `deadline` when one is given
/// (the connection's own timer keeps it: a pooled connection's exchanges register
/// no timer of their own). `reused`: the connection came from the pool, so a close
/// before any answer means it was stale, not that the upstream failed; the request may
/// then be sent again (see [`Failed`]).
pub(crate) async fn exchange(
    mut conn: Conn,
    whole: &Whole,
    home: Home,
    reused: bool,
    deadline: Option<Instant>,
) -> Result<Answer, Failed> {
    let sent = match deadline {
        None => send_and_read(&mut conn, whole).await,
        Some(deadline) => {
            let mut timer = match conn.timer.take() {
                Some(mut timer) => {
                    timer.set_at(deadline);
                    timer
                }
                None => Deadline::at(deadline),
            };
            let within = tokio::select! {
                biased;
                sent = send_and_read(&mut conn, whole) => Some(sent),
                () = timer.passed() => None,
            };
            conn.timer = Some(timer);
            // A connection left mid-exchange is dropped (closed) with the failure.
            within.ok_or_else(|| Failed::end(UpstreamError::TimedOut))?
        }
    };
    match sent {
        Ok(head) => Ok(answer(conn, head, &whole.method, home)),
        Err(HeadError::Write(error)) => Err(Failed {
            error,
            again: reused,
        }),
        // The request went out: the upstream may have acted on it before closing, so
        // only a request that may be repeated is sent again.
        Err(HeadError::ClosedEarly(error)) => Err(Failed {
            error,
            again: reused && idempotent(&whole.method),
        }),
        Err(HeadError::Other(error)) => Err(Failed::end(error)),
    }
}

/// Send `whole` on `conn` and read the answer's head.
async fn send_and_read(conn: &mut Conn, whole: &Whole) -> Result<Head, HeadError> {
    conn.stream
        .write_all(&whole.wire)
        .await
        .map_err(|err| HeadError::Write(io_error(err)))?;
    read_head(conn).await
}

/// Send `head` then stream `body` (`chunked` or of the length `head` gave) on `conn`,
/// and read the answer's head. Such a request is never sent again.
pub(crate) async fn exchange_streamed(
    mut conn: Conn,
    head: &[u8],
    method: &Method,
    body: GatewayBody,
    chunked: bool,
    home: Home,
) -> Result<Answer, UpstreamError> {
    conn.stream.write_all(head).await.map_err(io_error)?;
    stream_body(&mut conn.stream, body, chunked).await?;
    match read_head(&mut conn).await {
        Ok(head) => Ok(answer(conn, head, method, home)),
        Err(HeadError::Write(error) | HeadError::ClosedEarly(error) | HeadError::Other(error)) => {
            Err(error)
        }
    }
}

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
    sorted: Sorted,
    http11: bool,
}

enum HeadError {
    /// The request could not be written.
    Write(UpstreamError),
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

/// The answer head at the start of `buf`, split off it; `None` while incomplete.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, UpstreamError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 100];
    let mut parsed = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let len = match config.parse_response_with_uninit_headers(&mut parsed, buf, &mut slots) {
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
    let http11 = parsed.version == Some(1);
    // An answer framed two ways, or no way a reader can trust, fails the exchange: its
    // connection is dropped, never pooled, as what follows on it cannot be told apart.
    let declared = declared(parsed.headers, http11).map_err(|malformed| {
        UpstreamError::Protocol(format!("the upstream's answer is misframed: {malformed}"))
    })?;
    // httparse accepts the names and values `http` does: they are copied as they came.
    let sorted = sort(parsed.headers, declared);
    buf.advance(len);
    Ok(Some(Head {
        status,
        sorted,
        http11,
    }))
}

/// The answer, its body reading the rest from `conn`, its headers in wire form.
fn answer(conn: Conn, head: Head, method: &Method, home: Home) -> Answer {
    let Head {
        status,
        sorted,
        http11,
    } = head;
    let framing = if bodiless(method, status) {
        Framing::Length(0)
    } else {
        match sorted.declared {
            Declared::Chunked => Framing::Chunked(Chunk::Size),
            Declared::Length(length) => Framing::Length(length),
            Declared::Unknown => Framing::UntilClose,
        }
    };
    let reusable = http11 && !sorted.close && !matches!(framing, Framing::UntilClose);
    let mut body = UpstreamBody {
        conn: Some(conn),
        framing,
        home: reusable.then_some(home),
    };
    body.finish_if_done();
    Answer {
        status,
        headers: sorted.wire,
        body: body.boxed_unsync(),
    }
}
