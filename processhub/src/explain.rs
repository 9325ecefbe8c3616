//! Why a child is where it is ([`Hub::explain`]), and what a membership change would
//! move ([`Hub::plan`]): read from the local registry, never the network.

use crate::child::types::type_info;
use crate::core::engine::targets;
use crate::core::planner::{plan_with_targets, Command};
use crate::core::ring::Ring;
use crate::hub::Hub;
use crate::node::NodeId;
use crate::placement::{self, Distribution};

/// Where a child runs and why: [`Hub::explain`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Explanation {
    /// The child.
    pub id: String,
    /// Its component type's wire name.
    pub type_name: String,
    /// The strategy that placed it.
    pub distribution: Distribution,
    /// The node that runs it (or is restarting it, when `pending`).
    pub owner: NodeId,
    /// The nodes holding its standby copies (or active replicas), in promotion order.
    pub standbys: Vec<NodeId>,
    /// Bumped on every move or restart.
    pub epoch: u64,
    /// Its node died or left, and `owner` has not confirmed the restart yet.
    pub pending: bool,
    /// It stays on its node while that node lives.
    pub pinned: bool,
    /// Why it is on `owner`, in words.
    pub reason: String,
}

/// A change of membership to plan for: [`Hub::plan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MembershipChange {
    /// A node joins (a node id of your making will do: its address places it on the
    /// ring).
    Join(NodeId),
    /// A member leaves gracefully (a death plans the same, but restarts instead of
    /// handing over).
    Leave(NodeId),
}

/// One child a membership change would move: [`Hub::plan`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlannedMove {
    /// The child.
    pub id: String,
    /// Where it runs now.
    pub from: NodeId,
    /// Where it would go; `None`: it would stop (`on_node_death = "stay_down"` with its
    /// node gone).
    pub to: Option<NodeId>,
}

impl Hub {
    /// Which strategy placed `id`, on which node(s), under which epoch, and why, from the
    /// local registry; `None` if it knows no such child.
    pub fn explain(&self, id: &str) -> Option<Explanation> {
        let st = self.inner.engine.read().unwrap();
        let e = st.registry.get(id)?;
        let ring = st.view.ring();
        let pending = st.registry.pending_from(id);
        let kind = e.flags.distribution();
        let n = ring.members().len();
        let ring_owner = ring.owner(id);
        let show = |n: Option<NodeId>| n.map_or_else(|| "none".to_string(), |n| n.to_string());
        let after_death = format!(
            "if its node dies it is restarted on its ring owner (now {})",
            show(ring_owner)
        );
        let mut reason = match kind {
            Distribution::ConsistentHash if ring_owner == Some(e.owner) => {
                format!("the owner of the id on the ring of the {n} members taking new children")
            }
            Distribution::ConsistentHash if e.flags.pinned() => format!(
                "pinned: it stays on the node it started on while that node lives (its ring \
                 owner is {})",
                show(ring_owner)
            ),
            Distribution::ConsistentHash => {
                format!("its ring owner is now {}: it moves there", show(ring_owner))
            }
            Distribution::Guided => {
                format!("on the node named at start; it stays while that node lives; {after_death}")
            }
            Distribution::Local => {
                format!(
                    "on the node that started it; it stays while that node lives; {after_death}"
                )
            }
            Distribution::NotLocal => format!(
                "on a node other than the one that started it (the first of the id's preference \
                 order that is not the starter); it stays while that node lives; {after_death}"
            ),
            Distribution::RoundRobin => format!(
                "on the member that had the fewest children of its type when it started (in \
                 turn); it stays while that node lives; {after_death}"
            ),
            Distribution::EveryNode => format!(
                "one instance on every member: the primary here is the ring owner at start; \
                 each of the {} others runs one and answers its own node",
                e.standbys.as_deref().map_or(0, <[NodeId]>::len)
            ),
            Distribution::BoundedLoad => {
                let loads = crate::core::placement::loads_of(&st.registry, ring, &e.type_name);
                let total: usize = loads.iter().sum();
                let cap = crate::core::placement::cap(total, n);
                let load_of =
                    |node: NodeId| ring.members().binary_search(&node).map_or(0, |i| loads[i]);
                let preference = ring.owners(id, n);
                let skipped: Vec<String> = preference
                    .iter()
                    .take_while(|p| **p != e.owner)
                    .map(|p| format!("{p} (holds {})", load_of(*p)))
                    .collect();
                format!(
                    "consistent hashing bounded to {cap} children of its type per member \
                     ({} × the mean of {total} over {n}); it holds {}; before it in the id's \
                     preference order: {}",
                    placement::BOUND,
                    load_of(e.owner),
                    if skipped.is_empty() {
                        "none (it is the ring owner)".to_string()
                    } else {
                        skipped.join(", ")
                    }
                )
            }
            Distribution::Custom => "placed by the type's custom strategy".to_string(),
        };
        if let Some(from) = pending {
            reason = format!(
                "its node {from} died or left: {} is taking it over under epoch {}; {reason}",
                e.owner, e.epoch
            );
        }
        if let Some(s) = e
            .standbys
            .as_deref()
            .filter(|_| kind != Distribution::EveryNode)
        {
            reason.push_str(&format!(
                "; standbys (in promotion order) {s:?}: the next nodes of the id's preference order"
            ));
        }
        Some(Explanation {
            id: id.to_string(),
            type_name: e.type_name.to_string(),
            distribution: kind,
            owner: e.owner,
            standbys: e.standbys.as_deref().unwrap_or_default().to_vec(),
            epoch: e.epoch,
            pending: pending.is_some(),
            pinned: e.flags.pinned(),
            reason,
        })
    }

    /// The children a membership change would move, and where, planned as every node
    /// would plan it over this node's registry, without doing anything. Sorted by id.
    pub fn plan(&self, change: MembershipChange) -> Vec<PlannedMove> {
        let st = self.inner.engine.read().unwrap();
        let mut members = st.view.members().to_vec();
        match change {
            MembershipChange::Join(node) => {
                if !members.contains(&node) {
                    members.push(node);
                    members.sort();
                }
            }
            MembershipChange::Leave(node) => members.retain(|m| *m != node),
        }
        let placing: Vec<NodeId> = members
            .iter()
            .copied()
            .filter(|m| !st.view.is_draining(*m))
            .collect();
        let ring = Ring::new(placing);
        let mut out = Vec::new();
        for me in &members {
            let mut registry = st.registry.clone();
            let targets = targets(*me, type_info, &registry, &ring, &members);
            // (Every node out of the members planned over is gone, as after the change.)
            let gone = |n: NodeId| members.binary_search(&n).is_err();
            for c in plan_with_targets(*me, &members, &gone, &mut registry, &targets) {
                let moved = match c {
                    Command::MoveTo { id, to, .. } => PlannedMove {
                        id,
                        from: *me,
                        to: Some(to),
                    },
                    Command::StartLocal { id, from, .. } => PlannedMove {
                        id,
                        from,
                        to: Some(*me),
                    },
                    Command::Down { id, node } => PlannedMove {
                        id,
                        from: node,
                        to: None,
                    },
                };
                out.push(moved);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        // Every member drops a child that stays down: once.
        out.dedup();
        out
    }
}
