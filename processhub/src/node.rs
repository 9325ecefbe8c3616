//! Node identity: the address a hub listens on plus the incarnation of the process.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// One life of one hub: its listen address and an incarnation number chosen at start.
///
/// A hub that restarts on the same address gets a new incarnation, so calls and
/// connections meant for its previous life are refused instead of delivered.
///
/// ```
/// use processhub::NodeId;
/// let n = NodeId::new("127.0.0.1:7000".parse().unwrap(), 42);
/// assert_eq!(n.to_string(), "127.0.0.1:7000#42");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId {
    addr: SocketAddr,
    incarnation: u64,
}

impl NodeId {
    /// A node id from its address and incarnation.
    pub fn new(addr: SocketAddr, incarnation: u64) -> Self {
        Self { addr, incarnation }
    }

    /// The address the node listens on (TCP for calls, UDP for gossip).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The incarnation: distinct for every start of a hub.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.addr, self.incarnation)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
