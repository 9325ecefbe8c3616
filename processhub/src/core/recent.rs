//! The replies of a replicated child's latest identified writes.

use std::sync::{Arc, Mutex};
/// The replies of a replicated child's latest identified writes (remote writes carry a
/// call id): a caller that lost its primary retries with the same id, and the promoted
/// standby answers from here instead of applying the write twice. Shipped with the
/// state: whole to a standby new to this instance, the entries since the last shipment
/// to the others.
#[derive(Debug, Default)]
pub(crate) struct RecentCalls {
    order: std::collections::VecDeque<u128>,
    replies: std::collections::HashMap<u128, Vec<u8>>,
    /// Recorded since the last shipment.
    unshipped: Vec<u128>,
}

/// A child's table of identified writes, shared by its actor and its hub: only for the
/// children of replicated types (the others carry no call ids, and no table: a child
/// costs a few hundred bytes).
pub(crate) type SharedRecent = Option<Arc<Mutex<RecentCalls>>>;

/// How many identified writes a replicated child remembers.
const RECENT_CALLS: usize = 256;

impl RecentCalls {
    pub(crate) fn from_list(list: Vec<(u128, Vec<u8>)>) -> Self {
        let mut r = Self::default();
        r.extend(list);
        r
    }

    pub(crate) fn get(&self, id: u128) -> Option<&Vec<u8>> {
        self.replies.get(&id)
    }

    /// Notes the reply of identified write `id`; the oldest beyond [`RECENT_CALLS`] go.
    pub(crate) fn record(&mut self, id: u128, reply: Vec<u8>) {
        if self.replies.insert(id, reply).is_none() {
            self.order.push_back(id);
            self.unshipped.push(id);
        }
        while self.order.len() > RECENT_CALLS {
            if let Some(old) = self.order.pop_front() {
                self.replies.remove(&old);
            }
        }
    }

    /// Records each of `list` (a shipment's entries, in order).
    pub(crate) fn extend(&mut self, list: Vec<(u128, Vec<u8>)>) {
        for (id, reply) in list {
            self.record(id, reply);
        }
        self.unshipped.clear();
    }

    /// Every entry, oldest first.
    pub(crate) fn to_list(&self) -> Vec<(u128, Vec<u8>)> {
        self.order
            .iter()
            .filter_map(|id| Some((*id, self.replies.get(id)?.clone())))
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
    use super::{RecentCalls, RECENT_CALLS};

    #[test]
    fn recent_calls_keep_the_latest_and_ship_what_is_new() {
        let mut r = RecentCalls::default();
        for id in 1..=(RECENT_CALLS as u128 + 10) {
            r.record(id, vec![id as u8]);
        }
        // The oldest went; the latest answer.
        assert_eq!(r.get(1), None);
        assert_eq!(r.get(10), None);
        assert_eq!(r.get(11), Some(&vec![11]));
        assert_eq!(r.to_list().len(), RECENT_CALLS);
        // Recorded since the last shipment: only those that are still kept, in order.
        let first = r.take_unshipped();
        assert_eq!(first.len(), RECENT_CALLS);
        assert_eq!(first[0].0, 11);
        r.record(500, vec![5]);
        // A retry recorded again is not new.
        r.record(500, vec![5]);
        assert_eq!(r.take_unshipped(), vec![(500, vec![5])]);
        assert!(r.take_unshipped().is_empty());
        // A standby appending shipments keeps the same table, and owes nothing.
        let mut standby = RecentCalls::from_list(first);
        standby.extend(vec![(500, vec![5])]);
        assert_eq!(standby.to_list(), r.to_list());
        assert!(standby.take_unshipped().is_empty());
    }
}
