//! Downing: when a node that looks dead is taken for dead, by whom, and when its
//! children may start elsewhere; and the quorum a node needs to serve (its lease).
//!
//! Unreachability is an *observation* (the failure detector stopped hearing a member);
//! downing is a *decision*. A member that goes silent stays a member, unreachable: its
//! children are not restarted, calls to it fail over to nothing. Under a quorum strategy
//! a node downs the unreachable members only once the set it can reach has been stable
//! for `stable_after` and is a quorum; it tells every peer (`Push::Down`), and every
//! peer that hears it downs them too and says so. Once a quorum has downed a node, no
//! renewal of that node's lease can succeed any more (a renewal needs the answers of a
//! quorum, and two quorums share a node that refuses); the children of the downed node
//! start elsewhere one lease period (and a margin for clock rates) after that. Under
//! `Divergence` every side downs what it cannot reach once the view is stable, and a
//! downed node that is heard again is a member again (duplicates are resolved after
//! the heal).
//!
//! A node originates the downing of a member only once that member's registry reached it
//! (its whole snapshot arrived, [`Downing::knows`]): a node that never heard which
//! children a member owns cannot restart them, and one that joined or rejoined across a
//! cut would down the only holder of every entry (simulator seed 42, 3 nodes,
//! pause,partition,crash,delay: a rejoined node and a joiner, neither ever reached by the
//! cut-off node, downed it, and every registry lost every entry). It still adopts the
//! downing a peer that knew the member decided.
//!
//! ```text
//!  gossip: X silent ─► X unreachable ─(stable_after, and a quorum reachable)─► down X
//!      ─► Push::Down(X) to every peer ─► each downs X, says so ─► a quorum downed X
//!      ─(lease + margin)─► X removed: its children restart or are promoted here
//!  X itself: its lease (quorum answers within `lease`) ran out; a renewal is refused
//!      (`downed`) ─► X rejoins as a new incarnation
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::node::NodeId;

/// What a hub does when the cluster splits or a node only looks dead (a pause, a
/// saturated link): ProcessHub's four strategies. Set with
/// [`HubBuilder::partition_tolerance`](crate::HubBuilder::partition_tolerance).
///
/// Under the quorum strategies a side without a quorum fences itself: its writes fail
/// fast with [`CallError::NoQuorum`](crate::CallError::NoQuorum), it restarts nothing of
/// the nodes it cannot reach, and [`Hub::is_partitioned`](crate::Hub::is_partitioned)
/// says so. A side with a quorum downs the others and takes over their children once
/// their leases must have run out.
///
/// ```
/// use std::time::Duration;
/// use processhub::PartitionTolerance;
///
/// let default = PartitionTolerance::default();
/// assert_eq!(default, PartitionTolerance::MajorityQuorum);
/// let dynamic = PartitionTolerance::DynamicQuorum { percent: 60, window: Duration::from_secs(60) };
/// assert_eq!(dynamic.quorum(5), 3);
/// assert_eq!(PartitionTolerance::MajorityQuorum.quorum(4), 3);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PartitionTolerance {
    /// Every side goes on: each downs what it cannot reach and restarts its children.
    /// After the heal, duplicates are resolved (the higher epoch wins, then the larger
    /// node id), each reported as [`HubEvent::DuplicateResolved`](crate::HubEvent).
    /// Available, but acknowledged writes on the losing side are lost.
    Divergence,
    /// A side goes on only with at least `size` members reachable (itself included).
    /// Choose `size` above half the cluster, or both sides of a split may go on.
    StaticQuorum {
        /// Members needed.
        size: usize,
    },
    /// The default: a side goes on only with a strict majority of the largest cluster
    /// size seen. A graceful leave lowers that size; after a planned scale-down by other
    /// means (nodes killed and not coming back), call
    /// [`Hub::reset_cluster_size`](crate::Hub::reset_cluster_size).
    #[default]
    MajorityQuorum,
    /// A side goes on only with `percent` of the members seen within `window`
    /// (rounded up): nodes gone for longer than the window stop counting, so the
    /// cluster follows a scale-down by itself.
    DynamicQuorum {
        /// Percentage of the members seen that must be reachable (1 to 100).
        percent: u8,
        /// How long a member that left keeps counting.
        window: Duration,
    },
}

impl PartitionTolerance {
    /// Members that must be reachable (the node itself included) for a side to go on,
    /// in a cluster of `size`: for `MajorityQuorum` the largest size seen, for
    /// `DynamicQuorum` the members seen within the window.
    pub fn quorum(&self, size: usize) -> usize {
        match *self {
            PartitionTolerance::Divergence => 1,
            PartitionTolerance::StaticQuorum { size } => size.max(1),
            PartitionTolerance::MajorityQuorum => size / 2 + 1,
            PartitionTolerance::DynamicQuorum { percent, .. } => (size
                * usize::from(percent.clamp(1, 100)))
            .div_ceil(100)
            .max(1),
        }
    }

    /// Whether a side needs a quorum to go on.
    pub fn fences(&self) -> bool {
        !matches!(self, PartitionTolerance::Divergence)
    }
}

/// The timing of downing and leases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SafetyConfig {
    pub(crate) strategy: PartitionTolerance,
    /// How long the reachable set must stay the same before a node downs the others.
    pub(crate) stable_after: Duration,
    /// How long a granted lease lasts, from the moment its renewal was sent.
    pub(crate) lease: Duration,
}

impl SafetyConfig {
    /// How long after a quorum downed a node its children may start elsewhere: its
    /// lease, and a quarter more for clocks that run at different rates.
    pub(crate) fn replace_after(&self) -> Duration {
        self.lease + self.lease / 4
    }
}

/// One downed node: who is known to have downed it, and when a quorum had.
#[derive(Clone, Debug, Default)]
struct Downed {
    by: BTreeSet<NodeId>,
    quorum_at: Option<Instant>,
    /// Taken out of the view already.
    removed: bool,
}

/// What [`Downing::settle`] decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Settled {
    /// Nodes this node downs now (to tell every peer).
    pub(crate) down: Vec<NodeId>,
    /// Members to take out of the view now: their children go elsewhere.
    pub(crate) remove: Vec<NodeId>,
}

/// One node's downing state. See the [module](self).
#[derive(Debug)]
pub(crate) struct Downing {
    me: NodeId,
    pub(crate) config: SafetyConfig,
    /// The unreachable members last seen, and since when that set has been so.
    unreachable: Vec<NodeId>,
    changed_at: Option<Instant>,
    /// The largest cluster size seen (less the members that said goodbye).
    largest: usize,
    /// When each member was last one (`DynamicQuorum`).
    seen: BTreeMap<NodeId, Instant>,
    /// Downed nodes (never members again under a quorum strategy).
    downed: BTreeMap<NodeId, Downed>,
    /// The members whose whole registry reached this life of this node: the ones it
    /// may down on its own observation.
    known: BTreeSet<NodeId>,
    now: Instant,
}

impl Downing {
    pub(crate) fn new(me: NodeId, config: SafetyConfig, now: Instant) -> Self {
        Self {
            me,
            config,
            unreachable: Vec::new(),
            changed_at: None,
            largest: 1,
            seen: BTreeMap::new(),
            downed: BTreeMap::new(),
            known: BTreeSet::new(),
            now,
        }
    }

    /// `node`'s whole registry reached this node (its snapshot): from now on this node
    /// may down it on its own observation.
    pub(crate) fn knows(&mut self, node: NodeId) {
        self.known.insert(node);
    }

    /// The time now (the shell passes it in before every decision).
    pub(crate) fn set_now(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// The time of the latest decision.
    pub(crate) fn now(&self) -> Instant {
        self.now
    }

    /// The members are now `members`, of which `unreachable` are not heard. Whether a
    /// member that was unreachable is heard again (this node then renews its lease: the
    /// others may have downed it meanwhile).
    pub(crate) fn observe(&mut self, members: &[NodeId], unreachable: &[NodeId]) -> bool {
        let mut heard_again = false;
        if self.unreachable != unreachable {
            heard_again = self
                .unreachable
                .iter()
                .any(|n| members.contains(n) && !unreachable.contains(n));
            self.unreachable = unreachable.to_vec();
            self.changed_at = Some(self.now);
        }
        self.largest = self.largest.max(members.len());
        for m in members {
            self.seen.insert(*m, self.now);
        }
        heard_again
    }

    /// `node` said goodbye: it no longer counts towards the cluster size.
    pub(crate) fn departed(&mut self, node: NodeId, members_left: usize) {
        if self.seen.remove(&node).is_some() {
            self.largest = self.largest.saturating_sub(1).max(members_left).max(1);
        }
    }

    /// A new life of this node (it rejoins) knows the cluster the old one knew: its
    /// largest size, the members it saw lately (a fresh view of one, before the others
    /// are heard, must not make a dynamic quorum of one), and whom a quorum downed
    /// or a peer with it (still refused their leases), or a peer alone (its word counts
    /// towards a quorum). Not what the old life decided alone: it was downed for acting on a view gone
    /// stale (a pause, a cut), and its downing of a node the others still hear would
    /// have the new life refuse that node's leases and hand-overs for good (simulator
    /// seed 17, 5 nodes, pause,partition,crash: the registries never converged).
    pub(crate) fn inherit(&mut self, old: &Downing) {
        self.largest = old.largest;
        self.seen = old.seen.clone();
        self.seen.remove(&old.me);
        self.downed = old.downed.clone();
        self.downed.remove(&old.me);
        let me = self.me;
        self.downed.retain(|_, d| {
            let alone = d.by.len() == 1 && d.quorum_at.is_none();
            if d.by.remove(&old.me) {
                d.by.insert(me);
            }
            !alone || !d.by.contains(&me)
        });
    }

    /// After a planned scale-down: the cluster size is `n` from now on.
    pub(crate) fn reset_cluster_size(&mut self, n: usize, members: &[NodeId]) {
        self.largest = n.max(1);
        self.seen.retain(|m, _| members.contains(m));
    }

    /// This node's process was paused (its timers fired far too late): what its failure
    /// detector saw meanwhile is stale, so the view must be stable again, from now,
    /// before it downs anyone.
    pub(crate) fn paused(&mut self) {
        self.changed_at = Some(self.now);
    }

    /// Members needed for a quorum now, the view's members being `members`.
    pub(crate) fn quorum(&self, members: &[NodeId]) -> usize {
        let size = match self.config.strategy {
            PartitionTolerance::DynamicQuorum { window, .. } => {
                let gone_lately = self.seen.iter().filter(|(n, t)| {
                    !members.contains(n) && self.now.saturating_duration_since(**t) <= window
                });
                members.len() + gone_lately.count()
            }
            _ => self.largest.max(members.len()),
        };
        self.config.strategy.quorum(size)
    }

    /// Whether `reachable` members (this node included) make a quorum.
    pub(crate) fn has_quorum(&self, reachable: usize, members: &[NodeId]) -> bool {
        reachable >= self.quorum(members)
    }

    /// Whether `node` is downed here: this node downed it, or it heard that a quorum
    /// did. (One peer's word is not enough: a node whose failure detector is confused,
    /// one that just rejoined for example, cannot down a healthy member alone.)
    pub(crate) fn is_downed(&self, node: NodeId) -> bool {
        self.config.strategy.fences()
            && self
                .downed
                .get(&node)
                .is_some_and(|d| d.by.contains(&self.me) || d.quorum_at.is_some())
    }

    /// Whether a quorum is known to have downed `node`: its children go elsewhere.
    pub(crate) fn quorum_downed(&self, node: NodeId) -> bool {
        self.config.strategy.fences()
            && self
                .downed
                .get(&node)
                .is_some_and(|d| d.quorum_at.is_some())
    }

    /// The answer to `from`'s lease renewal: refused once it was downed here.
    pub(crate) fn grants(&self, from: NodeId) -> bool {
        !self.is_downed(from)
    }

    /// `from` downed `node` (its push, or this node's own decision when `from` is this
    /// node). Whether this node downs it now too (and must say so): only if it does not
    /// hear `node` either (`hears`), so that every downing counted is an observation.
    pub(crate) fn heard_down(&mut self, from: NodeId, node: NodeId, hears: bool) -> bool {
        if !self.config.strategy.fences() || node == self.me {
            return false;
        }
        let d = self.downed.entry(node).or_default();
        d.by.insert(from);
        if hears && from != self.me {
            return false;
        }
        d.by.insert(self.me) && from != self.me
    }

    /// What is due now, over the `members` of the view and those of them `reachable`.
    pub(crate) fn settle(&mut self, members: &[NodeId], reachable: usize) -> Settled {
        let mut out = Settled::default();
        let stable = self
            .changed_at
            .is_none_or(|t| self.now.saturating_duration_since(t) >= self.config.stable_after);
        if !self.config.strategy.fences() {
            if stable {
                out.remove = self.unreachable.clone();
            }
            return out;
        }
        if stable && !self.unreachable.is_empty() && self.has_quorum(reachable, members) {
            for n in self.unreachable.clone() {
                if self.would_down(n) {
                    self.heard_down(self.me, n, false);
                    out.down.push(n);
                }
            }
        }
        let needed = self.quorum(members);
        let wait = self.config.replace_after();
        for (n, d) in &mut self.downed {
            if d.quorum_at.is_none() && d.by.len() >= needed {
                d.quorum_at = Some(self.now);
            }
            let due = d
                .quorum_at
                .is_some_and(|t| self.now.saturating_duration_since(t) >= wait);
            if due && !d.removed {
                d.removed = true;
                if members.contains(n) {
                    out.remove.push(*n);
                }
            }
        }
        // A downed node never comes back (it rejoins as a new incarnation): it no
        // longer counts towards the cluster size.
        for n in &out.remove {
            if self.seen.remove(n).is_some() {
                self.largest = self.largest.saturating_sub(1).max(1);
            }
        }
        out
    }

    /// The nodes this node downed (what a new connection is told, in case a push of
    /// them was lost with a connection).
    pub(crate) fn downed_here(&self) -> Vec<NodeId> {
        if !self.config.strategy.fences() {
            return Vec::new();
        }
        let me = self.me;
        self.downed
            .iter()
            .filter(|(_, d)| d.by.contains(&me))
            .map(|(n, _)| *n)
            .collect()
    }

    /// The nodes this node downed that no quorum is known to have downed yet: said
    /// again on the planner's tick (a push may have been lost on a link that dropped
    /// frames without closing).
    pub(crate) fn unsettled_here(&self) -> Vec<NodeId> {
        let me = self.me;
        self.downed
            .iter()
            .filter(|(_, d)| d.quorum_at.is_none() && d.by.contains(&me))
            .map(|(n, _)| *n)
            .collect()
    }

    /// Whether this node would down the unreachable `n` on its own observation once its
    /// view is stable: it knows `n`'s registry and has not downed it yet.
    fn would_down(&self, n: NodeId) -> bool {
        self.known.contains(&n) && !self.downed.get(&n).is_some_and(|d| d.by.contains(&self.me))
    }

    /// When something is due next (a stable view, a replacement), if anything waits.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        let undecided = self
            .unreachable
            .iter()
            .any(|n| !self.config.strategy.fences() || self.would_down(*n));
        let stable = undecided
            .then(|| self.changed_at.map(|t| t + self.config.stable_after))
            .flatten();
        let replace = self
            .downed
            .values()
            .filter(|d| !d.removed)
            .filter_map(|d| d.quorum_at.map(|t| t + self.config.replace_after()))
            .min();
        [stable, replace].into_iter().flatten().min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(port: u16) -> NodeId {
        NodeId::new(([127, 0, 0, 1], port).into(), 1)
    }

    fn config(strategy: PartitionTolerance) -> SafetyConfig {
        SafetyConfig {
            strategy,
            stable_after: Duration::from_millis(300),
            lease: Duration::from_millis(400),
        }
    }

    #[test]
    fn quorums_by_strategy() {
        let majority = PartitionTolerance::MajorityQuorum;
        assert_eq!(majority.quorum(3), 2);
        assert_eq!(majority.quorum(5), 3);
        assert_eq!(majority.quorum(4), 3);
        assert_eq!(majority.quorum(1), 1);
        let fixed = PartitionTolerance::StaticQuorum { size: 3 };
        assert_eq!(fixed.quorum(9), 3);
        let dynamic = PartitionTolerance::DynamicQuorum {
            percent: 50,
            window: Duration::from_secs(1),
        };
        assert_eq!(dynamic.quorum(5), 3, "half of 5, rounded up");
        assert_eq!(PartitionTolerance::Divergence.quorum(5), 1);
    }

    #[test]
    fn a_majority_downs_after_a_stable_view_and_replaces_a_lease_later() {
        let t0 = Instant::now();
        let mut d = Downing::new(node(1), config(PartitionTolerance::MajorityQuorum), t0);
        let members = [node(1), node(2), node(3)];
        d.knows(node(2));
        d.knows(node(3));
        d.observe(&members, &[]);
        d.observe(&members, &[node(3)]);
        assert_eq!(d.settle(&members, 2), Settled::default(), "not stable yet");
        d.set_now(t0 + Duration::from_millis(300));
        assert_eq!(
            d.settle(&members, 2),
            Settled {
                down: vec![node(3)],
                remove: vec![]
            },
            "downed, not yet replaced: only this node downed it"
        );
        assert!(!d.grants(node(3)));
        // Node 2 downs it too: a quorum (2 of 3) has, from now.
        assert!(
            !d.heard_down(node(2), node(3), false),
            "already downed here"
        );
        d.set_now(t0 + Duration::from_millis(310));
        assert_eq!(d.settle(&members, 2), Settled::default());
        assert_eq!(
            d.next_due(),
            Some(t0 + Duration::from_millis(310) + Duration::from_millis(500))
        );
        d.set_now(t0 + Duration::from_millis(810));
        assert_eq!(
            d.settle(&members, 2),
            Settled {
                down: vec![],
                remove: vec![node(3)]
            }
        );
    }

    #[test]
    fn a_minority_downs_nobody_and_a_pause_restarts_the_wait() {
        let t0 = Instant::now();
        let mut d = Downing::new(node(1), config(PartitionTolerance::MajorityQuorum), t0);
        let members = [node(1), node(2), node(3)];
        d.knows(node(2));
        d.knows(node(3));
        d.observe(&members, &[node(2), node(3)]);
        d.set_now(t0 + Duration::from_secs(5));
        assert_eq!(d.settle(&members, 1), Settled::default(), "1 of 3");
        assert!(!d.has_quorum(1, &members));
        // Two of three, but just woken from a pause: stable again first.
        d.observe(&members, &[node(3)]);
        d.set_now(t0 + Duration::from_secs(6));
        d.paused();
        d.set_now(t0 + Duration::from_millis(6_200));
        assert_eq!(d.settle(&members, 2), Settled::default());
        d.set_now(t0 + Duration::from_millis(6_300));
        assert_eq!(d.settle(&members, 2).down, vec![node(3)]);
    }

    /// A node that never received a member's registry (it joined, or rejoined, across
    /// a cut that member is behind) does not down it on its own observation: it could
    /// not restart what it owns, and it may be the only holder of every entry. It waits
    /// for nothing on its account, and adopts the downing of a peer that knew it.
    #[test]
    fn a_member_whose_registry_never_arrived_is_downed_only_on_a_peers_word() {
        let t0 = Instant::now();
        let mut d = Downing::new(node(1), config(PartitionTolerance::MajorityQuorum), t0);
        let members = [node(1), node(2), node(3)];
        d.knows(node(2));
        d.observe(&members, &[]);
        d.observe(&members, &[node(3)]);
        d.set_now(t0 + Duration::from_secs(5));
        assert_eq!(
            d.settle(&members, 2),
            Settled::default(),
            "never heard its registry"
        );
        assert_eq!(d.next_due(), None, "nothing due on its account");
        assert!(d.grants(node(3)));
        assert!(
            d.heard_down(node(2), node(3), false),
            "a peer's downing is adopted"
        );
        assert_eq!(
            d.settle(&members, 2),
            Settled::default(),
            "2 of 3 downed it: from now"
        );
        d.set_now(t0 + Duration::from_secs(6));
        assert_eq!(d.settle(&members, 2).remove, vec![node(3)]);
        // Once its registry arrives, it is downed on this node's word alone.
        let mut d = Downing::new(node(1), config(PartitionTolerance::MajorityQuorum), t0);
        d.observe(&members, &[]);
        d.observe(&members, &[node(3)]);
        d.knows(node(3));
        d.set_now(t0 + Duration::from_secs(5));
        assert_eq!(d.settle(&members, 2).down, vec![node(3)]);
    }

    #[test]
    fn a_peers_downing_is_adopted_and_said_once() {
        let t0 = Instant::now();
        let mut d = Downing::new(node(1), config(PartitionTolerance::MajorityQuorum), t0);
        assert!(
            !d.heard_down(node(2), node(5), true),
            "heard here: not adopted"
        );
        assert!(!d.is_downed(node(5)), "one peer's word is not enough");
        assert!(d.heard_down(node(2), node(3), false), "adopted: say so");
        assert!(!d.heard_down(node(4), node(3), false), "once");
        assert!(!d.heard_down(node(2), node(1), false), "never itself");
        assert!(d.is_downed(node(3)) && !d.grants(node(3)));
    }

    #[test]
    fn divergence_removes_the_unreachable_once_stable_and_grants_every_lease() {
        let t0 = Instant::now();
        let mut d = Downing::new(node(1), config(PartitionTolerance::Divergence), t0);
        let members = [node(1), node(2), node(3)];
        d.observe(&members, &[node(2), node(3)]);
        assert_eq!(d.settle(&members, 1), Settled::default());
        d.set_now(t0 + Duration::from_millis(300));
        assert_eq!(d.settle(&members, 1).remove, vec![node(2), node(3)]);
        assert!(!d.heard_down(node(2), node(3), false));
        assert!(d.grants(node(3)));
    }

    #[test]
    fn goodbyes_lower_the_majority_and_a_reset_sets_it() {
        let t0 = Instant::now();
        let mut d = Downing::new(node(1), config(PartitionTolerance::MajorityQuorum), t0);
        let five: Vec<NodeId> = (1..=5).map(node).collect();
        d.observe(&five, &[]);
        assert_eq!(d.quorum(&five), 3);
        assert_eq!(d.quorum(&five[..2]), 3, "the largest size seen counts");
        d.departed(node(5), 4);
        d.departed(node(4), 3);
        assert_eq!(d.quorum(&five[..3]), 2);
        d.reset_cluster_size(1, &five[..1]);
        assert_eq!(d.quorum(&five[..1]), 1);
    }

    /// A rejoined node's fresh view holds only itself at first: under a dynamic quorum
    /// it must not count as a cluster of one (it would grant itself a lease and take
    /// children in while the others have not heard of it yet).
    #[test]
    fn a_new_life_inherits_the_members_seen_and_the_downed() {
        let t0 = Instant::now();
        let strategy = PartitionTolerance::DynamicQuorum {
            percent: 51,
            window: Duration::from_secs(60),
        };
        let mut old = Downing::new(node(1), config(strategy), t0);
        let five: Vec<NodeId> = (1..=5).map(node).collect();
        old.observe(&five, &[]);
        old.heard_down(node(2), node(5), false);
        let me = NodeId::new(([127, 0, 0, 1], 1).into(), 2);
        let mut new = Downing::new(me, config(strategy), t0);
        assert_eq!(new.quorum(&[me]), 1, "alone, without the old life's view");
        new.inherit(&old);
        assert_eq!(
            new.quorum(&[me]),
            3,
            "four others seen lately: 51 % of five"
        );
        assert!(new.is_downed(node(5)) && !new.grants(node(5)));
    }

    /// What the old life downed on its own word (it woke from a pause and acted on a
    /// stale view before it heard it was downed) does not bind the new one: the others
    /// still hear that node, and the new life must grant its leases.
    #[test]
    fn a_new_life_forgets_what_the_old_one_downed_alone() {
        let t0 = Instant::now();
        let mut old = Downing::new(node(1), config(PartitionTolerance::MajorityQuorum), t0);
        let five: Vec<NodeId> = (1..=5).map(node).collect();
        old.observe(&five, &[]);
        old.heard_down(node(1), node(4), false);
        old.heard_down(node(2), node(5), false);
        assert!(old.is_downed(node(4)) && old.is_downed(node(5)));
        let me = NodeId::new(([127, 0, 0, 1], 1).into(), 2);
        let mut new = Downing::new(me, config(PartitionTolerance::MajorityQuorum), t0);
        new.inherit(&old);
        assert!(!new.is_downed(node(4)) && new.grants(node(4)));
        assert!(new.is_downed(node(5)) && !new.grants(node(5)));
    }

    #[test]
    fn a_dynamic_quorum_forgets_members_gone_longer_than_its_window() {
        let t0 = Instant::now();
        let strategy = PartitionTolerance::DynamicQuorum {
            percent: 51,
            window: Duration::from_secs(10),
        };
        let mut d = Downing::new(node(1), config(strategy), t0);
        let four: Vec<NodeId> = (1..=4).map(node).collect();
        d.observe(&four, &[]);
        assert_eq!(d.quorum(&four), 3);
        d.set_now(t0 + Duration::from_secs(5));
        d.observe(&four[..2], &[]);
        assert_eq!(d.quorum(&four[..2]), 3, "the two gone still count");
        d.set_now(t0 + Duration::from_secs(11));
        assert_eq!(d.quorum(&four[..2]), 2, "no longer");
    }
}
