//! The deadline of a local call without a timer per call.
//!
//! A local call waits for its reply and for the hub's next tick (every [`TICK`]); only
//! a call still waiting at a tick starts a timer for the rest of its deadline. A timer
//! is not free: its registration can wake the runtime's thread parked in the I/O driver
//! (an eventfd write and a context switch): in a sequence of fast local calls that cost
//! 0.4-1.5 µs of a 10 µs call (BENCHMARKS.md, "P3 taken apart"). Almost every call is
//! answered within a tick, and waiting for a tick costs a place in a list of waiters.
//! The deadline stays exact: a slow call times out when its deadline passes (remote
//! calls, whose pending table is swept every 50 ms, may time out up to 50 ms late).

use std::future::Future;
use std::sync::Weak;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// How often waiting local calls are told to look at their deadline.
pub(crate) const TICK: Duration = Duration::from_millis(50);

/// Lists of waiting calls: a call picks one by its key, so that calls to different
/// children seldom share a lock.
const SHARDS: usize = 8;

/// The ticks local calls wait for.
#[derive(Debug, Default)]
pub(crate) struct Ticks {
    shards: [Notify; SHARDS],
}

impl Ticks {
    /// Runs `fut` until it is done (`Some`) or `deadline` passes (`None`). `key` picks
    /// the list it waits in (a hash of the id of the child called).
    pub(crate) async fn within<F: Future>(
        &self,
        key: usize,
        deadline: Instant,
        fut: F,
    ) -> Option<F::Output> {
        let mut fut = std::pin::pin!(fut);
        {
            let tick = self.shards[(key >> 6) % SHARDS].notified();
            tokio::select! {
                biased;
                done = &mut fut => return Some(done),
                _ = tick => {}
            }
        }
        // Slow (or a tick came at once): a timer for the rest.
        tokio::time::timeout_at(deadline, fut).await.ok()
    }

    /// Tells every waiting call to look at its deadline.
    fn tick(&self) {
        for shard in &self.shards {
            shard.notify_waiters();
        }
    }
}

/// Ticks every [`TICK`] while the hub (what `ticks` lives in) exists.
pub(crate) async fn tick_loop<H>(hub: Weak<H>, ticks: fn(&H) -> &Ticks) {
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(hub) = hub.upgrade() else { return };
        ticks(&hub).tick();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_quick_future_is_done_and_a_slow_one_ends_at_its_deadline() {
        let hub = std::sync::Arc::new(Ticks::default());
        tokio::spawn(tick_loop(std::sync::Arc::downgrade(&hub), |t| t));
        let start = Instant::now();
        assert_eq!(hub.within(0, start + TICK * 10, async { 7 }).await, Some(7));

        // Answered after three ticks, within its deadline: done.
        let slow = tokio::time::sleep(TICK * 3);
        let r = hub
            .within(64, start + TICK * 10, async {
                slow.await;
                8
            })
            .await;
        assert_eq!(r, Some(8));
        assert_eq!(Instant::now() - start, TICK * 3);

        // Never answered: ends at its deadline exactly, not at a tick.
        let at = Instant::now();
        let deadline = at + Duration::from_millis(123);
        let never = hub
            .within(128, deadline, std::future::pending::<()>())
            .await;
        assert_eq!(never, None);
        assert_eq!(Instant::now(), deadline);
    }
}
