//! The caller's side of writes its primary's standbys acknowledge directly.
//!
//! A synchronous write to a replicated child is acknowledged once every standby holds
//! it. The primary's reply says so after its shipment's acknowledgements came back: two
//! round trips. When the primary's shipment goes to exactly the standby set it
//! published, it also asks each standby to tell the caller ([`crate::net::wire::Held`]);
//! the caller that heard from every one of them has its acknowledgement after one and a
//! half (caller → primary → standbys → caller), and the reply it carries. Whichever
//! comes first counts: the primary's reply stays the way every write can end (a
//! standby that cannot reach the caller, a shipment retried, a state sent in parts).
//!
//! [`HeldWrites`] decides when the standbys' word is enough: every standby the shipment
//! went to (the set comes with each word) said it holds that very shipment.

use std::collections::HashMap;

use crate::node::NodeId;

/// The identified writes of this node's callers in flight, waiting for their
/// standbys' word. `W` is what completes a waiting caller.
#[derive(Debug)]
pub(crate) struct HeldWrites<W> {
    waiting: HashMap<u128, Waiting<W>, foldhash::fast::RandomState>,
}

impl<W> Default for HeldWrites<W> {
    fn default() -> Self {
        Self {
            waiting: HashMap::default(),
        }
    }
}

#[derive(Debug)]
struct Waiting<W> {
    done: W,
    /// The shipment heard of, its standbys, and those that said they hold it.
    shipment: Option<Shipment>,
}

#[derive(Debug, PartialEq, Eq)]
struct Shipment {
    epoch: u64,
    seq: u64,
    standbys: Vec<NodeId>,
    heard: Vec<NodeId>,
}

/// One standby's word: it holds shipment (`epoch`, `seq`) of `call_id`'s write, which
/// went to `standbys`.
#[derive(Debug)]
pub(crate) struct Word<'a> {
    pub(crate) from: NodeId,
    pub(crate) call_id: u128,
    pub(crate) epoch: u64,
    pub(crate) seq: u64,
    pub(crate) standbys: &'a [NodeId],
}

impl<W> HeldWrites<W> {
    /// A caller waits for `call_id` (before its write goes out).
    pub(crate) fn wait(&mut self, call_id: u128, done: W) {
        self.waiting.insert(
            call_id,
            Waiting {
                done,
                shipment: None,
            },
        );
    }

    /// The caller of `call_id` is done (answered by its primary, or gave up).
    pub(crate) fn forget(&mut self, call_id: u128) {
        self.waiting.remove(&call_id);
    }

    /// A standby's word: the waiting caller's `W` once every standby of its shipment
    /// said it holds it. A word from a node not in the set it names, or for no caller
    /// waiting, counts for nothing; a word of another shipment than the one heard of so
    /// far (the write was retried through another primary) starts the count anew.
    pub(crate) fn heard(&mut self, word: Word<'_>) -> Option<W> {
        if !word.standbys.contains(&word.from) {
            return None;
        }
        let waiting = self.waiting.get_mut(&word.call_id)?;
        let same = waiting.shipment.as_ref().is_some_and(|s| {
            s.epoch == word.epoch && s.seq == word.seq && s.standbys == word.standbys
        });
        if !same {
            waiting.shipment = Some(Shipment {
                epoch: word.epoch,
                seq: word.seq,
                standbys: word.standbys.to_vec(),
                heard: Vec::with_capacity(word.standbys.len()),
            });
        }
        let shipment = waiting.shipment.as_mut().expect("set above");
        if !shipment.heard.contains(&word.from) {
            shipment.heard.push(word.from);
        }
        if shipment.heard.len() < shipment.standbys.len() {
            return None;
        }
        self.waiting.remove(&word.call_id).map(|w| w.done)
    }

    /// How many callers wait.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: u16) -> NodeId {
        NodeId::new(([127, 0, 0, 1], 7000 + i).into(), 1)
    }

    fn word(
        from: NodeId,
        call_id: u128,
        (epoch, seq): (u64, u64),
        standbys: &[NodeId],
    ) -> Word<'_> {
        Word {
            from,
            call_id,
            epoch,
            seq,
            standbys,
        }
    }

    #[test]
    fn a_write_is_held_once_every_standby_of_its_shipment_said_so() {
        let mut held = HeldWrites::default();
        held.wait(7, "caller");
        let set = [node(2), node(3)];
        assert_eq!(held.heard(word(node(2), 7, (1, 5), &set)), None);
        // Said twice by one standby: still one of two.
        assert_eq!(held.heard(word(node(2), 7, (1, 5), &set)), None);
        assert_eq!(held.heard(word(node(3), 7, (1, 5), &set)), Some("caller"));
        assert_eq!(held.len(), 0);
        // Late words for a caller done already count for nothing.
        assert_eq!(held.heard(word(node(3), 7, (1, 5), &set)), None);
    }

    #[test]
    fn a_word_from_outside_its_set_or_of_another_shipment_does_not_count() {
        let mut held = HeldWrites::default();
        held.wait(7, "caller");
        let set = [node(2), node(3)];
        // Not one of the standbys it names.
        assert_eq!(held.heard(word(node(4), 7, (1, 5), &set)), None);
        assert_eq!(held.heard(word(node(2), 7, (1, 5), &set)), None);
        // Another shipment (a retry through another primary): counted anew.
        assert_eq!(held.heard(word(node(3), 7, (2, 1), &set)), None);
        assert_eq!(held.heard(word(node(2), 7, (2, 1), &set)), Some("caller"));

        // Another set for the same shipment: anew as well.
        held.wait(8, "other");
        assert_eq!(held.heard(word(node(2), 8, (1, 6), &set)), None);
        let wider = [node(2), node(3), node(4)];
        assert_eq!(held.heard(word(node(3), 8, (1, 6), &wider)), None);
        assert_eq!(held.heard(word(node(4), 8, (1, 6), &wider)), None);
        assert_eq!(held.heard(word(node(2), 8, (1, 6), &wider)), Some("other"));
    }

    #[test]
    fn a_caller_that_gave_up_is_not_completed() {
        let mut held = HeldWrites::default();
        held.wait(7, "caller");
        held.forget(7);
        let set = [node(2)];
        assert_eq!(held.heard(word(node(2), 7, (1, 5), &set)), None);
        // And a word for a caller never waiting.
        assert_eq!(held.heard(word(node(2), 9, (1, 5), &set)), None);
    }
}
