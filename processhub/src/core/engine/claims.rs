//! Claims: a new id is asked of the other members before its start is acknowledged.
//!
//! Nodes whose views differ (a member joined and not everyone has heard yet) can each
//! take themselves for the owner of a new id: a node that sees the joiner forwards the
//! start to it, one that does not starts it itself. Without a check both would
//! acknowledge. So a new start (epoch 0), once admitted here, is *claimed*: every other
//! reachable member is asked, and each grants the id to the first claimant only, until
//! that claimant's registry entry arrives (or it lets the claim go, or it leaves, or the
//! grant ages out after [`CLAIM_TTL`]). The start goes ahead only with no refusal and
//! at least a quorum of grants (this node counted). Two claims of one id therefore
//! meet at a node that answers both (a member both ask, or one claimant asking the
//! other) and at most one wins; a claimant that lost to a start still under way
//! releases its grants and tries again a moment later, when the winner's entry has
//! usually arrived.
//!
//! ```text
//!   admit(X) ─► Claim(X) to every reachable peer ─► each: claim(from, X)
//!        Granted | Started(owner) | Pending(holder) | Abstain
//!   claimed(X, answers): a refusal or too few grants ─► release (Push::Unclaim), answer
//!        AlreadyStarted / Contended (tried again) / NoQuorum
//!                        else ─► make the instance ─► started(X) ─► Push::Upsert
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ChildHandle, Engine};
use crate::core::item::{ClaimAnswer, StartItem, StartOutcome};
use crate::core::registry::Push;
use crate::node::NodeId;

/// How long a grant holds without news of its claimant: far longer than a claim takes,
/// so that it only ever frees an id whose claimant vanished mid-start.
pub(crate) const CLAIM_TTL: Duration = Duration::from_secs(10);

/// The answers to one id's claim, gathered by the shell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Peers that granted it.
    pub(crate) granted: usize,
    /// Where a peer said it runs.
    pub(crate) started: Option<NodeId>,
    /// Where a peer said a start of it is under way.
    pub(crate) pending: Option<NodeId>,
}

impl Tally {
    /// Counts one peer's answer.
    pub(crate) fn count(&mut self, answer: ClaimAnswer) {
        match answer {
            ClaimAnswer::Granted => self.granted += 1,
            ClaimAnswer::Started(node) => self.started = Some(node),
            ClaimAnswer::Pending(node) => self.pending = Some(node),
            ClaimAnswer::Abstain => {}
        }
    }
}

/// A grant of a new id to a claimant.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Grant {
    to: NodeId,
    at: Instant,
}

impl Grant {
    /// Whether it still holds among `members` at `now`: its claimant is one, and it
    /// has not aged out.
    fn holds(&self, members: &[NodeId], now: Instant) -> bool {
        members.binary_search(&self.to).is_ok()
            && now.saturating_duration_since(self.at) < CLAIM_TTL
    }
}

impl<C: ChildHandle> Engine<C> {
    /// Whether the admitted start of `item` must be claimed before it goes ahead, and
    /// from whom: `(grants needed, peers to ask)`. Only new children are claimed (a move
    /// or restart carries an epoch, its fencing token) and only with other members.
    ///
    /// `via`: the node that forwarded the start here (it placed the id on this node).
    /// It is asked, and counted among the members, even where this node's view lacks
    /// it: a joiner that hears of nobody yet would otherwise start the id unclaimed
    /// while a node that does not see the joiner starts it too, and both acknowledge.
    pub(crate) fn claim_peers(
        &self,
        item: &StartItem,
        via: Option<NodeId>,
    ) -> Option<(usize, Vec<NodeId>)> {
        if item.epoch != 0 {
            return None;
        }
        let members = self.view.members();
        let mut peers: Vec<NodeId> = members
            .iter()
            .copied()
            .filter(|n| *n != self.me && self.view.is_alive(*n))
            .collect();
        let unknown = via.filter(|v| *v != self.me && members.binary_search(v).is_err());
        if let Some(v) = via.filter(|v| *v != self.me && !peers.contains(v)) {
            peers.push(v);
            peers.sort();
        }
        if peers.is_empty() {
            return None;
        }
        let quorum = match unknown {
            None => self.downing.quorum(members),
            Some(v) => {
                let mut all = members.to_vec();
                all.push(v);
                all.sort();
                self.downing.quorum(&all)
            }
        };
        Some((quorum.saturating_sub(1), peers))
    }

    /// `from` claims these new ids: the answer for each, in order. A grant holds the
    /// id for `from` alone (see the [module](self)).
    pub(crate) fn claim(&mut self, from: NodeId, ids: &[String]) -> Vec<ClaimAnswer> {
        if self.downed || self.leaving {
            return vec![ClaimAnswer::Abstain; ids.len()];
        }
        let now = self.downing.now();
        ids.iter()
            .map(|id| {
                if let Some(e) = self.registry.get(id) {
                    if e.owner != from {
                        return ClaimAnswer::Started(e.owner);
                    }
                }
                if self.local.contains_key(id.as_str()) {
                    return ClaimAnswer::Started(self.me);
                }
                if self.starting.contains(id.as_str()) {
                    return ClaimAnswer::Pending(self.me);
                }
                if let Some(g) = self.claims.get(id.as_str()) {
                    if g.to != from && self.holds(g, now) {
                        return ClaimAnswer::Pending(g.to);
                    }
                }
                self.claims
                    .insert(Arc::from(id.as_str()), Grant { to: from, at: now });
                ClaimAnswer::Granted
            })
            .collect()
    }

    /// Whether grant `g` still holds at `now`: its claimant is a member, and it has not
    /// aged out.
    fn holds(&self, g: &Grant, now: Instant) -> bool {
        g.holds(self.view.members(), now)
    }

    /// The node another start of `id` is granted to, if one is (checked at admission:
    /// this node then waits its turn).
    pub(crate) fn granted_elsewhere(&self, id: &str) -> Option<NodeId> {
        let g = self.claims.get(id)?;
        (g.to != self.me && self.holds(g, self.downing.now())).then_some(g.to)
    }

    /// The claim of the admitted start of `item` was answered (`tally`; `needed` grants
    /// were needed). `Ok`: it goes ahead. `Err`: the answer to the start; the id is
    /// released here and the grants are let go.
    pub(crate) fn claimed(
        &mut self,
        item: &StartItem,
        needed: usize,
        tally: &Tally,
    ) -> Result<(), StartOutcome> {
        let me = self.me;
        // An entry may have arrived meanwhile.
        let registered = self
            .registry
            .get(&item.id)
            .filter(|e| e.owner != me)
            .map(|e| e.owner);
        let refusal = match (registered.or(tally.started), tally.pending) {
            (Some(node), _) => Some(StartOutcome::AlreadyStarted { node }),
            (None, Some(node)) => Some(StartOutcome::Contended { node }),
            (None, None) if tally.granted < needed => Some(StartOutcome::NoQuorum { node: me }),
            (None, None) => None,
        };
        match refusal {
            None => {
                self.claimed.insert(Arc::from(item.id.as_str()));
                Ok(())
            }
            Some(outcome) => {
                self.starting.remove(item.id.as_str());
                self.unclaim(&item.id);
                Err(outcome)
            }
        }
    }

    /// Lets go of this node's claim of `id` on every peer (a start that lost or failed).
    pub(crate) fn unclaim(&mut self, id: &str) {
        match self.out.pushes.last_mut() {
            Some(Push::Unclaim(ids)) => ids.push(id.to_string()),
            _ => self.out.pushes.push(Push::Unclaim(vec![id.to_string()])),
        }
    }

    /// `from` let go of its claims of `ids`.
    pub(crate) fn unclaimed(&mut self, from: NodeId, ids: &[String]) {
        for id in ids {
            self.release(from, id);
        }
    }

    /// Drops the grant of `id` if it is `from`'s.
    pub(crate) fn release(&mut self, from: NodeId, id: &str) {
        if self.claims.get(id).is_some_and(|g| g.to == from) {
            self.drop_grant(id);
        }
    }

    /// An entry of `id` arrived from `from` (or it was removed): a grant to it is over,
    /// the registry holds the id now.
    pub(crate) fn claim_settled(&mut self, id: &str) {
        self.drop_grant(id);
    }

    /// Drops the grant of `id`, and the map's room once it is mostly empty: the grants
    /// of a burst of starts (a member's `start_many` of 100,000 new ids) would
    /// otherwise hold theirs for good (P6b, BENCHMARKS.md).
    fn drop_grant(&mut self, id: &str) {
        if self.claims.swap_remove(id).is_some() {
            shrink(&mut self.claims);
        }
    }

    /// Drops the grants that no longer hold (their claimant left, or they aged out).
    pub(crate) fn age_claims(&mut self) {
        if self.claims.is_empty() {
            return;
        }
        let now = self.downing.now();
        let members = self.view.members();
        self.claims.retain(|_, g| g.holds(members, now));
        shrink(&mut self.claims);
    }
}

/// Gives back most of the room of a map less than a quarter full (amortized: it halves
/// the room at most once per as many removals as it keeps entries).
fn shrink<K: Eq + std::hash::Hash, V, S: std::hash::BuildHasher>(
    map: &mut indexmap::IndexMap<K, V, S>,
) {
    if map.capacity() > 64 && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}
