//! The open connections of one port by age, so that at the connection cap the oldest
//! keep-alive connection makes room for a newcomer, as a proxy's users expect: a client
//! that holds an idle connection open does not lock out one with a request to send.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// Each open connection's close signal, oldest first (by the order they were accepted).
#[derive(Clone, Default)]
pub struct Oldest {
    inner: Arc<Mutex<Entries>>,
}

#[derive(Default)]
struct Entries {
    next: u64,
    /// Accept order → the connection's group (a serving thread) and its close signal.
    open: BTreeMap<u64, (usize, watch::Sender<bool>)>,
}

/// A connection's place among the open ones; it leaves when this is dropped.
pub struct Place {
    oldest: Oldest,
    order: u64,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.oldest.inner.lock().open.remove(&self.order);
    }
}

impl Oldest {
    /// Add a connection of `group`: its place, and the signal that turns true when it is
    /// asked to close (at its next idle moment, or now if it is idle).
    pub fn join(&self, group: usize) -> (Place, watch::Receiver<bool>) {
        let (close, closing) = watch::channel(false);
        let mut entries = self.inner.lock();
        let order = entries.next;
        entries.next += 1;
        entries.open.insert(order, (group, close));
        let place = Place {
            oldest: self.clone(),
            order,
        };
        (place, closing)
    }

    /// Ask the oldest open connection to close once idle; it leaves the list, so the
    /// next call asks the next oldest. False when none is open.
    pub fn close_oldest(&self) -> bool {
        let oldest = self.inner.lock().open.pop_first();
        match oldest {
            Some((_, (_, close))) => {
                close.send_replace(true);
                true
            }
            None => false,
        }
    }

    /// A place for one more open connection under the cap `open` (a permit per open
    /// connection): at the cap the oldest connection is asked to close (at once if idle,
    /// else after its answer) and this waits for its permit. `None` once `stopped` turns
    /// true or `open` is closed.
    pub async fn make_room(
        &self,
        open: &Arc<Semaphore>,
        stopped: &mut watch::Receiver<bool>,
    ) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = open.clone().try_acquire_owned() {
            return Some(permit);
        }
        self.close_oldest();
        tokio::select! {
            permit = open.clone().acquire_owned() => permit.ok(),
            _ = stopped.wait_for(|stop| *stop) => None,
        }
    }

    /// Ask every connection of `group` to close once idle (its thread is stopping).
    pub fn close_group(&self, group: usize) {
        for (member, close) in self.inner.lock().open.values() {
            if *member == group {
                close.send_replace(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_open_connection_is_asked_first_and_closed_ones_leave() {
        let oldest = Oldest::default();
        let (first, first_closing) = oldest.join(0);
        let (_second, second_closing) = oldest.join(1);
        let (_third, third_closing) = oldest.join(1);
        drop(first);
        assert!(!*first_closing.borrow());
        assert!(oldest.close_oldest());
        assert!(*second_closing.borrow(), "the oldest still open");
        assert!(!*third_closing.borrow());
        oldest.close_group(1);
        assert!(*third_closing.borrow());
        assert!(oldest.close_oldest());
        assert!(!oldest.close_oldest(), "none left");
    }
}
