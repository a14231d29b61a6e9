//! An upstream answer's body, read from its connection by whoever polls it, decoded from
//! its HTTP/1.1 framing (length, chunked, or until the connection closes).

use super::client::Conn;
use super::read_some;
use crate::gateway::http1;
use crate::gateway::pool::Home;
use crate::gateway::BoxError;
use bytes::{Buf, Bytes};
use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

/// What polling a body gives.
type Polled = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

#[derive(Debug, Clone, Copy)]
pub(super) enum Framing {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    Done,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

/// An upstream answer's body, read from its connection by whoever polls it.
pub(super) struct UpstreamBody {
    pub(super) conn: Option<Conn>,
    pub(super) framing: Framing,
    pub(super) home: Option<Home>,
}

impl UpstreamBody {
    /// At the end of the body, the connection goes home (when it can be reused).
    pub(super) fn finish_if_done(&mut self) {
        if matches!(self.framing, Framing::Length(0)) {
            self.framing = Framing::Done;
        }
        if matches!(self.framing, Framing::Done) {
            if let (Some(conn), Some(home)) = (self.conn.take(), self.home.take()) {
                home.checkin(conn);
            }
        }
    }

    fn broken(&mut self, why: &str) -> Polled {
        self.conn = None;
        self.home = None;
        self.framing = Framing::Done;
        Poll::Ready(Some(Err(why.to_owned().into())))
    }

    /// Decode what the buffer holds; `None` when more must be read.
    fn step(&mut self) -> Option<Polled> {
        let conn = self.conn.as_mut()?;
        let buf = &mut conn.buf;
        match self.framing {
            Framing::Done => Some(Poll::Ready(None)),
            Framing::Length(left) => {
                if buf.is_empty() {
                    return None;
                }
                let take = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let data = buf.split_to(take).freeze();
                self.framing = Framing::Length(left - take as u64);
                self.finish_if_done();
                Some(Poll::Ready(Some(Ok(Frame::data(data)))))
            }
            Framing::UntilClose => {
                if buf.is_empty() {
                    return None;
                }
                let data = buf.split().freeze();
                Some(Poll::Ready(Some(Ok(Frame::data(data)))))
            }
            Framing::Chunked(chunk) => self.step_chunked(chunk),
        }
    }

    fn step_chunked(&mut self, chunk: Chunk) -> Option<Polled> {
        let buf = &mut self.conn.as_mut()?.buf;
        match chunk {
            Chunk::Size => match http1::chunk_size(buf) {
                Ok(Some((used, size))) => {
                    buf.advance(used);
                    self.framing = Framing::Chunked(if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    });
                    self.step()
                }
                Ok(None) => None,
                Err(malformed) => Some(self.broken(malformed.0)),
            },
            Chunk::Data(left) => {
                if buf.is_empty() {
                    return None;
                }
                let take = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let data = buf.split_to(take).freeze();
                let left = left - take as u64;
                self.framing = Framing::Chunked(if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                });
                Some(Poll::Ready(Some(Ok(Frame::data(data)))))
            }
            Chunk::DataEnd => match http1::chunk_end(buf) {
                Ok(true) => {
                    buf.advance(2);
                    self.framing = Framing::Chunked(Chunk::Size);
                    self.step()
                }
                Ok(false) => None,
                Err(malformed) => Some(self.broken(malformed.0)),
            },
            // Trailer fields are dropped; the body ends at the empty line.
            Chunk::Trailers => match http1::trailer_line(buf) {
                Ok(Some((used, last))) => {
                    buf.advance(used);
                    if last {
                        self.framing = Framing::Done;
                        self.finish_if_done();
                        return Some(Poll::Ready(None));
                    }
                    self.step()
                }
                Ok(None) => None,
                Err(malformed) => Some(self.broken(malformed.0)),
            },
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let this = self.get_mut();
        loop {
            if matches!(this.framing, Framing::Done) {
                return Poll::Ready(None);
            }
            if let Some(ready) = this.step() {
                return ready;
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(read_some(&mut conn.stream, &mut conn.buf, cx)) {
                Ok(0) if matches!(this.framing, Framing::UntilClose) => {
                    this.conn = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.broken("the upstream closed the connection mid-body"),
                Ok(_) => {}
                Err(err) => return this.broken(&format!("reading the upstream's body: {err}")),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(left) => SizeHint::with_exact(left),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
