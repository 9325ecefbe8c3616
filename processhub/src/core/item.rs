//! What a start carries (a new child, a moved one, a restart) and what became of it, and
//! what became of a stop: the engine decides both, the wire carries them.

use serde::{Deserialize, Serialize};

use crate::core::entry::Flags;
use crate::core::recent::WireCalls;
use crate::node::NodeId;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StartItem {
    pub(crate) id: String,
    pub(crate) type_name: String,
    #[serde(with = "serde_bytes")]
    pub(crate) state: Vec<u8>,
    /// 0 for a new child; otherwise the epoch of a child moved here.
    pub(crate) epoch: u64,
    /// For a moved child, the state it was first started with (for restarts after a
    /// node death); `None` when it is `state`.
    pub(crate) start_state: Option<serde_bytes::ByteBuf>,
    /// Pinned, and whether it stays down when its node dies.
    pub(crate) flags: Flags,
    /// For a new child placed by its strategy rather than the ring: the node it starts
    /// on (that node takes it without looking at the ring).
    pub(crate) node: Option<NodeId>,
    /// For a moved replicated child: the replies of its latest identified writes.
    pub(crate) recent: WireCalls,
    /// Its metadata and tags (given at start; kept when it moves or restarts).
    pub(crate) meta: crate::metadata::Meta,
}

/// What became of a metadata update, decided by the node asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum MetaOutcome {
    /// Set, and published.
    Updated,
    /// The child runs on `owner`.
    NotHere { owner: NodeId },
    /// No such child.
    NotFound,
    /// It is starting, restarting or moving here: ask again.
    Busy,
    /// The node reaches no quorum.
    NoQuorum,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StartOutcome {
    Started {
        node: NodeId,
        epoch: u64,
    },
    AlreadyStarted {
        node: NodeId,
    },
    UnknownType {
        node: NodeId,
    },
    /// The receiver is not the owner and could not forward (hop limit, owner unreachable).
    Failed {
        message: String,
    },
    // Appended: the variants above keep their bytes on the wire.
    /// The state did not decode on the node that was to run it; nothing started.
    BadState {
        node: NodeId,
        message: String,
    },
    /// A hook of the component panicked as it started (`#[on_start]`,
    /// `#[on_handover_in]`, `#[on_role_change]`); nothing started.
    HookPanicked {
        node: NodeId,
        message: String,
    },
    /// The node that was to run it is shutting down; nothing started.
    ShuttingDown {
        node: NodeId,
    },
    /// The node that was to run it could not be reached, or the connection closed
    /// before it answered (then it may have started). Made by the caller, never sent.
    Unreachable {
        node: NodeId,
        message: String,
    },
    /// No answer within the deadline; it may have started. Made by the caller, never
    /// sent.
    TimedOut,
    /// The node that was to run it reaches no quorum of its cluster (or was downed);
    /// nothing started.
    NoQuorum {
        node: NodeId,
    },
    /// Another node's start of the id is under way (`node` holds it, or was granted
    /// it); nothing started. The node that refused tried again a few times first.
    Contended {
        node: NodeId,
    },
}

/// A peer's answer to a claim of a new id (see [`crate::core::engine`]'s `claim`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ClaimAnswer {
    /// Granted: the peer takes no other start of the id until the claimant's entry
    /// arrives, the claimant lets it go, or the grant ages out.
    Granted,
    /// The id runs on `node` (by this peer's registry).
    Started(NodeId),
    /// A start of the id is under way on `node`, or was granted to it.
    Pending(NodeId),
    /// The peer takes no part (it was downed, or is leaving): not counted.
    Abstain,
}

/// Why the instance of an admitted start could not be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StartFailure {
    /// This binary has no component type of that name.
    UnknownType,
    /// The state did not decode.
    State(String),
    /// A hook panicked (`#[on_start]`, `#[on_handover_in]`, `#[on_role_change]`).
    Hook(String),
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartFailure::UnknownType => f.write_str("unknown component type"),
            StartFailure::State(m) | StartFailure::Hook(m) => f.write_str(m),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StopOutcome {
    Stopped,
    NotFound,
    /// The receiver does not run it; its registry says `owner` does.
    NotHere {
        owner: NodeId,
    },
    WrongType {
        actual: String,
    },
    /// The child is on its way to another node: stopping it here now would let the
    /// hand-over bring it back there. Ask again once the move has ended.
    Moving,
    /// The receiver reaches no quorum: a stop there could be undone by the side that
    /// has one (which may take the child over). Nothing stopped.
    NoQuorum {
        node: NodeId,
    },
}
