//! Building and starting a hub.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::{
    Hub, HubInner, DEFAULT_CALL_TIMEOUT, DEFAULT_HIBERNATE_AFTER, DEFAULT_JOIN_TIMEOUT,
    DEFAULT_LEASE, DEFAULT_MAX_FRAME, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MOVE_TIMEOUT,
    DEFAULT_STABLE_AFTER, START_BATCH,
};
use super::{
    CLUSTER_KEY_ENV, DEFAULT_ASYNC_SHIP_WINDOW, DEFAULT_MAX_MOVE_DEFERRAL, MIN_CLUSTER_KEY,
};
use crate::child::lease::Lease;
use crate::child::types::{any_replicated, type_info};
use crate::core::downing::{PartitionTolerance, SafetyConfig};
use crate::core::engine::Engine;
use crate::core::staging::Staging;
use crate::core::view::Gossip;
use crate::error::HubError;
use crate::hub::control::control_loop;
use crate::hub::membership::{Chitchat, GossipConfig, Membership, MembershipScript};
use crate::net::auth::{ClusterAuth, Nonces};
use crate::net::link::{Listener, Network, Tcp};
use crate::net::memory::MemoryNetwork;
use crate::net::tls::{Tls, TlsListener, TlsTcp};
use crate::net::transport::{Inbound, Limits, Transport};
use crate::node::NodeId;

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
    max_in_flight: usize,
    hibernate_after: Option<Duration>,
    move_timeout: Duration,
    max_move_deferral: Duration,
    async_ship_window: Duration,
    move_concurrency: usize,
    max_state_size: usize,
    join_timeout: Duration,
    safety: SafetyConfig,
    /// The cluster key this hub proves with, then the others it accepts; empty: read
    /// [`CLUSTER_KEY_ENV`] at start.
    keys: Vec<Key>,
    /// Whether the user accepted a hub without a key on a reachable address.
    insecure: bool,
    /// Mutual TLS for the connections between nodes.
    tls: Option<Tls>,
    /// Where the metrics and the cluster page are served.
    admin: Option<String>,
    /// An in-memory network and scripted membership instead of TCP and chitchat.
    world: Option<World>,
}

/// A cluster key, kept out of `Debug`.
#[derive(Clone)]
struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({} bytes)", self.0.len())
    }
}

/// Where a hub's connections and membership come from.
type Plumbing = (
    Box<dyn Listener>,
    Arc<dyn Network>,
    NodeId,
    Box<dyn Membership>,
    Arc<ClusterAuth>,
);

/// A world for hubs in one process: an in-memory network, membership by script, and
/// incarnations from a seed instead of the clock (tests and the simulator). One
/// cluster per world: the script shows every hub of it to every other.
#[derive(Clone, Debug, Default)]
pub(crate) struct World {
    pub(crate) net: MemoryNetwork,
    pub(crate) membership: MembershipScript,
    seed: u64,
    started: Arc<AtomicU64>,
}

// Used by the tests, and by the simulator that runs many hubs in one world.
#[cfg_attr(not(any(test, feature = "sim")), allow(dead_code))]
impl World {
    /// A new world; `seed` makes the incarnations of its hubs.
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            seed,
            net: MemoryNetwork::seeded(seed),
            ..Self::default()
        }
    }

    /// The incarnation of the next hub started in this world: from the seed, in order.
    fn next_incarnation(&self) -> u64 {
        let n = self.started.fetch_add(1, Ordering::Relaxed) + 1;
        // A splitmix64 step: distinct, and the same for the same seed.
        let mut z = self
            .seed
            .wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) & ((1 << 53) - 1)
    }
}

impl HubBuilder {
    /// A builder with the defaults, for cluster `hub_id`.
    pub(super) fn new(hub_id: String) -> Self {
        HubBuilder {
            hub_id,
            listen: "127.0.0.1:0".into(),
            seeds: Vec::new(),
            call_timeout: DEFAULT_CALL_TIMEOUT,
            gossip_interval: Duration::from_millis(100),
            phi_threshold: 8.0,
            max_frame: DEFAULT_MAX_FRAME,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            hibernate_after: Some(DEFAULT_HIBERNATE_AFTER),
            move_timeout: DEFAULT_MOVE_TIMEOUT,
            max_move_deferral: DEFAULT_MAX_MOVE_DEFERRAL,
            async_ship_window: DEFAULT_ASYNC_SHIP_WINDOW,
            move_concurrency: START_BATCH,
            max_state_size: 1 << 30,
            join_timeout: DEFAULT_JOIN_TIMEOUT,
            safety: SafetyConfig {
                strategy: PartitionTolerance::default(),
                stable_after: DEFAULT_STABLE_AFTER,
                lease: DEFAULT_LEASE,
            },
            keys: Vec::new(),
            insecure: false,
            tls: None,
            admin: None,
            world: None,
        }
    }

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

    /// With seeds: how long [`start`](Self::start) waits for the cluster. It returns
    /// once a seed answered, the registry of every member in view has arrived (so the
    /// new hub knows every child before it places one) and no new member showed for
    /// three gossip rounds; if no seed answers in time,
    /// it fails with [`HubError::NoSeedReachable`] instead of starting a cluster of its
    /// own. Seeds that are this hub's own address are skipped (a hub whose only seed is
    /// itself starts alone). Default 10 s.
    pub fn join_timeout(mut self, timeout: Duration) -> Self {
        self.join_timeout = timeout;
        self
    }

    /// What this hub does when the cluster splits or a node only looks dead: see
    /// [`PartitionTolerance`]. Default [`PartitionTolerance::MajorityQuorum`]: a side
    /// without a strict majority of the cluster fences itself, the side with one takes
    /// over. Every hub of a cluster should use the same.
    pub fn partition_tolerance(mut self, strategy: PartitionTolerance) -> Self {
        self.safety.strategy = strategy;
        self
    }

    /// How long a node serves after a quorum last confirmed it (its lease, renewed
    /// while it serves). A node downed by the others has its children started elsewhere
    /// 1.25 leases after a quorum downed it, so a shorter lease fails over sooner and
    /// renews more often. Default 400 ms.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.safety.lease = lease.max(Duration::from_millis(1));
        self
    }

    /// How long the set of unreachable members must stay the same before the
    /// unreachable are downed (a flapping link downs nobody). Default 300 ms, after
    /// the failure detector's own time (about half a second with the default gossip).
    pub fn stable_after(mut self, stable: Duration) -> Self {
        self.safety.stable_after = stable;
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

    /// How many requests of one peer (calls, starts, ...) this node serves at once on
    /// a connection; default [`DEFAULT_MAX_IN_FLIGHT`]. The next ones wait, unread,
    /// until answers go out (backpressure: the peer's calls queue and, past their
    /// deadline, fail with `CallError::Timeout`; nothing is refused). Past it the
    /// connection holds up to 8 MiB of waiting frames, then stops reading, so that TCP
    /// makes the peer wait. At least 1.
    pub fn max_requests_in_flight(mut self, requests: usize) -> Self {
        self.max_in_flight = requests.max(1);
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

    /// How long before-move handlers may defer a move
    /// ([`Hooks::before_move`](crate::Hooks::before_move), [`MoveConsent::Defer`]):
    /// past it the move goes ahead. A shutdown waits for it too, so keep it short.
    /// Default 5 s.
    ///
    /// [`MoveConsent::Defer`]: crate::MoveConsent::Defer
    pub fn max_move_deferral(mut self, max: Duration) -> Self {
        self.max_move_deferral = max;
        self
    }

    /// How long the state of a child of a `sync = "async"` type waits after a write
    /// before it ships to the standbys: the writes of that window go in one shipment
    /// of the state as it is then, instead of one each. A crash of the primary may lose
    /// the writes of the last window (and of a shipment in flight), as `sync = "async"`
    /// allows. Zero ships after every write. Types shipping their calls
    /// (`ship = "calls"`) ship each call at once either way. Default 1 ms.
    pub fn async_ship_window(mut self, window: Duration) -> Self {
        self.async_ship_window = window;
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

    /// The cluster key: every connection between hubs starts with a challenge-response
    /// that proves both sides hold it (HMAC-SHA256 over fresh nonces, the hub id and
    /// both node identities), before anything else is read or sent; a peer without it
    /// gets nothing and changes nothing ([`HubEvent::Unauthenticated`](crate::HubEvent)
    /// reports it). At least [`MIN_CLUSTER_KEY`] bytes (32 random bytes are right);
    /// every node of the cluster needs it. Without one in code, the hub reads
    /// [`CLUSTER_KEY_ENV`] (`PROCESSHUB_CLUSTER_KEY`); without either, it refuses to
    /// listen on an address other machines can reach unless [`HubBuilder::insecure`] is
    /// said. Setting a key again replaces the one this hub proves with; the keys given
    /// with [`HubBuilder::accept_cluster_key`] stay accepted.
    pub fn cluster_key(mut self, key: impl AsRef<[u8]>) -> Self {
        let key = Key(key.as_ref().to_vec());
        if self.keys.is_empty() {
            self.keys.push(key);
        } else {
            self.keys[0] = key;
        }
        self
    }

    /// A key accepted besides [`HubBuilder::cluster_key`], for a key rotation: first
    /// every node accepts the new key, then each proves with it (and accepts the old),
    /// then the old one is dropped; the cluster stays connected throughout. Needs a
    /// cluster key.
    pub fn accept_cluster_key(mut self, key: impl AsRef<[u8]>) -> Self {
        if self.keys.is_empty() {
            // A placeholder the first cluster_key (or the environment) replaces.
            self.keys.push(Key(Vec::new()));
        }
        self.keys.push(Key(key.as_ref().to_vec()));
        self
    }

    /// Lets a hub without a cluster key listen on an address other machines can reach:
    /// only for a network where every machine is trusted. The hub id is then the only
    /// check (it is sent in clear, so it is no secret).
    pub fn insecure(mut self) -> Self {
        self.insecure = true;
        self
    }

    /// Encrypts every connection between nodes with mutual TLS: each node presents
    /// `tls`'s certificate and accepts peers whose certificate chain leads to its
    /// trusted roots (see [`Tls`]). Every node of the cluster needs it. The cluster key
    /// is still required (it authenticates the gossip, which TLS does not cover, and
    /// is checked again inside the encrypted stream). Off by default: the cluster key
    /// alone authenticates, without encryption.
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Serves this hub's metrics (Prometheus text at `/metrics`) and a live page of the
    /// cluster (`/`: the members and their state, each one's share of the ring, the
    /// children per node and type, the recent moves, restarts and promotions, and a
    /// search box that looks a child up) over HTTP at `addr` (`127.0.0.1:0` picks a
    /// free port: [`Hub::admin_addr`] tells which). The hub then records its metrics
    /// into a Prometheus recorder of its own rather than the application's global one
    /// (see the crate's telemetry section). Nothing on it changes the cluster; it
    /// needs no key: bind it where only operators reach it. Default: none.
    pub fn admin_listen(mut self, addr: impl Into<String>) -> Self {
        self.admin = Some(addr.into());
        self
    }

    /// The keys this hub proves with and accepts: the builder's, or the environment's;
    /// checked against the listen address.
    fn cluster_keys(&self, listen: SocketAddr) -> Result<Vec<Vec<u8>>, HubError> {
        let mut keys: Vec<Vec<u8>> = self.keys.iter().map(|k| k.0.clone()).collect();
        if keys.first().is_none_or(Vec::is_empty) {
            match std::env::var_os(CLUSTER_KEY_ENV) {
                Some(v) if !v.is_empty() => {
                    let key = v.as_encoded_bytes().to_vec();
                    match keys.first_mut() {
                        Some(first) => *first = key,
                        None => keys.push(key),
                    }
                }
                _ if keys.is_empty() => {
                    // Loopback (and in-process worlds) cannot be reached from another
                    // machine: no key is needed there.
                    if !listen.ip().is_loopback() && self.world.is_none() && !self.insecure {
                        return Err(HubError::NoClusterKey {
                            addr: listen.to_string(),
                        });
                    }
                    return Ok(keys);
                }
                _ => {}
            }
        }
        if let Some(weak) = keys.iter().find(|k| k.len() < MIN_CLUSTER_KEY) {
            return Err(HubError::WeakClusterKey {
                len: weak.len(),
                min: MIN_CLUSTER_KEY,
            });
        }
        Ok(keys)
    }

    /// Binds the TCP listener and starts chitchat on the same port number.
    async fn bind_tcp(
        &self,
        listen: SocketAddr,
        members_tx: mpsc::UnboundedSender<Gossip>,
        auth: &Arc<ClusterAuth>,
        events: &crate::hooks::Events,
    ) -> Result<(TcpListener, NodeId, Chitchat), HubError> {
        let gossip = GossipConfig {
            interval: self.gossip_interval,
            phi_threshold: self.phi_threshold,
            auth: Arc::clone(auth),
            events: events.clone(),
        };
        let incarnation = new_incarnation();
        // TCP and UDP share the port number: with port 0 we retry until both are free.
        let mut attempt = 0;
        loop {
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
            match Chitchat::start(
                me,
                &self.hub_id,
                self.seeds.clone(),
                &gossip,
                members_tx.clone(),
            )
            .await
            {
                Ok(m) => return Ok((listener, me, m)),
                Err(e) if listen.port() == 0 && attempt < 20 => {
                    tracing::debug!("gossip port {} taken ({e}), retrying", addr.port());
                }
                Err(e) => return Err(HubError::Membership(e)),
            }
        }
    }

    /// Runs the hub in `world` (an in-memory network, membership by script) instead of
    /// over TCP and chitchat. Seeds are not needed there: the script makes every hub of
    /// the world see the others.
    #[cfg_attr(not(any(test, feature = "sim")), allow(dead_code))]
    pub(crate) fn in_world(mut self, world: &World) -> Self {
        self.world = Some(world.clone());
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
        let keys = self.cluster_keys(listen)?;
        for seed in &self.seeds {
            if seed.parse::<SocketAddr>().is_err() && !seed.contains(':') {
                return Err(HubError::InvalidAddress {
                    addr: seed.clone(),
                    message: "a seed is host:port".into(),
                });
            }
        }
        let admin = match &self.admin {
            Some(addr) => {
                let at: SocketAddr = addr.parse().map_err(|e: std::net::AddrParseError| {
                    HubError::InvalidAddress {
                        addr: addr.clone(),
                        message: e.to_string(),
                    }
                })?;
                let bound = tokio::net::TcpListener::bind(at).await;
                Some(bound.map_err(|source| HubError::Bind {
                    addr: addr.clone(),
                    source,
                })?)
            }
            None => None,
        };
        let (members_tx, members_rx) = mpsc::unbounded_channel();
        let telemetry = crate::telemetry::Telemetry::new(admin.is_some());
        let events = crate::hooks::Events::new(16_384, telemetry);
        let (listener, network, me, membership, auth): Plumbing = match &self.world {
            Some(world) => {
                let (addr, listener, endpoint) =
                    world.net.bind(listen).map_err(|source| HubError::Bind {
                        addr: listen.to_string(),
                        source,
                    })?;
                let me = NodeId::new(addr, world.next_incarnation());
                let member = world.membership.register(me, members_tx);
                // (A seed gives the same run: nonces from it too.)
                let nonces = Nonces::Seeded(AtomicU64::new(me.incarnation()));
                let auth = Arc::new(ClusterAuth::new(keys, &self.hub_id, nonces));
                (
                    Box::new(listener),
                    Arc::new(endpoint),
                    me,
                    Box::new(member),
                    auth,
                )
            }
            None => {
                let auth = Arc::new(ClusterAuth::new(keys, &self.hub_id, Nonces::Os));
                let (listener, me, chitchat) =
                    self.bind_tcp(listen, members_tx, &auth, &events).await?;
                let (listener, network): (Box<dyn Listener>, Arc<dyn Network>) = match &self.tls {
                    Some(tls) => (
                        Box::new(TlsListener {
                            listener,
                            tls: tls.clone(),
                        }),
                        Arc::new(TlsTcp(tls.clone())),
                    ),
                    None => (Box::new(listener), Arc::new(Tcp)),
                };
                (listener, network, me, Box::new(chitchat), auth)
            }
        };
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let inner = Arc::new_cyclic(|weak: &Weak<HubInner>| {
            let inbound: Weak<dyn Inbound> = weak.clone();
            HubInner {
                addr: me.addr(),
                incarnation: AtomicU64::new(me.incarnation()),
                new_incarnation: match &self.world {
                    Some(world) => {
                        let world = world.clone();
                        Box::new(move || world.next_incarnation())
                    }
                    None => Box::new(new_incarnation),
                },
                hub_id: self.hub_id.clone(),
                call_timeout: {
                    // Replies of identified writes are kept as long as a caller retries.
                    crate::core::recent::note_call_timeout(self.call_timeout);
                    self.call_timeout
                },
                hibernate_after: self.hibernate_after,
                move_timeout: self.move_timeout,
                max_move_deferral: self.max_move_deferral,
                async_ship_window: self.async_ship_window,
                move_concurrency: self.move_concurrency,
                max_state_size: self.max_state_size,
                inline_decode: self.world.is_some(),
                staging: std::sync::Mutex::new(Staging::default()),
                weak: weak.clone(),
                call_ids: AtomicU64::new(1),
                next_transfer: AtomicU64::new(1),
                salvage_fetches: Default::default(),
                transport: Transport::start(
                    me,
                    self.hub_id.clone(),
                    auth,
                    Limits {
                        max_frame: self.max_frame,
                        max_in_flight: self.max_in_flight,
                    },
                    network,
                    listener,
                    inbound,
                ),
                membership: tokio::sync::Mutex::new(Some(membership)),
                engine: RwLock::new(Engine::new(
                    me,
                    type_info,
                    any_replicated(),
                    self.safety,
                    tokio::time::Instant::now().into_std(),
                )),
                lease: RwLock::new(Arc::new(Lease::new(self.safety))),
                events,
                admin: std::sync::OnceLock::new(),
                awake: Default::default(),
                stopped: AtomicBool::new(false),
                control: control_tx,
                ticks: Default::default(),
                held: Default::default(),
            }
        });
        if let Some(listener) = admin {
            let started = crate::admin::Admin::start(listener, Arc::downgrade(&inner));
            let admin = started.map_err(|source| HubError::Bind {
                addr: self.admin.clone().unwrap_or_default(),
                source,
            })?;
            let _ = inner.admin.set(admin);
        }
        tokio::spawn(control_loop(Arc::downgrade(&inner), members_rx, control_rx));
        tokio::spawn(super::lease::lease_loop(Arc::downgrade(&inner)));
        tokio::spawn(crate::client::ticks::tick_loop(
            Arc::downgrade(&inner),
            |h: &HubInner| &h.ticks,
        ));
        let listen_addr = inner.me().addr();
        // (A seed that is this hub's own address is not another node.)
        let others = self
            .seeds
            .iter()
            .any(|s| s.parse::<SocketAddr>().ok() != Some(listen_addr));
        if self.world.is_none() && others {
            // Three gossip rounds without a new member: the view has settled.
            let quiet = self.gossip_interval * 3;
            inner.join(&self.seeds, self.join_timeout, quiet).await?;
        }
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
