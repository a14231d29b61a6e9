//! State kept once per thread slot, each slot on cache lines of its own, so that the
//! serving threads neither contend for one lock nor pass one cache line back and forth
//! on every request.
//!
//! ```
//! use omc_orchestra::per_thread::PerThread;
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! // A counter each thread bumps on its own line; a reader sums the slots.
//! let served = PerThread::new(|| AtomicU64::new(0));
//! served.get().fetch_add(1, Ordering::Relaxed);
//! let total: u64 = served.iter().map(|n| n.load(Ordering::Relaxed)).sum();
//! assert_eq!(total, 1);
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};

/// Slots; threads past this many share them, round robin.
const SLOTS: usize = 16;

/// A value alone on its cache lines (two lines: neighbouring lines are fetched in pairs).
#[repr(align(128))]
struct Padded<T>(T);

/// One `T` per thread slot: a thread always gets the same slot, and each of the first
/// sixteen threads to ask gets one of its own.
pub struct PerThread<T> {
    slots: Box<[Padded<T>]>,
}

impl<T> PerThread<T> {
    /// Slots made by `make`.
    pub fn new(mut make: impl FnMut() -> T) -> Self {
        Self {
            slots: (0..SLOTS).map(|_| Padded(make())).collect(),
        }
    }

    /// The calling thread's slot.
    pub fn get(&self) -> &T {
        &self.slots[slot()].0
    }

    /// Every slot.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().map(|padded| &padded.0)
    }
}

/// The calling thread's slot number, given out in the order threads first ask.
fn slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS;
    }
    SLOT.with(|slot| *slot)
}

#[cfg(test)]
mod tests {
    use super::PerThread;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn threads_get_slots_of_their_own() {
        let counts = PerThread::new(|| AtomicUsize::new(0));
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..100 {
                        counts.get().fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        let used: Vec<usize> = counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .filter(|&n| n > 0)
            .collect();
        assert_eq!(used.iter().sum::<usize>(), 400);
        // A thread keeps its slot: each slot holds whole threads' counts.
        assert!(used.iter().all(|n| n % 100 == 0), "{used:?}");
        let first = counts.get() as *const AtomicUsize as usize;
        let second = counts
            .iter()
            .nth(1)
            .map(|c| c as *const AtomicUsize as usize);
        assert_eq!(second.map(|s| s.abs_diff(first) % 128), Some(0));
    }
}
