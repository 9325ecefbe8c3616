//! The hub: one node of a cluster. It owns the transport, the membership, the registry
//! and the children running here, and executes what the planner decides.
//!
//! ```text
//!  chitchat ─► members ─► control task ─► plan_membership_change ─► StartLocal / MoveTo
//!  Transport ─► Inbound (requests: Start/Stop/Call; pushes: registry deltas, Leaving)
//!  handles  ─► route(id): local actor, or remote owner over the transport
//! ```

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use crate::component::{
    self, ChildCtx, EncodedCall, ErasedChild, Hook, RecentCalls, Replicator, Responder,
    SharedRecent,
};
use crate::core::planner::{plan_with_targets, Command};
use crate::core::registry::{wins, Entry, Registry, StartState, Upsert};
use crate::core::ring::Ring;
use crate::core::staging::{Part, Staging};
use crate::error::{HubError, StopError};
use crate::events::{HubEvent, RestartReason};
use crate::handle::Backoff;
use crate::membership::{GossipConfig, Membership};
use crate::options::Flags;
use crate::placement::{self, Distribution};
use crate::transport::{
    Conn, InCall, Inbound, ReplySink, Serving, Transport, TransportError, RECONNECT_WAIT,
};
use crate::wire::{
    calls_from_wire, calls_to_wire, Push, Request, Response, StartItem, StartOutcome, StopOutcome,
};
use crate::NodeId;

/// Default deadline of a call, start or stop.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Default idle time after which a child's actor is stopped and its state kept.
pub const DEFAULT_HIBERNATE_AFTER: Duration = Duration::from_secs(300);
/// Default limit on one frame between nodes.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;
/// A child on its way to another node.
struct Move {
    id: String,
    epoch: u64,
    from_epoch: u64,
    type_name: String,
    start_state: Vec<u8>,
    flags: Flags,
    child: Arc<dyn ErasedChild>,
}

/// What became of a moved child sent to its new owner.
struct Sent {
    outcome: StartOutcome,
    /// The request reached the target: the child may have started there.
    offered: bool,
    /// The target could not be reached at all.
    unreachable: bool,
}

/// Default of [`HubBuilder::move_timeout`].
pub(crate) const DEFAULT_MOVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How many start items (or registry entries) go in one request or push.
const START_BATCH: usize = 512;
/// How many entries go in one snapshot frame.
const SNAPSHOT_CHUNK: usize = 2048;
/// How often the planner runs when nothing changes, to take up what an earlier plan left.
const REPLAN_INTERVAL: Duration = Duration::from_secs(1);
/// How many times a start may be forwarded between nodes whose views differ.
const MAX_HOPS: u8 = 3;

/// Builds and starts a [`Hub`].
///
/// ```no_run
/// # async fn f() -> Result<(), processhub::HubError> {
/// let hub = processhub::Hub::builder("my-hub")
///     .listen("127.0.0.1:0")
///     .seeds(["127.0.0.1:7000"])
///     .start()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct HubBuilder {
    hub_id: String,
    listen: String,
    seeds: Vec<String>,
    call_timeout: Duration,
    gossip_interval: Duration,
    phi_threshold: f64,
    max_frame: usize,
    hibernate_after: Option<Duration>,
    move_timeout: Duration,
    move_concurrency: usize,
    max_state_size: usize,
}

impl HubBuilder {
    /// The address to listen on (TCP for calls, UDP on the same port for gossip).
    /// Port 0 picks a free port; [`Hub::listen_addr`] tells which. Default `127.0.0.1:0`.
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = addr.into();
        self
    }

    /// Addresses of nodes already in the cluster (zero or more).
    pub fn seeds<S: Into<String>>(mut self, seeds: impl IntoIterator<Item = S>) -> Self {
        self.seeds = seeds.into_iter().map(Into::into).collect();
        self
    }

    /// Deadline of calls, starts and stops, retries included. Default 5 s.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// How often gossip runs. Default 100 ms; failure detection takes about 20 intervals.
    pub fn gossip_interval(mut self, interval: Duration) -> Self {
        self.gossip_interval = interval;
        self
    }

    /// The phi-accrual threshold above which a silent node is declared dead. Default 8.
    pub fn failure_threshold(mut self, phi: f64) -> Self {
        self.phi_threshold = phi;
        self
    }

    /// The largest frame accepted or sent between nodes. Default 16 MiB.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// How long a child may go without a call before its actor is stopped and only its
    /// state is kept (it wakes up at the next call, transparently). `None` keeps actors
    /// running. Default 5 minutes. Children start asleep and wake at their first call.
    pub fn hibernate_after(mut self, idle: Option<Duration>) -> Self {
        self.hibernate_after = idle;
        self
    }

    /// How long a move may take, from freezing the component to the new owner's
    /// confirmation, before it is rolled back (the component goes on here with its
    /// state, and `MigrationFailed` is reported). Default 10 s.
    pub fn move_timeout(mut self, timeout: Duration) -> Self {
        self.move_timeout = timeout;
        self
    }

    /// How many components may be frozen for a move at once (on a join, a drain or a
    /// shutdown); the others keep serving until their turn. At least 1. Default 512.
    pub fn move_concurrency(mut self, children: usize) -> Self {
        self.move_concurrency = children.max(1);
        self
    }

    /// The largest encoded state a hot move may carry (states larger than a frame move
    /// in parts of half a frame). A larger state does not move: the move fails and the
    /// component stays. Default 1 GiB.
    pub fn max_state_size(mut self, bytes: usize) -> Self {
        self.max_state_size = bytes;
        self
    }

    /// Binds, joins the cluster through the seeds, and returns the running hub.
    pub async fn start(self) -> Result<Hub, HubError> {
        if self.hub_id.is_empty() {
            return Err(HubError::EmptyHubId);
        }
        let listen: SocketAddr = self.listen.parse().map_err(|e: std::net::AddrParseError| {
            HubError::InvalidAddress {
                addr: self.listen.clone(),
                message: e.to_string(),
            }
        })?;
        for seed in &self.seeds {
            if seed.parse::<SocketAddr>().is_err() && !seed.contains(':') {
                return Err(HubError::InvalidAddress {
                    addr: seed.clone(),
                    message: "a seed is host:port".into(),
                });
            }
        }
        let gossip = GossipConfig {
            interval: self.gossip_interval,
            phi_threshold: self.phi_threshold,
        };
        let incarnation = new_incarnation();
        let (members_tx, members_rx) = mpsc::unbounded_channel();
        // TCP and UDP share the port number: with port 0 we retry until both are free.
        let mut attempt = 0;
        let (listener, me, membership) = loop {
            attempt += 1;
            let listener = TcpListener::bind(listen)
                .await
                .map_err(|source| HubError::Bind {
                    addr: listen.to_string(),
                    source,
                })?;
            let addr = listener.local_addr().map_err(|source| HubError::Bind {
                addr: listen.to_string(),
                source,
            })?;
            let me = NodeId::new(addr, incarnation);
            match Membership::start(
                me,
                &self.hub_id,
                self.seeds.clone(),
                &gossip,
                members_tx.clone(),
            )
            .await
            {
                Ok(m) => break (listener, me, m),
                Err(e) if listen.port() == 0 && attempt < 20 => {
                    tracing::debug!("gossip port {} taken ({e}), retrying", addr.port());
                }
                Err(e) => return Err(HubError::Membership(e)),
            }
        };
        let (events, _) = broadcast::channel(16_384);
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let inner = Arc::new_cyclic(|weak: &Weak<HubInner>| {
            let inbound: Weak<dyn Inbound> = weak.clone();
            HubInner {
                me,
                hub_id: self.hub_id.clone(),
                call_timeout: self.call_timeout,
                hibernate_after: self.hibernate_after,
                move_timeout: self.move_timeout,
                move_concurrency: self.move_concurrency,
                max_state_size: self.max_state_size,
                staging: std::sync::Mutex::new(Staging::default()),
                weak: weak.clone(),
                call_ids: AtomicU64::new(1),
                next_transfer: AtomicU64::new(1),
                transport: Transport::start(
                    me,
                    self.hub_id.clone(),
                    self.max_frame,
                    listener,
                    inbound,
                ),
                membership: tokio::sync::Mutex::new(Some(membership)),
                state: RwLock::new(State {
                    registry: Registry::default(),
                    local: HashMap::default(),
                    ring: Arc::new(Ring::new([me])),
                    chitchat_members: vec![me],
                    departed: HashSet::new(),
                    members: vec![me],
                    draining: HashSet::new(),
                    snapshots: HashMap::new(),
                    moving: HashSet::new(),
                    copies: HashMap::new(),
                    resyncing: HashSet::new(),
                }),
                events,
                stopped: AtomicBool::new(false),
                control: control_tx,
            }
        });
        tokio::spawn(control_loop(Arc::downgrade(&inner), members_rx, control_rx));
        Ok(Hub { inner })
    }
}

fn new_incarnation() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    // Distinct across processes (pid, time) and across hubs of one process (counter);
    // kept below 2^53 so it prints the same everywhere.
    (nanos ^ (u64::from(std::process::id()) << 32))
        .wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed) << 8)
        & ((1 << 53) - 1)
}

/// One node of a cluster. Cheap to clone; all clones are the same hub.
///
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
            .field("node", &self.inner.me)
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
}

impl ChildInfo {
    fn new(id: &Arc<str>, e: &Entry, registry: &Registry) -> Self {
        Self {
            id: id.clone(),
            type_name: e.type_name.clone(),
            owner: e.owner,
            epoch: e.epoch,
            pending: registry.pending_from(id).is_some(),
            standbys: e.standbys.as_deref().unwrap_or_default().to_vec(),
        }
    }

    /// Every node holding a copy: just the owner until replication lands.
    pub fn owners(&self) -> &[NodeId] {
        std::slice::from_ref(&self.owner)
    }
}

impl Hub {
    /// A builder for a hub of cluster `hub_id`.
    pub fn builder(hub_id: impl Into<String>) -> HubBuilder {
        HubBuilder {
            hub_id: hub_id.into(),
            listen: "127.0.0.1:0".into(),
            seeds: Vec::new(),
            call_timeout: DEFAULT_CALL_TIMEOUT,
            gossip_interval: Duration::from_millis(100),
            phi_threshold: 8.0,
            max_frame: DEFAULT_MAX_FRAME,
            hibernate_after: Some(DEFAULT_HIBERNATE_AFTER),
            move_timeout: DEFAULT_MOVE_TIMEOUT,
            move_concurrency: START_BATCH,
            max_state_size: 1 << 30,
        }
    }

    /// This node.
    pub fn node_id(&self) -> NodeId {
        self.inner.me
    }

    /// The hub id.
    pub fn hub_id(&self) -> &str {
        &self.inner.hub_id
    }

    /// The bound address (useful with port 0).
    pub fn listen_addr(&self) -> SocketAddr {
        self.inner.me.addr()
    }

    /// The live members of this hub's cluster, this node included, sorted.
    pub fn nodes(&self) -> Vec<NodeId> {
        self.inner.state.read().unwrap().members.clone()
    }

    /// The node a start of `id` would place it on now: its owner on the ring of the
    /// current members. A local computation; `None` never happens for a running hub.
    pub fn ring_owner(&self, id: &str) -> Option<NodeId> {
        self.inner.state.read().unwrap().ring.owner(id)
    }

    /// What the local registry says of `id`. Never touches the network.
    pub fn lookup(&self, id: &str) -> Option<ChildInfo> {
        let st = self.inner.state.read().unwrap();
        st.registry
            .get_key_value(id)
            .map(|(id, e)| ChildInfo::new(id, e, &st.registry))
    }

    /// Every child in the local registry.
    pub fn children(&self) -> Vec<ChildInfo> {
        let st = self.inner.state.read().unwrap();
        st.registry
            .iter()
            .map(|(id, e)| ChildInfo::new(id, e, &st.registry))
            .collect()
    }

    /// How many children run on this node.
    pub fn local_children(&self) -> usize {
        self.inner.state.read().unwrap().local.len()
    }

    /// How many children of this node are awake (have an actor) now; the others sleep
    /// and cost only their state (see [`HubBuilder::hibernate_after`]).
    pub fn active_children(&self) -> usize {
        let st = self.inner.state.read().unwrap();
        st.local.values().filter(|l| l.child.is_active()).count()
    }

    /// A receiver of this hub's events from now on.
    pub fn events(&self) -> broadcast::Receiver<HubEvent> {
        self.inner.events.subscribe()
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

    /// Leaves the cluster: peers are told at once (they restart this node's children
    /// on their new owners), this waits until they confirm or the call timeout passes,
    /// then stops the local children, the transport and the gossip.
    pub async fn shutdown(&self) -> Result<(), HubError> {
        self.inner.shutdown().await
    }
}

pub(crate) struct State {
    pub(crate) registry: Registry,
    /// Children running here (foldhash: looked up on every call).
    pub(crate) local: HashMap<Arc<str>, LocalChild, foldhash::fast::RandomState>,
    pub(crate) ring: Arc<Ring>,
    chitchat_members: Vec<NodeId>,
    departed: HashSet<NodeId>,
    /// Live members, sorted (the ring leaves out the draining ones).
    pub(crate) members: Vec<NodeId>,
    /// Members that take no new children.
    pub(crate) draining: HashSet<NodeId>,
    snapshots: HashMap<NodeId, Vec<(String, Entry)>>,
    moving: HashSet<Arc<str>>,
    /// Standby copies this node holds for replicated children running elsewhere.
    copies: HashMap<Arc<str>, StandbyCopy>,
    /// Replicated children whose standby set is being remade.
    resyncing: HashSet<Arc<str>>,
}

/// The latest state of a replicated child, kept for its primary.
pub(crate) struct StandbyCopy {
    /// (epoch, shipment) of the primary that sent it.
    version: (u64, u64),
    state: Vec<u8>,
    /// The replies of the primary's latest identified writes.
    recent: RecentCalls,
}

#[derive(Clone)]
pub(crate) struct LocalChild {
    pub(crate) child: Arc<dyn ErasedChild>,
    pub(crate) epoch: u64,
    /// Restarted here from its start state after its node died or left.
    pub(crate) restarted: bool,
    /// An active/active replica: it serves calls here, while the registry names the
    /// child's primary elsewhere.
    pub(crate) replica: bool,
}

pub(crate) struct HubInner {
    pub(crate) me: NodeId,
    hub_id: String,
    pub(crate) call_timeout: Duration,
    hibernate_after: Option<Duration>,
    move_timeout: Duration,
    move_concurrency: usize,
    max_state_size: usize,
    /// Big moved states arriving in parts.
    staging: std::sync::Mutex<Staging>,
    /// This hub, for what its children hold on to (the replicator).
    weak: Weak<HubInner>,
    /// Numbers the identified writes sent from here.
    call_ids: AtomicU64,
    next_transfer: AtomicU64,
    pub(crate) transport: Arc<Transport>,
    membership: tokio::sync::Mutex<Option<Membership>>,
    pub(crate) state: RwLock<State>,
    pub(crate) events: broadcast::Sender<HubEvent>,
    stopped: AtomicBool,
    control: mpsc::UnboundedSender<Control>,
}

enum Control {
    Departed(NodeId),
    Draining(NodeId),
}

/// Where a call for an id goes now.
pub(crate) enum Route {
    Local(Arc<dyn ErasedChild>),
    /// Registered here but not running yet (a restart under way) or just stopped.
    LocalMissing {
        pending: bool,
    },
    Remote(NodeId),
}

impl HubInner {
    /// A call id unique in the cluster: this node's incarnation and a counter.
    pub(crate) fn next_call_id(&self) -> u128 {
        (u128::from(self.me.incarnation()) << 64)
            | u128::from(self.call_ids.fetch_add(1, Ordering::Relaxed))
    }

    /// Places the new children of `type_name` by its strategy; `named` is the node the
    /// caller gave (`guided`).
    pub(crate) fn placer(&self, type_name: &str, named: Option<NodeId>) -> Placer {
        let placement = component::vtable(type_name).map(|v| v.placement);
        let st = self.state.read().unwrap();
        let ring = st.ring.clone();
        let needs_loads = placement.is_some_and(|p| p.kind.needs_loads());
        let loads = if needs_loads {
            placement::loads_of(&st.registry, &ring, type_name)
        } else {
            Vec::new()
        };
        Placer {
            placement,
            ring,
            me: self.me,
            named,
            loads,
        }
    }

    /// The most bytes of items or entries put in one request or push: half a frame,
    /// leaving room for the rest of it.
    pub(crate) fn batch_bytes(&self) -> usize {
        self.transport.max_frame() / 2
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    pub(crate) fn route(&self, id: &str) -> Route {
        let st = self.state.read().unwrap();
        if let Some(l) = st.local.get(id) {
            return Route::Local(l.child.clone());
        }
        let (target, pending) = match st.registry.get(id) {
            Some(e) => (e.owner, st.registry.pending_from(id).is_some()),
            None => (st.ring.owner(id).unwrap_or(self.me), false),
        };
        if target == self.me {
            Route::LocalMissing { pending }
        } else {
            Route::Remote(target)
        }
    }

    /// After `asked` said it does not have `id`: whether the registry expects it to
    /// appear somewhere (a restart or move under way), so a retry can succeed.
    pub(crate) fn retry_after_not_found(&self, id: &str, asked: NodeId) -> bool {
        let st = self.state.read().unwrap();
        match st.registry.get(id) {
            Some(e) => st.registry.pending_from(id).is_some() || e.owner != asked,
            None => false,
        }
    }

    fn emit(&self, event: HubEvent) {
        let _ = self.events.send(event);
    }

    fn child_ctx(&self, id: Arc<str>, epoch: u64, type_name: &str) -> ChildCtx {
        let replicator: Option<Arc<dyn Replicator>> =
            (component::replicas(type_name) > 1).then(|| {
                Arc::new(HubReplicator {
                    hub: self.weak.clone(),
                    seq: AtomicU64::new(0),
                    in_step: Default::default(),
                }) as Arc<dyn Replicator>
            });
        let role = replicator.is_some().then_some(crate::Role::Primary);
        // A table of identified writes for the replicated only.
        let recent = replicator.as_ref().map(|_| Default::default());
        ChildCtx {
            id,
            node: self.me,
            epoch,
            events: self.events.clone(),
            replicator,
            role,
            recent,
        }
    }

    /// Starts `item` here if this node may: the check, the spawn and the registry update
    /// happen under one lock, so two starts of one id cannot both succeed.
    pub(crate) fn start_local(
        &self,
        item: &StartItem,
        spawn: impl FnOnce(ChildCtx) -> Result<Arc<dyn ErasedChild>, String>,
    ) -> StartOutcome {
        let mut spawn = Some(spawn);
        let mut out = self.start_local_batch([item], |_, ctx| {
            (spawn.take().expect("one item, one spawn"))(ctx)
        });
        out.pop().expect("one item, one outcome")
    }

    /// Starts these items here under one lock, and tells the peers in pushes of up to
    /// [`START_BATCH`] entries rather than one frame per child. `spawn` gets the item's
    /// position. Outcomes come in order.
    pub(crate) fn start_local_batch<'a>(
        &self,
        items: impl IntoIterator<Item = &'a StartItem>,
        mut spawn: impl FnMut(usize, ChildCtx) -> Result<Arc<dyn ErasedChild>, String>,
    ) -> Vec<StartOutcome> {
        let mut outcomes = Vec::new();
        let mut started = Vec::new();
        let mut started_types_replicated = false;
        {
            let mut guard = self.state.write().unwrap();
            let st = &mut *guard;
            let mut upserts = Vec::new();
            for (i, item) in items.into_iter().enumerate() {
                started_types_replicated |= component::replicas(&item.type_name) > 1;
                let outcome = self.start_one(st, item, |ctx| spawn(i, ctx), &mut upserts);
                if let (StartOutcome::Started { epoch, .. }, 0) = (&outcome, item.epoch) {
                    started.push((item.id.clone(), item.type_name.clone(), *epoch));
                }
                outcomes.push(outcome);
            }
            // Under the lock: peers get this node's changes in the order they happened.
            for chunk in batches(&upserts, START_BATCH, self.batch_bytes(), entry_size) {
                self.transport.broadcast(&Push::Upsert(chunk.to_vec()));
            }
        }
        let replicated = started_types_replicated
            && outcomes
                .iter()
                .any(|o| matches!(o, StartOutcome::Started { .. }));
        if replicated {
            // Standbys from the start, not at the next plan.
            if let Some(me) = self.weak.upgrade() {
                me.keep_replicas();
            }
        }
        for (id, type_name, epoch) in started {
            self.emit(HubEvent::ChildStarted {
                id,
                type_name,
                node: self.me,
                epoch,
            });
        }
        outcomes
    }

    fn start_one(
        &self,
        st: &mut State,
        item: &StartItem,
        spawn: impl FnOnce(ChildCtx) -> Result<Arc<dyn ErasedChild>, String>,
        upserts: &mut Vec<(String, Entry)>,
    ) -> StartOutcome {
        // A restart from the start state and a move carrying the latest state can meet
        // here under one epoch: the source died while its handover was on the way. The
        // handed-over state wins if the restarted copy has served nothing yet.
        let handed_over = item.start_state.is_some();
        if let Some(l) = st.local.get(&*item.id) {
            let supersede =
                l.restarted && handed_over && item.epoch >= l.epoch && !l.child.was_called();
            if !supersede && (item.epoch == 0 || l.epoch >= item.epoch) {
                return StartOutcome::AlreadyStarted { node: self.me };
            }
        }
        if item.epoch == 0 {
            if let Some(e) = st.registry.get(&item.id) {
                return StartOutcome::AlreadyStarted { node: e.owner };
            }
        }
        let epoch = item.epoch.max(1);
        let id: Arc<str> = Arc::from(item.id.as_str());
        let child = match spawn(self.child_ctx(id.clone(), epoch, &item.type_name)) {
            Ok(c) => c,
            Err(message) => {
                return StartOutcome::Failed {
                    message: format!("{}: {message}", item.id),
                }
            }
        };
        // Started (or restarted from its start state), not handed over: `#[on_start]`,
        // now that the start is decided.
        if !handed_over {
            if let Err(message) = child.start_hook() {
                return StartOutcome::Failed {
                    message: format!("{}: {message}", item.id),
                };
            }
        }
        let restarted = item.epoch > 0 && !handed_over;
        // Running here now: a standby copy of it here is stale.
        st.copies.remove(&*id);
        let replaced = st.local.insert(
            id,
            LocalChild {
                child,
                epoch,
                restarted,
                replica: false,
            },
        );
        if let Some(old) = replaced {
            // A restarted copy never called, or one of an older epoch: let it go.
            tokio::spawn(old.child.stop());
        }
        let type_name = st.registry.intern(&item.type_name);
        let entry = Entry {
            type_name,
            owner: self.me,
            epoch,
            start_state: StartState::from_slice(
                item.start_state
                    .as_deref()
                    .map_or(&item.state[..], |s| &s[..]),
            ),
            flags: item.flags,
            // A moved primary keeps the standbys it had (their copies, or running
            // replicas, stay); its next shipment corrects the set.
            standbys: if handed_over {
                st.registry
                    .get(&item.id)
                    .and_then(|e| e.standbys_but(self.me))
            } else {
                None
            },
        };
        st.registry.upsert(&item.id, entry.clone());
        upserts.push((item.id.clone(), entry));
        StartOutcome::Started {
            node: self.me,
            epoch,
        }
    }

    /// Starts a batch: local items here, the others on their owners, concurrently.
    /// Results come in input order.
    pub(crate) async fn start_items(
        self: &Arc<Self>,
        items: Vec<StartItem>,
        hops: u8,
        mut local_spawn: impl FnMut(usize, &StartItem, ChildCtx) -> Result<Arc<dyn ErasedChild>, String>,
    ) -> Vec<StartOutcome> {
        let mut out: Vec<Option<StartOutcome>> = vec![None; items.len()];
        let mut remote: HashMap<NodeId, Vec<(usize, StartItem)>> = HashMap::new();
        let ring = self.state.read().unwrap().ring.clone();
        let mut local = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let owner = item
                .node
                .unwrap_or_else(|| ring.owner(&item.id).unwrap_or(self.me));
            if owner == self.me || hops >= MAX_HOPS {
                local.push((i, item));
            } else {
                remote.entry(owner).or_default().push((i, item));
            }
        }
        for chunk in local.chunks(START_BATCH) {
            let outcomes = self.start_local_batch(chunk.iter().map(|(_, item)| item), |k, ctx| {
                local_spawn(chunk[k].0, &chunk[k].1, ctx)
            });
            for ((i, _), o) in chunk.iter().zip(outcomes) {
                out[*i] = Some(o);
            }
        }
        let deadline = Instant::now() + self.call_timeout;
        let mut requests = Vec::new();
        for (node, items) in remote {
            for chunk in batches(&items, START_BATCH, self.batch_bytes(), |(_, i)| {
                item_size(i)
            }) {
                let (idx, batch): (Vec<usize>, Vec<StartItem>) = chunk.iter().cloned().unzip();
                let t = self.transport.clone();
                requests.push(async move {
                    let res = t
                        .request(
                            node,
                            Request::Start {
                                items: batch,
                                hops: hops + 1,
                            },
                            deadline,
                        )
                        .await;
                    (idx, res)
                });
            }
        }
        for (idx, res) in futures_util::future::join_all(requests).await {
            match res {
                Ok(Response::Started(outcomes)) if outcomes.len() == idx.len() => {
                    for (i, o) in idx.into_iter().zip(outcomes) {
                        out[i] = Some(o);
                    }
                }
                other => {
                    let message = match other {
                        Err(TransportError::Timeout) => "timeout".to_string(),
                        Err(e) => format!("{e:?}"),
                        Ok(r) => format!("unexpected response {r:?}"),
                    };
                    for i in idx {
                        out[i] = Some(StartOutcome::Failed {
                            message: message.clone(),
                        });
                    }
                }
            }
        }
        out.into_iter()
            .map(|o| o.expect("every item has an outcome"))
            .collect()
    }

    /// Stops `id` if it runs here.
    pub(crate) async fn stop_local(&self, id: &str, type_name: &str) -> StopOutcome {
        let child = {
            let mut st = self.state.write().unwrap();
            // An active replica: the primary stops it, and every replica with it.
            if st.local.get(id).is_some_and(|l| l.replica) {
                if let Some(owner) = st.registry.get(id).map(|e| e.owner) {
                    return StopOutcome::NotHere { owner };
                }
            }
            match st.local.get(id) {
                None => {
                    return match st.registry.get(id) {
                        Some(e) if e.owner != self.me => StopOutcome::NotHere { owner: e.owner },
                        _ => StopOutcome::NotFound,
                    };
                }
                Some(l) if l.child.type_name() != type_name => {
                    return StopOutcome::WrongType {
                        actual: l.child.type_name().to_string(),
                    }
                }
                Some(_) => {}
            }
            let l = st.local.remove(id).expect("checked above");
            st.registry.remove(id, self.me, l.epoch);
            self.transport
                .broadcast(&Push::Remove(vec![(id.to_string(), l.epoch)]));
            l.child
        };
        child.clone().run_hook(Hook::Stop).await;
        child.stop().await;
        self.emit(HubEvent::ChildStopped {
            id: id.to_string(),
            node: self.me,
        });
        StopOutcome::Stopped
    }

    /// Stops `id` wherever it runs, following the registry.
    pub(crate) async fn stop_routed(&self, id: &str, type_name: &str) -> Result<(), StopError> {
        let deadline = Instant::now() + self.call_timeout;
        let mut backoff = Backoff::until(deadline);
        let mut target_override = None;
        loop {
            if self.is_stopped() {
                return Err(StopError::HubStopped);
            }
            let target = target_override
                .take()
                .unwrap_or_else(|| match self.route(id) {
                    Route::Local(_) | Route::LocalMissing { .. } => self.me,
                    Route::Remote(n) => n,
                });
            let outcome = if target == self.me {
                Ok(self.stop_local(id, type_name).await)
            } else {
                let req = Request::Stop {
                    id: id.to_string(),
                    type_name: type_name.to_string(),
                };
                match self
                    .transport
                    .request_within(target, req, RECONNECT_WAIT, deadline)
                    .await
                {
                    Ok(Response::Stopped(o)) => Ok(o),
                    Ok(_) => Err(()),
                    Err(TransportError::Timeout) => {
                        return Err(StopError::Timeout {
                            id: id.to_string(),
                            after: self.call_timeout,
                        })
                    }
                    Err(_) => Err(()),
                }
            };
            match outcome {
                Ok(StopOutcome::Stopped) => return Ok(()),
                Ok(StopOutcome::WrongType { actual }) => {
                    return Err(StopError::WrongType {
                        id: id.to_string(),
                        expected: type_name.to_string(),
                        actual,
                    })
                }
                Ok(StopOutcome::NotHere { owner }) if owner != target => {
                    target_override = Some(owner);
                }
                Ok(StopOutcome::NotFound) | Ok(StopOutcome::NotHere { .. }) => {
                    if !self.retry_after_not_found(id, target) {
                        return Err(StopError::NotFound { id: id.to_string() });
                    }
                }
                Err(()) => {}
            }
            if !backoff.wait().await {
                return Err(StopError::Timeout {
                    id: id.to_string(),
                    after: self.call_timeout,
                });
            }
        }
    }

    fn recompute_members(self: &Arc<Self>) {
        let (joined, left) = {
            let mut st = self.state.write().unwrap();
            let members: Vec<NodeId> = st
                .chitchat_members
                .iter()
                .copied()
                .filter(|n| !st.departed.contains(n))
                .collect();
            let placing: Vec<NodeId> = members
                .iter()
                .copied()
                .filter(|n| !st.draining.contains(n))
                .collect();
            if members == st.members && placing == st.ring.members() {
                return;
            }
            let old: HashSet<NodeId> = st.members.iter().copied().collect();
            let new: HashSet<NodeId> = members.iter().copied().collect();
            let joined: Vec<NodeId> = new.difference(&old).copied().collect();
            let left: Vec<(NodeId, bool)> = old
                .difference(&new)
                .map(|n| (*n, st.departed.contains(n)))
                .collect();
            st.ring = Arc::new(Ring::new(placing));
            self.transport.set_wanted(members.iter().copied());
            st.members = members;
            (joined, left)
        };
        for node in joined {
            tracing::info!(me = %self.me, %node, "node joined");
            self.emit(HubEvent::NodeJoined { node });
        }
        for (node, graceful) in left {
            tracing::info!(me = %self.me, %node, graceful, "node left");
            self.emit(HubEvent::NodeLeft { node, graceful });
        }
        self.replan();
    }

    /// Runs the planner over the current view and executes its commands. Runs after
    /// every membership change and on a timer (to take up what an earlier plan left).
    fn replan(self: &Arc<Self>) {
        if self.is_stopped() {
            return;
        }
        let commands = {
            let mut guard = self.state.write().unwrap();
            let st = &mut *guard;
            let ring = st.ring.clone();
            let targets = strategy_targets(self.me, &st.registry, &ring, &st.members);
            let mut commands = plan_with_targets(self.me, &st.members, &mut st.registry, &targets);
            // A start already running or a move under way is not issued twice.
            commands.retain(|c| match c {
                // (An active replica running here is promoted in place.)
                Command::StartLocal { id, .. } => {
                    st.local.get(id.as_str()).is_none_or(|l| l.replica)
                }
                Command::MoveTo { id, .. } => !st.moving.contains(id.as_str()),
                Command::Down { .. } => true,
            });
            commands
        };
        let mut moves = Vec::new();
        for c in commands {
            match c {
                Command::StartLocal { id, epoch, from } => self.restart_local(&id, epoch, from),
                Command::MoveTo { id, to, epoch } => moves.push((id, to, epoch)),
                Command::Down { id, node } => self.emit(HubEvent::ChildDown { id, node }),
            }
        }
        if !moves.is_empty() {
            let me = Arc::clone(self);
            tokio::spawn(async move { me.move_children(moves).await });
        }
        self.keep_replicas();
    }

    /// This node's standby copy of `id`, if it holds one, and a context to run it in.
    pub(crate) fn standby_copy(&self, id: &Arc<str>) -> Option<(Vec<u8>, ChildCtx)> {
        let st = self.state.read().unwrap();
        let copy = st.copies.get(&**id)?;
        Some((
            copy.state.clone(),
            ChildCtx {
                id: id.clone(),
                node: self.me,
                epoch: copy.version.0,
                events: self.events.clone(),
                replicator: None,
                role: None,
                // Reads only: no table of writes needed.
                recent: None,
            },
        ))
    }

    /// Gives every replicated child running here the standbys the ring says it should
    /// have (after a join, a death, a promotion, a move), sending them its state.
    fn keep_replicas(self: &Arc<Self>) {
        // Runs every second: nothing to do (and no scan of every child) in a binary
        // without replicated types.
        if !component::any_replicated() {
            return;
        }
        let resyncs: Vec<(Arc<str>, Arc<dyn ErasedChild>)> = {
            // Scanned under the read lock (calls keep routing); the write lock only marks.
            let st = self.state.read().unwrap();
            let mut out = Vec::new();
            for (id, l) in &st.local {
                let replicas = component::replicas(l.child.type_name());
                if replicas <= 1 || st.moving.contains(id) || st.resyncing.contains(id) {
                    continue;
                }
                let Some(e) = st.registry.get(id) else {
                    continue;
                };
                if e.owner != self.me || st.registry.pending_from(id).is_some() {
                    continue;
                }
                let desired = self.desired_standbys(&st.ring, id, replicas);
                if e.standbys.as_deref().unwrap_or_default() != desired.as_slice() {
                    out.push((id.clone(), l.child.clone()));
                }
            }
            drop(st);
            let mut st = self.state.write().unwrap();
            // A resync another replan started meanwhile is not started twice.
            out.retain(|(id, _)| st.resyncing.insert(id.clone()));
            out
        };
        for (id, child) in resyncs {
            let me = Arc::clone(self);
            tokio::spawn(async move {
                child.resync().await;
                me.state.write().unwrap().resyncing.remove(&id);
            });
        }
    }

    /// Puts children that were not called for `hibernate_after` to sleep.
    fn hibernate_idle(&self) {
        let Some(idle) = self.hibernate_after else {
            return;
        };
        let children: Vec<Arc<dyn ErasedChild>> = {
            let st = self.state.read().unwrap();
            st.local.values().map(|l| l.child.clone()).collect()
        };
        let now = Instant::now();
        for c in children {
            c.try_hibernate(idle, now);
        }
    }

    /// Restarts a child of a dead or departed node here, from its start state.
    fn restart_local(&self, id: &str, epoch: u64, from: NodeId) {
        // A standby copy here is the latest acknowledged state: promote it.
        let (entry, copy) = {
            let mut guard = self.state.write().unwrap();
            let st = &mut *guard;
            let Some(entry) = st.registry.get(id).cloned() else {
                return;
            };
            // An active/active replica runs here: it becomes the primary as it is.
            if let Some(l) = st.local.get_mut(id).filter(|l| l.replica) {
                l.replica = false;
                l.epoch = epoch;
                // The other replicas run on: they stay named (the next shipment drops
                // those that are gone).
                let entry = Entry {
                    owner: self.me,
                    epoch,
                    standbys: entry.standbys_but(self.me),
                    ..entry
                };
                st.registry.upsert(id, entry.clone());
                self.transport
                    .broadcast(&Push::Upsert(vec![(id.to_string(), entry)]));
                tokio::spawn(l.child.clone().run_hook(Hook::Role(crate::Role::Primary)));
                drop(guard);
                self.emit(HubEvent::PrimaryPromoted {
                    id: id.to_string(),
                    node: self.me,
                    epoch,
                    from,
                });
                return;
            }
            (entry, st.copies.remove(id))
        };
        let promoted = copy.is_some();
        let (state, recent) = match copy {
            Some(c) => (c.state, c.recent),
            None => (entry.start_state.to_vec(), RecentCalls::default()),
        };
        let item = StartItem {
            id: id.to_string(),
            type_name: entry.type_name.to_string(),
            state,
            epoch,
            // With the start state beside it, as a moved state arrives.
            start_state: promoted.then(|| serde_bytes::ByteBuf::from(entry.start_state.to_vec())),
            flags: entry.flags,
            recent: Vec::new(),
            node: None,
        };
        let outcome = match component::vtable(&entry.type_name) {
            Some(vt) => self.start_local(&item, |mut args| {
                // The promoted copy answers the retries of writes it already holds.
                if promoted {
                    args.recent = Some(Arc::new(std::sync::Mutex::new(recent)));
                }
                (vt.spawn)(&item.state, args, false)
            }),
            None => StartOutcome::UnknownType { node: self.me },
        };
        match outcome {
            StartOutcome::Started { epoch, .. } if promoted => {
                self.emit(HubEvent::PrimaryPromoted {
                    id: id.to_string(),
                    node: self.me,
                    epoch,
                    from,
                })
            }
            StartOutcome::Started { epoch, .. } => self.emit(HubEvent::ChildRestarted {
                id: id.to_string(),
                node: self.me,
                epoch,
                reason: RestartReason::NodeDown { node: from },
            }),
            StartOutcome::AlreadyStarted { .. } => {}
            other => {
                tracing::error!(%id, "could not restart: {other:?}");
                let mut st = self.state.write().unwrap();
                if st.registry.remove(id, self.me, epoch).is_some() {
                    self.transport
                        .broadcast(&Push::Remove(vec![(id.to_string(), epoch)]));
                }
                drop(st);
                self.emit(HubEvent::ChildLost {
                    id: id.to_string(),
                    reason: format!("{other:?}"),
                });
            }
        }
    }

    /// Moves children to their new owners, at most `move_concurrency` frozen at a time,
    /// in batches of up to [`START_BATCH`] per owner: each is frozen (new calls wait,
    /// calls in flight finish), its state taken (or, for `migration = "cold"`, its start
    /// state used), started on the new owner under the next epoch, and then gone from
    /// here: the waiting calls follow it. A move that fails or does not finish within
    /// `move_timeout` puts the child back here, with its state. Returns (moved, failed).
    pub(crate) async fn move_children(
        self: Arc<Self>,
        moves: Vec<(String, NodeId, u64)>,
    ) -> (usize, usize) {
        use futures_util::StreamExt;
        let mut by_node: HashMap<NodeId, Vec<Move>> = HashMap::new();
        {
            let mut st = self.state.write().unwrap();
            for (id, to, epoch) in moves {
                let (Some(e), Some(l)) = (st.registry.get(&id), st.local.get(&*id)) else {
                    continue;
                };
                if e.owner != self.me || st.moving.contains(&*id) {
                    continue;
                }
                let m = Move {
                    type_name: e.type_name.to_string(),
                    start_state: e.start_state.to_vec(),
                    flags: e.flags,
                    child: l.child.clone(),
                    from_epoch: l.epoch,
                    epoch,
                    id,
                };
                st.moving.insert(Arc::from(m.id.as_str()));
                by_node.entry(to).or_default().push(m);
            }
        }
        let batch = self.move_concurrency.min(START_BATCH);
        let parallel = (self.move_concurrency / batch).max(1);
        // Once a target proves unreachable, the rest of its batches fail at once (put
        // back here) instead of each waiting for the deadline.
        let unreachable = std::sync::Mutex::new(HashSet::new());
        let mut units: Vec<(NodeId, Vec<Move>)> = Vec::new();
        for (to, moves) in by_node {
            let mut moves = moves.into_iter().peekable();
            while moves.peek().is_some() {
                units.push((to, moves.by_ref().take(batch).collect()));
            }
        }
        let unreachable = &unreachable;
        futures_util::stream::iter(units)
            .map(|(to, chunk)| self.move_batch(to, chunk, unreachable))
            .buffer_unordered(parallel)
            .fold((0, 0), |(m, f), (dm, df)| async move { (m + dm, f + df) })
            .await
    }

    /// Moves one batch of children to `to`. Returns (moved, failed).
    async fn move_batch(
        &self,
        to: NodeId,
        chunk: Vec<Move>,
        unreachable: &std::sync::Mutex<HashSet<NodeId>>,
    ) -> (usize, usize) {
        let (mut moved, mut failed) = (0, 0);
        if unreachable.lock().unwrap().contains(&to) {
            for m in &chunk {
                let reason = format!("{to} is unreachable");
                self.move_failed(m.id.as_str(), &*m.child, to, reason, None);
            }
            return (0, chunk.len());
        }
        let deadline = Instant::now() + self.move_timeout;
        let frozen =
            futures_util::future::join_all(chunk.iter().map(|m| m.child.clone().freeze_for_move()))
                .await;
        let mut items = Vec::with_capacity(chunk.len());
        let mut sent = Vec::with_capacity(chunk.len());
        for (m, state) in chunk.into_iter().zip(frozen) {
            match state {
                Some(Ok(state)) => {
                    items.push(StartItem {
                        id: m.id.clone(),
                        type_name: m.type_name.clone(),
                        state: state.unwrap_or_else(|| m.start_state.clone()),
                        epoch: m.epoch,
                        start_state: Some(serde_bytes::ByteBuf::from(m.start_state.clone())),
                        flags: m.flags,
                        node: None,
                        recent: calls_to_wire(&m.child.recent_calls()),
                    });
                    sent.push(m);
                }
                Some(Err(reason)) => {
                    failed += 1;
                    self.move_failed(m.id.as_str(), &*m.child, to, reason, None);
                }
                // Stopped meanwhile: nothing to move.
                None => {
                    self.state.write().unwrap().moving.remove(m.id.as_str());
                }
            }
        }
        let outcomes = self.send_moved(to, items, deadline).await;
        for (
            m,
            Sent {
                outcome,
                offered,
                unreachable: gone,
            },
        ) in sent.into_iter().zip(outcomes)
        {
            match outcome {
                StartOutcome::Started { .. } | StartOutcome::AlreadyStarted { .. } => {
                    moved += 1;
                    self.move_done(&m, to);
                }
                other => {
                    failed += 1;
                    if gone {
                        unreachable.lock().unwrap().insert(to);
                    }
                    // Unknown outcome only if the request went out.
                    let offered = offered.then_some(m.epoch);
                    self.move_failed(m.id.as_str(), &*m.child, to, format!("{other:?}"), offered);
                }
            }
        }
        (moved, failed)
    }

    /// Starts moved children on `to`: in requests of up to half a frame, and each state
    /// too large for that in parts. One outcome per item, in order.
    async fn send_moved(&self, to: NodeId, items: Vec<StartItem>, deadline: Instant) -> Vec<Sent> {
        let limit = self.batch_bytes();
        let mut outcomes = Vec::with_capacity(items.len());
        for group in batches(&items, START_BATCH, limit, item_size) {
            let res = if group.len() == 1 && item_size(&group[0]) > limit {
                self.send_staged(to, group, deadline).await
            } else {
                let req = Request::Start {
                    items: group.to_vec(),
                    hops: MAX_HOPS,
                };
                self.transport
                    .request_within(to, req, RECONNECT_WAIT, deadline)
                    .await
            };
            match res {
                Ok(Response::Started(o)) if o.len() == group.len() => {
                    outcomes.extend(o.into_iter().map(|outcome| Sent {
                        outcome,
                        offered: true,
                        unreachable: false,
                    }));
                }
                other => {
                    let unreachable = matches!(other, Err(TransportError::NotConnected));
                    let offered = !unreachable
                        && !matches!(
                            other,
                            Err(TransportError::TooLarge { .. } | TransportError::Encode(_))
                        );
                    let message = format!("no start on {to}: {other:?}");
                    outcomes.extend(group.iter().map(|_| Sent {
                        outcome: StartOutcome::Failed {
                            message: message.clone(),
                        },
                        offered,
                        unreachable,
                    }));
                }
            }
        }
        outcomes
    }

    /// Sends `items` to `to` in parts of half a frame, then asks it to start them.
    async fn send_staged(
        &self,
        to: NodeId,
        items: &[StartItem],
        deadline: Instant,
    ) -> Result<Response, TransportError> {
        let bytes =
            postcard::to_allocvec(items).map_err(|e| TransportError::Encode(e.to_string()))?;
        if bytes.len() > self.max_state_size {
            return Err(TransportError::TooLarge {
                size: bytes.len(),
                max: self.max_state_size,
            });
        }
        let transfer = self.next_transfer.fetch_add(1, Ordering::Relaxed);
        let part = self.batch_bytes().max(1);
        for (i, data) in bytes.chunks(part).enumerate() {
            let req = Request::Stage {
                transfer,
                offset: (i * part) as u64,
                total: bytes.len() as u64,
                data: std::borrow::Cow::Borrowed(data),
            };
            match self
                .transport
                .request_within(to, req, RECONNECT_WAIT, deadline)
                .await?
            {
                Response::Staged(Ok(())) => {}
                other => return Ok(other),
            }
        }
        let req = Request::StartStaged {
            transfer,
            hops: MAX_HOPS,
        };
        self.transport
            .request_within(to, req, RECONNECT_WAIT, deadline)
            .await
    }

    /// A move succeeded: the registry points at the new owner before the waiting calls
    /// are let go, so they follow it.
    fn move_done(&self, m: &Move, to: NodeId) {
        let Move {
            id,
            epoch,
            from_epoch,
            type_name,
            start_state,
            flags,
            child,
        } = m;
        let (id, epoch) = (id.as_str(), *epoch);
        {
            let mut st = self.state.write().unwrap();
            st.moving.remove(id);
            st.local.remove(id);
            // The new owner's own entry may be here already (its push can overtake its
            // answer): it is the truth, standbys included, and is kept. Otherwise ours
            // says what the new owner will: the standbys stay, but for itself.
            let confirmed = st
                .registry
                .get(id)
                .is_some_and(|e| (e.epoch, e.owner) >= (epoch, to));
            if !confirmed {
                let standbys = st.registry.get(id).and_then(|e| e.standbys_but(to));
                let entry = Entry {
                    type_name: st.registry.intern(type_name),
                    owner: to,
                    epoch,
                    start_state: StartState::from_slice(start_state),
                    flags: *flags,
                    standbys,
                };
                st.registry.upsert(id, entry);
            }
            // The new owner's entry (a later epoch) replaces ours everywhere; the removal
            // only clears it sooner. Not for a replicated child: to its replicas a removal
            // means a stop.
            if component::replicas(type_name) <= 1 {
                self.transport
                    .broadcast(&Push::Remove(vec![(id.to_string(), *from_epoch)]));
            }
        }
        child.move_done();
        self.emit(HubEvent::ChildMigrated {
            id: id.to_string(),
            from: self.me,
            to,
            epoch,
        });
    }

    /// A move failed: the child goes on here, with its state.
    ///
    /// When the target was sent the child under `offered` and its answer is unknown (a
    /// timeout, a lost connection), the target may run it anyway: the child here takes
    /// the epoch after `offered`, so the registry keeps this one everywhere and the
    /// target, seeing it, stops its copy.
    fn move_failed(
        &self,
        id: &str,
        child: &dyn ErasedChild,
        to: NodeId,
        reason: String,
        offered: Option<u64>,
    ) {
        tracing::warn!(%id, %to, "move failed, it stays here: {reason}");
        {
            let mut guard = self.state.write().unwrap();
            let st = &mut *guard;
            st.moving.remove(id);
            if let (Some(offered), Some(local)) = (offered, st.local.get_mut(id)) {
                local.epoch = offered + 1;
                if let Some(mut entry) = st.registry.get(id).cloned() {
                    entry.owner = self.me;
                    entry.epoch = offered + 1;
                    st.registry.upsert(id, entry.clone());
                    self.transport
                        .broadcast(&Push::Upsert(vec![(id.to_string(), entry)]));
                }
            }
        }
        child.move_failed();
        self.emit(HubEvent::MigrationFailed {
            id: id.to_string(),
            to,
            reason,
        });
    }

    /// Serves calls that arrived over the network together: the lookups happen now,
    /// and each child gets its calls, in arrival order, as one message (one actor
    /// wake-up); its actor answers them through `reply`. Calls that can be answered
    /// at once are.
    fn serve_calls(
        self: &Arc<Self>,
        calls: Vec<InCall<'_>>,
        reply: &ReplySink,
        out: &mut Vec<Serving>,
    ) {
        type Group = (Arc<dyn ErasedChild>, Vec<u64>, Vec<EncodedCall>);
        let mut groups: Vec<Group> = Vec::new();
        let mut by_id: HashMap<&str, usize> = HashMap::new();
        let mut answered: Vec<(u64, Response)> = Vec::new();
        {
            let st = self.state.read().unwrap();
            for c in calls {
                let Some(local) = st.local.get(c.id) else {
                    answered.push((c.rid, self.not_here(c.id, placed(&st.registry, c.id))));
                    continue;
                };
                let child = &local.child;
                if child.type_name() != c.type_name {
                    let err = crate::CallError::WrongType {
                        id: c.id.to_string(),
                        expected: c.type_name.to_string(),
                        actual: child.type_name().to_string(),
                    };
                    answered.push((c.rid, Response::Reply(Err(err))));
                    continue;
                }
                let g = *by_id.entry(c.id).or_insert_with(|| {
                    groups.push((Arc::clone(child), Vec::new(), Vec::new()));
                    groups.len() - 1
                });
                groups[g].1.push(c.rid);
                groups[g].2.push(c.call);
            }
        }
        if !answered.is_empty() {
            reply(answered);
        }
        for (child, rids, calls) in groups {
            let hub = Arc::clone(self);
            let reply = Arc::clone(reply);
            let id: Arc<str> = Arc::from(child.id());
            let respond = Responder::new(move |replies| {
                let responses = match replies {
                    Some(replies) => rids
                        .into_iter()
                        .zip(replies)
                        .map(|(rid, r)| (rid, Response::Reply(r.map(serde_bytes::ByteBuf::from))))
                        .collect(),
                    // It moved or stopped while the calls waited: send the callers after it.
                    None => {
                        let placed = placed(&hub.state.read().unwrap().registry, &id);
                        let resp = hub.not_here(&id, placed);
                        rids.into_iter().map(|rid| (rid, resp.clone())).collect()
                    }
                };
                reply(responses);
            });
            out.push(child.call_batch(calls, respond));
        }
    }

    /// Starts items sent by another node (new children, or moved ones).
    async fn serve_start(self: Arc<Self>, items: Vec<StartItem>, hops: u8) -> Response {
        if self.is_stopped() {
            let o = StartOutcome::Failed {
                message: "hub is shutting down".into(),
            };
            return Response::Started(vec![o; items.len()]);
        }
        // Decode the states (and run `#[on_handover_in]`) first, outside the hub's lock
        // and on a blocking thread: a big state or a slow hook must hold up neither the
        // rest of the node nor a worker of its runtime. A child made here starts
        // dormant; if the item turns out not to start here, it is dropped unused.
        let ring = self.state.read().unwrap().ring.clone();
        let me = self.me;
        let hub = Arc::clone(&self);
        let count = items.len();
        type Prepared = Vec<Option<Result<Arc<dyn ErasedChild>, String>>>;
        let made = tokio::task::spawn_blocking(move || {
            let prepared: Prepared = items
                .iter()
                .map(|item| {
                    let owner = item.node.or_else(|| ring.owner(&item.id));
                    let local = hops >= MAX_HOPS || owner.unwrap_or(me) == me;
                    local.then(|| hub.prepare_child(item, None))
                })
                .collect();
            (items, prepared)
        })
        .await;
        let (items, mut prepared) = match made {
            Ok(made) => made,
            Err(e) => {
                let o = StartOutcome::Failed {
                    message: format!("preparing the children failed: {e}"),
                };
                return Response::Started(vec![o; count]);
            }
        };
        let unknown: Vec<bool> = items
            .iter()
            .map(|i| component::vtable(&i.type_name).is_none())
            .collect();
        let mut outcomes = self
            .start_items(items, hops, |i, item, ctx| match prepared[i].take() {
                Some(child) => child,
                // Placed here after all (the ring changed meanwhile): make it now.
                None => self.prepare_child(item, Some(ctx)),
            })
            .await;
        for (o, unknown) in outcomes.iter_mut().zip(unknown) {
            if unknown && matches!(o, StartOutcome::Failed { .. }) {
                *o = StartOutcome::UnknownType { node: me };
            }
        }
        Response::Started(outcomes)
    }

    /// A dormant child for a start item arriving from another node (`ctx`, or one made
    /// here): its state decoded, and `#[on_handover_in]` run if it was handed over.
    fn prepare_child(
        &self,
        item: &StartItem,
        ctx: Option<ChildCtx>,
    ) -> Result<Arc<dyn ErasedChild>, String> {
        let vt = component::vtable(&item.type_name).ok_or_else(String::new)?;
        let mut ctx = ctx.unwrap_or_else(|| {
            self.child_ctx(
                Arc::from(item.id.as_str()),
                item.epoch.max(1),
                &item.type_name,
            )
        });
        if !item.recent.is_empty() {
            // Writes it already applied stay known where it goes.
            let recent = calls_from_wire(item.recent.clone());
            ctx.recent = Some(Arc::new(std::sync::Mutex::new(RecentCalls::from_list(
                recent,
            ))));
        }
        // A state that arrives with its start state beside it was handed over.
        (vt.spawn)(&item.state, ctx, item.start_state.is_some())
    }

    /// The standbys the ring gives a child with `replicas` copies run here.
    fn desired_standbys(&self, ring: &Ring, id: &str, replicas: usize) -> Vec<NodeId> {
        ring.owners(id, replicas)
            .into_iter()
            .filter(|n| *n != self.me)
            .take(replicas.saturating_sub(1))
            .collect()
    }

    /// Sends a replicated child's state (the whole of it: state shipping) to the
    /// standbys the ring gives it now, and returns once each has it or is left out.
    /// The nodes that took it are its standby set; a change of the set is published
    /// before this returns, so a write acknowledged after it is on every standby named
    /// in the registry.
    async fn ship(
        &self,
        id: Arc<str>,
        type_name: &'static str,
        (_, seq): (u64, u64),
        state: Vec<u8>,
        calls: CallsToShip,
    ) {
        let CallsToShip {
            unshipped,
            recent,
            in_step,
        } = calls;
        let in_step_now = in_step.lock().unwrap().clone();
        // The registry's epoch, not the actor's: a replica promoted in place keeps its
        // actor (active/active).
        let (current, targets, epoch) = {
            let st = self.state.read().unwrap();
            match st.registry.get(&id) {
                Some(e) if e.owner == self.me => (
                    e.standbys.as_deref().unwrap_or_default().to_vec(),
                    self.desired_standbys(&st.ring, &id, component::replicas(type_name)),
                    e.epoch,
                ),
                // Not ours (any more): nothing to keep in step.
                _ => {
                    in_step.lock().unwrap().clear();
                    return;
                }
            }
        };
        if targets.is_empty() && current.is_empty() {
            in_step.lock().unwrap().clear();
            return;
        }
        let deadline = Instant::now() + self.call_timeout;
        let delta = calls_to_wire(&unshipped);
        let whole = targets.iter().any(|n| !in_step_now.contains(n)).then(|| {
            recent
                .as_ref()
                .map(|r| calls_to_wire(&r.lock().unwrap().to_list()))
                .unwrap_or_default()
        });
        let sends = targets.iter().map(|node| {
            let append = in_step_now.contains(node);
            let req = Request::Replicate {
                id: id.to_string(),
                type_name: type_name.to_string(),
                epoch,
                seq,
                state: serde_bytes::ByteBuf::from(state.clone()),
                recent: if append {
                    delta.clone()
                } else {
                    whole.clone().unwrap_or_default()
                },
                append,
            };
            let t = &self.transport;
            async move {
                matches!(
                    t.request_within(*node, req, RECONNECT_WAIT, deadline).await,
                    Ok(Response::Replicated(Ok(())))
                )
            }
        });
        let took: Vec<NodeId> = futures_util::future::join_all(sends)
            .await
            .into_iter()
            .zip(&targets)
            .filter(|(ok, _)| *ok)
            .map(|(_, n)| *n)
            .collect();
        in_step.lock().unwrap().clone_from(&took);
        if took == current {
            return;
        }
        let mut st = self.state.write().unwrap();
        let Some(e) = st.registry.get(&id).cloned() else {
            return;
        };
        if e.owner != self.me || e.epoch != epoch {
            return;
        }
        let added: Vec<NodeId> = took
            .iter()
            .filter(|n| !current.contains(n))
            .copied()
            .collect();
        let removed: Vec<NodeId> = current
            .iter()
            .filter(|n| !took.contains(n))
            .copied()
            .collect();
        let entry = Entry {
            standbys: (!took.is_empty()).then(|| took.into_boxed_slice()),
            ..e
        };
        st.registry.upsert(&id, entry.clone());
        self.transport
            .broadcast(&Push::Upsert(vec![(id.to_string(), entry)]));
        drop(st);
        for node in added {
            self.emit(HubEvent::ReplicaAdded {
                id: id.to_string(),
                node,
            });
        }
        for node in removed {
            self.emit(HubEvent::ReplicaRemoved {
                id: id.to_string(),
                node,
            });
        }
    }

    /// Keeps a standby copy sent by a replicated child's primary, unless a newer one is
    /// here (shipments after asynchronous writes may arrive out of order).
    fn keep_copy(
        &self,
        id: &str,
        type_name: &str,
        version: (u64, u64),
        state: Vec<u8>,
        (recent, append): (Vec<(u128, Vec<u8>)>, bool),
    ) -> Result<(), String> {
        let vt = component::vtable(type_name);
        if vt.is_some_and(|v| v.active_active) {
            return self.run_replica(id, type_name, version.0, &state);
        }
        let mut st = self.state.write().unwrap();
        if st.local.contains_key(id) {
            return Err(format!("{id} runs here; it has no standby here"));
        }
        match st.copies.get_mut(id) {
            Some(c) => {
                if supersedes(c.version, version, id)? {
                    c.version = version;
                    c.state = state;
                    if append {
                        c.recent.extend(recent);
                    } else {
                        c.recent = RecentCalls::from_list(recent);
                    }
                }
                Ok(())
            }
            None => {
                st.copies.insert(
                    Arc::from(id),
                    StandbyCopy {
                        version,
                        state,
                        recent: RecentCalls::from_list(recent),
                    },
                );
                Ok(())
            }
        }
    }

    /// Starts an active/active replica of `id` here from `state`, unless one runs: it
    /// serves calls made here and those sent here, on its own.
    fn run_replica(
        &self,
        id: &str,
        type_name: &str,
        epoch: u64,
        state: &[u8],
    ) -> Result<(), String> {
        let vt = component::vtable(type_name).ok_or_else(|| format!("unknown type {type_name}"))?;
        if self.state.read().unwrap().local.contains_key(id) {
            return Ok(());
        }
        let mut ctx = self.child_ctx(Arc::from(id), epoch, type_name);
        ctx.role = Some(crate::Role::Replica);
        let child = (vt.spawn)(state, ctx, false)?;
        let mut st = self.state.write().unwrap();
        if st.local.contains_key(id) {
            return Ok(());
        }
        st.local.insert(
            Arc::from(id),
            LocalChild {
                child,
                epoch,
                restarted: false,
                replica: true,
            },
        );
        Ok(())
    }

    /// The answer to a call for a child this node does not run, from where the
    /// registry places it (owner, and whether that owner is still restarting it).
    fn not_here(&self, id: &str, placed: Option<(NodeId, bool)>) -> Response {
        match placed {
            Some((owner, _)) if owner != self.me => Response::NotHere { owner },
            // Being restarted here (its node died; the start is under way): the caller
            // tries again in a moment.
            Some((_, true)) => Response::NotHere { owner: self.me },
            _ => Response::Reply(Err(crate::CallError::NotFound { id: id.to_string() })),
        }
    }

    /// Waits until no move of a child of this node is under way (each ends within the
    /// move timeout, rolled back if it must).
    async fn wait_moves(&self) {
        let deadline = Instant::now() + self.move_timeout + Duration::from_secs(1);
        while !self.state.read().unwrap().moving.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Whether a child running here is handed over when this node leaves or drains.
    /// Active/active instances are not: a replica elsewhere takes over as it is (each
    /// instance has its own state, and a handover would overwrite the one it reached).
    fn hands_over(&self, st: &State, id: &str, l: &LocalChild) -> bool {
        let active = component::vtable(l.child.type_name()).is_some_and(|v| v.active_active);
        let others_run = st.registry.get(id).is_some_and(|e| {
            e.standbys
                .as_deref()
                .is_some_and(|s| s.iter().any(|n| *n != self.me))
        });
        !(l.replica || active && others_run)
    }

    async fn drain(self: &Arc<Self>) -> Result<DrainReport, HubError> {
        if self.is_stopped() {
            return Err(HubError::Stopped);
        }
        // Counted first: the planner starts moving children as soon as this node is
        // off the ring.
        // (Active/active instances stay: see `hands_over`.)
        let own = |st: &State| {
            st.local
                .iter()
                .filter(|(id, l)| self.hands_over(st, id, l))
                .count()
        };
        let before = own(&self.state.read().unwrap());
        // Take this node off the ring here and everywhere: no new placements.
        self.state.write().unwrap().draining.insert(self.me);
        self.recompute_members();
        for c in self.transport.connections() {
            c.push(&Push::Draining);
        }
        if let Some(m) = self.membership.lock().await.as_ref() {
            m.announce_draining().await;
        }
        let moves = {
            let st = self.state.read().unwrap();
            // Where each goes by its strategy, now that this node takes none.
            let targets = strategy_targets(self.me, &st.registry, &st.ring, &st.members);
            let moves: Vec<(String, NodeId, u64)> = st
                .local
                .iter()
                .filter(|(id, l)| self.hands_over(&st, id, l))
                .filter_map(|(id, l)| {
                    let e = st.registry.get(id)?;
                    if e.flags.pinned() {
                        return None;
                    }
                    let to = targets(id, e).filter(|to| *to != self.me)?;
                    Some((id.to_string(), to, l.epoch + 1))
                })
                .collect();
            moves
        };
        Arc::clone(self).move_children(moves).await;
        // The planner's timer may have started some of these moves first: wait for them.
        self.wait_moves().await;
        let left = own(&self.state.read().unwrap());
        let report = DrainReport {
            moved: before.saturating_sub(left),
            failed: left,
        };
        self.emit(HubEvent::DrainCompleted {
            moved: report.moved,
            failed: report.failed,
        });
        Ok(report)
    }

    async fn shutdown(self: &Arc<Self>) -> Result<(), HubError> {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Children pinned here that stay down when their node goes stop with it.
        let bound: Vec<(String, &'static str)> = {
            let st = self.state.read().unwrap();
            st.local
                .iter()
                .filter(|(id, _)| {
                    st.registry
                        .get(id)
                        .is_some_and(|e| e.flags.pinned() && e.flags.stay_down())
                })
                .map(|(id, l)| (id.to_string(), l.child.type_name()))
                .collect()
        };
        for (id, type_name) in bound {
            self.stop_local(&id, type_name).await;
        }
        // Hand every other child to its owner on the ring without this node, with its
        // state; what cannot be handed over is restarted by the others from its start
        // state.
        let moves: Vec<(String, NodeId, u64)> = {
            let st = self.state.read().unwrap();
            // Where each would go if this node were gone: where its strategy says.
            let others = Ring::new(st.ring.members().iter().copied().filter(|n| *n != self.me));
            let members: Vec<NodeId> = st
                .members
                .iter()
                .copied()
                .filter(|n| *n != self.me)
                .collect();
            let targets = strategy_targets(self.me, &st.registry, &others, &members);
            st.local
                .iter()
                .filter(|(id, l)| self.hands_over(&st, id, l))
                .filter_map(|(id, l)| {
                    let to = match st.registry.get(id) {
                        Some(e) => targets(id, e),
                        None => others.owner(id),
                    }?;
                    Some((id.to_string(), to, l.epoch + 1))
                })
                .collect()
        };
        if !moves.is_empty() {
            let (moved, failed) = Arc::clone(self).move_children(moves).await;
            tracing::info!(me = %self.me, moved, failed, "handed children over before leaving");
        }
        // Moves the planner started before (on a join) are not in that list: let them
        // finish, or the others would restart those children from their start state.
        self.wait_moves().await;
        // Tell the peers directly (fast), then through gossip (reaches the rest).
        for c in self.transport.connections() {
            c.push(&Push::Leaving);
        }
        if let Some(m) = self.membership.lock().await.as_ref() {
            m.announce_leaving().await;
        }
        // Wait until the others have taken over what ran here (or have gone too).
        let deadline = Instant::now() + self.call_timeout;
        while Instant::now() < deadline {
            let waiting = {
                let st = self.state.read().unwrap();
                st.ring.members().len() > 1 && st.registry.iter().any(|(_, e)| e.owner == self.me)
            };
            if !waiting {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let children: Vec<LocalChild> = {
            let mut st = self.state.write().unwrap();
            st.local.drain().map(|(_, l)| l).collect()
        };
        for l in children {
            l.child.stop().await;
        }
        self.transport.shutdown().await;
        if let Some(m) = self.membership.lock().await.take() {
            m.shutdown().await;
        }
        Ok(())
    }
}

impl HubInner {
    /// Stops as a killed process would: children and their states are gone, and the
    /// peers are told nothing (their failure detector finds out).
    async fn kill(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        self.transport.shutdown().await;
        if let Some(m) = self.membership.lock().await.take() {
            m.shutdown().await;
        }
        let children: Vec<LocalChild> = {
            let mut st = self.state.write().unwrap();
            st.copies.clear();
            st.local.drain().map(|(_, l)| l).collect()
        };
        for l in children {
            l.child.stop().await;
        }
    }
}

async fn control_loop(
    hub: Weak<HubInner>,
    mut members: mpsc::UnboundedReceiver<crate::membership::View>,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let mut tick = tokio::time::interval(REPLAN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Sleep sweeps run at half the idle time (so a child sleeps within 1.5x of it).
    let sweep_every = hub
        .upgrade()
        .and_then(|h| h.hibernate_after)
        .map_or(REPLAN_INTERVAL, |idle| {
            (idle / 2).clamp(Duration::from_millis(5), REPLAN_INTERVAL)
        });
    let mut sweep = tokio::time::interval(sweep_every);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let Some(hub) = hub.upgrade() else { return };
                if hub.is_stopped() {
                    return;
                }
                hub.replan();
                // Parts of a big state whose sender went quiet (it died, or gave up).
                hub.staging.lock().unwrap().purge(Instant::now(), hub.move_timeout);
            }
            _ = sweep.tick() => {
                let Some(hub) = hub.upgrade() else { return };
                if hub.is_stopped() {
                    return;
                }
                hub.hibernate_idle();
            }
            m = members.recv() => {
                let Some(view) = m else { return };
                let Some(hub) = hub.upgrade() else { return };
                {
                    let mut st = hub.state.write().unwrap();
                    st.chitchat_members = view.members;
                    st.departed.extend(view.leaving);
                    st.draining.extend(view.draining);
                }
                hub.recompute_members();
            }
            c = control.recv() => {
                let Some(c) = c else { return };
                let Some(hub) = hub.upgrade() else { return };
                {
                    let mut st = hub.state.write().unwrap();
                    match c {
                        Control::Departed(node) => st.departed.insert(node),
                        Control::Draining(node) => st.draining.insert(node),
                    };
                }
                hub.recompute_members();
            }
        }
    }
}

impl Inbound for HubInner {
    fn calls(
        self: Arc<Self>,
        _from: NodeId,
        calls: Vec<InCall<'_>>,
        reply: &ReplySink,
        out: &mut Vec<Serving>,
    ) {
        self.serve_calls(calls, reply, out);
    }

    fn request(self: Arc<Self>, from: NodeId, req: Request<'_>) -> BoxFuture<'static, Response> {
        match req {
            // The transport hands every call to `calls`, never here.
            Request::Call { .. } => Box::pin(std::future::ready(Response::Reply(Err(
                crate::CallError::Codec {
                    message: "a call reached the request path".into(),
                },
            )))),
            Request::Start { items, hops } => Box::pin(self.serve_start(items, hops)),
            Request::Stage {
                transfer,
                offset,
                total,
                data,
            } => {
                let part = Part {
                    offset,
                    total,
                    data: &data,
                };
                let staged = self.staging.lock().unwrap().stage(
                    (from, transfer),
                    part,
                    self.max_state_size,
                    Instant::now(),
                );
                Box::pin(std::future::ready(Response::Staged(staged)))
            }
            Request::Replicate {
                id,
                type_name,
                epoch,
                seq,
                state,
                recent,
                append,
            } => {
                let recent = calls_from_wire(recent);
                let kept = self.keep_copy(
                    &id,
                    &type_name,
                    (epoch, seq),
                    state.into_vec(),
                    (recent, append),
                );
                Box::pin(std::future::ready(Response::Replicated(kept)))
            }
            Request::StartStaged { transfer, hops } => {
                let staged = self.staging.lock().unwrap().take((from, transfer));
                Box::pin(async move {
                    let items = staged.and_then(|bytes| {
                        postcard::from_bytes::<Vec<StartItem>>(&bytes)
                            .map_err(|e| format!("malformed staged items: {e}"))
                    });
                    match items {
                        Ok(items) => self.serve_start(items, hops).await,
                        Err(message) => Response::Staged(Err(message)),
                    }
                })
            }
            Request::Stop { id, type_name } => {
                Box::pin(async move { Response::Stopped(self.stop_local(&id, &type_name).await) })
            }
        }
    }

    fn push(&self, from: NodeId, push: Push) {
        let mut to_stop = Vec::new();
        {
            let mut guard = self.state.write().unwrap();
            let st = &mut *guard;
            match push {
                Push::Upsert(entries) => {
                    for (id, entry) in entries {
                        if entry.owner != from {
                            continue;
                        }
                        let standby_here = entry
                            .standbys
                            .as_deref()
                            .is_some_and(|s| s.contains(&self.me));
                        // An active replica here stays while the primary names it.
                        if st.local.get(&*id).is_some_and(|l| l.replica) {
                            if !standby_here {
                                if let Some(l) = st.local.remove(&*id) {
                                    to_stop.push((id.clone(), l));
                                }
                            }
                            if st.registry.upsert(&id, entry) == Upsert::Ignored {
                                tracing::debug!(%id, %from, "ignored a losing entry");
                            }
                            continue;
                        }
                        // A duplicate: another node runs it under a winning entry.
                        if let Some(l) = st.local.get(&*id) {
                            let ours = Entry {
                                type_name: entry.type_name.clone(),
                                owner: self.me,
                                epoch: l.epoch,
                                start_state: StartState::new(),
                                flags: entry.flags,
                                standbys: None,
                            };
                            if wins(&entry, &ours) && !st.moving.contains(&*id) {
                                if let Some(l) = st.local.remove(&*id) {
                                    to_stop.push((id.clone(), l));
                                }
                            }
                        }
                        if st.registry.upsert(&id, entry) == Upsert::Ignored {
                            tracing::debug!(%id, %from, "ignored a losing entry");
                        } else if !standby_here {
                            // No longer a standby of it: its copy goes.
                            st.copies.remove(id.as_str());
                        }
                    }
                }
                Push::Remove(ids) => {
                    for (id, epoch) in ids {
                        if st.registry.remove(&id, from, epoch).is_some() {
                            st.copies.remove(id.as_str());
                            // Stopped: an active replica of it here stops too.
                            if st.local.get(id.as_str()).is_some_and(|l| l.replica) {
                                if let Some(l) = st.local.remove(id.as_str()) {
                                    to_stop.push((id.clone(), l));
                                }
                            }
                        }
                    }
                }
                Push::Snapshot {
                    entries,
                    first,
                    last,
                } => {
                    let buf = st.snapshots.entry(from).or_default();
                    if first {
                        buf.clear();
                    }
                    buf.extend(entries.into_iter().filter(|(_, e)| e.owner == from));
                    if last {
                        let snapshot = st.snapshots.remove(&from).unwrap_or_default();
                        st.registry.replace_origin(from, snapshot);
                    }
                }
                Push::Leaving => {
                    let _ = self.control.send(Control::Departed(from));
                }
                Push::Draining => {
                    let _ = self.control.send(Control::Draining(from));
                }
            }
        }
        for (id, l) in to_stop {
            if l.replica {
                tracing::debug!(%id, "stopping an active replica: no longer named");
            } else {
                tracing::warn!(%id, "stopping a duplicate: another node won it");
            }
            let events = self.events.clone();
            let me = self.me;
            tokio::spawn(async move {
                l.child.stop().await;
                let _ = events.send(HubEvent::ChildStopped {
                    id: id.to_string(),
                    node: me,
                });
            });
        }
    }

    fn connected(&self, peer: NodeId, conn: &Arc<Conn>, register: &dyn Fn()) {
        // Hold the state lock: no delta can slip between the snapshot and registration.
        let st = self.state.write().unwrap();
        let own: Vec<(String, Entry)> = st
            .registry
            .owned_by(self.me)
            .into_iter()
            .filter(|(id, _)| {
                st.registry.pending_from(id).is_none() && st.local.contains_key(id.as_str())
            })
            .collect();
        let mut chunks = batches(&own, SNAPSHOT_CHUNK, self.batch_bytes(), entry_size).peekable();
        if chunks.peek().is_none() {
            conn.push(&Push::Snapshot {
                entries: Vec::new(),
                first: true,
                last: true,
            });
        }
        let mut first = true;
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            conn.push(&Push::Snapshot {
                entries: chunk.to_vec(),
                first,
                last,
            });
            first = false;
        }
        register();
        drop(st);
        tracing::debug!(me = %self.me, %peer, "connected");
    }
}

/// Places the new children of one type, one after another (each counted in the loads
/// the next one sees).
pub(crate) struct Placer {
    placement: Option<placement::TypePlacement>,
    ring: Arc<Ring>,
    me: NodeId,
    named: Option<NodeId>,
    loads: Vec<usize>,
}

impl Placer {
    /// The node `id` starts on, `None` when the ring owner takes it (the owner checks
    /// the ring itself), or why it cannot be placed.
    pub(crate) fn place(&mut self, id: &str) -> Result<Option<NodeId>, String> {
        let Some(p) = self.placement else {
            // A type this binary does not have: its owner on the ring says so.
            return Ok(None);
        };
        if let (Some(node), false) = (self.named, p.kind == Distribution::Guided) {
            return Err(format!(
                "a node ({node}) can be named only for `distribution = \"guided\"`; this type's is {}",
                p.kind
            ));
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

/// The node each child should be on by its type's strategy, for the planner: the ring
/// owner (`consistent_hash`, and for the others once their node is gone), where a
/// `bounded_load` or custom strategy sends it, or where it is.
pub(crate) fn strategy_targets<'a>(
    me: NodeId,
    registry: &Registry,
    ring: &'a Ring,
    members: &'a [NodeId],
) -> impl Fn(&str, &Entry) -> Option<NodeId> + 'a {
    let alive = |n: NodeId| members.binary_search(&n).is_ok();
    let custom =
        |type_name: &str| component::vtable(type_name).and_then(|v| (v.placement.custom)());
    let moved = placement::replacements(me, registry, ring, &alive, &custom);
    move |id, e| {
        if let Some(to) = moved.get(id) {
            return Some(*to);
        }
        let placing = ring.members().binary_search(&e.owner).is_ok();
        // An active/active primary stays while its node takes children: moving it would
        // overwrite the replica running where it goes (each has its own state).
        let active = || {
            e.standbys.is_some() && component::vtable(&e.type_name).is_some_and(|v| v.active_active)
        };
        match e.flags.distribution() {
            Distribution::BoundedLoad | Distribution::Custom if placing => Some(e.owner),
            _ if placing && active() => Some(e.owner),
            _ => ring.owner(id),
        }
    }
}

/// Where the registry places `id`: its owner, and whether that owner is still
/// restarting it (pending).
fn placed(registry: &Registry, id: &str) -> Option<(NodeId, bool)> {
    let e = registry.get(id)?;
    Some((e.owner, registry.pending_from(id).is_some()))
}

/// Whether a standby copy of version `incoming` (epoch, shipment) replaces one of
/// `held`: a newer shipment does, an older one is ignored (asynchronous shipments may
/// arrive out of order), and one from an older epoch is refused (its primary was
/// replaced: it must learn it is a standby no more).
fn supersedes(held: (u64, u64), incoming: (u64, u64), id: &str) -> Result<bool, String> {
    if held.0 > incoming.0 {
        return Err(format!(
            "a copy of {id} from epoch {} is newer than {}",
            held.0, incoming.0
        ));
    }
    Ok(incoming > held)
}

/// The hub's side of replication for one child: sends its state to its standbys.
struct HubReplicator {
    hub: Weak<HubInner>,
    /// Shipments so far (kept while the child sleeps: its actor is made anew).
    seq: AtomicU64,
    /// The standbys that took every shipment of this instance, its table of identified
    /// writes included: they get only what is new of it.
    in_step: Arc<std::sync::Mutex<Vec<NodeId>>>,
}

/// A shipment's part of a child's table of identified writes ([`RecentCalls`]): what
/// a standby in step lacks, and the whole table for the others.
struct CallsToShip {
    unshipped: Vec<(u128, Vec<u8>)>,
    recent: SharedRecent,
    in_step: Arc<std::sync::Mutex<Vec<NodeId>>>,
}

impl Replicator for HubReplicator {
    fn ship(
        &self,
        id: Arc<str>,
        type_name: &'static str,
        epoch: u64,
        state: Vec<u8>,
        recent: SharedRecent,
    ) -> BoxFuture<'static, ()> {
        let hub = self.hub.clone();
        // Numbered now, in the order of the writes, with the calls recorded since the
        // previous shipment.
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let unshipped = recent
            .as_ref()
            .map(|r| r.lock().unwrap().take_unshipped())
            .unwrap_or_default();
        let calls = CallsToShip {
            unshipped,
            recent,
            in_step: self.in_step.clone(),
        };
        Box::pin(async move {
            if let Some(hub) = hub.upgrade() {
                hub.ship(id, type_name, (epoch, seq), state, calls).await;
            }
        })
    }
}

/// Splits `items` into runs of at most `count` items and at most `bytes` bytes as
/// measured by `size` (a single item larger than `bytes` makes a run of its own).
pub(crate) fn batches<'a, T>(
    items: &'a [T],
    count: usize,
    bytes: usize,
    size: impl Fn(&T) -> usize + 'a,
) -> impl Iterator<Item = &'a [T]> + 'a {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut n = 0;
        let mut total = 0;
        while n < rest.len() && n < count {
            let s = size(&rest[n]);
            if n > 0 && total + s > bytes {
                break;
            }
            total += s;
            n += 1;
        }
        let (run, tail) = rest.split_at(n);
        rest = tail;
        Some(run)
    })
}

/// Roughly the encoded size of a registry entry.
fn entry_size((id, e): &(String, Entry)) -> usize {
    id.len() + e.type_name.len() + e.start_state.len() + 64
}

/// Roughly the encoded size of a start item.
pub(crate) fn item_size(item: &StartItem) -> usize {
    item.id.len()
        + item.type_name.len()
        + item.state.len()
        + item.start_state.as_ref().map_or(0, |s| s.len())
        + 32
}

#[cfg(test)]
mod batch_tests {
    use super::{batches, supersedes};

    #[test]
    fn newer_copies_win_and_older_epochs_are_refused() {
        assert_eq!(supersedes((1, 1), (1, 2), "x"), Ok(true));
        assert_eq!(supersedes((1, 2), (1, 1), "x"), Ok(false), "late, ignored");
        assert_eq!(supersedes((1, 2), (1, 2), "x"), Ok(false), "again, ignored");
        assert_eq!(
            supersedes((1, 9), (2, 1), "x"),
            Ok(true),
            "a promoted primary"
        );
        assert!(
            supersedes((2, 1), (1, 9), "x").is_err(),
            "a replaced primary"
        );
    }

    #[test]
    fn runs_are_bounded_by_count_and_by_bytes() {
        let sizes = [1, 2, 3, 10, 1, 1, 1, 1];
        let runs: Vec<&[usize]> = batches(&sizes, 3, 5, |s| *s).collect();
        assert_eq!(
            runs,
            vec![&[1, 2][..], &[3][..], &[10][..], &[1, 1, 1][..], &[1][..]]
        );
        assert_eq!(batches(&[] as &[usize], 3, 5, |s| *s).count(), 0);
    }
}
