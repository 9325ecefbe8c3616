//! The engine: one node's state and every decision it makes, as synchronous code.
//!
//! The hub feeds it events (a start arrived, a registry push came in, the members
//! changed, a move ended, a shipment was taken) and runs what it decides. Nothing here
//! awaits, spawns, reads a clock or touches a socket; time comes in as a value, and the
//! shell's handle on a running child is a type parameter, so tests drive the engine with
//! plain values and assert its exact output.
//!
//! ```text
//!   events ──► Engine::{admit, started, push, gossip, replan, move_done, shipped, ..}
//!                 │  (state: registry, view, local children, standby copies, moves)
//!                 ▼
//!              Output { pushes, effects, events }
//!                 │
//!   hub:  pushes ─► broadcast, under the engine's lock (peers see changes in order)
//!         effects ─► stop / restart / move / resync / role hook / peers, after the lock
//!         events ─► HubEvent subscribers, after the lock
//! ```
//!
//! The decisions are grouped by concern, each in a file of its own that borrows the same
//! state: `start` (admission, reservation, supersede), `claims` (a new id asked of
//! the other members before its start is acknowledged), `push` (which copy wins),
//! `plan` (membership changes, restarts, promotion), `moves` (hand-over lists, outcomes,
//! rollback epochs), `replicas` (standby choice, standby sets, copies).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::core::downing::{Downing, SafetyConfig};
use crate::core::entry::{Entry, Role};
use crate::core::placement::{Distribution, TypePlacement};
use crate::core::recent::RecentCalls;
use crate::core::registry::{Change, Push, Registry};
use crate::core::ring::Ring;
use crate::core::view::ClusterView;
use crate::events::HubEvent;
use crate::node::NodeId;

mod claims;
mod meta;
mod moves;
mod plan;
mod push;
mod replicas;
mod salvage;
mod start;
#[cfg(any(test, feature = "fuzzing"))]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

pub(crate) use claims::Tally;
pub(crate) use moves::Move;
pub(crate) use replicas::{Kept, ShipPlan};
pub(crate) use salvage::{Salvaged, FETCH_WAIT, PRIMARY_STATE};

pub(crate) use start::MAX_HOPS;

/// A fixed hasher: the engine's maps iterate in the same order in every run (the
/// simulator replays a seed exactly), and lookups stay fast.
pub(crate) type Fixed = foldhash::fast::FixedState;

/// What the engine needs of the shell's handle on a running child.
pub(crate) trait ChildHandle: Clone {
    /// Its component type's wire name.
    fn type_name(&self) -> &str;
    /// Whether it has been called since it started here.
    fn was_called(&self) -> bool;
    /// Its epoch changed (a promotion in place, a rolled-back move): the instance reads
    /// its epoch from the engine's one number.
    fn set_epoch(&self, epoch: u64);
}

/// What the engine knows of a component type: from the type table of the binary, or a
/// test's own.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TypeInfo {
    /// Copies kept of each child, the primary included.
    pub(crate) replicas: usize,
    /// Every replica runs and answers calls (`replication = "active_active"`).
    pub(crate) active_active: bool,
    /// How its children are placed.
    pub(crate) placement: TypePlacement,
    /// It merges a duplicate's state (`#[on_conflict]`).
    pub(crate) merges: bool,
}

/// The type table: the component types this binary can host.
pub(crate) type Types = fn(&str) -> Option<TypeInfo>;

/// A child running here.
#[derive(Clone, Debug)]
pub(crate) struct LocalChild<C> {
    pub(crate) child: C,
    /// The epoch it runs under here: the one number every other copy of it (the
    /// registry entry this node publishes, the instance's own) is derived from.
    pub(crate) epoch: u64,
    /// Restarted here from its start state after its node died or left.
    pub(crate) restarted: bool,
    /// An active/active replica: it serves calls here, while the registry names the
    /// child's primary elsewhere.
    pub(crate) replica: bool,
}

/// The latest state of a replicated child, kept for its primary.
#[derive(Clone, Debug)]
pub(crate) struct StandbyCopy {
    /// (epoch, shipment) of the primary that sent it.
    pub(crate) version: (u64, u64),
    pub(crate) state: Vec<u8>,
    /// The writes shipped as calls since `state` (`ship = "calls"`), in order: the
    /// copy is `state` with these replayed.
    pub(crate) calls: Vec<LoggedCall>,
    /// The replies of the primary's latest identified writes.
    pub(crate) recent: RecentCalls,
}

/// Standby copies, by id.
pub(crate) type Copies = Vec<(Arc<str>, StandbyCopy)>;

/// A child of a node that was downed, as it rejoins ([`Engine::take_for_rejoin`]).
#[derive(Debug)]
pub(crate) struct Superseded<C> {
    pub(crate) id: Arc<str>,
    pub(crate) child: C,
    /// The epoch it ran under.
    pub(crate) epoch: u64,
    /// Its state is kept as salvage: the primary of a child whose type keeps copies.
    pub(crate) salvage: bool,
}

/// A write shipped as its call (`ship = "calls"`): replayed on the copy's state when it
/// is used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LoggedCall {
    pub(crate) method: String,
    pub(crate) args: Vec<u8>,
}

/// The most calls a standby copy holds past its state: beyond, it asks for the state.
pub(crate) const MAX_LOGGED_CALLS: usize = 1024;
/// The most bytes of calls a standby copy holds past its state, besides a state as
/// large (the primary ships the state again first; this bounds a copy's memory).
pub(crate) const MAX_LOGGED_BYTES: usize = 64 * 1024;

/// What the shell must do, in order, after the engine decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Effect<C> {
    /// Keep connections to exactly these members (the membership changed).
    Peers(Vec<NodeId>),
    /// Stop this instance here: a duplicate whose copy elsewhere won, an active replica
    /// its primary no longer names, a restarted copy a hand-over replaced. `report`:
    /// emit `ChildStopped` once it has stopped.
    Stop {
        id: Arc<str>,
        child: C,
        report: bool,
    },
    /// Stop this instance, a duplicate that lost after a split healed under
    /// `Divergence`, and merge its state into the instance kept
    /// (`#[on_conflict]`), which runs on `into`.
    Merge {
        id: Arc<str>,
        child: C,
        into: NodeId,
    },
    /// Start `id` here under `epoch`: its node `from` died or left (see
    /// [`Engine::restart`]).
    Restart {
        id: String,
        epoch: u64,
        from: NodeId,
    },
    /// Move these children of this node to their new owners: (id, to, epoch there).
    Move(Vec<(String, NodeId, u64)>),
    /// Bring this primary's standby set in line with the ring (it ships its state).
    Resync { id: Arc<str>, child: C },
    /// Tell this instance its new role (`#[on_role_change]`).
    Role { child: C, role: Role },
    /// The members may have changed (a peer said it leaves or drains): refresh the view.
    Refresh,
    /// These peers died (left the view without a goodbye): the requests awaiting their
    /// answer fail now, so their callers go to the new owners instead of waiting out
    /// their timeout.
    Dead(Vec<NodeId>),
    /// This node was downed by the others: its children are superseded. The shell
    /// rejoins as a new incarnation.
    Downed,
    /// Renew the lease now: a member unreachable a moment ago is heard again, or this
    /// process was paused (the others may have downed this node meanwhile).
    Renew,
    /// Fetch the salvages of `ids` from `from` (a restart here waits for them), and
    /// hand what comes to [`Engine::salvage_fetched`].
    FetchSalvage { from: NodeId, ids: Vec<String> },
}

/// What the engine decided since the shell last took its output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Output<C> {
    /// Registry changes of this node, for every peer, in the order they happened.
    pub(crate) pushes: Vec<Push>,
    /// What the shell runs.
    pub(crate) effects: Vec<Effect<C>>,
    /// What subscribers hear.
    pub(crate) events: Vec<HubEvent>,
}

impl<C> Default for Output<C> {
    fn default() -> Self {
        Self {
            pushes: Vec::new(),
            effects: Vec::new(),
            events: Vec::new(),
        }
    }
}

impl<C> Output<C> {
    /// Publishes an entry of this node (merged with the upserts just before it).
    fn upsert(&mut self, id: &str, entry: Entry) {
        match self.pushes.last_mut() {
            Some(Push::Upsert(entries)) => entries.push((id.to_string(), entry)),
            _ => self
                .pushes
                .push(Push::Upsert(vec![(id.to_string(), entry)])),
        }
    }

    /// Publishes that a child of this node moved: `entry` names its new owner.
    fn moved(&mut self, id: &str, entry: Entry) {
        match self.pushes.last_mut() {
            Some(Push::Moved(entries)) => entries.push((id.to_string(), entry)),
            _ => self.pushes.push(Push::Moved(vec![(id.to_string(), entry)])),
        }
    }

    /// Publishes the removal of an entry of this node.
    fn remove(&mut self, id: &str, epoch: u64) {
        match self.pushes.last_mut() {
            Some(Push::Remove(ids)) => ids.push((id.to_string(), epoch)),
            _ => self
                .pushes
                .push(Push::Remove(vec![(id.to_string(), epoch)])),
        }
    }
}

/// Where a call for an id goes now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Route<C> {
    /// It runs here.
    Local(C),
    /// Registered here but not running yet (a restart under way) or just stopped.
    LocalMissing { pending: bool },
    /// It runs on that node (or the ring places it there).
    Remote(NodeId),
}

/// The answer for a child this node does not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Missing {
    /// The registry says that node runs it.
    NotHere(NodeId),
    /// This node is restarting it: try again in a moment.
    Restarting,
    /// Nothing runs under the id.
    NotFound,
}

/// One node's state and decisions. `C` is the shell's handle on a running child.
#[derive(Debug)]
pub(crate) struct Engine<C> {
    me: NodeId,
    types: Types,
    /// Whether any type of the table keeps replicas (nothing to keep in step otherwise).
    any_replicated: bool,
    pub(crate) registry: Registry,
    pub(crate) view: ClusterView,
    /// Children running here.
    pub(crate) local: HashMap<Arc<str>, LocalChild<C>, Fixed>,
    /// Standby copies this node holds for replicated children running elsewhere.
    pub(crate) copies: HashMap<Arc<str>, StandbyCopy, Fixed>,
    /// Starts admitted and not finished: their id is taken.
    starting: HashSet<Arc<str>, Fixed>,
    /// Of those, the new ids claimed from peers: a start of one that fails lets the
    /// claim go.
    claimed: HashSet<Arc<str>, Fixed>,
    /// New ids this node granted to a peer's claim (see `claims`). An `IndexMap`, as
    /// the registry's entries: a burst of claims grows it by whole megabytes, and its
    /// vector grows and shrinks in place (see `core::registry`).
    claims: indexmap::IndexMap<Arc<str>, claims::Grant, Fixed>,
    /// Children on their way to another node.
    moving: HashSet<Arc<str>, Fixed>,
    /// Replicated children whose standby set is being remade.
    resyncing: HashSet<Arc<str>, Fixed>,
    /// A started replicated child waits for its standbys.
    resync_due: bool,
    /// This node is leaving (or was killed): it plans nothing more.
    leaving: bool,
    /// Something changed since the last plan (the planner's timer skips a plan
    /// otherwise: an idle cluster walks no registry).
    dirty: bool,
    /// The entries pending at the last plan (id, owner, epoch).
    pending_last: Vec<(Arc<str>, NodeId, u64)>,
    /// Snapshots arriving in parts, per sender.
    snapshots: BTreeMap<NodeId, Vec<(String, Entry)>>,
    /// The peers whose whole snapshot has arrived (their registry is in ours).
    synced: std::collections::BTreeSet<NodeId>,
    /// Who is downed, the quorum, the time.
    pub(crate) downing: Downing,
    /// This node heard that it was downed: it decides nothing more.
    downed: bool,
    /// The peers that said they downed this node (a quorum of them supersedes it).
    downed_me_by: std::collections::BTreeSet<NodeId>,
    /// Whether the members it reached made a quorum at the last refresh.
    quorate: bool,
    /// The members the failure detector did not hear at the last refresh (sorted): a
    /// change is reported (`NodeUnreachable`, `NodeReachable`).
    unreachable: Vec<NodeId>,
    /// The peers the shell was last told to keep connections to.
    peers: Vec<NodeId>,
    /// A rejoined node's engine (see [`Self::is_syncing`]).
    rejoined: bool,
    /// What this node kept of its former life, and what peers kept of theirs (see
    /// `salvage`).
    salvage: salvage::Salvage,
    out: Output<C>,
}

impl<C: ChildHandle> Engine<C> {
    /// The engine of node `me`, hosting the types of `types`, downing by `safety`, at
    /// time `now`.
    pub(crate) fn new(
        me: NodeId,
        types: Types,
        any_replicated: bool,
        safety: SafetyConfig,
        now: std::time::Instant,
    ) -> Self {
        Self {
            me,
            types,
            any_replicated,
            registry: Registry::default(),
            view: ClusterView::new(me),
            local: HashMap::default(),
            copies: HashMap::default(),
            starting: HashSet::default(),
            claimed: HashSet::default(),
            claims: Default::default(),
            moving: HashSet::default(),
            resyncing: HashSet::default(),
            resync_due: false,
            leaving: false,
            dirty: true,
            pending_last: Vec::new(),
            snapshots: BTreeMap::new(),
            synced: Default::default(),
            downing: Downing::new(me, safety, now),
            downed: false,
            downed_me_by: Default::default(),
            quorate: true,
            unreachable: Vec::new(),
            peers: Vec::new(),
            rejoined: false,
            salvage: Default::default(),
            out: Output::default(),
        }
    }

    /// The time now, passed in before every decision.
    pub(crate) fn set_now(&mut self, now: std::time::Instant) {
        self.downing.set_now(now);
    }

    /// This node leaves the cluster (or was killed): from now on it plans nothing (the
    /// others take over what it ran).
    pub(crate) fn leave(&mut self) {
        self.leaving = true;
    }

    /// What was decided since the last call.
    pub(crate) fn take_output(&mut self) -> Output<C> {
        for change in self.registry.take_changes() {
            self.out.events.push(match change {
                Change::Registered {
                    id,
                    type_name,
                    owner,
                    epoch,
                } => HubEvent::ChildRegistered {
                    id: id.to_string(),
                    type_name: type_name.to_string(),
                    owner,
                    epoch,
                },
                Change::Unregistered { id, owner } => HubEvent::ChildUnregistered {
                    id: id.to_string(),
                    owner,
                },
            });
        }
        std::mem::take(&mut self.out)
    }

    fn info(&self, type_name: &str) -> Option<TypeInfo> {
        (self.types)(type_name)
    }

    /// Copies kept of each child of this type (1 if the type is unknown here).
    /// This node.
    pub(crate) fn me(&self) -> NodeId {
        self.me
    }

    pub(crate) fn replicas_of(&self, type_name: &str) -> usize {
        self.info(type_name).map_or(1, |t| t.replicas)
    }

    fn active_active(&self, type_name: &str) -> bool {
        self.info(type_name).is_some_and(|t| t.active_active)
    }

    fn merges(&self, type_name: &str) -> bool {
        self.info(type_name).is_some_and(|t| t.merges)
    }

    /// Where a call for `id` goes now.
    pub(crate) fn route(&self, id: &str) -> Route<C> {
        if let Some(l) = self.local.get(id) {
            return Route::Local(l.child.clone());
        }
        let (target, pending) = match self.registry.get(id) {
            Some(e) => (e.owner, self.registry.pending_from(id).is_some()),
            None => (self.view.ring().owner(id).unwrap_or(self.me), false),
        };
        if target == self.me {
            // (While a rejoined node's registry fills, an id it does not know yet may
            // well exist: its caller waits rather than hear "not found".)
            Route::LocalMissing {
                pending: pending || self.is_syncing(),
            }
        } else {
            Route::Remote(target)
        }
    }

    /// The answer to a call for `id`, which does not run here.
    pub(crate) fn missing(&self, id: &str) -> Missing {
        match self.registry.get(id) {
            Some(e) if e.owner != self.me => Missing::NotHere(e.owner),
            Some(_) if self.registry.pending_from(id).is_some() => Missing::Restarting,
            _ if self.is_syncing() => Missing::Restarting,
            _ => Missing::NotFound,
        }
    }

    /// Whether this node's registry may still lack children: a member it hears has not
    /// sent its snapshot yet (it just joined, or rejoined, or the member did), or, after
    /// a rejoin, no quorum of the cluster it came back to has. It restarts nothing of
    /// others meanwhile (what it would restart may run elsewhere already).
    pub(crate) fn is_syncing(&self) -> bool {
        let unsynced = self
            .view
            .members()
            .iter()
            .any(|n| *n != self.me && self.view.is_alive(*n) && !self.synced.contains(n));
        unsynced
            || (self.rejoined && self.synced.len() + 1 < self.downing.quorum(self.view.members()))
    }

    /// This engine is a rejoined node's: until it has synced, unknown ids may exist.
    pub(crate) fn set_rejoined(&mut self) {
        self.rejoined = true;
    }

    /// After `asked` said it does not have `id`: whether the registry expects it to
    /// appear somewhere (a restart or move under way), so a retry can succeed.
    pub(crate) fn retry_after_not_found(&self, id: &str, asked: NodeId) -> bool {
        if self.is_syncing() {
            return true;
        }
        match self.registry.get(id) {
            Some(e) => self.registry.pending_from(id).is_some() || e.owner != asked,
            None => false,
        }
    }

    /// Whether a move of a child of this node is under way.
    /// How far this node has joined: the other members in its view, and how many of
    /// them sent their whole snapshot (their children are in its registry).
    pub(crate) fn join_state(&self) -> (usize, usize) {
        let peers = self.view.members().iter().filter(|n| **n != self.me);
        peers.fold((0, 0), |(seen, synced), n| {
            (seen + 1, synced + usize::from(self.synced.contains(n)))
        })
    }

    pub(crate) fn is_moving(&self) -> bool {
        !self.moving.is_empty()
    }

    /// Whether this node is still named as the owner of a child while other members
    /// remain (a leaving node waits for them to take over).
    pub(crate) fn owns_any_with_others_left(&self) -> bool {
        self.view.ring().members().len() > 1
            && self.registry.iter().any(|(_, e)| e.owner == self.me)
    }

    /// For a rejoin: every child running here, and the standby copies this node held
    /// and what it salvaged already (kept as salvage, see `salvage`).
    pub(crate) fn take_for_rejoin(&mut self) -> (Vec<Superseded<C>>, Copies) {
        let local: Vec<_> = self.local.drain().collect();
        let children = local
            .into_iter()
            .map(|(id, l)| Superseded {
                salvage: !l.replica && self.salvages(l.child.type_name()),
                id,
                child: l.child,
                epoch: l.epoch,
            })
            .collect();
        let mut copies: Copies = self.copies.drain().collect();
        copies.extend(self.salvage_held());
        (children, copies)
    }

    /// Every child and copy of this node, gone at once (the hub is killed or stops):
    /// the instances for the shell to stop.
    pub(crate) fn take_all(&mut self, copies_too: bool) -> Vec<C> {
        if copies_too {
            self.copies.clear();
        }
        self.local.drain().map(|(_, l)| l.child).collect()
    }
}

/// The node each child should be on by its type's strategy, over `ring` and `members`:
/// the ring owner (`consistent_hash`, and for the others once their node is gone), where
/// a `bounded_load` or custom strategy sends it, or where it is.
pub(crate) fn targets<'a>(
    me: NodeId,
    types: Types,
    registry: &Registry,
    ring: &'a Ring,
    members: &'a [NodeId],
) -> impl Fn(&str, &Entry) -> Option<NodeId> + 'a {
    let alive = |n: NodeId| members.binary_search(&n).is_ok();
    let custom = move |type_name: &str| types(type_name).and_then(|t| (t.placement.custom)());
    let moved = crate::core::placement::replacements(me, registry, ring, &alive, &custom);
    move |id, e| {
        if let Some(to) = moved.get(id) {
            return Some(*to);
        }
        let placing = ring.members().binary_search(&e.owner).is_ok();
        // An active/active primary stays while its node takes children: moving it would
        // overwrite the replica running where it goes (each has its own state).
        let active =
            || e.standbys.is_some() && types(&e.type_name).is_some_and(|t| t.active_active);
        match e.flags.distribution() {
            Distribution::BoundedLoad | Distribution::Custom if placing => Some(e.owner),
            _ if placing && active() => Some(e.owner),
            _ => ring.owner(id),
        }
    }
}
