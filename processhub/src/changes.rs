//! A count of changes that tasks wait on: what tokio's `watch` channel does for the
//! shell, with its waiters woken in the order they began waiting.
//!
//! A `watch` channel parks each waiter on one of eight lists picked at random (from the
//! runtime's seed, which differs in every process), and wakes the lists in turn: the
//! tasks it wakes at once run in an order that differs from run to run. A simulated
//! world must replay from its seed alone (`sim`), so the shell waits on this instead:
//! one list, in order.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// Changes so far, and the tasks waiting for the next.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    count: AtomicU64,
    notify: Notify,
}

impl Changes {
    /// Counts a change and wakes every task waiting for one, in the order they began
    /// waiting.
    pub(crate) fn mark(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_waiters();
    }

    /// The changes counted so far: what [`Self::after`] waits to see pass.
    pub(crate) fn seen(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// Returns once a change comes after `seen` (at once if one came already).
    pub(crate) async fn after(&self, seen: u64) {
        loop {
            let next = self.notify.notified();
            tokio::pin!(next);
            // Listening before looking: a change between the look and the wait still
            // wakes this task.
            next.as_mut().enable();
            if self.seen() != seen {
                return;
            }
            next.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test(start_paused = true)]
    async fn waiters_wake_on_a_change_after_theirs_in_the_order_they_began_waiting() {
        let changes = Arc::new(Changes::default());
        // A change already past what a waiter saw: it returns at once.
        let seen = changes.seen();
        changes.mark();
        changes.after(seen).await;

        let woke = Arc::new(Mutex::new(Vec::new()));
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let seen = changes.seen();
                for i in 0..16 {
                    let (changes, woke) = (changes.clone(), woke.clone());
                    tokio::task::spawn_local(async move {
                        changes.after(seen).await;
                        woke.lock().unwrap().push(i);
                    });
                }
                // Every waiter is parked before the change.
                tokio::task::yield_now().await;
                assert!(woke.lock().unwrap().is_empty(), "no change yet");
                changes.mark();
                while woke.lock().unwrap().len() < 16 {
                    tokio::task::yield_now().await;
                }
            })
            .await;
        assert_eq!(*woke.lock().unwrap(), (0..16).collect::<Vec<_>>());
    }
}
