//! A connection's one timer, reused from wait to wait.

use std::pin::Pin;
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// A connection's one timer, reused from wait to wait. Setting a later deadline only
/// notes it; the timer, should it fire before the deadline noted, sleeps on to it. A
/// request thus costs no timer registration (nor its removal), at most a clock read.
#[derive(Debug)]
pub(crate) struct Deadline {
    sleep: Pin<Box<Sleep>>,
    at: Instant,
}

impl Deadline {
    /// A timer for `wait` from now.
    pub(crate) fn after(wait: Duration) -> Self {
        Self::at(Instant::now() + wait)
    }

    /// A timer for `at`.
    pub(crate) fn at(at: Instant) -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep_until(at)),
            at,
        }
    }

    /// The deadline is `wait` from now.
    pub(crate) fn set(&mut self, wait: Duration) {
        self.set_at(Instant::now() + wait);
    }

    /// The deadline is `at`.
    pub(crate) fn set_at(&mut self, at: Instant) {
        self.at = at;
        if self.at < self.sleep.deadline() {
            self.sleep.as_mut().reset(self.at);
        }
    }

    /// Completes once the deadline has passed.
    pub(crate) async fn passed(&mut self) {
        loop {
            self.sleep.as_mut().await;
            if Instant::now() >= self.at {
                return;
            }
            self.sleep.as_mut().reset(self.at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    /// Whether `timer` has passed, without waiting.
    fn passed(timer: &mut Deadline) -> bool {
        timer.passed().now_or_never().is_some()
    }

    #[tokio::test(start_paused = true)]
    async fn one_timer_follows_later_and_earlier_deadlines() {
        let second = Duration::from_secs(1);
        let mut timer = Deadline::after(10 * second);
        // A later deadline is only noted: the timer fires at 10 s, then sleeps on.
        timer.set(20 * second);
        tokio::time::advance(15 * second).await;
        assert!(!passed(&mut timer));
        tokio::time::advance(5 * second).await;
        assert!(passed(&mut timer));
        // An earlier deadline than the one armed moves the timer forward.
        timer.set(60 * second);
        timer.set(5 * second);
        tokio::time::advance(4 * second).await;
        assert!(!passed(&mut timer));
        tokio::time::advance(second).await;
        assert!(passed(&mut timer));
        // A deadline set at a given instant, after the timer fired: it sleeps on to it.
        timer.set_at(Instant::now() + 3 * second);
        tokio::time::advance(2 * second).await;
        assert!(!passed(&mut timer));
        tokio::time::advance(second).await;
        assert!(passed(&mut timer));
    }
}
