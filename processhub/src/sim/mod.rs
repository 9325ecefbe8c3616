//! A deterministic cluster simulator (feature `sim`): many hubs in one process, on
//! simulated time, over the in-memory network, with faults drawn from a seed.
//!
//! Each node runs on a current-thread tokio runtime of its own whose clock is paused;
//! the simulator drives the nodes in lockstep, one small step of simulated time at a
//! time, always in the same order. Nothing runs on another thread and nothing reads the
//! wall clock, so the same seed gives the same run. A node that is *paused* is simply not
//! driven: nothing it would send or time out happens, and when it resumes its clock
//! jumps and its timers fire late, all at once, as after a GC pause or a stopped VM.
//!
//! ```text
//!  Sim::step ─► membership as each node's failure detector would see it (detection
//!      │        delay, pauses, partitions) ─► MembershipScript
//!      └──────► for each live, unpaused node, in order: drive its runtime to `now`
//!                 (its hub, its children, its clients; frames to others go through
//!                  the MemoryNetwork, with the faults of the link)
//! ```
//!
//! ```
//! use std::time::Duration;
//! use processhub::sim::{Sim, SimConfig};
//!
//! let mut sim = Sim::new(7, SimConfig { nodes: 3, ..SimConfig::default() });
//! sim.run_for(Duration::from_secs(1));
//! assert_eq!(sim.hub(0).nodes().len(), 3);
//! sim.crash(2);
//! sim.run_for(Duration::from_secs(2));
//! assert_eq!(sim.hub(0).nodes().len(), 2);
//! ```
//!
//! Links are streams, as TCP connections are: per-frame loss, duplication and
//! reordering ([`LinkFault`]) are repaired by the receiving end the way TCP repairs
//! them (a retransmission after a timeout, a sequence check, putting frames back in
//! order), so the hubs see what TCP would show them: late frames, frames held behind a
//! lost one, and resets that lose what was in flight. A slow node ([`Sim::slow`]) runs
//! only now and then. Every call of a [`History`] is checked as it ends (two
//! acknowledgements of one value, a write that returns less than what was acknowledged
//! before it began); [`check`] adds what needs the end state.
//!
//! What it cannot stand in for: real TCP (its buffering, Nagle, windows, the kernel's
//! scheduling), chitchat's UDP gossip and phi-accrual detector (membership is scripted
//! from the simulated faults, with a fixed detection delay), OS signals and processes.
//! The multi-process tests keep those.

mod check;
mod scenario;
mod workload;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Runtime;

use crate::hub::{Hub, World};
use crate::node::NodeId;

pub use crate::net::memory::{Fault as LinkFault, JITTER, RETRANSMIT};
pub use check::{check, Check, Report, Verdict};
pub use scenario::{FaultKind, Outcome, Scenario};
pub use workload::{CallsCounter, History, Op, SimCounter, SyncCounter, Violation, Workload};

/// How a simulated cluster is made.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Nodes at the start.
    pub nodes: usize,
    /// How long a node's failure detector takes to declare a silent node dead.
    pub detection: Duration,
    /// How long a woken node takes to hear from the others again (it takes them for
    /// dead until then, as its failure detector did while it was paused).
    pub gossip_round: Duration,
    /// One step of simulated time.
    pub step: Duration,
    /// The hubs' call timeout.
    pub call_timeout: Duration,
    /// The hubs' partition strategy.
    pub partition_tolerance: crate::PartitionTolerance,
    /// How unevenly the news of a node added after [`Sim::new`] spreads: each member hears
    /// of it, and it of each member, at its own moment within this long of its start
    /// (drawn from the seed), as gossip brings it. Zero: everyone at once, at the next
    /// step.
    pub join_spread: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            nodes: 3,
            detection: Duration::from_millis(500),
            gossip_round: Duration::from_millis(100),
            step: Duration::from_millis(1),
            call_timeout: Duration::from_secs(2),
            partition_tolerance: crate::PartitionTolerance::default(),
            join_spread: Duration::ZERO,
        }
    }
}

struct Node {
    /// `None` once it crashed.
    rt: Option<Runtime>,
    hub: Hub,
    /// The simulated time its runtime has been driven to.
    clock: Duration,
    /// Paused from, until.
    paused: Option<(Duration, Duration)>,
    /// Slow: driven only once every this much simulated time (since, every).
    slow: Option<(Duration, Duration)>,
    /// Resumed from a pause long enough for its failure detector to take every peer
    /// for dead: it sees none of them until then.
    stale_until: Duration,
    crashed_at: Option<Duration>,
    /// It left gracefully: gone for everyone at once.
    left: bool,
    /// When it was started.
    added_at: Duration,
}

/// A simulated cluster. See the [module](self) for how it runs.
pub struct Sim {
    seed: u64,
    config: SimConfig,
    world: World,
    nodes: Vec<Node>,
    now: Duration,
    /// The side of each node while a partition lasts, and since when.
    partition: Option<(Vec<usize>, Duration)>,
    /// One-way cuts: frames from the first nodes to the second vanish, since when.
    cuts: Vec<(Vec<usize>, Vec<usize>, Duration)>,
    /// The view last given to each node.
    views: Vec<Option<Vec<NodeId>>>,
    /// What is wrong with each link (from, to), partitions aside.
    links: std::collections::BTreeMap<(usize, usize), LinkFault>,
    /// Children restarted from their start state by design: those of crashed nodes
    /// without a standby.
    excused: Arc<Mutex<BTreeSet<String>>>,
    /// `now` in microseconds, for the histories.
    clock: Arc<AtomicU64>,
    /// The hubs' events, once [`Sim::record_events`] asked for them.
    events: Option<EventLog>,
    /// Nodes that may be downed by the others (paused, or cut off): watched each step,
    /// and their plain children excused once they are, as a crashed node's are.
    suspects: BTreeSet<usize>,
    /// Each suspect's incarnation at the last step, and the plain children it owned.
    suspect_plain: std::collections::BTreeMap<usize, (NodeId, Vec<String>)>,
}

/// The events of every hub of a simulation, in the order they were seen: (simulated
/// time, node, event). Cheap to clone: all clones are the same.
pub type EventLog = Arc<Mutex<Vec<(Duration, usize, crate::events::HubEvent)>>>;

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.seed)
            .field("nodes", &self.nodes.len())
            .field("now", &self.now)
            .finish()
    }
}

const HUB_ID: &str = "sim";

impl Sim {
    /// A cluster of `config.nodes` hubs, from `seed`. The hubs have met when this returns.
    pub fn new(seed: u64, config: SimConfig) -> Self {
        let world = World::new(seed);
        let mut sim = Sim {
            seed,
            config,
            world,
            nodes: Vec::new(),
            now: Duration::ZERO,
            partition: None,
            cuts: Vec::new(),
            views: Vec::new(),
            links: Default::default(),
            excused: Default::default(),
            clock: Default::default(),
            events: None,
            suspects: BTreeSet::new(),
            suspect_plain: Default::default(),
        };
        sim.world.net.use_world_clock(sim.clock.clone());
        for _ in 0..sim.config.nodes {
            sim.add_node();
        }
        sim.run_for(sim.config.gossip_round);
        sim
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Simulated time since the start.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// How many nodes were started (crashed ones included; they keep their index).
    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    /// Whether node `i` runs (it did not crash).
    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].rt.is_some()
    }

    /// The nodes that run, by index.
    pub fn up(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|i| self.is_up(*i)).collect()
    }

    /// A new history whose calls are checked as they end (see [`History`]), at the
    /// simulated time, excusing what this simulator excuses: the plain counters of a
    /// crashed node, which restart from their start state by design.
    pub fn history(&self) -> History {
        History::watched(self.clock.clone(), self.excused.clone())
    }

    /// Whether child `id` was restarted from its start state by design (it ran on a
    /// node that crashed, with no standby).
    pub fn is_excused(&self, id: &str) -> bool {
        self.excused.lock().unwrap().contains(id)
    }

    /// From now on, records the events of every hub (and of the nodes added later).
    pub fn record_events(&mut self) -> EventLog {
        if let Some(log) = &self.events {
            return log.clone();
        }
        let log = EventLog::default();
        self.events = Some(log.clone());
        for i in self.up() {
            self.watch(i);
        }
        log
    }

    /// Records node `i`'s events in the log.
    fn watch(&self, i: usize) {
        let Some(log) = self.events.clone() else {
            return;
        };
        let mut rx = self.nodes[i].hub.events();
        let clock = self.clock.clone();
        self.spawn(i, async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        let at = Duration::from_micros(clock.load(Ordering::SeqCst));
                        log.lock().unwrap().push((at, i, ev));
                    }
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }

    /// The hub of node `i`.
    pub fn hub(&self, i: usize) -> &Hub {
        &self.nodes[i].hub
    }

    /// Starts a new node (a new incarnation at a new address); its index.
    pub fn add_node(&mut self) -> usize {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a current-thread runtime");
        let builder = Hub::builder(HUB_ID)
            .cluster_key("simulated-cluster-key")
            .in_world(&self.world)
            .call_timeout(self.config.call_timeout)
            .partition_tolerance(self.config.partition_tolerance);
        let hub = rt.block_on(builder.start()).expect("a hub in the world");
        self.nodes.push(Node {
            rt: Some(rt),
            hub,
            clock: self.now,
            paused: None,
            slow: None,
            stale_until: Duration::ZERO,
            crashed_at: None,
            left: false,
            added_at: self.now,
        });
        self.views.push(None);
        let new = self.nodes.len() - 1;
        self.watch(new);
        if self.partition.is_some() {
            // A node started during a partition is on side 0 (see `side`): its links
            // are cut as its failure detector has them, and its downing is excused.
            self.suspects.insert(new);
            self.apply_links();
        }
        new
    }

    /// Spawns `task` on node `i` (it runs as the node is driven; gone if it crashes).
    pub fn spawn<F>(&self, i: usize, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.nodes[i]
            .rt
            .as_ref()
            .expect("a node that runs")
            .spawn(task)
    }

    /// Runs `task` on node `i` while the whole cluster goes on, until it ends or
    /// `within` of simulated time passed (`None`).
    pub fn run_until<F>(&mut self, i: usize, within: Duration, task: F) -> Option<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handle = self.spawn(i, task);
        let end = self.now + within;
        while !handle.is_finished() {
            if self.now >= end || !self.is_up(i) {
                handle.abort();
                return None;
            }
            self.step();
        }
        let rt = self.nodes[i].rt.as_ref()?;
        rt.block_on(handle).ok()
    }

    /// Advances simulated time by `d`.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    /// Node `i` crashes: its hub, children, clients and standby copies are gone; the
    /// others' failure detectors notice after the detection time.
    pub fn crash(&mut self, i: usize) {
        self.excuse(i);
        let node = &mut self.nodes[i];
        // As a killed process: nothing of it runs again, not even its shutdown (which
        // would get its tasks another turn); its connections close, as the kernel
        // closes a dead process's sockets.
        if let Some(rt) = node.rt.take() {
            drop(rt);
            node.hub.sever();
            node.crashed_at = Some(self.now);
        }
    }

    /// Excuses the plain children node `i` owns: they restart from their start state
    /// by design, once it crashed or was downed.
    fn excuse(&self, i: usize) {
        let plain = self.plain_of(i);
        self.excused.lock().unwrap().extend(plain);
    }

    /// The children node `i` owns without a standby.
    fn plain_of(&self, i: usize) -> Vec<String> {
        let me = self.nodes[i].hub.node_id();
        self.nodes[i]
            .hub
            .children()
            .into_iter()
            .filter(|c| c.owner == me && c.standbys.is_empty())
            .map(|c| c.id.to_string())
            .collect()
    }

    /// Excuses the plain children of the suspects that a running peer downed (it will
    /// restart them from their start state).
    fn excuse_downed(&mut self) {
        let mut downed = Vec::new();
        for &i in &self.suspects {
            if !self.is_up(i) {
                continue;
            }
            let id = self.nodes[i].hub.node_id();
            // Rejoined since the last step (downed, and it heard so at once): what it
            // owned then is what restarts.
            if let Some((before, plain)) = self.suspect_plain.get(&i) {
                if *before != id {
                    downed.push((i, plain.clone()));
                    continue;
                }
            }
            let by_peer = self.up().into_iter().any(|j| {
                j != i
                    && self.nodes[j]
                        .hub
                        .inner
                        .engine
                        .read()
                        .unwrap()
                        .downing
                        .is_downed(id)
            });
            if by_peer {
                downed.push((i, self.plain_of(i)));
            }
        }
        for (i, plain) in downed {
            self.excused.lock().unwrap().extend(plain);
            self.suspects.remove(&i);
            self.suspect_plain.remove(&i);
        }
        for &i in &self.suspects {
            if self.is_up(i) {
                let entry = (self.nodes[i].hub.node_id(), self.plain_of(i));
                self.suspect_plain.insert(i, entry);
            }
        }
    }

    /// Node `i` leaves gracefully (`Hub::shutdown`: its children are handed over first),
    /// while the cluster goes on; then it is gone.
    pub fn shutdown(&mut self, i: usize) {
        if !self.is_up(i) {
            return;
        }
        let hub = self.nodes[i].hub.clone();
        let wait = self.config.call_timeout * 4;
        self.run_until(i, wait, async move {
            let _ = hub.shutdown().await;
        });
        let node = &mut self.nodes[i];
        node.left = true;
        node.rt = None;
    }

    /// Node `i` stops for `d` (a GC pause, a stopped VM): nothing of it runs, then it
    /// resumes where it was, its timers late.
    pub fn pause(&mut self, i: usize, d: Duration) {
        self.nodes[i].paused = Some((self.now, self.now + d));
        self.suspects.insert(i);
    }

    /// Splits the running nodes: `sides[i]` is the side of node `i`; a node started
    /// while the split lasts is on side 0. Frames between sides vanish (no reset: the
    /// connections stay up), and each side's failure detectors take the other side for
    /// dead after the detection time.
    pub fn partition(&mut self, sides: &[usize]) {
        self.partition = Some((sides.to_vec(), self.now));
        self.suspects.extend(0..sides.len().min(self.nodes.len()));
        self.apply_links();
    }

    /// Cuts one way: frames from the nodes `from` to the nodes `to` vanish (no reset),
    /// while the other way works. After the detection time the `to` nodes take the
    /// `from` nodes for dead; the `from` nodes go on hearing them.
    pub fn cut_one_way(&mut self, from: &[usize], to: &[usize]) {
        self.cuts.push((from.to_vec(), to.to_vec(), self.now));
        self.suspects.extend(from.iter().chain(to).copied());
        self.apply_links();
    }

    /// Ends a partition and the one-way cuts; the links keep the faults
    /// [`set_link`](Self::set_link) gave.
    pub fn heal_partition(&mut self) {
        self.partition = None;
        self.cuts.clear();
        self.apply_links();
    }

    /// Ends a partition and every link fault.
    pub fn heal(&mut self) {
        self.links.clear();
        self.partition = None;
        self.cuts.clear();
        self.world.net.heal_all();
    }

    /// Gives every link its fault: the one set on it, black-holed across a partition.
    fn apply_links(&mut self) {
        let addrs: Vec<_> = self.nodes.iter().map(|n| n.hub.listen_addr()).collect();
        for a in 0..self.nodes.len() {
            for b in 0..self.nodes.len() {
                if a == b {
                    continue;
                }
                let mut fault = self.links.get(&(a, b)).copied().unwrap_or_default();
                if let Some((sides, _)) = &self.partition {
                    fault.black_hole |= side(sides, a) != side(sides, b);
                }
                fault.black_hole |= self
                    .cuts
                    .iter()
                    .any(|(from, to, _)| from.contains(&a) && to.contains(&b));
                self.world.net.set_fault(addrs[a], addrs[b], fault);
            }
        }
    }

    /// Frames and bytes node `i` has sent so far (what the in-memory network carried).
    pub fn sent(&self, i: usize) -> (u64, u64) {
        self.world.net.sent(self.nodes[i].hub.listen_addr())
    }

    /// Frames and bytes node `a` has sent to node `b` so far.
    pub fn sent_to(&self, a: usize, b: usize) -> (u64, u64) {
        let (from, to) = (
            self.nodes[a].hub.listen_addr(),
            self.nodes[b].hub.listen_addr(),
        );
        self.world.net.sent_to(from, to)
    }

    /// Sets what is wrong with the link from node `a` to node `b` (one direction; the
    /// default heals it): delay, per-frame loss, duplication, reordering, resets. The
    /// connections are streams, as over TCP (see [`LinkFault`]).
    pub fn set_link(&mut self, a: usize, b: usize, fault: LinkFault) {
        if fault == LinkFault::default() {
            self.links.remove(&(a, b));
        } else {
            self.links.insert((a, b), fault);
        }
        self.apply_links();
    }

    /// Node `i` gets slow (a starved CPU, a swapping host): it runs only once every
    /// `every` of simulated time, catching up all at once, so everything it does is
    /// late by up to `every`. Zero makes it normal again.
    pub fn slow(&mut self, i: usize, every: Duration) {
        self.nodes[i].slow = (!every.is_zero()).then_some((self.now, every));
    }

    /// One step: membership as the failure detectors see it, then every running node
    /// driven to the new time, in order.
    pub fn step(&mut self) {
        self.now += self.config.step;
        self.clock
            .store(self.now.as_micros() as u64, Ordering::SeqCst);
        self.update_views();
        for node in &mut self.nodes {
            let Some(rt) = &node.rt else { continue };
            if let Some((since, every)) = node.slow {
                if !(self.now - since)
                    .as_micros()
                    .is_multiple_of(every.as_micros().max(1))
                {
                    continue;
                }
            }
            let mut resumed = false;
            if let Some((since, until)) = node.paused {
                if self.now < until {
                    continue;
                }
                node.paused = None;
                resumed = true;
                if until - since >= self.config.detection {
                    node.stale_until = self.now + self.config.gossip_round;
                }
            }
            let behind = self.now.saturating_sub(node.clock);
            if resumed {
                // As after SIGCONT: the clock has jumped, and every timer that came due
                // meanwhile fires at the new time (not one by one, each at its own
                // deadline, as if the node had run fast through its pause).
                rt.block_on(async move {
                    tokio::time::advance(behind).await;
                    tokio::task::yield_now().await;
                });
            } else {
                rt.block_on(async move { tokio::time::sleep(behind).await });
            }
            node.clock = self.now;
        }
        if !self.suspects.is_empty() {
            self.excuse_downed();
        }
    }

    /// Whether node `a`'s failure detector takes node `b` for alive now.
    fn sees(&self, a: usize, b: usize) -> bool {
        if a == b {
            return true;
        }
        let d = self.config.detection;
        let (na, nb) = (&self.nodes[a], &self.nodes[b]);
        if self.now < na.stale_until + self.heard_again_after(a, b) {
            return false;
        }
        let joined = na.added_at.max(nb.added_at);
        if !joined.is_zero() && self.now < joined + self.heard_of_after(a, b) {
            return false;
        }
        if nb.left || nb.crashed_at.is_some_and(|t| self.now >= t + d) {
            return false;
        }
        if nb.paused.is_some_and(|(since, _)| self.now >= since + d) {
            return false;
        }
        if let Some((sides, since)) = &self.partition {
            if side(sides, a) != side(sides, b) && self.now >= *since + d {
                return false;
            }
        }
        // `a` no longer hears `b`.
        if self
            .cuts
            .iter()
            .any(|(from, to, since)| from.contains(&b) && to.contains(&a) && self.now >= *since + d)
        {
            return false;
        }
        true
    }

    /// How long after node `a`'s view turns fresh again (after a long pause) it hears
    /// `b`: gossip brings the peers back one by one, each within a round, in an order
    /// drawn from the seed. (So a peer's connection may open, and its registry arrive,
    /// before `a` counts it as a member, as over real gossip.)
    fn heard_again_after(&self, a: usize, b: usize) -> Duration {
        let stale = self.nodes[a].stale_until;
        if stale.is_zero() {
            return Duration::ZERO;
        }
        self.pair_delay(a, b, stale.as_micros() as u64, self.config.gossip_round)
    }

    /// How long after the later of nodes `a` and `b` started `a` hears of `b` (see
    /// [`SimConfig::join_spread`]): drawn from the seed for each ordered pair, so the
    /// joiner's view and the members' views of it fill at moments of their own.
    fn heard_of_after(&self, a: usize, b: usize) -> Duration {
        self.pair_delay(a, b, 0x6a6f_696e, self.config.join_spread)
    }

    /// A delay under `within` for the ordered pair of nodes (`a`, `b`), drawn from the
    /// seed and `salt` (zero if `within` is).
    fn pair_delay(&self, a: usize, b: usize, salt: u64, within: Duration) -> Duration {
        let within = within.as_micros() as u64;
        if within == 0 {
            return Duration::ZERO;
        }
        let pair = ((a as u64) << 40) ^ ((b as u64) << 20) ^ salt;
        Duration::from_micros(workload::Rng::new(self.seed ^ pair).next_u64() % within)
    }

    fn update_views(&mut self) {
        for a in 0..self.nodes.len() {
            if self.nodes[a].rt.is_none() {
                continue;
            }
            let view: Vec<NodeId> = (0..self.nodes.len())
                .filter(|b| self.sees(a, *b))
                .map(|b| self.nodes[b].hub.node_id())
                .collect();
            if self.views[a].as_ref() != Some(&view) {
                let me = self.nodes[a].hub.node_id();
                self.world.membership.set_view(me, Some(view.clone()));
                self.views[a] = Some(view);
            }
        }
    }
}

/// The side of node `i` in a partition: nodes started after it began are on side 0.
fn side(sides: &[usize], i: usize) -> usize {
    sides.get(i).copied().unwrap_or(0)
}
