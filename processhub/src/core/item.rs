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
}
