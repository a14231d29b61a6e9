//! Waiting for news without a thundering herd: of the idle consumers of one group in this
//! process, one (the watcher) blocks on Redis for entries after what the group has read,
//! and the others wait their turn. The watcher fetches what woke it before it hands the
//! role on, and the next watcher starts from what that fetch read, so a publish costs
//! one fetch, not one per idle consumer. When that fetch came back full there is likely
//! more, and the next watcher fetches at once instead of asking Redis first: a burst is
//! taken by one consumer after another, a fetch each.

use super::super::EventId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::Notify;

/// The idle consumers of one group in this process.
#[derive(Debug, Default)]
pub(super) struct GroupWait {
    /// Whether a consumer is blocked on Redis for this group.
    watching: AtomicBool,
    /// Wakes a consumer waiting its turn.
    wake: Notify,
    /// Per priority stream, the newest entry id known to be handed out to the group.
    read: Mutex<[Option<EventId>; 4]>,
    /// Whether the last watcher's fetch came back full.
    more: AtomicBool,
}

impl GroupWait {
    /// Become the consumer that blocks on Redis, unless another one is; `None` then.
    pub(super) fn watch(self: &Arc<Self>) -> Option<Watching> {
        self.watching
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Watching(self.clone()))
    }

    /// Wait for the watcher to hand its role on.
    pub(super) async fn wait_turn(&self) {
        self.wake.notified().await;
    }

    /// Whether the watcher handing the role on found a full batch (cleared by reading).
    pub(super) fn take_more(&self) -> bool {
        self.more.swap(false, Ordering::AcqRel)
    }

    /// Note how far a fetch read each stream (`''` where it read nothing).
    pub(super) fn learn(&self, tails: &[String]) {
        let Ok(mut read) = self.read.lock() else {
            return;
        };
        for (known, tail) in read.iter_mut().zip(tails) {
            if let Ok(id) = tail.parse::<EventId>() {
                *known = Some(known.map_or(id, |k| k.max(id)));
            }
        }
    }

    /// Where to watch each stream from: after the newest entry handed out to the group;
    /// `None` until every stream's is known.
    pub(super) fn tails(&self) -> Option<Vec<String>> {
        let read = self.read.lock().ok()?;
        read.iter().map(|id| id.map(|id| id.to_string())).collect()
    }
}

/// The watching role of a group, handed on (one waiting consumer woken to take it) when
/// dropped.
#[derive(Debug)]
pub(super) struct Watching(Arc<GroupWait>);

impl Watching {
    /// Hand the role on after a fetch that came back `full` (or not).
    pub(super) fn hand_on(self, full: bool) {
        self.0.more.store(full, Ordering::Release);
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.watching.store(false, Ordering::Release);
        self.0.wake.notify_one();
    }
}

/// The [`GroupWait`] of each group with consumers in this process.
#[derive(Debug, Default)]
pub(super) struct Waits(Mutex<HashMap<String, Weak<GroupWait>>>);

impl Waits {
    /// The shared wait of `group`.
    pub(super) fn of(&self, group: &str) -> Arc<GroupWait> {
        let Ok(mut groups) = self.0.lock() else {
            return Arc::default();
        };
        if let Some(wait) = groups.get(group).and_then(Weak::upgrade) {
            return wait;
        }
        groups.retain(|_, wait| wait.strong_count() > 0);
        let wait = Arc::new(GroupWait::default());
        groups.insert(group.to_owned(), Arc::downgrade(&wait));
        wait
    }
}
