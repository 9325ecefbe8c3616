//! The lease: whether this node may serve calls now. Every child checks it before a
//! method runs and again before the reply goes (a process paused in between must not
//! acknowledge what a replacement may have served meanwhile).
//!
//! The hub renews it (`hub::lease`): the moment it asks, then the answers of a quorum of
//! members (this node included) make it valid for one lease period from that moment, on
//! this node's monotonic clock. A node paused past its lease finds it run out and serves
//! nothing until a quorum confirms it again; a node on the side of a split without a
//! quorum cannot renew it, and fails calls fast with [`CallError::NoQuorum`]. The
//! quorum arithmetic is the engine's (`core::downing`); this is the clock and the
//! waiting.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::core::downing::SafetyConfig;
use crate::error::CallError;

/// Valid for ever (a strategy that does not fence, or a cluster of one).
const FOREVER: u64 = u64::MAX;

const FINE: u8 = 0;
/// The members this node reaches are no quorum: calls fail fast.
const PARTITIONED: u8 = 1;
/// Downed by the others: calls fail until the node rejoins.
const DOWNED: u8 = 2;

/// One node's lease.
#[derive(Debug)]
pub(crate) struct Lease {
    base: Instant,
    /// Valid until this many nanoseconds after `base`.
    until: AtomicU64,
    state: AtomicU8,
    /// A call used it since the renewer last looked.
    used: AtomicBool,
    /// The last renewal found no quorum: the renewer asks again until one does (or the
    /// node learns it was downed), calls or not.
    failed: AtomicBool,
    /// Asks the renewer for a renewal now.
    wanted: Notify,
    /// Counts renewals (and refusals): waiters look again when it moves.
    renewed: crate::changes::Changes,
    pub(crate) config: SafetyConfig,
}

impl Lease {
    pub(crate) fn new(config: SafetyConfig) -> Self {
        let until = if config.strategy.fences() { 0 } else { FOREVER };
        Self {
            base: Instant::now(),
            until: AtomicU64::new(until),
            state: AtomicU8::new(FINE),
            used: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            wanted: Notify::new(),
            renewed: Default::default(),
            config,
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_nanos() as u64
    }

    /// Whether it is valid now.
    pub(crate) fn is_valid(&self) -> bool {
        self.state.load(Ordering::Acquire) != DOWNED
            && self.nanos(Instant::now()) < self.until.load(Ordering::Acquire)
    }

    /// How long it stays valid from now (zero if it ran out).
    pub(crate) fn remaining(&self) -> Duration {
        let until = self.until.load(Ordering::Acquire);
        if until == FOREVER {
            return Duration::MAX;
        }
        Duration::from_nanos(until.saturating_sub(self.nanos(Instant::now())))
    }

    /// Waits until it is valid, asking for a renewal if it ran out: `NoQuorum` at once
    /// when this node knows it reaches no quorum, or after two lease periods without
    /// one.
    pub(crate) async fn ready(&self) -> Result<(), CallError> {
        // Written only when it changes: every call of every thread reads it, and a
        // store each time would bounce its cache line between cores.
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
        if self.is_valid() {
            return Ok(());
        }
        let deadline = Instant::now() + self.config.lease * 2;
        loop {
            // Before looking: a change after the look ends the wait below.
            let seen = self.renewed.seen();
            match self.state.load(Ordering::Acquire) {
                PARTITIONED | DOWNED => return Err(CallError::NoQuorum),
                _ => {}
            }
            self.wanted.notify_one();
            if self.is_valid() {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, self.renewed.after(seen))
                .await
                .is_err()
            {
                return if self.is_valid() {
                    Ok(())
                } else {
                    Err(CallError::NoQuorum)
                };
            }
            if self.is_valid() {
                return Ok(());
            }
        }
    }

    /// Whether a call used it since the last look (and forgets it).
    pub(crate) fn take_used(&self) -> bool {
        self.used.swap(false, Ordering::Relaxed)
    }

    /// Asks the renewer for a renewal now.
    pub(crate) fn ask(&self) {
        self.wanted.notify_one();
    }

    /// Waits until a call asks for a renewal.
    pub(crate) async fn wanted(&self) {
        self.wanted.notified().await
    }

    /// A quorum confirmed this node for a renewal asked at `asked`.
    pub(crate) fn renewed(&self, asked: Instant) {
        let until = self.nanos(asked + self.config.lease);
        if self.until.load(Ordering::Acquire) != FOREVER {
            self.until.fetch_max(until, Ordering::AcqRel);
        }
        self.failed.store(false, Ordering::Relaxed);
        self.renewed.mark();
    }

    /// A renewal found no quorum: waiters give up, and the renewer tries again.
    pub(crate) fn refused(&self) {
        self.failed.store(true, Ordering::Relaxed);
        self.renewed.mark();
    }

    /// Whether the last renewal found no quorum.
    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Whether the members this node reaches are no quorum (the engine's word, after
    /// every decision).
    pub(crate) fn set_partitioned(&self, partitioned: bool) {
        let _ = self.state.compare_exchange(
            if partitioned { FINE } else { PARTITIONED },
            if partitioned { PARTITIONED } else { FINE },
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        if partitioned {
            self.renewed.mark();
        }
    }

    /// Its process was paused: whatever was granted before is not to be trusted.
    pub(crate) fn expire(&self) {
        if self.until.load(Ordering::Acquire) != FOREVER {
            self.until.store(0, Ordering::Release);
        }
    }

    /// Downed: nothing is served any more (until the node rejoins with a new lease).
    pub(crate) fn revoke(&self) {
        self.state.store(DOWNED, Ordering::Release);
        self.renewed.mark();
    }

    /// Whether it fences at all (a quorum strategy).
    pub(crate) fn fences(&self) -> bool {
        self.config.strategy.fences()
    }
}

// On tokio's paused clock (the `sim` feature brings it).
#[cfg(all(test, feature = "sim"))]
mod tests {
    use super::*;
    use crate::core::downing::PartitionTolerance;

    fn config(strategy: PartitionTolerance) -> SafetyConfig {
        SafetyConfig {
            strategy,
            stable_after: Duration::from_millis(300),
            lease: Duration::from_millis(400),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_lasts_from_its_asking_and_a_partitioned_node_fails_fast() {
        let lease = Lease::new(config(PartitionTolerance::MajorityQuorum));
        assert!(!lease.is_valid(), "none granted yet");
        let asked = Instant::now();
        tokio::time::advance(Duration::from_millis(100)).await;
        lease.renewed(asked);
        assert!(lease.is_valid());
        assert_eq!(lease.remaining(), Duration::from_millis(300));
        tokio::time::advance(Duration::from_millis(300)).await;
        assert!(!lease.is_valid(), "ran out 400 ms after it was asked");
        lease.set_partitioned(true);
        assert_eq!(lease.ready().await, Err(CallError::NoQuorum));
        lease.set_partitioned(false);
        // Not partitioned: waits for a renewal, and goes on once it comes.
        let l = std::sync::Arc::new(lease);
        let waiting = tokio::spawn({
            let l = l.clone();
            async move { l.ready().await }
        });
        l.wanted().await;
        l.renewed(Instant::now());
        assert_eq!(waiting.await.unwrap(), Ok(()));
        l.expire();
        assert!(!l.is_valid(), "a pause expires it");
        l.renewed(Instant::now());
        l.revoke();
        assert!(!l.is_valid(), "downed");
        assert_eq!(l.ready().await, Err(CallError::NoQuorum));
    }

    #[tokio::test(start_paused = true)]
    async fn without_fencing_it_is_always_valid() {
        let lease = Lease::new(config(PartitionTolerance::Divergence));
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(lease.is_valid());
        assert_eq!(lease.ready().await, Ok(()));
    }
}
