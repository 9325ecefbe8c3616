//! The simulator's workload: counters whose write returns the new value, clients on
//! every node that call them, and the history of every call.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::prelude::*;
use crate::sim::Sim;

/// A counter whose write returns the new value: two acknowledgements of one id with
/// the same value mean that two instances served writes.
#[distributed(name = "processhub::sim::SimCounter")]
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SimCounter {
    n: u64,
}

#[distributed]
impl SimCounter {
    /// Adds and returns the new value.
    pub fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }

    /// The value.
    pub fn get(&self) -> u64 {
        self.n
    }
}

/// [`SimCounter`] kept on three nodes, each write acknowledged once its standbys hold it.
#[distributed(name = "processhub::sim::SyncCounter", replicas = 3)]
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SyncCounter {
    n: u64,
}

#[distributed]
impl SyncCounter {
    /// Adds and returns the new value.
    pub fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }

    /// The value.
    pub fn get(&self) -> u64 {
        self.n
    }
}

/// [`SyncCounter`] with its writes shipped to the standbys as calls (`ship = "calls"`),
/// replayed on the copy that is promoted.
#[distributed(name = "processhub::sim::CallsCounter", replicas = 3, ship = "calls")]
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CallsCounter {
    n: u64,
}

#[distributed]
impl CallsCounter {
    /// Adds and returns the new value.
    pub fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }

    /// The value.
    pub fn get(&self) -> u64 {
        self.n
    }
}

/// The replicated counter type of a workload: [`SyncCounter`], or [`CallsCounter`]
/// with `ship_calls`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Replicated {
    pub(crate) ship_calls: bool,
}

impl Replicated {
    pub(crate) async fn start_many(self, hub: &Hub, ids: Vec<String>) -> Result<(), String> {
        let results: Vec<Result<(), StartError>> = if self.ship_calls {
            let items = ids.into_iter().map(|id| (id, CallsCounter::default()));
            let started = CallsCounter::start_many(hub, items.collect()).await;
            started.into_iter().map(|r| r.map(drop)).collect()
        } else {
            let items = ids.into_iter().map(|id| (id, SyncCounter::default()));
            let started = SyncCounter::start_many(hub, items.collect()).await;
            started.into_iter().map(|r| r.map(drop)).collect()
        };
        results
            .into_iter()
            .try_for_each(|r| r.map_err(|e| e.to_string()))
    }

    pub(crate) async fn add(self, hub: &Hub, id: String) -> Result<u64, CallError> {
        if self.ship_calls {
            CallsCounter::handle(hub, id).add(1).await
        } else {
            SyncCounter::handle(hub, id).add(1).await
        }
    }

    pub(crate) async fn get(self, hub: &Hub, id: String) -> Result<u64, CallError> {
        if self.ship_calls {
            CallsCounter::handle(hub, id).get().await
        } else {
            SyncCounter::handle(hub, id).get().await
        }
    }

    pub(crate) async fn stop(self, hub: &Hub, id: &str) -> Result<(), StopError> {
        if self.ship_calls {
            CallsCounter::stop(hub, id).await
        } else {
            SyncCounter::stop(hub, id).await
        }
    }
}

/// One call of the workload, as it was invoked and as it ended.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Op {
    /// Its place among every invocation of the run.
    pub seq: u64,
    /// The client that made it.
    pub client: usize,
    /// The node it was made on.
    pub node: usize,
    /// The counter.
    pub id: String,
    /// The epoch the caller's registry named for it when the call was made (`None`:
    /// not in that registry).
    pub epoch: Option<u64>,
    /// The largest value of the counter acknowledged before it was invoked: a write
    /// invoked after that must return more.
    pub floor: u64,
    /// Simulated time it was invoked at.
    pub invoked: Duration,
    /// Simulated time it ended at, once it did.
    pub ended: Option<Duration>,
    /// `None` while (or if forever) it has no answer: it may or may not have applied.
    pub outcome: Option<Result<u64, String>>,
}

/// A broken invariant, as the history saw it when the call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The invariant: `single-writer`, `no-lost-write` or `no-resurrection`.
    pub invariant: &'static str,
    /// Simulated time it was seen at.
    pub at: Duration,
    /// What happened.
    pub what: String,
}

#[derive(Debug, Default)]
struct Ledger {
    ops: Vec<Op>,
    /// Per counter: the values acknowledged.
    acked: BTreeMap<String, BTreeSet<u64>>,
    violations: Vec<Violation>,
}

/// Every call of a run, in invocation order, checked as each call ends: (a) two
/// acknowledgements of one counter with the same value mean two instances served
/// writes; (b) a write invoked after value `v` was acknowledged that returns `v` or
/// less means acknowledged writes were lost; (d) a call invoked after the counter's stop
/// was acknowledged must not succeed. Cheap to clone: all clones are the same.
///
/// From [`Sim::history`], it knows the simulated time and the counters the simulator
/// excuses (plain counters of a crashed node, restarted from their start state by
/// design).
#[derive(Clone, Debug, Default)]
pub struct History {
    ledger: Arc<Mutex<Ledger>>,
    closed: Arc<AtomicBool>,
    /// Counters stopped, each with the number of calls invoked when its stop was
    /// acknowledged: a call invoked after that must not be acknowledged.
    stopped: Arc<Mutex<Vec<(String, u64)>>>,
    /// Counters a stop was asked for.
    stopping: Arc<Mutex<Vec<String>>>,
    /// Simulated time, in microseconds, as the simulator last stepped it.
    clock: Arc<AtomicU64>,
    excused: Arc<Mutex<BTreeSet<String>>>,
}

impl History {
    /// A history that reads simulated time from `clock` and skips `excused` counters.
    pub(crate) fn watched(clock: Arc<AtomicU64>, excused: Arc<Mutex<BTreeSet<String>>>) -> Self {
        Self {
            clock,
            excused,
            ..Self::default()
        }
    }

    /// No client makes a call after this (the calls under way still end).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Whether the history was closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Whether every call made has its answer.
    pub fn settled(&self) -> bool {
        let ledger = self.ledger.lock().unwrap();
        ledger.ops.iter().all(|o| o.outcome.is_some())
    }

    /// A copy of every call so far.
    pub fn ops(&self) -> Vec<Op> {
        self.ledger.lock().unwrap().ops.clone()
    }

    /// The invariants broken so far, in the order they were seen.
    pub fn violations(&self) -> Vec<Violation> {
        self.ledger.lock().unwrap().violations.clone()
    }

    /// Whether counter `id` is excused (restarted from its start state by design).
    pub fn is_excused(&self, id: &str) -> bool {
        self.excused.lock().unwrap().contains(id)
    }

    /// Notes a call made by `client` on `node` to `id`, whose registry there named
    /// `epoch`; its index.
    pub fn invoke(&self, client: usize, node: usize, id: &str, epoch: Option<u64>) -> usize {
        let mut ledger = self.ledger.lock().unwrap();
        let seq = ledger.ops.len() as u64;
        let floor = ledger
            .acked
            .get(id)
            .and_then(|v| v.last())
            .copied()
            .unwrap_or(0);
        let invoked = Duration::from_micros(self.clock.load(Ordering::SeqCst));
        ledger.ops.push(Op {
            seq,
            client,
            node,
            id: id.to_string(),
            epoch,
            floor,
            invoked,
            ended: None,
            outcome: None,
        });
        ledger.ops.len() - 1
    }

    /// Notes that a stop of `id` was asked for now: until it is acknowledged, it may or
    /// may not have happened.
    pub fn stopping(&self, id: &str) {
        self.stopping.lock().unwrap().push(id.to_string());
    }

    /// The counters a stop was asked for, acknowledged or not.
    pub fn stops_asked(&self) -> Vec<String> {
        self.stopping.lock().unwrap().clone()
    }

    /// Notes that the stop of `id` was acknowledged now.
    pub fn stopped(&self, id: &str) {
        let seq = self.ledger.lock().unwrap().ops.len() as u64;
        self.stopped.lock().unwrap().push((id.to_string(), seq));
    }

    /// The counters stopped, with the number of calls invoked when each stop was
    /// acknowledged.
    pub fn stops(&self) -> Vec<(String, u64)> {
        self.stopped.lock().unwrap().clone()
    }

    /// Notes the answer of call `index`, and checks it.
    pub fn complete(&self, index: usize, outcome: Result<u64, String>) {
        let excused = outcome.is_ok() && {
            let id = self.ledger.lock().unwrap().ops[index].id.clone();
            self.is_excused(&id)
        };
        let at = Duration::from_micros(self.clock.load(Ordering::SeqCst));
        let mut ledger = self.ledger.lock().unwrap();
        let op = &mut ledger.ops[index];
        op.outcome = Some(outcome.clone());
        op.ended = Some(at);
        let (id, floor) = (op.id.clone(), op.floor);
        let Ok(v) = outcome else { return };
        let seq = op.seq;
        let fresh = ledger.acked.entry(id.clone()).or_default().insert(v);
        let stopped_before = self
            .stopped
            .lock()
            .unwrap()
            .iter()
            .any(|(s, at)| *s == id && seq >= *at);
        if stopped_before {
            ledger.violations.push(Violation {
                invariant: "no-resurrection",
                at,
                what: format!("{id}: call {seq} made after its stop was answered ({v})"),
            });
        }
        if excused {
            return;
        }
        if !fresh {
            ledger.violations.push(Violation {
                invariant: "single-writer",
                at,
                what: format!("{id}: {v} acknowledged twice"),
            });
        } else if v <= floor {
            ledger.violations.push(Violation {
                invariant: "no-lost-write",
                at,
                what: format!("{id}: a write returned {v}, invoked after {floor} was acknowledged"),
            });
        }
    }
}

/// Counters and the clients that write to them.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Plain counters (`p-0`, `p-1`, ...).
    pub plain: usize,
    /// Replicated counters (`r-0`, ...), `replicas = 3`, `sync`.
    pub replicated: usize,
    /// Whether the replicated counters ship their writes as calls (`ship = "calls"`,
    /// [`CallsCounter`]) rather than their state ([`SyncCounter`]).
    pub ship_calls: bool,
    /// Clients on each node.
    pub clients_per_node: usize,
    /// The pause of a client between two calls.
    pub interval: Duration,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            plain: 20,
            replicated: 20,
            ship_calls: false,
            clients_per_node: 2,
            interval: Duration::from_millis(20),
        }
    }
}

/// A generator of numbers from a seed (splitmix64): the same seed, the same numbers.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

impl Workload {
    /// Stops counter `id` from node `node` (in a task: the simulation goes on); the
    /// history notes the stop once it is acknowledged.
    pub fn stop(&self, sim: &Sim, node: usize, id: &str, history: &History) {
        let (hub, id, history) = (sim.hub(node).clone(), id.to_string(), history.clone());
        history.stopping(&id);
        let replicated = self.replicated_type();
        sim.spawn(node, async move {
            let stopped = if id.starts_with("r-") {
                replicated.stop(&hub, &id).await
            } else {
                SimCounter::stop(&hub, &id).await
            };
            if stopped.is_ok() {
                history.stopped(&id);
            }
        });
    }

    /// The type of its replicated counters.
    pub(crate) fn replicated_type(&self) -> Replicated {
        Replicated {
            ship_calls: self.ship_calls,
        }
    }

    /// The ids of the plain counters, then of the replicated ones.
    pub fn ids(&self) -> (Vec<String>, Vec<String>) {
        (
            (0..self.plain).map(|i| format!("p-{i}")).collect(),
            (0..self.replicated).map(|i| format!("r-{i}")).collect(),
        )
    }

    /// Starts the counters (from the first running node) and the clients (on every
    /// running node); returns the history they fill as the simulation runs.
    pub fn start(&self, sim: &mut Sim) -> History {
        let history = sim.history();
        let (plain, replicated) = self.ids();
        let up = sim.up();
        let first = sim.hub(up[0]).clone();
        let kind = self.replicated_type();
        let starting = async move {
            let plain = plain.into_iter().map(|id| (id, SimCounter::default()));
            for r in SimCounter::start_many(&first, plain.collect()).await {
                r.map_err(|e| e.to_string())?;
            }
            kind.start_many(&first, replicated).await
        };
        sim.run_until(up[0], Duration::from_secs(10), starting)
            .expect("the counters start within 10 s")
            .expect("the counters start");
        let mut client = 0;
        for node in up {
            for _ in 0..self.clients_per_node {
                let task = self.client(
                    sim.seed(),
                    client,
                    node,
                    sim.hub(node).clone(),
                    history.clone(),
                );
                sim.spawn(node, task);
                client += 1;
            }
        }
        history
    }

    /// One client: a counter drawn from the seed, one write, the pause, again.
    fn client(
        &self,
        seed: u64,
        client: usize,
        node: usize,
        hub: Hub,
        history: History,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (plain, replicated) = self.ids();
        let kind = self.replicated_type();
        let interval = self.interval;
        let mut rng = Rng::new(seed ^ (client as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F));
        async move {
            let total = (plain.len() + replicated.len()) as u64;
            if total == 0 {
                return;
            }
            while !history.is_closed() {
                let k = rng.below(total) as usize;
                let id = if k < plain.len() {
                    plain[k].clone()
                } else {
                    replicated[k - plain.len()].clone()
                };
                let epoch = hub.lookup(&id).map(|c| c.epoch);
                let index = history.invoke(client, node, &id, epoch);
                let outcome = if k < plain.len() {
                    SimCounter::handle(&hub, id).add(1).await
                } else {
                    kind.add(&hub, id).await
                };
                history.complete(index, outcome.map_err(|e| e.to_string()));
                tokio::time::sleep(interval).await;
            }
        }
    }
}
