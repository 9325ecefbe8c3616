//! The pause between two tries of a call, a start or a stop.

use std::time::Duration;

use tokio::time::Instant;

/// The pause between two tries of a call, start or stop: from 1 ms, doubling up to
/// 50 ms, never past the deadline.
pub(crate) struct Backoff {
    next: Duration,
    deadline: Instant,
}

impl Backoff {
    pub(crate) fn until(deadline: Instant) -> Self {
        Self {
            next: Duration::from_millis(1),
            deadline,
        }
    }

    /// Sleeps before the next try; false (without sleeping) if it would end past the
    /// deadline.
    pub(crate) async fn wait(&mut self) -> bool {
        if Instant::now() + self.next >= self.deadline {
            return false;
        }
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(Duration::from_millis(50));
        true
    }
}
