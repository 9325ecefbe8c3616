//! Real OS processes: this test binary re-executes itself as cluster nodes, kills one
//! with SIGKILL and shuts another down gracefully. Every child is killed when the test
//! ends, pass or fail (`kill_on_drop`), and exits by itself if the test process dies
//! (its stdin closes).

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use common::{wait_until, ColdTally, Tally};
use processhub::prelude::*;
use processhub::{PartitionTolerance, RestartReason};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const NODE_ENV: &str = "PROCESSHUB_TEST_NODE";
/// Milliseconds the first state arriving at a node process holds it up.
const DELAY_ENV: &str = "PROCESSHUB_TEST_ARRIVAL_DELAY_MS";

/// One scenario at a time: each runs several processes whose failure detectors must
/// not starve on two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Milliseconds the next arriving [`Slow`] state holds up its node (once).
static ARRIVAL_DELAY_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// How many [`Slow`] states arrived in this process.
static ARRIVED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// How many held-up arrivals are over.
static HELD_UP: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A counter whose first arrival can be held up, to kill a node mid-handover.
#[distributed]
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct Slow {
    n: u64,
}

#[distributed]
impl Slow {
    /// Adds and returns the new value.
    pub fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }

    #[on_handover_in]
    fn arriving(&mut self) {
        use std::sync::atomic::Ordering::SeqCst;
        ARRIVED.fetch_add(1, SeqCst);
        let ms = ARRIVAL_DELAY_MS.swap(0, SeqCst);
        if ms > 0 {
            println!("ARRIVING");
            std::thread::sleep(Duration::from_millis(ms));
            HELD_UP.fetch_add(1, SeqCst);
        }
    }
}
const HUB_ID: &str = "multiprocess";
/// The cluster key of every hub of these tests, the node processes' and the test's.
const KEY: &str = "multiprocess-tests-cluster-key";

/// The address a node process listens on (default `127.0.0.1:0`).
const LISTEN_ENV: &str = "PROCESSHUB_TEST_LISTEN";
/// A node process's partition strategy: `majority`, `static3`, `dynamic`, `divergence`.
const STRATEGY_ENV: &str = "PROCESSHUB_TEST_STRATEGY";

fn parse_strategy(s: &str) -> PartitionTolerance {
    match s {
        "divergence" => PartitionTolerance::Divergence,
        "static3" => PartitionTolerance::StaticQuorum { size: 3 },
        "dynamic" => PartitionTolerance::DynamicQuorum {
            percent: 51,
            window: Duration::from_secs(60),
        },
        _ => PartitionTolerance::MajorityQuorum,
    }
}

/// The ids of the partition tests: plain counters, then replicated ones.
fn partition_ids() -> (Vec<String>, Vec<String>) {
    (
        (0..40).map(|i| format!("np-{i}")).collect(),
        (0..40).map(|i| format!("nr-{i}")).collect(),
    )
}

/// The plain counter of the pause and partition tests, one that merges (a grow-only
/// counter): each instance counts under its own name (node and epoch), and
/// `#[on_conflict]` keeps the larger count of each name, so under `Divergence` the adds
/// of both sides of a split survive the heal. One instance at a time, it is an ordinary
/// counter.
#[distributed]
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct Votes {
    by: std::collections::BTreeMap<String, u64>,
}

#[distributed]
impl Votes {
    /// Adds and returns the new value.
    pub fn add(&mut self, by: u64) -> u64 {
        let me = processhub::current_instance()
            .map_or_else(String::new, |i| format!("{}/{}", i.node, i.epoch));
        *self.by.entry(me).or_default() += by;
        self.get()
    }

    /// The value.
    pub fn get(&self) -> u64 {
        self.by.values().sum()
    }

    #[on_conflict]
    fn merge(&mut self, other: Self) {
        for (name, n) in other.by {
            let mine = self.by.entry(name).or_default();
            *mine = (*mine).max(n);
        }
    }
}

/// A replicated counter (`sync`): every acknowledged add survives its node.
#[distributed(replicas = 2)]
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct Ledger {
    n: u64,
}

#[distributed]
impl Ledger {
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

/// Where a node process's stderr goes: a file of its own under `PROCESSHUB_NODE_LOG`
/// if that is set (to read what the nodes did when a test failed), else nowhere.
fn node_log() -> Stdio {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    match std::env::var("PROCESSHUB_NODE_LOG") {
        Ok(dir) => {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = format!("{dir}/node-{}-{n}.log", std::process::id());
            std::fs::File::create(&path).map_or_else(|_| Stdio::null(), Stdio::from)
        }
        Err(_) => Stdio::null(),
    }
}

/// The body of a child node; a no-op when run as an ordinary test.
#[test]
fn node_process() {
    let Ok(seed) = std::env::var(NODE_ENV) else {
        return;
    };
    if let Some(ms) = std::env::var(DELAY_ENV).ok().and_then(|v| v.parse().ok()) {
        ARRIVAL_DELAY_MS.store(ms, std::sync::atomic::Ordering::SeqCst);
    }
    let listen = std::env::var(LISTEN_ENV).unwrap_or_else(|_| "127.0.0.1:0".into());
    let strategy = std::env::var(STRATEGY_ENV)
        .ok()
        .map_or(PartitionTolerance::default(), |s| parse_strategy(&s));
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let hub = Hub::builder(HUB_ID)
            .cluster_key(KEY)
            .listen(listen)
            .seeds([seed])
            .gossip_interval(Duration::from_millis(50))
            .partition_tolerance(strategy)
            .start()
            .await
            .expect("node hub starts");
        println!("READY {}", hub.node_id());
        let conflicts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // Duplicates merged into the instance kept, and merges that failed.
        let merges = std::sync::Arc::new([
            std::sync::atomic::AtomicUsize::new(0),
            std::sync::atomic::AtomicUsize::new(0),
        ]);
        {
            let mut events = hub.events();
            let (conflicts, merges) = (conflicts.clone(), merges.clone());
            tokio::spawn(async move {
                while let Ok(ev) = events.recv().await {
                    match ev {
                        HubEvent::DuplicateResolved { .. } => {
                            conflicts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        HubEvent::DuplicateMerged { error, .. } => {
                            if let Some(e) = &error {
                                eprintln!("a merge failed: {e}");
                            }
                            merges[usize::from(error.is_some())]
                                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        _ => {}
                    }
                }
            });
        }
        let mut load: Option<(
            std::sync::Arc<std::sync::atomic::AtomicBool>,
            Vec<tokio::task::JoinHandle<Acks>>,
        )> = None;
        let mut stdin = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = stdin.next_line().await {
            match line.trim() {
                "count" => println!("COUNT {}", hub.local_children()),
                "id" => println!("ID {}", hub.node_id()),
                "members" => println!("MEMBERS {} {}", hub.nodes().len(), hub.unreachable().len()),
                "partitioned" => println!("PARTITIONED {}", hub.is_partitioned()),
                "copies" => println!("COPIES {}", wrong_copies(&hub)),
                line if line.starts_with("race-start") => {
                    let round = line.split_whitespace().nth(1).unwrap_or("0").to_string();
                    let items = (0..100)
                        .map(|i| (format!("race-{round}-{i}"), Tally::default()))
                        .collect();
                    let r = Tally::start_many(&hub, items).await;
                    let ok: Vec<String> = r
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| r.is_ok())
                        .map(|(i, _)| i.to_string())
                        .collect();
                    println!("RACED {}", ok.join(","));
                }
                "conflicts" => println!(
                    "CONFLICTS {}",
                    conflicts.load(std::sync::atomic::Ordering::SeqCst)
                ),
                "merges" => println!(
                    "MERGES {} {}",
                    merges[0].load(std::sync::atomic::Ordering::SeqCst),
                    merges[1].load(std::sync::atomic::Ordering::SeqCst)
                ),
                "start-ids" => {
                    let (plain, replicated) = partition_ids();
                    let a = Votes::start_many(
                        &hub,
                        plain
                            .iter()
                            .map(|i| (i.clone(), Votes::default()))
                            .collect(),
                    )
                    .await;
                    let b = Ledger::start_many(
                        &hub,
                        replicated
                            .iter()
                            .map(|i| (i.clone(), Ledger::default()))
                            .collect(),
                    )
                    .await;
                    let failed = a.iter().filter(|r| r.is_err()).count()
                        + b.iter().filter(|r| r.is_err()).count();
                    println!("STARTED {failed}");
                }
                "owners" => {
                    // Every copy of each id: its owner, then its standbys.
                    let (plain, replicated) = partition_ids();
                    let owners: Vec<String> = plain
                        .iter()
                        .chain(&replicated)
                        .map(|id| {
                            hub.lookup(id).map_or("-".into(), |i| {
                                let copies: Vec<String> =
                                    i.owners().iter().map(|n| n.to_string()).collect();
                                copies.join("|")
                            })
                        })
                        .collect();
                    println!("OWNERS {}", owners.join(","));
                }
                "load-start" => {
                    let (plain, replicated) = partition_ids();
                    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let tasks = write_load(&hub, &plain, &replicated, stop.clone());
                    load = Some((stop, tasks));
                    println!("LOADING");
                }
                "load-stop" => {
                    if let Some((stop, tasks)) = load.take() {
                        stop.store(true, std::sync::atomic::Ordering::Relaxed);
                        let mut acks = Acks::new();
                        for t in tasks {
                            for (id, values) in t.await.unwrap() {
                                acks.entry(id).or_default().extend(values);
                            }
                        }
                        for (id, values) in acks {
                            let values: Vec<String> = values.iter().map(u64::to_string).collect();
                            println!("ACKS {id} {}", values.join(","));
                        }
                    }
                    println!("ACKS-END");
                }
                "values" => {
                    let (plain, replicated) = partition_ids();
                    let mut out = Vec::new();
                    for id in &plain {
                        let v = Votes::handle(&hub, id.clone()).get().await;
                        out.push(v.map_or("ERR".into(), |v| v.to_string()));
                    }
                    for id in &replicated {
                        let v = Ledger::handle(&hub, id.clone()).get().await;
                        out.push(v.map_or("ERR".into(), |v| v.to_string()));
                    }
                    println!("VALUES {}", out.join(","));
                }
                "registry" => println!("REGISTRY {}", registry_digest(&hub)),
                "drain" => {
                    let r = hub.drain().await.expect("drain");
                    println!("DRAINED {} {}", r.moved, r.failed);
                }
                "shutdown" => {
                    hub.shutdown().await.expect("graceful shutdown");
                    println!("BYE");
                    std::process::exit(0);
                }
                other => println!("UNKNOWN {other}"),
            }
        }
        // The test process is gone: leave too.
        std::process::exit(0);
    });
}

/// How many of the partition tests' ids this node's registry does not show with their
/// number of copies: missing, pending, or not on as many distinct live members as the
/// type asks (a `Ledger` has two, the others one).
fn wrong_copies(hub: &Hub) -> usize {
    let members: std::collections::HashSet<NodeId> = hub.nodes().into_iter().collect();
    let (plain, replicated) = partition_ids();
    let wanted = |n: usize| n.min(members.len());
    plain
        .iter()
        .map(|id| (id, wanted(1)))
        .chain(replicated.iter().map(|id| (id, wanted(2))))
        .filter(|(id, n)| {
            hub.lookup(id).is_none_or(|info| {
                let owners: std::collections::HashSet<_> = info.owners().iter().collect();
                info.pending
                    || owners.len() != info.owners().len()
                    || owners.len() != *n
                    || !owners.iter().all(|o| members.contains(o))
            })
        })
        .count()
}

/// The registry in one line: every (id, owner, epoch), sorted, hashed.
fn registry_digest(hub: &Hub) -> String {
    use std::hash::{Hash, Hasher};
    let mut entries: Vec<(String, String, u64, bool)> = hub
        .children()
        .into_iter()
        .map(|c| (c.id.to_string(), c.owner.to_string(), c.epoch, c.pending))
        .collect();
    entries.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    entries.hash(&mut h);
    format!("{}:{:x}", entries.len(), h.finish())
}

/// The hub of the test process, as the node processes are configured.
async fn test_hub() -> Hub {
    Hub::builder(HUB_ID)
        .cluster_key(KEY)
        .listen("127.0.0.1:0")
        .gossip_interval(Duration::from_millis(50))
        .start()
        .await
        .unwrap()
}

struct Node {
    child: Child,
    out: Lines<BufReader<ChildStdout>>,
    /// Lines the node printed before READY (a state may reach it while it joins).
    early: std::collections::VecDeque<String>,
    id: NodeId,
}

impl Node {
    async fn spawn(seed: std::net::SocketAddr) -> Node {
        Self::spawn_with(seed, &[]).await
    }

    async fn spawn_with(seed: std::net::SocketAddr, env: &[(&str, String)]) -> Node {
        Self::spawn_in(None, seed, env).await
    }

    /// A node process, in network namespace `netns` if one is given.
    async fn spawn_in(
        netns: Option<&str>,
        seed: std::net::SocketAddr,
        env: &[(&str, String)],
    ) -> Node {
        let exe = std::env::current_exe().unwrap();
        let test_args = [
            "--exact",
            "node_process",
            "--nocapture",
            "--test-threads",
            "1",
        ];
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&exe).args(test_args);
                c
            }
            None => {
                let mut c = Command::new(&exe);
                c.args(test_args);
                c
            }
        };
        let mut child = command
            .env(NODE_ENV, seed.to_string())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // (PROCESSHUB_NODE_LOG=dir: each node's log, at RUST_LOG's level, in a file.)
            .stderr(node_log())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn node process");
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut early = std::collections::VecDeque::new();
        let id = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let line = out.next_line().await.unwrap().expect("node printed READY");
                // libtest prints "test node_process ... " before our first line.
                if let Some(at) = line.find("READY ") {
                    return line[at + 6..].trim().to_string();
                }
                early.push_back(line);
            }
        })
        .await
        .expect("node ready in time");
        let id = parse_node_id(&id);
        Node {
            child,
            out,
            early,
            id,
        }
    }

    async fn say(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    /// Whether this node's registry comes to agree with `hub`'s (within 5 s).
    async fn agrees_with(&mut self, hub: &Hub) -> bool {
        for _ in 0..100 {
            self.say("registry").await;
            if self.expect_line("REGISTRY ").await == registry_digest(hub) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    async fn expect_line(&mut self, prefix: &str) -> String {
        while let Some(line) = self.early.pop_front() {
            if let Some(at) = line.find(prefix) {
                return line[at + prefix.len()..].trim().to_string();
            }
        }
        tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                let line = self.out.next_line().await.unwrap().expect("node output");
                if let Some(at) = line.find(prefix) {
                    return line[at + prefix.len()..].trim().to_string();
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("node did not print {prefix}"))
    }
}

fn parse_node_id(s: &str) -> NodeId {
    let (addr, inc) = s.split_once('#').unwrap();
    NodeId::new(addr.parse().unwrap(), inc.parse().unwrap())
}

async fn all_answer(hub: &Hub, ids: &[String]) -> bool {
    let calls = ids.iter().map(|id| {
        let t = Tally::handle(hub, id.clone());
        async move { t.get().await }
    });
    futures::future::join_all(calls)
        .await
        .iter()
        .all(|r| r.is_ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_then_graceful_shutdown() {
    let _serial = SERIAL.lock().await;
    let hub = test_hub().await;
    let mut events = hub.events();
    let mut b = Node::spawn(hub.listen_addr()).await;
    let mut c = Node::spawn(hub.listen_addr()).await;
    wait_until("3 members", Duration::from_secs(20), || async {
        hub.nodes().len() == 3
    })
    .await;

    let ids: Vec<String> = (0..600).map(|i| format!("mp-{i}")).collect();
    let started = Tally::start_many(
        &hub,
        ids.iter()
            .map(|id| (id.clone(), Tally::default()))
            .collect(),
    )
    .await;
    assert!(
        started.iter().all(|r| r.is_ok()),
        "{:?}",
        started.iter().find(|r| r.is_err())
    );
    for id in &ids {
        Tally::handle(&hub, id.clone()).add(1).await.unwrap();
    }
    let on_b: Vec<String> = ids
        .iter()
        .filter(|id| hub.lookup(id).unwrap().owner == b.id)
        .cloned()
        .collect();
    assert!(on_b.len() > 100, "node b runs {}", on_b.len());
    b.say("count").await;
    assert_eq!(b.expect_line("COUNT ").await, on_b.len().to_string());

    // kill -9 one node: every component answers again from a surviving node.
    b.child.start_kill().unwrap();
    b.child.wait().await.unwrap();
    let killed_at = std::time::Instant::now();
    wait_until(
        "every component answers after kill -9",
        Duration::from_secs(20),
        || all_answer(&hub, &ids),
    )
    .await;
    let recovered = killed_at.elapsed();
    eprintln!(
        "recovered {} components of the killed node in {recovered:?}",
        on_b.len()
    );
    assert!(!hub.nodes().contains(&b.id));
    for id in &on_b {
        let info = hub.lookup(id).unwrap();
        assert_ne!(info.owner, b.id);
        assert_eq!(info.epoch, 2);
        // Restarted from the state it was started with (the hot path comes later).
        assert_eq!(Tally::handle(&hub, id.clone()).get().await.unwrap(), 0);
    }
    let mut restarted_here = 0;
    let mut saw_left = false;
    while let Ok(ev) = events.try_recv() {
        match ev {
            HubEvent::ChildRestarted {
                reason: RestartReason::NodeDown { node },
                ..
            } if node == b.id => restarted_here += 1,
            HubEvent::NodeLeft {
                node,
                graceful: false,
            } if node == b.id => saw_left = true,
            _ => {}
        }
    }
    assert!(saw_left);
    assert_eq!(
        restarted_here,
        on_b.iter()
            .filter(|id| hub.lookup(id).unwrap().owner == hub.node_id())
            .count()
    );

    // Every surviving registry agrees.
    assert!(
        c.agrees_with(&hub).await,
        "the registries of the survivors converge"
    );
    assert_eq!(hub.children().len(), 600);

    // Graceful shutdown of another, under load from here: it hands its children over
    // with their state and leaves promptly; no call fails, no increment is lost.
    let before: Vec<u64> = {
        let mut v = Vec::new();
        for id in &ids {
            v.push(Tally::handle(&hub, id.clone()).get().await.unwrap());
        }
        v
    };
    let on_c: Vec<String> = ids
        .iter()
        .filter(|id| hub.lookup(id).unwrap().owner == c.id)
        .cloned()
        .collect();
    assert!(!on_c.is_empty());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loader = {
        let hub = hub.clone();
        let ids = ids.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut acked = vec![0u64; ids.len()];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (i, id) in ids.iter().enumerate() {
                    Tally::handle(&hub, id.clone())
                        .add(1)
                        .await
                        .expect("no call fails during the handover");
                    acked[i] += 1;
                }
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.say("shutdown").await;
    let left_at = std::time::Instant::now();
    c.expect_line("BYE").await;
    let status = tokio::time::timeout(Duration::from_secs(10), c.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    wait_until(
        "c gone from the members",
        Duration::from_secs(5),
        || async { hub.nodes() == vec![hub.node_id()] },
    )
    .await;
    assert!(
        left_at.elapsed() < Duration::from_secs(5),
        "leave took {:?}",
        left_at.elapsed()
    );
    wait_until(
        "every component answers after the leave",
        Duration::from_secs(10),
        || all_answer(&hub, &ids),
    )
    .await;
    assert_eq!(hub.local_children(), 600);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = loader.await.unwrap();
    for (i, id) in ids.iter().enumerate() {
        let n = Tally::handle(&hub, id.clone()).get().await.unwrap();
        assert_eq!(
            n,
            before[i] + acked[i],
            "{id} (was on c: {})",
            on_c.contains(id)
        );
    }
    hub.shutdown().await.unwrap();
}

/// Waits until `hub` sees exactly `n` members.
async fn members(hub: &Hub, n: usize) {
    wait_until(&format!("{n} members"), Duration::from_secs(20), || async {
        hub.nodes().len() == n
    })
    .await;
}

/// Starts `Slow` children `prefix-0..n` from `hub` and adds `by` to each.
async fn start_slow(hub: &Hub, prefix: &str, n: usize, by: u64) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    for r in Slow::start_many(
        hub,
        ids.iter().map(|i| (i.clone(), Slow::default())).collect(),
    )
    .await
    {
        r.unwrap();
    }
    for id in &ids {
        assert_eq!(Slow::handle(hub, id.clone()).add(by).await.unwrap(), by);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_whose_target_is_killed_mid_handover_rolls_back() {
    let _serial = SERIAL.lock().await;
    // Two nodes, one killed: no majority is left to down it (the default strategy would
    // keep the survivor fenced), so this test of the roll-back diverges on purpose.
    let hub = Hub::builder(HUB_ID)
        .cluster_key(KEY)
        .listen("127.0.0.1:0")
        .gossip_interval(Duration::from_millis(50))
        .partition_tolerance(processhub::PartitionTolerance::Divergence)
        .start()
        .await
        .unwrap();
    let mut events = hub.events();
    let ids = start_slow(&hub, "tgt", 200, 3).await;
    assert_eq!(hub.local_children(), 200);
    // A joiner takes its share of the ring; the first state to reach it holds it up,
    // and it is killed right then.
    let mut b = Node::spawn_with(hub.listen_addr(), &[(DELAY_ENV, "5000".into())]).await;
    b.expect_line("ARRIVING").await;
    b.child.start_kill().unwrap();
    b.child.wait().await.unwrap();
    members(&hub, 1).await;
    // Nothing moved; everything goes on here with its state.
    wait_until("every child back here", Duration::from_secs(20), || async {
        hub.local_children() == 200 && hub.children().iter().all(|c| c.owner == hub.node_id())
    })
    .await;
    for id in &ids {
        assert_eq!(
            Slow::handle(&hub, id.clone()).add(0).await.unwrap(),
            3,
            "{id}"
        );
    }
    let mut failed = 0;
    while let Ok(e) = events.try_recv() {
        match e {
            HubEvent::MigrationFailed { to, .. } if to == b.id => failed += 1,
            HubEvent::ChildMigrated { id, .. } => panic!("{id} was reported moved"),
            _ => {}
        }
    }
    assert!(failed > 0, "the failed moves are reported");
    hub.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_whose_source_is_killed_mid_handover_leaves_one_copy() {
    let _serial = SERIAL.lock().await;
    let hub = test_hub().await;
    let mut b = Node::spawn(hub.listen_addr()).await;
    let mut c = Node::spawn(hub.listen_addr()).await;
    members(&hub, 3).await;
    let ids = start_slow(&hub, "src", 300, 3).await;
    let on_b: Vec<String> = ids
        .iter()
        .filter(|id| hub.lookup(id).unwrap().owner == b.id)
        .cloned()
        .collect();
    assert!(on_b.len() > 30);
    // b drains towards this node and c; the first state arriving here holds this node's
    // start of it up while b is killed.
    use std::sync::atomic::Ordering::SeqCst;
    ARRIVED.store(0, SeqCst);
    HELD_UP.store(0, SeqCst);
    ARRIVAL_DELAY_MS.store(1500, SeqCst);
    b.say("drain").await;
    wait_until("a state arriving here", Duration::from_secs(20), || async {
        ARRIVED.load(SeqCst) > 0
    })
    .await;
    b.child.start_kill().unwrap();
    b.child.wait().await.unwrap();
    ARRIVAL_DELAY_MS.store(0, SeqCst);
    members(&hub, 2).await;
    // Meanwhile b's children restart from their start state; the one whose state is in
    // hand here supersedes its restarted copy, which nobody called yet.
    wait_until(
        "the held-up arrival over",
        Duration::from_secs(20),
        || async { HELD_UP.load(SeqCst) > 0 },
    )
    .await;
    // The held-up start lands right after its hook returns (the hub has no event for
    // it); the first calls below must come after it, or they would be served by the
    // copy restarted from the start state, which then stays (as documented).
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Every child answers, and runs on exactly one of the two survivors.
    wait_until("every child answers", Duration::from_secs(20), || async {
        let calls = ids.iter().map(|id| {
            let h = Slow::handle(&hub, id.clone());
            async move { h.add(0).await }
        });
        futures::future::join_all(calls)
            .await
            .iter()
            .all(|r| r.is_ok())
    })
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        c.say("count").await;
        let on_c: usize = c.expect_line("COUNT ").await.parse().unwrap();
        if hub.local_children() + on_c == ids.len() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "one copy of each: {} here, {on_c} on c",
            hub.local_children()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(c.agrees_with(&hub).await, "the survivors' registries agree");
    // Children that were not on b kept their state; b's kept it if their move finished,
    // and restarted from the start state otherwise.
    let mut kept = 0;
    for id in &ids {
        let n = Slow::handle(&hub, id.clone()).add(0).await.unwrap();
        if on_b.contains(id) {
            assert!(n == 3 || n == 0, "{id}: {n}");
            kept += usize::from(n == 3);
        } else {
            assert_eq!(n, 3, "{id}");
        }
    }
    assert!(kept > 0, "the state held up here arrived whole");
    hub.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_and_a_drain_of_node_processes_under_load_lose_nothing() {
    let _serial = SERIAL.lock().await;
    let hub = test_hub().await;
    let mut b = Node::spawn(hub.listen_addr()).await;
    let _c = Node::spawn(hub.listen_addr()).await;
    members(&hub, 3).await;
    let ids: Vec<String> = (0..1000).map(|i| format!("drain-{i}")).collect();
    for r in Tally::start_many(
        &hub,
        ids.iter().map(|i| (i.clone(), Tally::default())).collect(),
    )
    .await
    {
        r.unwrap();
    }

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loader = {
        let hub = hub.clone();
        common::spawn_load(ids.clone(), stop.clone(), move |id| {
            let h = Tally::handle(&hub, id);
            async move { h.add(1).await }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A node joins: the children it now owns move to it, with their state.
    let mut d = Node::spawn(hub.listen_addr()).await;
    members(&hub, 4).await;
    wait_until(
        "children moved to the joiner",
        Duration::from_secs(20),
        || async {
            ids.iter()
                .all(|id| hub.lookup(id).map(|i| i.owner) == hub.ring_owner(id))
        },
    )
    .await;
    d.say("count").await;
    assert_ne!(d.expect_line("COUNT ").await, "0");
    // Another drains: everything it runs moves away.
    let on_b = ids
        .iter()
        .filter(|id| hub.lookup(id).unwrap().owner == b.id)
        .count();
    assert!(on_b > 30);
    b.say("drain").await;
    assert_eq!(b.expect_line("DRAINED ").await, format!("{on_b} 0"));
    b.say("count").await;
    assert_eq!(b.expect_line("COUNT ").await, "0");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, errors) = loader.await.unwrap();
    assert!(
        errors.is_empty(),
        "calls failed during the drain: {errors:?}"
    );
    for (i, id) in ids.iter().enumerate() {
        assert_ne!(hub.lookup(id).unwrap().owner, b.id);
        assert_eq!(
            Tally::handle(&hub, id.clone()).get().await.unwrap(),
            acked[i],
            "{id}"
        );
    }
    hub.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_children_of_a_leaving_node_process_restart_from_their_start_state() {
    let _serial = SERIAL.lock().await;
    let hub = test_hub().await;
    let mut b = Node::spawn(hub.listen_addr()).await;
    members(&hub, 2).await;
    let ids: Vec<String> = (0..100).map(|i| format!("cold-{i}")).collect();
    for id in &ids {
        ColdTally::start(&hub, id.clone(), ColdTally::default())
            .await
            .unwrap();
        Tally::start(&hub, format!("{id}-hot"), Tally::default())
            .await
            .unwrap();
        ColdTally::handle(&hub, id.clone()).add(5).await.unwrap();
        Tally::handle(&hub, format!("{id}-hot"))
            .add(5)
            .await
            .unwrap();
    }
    let cold_on_b: Vec<&String> = ids
        .iter()
        .filter(|id| hub.lookup(id).unwrap().owner == b.id)
        .collect();
    assert!(!cold_on_b.is_empty());
    b.say("shutdown").await;
    b.expect_line("BYE").await;
    members(&hub, 1).await;
    assert_eq!(hub.local_children(), 200);
    for id in &ids {
        let cold = ColdTally::handle(&hub, id.clone()).get().await.unwrap();
        // As documented: a cold child moves by restarting from its start state.
        assert_eq!(cold, if cold_on_b.contains(&id) { 0 } else { 5 }, "{id}");
        assert_eq!(
            Tally::handle(&hub, format!("{id}-hot"))
                .get()
                .await
                .unwrap(),
            5
        );
    }
    hub.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_pinned_by_id_stay_put_and_stay_down_when_their_node_is_killed() {
    let _serial = SERIAL.lock().await;
    let hub = test_hub().await;
    let mut events = hub.events();
    let mut b = Node::spawn(hub.listen_addr()).await;
    members(&hub, 2).await;
    let bound = StartOptions::new()
        .pinned(true)
        .on_node_death(OnNodeDeath::StayDown);
    let ids: Vec<String> = (0..200).map(|i| format!("pin-{i}")).collect();
    let (pinned, free) = ids.split_at(100);
    for r in Tally::start_many_with(
        &hub,
        pinned
            .iter()
            .map(|i| (i.clone(), Tally::default()))
            .collect(),
        bound.clone(),
    )
    .await
    {
        r.unwrap();
    }
    for r in Tally::start_many(
        &hub,
        free.iter().map(|i| (i.clone(), Tally::default())).collect(),
    )
    .await
    {
        r.unwrap();
    }
    for id in &ids {
        Tally::handle(&hub, id.clone()).add(1).await.unwrap();
    }
    let owners: Vec<NodeId> = ids.iter().map(|id| hub.lookup(id).unwrap().owner).collect();
    // A join moves the free ones the joiner now owns, never the pinned ones.
    let _c = Node::spawn(hub.listen_addr()).await;
    members(&hub, 3).await;
    let moves_to_c = |range: &[String]| {
        range
            .iter()
            .any(|id| hub.ring_owner(id) != hub.lookup(id).map(|i| i.owner))
    };
    wait_until("the free ones moved", Duration::from_secs(20), || async {
        !moves_to_c(free)
    })
    .await;
    for (id, owner) in pinned.iter().zip(&owners) {
        assert_eq!(hub.lookup(id).unwrap().owner, *owner, "{id} stayed");
    }
    // b is killed: its pinned children stay down and are reported; the free ones
    // restart elsewhere.
    let pinned_on_b: Vec<&String> = pinned
        .iter()
        .filter(|id| hub.lookup(id).unwrap().owner == b.id)
        .collect();
    let free_on_b: Vec<&String> = free
        .iter()
        .filter(|id| hub.lookup(id).unwrap().owner == b.id)
        .collect();
    assert!(!pinned_on_b.is_empty() && !free_on_b.is_empty());
    b.child.start_kill().unwrap();
    b.child.wait().await.unwrap();
    members(&hub, 2).await;
    wait_until(
        "b's free children answer",
        Duration::from_secs(20),
        || async {
            let calls = free_on_b.iter().map(|id| {
                let h = Tally::handle(&hub, (*id).clone());
                async move { h.get().await }
            });
            futures::future::join_all(calls)
                .await
                .iter()
                .all(|r| r.is_ok())
        },
    )
    .await;
    let mut down = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let HubEvent::ChildDown { id, node } = e {
            assert_eq!(node, b.id);
            down.push(id);
        }
    }
    down.sort();
    let mut expected: Vec<String> = pinned_on_b.iter().map(|s| (*s).clone()).collect();
    expected.sort();
    assert_eq!(
        down, expected,
        "each pinned child of b is reported down, once"
    );
    for id in &pinned_on_b {
        assert!(hub.lookup(id).is_none());
        match Tally::handle(&hub, (*id).clone()).get().await {
            Err(CallError::NotFound { .. }) => {}
            other => panic!("{id}: expected NotFound, got {other:?}"),
        }
    }
    // Starting one again brings it back.
    Tally::start_with(&hub, pinned_on_b[0].clone(), Tally::default(), bound)
        .await
        .unwrap();
    hub.shutdown().await.unwrap();
}

/// A counter kept on three nodes: a write is acknowledged once both standbys have it.
#[distributed(replicas = 3)]
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct Replicated {
    n: u64,
}

#[distributed]
impl Replicated {
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

/// A kill -9 of primaries under load loses no acknowledged write of a replicated type
/// `$ty` (a counter with `add` and `get`), and applies no retried write twice.
macro_rules! killed_primaries_lose_nothing {
    ($name:ident, $ty:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let _serial = SERIAL.lock().await;
            let hub = test_hub().await;
            let mut events = hub.events();
            let mut nodes = Vec::new();
            for _ in 0..4 {
                nodes.push(Node::spawn(hub.listen_addr()).await);
            }
            members(&hub, 5).await;
            let ids: Vec<String> = (0..300).map(|i| format!("rep-{i}")).collect();
            for r in $ty::start_many(
                &hub,
                ids.iter().map(|i| (i.clone(), $ty::default())).collect(),
            )
            .await
            {
                r.unwrap();
            }
            let three_copies = |hub: &Hub| {
                ids.iter().all(|id| {
                    hub.lookup(id).is_some_and(|i| {
                        i.standbys.len() == 2 && !i.standbys.contains(&i.owner) && !i.pending
                    })
                })
            };
            wait_until(
                "every child on 3 nodes",
                Duration::from_secs(20),
                || async { three_copies(&hub) },
            )
            .await;
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let loader = {
                let hub = hub.clone();
                common::spawn_load(ids.clone(), stop.clone(), move |id| {
                    let h = $ty::handle(&hub, id);
                    async move { h.add(1).await }
                })
            };
            tokio::time::sleep(Duration::from_millis(300)).await;
            // Kill the node of many primaries, then another.
            for round in 0..2 {
                let victim = nodes.remove(0);
                let primaries = ids
                    .iter()
                    .filter(|id| hub.lookup(id).unwrap().owner == victim.id)
                    .count();
                assert!(
                    primaries > 20,
                    "round {round}: {primaries} primaries on the victim"
                );
                let mut victim = victim;
                victim.child.start_kill().unwrap();
                victim.child.wait().await.unwrap();
                members(&hub, 4 - round).await;
                wait_until(
                    "every child on 3 nodes again",
                    Duration::from_secs(30),
                    || async { three_copies(&hub) },
                )
                .await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let (acked, errors) = loader.await.unwrap();
            let failed = errors.len();
            // Writes in flight to a killed primary were retried on the promoted standby and
            // applied once: no call failed, and every counter is exactly what was acknowledged.
            assert!(
                failed == 0,
                "calls failed: {:?}",
                &errors[..errors.len().min(5)]
            );
            for (i, id) in ids.iter().enumerate() {
                let n = $ty::handle(&hub, id.clone()).get().await.unwrap();
                assert_eq!(n, acked[i], "{id}");
            }
            let mut promoted = 0;
            while let Ok(e) = events.try_recv() {
                if matches!(e, HubEvent::PrimaryPromoted { .. }) {
                    promoted += 1;
                }
            }
            eprintln!("{failed} calls failed; {promoted} promotions here");
            hub.shutdown().await.unwrap();
        }
    };
}

killed_primaries_lose_nothing!(
    replicated_children_lose_no_acknowledged_write_when_primaries_are_killed,
    Replicated
);
killed_primaries_lose_nothing!(
    children_that_ship_calls_lose_no_acknowledged_write_when_primaries_are_killed,
    ReplicatedCalls
);

/// As [`Replicated`], its writes shipped as calls (`ship = "calls"`).
#[distributed(replicas = 3, ship = "calls")]
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct ReplicatedCalls {
    n: u64,
}

#[distributed]
impl ReplicatedCalls {
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

/// Three replicas that each answer on their own, and note the roles they take.
#[distributed(replicas = 3, replication = "active_active")]
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct ActiveCounter {
    n: u64,
    roles: Vec<processhub::Role>,
}

#[distributed]
impl ActiveCounter {
    /// Adds and returns the new value.
    pub fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }

    /// The roles this instance's state went through.
    pub fn roles(&self) -> Vec<processhub::Role> {
        self.roles.clone()
    }

    #[on_role_change]
    fn role(&mut self, role: processhub::Role) {
        self.roles.push(role);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_replica_takes_over_as_it_is_when_the_primary_is_killed() {
    let _serial = SERIAL.lock().await;
    let hub = test_hub().await;
    let mut events = hub.events();
    let mut b = Node::spawn(hub.listen_addr()).await;
    let _c = Node::spawn(hub.listen_addr()).await;
    members(&hub, 3).await;
    let ids: Vec<String> = (0..60).map(|i| format!("aa-{i}")).collect();
    for r in ActiveCounter::start_many(
        &hub,
        ids.iter()
            .map(|i| (i.clone(), ActiveCounter::default()))
            .collect(),
    )
    .await
    {
        r.unwrap();
    }
    wait_until(
        "a replica on every node",
        Duration::from_secs(20),
        || async {
            hub.local_children() == ids.len()
                && ids
                    .iter()
                    .all(|id| hub.lookup(id).is_some_and(|i| i.standbys.len() == 2))
        },
    )
    .await;
    // Calls from here go to the replica here: 5 each.
    for id in &ids {
        for _ in 0..5 {
            ActiveCounter::handle(&hub, id.clone())
                .add(1)
                .await
                .unwrap();
        }
    }
    let of_b: Vec<&String> = ids
        .iter()
        .filter(|id| hub.lookup(id).unwrap().owner == b.id)
        .collect();
    assert!(!of_b.is_empty());
    b.child.start_kill().unwrap();
    b.child.wait().await.unwrap();
    members(&hub, 2).await;
    wait_until(
        "every child owned by a live node, with a replica",
        Duration::from_secs(20),
        || async {
            let bad: Vec<_> = ids
                .iter()
                .filter(|id| {
                    !hub.lookup(id)
                        .is_some_and(|i| i.owner != b.id && i.standbys.len() == 1 && !i.pending)
                })
                .collect();
            bad.is_empty()
        },
    )
    .await;
    // The replica here went on as it was: no restart from the start state.
    for id in &ids {
        assert_eq!(
            ActiveCounter::handle(&hub, id.clone())
                .add(0)
                .await
                .unwrap(),
            5,
            "{id}"
        );
    }
    let mut promoted = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let HubEvent::PrimaryPromoted { id, .. } = e {
            promoted.push(id);
        }
    }
    assert!(
        !promoted.is_empty(),
        "some of b's children were promoted here"
    );
    // Role hooks, in order: the state came from its primary, became a replica here,
    // then the primary.
    use processhub::Role::{Primary, Replica};
    for id in &promoted {
        let roles = ActiveCounter::handle(&hub, id.clone())
            .roles()
            .await
            .unwrap();
        assert_eq!(roles, vec![Primary, Replica, Primary], "{id}");
    }
    hub.shutdown().await.unwrap();
}

/// A counter placed on the node named at start.
#[distributed(distribution = "guided")]
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct GuidedTally {
    n: u64,
}

#[distributed]
impl GuidedTally {
    /// Adds and returns the new value.
    pub fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
}

/// A counter placed by consistent hashing under a cap per node.
#[distributed(distribution = "bounded_load")]
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct BoundedTally {
    n: u64,
}

#[distributed]
impl BoundedTally {
    /// Adds and returns the new value.
    pub fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guided_and_bounded_children_of_a_killed_node_process_restart_where_their_strategy_says() {
    let _serial = SERIAL.lock().await;
    let hub = test_hub().await;
    let mut b = Node::spawn(hub.listen_addr()).await;
    let _c = Node::spawn(hub.listen_addr()).await;
    members(&hub, 3).await;
    // Guided children named onto b; bounded ones spread under the cap (ceil(1.25 × 100)).
    let guided: Vec<String> = (0..20).map(|i| format!("gd-{i}")).collect();
    for r in GuidedTally::start_many_with(
        &hub,
        guided
            .iter()
            .map(|i| (i.clone(), GuidedTally::default()))
            .collect(),
        StartOptions::new().node(b.id),
    )
    .await
    {
        r.unwrap();
    }
    let bounded: Vec<String> = (0..300).map(|i| format!("bd-{i}")).collect();
    for r in BoundedTally::start_many(
        &hub,
        bounded
            .iter()
            .map(|i| (i.clone(), BoundedTally::default()))
            .collect(),
    )
    .await
    {
        r.unwrap();
    }
    let per_node = |ids: &[String]| {
        let mut m: HashMap<NodeId, usize> = HashMap::new();
        for id in ids {
            if let Some(i) = hub.lookup(id).filter(|i| !i.pending) {
                *m.entry(i.owner).or_default() += 1;
            }
        }
        m
    };
    for id in &guided {
        assert_eq!(hub.lookup(id).unwrap().owner, b.id, "{id}");
        assert_eq!(
            GuidedTally::handle(&hub, id.clone()).add(1).await.unwrap(),
            1
        );
    }
    assert!(
        per_node(&bounded).values().all(|l| *l <= 125),
        "{:?}",
        per_node(&bounded)
    );
    // kill -9 b: the guided children restart on their ring owners (from the start
    // state); b's bounded children go under the cap of the two left (ceil(1.25 × 150)).
    b.child.start_kill().unwrap();
    b.child.wait().await.unwrap();
    members(&hub, 2).await;
    wait_until(
        "every child placed again",
        Duration::from_secs(20),
        || async {
            let g = per_node(&guided);
            let l = per_node(&bounded);
            g.values().sum::<usize>() == 20
                && !g.contains_key(&b.id)
                && l.values().sum::<usize>() == 300
                && l.values().all(|l| *l <= 188)
        },
    )
    .await;
    for id in &guided {
        assert_eq!(
            Some(hub.lookup(id).unwrap().owner),
            hub.ring_owner(id),
            "{id}"
        );
        assert_eq!(
            GuidedTally::handle(&hub, id.clone()).add(1).await.unwrap(),
            1,
            "{id}"
        );
    }
    for id in &bounded {
        BoundedTally::handle(&hub, id.clone()).add(1).await.unwrap();
    }
    hub.shutdown().await.unwrap();
}

/// Sends `signal` to a node process.
fn signal(node: &Node, signal: libc::c_int) {
    let pid = node.child.id().expect("a running node") as libc::pid_t;
    // SAFETY: kill(2) on a child process this test started and still owns.
    let r = unsafe { libc::kill(pid, signal) };
    assert_eq!(r, 0, "kill({pid}, {signal})");
}

/// What the writers saw: every acknowledged value of each id.
type Acks = HashMap<String, Vec<u64>>;

/// Writes to every id in turn from `hub` until `stop`: one writer task per chunk of
/// ids, each id written by one task only, each acknowledgement recorded.
fn write_load(
    hub: &Hub,
    plain: &[String],
    replicated: &[String],
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Acks>> {
    let mut tasks = Vec::new();
    for (chunk, is_replicated) in plain
        .chunks(10)
        .map(|c| (c.to_vec(), false))
        .chain(replicated.chunks(10).map(|c| (c.to_vec(), true)))
    {
        let hub = hub.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut acks = Acks::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for id in &chunk {
                    let r = if is_replicated {
                        Ledger::handle(&hub, id.clone()).add(1).await
                    } else {
                        Votes::handle(&hub, id.clone()).add(1).await
                    };
                    match r {
                        Ok(v) => acks.entry(id.clone()).or_default().push(v),
                        // Not acknowledged: it may or may not have been applied.
                        Err(_) => acks.entry(format!("{id}?")).or_default().push(0),
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            acks
        }));
    }
    tasks
}

/// One node process of `n` (the test process is the first) is stopped with SIGSTOP for
/// `pause` under writes, then continued. The promise: replicated ids lose no
/// acknowledged write and acknowledge no value twice; plain ids on the nodes that kept
/// running lose nothing either; afterwards exactly one instance runs per id; the paused
/// node is a member again (the same incarnation if it was not downed, a new one if it
/// was).
async fn a_paused_node_keeps_the_promise(n: usize, pause: Duration) {
    let _serial = SERIAL.lock().await;
    let hub = test_hub().await;
    let mut nodes = Vec::new();
    for _ in 1..n {
        nodes.push(Node::spawn(hub.listen_addr()).await);
    }
    members(&hub, n).await;
    let mut events = hub.events();
    let plain: Vec<String> = (0..60).map(|i| format!("pp-{i}")).collect();
    let replicated: Vec<String> = (0..60).map(|i| format!("pr-{i}")).collect();
    for r in Votes::start_many(
        &hub,
        plain
            .iter()
            .map(|i| (i.clone(), Votes::default()))
            .collect(),
    )
    .await
    {
        r.unwrap();
    }
    for r in Ledger::start_many(
        &hub,
        replicated
            .iter()
            .map(|i| (i.clone(), Ledger::default()))
            .collect(),
    )
    .await
    {
        r.unwrap();
    }
    let victim = nodes.pop().expect("a node process to pause");
    // The plain ids of the paused node restart from their start state if it is downed:
    // by design, as after a crash.
    let excused: Vec<String> = plain
        .iter()
        .filter(|id| hub.lookup(id).unwrap().owner == victim.id)
        .cloned()
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers = write_load(&hub, &plain, &replicated, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&victim, libc::SIGSTOP);
    tokio::time::sleep(pause).await;
    signal(&victim, libc::SIGCONT);
    // The paused node is a member again: as it was, or as a new incarnation.
    let addr = victim.id.addr();
    wait_until(
        "the paused node is a member again",
        Duration::from_secs(30),
        || async { hub.nodes().iter().any(|m| m.addr() == addr) && hub.unreachable().is_empty() },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acks = Acks::new();
    for w in writers {
        for (id, values) in w.await.unwrap() {
            acks.entry(id).or_default().extend(values);
        }
    }
    let mut lost = Vec::new();
    let mut twice = Vec::new();
    for id in plain.iter().chain(&replicated) {
        if excused.contains(id) {
            continue;
        }
        let values = acks.get(id).cloned().unwrap_or_default();
        let mut distinct = values.clone();
        distinct.sort();
        distinct.dedup();
        if distinct.len() != values.len() {
            twice.push(id.clone());
        }
        let end = if id.starts_with("pr-") {
            Ledger::handle(&hub, id.clone()).get().await
        } else {
            Votes::handle(&hub, id.clone()).get().await
        };
        let end = end.unwrap_or_else(|e| panic!("{id} answers after the pause: {e}"));
        // Every acknowledged write is in; a write that failed may be in too.
        let unknown = acks.get(&format!("{id}?")).map_or(0, Vec::len) as u64;
        let acked = values.len() as u64;
        let highest = values.iter().copied().max().unwrap_or(0);
        if end < acked || end > acked + unknown || highest > end {
            lost.push(format!(
                "{id}: {end} after {acked} acknowledged ({unknown} failed), the highest {highest}"
            ));
        }
    }
    if !lost.is_empty() {
        while let Ok(e) = events.try_recv() {
            if !matches!(
                e,
                HubEvent::ChildStarted { .. }
                    | HubEvent::ReplicaAdded { .. }
                    | HubEvent::StandbyStarted { .. }
                    | HubEvent::StandbyEnded { .. }
                    | HubEvent::ReplicaRemoved { .. }
            ) {
                eprintln!("EVENT {e:?}");
            }
        }
    }
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert!(twice.is_empty(), "a value acknowledged twice: {twice:?}");
    assert!(
        acks.iter()
            .filter(|(id, _)| !id.ends_with('?'))
            .map(|(_, v)| v.len())
            .sum::<usize>()
            > 500,
        "the load ran"
    );
    // Exactly one instance per id, the paused node's included.
    nodes.push(victim);
    let total = plain.len() + replicated.len();
    let mut running = 0;
    for _ in 0..100 {
        running = hub.local_children();
        for node in nodes.iter_mut() {
            node.say("count").await;
            running += node.expect_line("COUNT ").await.parse::<usize>().unwrap();
        }
        if running == total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if running != total {
        // For the diagnosis: where this node's registry says each child is.
        let mut by_owner: std::collections::BTreeMap<String, Vec<String>> =
            std::collections::BTreeMap::new();
        for id in plain.iter().chain(&replicated) {
            let at = hub.lookup(id).map_or("nowhere".to_string(), |c| {
                format!(
                    "{} e{}{}",
                    c.owner,
                    c.epoch,
                    if c.pending { " pending" } else { "" }
                )
            });
            by_owner.entry(at).or_default().push(id.clone());
        }
        eprintln!("REGISTRY {by_owner:?}");
    }
    assert_eq!(running, total, "instances running for {total} ids");
    hub.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_second_pause_of_one_of_three_nodes_keeps_the_promise() {
    a_paused_node_keeps_the_promise(3, Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_second_pause_of_one_of_three_nodes_keeps_the_promise() {
    a_paused_node_keeps_the_promise(3, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_second_pause_of_one_of_five_nodes_keeps_the_promise() {
    a_paused_node_keeps_the_promise(5, Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_second_pause_of_one_of_five_nodes_keeps_the_promise() {
    a_paused_node_keeps_the_promise(5, Duration::from_secs(5)).await;
}

// ---------------------------------------------------------------------------------------
// Real partitions: node processes in network namespaces of their own, on one bridge.

/// Network namespaces `…n1`..`…nN`, each with a veth on one bridge and the address
/// 10.201.0.i/24, and blackhole routes to split them. Everything is deleted when this is
/// dropped, pass or fail (and left-overs of an earlier run of the same names first).
struct Netns {
    prefix: String,
    n: usize,
}

fn ip(args: &[&str]) -> bool {
    std::process::Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Netns {
    /// `None` where namespaces cannot be made (not root, no `ip`): the caller says so.
    fn new(n: usize) -> Option<Netns> {
        let prefix = format!("ph{}", std::process::id() % 100_000);
        let net = Netns { prefix, n };
        net.delete();
        let bridge = net.bridge();
        if !ip(&["link", "add", &bridge, "type", "bridge"]) {
            return None;
        }
        let mut ok = ip(&["link", "set", &bridge, "up"]);
        for i in 1..=n {
            let ns = net.ns(i);
            let veth = format!("{}v{i}", net.prefix);
            ok &= ip(&["netns", "add", &ns]);
            ok &= ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            ok &= ip(&["link", "set", &veth, "master", &bridge, "up"]);
            let addr = format!("{}/24", net.addr(i));
            ok &= ip(&[
                "netns", "exec", &ns, "ip", "addr", "add", &addr, "dev", "eth0",
            ]);
            ok &= ip(&["netns", "exec", &ns, "ip", "link", "set", "eth0", "up"]);
            ok &= ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        }
        assert!(ok, "setting up the network namespaces failed");
        Some(net)
    }

    fn bridge(&self) -> String {
        format!("{}br", self.prefix)
    }

    fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.prefix)
    }

    fn addr(&self, i: usize) -> String {
        format!("10.201.0.{i}")
    }

    /// Splits the nodes: those of `a` and the others cannot reach each other.
    fn split(&self, a: &[usize]) {
        self.routes(a, "add");
    }

    /// Heals a split made with `a`.
    fn heal(&self, a: &[usize]) {
        self.routes(a, "del");
    }

    fn routes(&self, a: &[usize], verb: &str) {
        for i in 1..=self.n {
            for j in 1..=self.n {
                if a.contains(&i) != a.contains(&j) {
                    let to = format!("{}/32", self.addr(j));
                    let ns = self.ns(i);
                    assert!(
                        ip(&["netns", "exec", &ns, "ip", "route", verb, "blackhole", &to]),
                        "ip route {verb} blackhole {to} in {ns}"
                    );
                }
            }
        }
    }

    fn delete(&self) {
        for i in 1..=self.n {
            ip(&["netns", "del", &self.ns(i)]);
            ip(&["link", "del", &format!("{}v{i}", self.prefix)]);
        }
        ip(&["link", "del", &self.bridge()]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.delete();
    }
}

/// Every acknowledgement a node process reports at `load-stop`.
async fn gather_acks(node: &mut Node, into: &mut Acks) {
    node.say("load-stop").await;
    loop {
        let line = node.expect_line("ACKS").await;
        if line == "-END" {
            return;
        }
        let (id, values) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
        let values = values.split(',').filter(|v| !v.is_empty());
        into.entry(id.to_string())
            .or_default()
            .extend(values.map(|v| v.parse::<u64>().unwrap()));
    }
}

/// 5 node processes, each in its own network namespace, all writing to every id; split
/// 2|3 for `split_for`, then healed. Returns what the test checks, per strategy.
async fn split_two_three(strategy: &str, split_for: Duration) -> Option<SplitOutcome> {
    let _serial = SERIAL.lock().await;
    let Some(net) = Netns::new(5) else {
        eprintln!("SKIPPED: network namespaces need root and iproute2 (`ip`)");
        return None;
    };
    let seed: std::net::SocketAddr = format!("{}:7000", net.addr(1)).parse().unwrap();
    let mut nodes = Vec::new();
    for i in 1..=5 {
        let env = [
            (LISTEN_ENV, format!("{}:7000", net.addr(i))),
            (STRATEGY_ENV, strategy.to_string()),
        ];
        nodes.push(Node::spawn_in(Some(&net.ns(i)), seed, &env).await);
    }
    let all_see = |n: usize| format!("{n} 0");
    for node in nodes.iter_mut() {
        let mut seen = String::new();
        for _ in 0..200 {
            node.say("members").await;
            seen = node.expect_line("MEMBERS ").await;
            if seen == all_see(5) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(seen, all_see(5), "every node sees the 5");
    }
    nodes[0].say("start-ids").await;
    assert_eq!(nodes[0].expect_line("STARTED ").await, "0");
    for node in nodes.iter_mut() {
        node.say("load-start").await;
        node.expect_line("LOADING").await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Where every copy is as the split begins (the standbys are in place by now).
    nodes[4].say("owners").await;
    let owners: Vec<String> = nodes[4]
        .expect_line("OWNERS ")
        .await
        .split(',')
        .map(str::to_string)
        .collect();
    let minority = [1, 2];
    net.split(&minority);
    // Past the lease and the downing, the minority is fenced, the majority is not.
    tokio::time::sleep(split_for).await;
    let mut partitioned = Vec::new();
    for node in nodes.iter_mut() {
        node.say("partitioned").await;
        partitioned.push(node.expect_line("PARTITIONED ").await == "true");
    }
    net.heal(&minority);
    let healed = std::time::Instant::now();
    // One instance per id again, within 5 s of the heal.
    let (plain, replicated) = partition_ids();
    let total = plain.len() + replicated.len();
    let mut running = 0;
    let mut converged = None;
    while healed.elapsed() < Duration::from_secs(15) {
        running = 0;
        for node in nodes.iter_mut() {
            node.say("count").await;
            running += node.expect_line("COUNT ").await.parse::<usize>().unwrap();
        }
        let mut members_ok = true;
        for node in nodes.iter_mut() {
            node.say("members").await;
            members_ok &= node.expect_line("MEMBERS ").await == all_see(5);
            // Each id with its number of copies (a replicated one's standby too).
            node.say("copies").await;
            members_ok &= node.expect_line("COPIES ").await == "0";
        }
        if running == total && members_ok {
            converged = Some(healed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut acks = Acks::new();
    for node in nodes.iter_mut() {
        gather_acks(node, &mut acks).await;
    }
    let conflicts = node_conflicts(nodes.iter_mut()).await;
    let mut merges = (0, 0);
    for node in nodes.iter_mut() {
        node.say("merges").await;
        let line = node.expect_line("MERGES ").await;
        let (ok, failed) = line.split_once(' ').unwrap();
        merges.0 += ok.parse::<usize>().unwrap();
        merges.1 += failed.parse::<usize>().unwrap();
    }
    nodes[4].say("values").await;
    let values: Vec<Option<u64>> = nodes[4]
        .expect_line("VALUES ")
        .await
        .split(',')
        .map(|v| v.parse().ok())
        .collect();
    // The ids whose every copy was on the minority side restart from their start state
    // on the majority: by design (every node that held them failed, for the majority).
    let minority_addrs: Vec<String> = minority
        .iter()
        .map(|i| format!("{}:7000#", net.addr(*i)))
        .collect();
    let on_minority: Vec<String> = plain
        .iter()
        .chain(&replicated)
        .zip(&owners)
        .filter(|(_, copies)| {
            copies
                .split('|')
                .all(|c| minority_addrs.iter().any(|a| c.starts_with(a.as_str())))
        })
        .map(|(id, _)| id.clone())
        .collect();
    drop(nodes);
    drop(net);
    Some(SplitOutcome {
        partitioned,
        running,
        total,
        converged,
        acks,
        values: plain
            .iter()
            .chain(&replicated)
            .cloned()
            .zip(values)
            .collect(),
        on_minority,
        conflicts,
        merges,
        copies: plain
            .iter()
            .chain(&replicated)
            .cloned()
            .zip(owners.iter().cloned())
            .collect(),
    })
}

struct SplitOutcome {
    /// Whether each node said it was partitioned, late in the split.
    partitioned: Vec<bool>,
    running: usize,
    total: usize,
    /// How long after the heal every id ran once and every node saw the 5.
    converged: Option<Duration>,
    acks: Acks,
    values: Vec<(String, Option<u64>)>,
    on_minority: Vec<String>,
    conflicts: usize,
    /// Duplicates merged (`#[on_conflict]`), and merges that failed.
    merges: (usize, usize),
    /// Where each id's copies were before the split (owner first).
    copies: HashMap<String, String>,
}

impl SplitOutcome {
    /// The promise: no acknowledged write lost (but for the ids whose every copy was on
    /// the minority, restarted by design), no value acknowledged twice.
    fn lost_or_twice(&self) -> Vec<String> {
        self.lost(|id| !self.on_minority.contains(id), true)
    }

    /// The ids of `checked` whose value misses an acknowledged write (or has more than
    /// the writes that failed), or, with `unique`, acknowledged one value twice.
    fn lost(&self, checked: impl Fn(&String) -> bool, unique: bool) -> Vec<String> {
        let mut bad = Vec::new();
        for (id, end) in &self.values {
            if !checked(id) {
                continue;
            }
            let values = self.acks.get(id).cloned().unwrap_or_default();
            let mut distinct = values.clone();
            distinct.sort();
            distinct.dedup();
            let unknown = self.acks.get(&format!("{id}?")).map_or(0, Vec::len) as u64;
            let acked = values.len() as u64;
            match end {
                None => bad.push(format!("{id}: unreadable")),
                Some(end) if *end < acked || *end > acked + unknown => {
                    // Which values up to the end no acknowledgement carries (a write
                    // applied without one), for the reader of a failure.
                    let unacked: Vec<u64> = (1..=*end)
                        .filter(|v| distinct.binary_search(v).is_err())
                        .take(8)
                        .collect();
                    bad.push(format!(
                        "{id} (on {}): {end} after {acked} acknowledged ({unknown} failed; values not acknowledged: {unacked:?})",
                        self.copies.get(id).map_or("?", String::as_str)
                    ))
                }
                _ => {}
            }
            if unique && distinct.len() != values.len() {
                bad.push(format!("{id}: a value acknowledged twice"));
            }
        }
        bad
    }
}

async fn a_quorum_strategy_keeps_the_promise_through_a_real_partition(strategy: &str) {
    let Some(out) = split_two_three(strategy, Duration::from_secs(4)).await else {
        return;
    };
    eprintln!(
        "{strategy}: converged {:?} after the heal; {} acknowledged writes checked",
        out.converged,
        out.acks
            .iter()
            .filter(|(id, _)| !id.ends_with('?'))
            .map(|(_, v)| v.len())
            .sum::<usize>()
    );
    assert_eq!(
        out.partitioned,
        vec![true, true, false, false, false],
        "the minority (nodes 1 and 2) is fenced, the majority is not"
    );
    assert!(
        out.converged.is_some_and(|d| d <= Duration::from_secs(5)),
        "one instance per id ({} of {}), each with its number of copies in every registry, and every node sees the 5 within 5 s of the heal: {:?}",
        out.running,
        out.total,
        out.converged
    );
    let bad = out.lost_or_twice();
    assert!(bad.is_empty(), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_partition_under_majority_quorum_keeps_the_promise() {
    a_quorum_strategy_keeps_the_promise_through_a_real_partition("majority").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_partition_under_static_quorum_keeps_the_promise() {
    a_quorum_strategy_keeps_the_promise_through_a_real_partition("static3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_partition_under_dynamic_quorum_keeps_the_promise() {
    a_quorum_strategy_keeps_the_promise_through_a_real_partition("dynamic").await;
}

/// Under `Divergence` both sides go on; after the heal the duplicates are resolved, each
/// reported, and one instance per id runs again. The plain counters merge
/// (`#[on_conflict]`): none of them loses an acknowledged write, not even those whose
/// every copy was on the minority (both sides acknowledge values of their own, so a
/// value may be acknowledged twice). The replicated ones do not merge: the copy
/// dropped loses what its side did, by design.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_partition_under_divergence_resolves_and_reports_every_duplicate() {
    let Some(out) = split_two_three("divergence", Duration::from_secs(4)).await else {
        return;
    };
    assert_eq!(out.partitioned, vec![false; 5], "divergence fences nobody");
    assert!(
        out.converged.is_some_and(|d| d <= Duration::from_secs(5)),
        "one instance per id ({} of {}), each with its number of copies in every registry, within 5 s of the heal: {:?}",
        out.running,
        out.total,
        out.converged
    );
    assert!(out.conflicts > 0, "the duplicates were reported");
    assert_eq!(out.merges.1, 0, "every merge went through");
    assert!(
        out.merges.0 > 0,
        "the duplicates of the plain counters were merged"
    );
    let lost = out.lost(|id| id.starts_with("np-"), false);
    assert!(lost.is_empty(), "merged counters lost writes: {lost:?}");
}

/// Counts the ids of round `round` a node acknowledged the start of (its `RACED` line).
async fn count_raced(node: &mut Node, round: usize, oks: &mut Starts) {
    let line = node.expect_line("RACED").await;
    for i in line.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        oks.entry(format!("race-{round}-{i}"))
            .or_default()
            .push(node.id);
    }
}

/// Who acknowledged a start of each id (the node that was asked to start it).
type Starts = HashMap<String, Vec<NodeId>>;

/// The duplicates resolved so far on these node processes.
async fn node_conflicts<'a>(nodes: impl Iterator<Item = &'a mut Node>) -> usize {
    let mut conflicts = 0;
    for node in nodes {
        node.say("conflicts").await;
        conflicts += node
            .expect_line("CONFLICTS ")
            .await
            .parse::<usize>()
            .unwrap();
    }
    conflicts
}

/// The duplicates resolved so far on every node process and on the test's hub.
async fn duplicates_resolved<'a>(
    nodes: impl Iterator<Item = &'a mut Node>,
    events: &mut tokio::sync::broadcast::Receiver<HubEvent>,
) -> usize {
    let mut conflicts = node_conflicts(nodes).await;
    while let Ok(e) = events.try_recv() {
        if let HubEvent::DuplicateResolved { .. } = e {
            conflicts += 1;
        }
    }
    conflicts
}

/// Ids acknowledged more than once.
fn acknowledged_twice(oks: &Starts) -> Vec<(&String, &Vec<NodeId>)> {
    let mut twice: Vec<_> = oks.iter().filter(|(_, by)| by.len() > 1).collect();
    twice.sort();
    twice
}

/// Four node processes start at the same moment and each starts the same 100 ids at
/// once: exactly one start of each id is acknowledged, and no acknowledged start is
/// dropped afterwards as a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_starts_from_four_fresh_nodes_acknowledge_one_start_per_id() {
    let _serial = SERIAL.lock().await;
    let hub = test_hub().await;
    let mut events = hub.events();
    let seed = hub.listen_addr();
    let mut nodes = futures::future::join_all((0..4).map(|_| Node::spawn(seed))).await;
    futures::future::join_all(nodes.iter_mut().map(|n| n.say("race-start 0"))).await;
    let mut oks = Starts::new();
    for node in nodes.iter_mut() {
        count_raced(node, 0, &mut oks).await;
    }
    let twice = acknowledged_twice(&oks);
    assert!(
        twice.is_empty(),
        "ids acknowledged more than once (by the nodes asked to start them): {twice:?}"
    );
    assert_eq!(oks.len(), 100, "every id started once");
    members(&hub, 5).await;
    // And the acknowledged instance is the one that lives: none was dropped since.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let conflicts = duplicates_resolved(nodes.iter_mut(), &mut events).await;
    assert_eq!(
        conflicts, 0,
        "no acknowledged start was dropped as a duplicate"
    );
    hub.shutdown().await.unwrap();
}

/// Starts of the same ids from three nodes while a fourth joins (the ring changes under
/// them): a round of 100 ids every 30 ms for the whole join; exactly one acknowledged
/// start per id, none dropped afterwards. (Before new ids were claimed from the other
/// members, about one run in five acknowledged some ids twice, in the round where the
/// joiner first showed in gossip.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_racing_a_join_acknowledge_one_start_per_id() {
    let _serial = SERIAL.lock().await;
    let hub = test_hub().await;
    let mut events = hub.events();
    let seed = hub.listen_addr();
    let mut nodes = futures::future::join_all((0..2).map(|_| Node::spawn(seed))).await;
    members(&hub, 3).await;
    let joining = tokio::spawn(Node::spawn(seed));
    let mut oks = Starts::new();
    let rounds = 30;
    for round in 0..rounds {
        let items = (0..100)
            .map(|i| (format!("race-{round}-{i}"), Tally::default()))
            .collect();
        let command = format!("race-start {round}");
        let (here, _) = tokio::join!(
            Tally::start_many(&hub, items),
            futures::future::join_all(nodes.iter_mut().map(|n| n.say(&command)))
        );
        for (i, r) in here.iter().enumerate() {
            if r.is_ok() {
                oks.entry(format!("race-{round}-{i}"))
                    .or_default()
                    .push(hub.node_id());
            }
        }
        for node in nodes.iter_mut() {
            count_raced(node, round, &mut oks).await;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut joiner = joining.await.unwrap();
    members(&hub, 4).await;
    let twice = acknowledged_twice(&oks);
    assert!(
        twice.is_empty(),
        "ids acknowledged more than once (by the nodes asked to start them): {twice:?}"
    );
    assert_eq!(oks.len(), 100 * rounds, "every id started once");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let all = nodes.iter_mut().chain(std::iter::once(&mut joiner));
    let conflicts = duplicates_resolved(all, &mut events).await;
    assert_eq!(
        conflicts, 0,
        "no acknowledged start was dropped as a duplicate"
    );
    hub.shutdown().await.unwrap();
}
