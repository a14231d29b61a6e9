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
    /// A timer for `at`.
    pub(crate) fn at(at: Instant) -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep_until(at)),
            at,
        }
    }

    /// The timer in `slot`, its deadline `wait` from now; made there at the first wait
    /// that needs one, so that a connection that never waits has no timer at all.
    pub(crate) fn arm(slot: &mut Option<Self>, wait: Duration) -> &mut Self {
        Self::arm_at(slot, Instant::now() + wait)
    }

    /// The timer in `slot`, its deadline `at` (made there if need be, as by [`Self::arm`]).
    pub(crate) fn arm_at(slot: &mut Option<Self>, at: Instant) -> &mut Self {
        match slot {
            Some(timer) => {
                timer.set_at(at);
                timer
            }
            None => slot.insert(Self::at(at)),
        }
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
        let in_ = |wait: Duration| Instant::now() + wait;
        let mut timer = Deadline::at(in_(10 * second));
        // A later deadline is only noted: the timer fires at 10 s, then sleeps on.
        timer.set_at(in_(20 * second));
        tokio::time::advance(15 * second).await;
        assert!(!passed(&mut timer));
        tokio::time::advance(5 * second).await;
        assert!(passed(&mut timer));
        // An earlier deadline than the one armed moves the timer forward.
        timer.set_at(in_(60 * second));
        timer.set_at(in_(5 * second));
        tokio::time::advance(4 * second).await;
        assert!(!passed(&mut timer));
        tokio::time::advance(second).await;
        assert!(passed(&mut timer));
        // A deadline set at a given instant, after the timer fired: it sleeps on to it.
        timer.set_at(in_(3 * second));
        tokio::time::advance(2 * second).await;
        assert!(!passed(&mut timer));
        tokio::time::advance(second).await;
        assert!(passed(&mut timer));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_gets_its_timer_at_the_first_arming() {
        let second = Duration::from_secs(1);
        let mut slot = None;
        assert!(!passed(Deadline::arm(&mut slot, 2 * second)));
        tokio::time::advance(2 * second).await;
        assert!(passed(slot.as_mut().expect("armed")));
        // Armed again, the same timer waits anew.
        assert!(!passed(Deadline::arm(&mut slot, second)));
        tokio::time::advance(second).await;
        assert!(passed(slot.as_mut().expect("armed")));
    }
}
