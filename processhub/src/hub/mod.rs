//! The hub: one node of a cluster. It owns the transport, the membership and the
//! engine, feeds the engine what happens, and runs what it decides.
//!
//! ```text
//!  chitchat ─► control loop ─┐
//!  Transport ─► serve ───────┼─► Engine (core) ─► Output ─► decide(): pushes broadcast
//!  handles ─► client ────────┘     under the lock; effects (stop, restart, move, resync,
//!                                  role, peers) and events after it
//! ```
//!
//! The files say where a change belongs: `builder` (configuration, start), `control`
//! (membership, the planner's timer, sleep sweeps), `serve` (what arrives from peers),
//! `handover` (moves), `replication` (shipments and copies), `lifecycle` (starts, stops,
//! restarts, drain, shutdown, kill), `membership` (chitchat).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};

use crate::child::erased::Hook;
use crate::child::erased::{ChildCtx, ErasedChild, Replicator};
use crate::child::types::replicas;
use crate::core::engine::{Effect, Engine};
use crate::core::entry::Entry;
use crate::core::entry::EpochCell;
use crate::core::placement::Placer;
use crate::core::registry::Push;
use crate::core::registry::Registry;
use crate::core::staging::Staging;
use crate::error::HubError;
use crate::events::HubEvent;
use crate::hub::membership::Membership;
use crate::hub::replication::HubReplicator;
use crate::net::batch::{batches, entry_size};
use crate::net::transport::Transport;
use crate::node::NodeId;

/// Default deadline of a call, start or stop.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Default idle time after which a child's actor is stopped and its state kept.
pub const DEFAULT_HIBERNATE_AFTER: Duration = Duration::from_secs(300);
/// Default limit on one frame between nodes.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;
/// Default limit on the requests of one peer served at once on a connection
/// ([`HubBuilder::max_requests_in_flight`]).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// The longest component id, in bytes ([`StartError::IdTooLong`](crate::StartError)).
pub const MAX_ID_LEN: usize = 1024;
/// The shortest cluster key accepted, in bytes ([`HubBuilder::cluster_key`]).
pub const MIN_CLUSTER_KEY: usize = 16;
/// The environment variable a hub reads its cluster key from when none is set in code.
pub const CLUSTER_KEY_ENV: &str = "PROCESSHUB_CLUSTER_KEY";
/// Default of [`HubBuilder::max_move_deferral`].
pub(crate) const DEFAULT_MAX_MOVE_DEFERRAL: Duration = Duration::from_secs(5);
/// [`HubBuilder::async_ship_window`]'s default.
pub(crate) const DEFAULT_ASYNC_SHIP_WINDOW: Duration = Duration::from_millis(1);
/// Default of [`HubBuilder::move_timeout`].
pub(crate) const DEFAULT_MOVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a hub started with seeds waits for the cluster (`HubBuilder::join_timeout`).
pub(crate) const DEFAULT_JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`HubBuilder::lease`].
pub(crate) const DEFAULT_LEASE: Duration = Duration::from_millis(400);
/// Default of [`HubBuilder::stable_after`].
pub(crate) const DEFAULT_STABLE_AFTER: Duration = Duration::from_millis(300);
/// How many start items (or registry entries) go in one request or push.
const START_BATCH: usize = 512;
/// How many entries go in one snapshot frame.
const SNAPSHOT_CHUNK: usize = 2048;
/// How often the planner runs when nothing changes, to take up what an earlier plan left.
const REPLAN_INTERVAL: Duration = Duration::from_secs(1);

mod builder;
mod control;
mod handover;
mod lease;
mod lifecycle;
pub(crate) mod membership;
mod merge;
mod replication;
mod salvage;
mod serve;

pub use builder::HubBuilder;
#[cfg(any(test, feature = "sim"))]
pub(crate) use builder::World;

/// Hubs with the same hub id find each other through their seeds and form a cluster;
/// components started on any of them run on their owner on the ring and can be called
/// from every node. See the crate docs for a full example.
#[derive(Clone)]
pub struct Hub {
    pub(crate) inner: Arc<HubInner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("hub_id", &self.inner.hub_id)
            .field("node", &self.inner.me())
            .finish()
    }
}

/// The outcome of [`Hub::drain`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrainReport {
    /// Children now running on other nodes.
    pub moved: usize,
    /// Children that could not move (no other member, the move failed, or the
    /// component is pinned); they run here. Active/active instances (and `every_node`
    /// ones) are in neither count: they stay, each with its own state.
    pub failed: usize,
}

/// What the registry says about one child. Cheap to make: the id and type name are
/// shared with the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildInfo {
    /// The child id.
    pub id: Arc<str>,
    /// Its component type's wire name.
    pub type_name: Arc<str>,
    /// The node that runs it (or is restarting it, when `pending`).
    pub owner: NodeId,
    /// Bumped on every move or restart.
    pub epoch: u64,
    /// True while its node died or left and the new owner has not confirmed the restart.
    pub pending: bool,
    /// The nodes holding a standby copy in step with it (`replicas = N`), in the order
    /// one would take over; empty for a child without replicas.
    pub standbys: Vec<NodeId>,
    /// The owner, then the standbys (inline for a child without standbys).
    owners: smallvec::SmallVec<[NodeId; 1]>,
    /// Its metadata and tags.
    meta: crate::metadata::Meta,
}

impl ChildInfo {
    pub(crate) fn new(id: &Arc<str>, e: &Entry, registry: &Registry) -> Self {
        let standbys = e.standbys.as_deref().unwrap_or_default();
        Self {
            id: id.clone(),
            type_name: e.type_name.clone(),
            owner: e.owner,
            epoch: e.epoch,
            pending: registry.pending_from(id).is_some(),
            standbys: standbys.to_vec(),
            owners: std::iter::once(e.owner)
                .chain(standbys.iter().copied().filter(|n| *n != e.owner))
                .collect(),
            meta: e.meta.clone(),
        }
    }

    /// Every node holding a copy: the owner first, then its standbys in the order one
    /// would take over (`replicas = N`; active/active: the nodes running a replica).
    pub fn owners(&self) -> &[NodeId] {
        &self.owners
    }

    /// Its metadata and tags ([`StartOptions::metadata`](crate::StartOptions::metadata),
    /// [`Hub::update_metadata`]); empty when it has none.
    pub fn metadata(&self) -> &crate::Metadata {
        static EMPTY: crate::Metadata = crate::Metadata::new();
        self.meta.as_deref().unwrap_or(&EMPTY)
    }
}

impl Hub {
    /// A builder for a hub of cluster `hub_id`.
    pub fn builder(hub_id: impl Into<String>) -> HubBuilder {
        HubBuilder::new(hub_id.into())
    }

    /// This node.
    pub fn node_id(&self) -> NodeId {
        self.inner.me()
    }

    /// The hub id.
    pub fn hub_id(&self) -> &str {
        &self.inner.hub_id
    }

    /// The bound address (useful with port 0).
    pub fn listen_addr(&self) -> SocketAddr {
        self.inner.me().addr()
    }

    /// The live members of this hub's cluster, this node included, sorted.
    pub fn nodes(&self) -> Vec<NodeId> {
        self.inner.engine.read().unwrap().view.members().to_vec()
    }

    /// The node a start of `id` would place it on now: its owner on the ring of the
    /// current members. A local computation; `None` never happens for a running hub.
    pub fn ring_owner(&self, id: &str) -> Option<NodeId> {
        self.inner.engine.read().unwrap().view.ring().owner(id)
    }

    /// What the local registry says of `id`. Never touches the network.
    pub fn lookup(&self, id: &str) -> Option<ChildInfo> {
        let e = self.inner.engine.read().unwrap();
        e.registry
            .get_key_value(id)
            .map(|(id, entry)| ChildInfo::new(id, entry, &e.registry))
    }

    /// Every child in the local registry.
    pub fn children(&self) -> Vec<ChildInfo> {
        let e = self.inner.engine.read().unwrap();
        e.registry
            .iter()
            .map(|(id, entry)| ChildInfo::new(id, entry, &e.registry))
            .collect()
    }

    /// How many children run on this node.
    pub fn local_children(&self) -> usize {
        self.inner.engine.read().unwrap().local.len()
    }

    /// How many children of this node are awake (have an actor) now; the others sleep
    /// and cost only their state (see [`HubBuilder::hibernate_after`]).
    pub fn active_children(&self) -> usize {
        let e = self.inner.engine.read().unwrap();
        e.local.values().filter(|l| l.child.is_active()).count()
    }

    /// A receiver of this hub's events from now on.
    pub fn events(&self) -> broadcast::Receiver<HubEvent> {
        self.inner.events.subscribe()
    }

    /// Where this hub serves its metrics and cluster page
    /// ([`HubBuilder::admin_listen`]); `None` without one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.inner.admin.get().map(|a| a.addr)
    }

    /// The hub's hook handlers: register code to run at its hook points (every
    /// [`HubEvent`]), by priority, and cancel it (see [`Hooks`](crate::Hooks)). Unlike
    /// [`Hub::events`], handlers never lag: each gets every event, in order.
    pub fn hooks(&self) -> crate::Hooks {
        self.inner.events.hooks()
    }

    /// Moves every child of this node to the other members, with its state, and places
    /// nothing new here from now on; the node stays a member and keeps answering (with
    /// redirects) until it shuts down. Returns how many children moved and how many
    /// could not (those stay here, running).
    pub async fn drain(&self) -> Result<DrainReport, HubError> {
        self.inner.drain().await
    }

    /// Stops this hub as if its process had been killed: no handover, no goodbye; its
    /// children and standby copies are gone. The other members find out through failure
    /// detection, as after a crash, and restart or promote what ran here. For tests of
    /// failure handling within one process.
    pub async fn kill(&self) {
        self.inner.kill().await
    }

    /// The simulator's crash, after the node's runtime is gone: its connections close
    /// as a dead process's sockets do. Runs nothing of the hub.
    #[cfg(feature = "sim")]
    pub(crate) fn sever(&self) {
        self.inner.transport.sever();
    }

    /// Whether this node is on a side of a split without a quorum (under a quorum
    /// [`PartitionTolerance`](crate::PartitionTolerance)): it serves no writes
    /// ([`CallError::NoQuorum`](crate::CallError::NoQuorum)) and restarts nothing of the
    /// members it cannot reach. Always `false` under `Divergence`.
    pub fn is_partitioned(&self) -> bool {
        !self.inner.engine.read().unwrap().has_quorum()
    }

    /// The members this node's failure detector does not hear now: not yet downed
    /// (their children wait), sorted.
    pub fn unreachable(&self) -> Vec<NodeId> {
        let e = self.inner.engine.read().unwrap();
        let members = e.view.members();
        members
            .iter()
            .copied()
            .filter(|n| !e.view.is_alive(*n))
            .collect()
    }

    /// After a planned scale-down by other means than graceful shutdowns (nodes killed
    /// and not coming back): the cluster size a [`MajorityQuorum`] counts from now on
    /// (`n` at least the members now).
    ///
    /// [`MajorityQuorum`]: crate::PartitionTolerance::MajorityQuorum
    pub fn reset_cluster_size(&self, n: usize) {
        self.inner.decide(|e| {
            let members = e.view.members().to_vec();
            e.downing.reset_cluster_size(n.max(members.len()), &members);
            e.refresh_members();
        });
    }

    /// Leaves the cluster: peers are told at once (they restart this node's children
    /// on their new owners), this waits until they confirm or the call timeout passes,
    /// then stops the local children, the transport and the gossip.
    pub async fn shutdown(&self) -> Result<(), HubError> {
        self.inner.shutdown().await
    }
}

pub(crate) struct HubInner {
    /// The address this node listens on.
    addr: SocketAddr,
    /// Its incarnation: a new one when it rejoins after being downed.
    incarnation: AtomicU64,
    /// Where new incarnations come from (the clock, or a simulated world's seed).
    new_incarnation: Box<dyn Fn() -> u64 + Send + Sync>,
    hub_id: String,
    pub(crate) call_timeout: Duration,
    hibernate_after: Option<Duration>,
    move_timeout: Duration,
    max_move_deferral: Duration,
    /// How long an asynchronous write's state waits for the writes after it
    /// ([`HubBuilder::async_ship_window`]).
    async_ship_window: Duration,
    move_concurrency: usize,
    max_state_size: usize,
    /// Decode arriving states on the serving task, not a blocking thread (a simulated
    /// world: every task runs on the world's clock).
    inline_decode: bool,
    /// Big moved states arriving in parts.
    staging: std::sync::Mutex<Staging>,
    /// This hub, for what its children hold on to (the replicator).
    weak: Weak<HubInner>,
    /// Numbers the identified writes sent from here.
    call_ids: AtomicU64,
    next_transfer: AtomicU64,
    /// Salvages to fetch, per holder, gathered from the restarts of one plan (see
    /// `salvage`): one request per holder, not one per child.
    salvage_fetches: std::sync::Mutex<std::collections::HashMap<NodeId, Vec<String>>>,
    pub(crate) transport: Arc<Transport>,
    membership: tokio::sync::Mutex<Option<Box<dyn Membership>>>,
    /// Every decision, and the state it decides over.
    pub(crate) engine: RwLock<Engine<Arc<dyn ErasedChild>>>,
    /// Whether this node may serve writes now: checked by every child before each call
    /// and before its reply goes. One per life: a rejoin makes a new one, and the old life's instances
    /// keep the old one, revoked for good.
    lease: RwLock<Arc<crate::child::lease::Lease>>,
    pub(crate) events: crate::hooks::Events,
    /// The admin server ([`HubBuilder::admin_listen`]), once started.
    admin: std::sync::OnceLock<crate::admin::Admin>,
    /// The children that woke since the sleep sweep last looked.
    awake: crate::child::erased::Awake,
    stopped: AtomicBool,
    control: mpsc::UnboundedSender<Control>,
    /// What local calls wait for besides their reply, to look at their deadline.
    pub(crate) ticks: crate::client::ticks::Ticks,
    /// This node's identified writes waiting for their standbys' word.
    pub(crate) held: crate::client::held::HeldTable,
}

/// What the serving side asks of the control loop.
enum Control {
    /// A peer said it leaves or drains: the members may have changed.
    Refresh,
}

/// Where a call for an id goes now.
pub(crate) type Route = crate::core::engine::Route<Arc<dyn ErasedChild>>;

impl HubInner {
    /// The lease of this node's current life.
    pub(crate) fn lease(&self) -> Arc<crate::child::lease::Lease> {
        self.lease.read().unwrap().clone()
    }

    /// This node, in its current incarnation.
    pub(crate) fn me(&self) -> NodeId {
        NodeId::new(self.addr, self.incarnation.load(Ordering::Acquire))
    }

    /// A call id unique in the cluster: this node's incarnation and a counter.
    pub(crate) fn next_call_id(&self) -> u128 {
        (u128::from(self.me().incarnation()) << 64)
            | u128::from(self.call_ids.fetch_add(1, Ordering::Relaxed))
    }

    /// Places the new children of `type_name` by its strategy; `named` is the node the
    /// caller gave (`guided`).
    pub(crate) fn placer(&self, type_name: &str, named: Option<NodeId>) -> Placer {
        self.engine.read().unwrap().placer(type_name, named)
    }

    /// The most bytes of items or entries put in one request or push: half a frame,
    /// leaving room for the rest of it.
    pub(crate) fn batch_bytes(&self) -> usize {
        self.transport.max_frame() / 2
    }

    /// Stops serving the admin address.
    fn stop_admin(&self) {
        if let Some(admin) = self.admin.get() {
            admin.stop();
        }
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Whether the local registry has `id`.
    /// The epoch the registry here has `id` at, if it has it.
    pub(crate) fn registered_epoch(&self, id: &str) -> Option<u64> {
        self.engine
            .read()
            .unwrap()
            .registry
            .get(id)
            .map(|e| e.epoch)
    }

    /// Whether the registry here saw `id` removed lately at `epoch` or later.
    pub(crate) fn removal_seen(&self, id: &str, epoch: u64) -> bool {
        self.engine
            .read()
            .unwrap()
            .registry
            .removed_since(id, epoch)
    }

    pub(crate) fn route(&self, id: &str) -> Route {
        self.engine.read().unwrap().route(id)
    }

    /// After `asked` said it does not have `id`: whether the registry expects it to
    /// appear somewhere (a restart or move under way), so a retry can succeed.
    pub(crate) fn retry_after_not_found(&self, id: &str, asked: NodeId) -> bool {
        self.engine.read().unwrap().retry_after_not_found(id, asked)
    }

    /// Runs `decide` on the engine, then what it decided: the registry pushes go to
    /// every peer before the lock is let go (each peer sees this node's changes in the
    /// order they happened); effects and events run after it.
    pub(crate) fn decide<R>(
        &self,
        decide: impl FnOnce(&mut Engine<Arc<dyn ErasedChild>>) -> R,
    ) -> R {
        let (r, out) = {
            let mut engine = self.engine.write().unwrap();
            engine.set_now(tokio::time::Instant::now().into_std());
            engine
                .registry
                .record_changes(self.events.wants_registry_changes());
            let r = decide(&mut engine);
            self.lease
                .read()
                .unwrap()
                .set_partitioned(!engine.has_quorum());
            let out = engine.take_output();
            for push in &out.pushes {
                self.broadcast(push);
            }
            (r, out)
        };
        if !out.effects.is_empty() || !out.events.is_empty() {
            self.execute(out.effects, out.events);
        }
        r
    }

    /// Sends a registry push to every peer, upserts in runs that fit a frame.
    fn broadcast(&self, push: &Push) {
        match push {
            Push::Upsert(entries)
                if entries.len() > START_BATCH
                    || entries.iter().map(entry_size).sum::<usize>() > self.batch_bytes() =>
            {
                for chunk in batches(entries, START_BATCH, self.batch_bytes(), entry_size) {
                    self.transport.broadcast(&Push::Upsert(chunk.to_vec()));
                }
            }
            other => self.transport.broadcast(other),
        }
    }

    /// Runs the engine's effects, in order, then emits its events.
    fn execute(&self, effects: Vec<Effect<Arc<dyn ErasedChild>>>, events: Vec<HubEvent>) {
        let hub = self.weak.upgrade();
        let mut restarts = Vec::new();
        for effect in effects {
            match effect {
                Effect::Peers(members) => self.transport.set_wanted(members),
                Effect::Dead(nodes) => {
                    for node in nodes {
                        self.transport.peer_died(node);
                    }
                }
                Effect::Stop { id, child, report } => {
                    let events = self.events.clone();
                    let me = self.me();
                    tokio::spawn(async move {
                        child.stop().await;
                        if report {
                            events.send(HubEvent::ChildStopped {
                                id: id.to_string(),
                                node: me,
                            });
                        }
                    });
                }
                Effect::Merge { id, child, into } => {
                    if let Some(hub) = &hub {
                        tokio::spawn(Arc::clone(hub).merge_duplicate(id, child, into));
                    }
                }
                Effect::Restart { id, epoch, from } => restarts.push((id, epoch, from)),
                Effect::Move(moves) => {
                    if let Some(hub) = &hub {
                        Arc::clone(hub).spawn_moves(moves);
                    }
                }
                Effect::Resync { id, child } => {
                    if let Some(hub) = &hub {
                        let hub = Arc::clone(hub);
                        tokio::spawn(async move {
                            child.resync().await;
                            hub.engine.write().unwrap().resync_done(&id);
                        });
                    }
                }
                Effect::Role { child, role } => {
                    tokio::spawn(child.run_hook(Hook::Role(role)));
                }
                Effect::Refresh => {
                    let _ = self.control.send(Control::Refresh);
                }
                Effect::Renew => self.lease().ask(),
                Effect::Downed => {
                    self.lease().revoke();
                    if let Some(hub) = &hub {
                        Arc::clone(hub).spawn_rejoin();
                    }
                }
                Effect::FetchSalvage { from, ids } => {
                    if let Some(hub) = &hub {
                        Arc::clone(hub).queue_salvage_fetch(from, ids);
                    }
                }
            }
        }
        for event in events {
            self.emit(event);
        }
        // After the events of the plan that asked for them (as before: a restart's
        // events follow the membership events that caused it).
        for (id, epoch, from) in restarts {
            self.restart_local(&id, epoch, from);
        }
    }

    fn emit(&self, event: HubEvent) {
        self.events.send(event);
    }

    fn child_ctx(&self, id: Arc<str>, epoch: u64, type_name: &str) -> ChildCtx {
        let replicator: Option<Arc<dyn Replicator>> = (replicas(type_name) > 1).then(|| {
            Arc::new(HubReplicator {
                hub: self.weak.clone(),
                seq: AtomicU64::new(0),
                in_step: Default::default(),
                log: Default::default(),
                due: Default::default(),
            }) as Arc<dyn Replicator>
        });
        let role = replicator
            .is_some()
            .then_some(crate::core::entry::Role::Primary);
        // A table of identified writes for the replicated only.
        let recent = replicator.as_ref().map(|_| Default::default());
        ChildCtx {
            id,
            node: self.me(),
            epoch: EpochCell::new(epoch),
            events: self.events.clone(),
            replicator,
            role,
            recent,
            awake: Some(self.awake.clone()),
            // (No lease to check when the strategy does not fence.)
            lease: Some(self.lease()).filter(|l| l.fences()),
        }
    }
}
