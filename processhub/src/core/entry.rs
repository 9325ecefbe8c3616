//! A registry entry: what every node knows of one child (owner, epoch, start state,
//! flags, standbys), and the rule that settles two entries of one id.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::node::NodeId;

/// One registered child, as every node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// The component type's wire name.
    pub(crate) type_name: Arc<str>,
    /// The node that runs it.
    pub(crate) owner: NodeId,
    /// Bumped on every move or restart.
    pub(crate) epoch: u64,
    /// The state it was started with, to restart it elsewhere if its node dies. Small
    /// states live inline: most are a few bytes, and a heap block would double the entry.
    pub(crate) start_state: StartState,
    /// Pinned, and whether it stays down when its node dies.
    pub(crate) flags: Flags,
    /// The nodes holding a standby copy in step with it (`replicas = N`), in the order a
    /// standby is promoted when the owner dies. Empty for most children.
    pub(crate) standbys: Standbys,
    /// Its metadata and tags (none for most children).
    pub(crate) meta: crate::metadata::Meta,
}

impl Entry {
    /// Its standbys but `node`: those a move to `node`, or a promotion of `node`, keeps.
    pub(crate) fn standbys_but(&self, node: NodeId) -> Standbys {
        let kept: Box<[NodeId]> = self
            .standbys
            .as_deref()?
            .iter()
            .copied()
            .filter(|n| *n != node)
            .collect();
        (!kept.is_empty()).then_some(kept)
    }
}

/// Standby nodes of an entry: no allocation when there are none.
pub(crate) type Standbys = Option<Box<[NodeId]>>;

/// An encoded start state: inline up to 16 bytes.
pub(crate) type StartState = smallvec::SmallVec<[u8; 16]>;

/// Whether entry `a` wins over entry `b` for the same id.
pub(crate) fn wins(a: &Entry, b: &Entry) -> bool {
    (a.epoch, a.owner) > (b.epoch, b.owner)
}

/// How the children of a component type are placed
/// (`#[distributed(distribution = "...")]`). See the `placement` module for
/// what each does when nodes join, leave and die.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Distribution {
    /// On the ring owner of the id; moves when that changes.
    #[default]
    ConsistentHash,
    /// On the node the caller names at start; stays there while it lives.
    Guided,
    /// On the node that starts it; stays there while it lives.
    Local,
    /// On a node other than the one that starts it; stays there while it lives.
    NotLocal,
    /// On the members in turn (the one with the fewest children of the type).
    RoundRobin,
    /// One instance on every member.
    EveryNode,
    /// Consistent hashing, with no node holding more than [`BOUND`] × the mean.
    BoundedLoad,
    /// A [`Strategy`](crate::placement::Strategy) of the user's.
    Custom,
}

/// The cap of `bounded_load`: no member holds more than this many times the mean number
/// of children of the type (rounded up).
pub const BOUND: f64 = 1.25;

impl Distribution {
    /// Its name in `#[distributed(distribution = "...")]`.
    pub const fn name(self) -> &'static str {
        match self {
            Distribution::ConsistentHash => "consistent_hash",
            Distribution::Guided => "guided",
            Distribution::Local => "local",
            Distribution::NotLocal => "not_local",
            Distribution::RoundRobin => "round_robin",
            Distribution::EveryNode => "every_node",
            Distribution::BoundedLoad => "bounded_load",
            Distribution::Custom => "custom",
        }
    }

    /// Its code in a registry entry's flags (6 bits; 8 codes used).
    pub(crate) const fn code(self) -> u8 {
        match self {
            Distribution::ConsistentHash => 0,
            Distribution::Guided => 1,
            Distribution::Local => 2,
            Distribution::NotLocal => 3,
            Distribution::RoundRobin => 4,
            Distribution::EveryNode => 5,
            Distribution::BoundedLoad => 6,
            Distribution::Custom => 7,
        }
    }

    pub(crate) const fn from_code(code: u8) -> Self {
        match code {
            1 => Distribution::Guided,
            2 => Distribution::Local,
            3 => Distribution::NotLocal,
            4 => Distribution::RoundRobin,
            5 => Distribution::EveryNode,
            6 => Distribution::BoundedLoad,
            7 => Distribution::Custom,
            _ => Distribution::ConsistentHash,
        }
    }

    /// Placed once at start, then kept on its node while that node lives.
    pub(crate) const fn placed_once(self) -> bool {
        matches!(
            self,
            Distribution::Guided
                | Distribution::Local
                | Distribution::NotLocal
                | Distribution::RoundRobin
        )
    }

    /// Whether placing it needs the number of children of its type on each member.
    pub(crate) const fn needs_loads(self) -> bool {
        matches!(
            self,
            Distribution::RoundRobin | Distribution::BoundedLoad | Distribution::Custom
        )
    }
}

impl std::fmt::Display for Distribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a child is placed, kept in its registry entry on every node: pinned (bit 0),
/// stays down (bit 1), its type's distribution strategy (bits 2 to 7: 64 codes, 8 used).
///
/// A `u16` on the wire (a postcard varint): every value below 128 encodes as the one
/// byte the earlier `u8` did, so the registry format is unchanged for the flags in use,
/// and there is room for strategies and flags to come.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Flags(u16);

impl Flags {
    const PINNED: u16 = 1;
    const STAY_DOWN: u16 = 2;
    const DISTRIBUTION_SHIFT: u16 = 2;
    const DISTRIBUTION_MASK: u16 = 0x3f;

    pub(crate) fn new(pinned: bool, stay_down: bool) -> Self {
        Self(if pinned { Self::PINNED } else { 0 } | if stay_down { Self::STAY_DOWN } else { 0 })
    }

    /// Stays on its node while that node lives.
    pub(crate) fn pinned(self) -> bool {
        self.0 & Self::PINNED != 0
    }

    /// Not restarted when its node dies.
    pub(crate) fn stay_down(self) -> bool {
        self.0 & Self::STAY_DOWN != 0
    }

    /// With its type's distribution strategy (bits 2 to 7).
    pub(crate) fn with_distribution(self, kind: Distribution) -> Self {
        let shift = Self::DISTRIBUTION_SHIFT;
        Self(self.0 & !(Self::DISTRIBUTION_MASK << shift) | u16::from(kind.code()) << shift)
    }

    /// Its type's distribution strategy.
    pub(crate) fn distribution(self) -> Distribution {
        Distribution::from_code(
            (self.0 >> Self::DISTRIBUTION_SHIFT & Self::DISTRIBUTION_MASK) as u8,
        )
    }
}

/// What happens to a child when its node dies (is declared dead by the failure
/// detector). A graceful leave is not a death: see `Hub::shutdown`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OnNodeDeath {
    /// Restarted on its new owner on the ring, from its start state (the default).
    #[default]
    Restart,
    /// Not restarted: every hub drops it from its registry and reports
    /// `HubEvent::ChildDown`. Starting it again brings it back. For children
    /// bound to their node (a device, a local file), usually together with `pinned`.
    StayDown,
}

/// The role of an instance of a replicated child (`#[distributed(replicas = N)]`), told
/// to its `#[on_role_change]` hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// It serves the child's calls, and (active/passive) keeps the standbys in step.
    Primary,
    /// An active/active replica: it serves the calls of its node on its own.
    Replica,
}

/// A running instance's epoch: one number, kept in the instance's context, set by the
/// engine (a start, a promotion in place, a rolled-back move) and read by the instance
/// (its events, its shipments), so the two never drift. Inline: no allocation of its
/// own.
#[derive(Debug, Default)]
pub(crate) struct EpochCell(std::sync::atomic::AtomicU64);

impl EpochCell {
    pub(crate) fn new(epoch: u64) -> Self {
        Self(std::sync::atomic::AtomicU64::new(epoch))
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn set(&self, epoch: u64) {
        self.0.store(epoch, std::sync::atomic::Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_in_use_encode_as_the_one_byte_they_always_did() {
        let kinds = [
            Distribution::ConsistentHash,
            Distribution::Guided,
            Distribution::Local,
            Distribution::NotLocal,
            Distribution::RoundRobin,
            Distribution::EveryNode,
            Distribution::BoundedLoad,
            Distribution::Custom,
        ];
        for kind in kinds {
            for (pinned, stay_down) in [(false, false), (true, false), (false, true), (true, true)]
            {
                let flags = Flags::new(pinned, stay_down).with_distribution(kind);
                let old = u8::from(pinned) | u8::from(stay_down) << 1 | kind.code() << 2;
                assert_eq!(
                    postcard::to_allocvec(&flags).unwrap(),
                    vec![old],
                    "{kind:?}"
                );
                assert_eq!(postcard::from_bytes::<Flags>(&[old]).unwrap(), flags);
                assert_eq!(
                    (flags.pinned(), flags.stay_down(), flags.distribution()),
                    (pinned, stay_down, kind)
                );
            }
        }
    }
}
