//! The replies of a replicated child's latest identified writes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
/// The replies of a replicated child's latest identified writes (remote writes carry a
/// call id): a caller that lost its primary retries with the same id, and the promoted
/// standby answers from here instead of applying the write twice. Shipped with the
/// state: whole to a standby new to this instance, the entries since the last shipment
/// to the others.
#[derive(Clone, Debug, Default)]
pub(crate) struct RecentCalls {
    /// Call ids, oldest first, with when each was recorded here.
    order: std::collections::VecDeque<(u128, Instant)>,
    replies: std::collections::HashMap<u128, Vec<u8>>,
    /// Recorded since the last shipment.
    unshipped: Vec<u128>,
}

/// A child's table of identified writes, shared by its actor and its hub: only for the
/// children of replicated types (the others carry no call ids, and no table: a child
/// costs a few hundred bytes).
pub(crate) type SharedRecent = Option<Arc<Mutex<RecentCalls>>>;

/// How many identified writes a replicated child remembers at least.
const RECENT_CALLS: usize = 256;

/// How many it remembers at most: past [`RECENT_CALLS`], an entry goes once it is older
/// than [`retry_window`], or when the table would hold more than this (a child written
/// faster than about 3,000 times a second for a 5 s call timeout).
const MAX_RECENT_CALLS: usize = 16_384;

/// The longest call timeout of the hubs of this process: a caller retries a write
/// within its call timeout, so an entry kept that long answers every retry.
static RETRY_WINDOW_MS: AtomicU64 = AtomicU64::new(0);

/// Notes that a hub of this process retries calls for up to `call_timeout`.
pub(crate) fn note_call_timeout(call_timeout: Duration) {
    let ms = u64::try_from(call_timeout.as_millis()).unwrap_or(u64::MAX);
    RETRY_WINDOW_MS.fetch_max(ms, Ordering::Relaxed);
}

/// How long an entry is kept past the first [`RECENT_CALLS`]: the longest call timeout
/// (and a second more, for the clocks of two nodes and the trip), at least the default.
fn retry_window() -> Duration {
    let ms = RETRY_WINDOW_MS
        .load(Ordering::Relaxed)
        .max(crate::hub::DEFAULT_CALL_TIMEOUT.as_millis() as u64);
    Duration::from_millis(ms) + Duration::from_secs(1)
}

impl RecentCalls {
    pub(crate) fn from_list(list: Vec<(u128, Vec<u8>)>, now: Instant) -> Self {
        let mut r = Self::default();
        r.extend(list, now);
        r
    }

    pub(crate) fn get(&self, id: u128) -> Option<&Vec<u8>> {
        self.replies.get(&id)
    }

    /// Notes the reply of identified write `id` at `now`. Past [`RECENT_CALLS`], the
    /// oldest go once a retry of them can no longer come (found by
    /// `a_real_partition_under_static_quorum_keeps_the_promise`: a retry held up three
    /// seconds came after 256 later writes, found its entry gone, and was applied
    /// again).
    pub(crate) fn record(&mut self, id: u128, reply: Vec<u8>, now: Instant) {
        if self.replies.insert(id, reply).is_none() {
            self.order.push_back((id, now));
            self.unshipped.push(id);
        }
        let window = retry_window();
        while self.order.len() > RECENT_CALLS {
            let Some(&(old, at)) = self.order.front() else {
                break;
            };
            if self.order.len() <= MAX_RECENT_CALLS && now.saturating_duration_since(at) < window {
                break;
            }
            self.order.pop_front();
            self.replies.remove(&old);
        }
    }

    /// Records each of `list` (a shipment's entries, in order).
    pub(crate) fn extend(&mut self, list: Vec<(u128, Vec<u8>)>, now: Instant) {
        for (id, reply) in list {
            self.record(id, reply, now);
        }
        self.unshipped.clear();
    }

    /// Every entry, oldest first.
    pub(crate) fn to_list(&self) -> Vec<(u128, Vec<u8>)> {
        self.order
            .iter()
            .filter_map(|(id, _)| Some((*id, self.replies.get(id)?.clone())))
            .collect()
    }

    /// The entries recorded since the last call (those a standby in step lacks).
    pub(crate) fn take_unshipped(&mut self) -> Vec<(u128, Vec<u8>)> {
        std::mem::take(&mut self.unshipped)
            .into_iter()
            .filter_map(|id| Some((id, self.replies.get(&id)?.clone())))
            .collect()
    }
}

/// Replies of identified writes as they travel (call id, encoded reply).
pub(crate) type WireCalls = Vec<(u128, serde_bytes::ByteBuf)>;

/// A table of identified writes, for the wire.
pub(crate) fn calls_to_wire(list: &[(u128, Vec<u8>)]) -> WireCalls {
    list.iter()
        .map(|(id, r)| (*id, serde_bytes::ByteBuf::from(r.clone())))
        .collect()
}

/// A table of identified writes, from the wire.
pub(crate) fn calls_from_wire(list: WireCalls) -> Vec<(u128, Vec<u8>)> {
    list.into_iter().map(|(id, r)| (id, r.into_vec())).collect()
}

#[cfg(test)]
mod tests {
    use super::{retry_window, RecentCalls, MAX_RECENT_CALLS, RECENT_CALLS};
    use std::time::{Duration, Instant};

    #[test]
    fn recent_calls_keep_the_latest_and_ship_what_is_new() {
        // Recorded over more than a retry's window: past the first 256, the old go.
        let t0 = Instant::now();
        let late = t0 + retry_window();
        let mut r = RecentCalls::default();
        for id in 1..=(RECENT_CALLS as u128 + 10) {
            r.record(id, vec![id as u8], late);
        }
        // Recorded at the same time, all are kept while a retry may come.
        assert_eq!(r.get(1), Some(&vec![1]));
        // Later, the oldest go as new ones come; the latest answer.
        r.record(1000, vec![100], late + retry_window());
        assert_eq!(r.get(1), None);
        assert_eq!(r.get(11), None);
        assert_eq!(r.get(12), Some(&vec![12]));
        assert_eq!(r.to_list().len(), RECENT_CALLS);
        // Recorded since the last shipment: only those that are still kept, in order.
        let first = r.take_unshipped();
        assert_eq!(first.len(), RECENT_CALLS);
        assert_eq!(first[0].0, 12);
        let now = late + retry_window();
        r.record(500, vec![5], now);
        // A retry recorded again is not new.
        r.record(500, vec![5], now);
        assert_eq!(r.take_unshipped(), vec![(500, vec![5])]);
        assert!(r.take_unshipped().is_empty());
        // A standby appending shipments keeps the same table (and, dating each entry
        // from its arrival, may keep an older one a little longer), and owes nothing.
        let mut standby = RecentCalls::from_list(first, now);
        standby.extend(vec![(500, vec![5])], now);
        assert!(standby.to_list().ends_with(&r.to_list()));
        assert!(standby.take_unshipped().is_empty());
    }

    /// Found by `a_real_partition_under_static_quorum_keeps_the_promise`: a retry held
    /// up three seconds came after 256 later writes of its child, found its entry gone,
    /// and was applied a second time.
    #[test]
    fn a_reply_is_kept_while_its_caller_may_retry_even_past_256_writes() {
        let t0 = Instant::now();
        let mut r = RecentCalls::default();
        r.record(1, vec![1], t0);
        for id in 2..=2000u128 {
            r.record(id, vec![0], t0 + Duration::from_millis(id as u64));
        }
        assert_eq!(r.get(1), Some(&vec![1]), "2 s later, 1,999 writes later");
        r.record(5000, vec![0], t0 + retry_window());
        assert_eq!(r.get(1), None, "once no retry can come");
        // However fast the writes, the table stays bounded.
        let mut fast = RecentCalls::default();
        for id in 0..(MAX_RECENT_CALLS as u128 + 100) {
            fast.record(id, vec![0], t0);
        }
        assert_eq!(fast.to_list().len(), MAX_RECENT_CALLS);
        assert_eq!(fast.get(99), None);
        assert_eq!(fast.get(100), Some(&vec![0]));
    }
}
