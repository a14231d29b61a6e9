//! The gateway's own HTTP/1.1 hot path, for both of its sides.
//!
//! [`serve_lane`] serves a client connection: it parses request heads itself, hands
//! plain proxied requests to a [`LaneService`] and writes the answers, and gives the
//! connection (the bytes already read included, see [`Rewind`]) to a general-purpose
//! server from the first request it does not take: upgrades, chunked or large request
//! bodies, HTTP/1.0, CORS requests, the gateway's own routes.
//!
//! The upstream side ([`crate::gateway::UpstreamPool`]) sends requests on pooled
//! connections in the task that awaits the answer, and the answer's body reads its
//! socket itself. A proxied request thus costs one task, a few reads and writes, and
//! no channel or cross-thread wake-up.

mod body;
mod client;
mod respond;
mod rewind;
mod server;

pub(crate) use client::{exchange, Conn};
pub use rewind::Rewind;
pub use server::{serve_lane, LaneOptions, LaneService};

use bytes::BytesMut;
use http::{HeaderMap, HeaderName};
use std::task::{Context, Poll};
use tokio::net::TcpStream;

/// Largest request or answer head read.
const MAX_HEAD: usize = 64 * 1024;

/// Bodies up to this size travel in the same write as their head.
const BODY_IN_ONE_WRITE: usize = 64 * 1024;

/// Append `name: value\r\n`.
fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
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

/// Whether a comma-separated header (`Connection`, `Transfer-Encoding`) names `token`.
fn is_token_in(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    })
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
