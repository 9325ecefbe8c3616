//! The distribution strategies' decisions: where a new child starts, and which children
//! of `bounded_load` and custom types go elsewhere after a membership change. The public
//! face (docs, the [`Strategy`] trait's users) is `crate::placement`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::core::entry::Entry;
pub use crate::core::entry::{Distribution, BOUND};
use crate::core::registry::Registry;
use crate::core::ring::Ring;
use crate::node::NodeId;

/// What a strategy decides from: the built-in strategies get the same.
///
/// A [`Strategy`] must decide from these alone (no clock, no randomness, no state of
/// its own): every node of the hub computes the placement of a child whose node died,
/// and they must agree.
#[derive(Debug)]
pub struct PlacementInput<'a> {
    /// The child's id.
    pub id: &'a str,
    /// The live members that take new children (draining members are left out), sorted.
    pub members: &'a [NodeId],
    /// The node deciding: the one starting the child, or, on a membership change, the
    /// node planning (every node plans; none should depend on it then).
    pub caller: NodeId,
    /// The node named at start (`guided`), if any.
    pub named: Option<NodeId>,
    /// Where the child runs now, if its node is alive (`None` at start, and for a child
    /// whose node died or left).
    pub current: Option<NodeId>,
    /// The number of children of this type on each of `members` (same order), this one
    /// included if it runs.
    pub loads: &'a [usize],
    ring: &'a Ring,
}

impl PlacementInput<'_> {
    /// The owner of the id on the consistent-hash ring of `members`.
    pub fn ring_owner(&self) -> Option<NodeId> {
        self.ring.owner(self.id)
    }

    /// The members in the id's order of preference: the ring owner first, then the
    /// owners of the id's salted probes (the order replicas are placed in). Stable: a
    /// membership change reorders only what it must.
    pub fn preference(&self) -> Vec<NodeId> {
        self.ring.owners(self.id, self.members.len())
    }

    /// The number of children of this type on `node` (0 for a node not in `members`).
    pub fn load(&self, node: NodeId) -> usize {
        self.members
            .iter()
            .position(|m| *m == node)
            .map_or(0, |i| self.loads[i])
    }
}

/// A placement strategy of the user's: `#[distributed(custom = path::to::Strategy)]`,
/// where the type implements `Strategy` and `Default`.
///
/// ```
/// use processhub::placement::{PlacementInput, Strategy};
/// use processhub::NodeId;
///
/// /// Children whose id starts with "eu-" go to the lowest member, the rest by the ring.
/// #[derive(Default)]
/// pub struct EuFirst;
///
/// impl Strategy for EuFirst {
///     fn place(&self, input: &PlacementInput<'_>) -> Option<NodeId> {
///         if input.id.starts_with("eu-") {
///             input.members.first().copied()
///         } else {
///             input.ring_owner()
///         }
///     }
/// }
/// ```
pub trait Strategy: Send + Sync + 'static {
    /// The node for a child: at start (`input.current` is `None`), when members change
    /// (return `input.current` to keep it where it is; another member moves it there,
    /// with its state), and when its node died or left. `None`: nowhere (a start fails
    /// with [`crate::StartError::Placement`]; on a change, it stays where it is, or
    /// goes to its ring owner if its node is gone). A node not among `members` counts
    /// as `None`.
    fn place(&self, input: &PlacementInput<'_>) -> Option<NodeId>;
}

/// The strategy of `#[distributed(custom = S)]`, made once (for generated code).
#[doc(hidden)]
pub fn custom_strategy<S: Strategy + Default>(
    cell: &'static std::sync::OnceLock<S>,
) -> &'static dyn Strategy {
    cell.get_or_init(S::default)
}

/// The strategy of a type: built in, or the user's.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TypePlacement {
    pub(crate) kind: Distribution,
    pub(crate) custom: fn() -> Option<&'static dyn Strategy>,
}

impl TypePlacement {
    /// Where a new child goes, or why it cannot start.
    pub(crate) fn place_new(
        &self,
        id: &str,
        ring: &Ring,
        caller: NodeId,
        named: Option<NodeId>,
        loads: &[usize],
    ) -> Result<NodeId, PlacementError> {
        let members = ring.members();
        if members.is_empty() {
            return Ok(caller);
        }
        let input = PlacementInput {
            id,
            members,
            caller,
            named,
            current: None,
            loads,
            ring,
        };
        let ring_owner = || input.ring_owner().ok_or(PlacementError::NoMember);
        match self.kind {
            Distribution::ConsistentHash | Distribution::EveryNode => ring_owner(),
            Distribution::Guided => {
                let node = named.ok_or(PlacementError::NoNodeNamed)?;
                if members.contains(&node) {
                    Ok(node)
                } else {
                    Err(PlacementError::NotAMember {
                        node,
                        members: members.to_vec(),
                    })
                }
            }
            Distribution::Local => Ok(caller),
            Distribution::NotLocal => Ok(input
                .preference()
                .into_iter()
                .find(|n| *n != caller)
                // The only member: it starts here (documented).
                .unwrap_or(caller)),
            Distribution::RoundRobin => Ok(round_robin(members, loads)),
            Distribution::BoundedLoad => {
                let total: usize = loads.iter().sum::<usize>() + 1;
                let cap = cap(total, members.len());
                Ok(first_under(&input.preference(), members, loads, cap))
            }
            Distribution::Custom => {
                let strategy = (self.custom)().ok_or(PlacementError::NoCustomStrategy)?;
                match strategy.place(&input) {
                    Some(n) if members.contains(&n) => Ok(n),
                    Some(n) => Err(PlacementError::CustomChoseNonMember(n)),
                    None => Err(PlacementError::CustomChoseNone),
                }
            }
        }
    }
}

/// Why a new child cannot be placed (the reason of `StartError::Placement`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PlacementError {
    /// The ring has no member.
    #[error("no member")]
    NoMember,
    /// A `guided` start without a node.
    #[error("distribution = \"guided\" places a child on the node named at start: use `start_on`, or `StartOptions::new().node(node)`")]
    NoNodeNamed,
    /// A `guided` start on a node that takes no new children.
    #[error(
        "node {node} is not a live member of this hub taking new children (members: {members:?})"
    )]
    NotAMember { node: NodeId, members: Vec<NodeId> },
    /// A node named for a type that is not `guided`.
    #[error(
        "a node ({node}) can be named only for `distribution = \"guided\"`; this type's is {kind}"
    )]
    NamedForUnguided { node: NodeId, kind: Distribution },
    /// A `custom` type without its strategy.
    #[error("no custom strategy")]
    NoCustomStrategy,
    /// The custom strategy chose a node that takes no new children.
    #[error("the custom strategy chose {0}, not a live member taking new children")]
    CustomChoseNonMember(NodeId),
    /// The custom strategy chose no node.
    #[error("the custom strategy placed it on no node")]
    CustomChoseNone,
}

/// Places the new children of one type, one after another (each counted in the loads
/// the next one sees).
pub(crate) struct Placer {
    placement: Option<TypePlacement>,
    ring: Arc<Ring>,
    me: NodeId,
    named: Option<NodeId>,
    loads: Vec<usize>,
}

impl Placer {
    /// A placer of the type placed by `placement` (`None`: a type this binary lacks),
    /// on `ring`, from `me`, with the caller's `named` node and the type's `loads` per
    /// member.
    pub(crate) fn new(
        placement: Option<TypePlacement>,
        ring: Arc<Ring>,
        me: NodeId,
        named: Option<NodeId>,
        loads: Vec<usize>,
    ) -> Self {
        Self {
            placement,
            ring,
            me,
            named,
            loads,
        }
    }

    /// The node `id` starts on, `None` when the ring owner takes it (the owner checks
    /// the ring itself), or why it cannot be placed.
    pub(crate) fn place(&mut self, id: &str) -> Result<Option<NodeId>, PlacementError> {
        let Some(p) = self.placement else {
            // A type this binary does not have: its owner on the ring says so.
            return Ok(None);
        };
        if let (Some(node), false) = (self.named, p.kind == Distribution::Guided) {
            return Err(PlacementError::NamedForUnguided { node, kind: p.kind });
        }
        if matches!(
            p.kind,
            Distribution::ConsistentHash | Distribution::EveryNode
        ) {
            return Ok(None);
        }
        let node = p.place_new(id, &self.ring, self.me, self.named, &self.loads)?;
        if let Ok(i) = self.ring.members().binary_search(&node) {
            if let Some(l) = self.loads.get_mut(i) {
                *l += 1;
            }
        }
        Ok(Some(node))
    }
}

/// The most children of a type a member may hold under `bounded_load`.
pub(crate) fn cap(total: usize, members: usize) -> usize {
    ((total as f64 * BOUND) / members.max(1) as f64)
        .ceil()
        .max(1.0) as usize
}

/// The first of `preference` whose load is under `cap` (the least loaded if none is).
fn first_under(preference: &[NodeId], members: &[NodeId], loads: &[usize], cap: usize) -> NodeId {
    let load = |n: &NodeId| members.iter().position(|m| m == n).map_or(0, |i| loads[i]);
    preference
        .iter()
        .find(|n| load(n) < cap)
        .or_else(|| preference.iter().min_by_key(|n| load(n)))
        .copied()
        .unwrap_or(members[0])
}

/// The member with the fewest children; among equals, the first from the position the
/// count of children so far points at, so successive starts visit the members in turn.
fn round_robin(members: &[NodeId], loads: &[usize]) -> NodeId {
    let total: usize = loads.iter().sum();
    let n = members.len();
    let least = loads.iter().copied().min().unwrap_or(0);
    (0..n)
        .map(|k| (total + k) % n)
        .find(|i| loads[*i] == least)
        .map_or(members[0], |i| members[i])
}

/// The number of children of `type_name` on each member of `ring` (children of dead
/// nodes count nowhere).
pub(crate) fn loads_of(registry: &Registry, ring: &Ring, type_name: &str) -> Vec<usize> {
    let members = ring.members();
    let mut loads = vec![0; members.len()];
    for (_, e) in registry.iter() {
        if &*e.type_name == type_name {
            if let Ok(i) = members.binary_search(&e.owner) {
                loads[i] += 1;
            }
        }
    }
    loads
}

/// The children of types placed by `bounded_load` or a custom strategy that must go
/// elsewhere after a membership change, and where (the same on every node, given the
/// same registry): those of dead or departed nodes, and those over a member's cap.
/// Other children follow the ring (`consistent_hash`) or stay (placed once).
pub(crate) fn replacements(
    me: NodeId,
    registry: &Registry,
    ring: &Ring,
    alive: &dyn Fn(NodeId) -> bool,
    custom: &dyn Fn(&str) -> Option<&'static dyn Strategy>,
) -> HashMap<Arc<str>, NodeId> {
    let members = ring.members();
    let mut out = HashMap::new();
    if members.is_empty() {
        return out;
    }
    // Per type: its entries, sorted by id (every node walks them in the same order).
    let mut by_type: HashMap<Arc<str>, Vec<(&Arc<str>, &Entry)>> = HashMap::new();
    for (id, e) in registry.iter() {
        if matches!(
            e.flags.distribution(),
            Distribution::BoundedLoad | Distribution::Custom
        ) {
            by_type
                .entry(e.type_name.clone())
                .or_default()
                .push((id, e));
        }
    }
    for (type_name, mut entries) in by_type {
        entries.sort_by(|a, b| a.0.cmp(b.0));
        let mut loads = vec![0usize; members.len()];
        for (_, e) in &entries {
            if let Ok(i) = members.binary_search(&e.owner) {
                loads[i] += 1;
            }
        }
        let index = |n: NodeId| members.binary_search(&n).ok();
        if entries[0].1.flags.distribution() == Distribution::Custom {
            let Some(strategy) = custom(&type_name) else {
                continue;
            };
            for (id, e) in &entries {
                let current = alive(e.owner).then_some(e.owner);
                let input = PlacementInput {
                    id,
                    members,
                    caller: me,
                    named: None,
                    current,
                    loads: &loads,
                    ring,
                };
                match strategy.place(&input).filter(|n| index(*n).is_some()) {
                    Some(n) if Some(n) != current => {
                        out.insert((*id).clone(), n);
                    }
                    Some(_) => {}
                    // Nowhere: it stays; a child of a dead node goes to its ring owner.
                    None => {
                        if let (None, Some(owner)) = (current, ring.owner(id)) {
                            out.insert((*id).clone(), owner);
                        }
                    }
                }
            }
            continue;
        }
        // bounded_load: first the children of nodes that are gone, then the excess of
        // members over the cap (those away from their ring owner first).
        let cap = cap(entries.len(), members.len());
        let place = |id: &str, loads: &mut Vec<usize>, not: Option<NodeId>| {
            let preference = ring.owners(id, members.len());
            let to = preference
                .iter()
                .copied()
                .filter(|n| Some(*n) != not)
                .find(|n| index(*n).is_some_and(|i| loads[i] < cap))?;
            loads[index(to)?] += 1;
            Some(to)
        };
        for (id, e) in &entries {
            if !alive(e.owner) || index(e.owner).is_none() {
                if let Some(to) = place(id, &mut loads, None) {
                    out.insert((*id).clone(), to);
                }
            }
        }
        for (m, node) in members.iter().enumerate() {
            if loads[m] <= cap {
                continue;
            }
            let mut theirs: Vec<&(&Arc<str>, &Entry)> =
                entries.iter().filter(|(_, e)| e.owner == *node).collect();
            theirs.sort_by_key(|(id, _)| (ring.owner(id) == Some(*node), (*id).clone()));
            for (id, _) in theirs {
                if loads[m] <= cap {
                    break;
                }
                if let Some(to) = place(id, &mut loads, Some(*node)) {
                    loads[m] -= 1;
                    out.insert((*id).clone(), to);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(port: u16) -> NodeId {
        NodeId::new(([127, 0, 0, 1], port).into(), 1)
    }

    const IDS: [&str; 6] = ["a", "b", "c", "user-42", "order-7", "🦀"];

    fn place_all(p: TypePlacement, ring: &Ring, caller: NodeId, named: Option<NodeId>) -> Vec<u16> {
        let mut loads = vec![0; ring.members().len()];
        IDS.iter()
            .map(|id| {
                let n = p.place_new(id, ring, caller, named, &loads).unwrap();
                loads[ring.members().binary_search(&n).unwrap()] += 1;
                n.addr().port()
            })
            .collect()
    }

    fn kind(kind: Distribution) -> TypePlacement {
        TypePlacement {
            kind,
            custom: || None,
        }
    }

    #[test]
    fn placement_tables_of_the_built_in_strategies() {
        let ring = Ring::new([node(7001), node(7002), node(7003)]);
        let by_ring: Vec<u16> = IDS
            .iter()
            .map(|id| ring.owner(id).unwrap().addr().port())
            .collect();
        // Fixed expectations: a change here moves children of running clusters.
        assert_eq!(by_ring, [7003, 7003, 7001, 7001, 7002, 7003]);
        assert_eq!(
            place_all(kind(Distribution::ConsistentHash), &ring, node(7001), None),
            by_ring
        );
        assert_eq!(
            place_all(
                kind(Distribution::Guided),
                &ring,
                node(7001),
                Some(node(7002))
            ),
            [7002; 6]
        );
        assert_eq!(
            place_all(kind(Distribution::Local), &ring, node(7003), None),
            [7003; 6]
        );
        // Not local: the ring owner, or the next in the id's preference order.
        assert_eq!(
            place_all(kind(Distribution::NotLocal), &ring, node(7003), None),
            [7002, 7001, 7001, 7001, 7002, 7002]
        );
        // Round robin: in turn, whatever the ids.
        assert_eq!(
            place_all(kind(Distribution::RoundRobin), &ring, node(7002), None),
            [7001, 7002, 7003, 7001, 7002, 7003]
        );
        // Bounded load: the first of the id's preference order holding fewer than
        // ceil(1.25 × mean): "b" and "user-42" find their ring owner (7003, 7001) full.
        assert_eq!(
            place_all(kind(Distribution::BoundedLoad), &ring, node(7001), None),
            [7003, 7001, 7001, 7003, 7002, 7003]
        );
    }

    #[test]
    fn bad_placements_are_clear_errors() {
        let ring = Ring::new([node(7001), node(7002)]);
        let guided = kind(Distribution::Guided);
        let none = guided.place_new("a", &ring, node(7001), None, &[0, 0]);
        assert_eq!(none, Err(PlacementError::NoNodeNamed));
        assert!(none.unwrap_err().to_string().contains("start_on"));
        let dead = guided.place_new("a", &ring, node(7001), Some(node(7009)), &[0, 0]);
        assert_eq!(
            dead,
            Err(PlacementError::NotAMember {
                node: node(7009),
                members: vec![node(7001), node(7002)]
            })
        );
        assert!(dead.unwrap_err().to_string().contains("not a live member"));
        // Not local in a one-node cluster: the only node.
        let alone = Ring::new([node(7001)]);
        let n = kind(Distribution::NotLocal).place_new("a", &alone, node(7001), None, &[0]);
        assert_eq!(n.unwrap(), node(7001));
    }

    #[test]
    fn round_robin_and_bounded_load_spread_evenly() {
        let members: Vec<NodeId> = (0..5).map(|i| node(7001 + i)).collect();
        let ring = Ring::new(members.clone());
        for k in [Distribution::RoundRobin, Distribution::BoundedLoad] {
            let mut loads = vec![0; 5];
            for i in 0..10_000 {
                let n = kind(k)
                    .place_new(&format!("id-{i}"), &ring, members[i % 5], None, &loads)
                    .unwrap();
                loads[members.binary_search(&n).unwrap()] += 1;
            }
            let max = *loads.iter().max().unwrap();
            let bound = if k == Distribution::RoundRobin {
                2_000
            } else {
                2_500
            };
            assert!(max <= bound, "{k}: {loads:?}");
        }
    }

    fn entry(owner: NodeId, kind: Distribution) -> Entry {
        Entry {
            type_name: "T".into(),
            owner,
            epoch: 1,
            start_state: Default::default(),
            flags: crate::core::entry::Flags::new(false, false).with_distribution(kind),
            standbys: None,
            meta: None,
        }
    }

    #[test]
    fn bounded_load_moves_only_the_excess_on_a_join_and_places_the_dead_under_the_cap() {
        let three: Vec<NodeId> = (0..3).map(|i| node(7001 + i)).collect();
        let ring3 = Ring::new(three.clone());
        let mut registry = Registry::default();
        let mut loads = vec![0; 3];
        for i in 0..300 {
            let id = format!("id-{i}");
            let n = kind(Distribution::BoundedLoad)
                .place_new(&id, &ring3, three[0], None, &loads)
                .unwrap();
            loads[three.binary_search(&n).unwrap()] += 1;
            registry.upsert(&id, entry(n, Distribution::BoundedLoad));
        }
        let none = |_: &str| None;
        // Nothing changes: nothing moves.
        let all_alive = |_: NodeId| true;
        assert!(replacements(three[0], &registry, &ring3, &all_alive, &none).is_empty());
        // A 4th joins: the cap falls to ceil(1.25 × 75) = 94; only the excess moves.
        let four: Vec<NodeId> = (0..4).map(|i| node(7001 + i)).collect();
        let ring4 = Ring::new(four.clone());
        let moves = replacements(three[0], &registry, &ring4, &all_alive, &none);
        let excess: usize = loads.iter().map(|l| l.saturating_sub(94)).sum();
        assert_eq!(moves.len(), excess);
        assert!(moves.len() < 100, "{} of 300 moved", moves.len());
        // The same on every node.
        assert_eq!(
            moves,
            replacements(four[3], &registry, &ring4, &all_alive, &none)
        );
        // A node dies: its children go under the cap of the two left.
        let two = Ring::new([three[0], three[1]]);
        let alive = |n: NodeId| n != three[2];
        let moves = replacements(three[0], &registry, &two, &alive, &none);
        assert_eq!(moves.len(), loads[2]);
        let mut after = [loads[0], loads[1]];
        for to in moves.values() {
            after[two.members().binary_search(to).unwrap()] += 1;
        }
        assert!(after.iter().all(|l| *l <= cap(300, 2)), "{after:?}");
    }
}
