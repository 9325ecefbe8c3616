//! What a hub reports: nodes coming and going, children starting, stopping, restarting.

use crate::node::NodeId;

/// An event seen by one hub. Child events are reported by the node where they happen.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HubEvent {
    /// A node joined this hub's cluster.
    NodeJoined {
        /// The node.
        node: NodeId,
    },
    /// The failure detector no longer hears member `node` (a crash, a pause, a split):
    /// it stays a member, its children wait, until it is heard again
    /// ([`HubEvent::NodeReachable`]) or downed ([`HubEvent::NodesDowned`]) and removed
    /// ([`HubEvent::NodeLeft`]): before a node that did not say goodbye leaves.
    NodeUnreachable {
        /// The node.
        node: NodeId,
    },
    /// Member `node`, unreachable, is heard again before it was removed.
    NodeReachable {
        /// The node.
        node: NodeId,
    },
    /// A node left: gracefully, or declared dead by the failure detector.
    NodeLeft {
        /// The node.
        node: NodeId,
        /// Whether it said goodbye.
        graceful: bool,
    },
    /// A child started on this node.
    ChildStarted {
        /// The child id.
        id: String,
        /// Its component type.
        type_name: String,
        /// This node.
        node: NodeId,
        /// Its epoch.
        epoch: u64,
    },
    /// A child stopped on this node.
    ChildStopped {
        /// The child id.
        id: String,
        /// This node.
        node: NodeId,
    },
    /// A child was restarted on this node: after its node died or left, or in place after
    /// a panic.
    ChildRestarted {
        /// The child id.
        id: String,
        /// This node.
        node: NodeId,
        /// Its new epoch.
        epoch: u64,
        /// Why.
        reason: RestartReason,
    },
    /// A child this node ran moved to another node (on a join, or when this hub shut
    /// down), with its latest state unless its type is `migration = "cold"`.
    ChildMigrated {
        /// The child id.
        id: String,
        /// This node.
        from: NodeId,
        /// Its new owner.
        to: NodeId,
        /// Its new epoch.
        epoch: u64,
    },
    /// A move failed; the child goes on here with its state.
    MigrationFailed {
        /// The child id.
        id: String,
        /// The node it was to move to.
        to: NodeId,
        /// Why.
        reason: String,
    },
    /// [`crate::Hub::drain`] finished on this node.
    DrainCompleted {
        /// Children moved away.
        moved: usize,
        /// Children that could not move.
        failed: usize,
    },
    /// A child whose node died was not restarted, as it asked
    /// ([`crate::core::entry::OnNodeDeath::StayDown`]): it is out of the registry until started
    /// again. Reported by every hub.
    ChildDown {
        /// The child id.
        id: String,
        /// The node it ran on.
        node: NodeId,
    },
    /// A replicated child's node died, and its standby on this node took over with the
    /// latest acknowledged state (`#[distributed(replicas = N)]`).
    PrimaryPromoted {
        /// The child id.
        id: String,
        /// This node, its new primary.
        node: NodeId,
        /// Its new epoch.
        epoch: u64,
        /// The node that ran it.
        from: NodeId,
    },
    /// A replicated child running on this node got a standby on `node` (it holds the
    /// child's latest state from now on).
    ReplicaAdded {
        /// The child id.
        id: String,
        /// The standby's node.
        node: NodeId,
    },
    /// A replicated child running on this node lost its standby on `node` (the node
    /// left, died, or no longer answers).
    ReplicaRemoved {
        /// The child id.
        id: String,
        /// The former standby's node.
        node: NodeId,
    },
    /// This node holds a standby copy of a replicated child from now on, kept in step
    /// by its primary (`epoch`): the passive standby's role begins. The primary's node
    /// reports [`HubEvent::ReplicaAdded`].
    StandbyStarted {
        /// The child id.
        id: String,
        /// This node.
        node: NodeId,
        /// The epoch of the primary that sent the copy.
        epoch: u64,
    },
    /// This node's standby copy of a child is gone: it was promoted (then
    /// [`HubEvent::PrimaryPromoted`] follows), the child runs here now, this node is no
    /// longer named a standby, or the child stopped.
    StandbyEnded {
        /// The child id.
        id: String,
        /// This node.
        node: NodeId,
    },
    /// A restart could not be carried out.
    ChildLost {
        /// The child id.
        id: String,
        /// Why.
        reason: String,
    },
    /// The members this node reaches make a quorum and downed `nodes`, which they could
    /// not reach (a crash, a pause, the other side of a split): their children start
    /// elsewhere once their leases must have run out.
    NodesDowned {
        /// The downed nodes.
        nodes: Vec<NodeId>,
    },
    /// This node lost its quorum (it is on the minority side of a split, or was
    /// paused): it serves no writes until it has one again (see
    /// [`Hub::is_partitioned`](crate::Hub::is_partitioned)).
    QuorumLost {
        /// This node.
        node: NodeId,
    },
    /// This node reaches a quorum again.
    QuorumRegained {
        /// This node.
        node: NodeId,
    },
    /// This node was downed by the others (it was paused, or cut off, for longer than
    /// they waited) and came back as a new incarnation: the children it ran were
    /// superseded by the copies the others took over, and were dropped without being
    /// published.
    Rejoined {
        /// The downed incarnation.
        old: NodeId,
        /// The new one.
        new: NodeId,
        /// How many children of the old one were dropped.
        dropped: usize,
    },
    /// Two instances of one id met (after a split healed, or starts that raced): one
    /// is kept, the other stopped.
    DuplicateResolved {
        /// The child id.
        id: String,
        /// The node and epoch of the instance kept.
        kept: (NodeId, u64),
        /// The node and epoch of the instance stopped.
        dropped: (NodeId, u64),
    },
    /// Under [`PartitionTolerance::Divergence`](crate::PartitionTolerance), the state of
    /// a duplicate stopped (reported by [`HubEvent::DuplicateResolved`] first) was
    /// merged into the instance kept by its `#[on_conflict]` method, or, with `error`,
    /// could not be: then what the dropped instance did is lost.
    DuplicateMerged {
        /// The child id.
        id: String,
        /// The node of the instance kept, where the merge ran.
        into: NodeId,
        /// The node of the instance dropped.
        from: NodeId,
        /// Why the merge did not happen; `None` when it did.
        error: Option<String>,
    },
    /// A peer did not prove it holds the cluster key (a wrong key, no key, or not a
    /// hub at all): its connection was closed before anything else was read from it,
    /// or sent to it.
    Unauthenticated {
        /// Where it connected from, or the address this node dialed.
        addr: std::net::SocketAddr,
        /// Whether this node dialed it (its proof was wrong, or it refused ours),
        /// rather than accepted it.
        dialed: bool,
    },
    /// A hook handler panicked (see [`Hooks`](crate::Hooks)); the handlers after it ran.
    HookPanicked {
        /// The point it was registered for.
        point: crate::HookPoint,
        /// The handler.
        hook: crate::HookId,
        /// The panic message.
        message: String,
    },
    // Added with the hook points of the registry, moves and shutdown.
    /// This node's registry has `id` on `owner` at `epoch` from now on: a new child, or
    /// one moved or restarted (confirmed by its new owner). Reported by every node, only
    /// while a handler is registered for [`HookPoint::ChildRegistered`] or
    /// [`HookPoint::ChildUnregistered`](crate::HookPoint) (a registry of millions would
    /// otherwise report millions of events nobody reads).
    ///
    /// [`HookPoint::ChildRegistered`]: crate::HookPoint::ChildRegistered
    ChildRegistered {
        /// The child id.
        id: String,
        /// Its component type.
        type_name: String,
        /// The node that runs it.
        owner: NodeId,
        /// Its epoch.
        epoch: u64,
    },
    /// `id` is out of this node's registry (it stopped, or its node died and it stays
    /// down, or its node's snapshot no longer has it). Reported by every node, under
    /// the same condition as [`HubEvent::ChildRegistered`].
    ChildUnregistered {
        /// The child id.
        id: String,
        /// The node it ran on.
        owner: NodeId,
    },
    /// A child moved here from `from` (a join, a drain, a shutdown of `from`), with
    /// its state unless its type is `migration = "cold"`. `from` reports
    /// [`HubEvent::ChildMigrated`].
    ChildArrived {
        /// The child id.
        id: String,
        /// This node.
        node: NodeId,
        /// Its epoch here.
        epoch: u64,
    },
    /// Starts that reached this node were sent on to `to`, which owns them by this
    /// node's view (the caller's view differed: a member joined or left meanwhile).
    StartsForwarded {
        /// The ids.
        ids: Vec<String>,
        /// Where they went.
        to: NodeId,
    },
    /// This node begins moving `children` of its children to other nodes (a join or a
    /// leave changed the ring, a drain, a shutdown); [`HubEvent::RedistributionCompleted`]
    /// follows. Each child moved is reported by [`HubEvent::ChildMigrated`] or
    /// [`HubEvent::MigrationFailed`] in between.
    RedistributionStarted {
        /// How many children it moves.
        children: usize,
    },
    /// The moves [`HubEvent::RedistributionStarted`] announced are over.
    RedistributionCompleted {
        /// Children now on other nodes.
        moved: usize,
        /// Children that stay here (the move failed).
        failed: usize,
    },
    /// Moves of children of this node to `to` were deferred: a before-move handler
    /// ([`Hooks::before_move`](crate::Hooks::before_move)) or the child itself
    /// (`#[move_consent]`) said `Defer`. They serve here meanwhile, and move once let
    /// go or when [`max_move_deferral`](crate::HubBuilder::max_move_deferral) passed.
    MigrationDeferred {
        /// The ids.
        ids: Vec<String>,
        /// Where they are to go.
        to: NodeId,
    },
    /// This hub begins its graceful shutdown ([`Hub::shutdown`](crate::Hub::shutdown)):
    /// it hands its children over, says goodbye, then stops.
    ShuttingDown {
        /// This node.
        node: NodeId,
    },
}

/// Why a child was restarted.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RestartReason {
    /// Its node died or left; restarted from its start state.
    NodeDown {
        /// The node it ran on.
        node: NodeId,
    },
    /// It panicked while handling a call; it goes on in place with its state.
    Panicked {
        /// The panic message.
        message: String,
    },
}
