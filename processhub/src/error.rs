//! Errors, one enum per API surface. Each variant says whether state changed and whether
//! a retry is safe.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::node::NodeId;

/// Why a call through a handle failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CallError {
    /// No component runs under this id (never started, or stopped). Nothing changed.
    #[error("no component with id {id:?}")]
    NotFound {
        /// The id called.
        id: String,
    },
    /// The id runs a component of another type. Nothing changed.
    #[error("{id:?} is a {actual}, not a {expected}")]
    WrongType {
        /// The id called.
        id: String,
        /// The type of the handle.
        expected: String,
        /// The type that runs under the id.
        actual: String,
    },
    /// The owner does not know this method (a binary built from other code). Nothing changed.
    #[error("{type_name} has no method {method:?} on the node that runs it")]
    UnknownMethod {
        /// The component type.
        type_name: String,
        /// The method called.
        method: String,
    },
    /// The method panicked. The component keeps running with the state the panic left,
    /// and a `ChildRestarted` event reports it; retrying runs the method again.
    #[error("{id:?} panicked while handling the call: {message}")]
    Panicked {
        /// The id called.
        id: String,
        /// The panic message.
        message: String,
    },
    /// No answer within the call's deadline. The call may or may not have been applied.
    #[error("call to {id:?} timed out after {after:?}")]
    Timeout {
        /// The id called.
        id: String,
        /// The deadline.
        after: Duration,
    },
    /// The connection to the owner closed while a write was in flight (or, under
    /// [`PartitionTolerance::Divergence`](crate::PartitionTolerance), its node was
    /// downed: it may live on across a split): it may or may not have been applied, so
    /// it is not retried automatically. (Reads are retried, and so
    /// are writes to children with `replicas > 1`, `sync = "sync"`, active/passive: their
    /// standbys know the writes they hold, so a retry is applied once.)
    #[error("connection to {node} lost while calling {id:?}; the call may have been applied")]
    ConnectionLost {
        /// The id called.
        id: String,
        /// The node that ran it.
        node: NodeId,
    },
    /// The arguments or the reply could not be encoded or decoded. Nothing was applied
    /// when it happens on the way in.
    #[error("could not encode or decode the call: {message}")]
    Codec {
        /// What the codec said.
        message: String,
    },
    /// The encoded call is larger than the hub's frame limit. Nothing was sent.
    #[error("message of {size} bytes exceeds the frame limit of {max} bytes")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The hub has shut down.
    #[error("the hub has shut down")]
    HubStopped,
    // Appended: the variants above keep their bytes on the wire.
    /// The node that runs the component is on a side of a split without a quorum, or
    /// was paused past its lease and no quorum has confirmed it since (see
    /// [`PartitionTolerance`](crate::PartitionTolerance)): it serves nothing until it
    /// has one. Retryable: try again later, or from the other side. A call refused
    /// before its method ran changed nothing; one whose node lost its quorum while the
    /// method ran is not acknowledged, and its effect lives only in that fenced
    /// instance (dropped if the node is downed, kept if the split heals first).
    #[error("no quorum: the node serving the call is cut off from most of its cluster")]
    NoQuorum,
    /// A write to a replicated `sync` component did not reach every standby within the
    /// call's deadline (a standby's node is unreachable and was not replaced in time).
    /// Not acknowledged: it was applied on the primary and maybe some standbys, and a
    /// standby that lacks it may yet take over. Retry: a retry of the same handle call is
    /// a new write.
    #[error("the write to {id:?} did not reach every standby in time; not acknowledged")]
    NotReplicated {
        /// The id called.
        id: String,
    },
}

impl CallError {
    /// The variant's name in snake case (`not_found`, `timeout`, ...), as the
    /// `outcome` label of the call metrics gives it.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::NotFound { .. } => "not_found",
            CallError::WrongType { .. } => "wrong_type",
            CallError::UnknownMethod { .. } => "unknown_method",
            CallError::Panicked { .. } => "panicked",
            CallError::Timeout { .. } => "timeout",
            CallError::ConnectionLost { .. } => "connection_lost",
            CallError::Codec { .. } => "codec",
            CallError::TooLarge { .. } => "too_large",
            CallError::HubStopped => "hub_stopped",
            CallError::NoQuorum => "no_quorum",
            CallError::NotReplicated { .. } => "not_replicated",
        }
    }
}

/// Why a start failed. Nothing was started unless the variant says otherwise.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Ids must not be empty.
    #[error("a component id must not be empty")]
    EmptyId,
    /// The id is longer than [`MAX_ID_LEN`](crate::MAX_ID_LEN) bytes (every node holds
    /// every id in its registry, and pushes carry them).
    #[error("a component id may have at most {max} bytes, this one has {len}")]
    IdTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The id runs already (decided by its owner). The running one is untouched.
    #[error("{id:?} is already started on {node}")]
    AlreadyStarted {
        /// The id.
        id: String,
        /// Where it runs.
        node: NodeId,
    },
    /// The owner's binary has no component type of that name.
    #[error(
        "node {node} cannot host component type {type_name}: it is not linked into its binary"
    )]
    UnknownType {
        /// The type asked for.
        type_name: String,
        /// The node that refused.
        node: NodeId,
    },
    /// The state could not be encoded here, or decoded on the node that was to run it.
    #[error("could not encode or decode the start state: {message}")]
    Codec {
        /// What the codec said.
        message: String,
    },
    /// The encoded start state is larger than half the frame limit (start states are
    /// kept in every node's registry, to restart a child whose node dies). Start small
    /// and grow the state with calls: a state of any size moves (in parts).
    #[error("start state of {size} bytes exceeds the limit of {max} bytes (half the frame size: every node keeps start states)")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// No confirmation within the deadline; the component may have started.
    #[error("start of {id:?} timed out after {after:?}; it may have started")]
    Timeout {
        /// The id.
        id: String,
        /// The deadline.
        after: Duration,
    },
    /// The type's distribution strategy could not place it: a `guided` start without a
    /// node or with a node that is not a live member, a node named for a type that is
    /// not `guided`, a custom strategy that chose no member.
    #[error("cannot place {id:?}: {reason}")]
    Placement {
        /// The id.
        id: String,
        /// What the strategy said.
        reason: String,
    },
    /// A hook of the component panicked as it started there (`#[on_start]`, or
    /// `#[on_role_change]` for a replicated type). Nothing started; retrying runs the
    /// hook again.
    #[error("{id:?} did not start on {node}: {message}")]
    Hook {
        /// The id.
        id: String,
        /// The node that ran the hook.
        node: NodeId,
        /// What the hook's panic said.
        message: String,
    },
    /// The node that was to run it could not be reached, was shutting down, or the
    /// connection to it closed before it answered (then it may have started).
    #[error("could not start {id:?} on {node}: {reason}")]
    Unreachable {
        /// The id.
        id: String,
        /// The node that was to run it.
        node: NodeId,
        /// What happened.
        reason: String,
    },
    /// The hub has shut down.
    #[error("the hub has shut down")]
    HubStopped,
    // Appended: the variants above keep their bytes on the wire.
    /// The node that was to run it reaches no quorum of its cluster (it is on the
    /// minority side of a split, or was downed): nothing started. Retryable.
    #[error("no quorum on {node} to start {id:?}: it is cut off from most of its cluster")]
    NoQuorum {
        /// The id.
        id: String,
        /// The node that was to run it.
        node: NodeId,
    },
    /// A before-start hook handler refused the start
    /// ([`Hooks::before_start`](crate::Hooks::before_start)): nothing started.
    #[error("the start of {id:?} was refused by a hook: {reason}")]
    Refused {
        /// The id.
        id: String,
        /// What the handler said.
        reason: String,
    },
    /// Another start of the same id, on another node, was still under way after a few
    /// tries (starts of one id raced while the members changed): nothing started here.
    /// Retry: the answer is then where it runs.
    #[error("another start of {id:?} is under way on {node}; nothing started")]
    Contended {
        /// The id.
        id: String,
        /// The node whose start of it is under way.
        node: NodeId,
    },
    /// The metadata given at start (or left by a before-start hook) is over
    /// [`MAX_METADATA`](crate::MAX_METADATA) bytes encoded: nothing started.
    #[error("the metadata of {id:?} takes {size} bytes, over the limit of {max}")]
    MetadataTooLarge {
        /// The id.
        id: String,
        /// Its size encoded.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// Why a stop failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StopError {
    /// No component runs under this id. Nothing changed.
    #[error("no component with id {id:?}")]
    NotFound {
        /// The id.
        id: String,
    },
    /// The id runs a component of another type. Nothing changed.
    #[error("{id:?} is a {actual}, not a {expected}")]
    WrongType {
        /// The id.
        id: String,
        /// The type asked to stop.
        expected: String,
        /// The type that runs.
        actual: String,
    },
    /// No confirmation within the deadline; it may have stopped.
    #[error("stop of {id:?} timed out after {after:?}")]
    Timeout {
        /// The id.
        id: String,
        /// The deadline.
        after: Duration,
    },
    /// The hub has shut down.
    #[error("the hub has shut down")]
    HubStopped,
    // Appended.
    /// The node that runs it reaches no quorum of its cluster (the minority side of a
    /// split): nothing stopped. Retryable.
    #[error("no quorum on {node} to stop {id:?}: it is cut off from most of its cluster")]
    NoQuorum {
        /// The id.
        id: String,
        /// The node that runs it.
        node: NodeId,
    },
    /// A before-stop hook handler refused the stop
    /// ([`Hooks::before_stop`](crate::Hooks::before_stop)): nothing stopped.
    #[error("the stop of {id:?} was refused by a hook: {reason}")]
    Refused {
        /// The id.
        id: String,
        /// What the handler said.
        reason: String,
    },
}

/// Why a hub could not start or shut down.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The hub id is empty.
    #[error("a hub id must not be empty")]
    EmptyHubId,
    /// A listen or seed address does not parse.
    #[error("invalid address {addr:?}: {message}")]
    InvalidAddress {
        /// The text given.
        addr: String,
        /// Why it is invalid.
        message: String,
    },
    /// Binding the listen address failed.
    #[error("could not bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The hub has shut down.
    #[error("the hub has shut down")]
    Stopped,
    /// The membership layer (chitchat) failed.
    #[error("membership: {0}")]
    Membership(String),
    /// Seeds were given and none answered within the join timeout (nothing listens
    /// there, the name does not resolve, or another cluster's hub id): the hub did not
    /// start, rather than start a cluster of its own.
    #[error("no seed answered within {waited:?} (seeds: {seeds:?})")]
    NoSeedReachable {
        /// The seeds given.
        seeds: Vec<String>,
        /// How long the hub waited.
        waited: std::time::Duration,
    },
    /// Seeds were reached, but they refused this hub's proofs (in gossip or in the
    /// handshake): its cluster key is not theirs (or it has none and they have one), or
    /// its hub id is not theirs (both are in every proof). The hub did not start.
    #[error(
        "the seeds refused this hub: another cluster key, or another hub id (seeds: {seeds:?})"
    )]
    ClusterKeyRefused {
        /// The seeds given.
        seeds: Vec<String>,
    },
    /// The seeds were reached, but a TLS handshake with them failed: this hub's
    /// certificate is not trusted by their roots, theirs not by this hub's, or one of
    /// them does not use TLS (see [`Tls`](crate::Tls)). The hub did not start.
    #[error("TLS with the seeds failed: {reason} (seeds: {seeds:?})")]
    TlsRefused {
        /// The seeds given.
        seeds: Vec<String>,
        /// What the last failed handshake said.
        reason: String,
    },
    /// The hub listens on an address other machines can reach, and has no cluster key:
    /// anyone who knows the hub id could join, call, start and stop components. Set a
    /// key ([`HubBuilder::cluster_key`](crate::HubBuilder::cluster_key) or the
    /// `PROCESSHUB_CLUSTER_KEY` environment variable), or say
    /// [`HubBuilder::insecure`](crate::HubBuilder::insecure) for a network you trust.
    #[error(
        "no cluster key, and {addr} is reachable from other machines: set a key \
         (HubBuilder::cluster_key or PROCESSHUB_CLUSTER_KEY) or call HubBuilder::insecure()"
    )]
    NoClusterKey {
        /// The listen address.
        addr: String,
    },
    /// A cluster key shorter than [`MIN_CLUSTER_KEY`](crate::MIN_CLUSTER_KEY) bytes.
    #[error("a cluster key must have at least {min} bytes, this one has {len}")]
    WeakClusterKey {
        /// Its length.
        len: usize,
        /// The least accepted.
        min: usize,
    },
}
