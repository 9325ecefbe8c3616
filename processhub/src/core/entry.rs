//! A registry entry: what every node knows of one child (owner, epoch, start state,
//! flags, standbys), and the rule that settles two entries of one id.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::core::placement::Distribution;
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

/// How a child is placed, kept in its registry entry on every node (a byte).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Flags(u8);

impl Flags {
    const PINNED: u8 = 1;
    const STAY_DOWN: u8 = 2;
    const DISTRIBUTION_SHIFT: u8 = 2;

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

    /// With its type's distribution strategy (bits 2 to 4).
    pub(crate) fn with_distribution(self, kind: Distribution) -> Self {
        Self(self.0 & !(7 << Self::DISTRIBUTION_SHIFT) | kind.code() << Self::DISTRIBUTION_SHIFT)
    }

    /// Its type's distribution strategy.
    pub(crate) fn distribution(self) -> Distribution {
        Distribution::from_code(self.0 >> Self::DISTRIBUTION_SHIFT)
    }
}
