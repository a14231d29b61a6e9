//! An idle deadline on a request body read by hyper, which bounds only heads.

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// A request body whose client may pause no longer than `idle` between two of its
/// frames: past it, reading the body fails and the request ends. Its length stays known
/// (tower-http's `TimeoutBody` hides it), so that a proxied body keeps its
/// `Content-Length`.
pub(super) struct IdleBody<B> {
    body: B,
    idle: Duration,
    /// Made at the body's first pause, then reset at each.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether the timer runs for the current pause.
    paused: bool,
}

impl<B> IdleBody<B> {
    pub(super) fn new(body: B, idle: Duration) -> Self {
        Self {
            body,
            idle,
            timer: None,
            paused: false,
        }
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            this.paused = false;
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        let timer = match &mut this.timer {
            Some(timer) if this.paused => timer,
            Some(timer) => {
                timer.as_mut().reset(Instant::now() + this.idle);
                timer
            }
            None => this.timer.insert(Box::pin(tokio::time::sleep(this.idle))),
        };
        this.paused = true;
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client paused its request body too long",
            )
            .into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    const SECOND: Duration = Duration::from_secs(1);

    /// A body of `frames` one-byte frames, each after `pause`.
    fn paced(
        frames: usize,
        pause: Duration,
    ) -> impl Body<Data = Bytes, Error = std::io::Error> + Unpin {
        let stream = futures::stream::unfold(frames, move |left| async move {
            if left == 0 {
                return None;
            }
            tokio::time::sleep(pause).await;
            Some((Ok(Frame::data(Bytes::from_static(b"x"))), left - 1))
        });
        StreamBody::new(Box::pin(stream))
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_may_take_long_but_not_pause_long() {
        let body = IdleBody::new(paced(10, SECOND * 9 / 10), SECOND);
        let read = body
            .collect()
            .await
            .expect("no pause as long as the deadline");
        assert_eq!(read.to_bytes().len(), 10);
        let started = Instant::now();
        let err = IdleBody::new(paced(10, 2 * SECOND), SECOND)
            .collect()
            .await
            .expect_err("a pause longer than the deadline");
        assert_eq!(started.elapsed(), SECOND, "{err}");
    }

    #[test]
    fn the_length_stays_known() {
        let body = IdleBody::new(Full::new(Bytes::from_static(b"abc")), SECOND);
        assert_eq!(body.size_hint().exact(), Some(3));
        assert!(!body.is_end_stream());
    }
}
