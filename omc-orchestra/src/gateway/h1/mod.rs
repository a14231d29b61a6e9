//! The gateway's own HTTP/1.1 hot path, for both of its sides.
//!
//! [`serve_lane`] serves a client connection: it parses request heads itself, hands
//! plain proxied requests to a [`LaneService`] and writes the answers, and gives the
//! connection (the bytes already read included, see [`Rewind`]) to a general-purpose
//! server from the first request it does not take: upgrades, request bodies larger than
//! it buffers, HTTP/1.0, CORS requests, the gateway's own routes. A request whose
//! framing is malformed it answers 400 itself, by the rules of
//! `gateway::http1`, which the upstream side follows too.
//!
//! The upstream side ([`crate::gateway::UpstreamPool`]) sends requests on pooled
//! connections in the task that awaits the answer, and the answer's body reads its
//! socket itself. A proxied request thus costs one task, a few reads and writes, and
//! no channel or cross-thread wake-up.
//!
//! [`serve_threads`] serves a port with a thread per core, each running [`serve_lane`]
//! for the connections it is handed, under a cap of open connections ([`Oldest`]).

mod body;
mod client;
mod deadline;
mod oldest;
mod respond;
mod rewind;
mod server;
mod threads;
mod wire;

pub(crate) use client::{exchange, exchange_streamed, hold_whole, put_head, whole, Conn, Whole};
pub(crate) use deadline::Deadline;
pub use oldest::{Oldest, Place};
pub use rewind::Rewind;
pub use server::{serve_lane, LaneOptions, LaneService};
pub use threads::serve_threads;
pub(crate) use wire::append_lines;
pub use wire::{Answer, WireHeaders};

use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::task::{Context, Poll};
use tokio::net::TcpStream;

/// Largest request or answer head read.
pub(crate) const MAX_HEAD: usize = 64 * 1024;

/// Bodies up to this size travel in the same write as their head.
const BODY_IN_ONE_WRITE: usize = 64 * 1024;

/// Append `name: value\r\n`.
pub(crate) fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Append `content-length: {len}\r\n`.
fn put_length(out: &mut Vec<u8>, len: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = len;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    put_header(out, b"content-length", &digits[at..]);
}

/// A parsed header whose value is kept as a range of the head it was read from, to be
/// shared rather than copied once the head is split off (see [`shared_headers`]).
type Field = (HeaderName, std::ops::Range<usize>);

/// `header` of a head starting at `head`, as a [`Field`]; `None` when its name is not one
/// `http` accepts. Its value is one: httparse accepts the bytes `HeaderValue` does
/// (visible ASCII, obs-text, spaces and tabs).
fn field(head: &[u8], header: &httparse::Header<'_>) -> Option<Field> {
    let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
    let offset = (header.value.as_ptr() as usize).checked_sub(head.as_ptr() as usize)?;
    Some((name, offset..offset + header.value.len()))
}

/// The headers of `fields`, their values sharing `head`'s bytes.
fn shared_headers(head: &bytes::Bytes, fields: Vec<Field>) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(fields.len());
    for (name, range) in fields {
        // httparse checked the value with the same rule.
        if let Ok(value) = HeaderValue::from_maybe_shared(head.slice(range)) {
            headers.append(name, value);
        }
    }
    headers
}

/// Read what the socket has into `buf`: `Ok(0)` at its end. A read that leaves room in
/// `buf` tells the reactor the socket is drained, so an idle connection's readiness
/// means its upstream closed it (see [`Conn::looks_idle`]).
fn read_some(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
    tokio_util::io::poll_read_buf(std::pin::Pin::new(stream), cx, buf)
}

/// [`read_some`], awaited.
async fn read_more(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| read_some(stream, buf, cx)).await
}

/// Parse `bytes` as a request head the way the lane does.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_request_head(bytes: &[u8]) {
    server::fuzz_parse(bytes);
}

/// Decode `bytes` as a chunked body, whole and cut at `bytes[0]`: both reads must agree.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_chunked_body(bytes: &[u8]) {
    let Some((&cut, bytes)) = bytes.split_first() else {
        return;
    };
    let whole = crate::gateway::http1::Dechunk::default().read(bytes);
    let mut cut_read = crate::gateway::http1::Dechunk::default();
    let first = cut_read.read(&bytes[..usize::from(cut).min(bytes.len())]);
    if first == Ok(crate::gateway::http1::Dechunked::More) {
        assert_eq!(cut_read.read(bytes), whole);
    }
    if let Ok(crate::gateway::http1::Dechunked::Done(used)) = whole {
        assert!(used <= bytes.len());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lengths_are_written_in_decimal() {
        for len in [0, 7, 10, 81, 1000, 65_536, u64::MAX] {
            let mut out = Vec::new();
            super::put_length(&mut out, len);
            assert_eq!(out, format!("content-length: {len}\r\n").into_bytes());
        }
    }
}
