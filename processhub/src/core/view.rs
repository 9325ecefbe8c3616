//! The membership view: who the failure detector says is alive, who announced that it
//! leaves or drains, the members, and the ring of the members that take new children.
//!
//! Gossip reports *observations*; the view turns them into the member list every
//! decision reads. A member that goes silent stays a member, *unreachable*, until it is
//! downed ([`crate::core::downing`]) and removed, or a newer incarnation of it appears at
//! its address (the process restarted: the old one is dead). A member that drains stays
//! a member (it is alive and answers) but is off the ring, so nothing new is placed on
//! it.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::core::ring::Ring;
use crate::node::NodeId;

/// What the membership layer (gossip and its failure detector) says of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Gossip {
    /// Live members, self included, sorted.
    pub(crate) members: Vec<NodeId>,
    /// Live nodes that announced they leave.
    pub(crate) leaving: Vec<NodeId>,
    /// Members that announced they take no new children.
    pub(crate) draining: Vec<NodeId>,
}

impl Gossip {
    /// This view followed by `next`: `next`'s members; the nodes that announced they
    /// leave or drain in either (announcements add up, as [`ClusterView::gossip`] takes
    /// them).
    pub(crate) fn then(mut self, next: Gossip) -> Gossip {
        self.members = next.members;
        for n in next.leaving {
            if !self.leaving.contains(&n) {
                self.leaving.push(n);
            }
        }
        for n in next.draining {
            if !self.draining.contains(&n) {
                self.draining.push(n);
            }
        }
        self
    }
}

/// How the members changed: in sorted order, so every node reports alike.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct MembersChanged {
    /// Nodes that became members.
    pub(crate) joined: Vec<NodeId>,
    /// Members that are gone, and whether they said goodbye.
    pub(crate) left: Vec<(NodeId, bool)>,
}

/// One node's view of the membership.
#[derive(Debug)]
pub(crate) struct ClusterView {
    /// This node.
    me: NodeId,
    /// Alive by the failure detector, self included.
    alive: Vec<NodeId>,
    /// Nodes that said they leave: gone for every decision from then on.
    departed: BTreeSet<NodeId>,
    /// Members that take no new children.
    draining: BTreeSet<NodeId>,
    /// Downed and taken out: never members again (unless [`Self::restore`]d).
    removed: BTreeSet<NodeId>,
    /// Members, reachable or not, sorted.
    members: Vec<NodeId>,
    /// Every node that was a member of this view at some time.
    known: BTreeSet<NodeId>,
    /// The ring of the members that take new children.
    ring: Arc<Ring>,
}

impl ClusterView {
    /// The view of a node that knows only itself.
    pub(crate) fn new(me: NodeId) -> Self {
        Self {
            me,
            alive: vec![me],
            departed: BTreeSet::new(),
            draining: BTreeSet::new(),
            removed: BTreeSet::new(),
            members: vec![me],
            known: BTreeSet::from([me]),
            ring: Arc::new(Ring::new([me])),
        }
    }

    /// Members, reachable or not, sorted.
    pub(crate) fn members(&self) -> &[NodeId] {
        &self.members
    }

    /// Whether the failure detector hears `node` now.
    pub(crate) fn is_alive(&self, node: NodeId) -> bool {
        self.alive.contains(&node)
    }

    /// The members [`Self::refresh`] would give now, and those of them the failure
    /// detector does not hear.
    pub(crate) fn candidates(&self) -> (Vec<NodeId>, Vec<NodeId>) {
        let members = self.next_members();
        let unreachable = members
            .iter()
            .copied()
            .filter(|n| !self.alive.contains(n))
            .collect();
        (members, unreachable)
    }

    /// Nodes downed and taken out that the failure detector still hears (a node paused
    /// or cut off for longer than the others waited, back before it knows).
    pub(crate) fn downed_but_heard(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.alive
            .iter()
            .copied()
            .filter(|n| self.removed.contains(n))
    }

    /// `node` was downed: out of the members from the next [`Self::refresh`] on.
    pub(crate) fn remove(&mut self, node: NodeId) {
        self.removed.insert(node);
    }

    /// `node`, downed, is heard again and may be a member again (`Divergence`).
    pub(crate) fn restore(&mut self, node: NodeId) {
        self.removed.remove(&node);
    }

    /// Whether `node` is gone for this view: not a member, and it was one, or it said
    /// goodbye, was downed, or a newer incarnation is alive at its address. A node this
    /// view never counted as a member is not (what it owns came on a connection that
    /// opened before gossip told of it: it is alive, whatever this view says yet).
    pub(crate) fn is_gone(&self, node: NodeId) -> bool {
        self.members.binary_search(&node).is_err()
            && (self.known.contains(&node)
                || self.departed.contains(&node)
                || self.removed.contains(&node)
                || self.replaced(&node))
    }

    /// Whether a newer incarnation of `n` is alive at its address (this node is: a
    /// former incarnation of this node, still heard of right after it rejoined, is never
    /// a member of its view, nor counted in the cluster's size).
    fn replaced(&self, n: &NodeId) -> bool {
        self.alive
            .iter()
            .chain(std::iter::once(&self.me))
            .any(|a| a.addr() == n.addr() && a.incarnation() > n.incarnation())
    }

    /// The members from what is known now: those already members and the live nodes,
    /// less those that said goodbye, were removed, or were replaced by a newer
    /// incarnation at their address.
    fn next_members(&self) -> Vec<NodeId> {
        let mut m: Vec<NodeId> = self
            .members
            .iter()
            .chain(self.alive.iter())
            .copied()
            .filter(|n| {
                !self.departed.contains(n) && !self.removed.contains(n) && !self.replaced(n)
            })
            .collect();
        m.sort();
        m.dedup();
        m
    }

    /// The ring of the members that take new children.
    pub(crate) fn ring(&self) -> &Arc<Ring> {
        &self.ring
    }

    /// Whether `node` takes no new children.
    pub(crate) fn is_draining(&self, node: NodeId) -> bool {
        self.draining.contains(&node)
    }

    /// Takes in what gossip says now (call [`Self::refresh`] after).
    pub(crate) fn gossip(&mut self, gossip: Gossip) {
        self.alive = gossip.members;
        self.departed.extend(gossip.leaving);
        self.draining.extend(gossip.draining);
    }

    /// `node` said it leaves (call [`Self::refresh`] after).
    pub(crate) fn depart(&mut self, node: NodeId) {
        self.departed.insert(node);
    }

    /// `node` said it takes no new children (call [`Self::refresh`] after).
    pub(crate) fn drain(&mut self, node: NodeId) {
        self.draining.insert(node);
    }

    /// Recomputes the members and the ring; `None` if neither changed.
    pub(crate) fn refresh(&mut self) -> Option<MembersChanged> {
        let members = self.next_members();
        let placing: Vec<NodeId> = members
            .iter()
            .copied()
            .filter(|n| !self.draining.contains(n))
            .collect();
        if members == self.members && placing == self.ring.members() {
            return None;
        }
        let joined = members
            .iter()
            .copied()
            .filter(|n| self.members.binary_search(n).is_err())
            .collect();
        let left = self
            .members
            .iter()
            .copied()
            .filter(|n| members.binary_search(n).is_err())
            .map(|n| (n, self.departed.contains(&n)))
            .collect();
        self.ring = Ring::shared(placing);
        self.known.extend(members.iter().copied());
        self.members = members;
        Some(MembersChanged { joined, left })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(port: u16) -> NodeId {
        NodeId::new(([127, 0, 0, 1], port).into(), 1)
    }

    #[test]
    fn joins_deaths_leaves_and_drains_change_members_and_ring_as_they_should() {
        let mut v = ClusterView::new(node(1));
        assert_eq!(v.refresh(), None);
        v.gossip(Gossip {
            members: vec![node(3), node(1), node(2)],
            ..Gossip::default()
        });
        assert_eq!(
            v.refresh(),
            Some(MembersChanged {
                joined: vec![node(2), node(3)],
                left: vec![],
            })
        );
        assert_eq!(v.ring().members(), &[node(1), node(2), node(3)]);
        // A drain keeps the member, takes it off the ring.
        v.drain(node(2));
        assert_eq!(v.refresh(), Some(MembersChanged::default()));
        assert_eq!(v.members(), &[node(1), node(2), node(3)]);
        assert_eq!(v.ring().members(), &[node(1), node(3)]);
        // A goodbye is graceful; a silence makes a member unreachable, not gone: only
        // downing it takes it out.
        v.depart(node(2));
        v.gossip(Gossip {
            members: vec![node(1), node(2)],
            ..Gossip::default()
        });
        assert_eq!(
            v.refresh(),
            Some(MembersChanged {
                joined: vec![],
                left: vec![(node(2), true)],
            })
        );
        assert_eq!(v.candidates(), (vec![node(1), node(3)], vec![node(3)]));
        v.remove(node(3));
        assert_eq!(
            v.refresh(),
            Some(MembersChanged {
                joined: vec![],
                left: vec![(node(3), false)],
            })
        );
        assert_eq!(v.members(), &[node(1)]);
        assert_eq!(v.refresh(), None, "said once");
        // A newer incarnation at a member's address: the old one is dead at once.
        let old = NodeId::new(([127, 0, 0, 1], 9).into(), 1);
        let new = NodeId::new(([127, 0, 0, 1], 9).into(), 2);
        v.gossip(Gossip {
            members: vec![node(1), old],
            ..Gossip::default()
        });
        v.refresh();
        v.gossip(Gossip {
            members: vec![node(1), new],
            ..Gossip::default()
        });
        assert_eq!(
            v.refresh(),
            Some(MembersChanged {
                joined: vec![new],
                left: vec![(old, false)],
            })
        );
    }

    #[test]
    fn a_former_incarnation_of_this_node_is_never_a_member_of_its_view() {
        // Rejoined as incarnation 2: gossip still tells of incarnation 1 (and not yet of
        // this one). Counted, it made the cluster look one node larger (a quorum of 3
        // of 4 where 2 of 3 would do) until a member's death left this node without a
        // quorum for good.
        let old = NodeId::new(([127, 0, 0, 1], 1).into(), 1);
        let me = NodeId::new(([127, 0, 0, 1], 1).into(), 2);
        let mut v = ClusterView::new(me);
        v.gossip(Gossip {
            members: vec![old, node(2), node(3)],
            ..Gossip::default()
        });
        v.refresh();
        assert_eq!(v.members(), &[me, node(2), node(3)]);
        assert!(v.is_gone(old));
    }

    #[test]
    fn a_burst_of_views_taken_at_once_ends_where_taking_them_one_by_one_does() {
        let views = [
            Gossip {
                members: vec![node(1), node(2)],
                ..Gossip::default()
            },
            Gossip {
                members: vec![node(1), node(2), node(3)],
                draining: vec![node(3)],
                ..Gossip::default()
            },
            Gossip {
                members: vec![node(1), node(2), node(3), node(4)],
                leaving: vec![node(2)],
                ..Gossip::default()
            },
        ];
        let mut one_by_one = ClusterView::new(node(1));
        for g in views.clone() {
            one_by_one.gossip(g);
            one_by_one.refresh();
        }
        let mut at_once = ClusterView::new(node(1));
        let burst = views.into_iter().reduce(Gossip::then).unwrap();
        at_once.gossip(burst);
        assert_eq!(
            at_once.refresh(),
            Some(MembersChanged {
                joined: vec![node(3), node(4)],
                left: vec![],
            })
        );
        assert_eq!(at_once.members(), one_by_one.members());
        assert_eq!(at_once.ring().members(), one_by_one.ring().members());
        assert_eq!(at_once.members(), &[node(1), node(3), node(4)]);
    }
}
