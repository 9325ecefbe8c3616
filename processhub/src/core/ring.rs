//! Consistent-hash ring over the live members, built on the `hashring` crate.
//!
//! Keys are hashed from their bytes with SipHash-2-4 under fixed keys (hashring's
//! default builder), so every node and every build agrees on placement. Each member
//! gets [`VNODES`] virtual nodes, hashed from its address and the vnode index.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use hashring::HashRing;

use crate::node::NodeId;

/// Virtual nodes per member. A member's share of the ring varies by about 1/sqrt(VNODES):
/// with 160 a 4th node took 0.217 to 0.277 of the keys (measured, P8); with 1024 it
/// stays within a few percent of a quarter. Lookups stay a binary search (13 steps for
/// 4 members), and the ring is rebuilt only on membership changes.
pub(crate) const VNODES: u16 = 1024;

#[derive(Clone, Debug, PartialEq)]
struct VNode {
    node: NodeId,
    index: u16,
    /// The node's address text, made once for all its vnodes (building a ring of 100
    /// members formatted it 102,400 times, most of the build).
    addr: Arc<str>,
}

impl Hash for VNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Stable bytes only: the address text and the index, never the incarnation, so a
        // restarted node takes back the same arcs of the ring.
        state.write(self.addr.as_bytes());
        state.write(&self.index.to_le_bytes());
    }
}

struct KeyBytes<'a>(&'a [u8]);

impl Hash for KeyBytes<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0);
    }
}

/// The ring of a set of members.
pub(crate) struct Ring {
    ring: HashRing<VNode>,
    members: Vec<NodeId>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("members", &self.members)
            .finish()
    }
}

impl Ring {
    /// A ring of these members (order does not matter; duplicates are ignored).
    pub(crate) fn new(members: impl IntoIterator<Item = NodeId>) -> Self {
        let mut members: Vec<NodeId> = members.into_iter().collect();
        members.sort();
        members.dedup();
        let mut ring = HashRing::new();
        let vnodes = members
            .iter()
            .flat_map(|&node| {
                let addr: Arc<str> = Arc::from(node.addr().to_string());
                (0..VNODES).map(move |index| VNode {
                    node,
                    index,
                    addr: addr.clone(),
                })
            })
            .collect();
        ring.batch_add(vnodes);
        Self { ring, members }
    }

    /// The ring of these members (sorted, without duplicates), shared with every hub of
    /// this process that asked for the same members lately: a ring of 100 members has
    /// 102,400 points to hash and sort, and the simulator's 100 hubs each build the same
    /// one on every change. Nothing but the cost differs from [`Ring::new`].
    pub(crate) fn shared(mut members: Vec<NodeId>) -> Arc<Ring> {
        members.sort();
        members.dedup();
        /// The rings built last, newest first.
        static RECENT: Mutex<Vec<Arc<Ring>>> = Mutex::new(Vec::new());
        const KEEP: usize = 4;
        if let Some(ring) = RECENT.lock().unwrap().iter().find(|r| r.members == members) {
            return ring.clone();
        }
        let ring = Arc::new(Ring::new(members));
        let mut recent = RECENT.lock().unwrap();
        recent.insert(0, ring.clone());
        recent.truncate(KEEP);
        ring
    }

    /// The members, sorted.
    pub(crate) fn members(&self) -> &[NodeId] {
        &self.members
    }

    /// The owner of `id`, or `None` when the ring is empty.
    pub(crate) fn owner(&self, id: &str) -> Option<NodeId> {
        self.ring.get(&KeyBytes(id.as_bytes())).map(|v| v.node)
    }

    /// The first `n` distinct owners of `id` (all members if there are fewer): the ring
    /// owner first, then the owners of the id salted with 1, 2, ... skipping repeats.
    /// Each copy's place depends on the members only through its own probe, so a
    /// membership change moves few copies, and copies spread like primaries do.
    pub(crate) fn owners(&self, id: &str, n: usize) -> Vec<NodeId> {
        let n = n.min(self.members.len());
        let mut out: Vec<NodeId> = Vec::with_capacity(n);
        let mut key = id.as_bytes().to_vec();
        let base = key.len();
        for salt in 0u32..(16 * n as u32).max(16) {
            if out.len() == n {
                break;
            }
            if salt > 0 {
                key.truncate(base);
                key.push(0);
                key.extend_from_slice(&salt.to_le_bytes());
            }
            if let Some(v) = self.ring.get(&KeyBytes(&key)) {
                if !out.contains(&v.node) {
                    out.push(v.node);
                }
            }
        }
        // Unlucky probes: complete from the members in order, the same on every node.
        for m in &self.members {
            if out.len() == n {
                break;
            }
            if !out.contains(m) {
                out.push(*m);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(port: u16) -> NodeId {
        NodeId::new(([127, 0, 0, 1], port).into(), 1)
    }

    #[test]
    fn empty_ring_has_no_owner() {
        assert_eq!(Ring::new([]).owner("a"), None);
    }

    #[test]
    fn a_shared_ring_is_the_ring_of_its_members() {
        let members = vec![node(7003), node(7001), node(7002)];
        let shared = Ring::shared(members.clone());
        assert!(Arc::ptr_eq(&shared, &Ring::shared(members.clone())));
        let built = Ring::new(members);
        assert_eq!(shared.members(), built.members());
        for i in 0..200 {
            let id = format!("id-{i}");
            assert_eq!(shared.owner(&id), built.owner(&id));
            assert_eq!(shared.owners(&id, 2), built.owners(&id, 2));
        }
    }

    #[test]
    fn placement_is_exact_and_stable() {
        let ring = Ring::new([node(7001), node(7002), node(7003)]);
        // Fixed expectations: a change of hashing would move every component of a
        // running cluster during a rolling upgrade, so it must show up here.
        let got: Vec<u16> = ["user-42", "a", "b", "c", "🦀 with/slash"]
            .iter()
            .map(|id| ring.owner(id).unwrap().addr().port())
            .collect();
        assert_eq!(got, EXPECTED_PLACEMENT);
        // The incarnation does not change the placement.
        let restarted = Ring::new([NodeId::new(node(7001).addr(), 9), node(7002), node(7003)]);
        for id in ["user-42", "a", "b", "c"] {
            assert_eq!(
                ring.owner(id).unwrap().addr(),
                restarted.owner(id).unwrap().addr()
            );
        }
    }

    const EXPECTED_PLACEMENT: [u16; 5] = [7001, 7003, 7003, 7001, 7001];

    #[test]
    fn owners_are_distinct_start_with_the_owner_and_move_little() {
        let five = Ring::new((1..=5).map(node));
        let four = Ring::new((1..=4).map(node));
        let mut firsts = std::collections::HashMap::new();
        let mut seconds = std::collections::HashMap::new();
        let mut changed = 0;
        let n = 5_000;
        for i in 0..n {
            let id = format!("r-{i}");
            let o = five.owners(&id, 3);
            assert_eq!(o.len(), 3);
            assert_eq!(o[0], five.owner(&id).unwrap());
            assert!(o[0] != o[1] && o[1] != o[2] && o[0] != o[2]);
            assert_eq!(o, five.owners(&id, 3), "stable");
            *firsts.entry(o[0]).or_insert(0usize) += 1;
            *seconds.entry(o[1]).or_insert(0usize) += 1;
            // Node 5 leaves: the copies on the others mostly stay where they were.
            let after = four.owners(&id, 3);
            changed += o
                .iter()
                .filter(|x| **x != node(5) && !after.contains(x))
                .count();
        }
        for c in firsts.values().chain(seconds.values()) {
            assert!(*c > n / 5 * 8 / 10 && *c < n / 5 * 12 / 10, "uneven: {c}");
        }
        assert!(changed < n / 20, "{changed} surviving copies moved");
        // Fewer members than copies: every member, once.
        let two = Ring::new([node(1), node(2)]);
        let mut o = two.owners("x", 3);
        o.sort();
        assert_eq!(o, vec![node(1), node(2)]);
    }

    #[test]
    fn spread_is_even_and_join_moves_about_a_quarter() {
        let three = Ring::new([node(1), node(2), node(3)]);
        let four = Ring::new([node(1), node(2), node(3), node(4)]);
        let n = 20_000;
        let mut counts = std::collections::HashMap::new();
        let mut moved = 0;
        for i in 0..n {
            let id = format!("child-{i}");
            let before = three.owner(&id).unwrap();
            let after = four.owner(&id).unwrap();
            *counts.entry(before).or_insert(0usize) += 1;
            if before != after {
                assert_eq!(after, node(4), "a join only moves keys to the joiner");
                moved += 1;
            }
        }
        for (_, c) in counts {
            assert!(c > n / 3 * 9 / 10 && c < n / 3 * 11 / 10, "uneven: {c}");
        }
        let frac = moved as f64 / n as f64;
        assert!(frac > 0.225 && frac < 0.275, "moved {frac}");
    }
}
