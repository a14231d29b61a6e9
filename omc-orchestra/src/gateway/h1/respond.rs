//! Writing an answer to the client: the head and what of the body is ready in one write.

use super::{put_header, put_length, Answer, Deadline, BODY_IN_ONE_WRITE};
use crate::gateway::http1;
use crate::gateway::GatewayBody;
use futures::FutureExt;
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Body;
use std::cell::RefCell;
use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;

/// The 500 a request gets when answering it failed inside the gateway.
pub(super) fn internal_error() -> Response<GatewayBody> {
    crate::gateway::answers::error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error",
    )
}

/// Where an answer goes: the client's socket, the bytes not yet written, and the
/// connection's one timer, which bounds each pause of a client that stops reading.
pub(super) struct ToClient<'a> {
    pub(super) stream: &'a mut TcpStream,
    pub(super) out: &'a mut Vec<u8>,
    pub(super) timer: &'a mut Option<Deadline>,
    /// Longest the client may take no byte of the answer.
    pub(super) idle: Duration,
}

impl ToClient<'_> {
    /// Write the pending bytes and forget them. Bytes the socket takes at once cost no
    /// timer; a write that must wait arms the timer for `idle`, afresh after each write
    /// that took bytes: a client reading a long answer slowly keeps it, one that stopped
    /// reading loses it (`TimedOut`).
    async fn flush(&mut self) -> io::Result<()> {
        let mut pending = &self.out[..];
        let mut progressed = true;
        while !pending.is_empty() {
            match self.stream.try_write(pending) {
                Ok(n) => {
                    pending = &pending[n..];
                    progressed = true;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    if progressed {
                        Deadline::arm(self.timer, self.idle);
                        progressed = false;
                    }
                    // Armed above, at the first wait.
                    let Some(timer) = self.timer.as_mut() else {
                        return Err(io::ErrorKind::TimedOut.into());
                    };
                    tokio::select! {
                        biased;
                        ready = self.stream.writable() => ready?,
                        () = timer.passed() => return Err(io::ErrorKind::TimedOut.into()),
                    }
                }
                Err(err) => return Err(err),
            }
        }
        self.out.clear();
        Ok(())
    }
}

/// Write `answer`: its head and what of its body is ready in one write, the rest as it
/// comes. A body of unknown length goes chunked.
pub(super) async fn write_response(
    mut client: ToClient<'_>,
    answer: Answer,
    method: &Method,
    close: bool,
) -> io::Result<()> {
    let out = &mut *client.out;
    let Answer {
        status,
        headers,
        mut body,
    } = answer;
    let bodiless = http1::bodiless(method, status);
    let exact = body.size_hint().exact();
    let chunked = !bodiless && exact.is_none();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(headers.lines());
    if !headers.has_date() {
        put_date(out);
    }
    match exact {
        _ if bodiless => {
            if let Some(length) = headers.length() {
                put_length(out, length);
            }
        }
        Some(len) => put_length(out, len),
        None => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if bodiless {
        return client.flush().await;
    }
    loop {
        // What is ready now joins the pending bytes; only a wait flushes them.
        let frame = match body.frame().now_or_never() {
            Some(frame) => frame,
            None => {
                client.flush().await?;
                body.frame().await
            }
        };
        let out = &mut *client.out;
        match frame {
            None => break,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if data.is_empty() {
                        continue;
                    }
                    if chunked {
                        out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                    }
                    out.extend_from_slice(&data);
                    if chunked {
                        out.extend_from_slice(b"\r\n");
                    }
                    if out.len() >= BODY_IN_ONE_WRITE {
                        client.flush().await?;
                    }
                }
            }
            Some(Err(err)) => {
                // The answer broke off: what was sent stands, the connection closes.
                client.flush().await?;
                return Err(io::Error::other(err));
            }
        }
    }
    if chunked {
        client.out.extend_from_slice(b"0\r\n\r\n");
    }
    client.flush().await
}

thread_local! {
    static DATE_CACHE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
}

/// `date: ...`, formatted once a second per thread.
fn put_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE_CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != second || cache.1.is_empty() {
            *cache = (second, httpdate::fmt_http_date(now));
        }
        put_header(out, b"date", cache.1.as_bytes());
    });
}
