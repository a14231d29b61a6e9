//! The client half of the hot path: one connection's requests, read, served and answered
//! in the connection's own task.

use super::respond::{internal_error, write_response, ToClient};
use super::{
    field, read_more, shared_headers, Answer, Deadline, Field, Rewind, BODY_IN_ONE_WRITE, MAX_HEAD,
};
use crate::gateway::answers::error;
use crate::gateway::http1::{
    declared, has_bare_lf, Dechunk, Dechunked, Declared, LaneFit, Malformed,
};
use crate::gateway::{empty_body, full_body, GatewayBody, ProxyInfo};
use bytes::{Buf, BytesMut};
use futures::FutureExt;
use http::{Method, Request, StatusCode, Uri};
use std::future::Future;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

/// What serves the requests of a lane.
pub trait LaneService: Send + Sync + 'static {
    /// Whether the lane serves this request (its head); when not, the connection goes to
    /// [`LaneService::fallback`] from this request on.
    fn takes(&self, head: &http::request::Parts) -> bool;

    /// Serve one request from `peer`: the answer, and what the gateway did.
    fn call(
        &self,
        request: Request<GatewayBody>,
        peer: SocketAddr,
    ) -> impl Future<Output = (Answer, ProxyInfo)> + Send;

    /// Called with each answer (and what the gateway did) before it is written: where
    /// to count it. Does nothing unless implemented.
    fn served(&self, answer: &Answer, info: &ProxyInfo) {
        let _ = (answer, info);
    }

    /// Serve the rest of a connection the lane gave up on, from the request it did not
    /// take on (its bytes come first in `io`).
    fn fallback(&self, io: Rewind, peer: SocketAddr) -> impl Future<Output = ()> + Send;
}

/// Limits of a lane's connections.
#[derive(Debug, Clone, Copy)]
pub struct LaneOptions {
    /// Request bodies up to this size (chunked ones too, decoded) are read whole before
    /// the request is served; larger ones are streamed by the fallback.
    pub max_buffered_body: usize,
    /// An idle keep-alive connection is closed after this long.
    pub keep_alive: Duration,
    /// One deadline for a whole request head, from its first bytes, however slowly the
    /// rest comes.
    pub head_timeout: Duration,
    /// Longest pause while a request body is read, or while a client that stops reading
    /// takes no byte of its answer.
    pub idle_timeout: Duration,
}

impl Default for LaneOptions {
    fn default() -> Self {
        Self {
            max_buffered_body: BODY_IN_ONE_WRITE,
            keep_alive: Duration::from_secs(75),
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// How the body of a request the lane takes comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    /// This many bytes (0: none).
    Length(usize),
    /// Chunked, read whole while it stays within the buffered size.
    Chunked,
}

/// A request head the lane takes, and how its body comes.
struct Taken {
    method: Method,
    /// Where the request target is in the head.
    target: std::ops::Range<usize>,
    fields: Vec<Field>,
    head_len: usize,
    body: BodyKind,
    close: bool,
}

impl Taken {
    /// The request's head, its target and values sharing `head`'s bytes; `None` when
    /// its target is not one `http` accepts.
    fn parts(self, head: &bytes::Bytes) -> Option<http::request::Parts> {
        let uri = Uri::from_maybe_shared(head.slice(self.target)).ok()?;
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.method = self.method;
        parts.uri = uri;
        // The lane's requests gain no header here: the rewrite is written with the
        // upstream head.
        parts.headers = shared_headers(head, self.fields);
        Some(parts)
    }
}

enum Parsed {
    Partial,
    Taken(Taken),
    /// Anything the lane leaves to the fallback: HTTP/1.0, upgrades, large bodies.
    Elsewhere,
    /// A request no server may read one way and a proxy another: answered 400, closed.
    Malformed(Malformed),
}

fn parse(buf: &[u8], options: &LaneOptions) -> Parsed {
    // Uninitialised slots: a hundred headers zeroed per parse would cost more than a
    // short head's parsing.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 100];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => {
            // A bare LF is refused as soon as it comes, not once the head is whole.
            if has_bare_lf(buf) {
                return Parsed::Malformed(Malformed("a line ends in a bare LF"));
            }
            return Parsed::Partial;
        }
        // The fallback's limits (and its 431) apply to heads larger than the lane's.
        Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Elsewhere
        }
        // Folded lines, bad names, stray bytes: what httparse refuses, hyper does too.
        Err(_) => return Parsed::Malformed(Malformed("the request head does not parse")),
    };
    // httparse takes a bare LF for a line end; a server behind the gateway may not.
    if has_bare_lf(&buf[..head_len]) {
        return Parsed::Malformed(Malformed("a line ends in a bare LF"));
    }
    let http11 = req.version == Some(1);
    let body = match declared(req.headers, http11) {
        Err(malformed) => return Parsed::Malformed(malformed),
        Ok(Declared::Unknown) => BodyKind::Length(0),
        Ok(Declared::Chunked) => BodyKind::Chunked,
        Ok(Declared::Length(length)) => match usize::try_from(length) {
            Ok(length) if length <= options.max_buffered_body => BodyKind::Length(length),
            // Streamed by the fallback, which reads the length the same way.
            _ => return Parsed::Elsewhere,
        },
    };
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return Parsed::Elsewhere;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::Elsewhere;
    };
    // Checked as a URI once the head is split off, sharing its bytes.
    let Some(target) = (path.as_ptr() as usize)
        .checked_sub(buf.as_ptr() as usize)
        .map(|at| at..at + path.len())
    else {
        return Parsed::Elsewhere;
    };
    let mut fields = Vec::with_capacity(req.headers.len());
    let mut fit = LaneFit::default();
    for header in req.headers.iter() {
        let Some((name, range)) = field(buf, header) else {
            return Parsed::Elsewhere;
        };
        fit.note(&name, header.value);
        fields.push((name, range));
    }
    if !fit.takes(http11) {
        return Parsed::Elsewhere;
    }
    Parsed::Taken(Taken {
        method,
        target,
        fields,
        head_len,
        body,
        close: fit.connection.close,
    })
}

/// Parse `bytes` as [`serve_lane`] does, and the target of a head it takes.
#[cfg(feature = "fuzzing")]
pub(super) fn fuzz_parse(bytes: &[u8]) {
    if let Parsed::Taken(taken) = parse(bytes, &LaneOptions::default()) {
        assert!(taken.head_len <= bytes.len());
        let head = bytes::Bytes::copy_from_slice(&bytes[..taken.head_len]);
        let _ = taken.parts(&head);
    }
}

/// Answer a malformed request 400 and close: the bytes after its head cannot be told
/// apart, so the connection serves nothing more. What the client still sends is read
/// (for a short while) before the close, so that the answer is not lost to a reset.
async fn refuse(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    timer: &mut Option<Deadline>,
    options: &LaneOptions,
    malformed: Malformed,
) {
    let message = format!("the request is malformed: {malformed}");
    let answer = error(StatusCode::BAD_REQUEST, "bad_request", &message).into();
    out.clear();
    let client = ToClient {
        stream: &mut *stream,
        out,
        timer,
        idle: options.idle_timeout,
    };
    if write_response(client, answer, &Method::GET, true)
        .await
        .is_err()
    {
        return;
    }
    let _ = stream.shutdown().await;
    let mut sink = BytesMut::with_capacity(4096);
    let mut drained = 0;
    let _ = tokio::time::timeout(LINGER, async {
        while drained < LINGER_BYTES {
            sink.clear();
            match read_more(stream, &mut sink).await {
                Ok(n) if n > 0 => drained += n,
                _ => return,
            }
        }
    })
    .await;
}

/// How long a refused client's further bytes are read before the close.
const LINGER: Duration = Duration::from_secs(1);

/// How many of a refused client's further bytes are read before the close.
const LINGER_BYTES: usize = 256 * 1024;

/// Serve `stream`, a connection from `peer`, until it closes, `stop` turns true between
/// requests, or a request goes to the fallback.
///
/// A custom gateway serving its proxied requests on this path:
///
/// ```no_run
/// use omc_orchestra::gateway::h1::{serve_lane, Answer, LaneOptions, LaneService, Rewind};
/// use omc_orchestra::gateway::{Gateway, GatewayBody, ProxyInfo};
/// use std::net::SocketAddr;
/// use std::sync::Arc;
///
/// struct Proxy(Arc<Gateway>);
///
/// impl LaneService for Proxy {
///     fn takes(&self, head: &http::request::Parts) -> bool {
///         head.uri.path() != "/whoami"
///     }
///
///     async fn call(
///         &self,
///         request: http::Request<GatewayBody>,
///         peer: SocketAddr,
///     ) -> (Answer, ProxyInfo) {
///         self.0.serve(request, peer.ip()).await
///     }
///
///     async fn fallback(&self, _connection: Rewind, _peer: SocketAddr) {
///         // Serve the rest of the connection with hyper and a router of your own.
///     }
/// }
///
/// # async fn demo(gateway: Arc<Gateway>) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// let proxy = Arc::new(Proxy(gateway));
/// let (_stop, stopped) = tokio::sync::watch::channel(false);
/// loop {
///     let (stream, peer) = listener.accept().await?;
///     let options = LaneOptions::default();
///     tokio::spawn(serve_lane(proxy.clone(), stream, peer, options, stopped.clone()));
/// }
/// # }
/// ```
pub async fn serve_lane<S: LaneService>(
    service: Arc<S>,
    mut stream: TcpStream,
    peer: SocketAddr,
    options: LaneOptions,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut out = Vec::with_capacity(8 * 1024);
    // One timer serves every wait of the connection (made at the first that needs one).
    let mut timer: Option<Deadline> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        // The head's deadline, fixed at its first wait: reads that each bring a byte do
        // not push it back, so a client dribbling a head loses the connection on time.
        let mut head_deadline: Option<Instant> = None;
        let taken = loop {
            match parse(&buf, &options) {
                Parsed::Taken(taken) => break taken,
                Parsed::Elsewhere => {
                    let prefix = buf.split().freeze();
                    return service.fallback(Rewind::new(prefix, stream), peer).await;
                }
                Parsed::Malformed(malformed) => {
                    return refuse(&mut stream, &mut out, &mut timer, &options, malformed).await;
                }
                Parsed::Partial => {}
            }
            let idle = buf.is_empty();
            // Bytes that are there already need no timer.
            let read = read_more(&mut stream, &mut buf);
            tokio::pin!(read);
            if let Some(now) = read.as_mut().now_or_never() {
                match now {
                    Ok(n) if n > 0 => continue,
                    _ => return,
                }
            }
            let deadline = if idle {
                Deadline::arm(&mut timer, options.keep_alive)
            } else {
                let at =
                    *head_deadline.get_or_insert_with(|| Instant::now() + options.head_timeout);
                Deadline::arm_at(&mut timer, at)
            };
            tokio::select! {
                biased;
                read = read => match read {
                    Ok(n) if n > 0 => {}
                    _ => return,
                },
                () = deadline.passed() => return,
                _ = stop.changed(), if idle => return,
            }
        };
        let (body_kind, close) = (taken.body, taken.close);
        let head = buf.split_to(taken.head_len).freeze();
        // The fallback answers what the lane does not take, bad targets included, from
        // the request's first byte.
        let elsewhere = |buf: &BytesMut, stream| {
            let mut prefix = BytesMut::from(&head[..]);
            prefix.extend_from_slice(buf);
            Rewind::new(prefix.freeze(), stream)
        };
        let parts = match taken.parts(&head) {
            Some(parts) if service.takes(&parts) => parts,
            _ => return service.fallback(elsewhere(&buf, stream), peer).await,
        };
        let mut dechunk = Dechunk::default();
        let body_len = loop {
            let need = match body_kind {
                BodyKind::Length(len) if buf.len() >= len => break len,
                BodyKind::Length(_) => None,
                BodyKind::Chunked => match dechunk.read(&buf) {
                    Ok(Dechunked::Done(len)) => break len,
                    Ok(Dechunked::More) => Some(dechunk.len()),
                    Err(malformed) => {
                        return refuse(&mut stream, &mut out, &mut timer, &options, malformed).await
                    }
                },
            };
            // A chunked body larger than the lane buffers is streamed by the fallback.
            if need.is_some_and(|decoded| decoded > options.max_buffered_body) {
                return service.fallback(elsewhere(&buf, stream), peer).await;
            }
            // An idle deadline, afresh after each read that brought bytes.
            let deadline = Deadline::arm(&mut timer, options.idle_timeout);
            tokio::select! {
                biased;
                read = read_more(&mut stream, &mut buf) => match read {
                    Ok(n) if n > 0 => {}
                    _ => return,
                },
                () = deadline.passed() => return,
            }
        };
        let body = match body_kind {
            BodyKind::Length(0) => empty_body(),
            BodyKind::Length(len) => full_body(buf.split_to(len).freeze()),
            BodyKind::Chunked => {
                buf.advance(body_len);
                full_body(bytes::Bytes::from(dechunk.into_body()))
            }
        };
        let method = parts.method.clone();
        let request = Request::from_parts(parts, body);
        // Pinned where it runs, and wrapped by reference: the call's state (a few KiB)
        // is not copied from wrapper to wrapper.
        let call = service.call(request, peer);
        tokio::pin!(call);
        let answer = match AssertUnwindSafe(call.as_mut()).catch_unwind().await {
            Ok((answer, info)) => {
                service.served(&answer, &info);
                answer
            }
            Err(_) => internal_error().into(),
        };
        out.clear();
        let client = ToClient {
            stream: &mut stream,
            out: &mut out,
            timer: &mut timer,
            idle: options.idle_timeout,
        };
        if write_response(client, answer, &method, close)
            .await
            .is_err()
            || close
        {
            return;
        }
    }
}

#[cfg(test)]
#[path = "server_deadline_tests.rs"]
mod deadline_tests;

#[cfg(test)]
#[path = "server_props.rs"]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> LaneOptions {
        LaneOptions::default()
    }

    #[test]
    fn plain_requests_are_taken() {
        let raw = b"GET /api/a/b?x=1 HTTP/1.1\r\nHost: gw\r\nAccept: */*\r\n\r\nGET /next";
        let Parsed::Taken(taken) = parse(raw, &options()) else {
            panic!("a plain GET is taken");
        };
        assert_eq!(taken.head_len, raw.len() - b"GET /next".len());
        assert_eq!(taken.body, BodyKind::Length(0));
        assert!(!taken.close);
        let head = bytes::Bytes::copy_from_slice(&raw[..taken.head_len]);
        let parts = taken.parts(&head).expect("a plain target is a URI");
        assert_eq!(parts.uri, "/api/a/b?x=1");
        assert_eq!(parts.headers["accept"], "*/*");
        assert_eq!(parts.headers["host"], "gw");
    }

    #[test]
    fn targets_that_are_no_uri_are_not_taken() {
        let raw = b"GET http://[::1 HTTP/1.1\r\nHost: gw\r\n\r\n";
        let Parsed::Taken(taken) = parse(raw, &options()) else {
            panic!("the head parses");
        };
        let head = bytes::Bytes::copy_from_slice(&raw[..taken.head_len]);
        assert!(taken.parts(&head).is_none());
    }

    #[test]
    fn partial_heads_wait_for_more() {
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost:", &options()),
            Parsed::Partial
        ));
    }

    #[test]
    fn anything_unusual_goes_elsewhere() {
        for raw in [
            &b"GET / HTTP/1.0\r\n\r\n"[..],
            b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nOrigin: http://app\r\n\r\n",
        ] {
            assert!(
                matches!(parse(raw, &options()), Parsed::Elsewhere),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn misframed_requests_are_refused() {
        for raw in [
            &b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\nx"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 1 1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",
            b"GET / HTTP/1.1\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\n",
            b"G@T / HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(parse(raw, &options()), Parsed::Malformed(_)),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn chunked_requests_are_taken() {
        let raw = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let Parsed::Taken(taken) = parse(raw, &options()) else {
            panic!("a chunked POST is taken");
        };
        assert_eq!(taken.body, BodyKind::Chunked);
    }

    #[test]
    fn bodies_and_close_are_noted() {
        let raw = b"POST /x HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
        let Parsed::Taken(taken) = parse(raw, &options()) else {
            panic!("a small POST is taken");
        };
        assert_eq!(taken.body, BodyKind::Length(3));
        assert!(taken.close);
    }
}
