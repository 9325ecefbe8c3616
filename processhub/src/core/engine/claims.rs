//! Claims: a new id is asked of the other members before its start is acknowledged.
//!
//! Nodes whose views differ (a member joined and not everyone has heard yet) can each
//! take themselves for the owner of a new id: a node that sees the joiner forwards the
//! start to it, one that does not starts it itself. Without a check both would
//! acknowledge. So a new start (epoch 0), once admitted here, is *claimed*: every other
//! reachable member is asked, and each grants the id to the first claimant only, until
//! that claimant's registry entry arrives (or it lets the claim go, or it is gone from
//! the granter's view, or the grant ages out after [`CLAIM_TTL`]; a claimant the
//! granter has not heard of yet holds its grant). The start goes ahead only with no
//! refusal and at least a quorum of grants (this node counted), the quorum counted over
//! every member known: this node's view's and those the answers name
//! ([`Engine::claim_heard`]). Two claims of one id therefore meet at a node that grants
//! one of them only (a member both ask, or one claimant asking the other) and at most
//! one wins; a claimant that lost to a start still under way
//! releases its grants and tries again a moment later, when the winner's entry has
//! usually arrived.
//!
//! ```text
//!   admit(X) ─► Claim(X) to every reachable peer ─► each: claim(from, X)
//!        Granted | Started(owner) | Pending(holder) | Abstain, and its view's members
//!   claim_heard: members named that were not asked ─► Claim(X) to them too (once)
//!   claimed(X, answers): a refusal or too few grants ─► release (Push::Unclaim), answer
//!        AlreadyStarted / Contended (tried again) / NoQuorum
//!                        else ─► make the instance ─► started(X) ─► Push::Upsert
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ChildHandle, Engine};
use crate::core::item::{ClaimAnswer, StartItem, StartOutcome};
use crate::core::registry::Push;
use crate::core::view::ClusterView;
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
    /// Whether it still holds in `view` at `now`: its claimant is not gone (a claimant
    /// this view never counted as a member holds its grant too: a joiner the granter
    /// does not see yet claims as any member does), and it has not aged out.
    fn holds(&self, view: &ClusterView, now: Instant) -> bool {
        !view.is_gone(self.to) && now.saturating_duration_since(self.at) < CLAIM_TTL
    }
}

impl<C: ChildHandle> Engine<C> {
    /// Whether the admitted start of `item` must be claimed before it goes ahead, and
    /// from whom: the peers to ask (the grants needed: [`Self::claim_heard`], once they
    /// answered). Only new children are claimed (a move or restart carries an epoch,
    /// its fencing token) and only with other members.
    ///
    /// `via`: the node that forwarded the start here (it placed the id on this node).
    /// It is asked, and counted among the members, even where this node's view lacks
    /// it: a joiner that hears of nobody yet would otherwise start the id unclaimed
    /// while a node that does not see the joiner starts it too, and both acknowledge.
    pub(crate) fn claim_peers(&self, item: &StartItem, via: Option<NodeId>) -> Option<Vec<NodeId>> {
        if item.epoch != 0 {
            return None;
        }
        let mut peers: Vec<NodeId> = self
            .view
            .members()
            .iter()
            .copied()
            .chain(via)
            .filter(|n| *n != self.me && (self.view.is_alive(*n) || Some(*n) == via))
            .collect();
        peers.sort();
        peers.dedup();
        (!peers.is_empty()).then_some(peers)
    }

    /// The claim's answers named `heard` as the members of their senders' views
    /// (`asked`: the peers asked so far): the grants needed now, and the named members
    /// not asked yet (to ask next).
    ///
    /// The quorum is counted over every member known: this view's, `via`, and the
    /// members the peers named. A joiner that hears of few members yet (its view fills
    /// as gossip brings them) would otherwise count a quorum of the few, while a member
    /// that does not see the joiner yet counts one of the others: the two quorums need
    /// not meet, and both starts would be acknowledged.
    pub(crate) fn claim_heard(
        &self,
        via: Option<NodeId>,
        asked: &[NodeId],
        heard: &[NodeId],
    ) -> (usize, Vec<NodeId>) {
        let members = self.view.members();
        // Named by a peer, and not a member here: not gone for this view either (a node
        // gone here, downed or departed, is not counted again on a slower peer's word).
        let mut named: Vec<NodeId> = via
            .into_iter()
            .chain(heard.iter().copied())
            .filter(|n| members.binary_search(n).is_err() && !self.view.is_gone(*n))
            .collect();
        named.sort();
        named.dedup();
        let mut all = members.to_vec();
        all.extend_from_slice(&named);
        all.sort();
        let needed = self.downing.quorum(&all).saturating_sub(1);
        named.retain(|n| *n != self.me && !asked.contains(n));
        (needed, named)
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

    /// Whether grant `g` still holds at `now` (see [`Grant::holds`]).
    fn holds(&self, g: &Grant, now: Instant) -> bool {
        g.holds(&self.view, now)
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
        let view = &self.view;
        self.claims.retain(|_, g| g.holds(view, now));
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
