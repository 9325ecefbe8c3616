//! The benchmark suite: every figure of `BENCHMARKS.md` beside its baseline, measured
//! in the same run, as a table. Multi-node figures use separate OS processes on
//! loopback (this binary re-executes itself as nodes and as the baseline server).
//!
//! ```sh
//! cargo run --release --example bench            # all figures
//! cargo run --release --example bench -- P1 P3   # some figures (P1..P8, M1, R1, R2, ...)
//! cargo run --release --example bench -- T1      # P1 and P2, and the same over mutual TLS
//! BENCH_REPS=5 cargo run --release --example bench
//! ```

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use futures::StreamExt;
use kameo::actor::Spawn;
use processhub::prelude::*;
use processhub::{CallError, PartitionTolerance};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot};

const HUB_ID: &str = "bench";
/// Where a node process finds its TLS files (T1).
const TLS_DIR_ENV: &str = "BENCH_TLS_DIR";
/// Set for a node process of O1: it serves its admin address and runs no-op hook
/// handlers on every point.
const OBSERVED_ENV: &str = "BENCH_OBSERVED";

#[path = "../tests/common/pki.rs"]
mod pki;

/// The component under test: a counter.
#[distributed]
#[derive(Default, Serialize, Deserialize)]
pub struct Counter {
    n: u64,
}

#[distributed]
impl Counter {
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

/// The counter kept on three nodes, each write acknowledged once both standbys have it.
#[distributed(replicas = 3)]
#[derive(Default, Serialize, Deserialize)]
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
}

/// The counter kept on three nodes, each write shipped right after its reply.
#[distributed(replicas = 3, sync = "async")]
#[derive(Default, Serialize, Deserialize)]
pub struct AsyncCounter {
    n: u64,
}

#[distributed]
impl AsyncCounter {
    /// Adds and returns the new value.
    pub fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
}

/// R2's component: a counter beside a block of bytes of any size, kept on three nodes.
macro_rules! blob {
    ($(#[$doc:meta])* $name:ident, $($args:tt)*) => {
        $(#[$doc])*
        #[distributed($($args)*)]
        #[derive(Default, Serialize, Deserialize)]
        pub struct $name {
            #[serde(with = "serde_bytes")]
            data: Vec<u8>,
            n: u64,
        }

        #[distributed]
        impl $name {
            /// Makes the block `len` bytes long (a start state is limited to half a
            /// frame: a large state grows with writes).
            pub fn grow(&mut self, len: u64) {
                self.data.resize(len as usize, 7);
            }

            /// Adds, changes one byte of the block, and returns the new value.
            pub fn add(&mut self, by: u64) -> u64 {
                self.n += by;
                let len = self.data.len();
                if let Some(b) = self.data.get_mut(self.n as usize % len.max(1)) {
                    *b = b.wrapping_add(1);
                }
                self.n
            }
        }
    };
}

blob!(
    /// R2, each write shipping the whole state (the default, `ship = "state"`).
    BlobState,
    replicas = 3
);
blob!(
    /// R2, each write shipping its call (`ship = "calls"`).
    BlobCalls,
    replicas = 3,
    ship = "calls"
);

/// A counter placed with a cap on each node's share (S1).
#[distributed(distribution = "bounded_load")]
#[derive(Default, Serialize, Deserialize)]
pub struct BoundedCounter {
    n: u64,
}

#[distributed]
impl BoundedCounter {
    /// The value.
    pub fn get(&self) -> u64 {
        self.n
    }
}

/// A counter placed on the members in turn (S1).
#[distributed(distribution = "round_robin")]
#[derive(Default, Serialize, Deserialize)]
pub struct TurnCounter {
    n: u64,
}

#[distributed]
impl TurnCounter {
    /// The value.
    pub fn get(&self) -> u64 {
        self.n
    }
}

// The same work in a plain kameo actor: the baseline of P3.
#[path = "shared/plain.rs"]
mod plain;
use plain::{Add, PlainCounter};

fn reps(default: usize) -> usize {
    std::env::var("BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize] as f64
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--node") {
        return node_main(args[i + 1].clone()).await;
    }
    if args.iter().any(|a| a == "--echo-server") {
        let hop = if args.iter().any(|a| a == "--actor") {
            Hop::EachRequest
        } else if args.iter().any(|a| a == "--actor-batch") {
            Hop::EachRead
        } else {
            Hop::None
        };
        return echo_server(hop).await;
    }
    let wanted: Vec<String> = args[1..]
        .iter()
        .filter(|a| {
            a.starts_with('P')
                || a.starts_with('M')
                || a.starts_with('R')
                || a.starts_with('S')
                || a.starts_with('I')
                || a.starts_with('F')
                || a.starts_with('H')
                || a.starts_with('L')
                || a.starts_with('T')
                || a.starts_with('O')
        })
        .cloned()
        .collect();
    let run = |p: &str| wanted.is_empty() || wanted.iter().any(|w| w == p);
    let mut rows: Vec<Row> = Vec::new();
    println!("processhub benchmarks: {}", machine());
    if run("P1") || run("P2") || run("T1") {
        rows.extend(p1_p2(run("T1")).await);
    }
    if run("P3") {
        rows.push(p3().await);
    }
    if run("O1") {
        rows.extend(o1().await);
    }
    if run("P4") || run("P5") {
        rows.extend(p4_p5().await);
    }
    if run("P6") {
        rows.extend(p6().await);
    }
    if run("P7") {
        rows.push(p7().await);
    }
    if run("P8") {
        rows.push(p8().await);
    }
    if run("M1") {
        rows.extend(m1().await);
    }
    if run("R1") {
        rows.extend(r1().await);
    }
    if run("R2") {
        rows.extend(r2().await);
    }
    if run("S1") {
        rows.extend(s1().await);
    }
    if run("I1") {
        rows.push(i1().await);
    }
    if run("F1") || run("H1") {
        rows.extend(f1_h1().await);
    }
    if run("L1") {
        rows.extend(l1().await);
    }
    println!();
    println!("| # | figure | processhub | baseline | ratio | target | met |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.id,
            r.figure,
            r.value,
            r.baseline.as_deref().unwrap_or("—"),
            r.ratio.map_or("—".to_string(), |x| if x < 0.1 {
                format!("{x:.4}")
            } else {
                format!("{x:.2}")
            }),
            r.target,
            if r.met { "yes" } else { "NO" }
        );
    }
}

struct Row {
    id: &'static str,
    figure: &'static str,
    value: String,
    baseline: Option<String>,
    ratio: Option<f64>,
    target: &'static str,
    met: bool,
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024 / 1024);
    format!("{cpu}, {cores} cores, {mem} GiB, loopback")
}

// ---------------------------------------------------------------------------------------
// Node processes

/// The partition strategy of the bench's hubs: `BENCH_PARTITION=divergence` (set by the
/// lease figure for the node processes it starts) runs without leases.
fn strategy() -> PartitionTolerance {
    match std::env::var("BENCH_PARTITION").as_deref() {
        Ok("divergence") => PartitionTolerance::Divergence,
        _ => PartitionTolerance::default(),
    }
}

async fn node_main(seed: String) {
    let mut builder = Hub::builder(HUB_ID)
        .seeds([seed])
        .partition_tolerance(strategy());
    if let Ok(dir) = std::env::var(TLS_DIR_ENV) {
        builder = builder.tls(pki::Pki::tls_in(std::path::Path::new(&dir)));
    }
    let observed = std::env::var_os(OBSERVED_ENV).is_some();
    if observed {
        builder = builder.admin_listen("127.0.0.1:0");
    }
    let hub = builder.start().await.expect("node starts");
    if observed {
        observe(&hub);
    }
    println!("READY {}", hub.node_id());
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = stdin.next_line().await {
        match line.trim() {
            "rss" => println!("RSS {}", rss_bytes()),
            "count" => println!("COUNT {} {}", hub.local_children(), hub.children().len()),
            _ => println!("UNKNOWN"),
        }
    }
    let _ = hub.shutdown().await;
}

struct NodeProcess {
    child: Child,
    out: Lines<BufReader<ChildStdout>>,
    id: NodeId,
}

impl NodeProcess {
    async fn spawn(seed: std::net::SocketAddr) -> Self {
        Self::spawn_with(seed, PartitionTolerance::default()).await
    }

    async fn spawn_with(seed: std::net::SocketAddr, strategy: PartitionTolerance) -> Self {
        Self::spawn_opts(seed, strategy, None).await
    }

    /// A node process; with `tls`, the directory of its TLS files.
    async fn spawn_opts(
        seed: std::net::SocketAddr,
        strategy: PartitionTolerance,
        tls: Option<&std::path::Path>,
    ) -> Self {
        let partition = if strategy == PartitionTolerance::Divergence {
            "divergence"
        } else {
            "default"
        };
        let mut command = Command::new(std::env::current_exe().unwrap());
        if let Some(dir) = tls {
            command.env(TLS_DIR_ENV, dir);
        }
        if std::env::var_os(OBSERVED_ENV).is_some() {
            command.env(OBSERVED_ENV, "1");
        }
        let mut child = command
            .args(["--node", &seed.to_string()])
            .env("BENCH_PARTITION", partition)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn node");
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = read_prefixed(&mut out, "READY ").await;
        let (addr, inc) = ready.split_once('#').unwrap();
        let id = NodeId::new(addr.parse().unwrap(), inc.parse().unwrap());
        Self { child, out, id }
    }

    async fn ask(&mut self, cmd: &str, prefix: &str) -> String {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .unwrap();
        read_prefixed(&mut self.out, prefix).await
    }
}

async fn read_prefixed(out: &mut Lines<BufReader<ChildStdout>>, prefix: &str) -> String {
    tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let line = out.next_line().await.unwrap().expect("node output");
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_string();
            }
        }
    })
    .await
    .expect("node answered")
}

async fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn cluster(nodes: usize) -> (Hub, Vec<NodeProcess>) {
    cluster_with(nodes, PartitionTolerance::default()).await
}

async fn cluster_with(nodes: usize, strategy: PartitionTolerance) -> (Hub, Vec<NodeProcess>) {
    cluster_opts(nodes, strategy, None).await
}

/// A cluster of this process's hub and `nodes - 1` node processes; with `tls`, the
/// directory of the TLS files every node uses.
async fn cluster_opts(
    nodes: usize,
    strategy: PartitionTolerance,
    tls: Option<&std::path::Path>,
) -> (Hub, Vec<NodeProcess>) {
    let mut builder = Hub::builder(HUB_ID).partition_tolerance(strategy);
    if let Some(dir) = tls {
        builder = builder.tls(pki::Pki::tls_in(dir));
    }
    let hub = builder.start().await.unwrap();
    let mut procs = Vec::new();
    for _ in 1..nodes {
        procs.push(NodeProcess::spawn_opts(hub.listen_addr(), strategy, tls).await);
    }
    wait_for("members", Duration::from_secs(30), || {
        hub.nodes().len() == nodes
    })
    .await;
    (hub, procs)
}

fn ids_owned_by(hub: &Hub, node: NodeId, n: usize, prefix: &str) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .filter(|id| hub.ring_owner(id) == Some(node))
        .take(n)
        .collect()
}

// ---------------------------------------------------------------------------------------
// The baseline: plain tokio TCP, length-prefixed frames `u32 len | u64 rid | u64 body`,
// a writer task and a reader task per side, a pending map of oneshots.

/// How the baseline server applies requests to its state.
#[derive(Clone, Copy, PartialEq)]
enum Hop {
    /// On the connection's task (the baseline).
    None,
    /// Each request handed to a kameo actor, answered with its reply (P2').
    EachRequest,
    /// The requests of each read handed to a kameo actor as one message, as
    /// processhub's serving side hands a child its calls (P2'').
    EachRead,
}

/// The requests of one read, for the actor: the reply is each one's new value.
struct AddMany(Vec<u64>);

impl kameo::message::Message<AddMany> for PlainCounter {
    type Reply = Vec<u64>;

    async fn handle(
        &mut self,
        AddMany(by): AddMany,
        _: &mut kameo::message::Context<Self, Self::Reply>,
    ) -> Vec<u64> {
        by.into_iter()
            .map(|v| {
                self.n += v;
                self.n
            })
            .collect()
    }
}

/// The baseline server; with a [`Hop`], its requests go through a kameo actor (a
/// diagnostic: the cost of the actor hop alone).
async fn echo_server(hop: Hop) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("READY {}", listener.local_addr().unwrap());
    let stdin_closed = async {
        let mut s = tokio::io::stdin();
        let mut b = [0u8; 1];
        let _ = s.read(&mut b).await;
    };
    let serve = async {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let (mut r, w) = stream.into_split();
                let tx = spawn_frame_writer(w);
                let mut buf = BytesMut::with_capacity(64 * 1024);
                let mut state = 0u64;
                let actor = (hop != Hop::None).then(|| PlainCounter::spawn(PlainCounter { n: 0 }));
                let mut serving = futures::stream::FuturesUnordered::new();
                let mut serving_reads = futures::stream::FuturesUnordered::new();
                loop {
                    let mut read = (vec![], vec![]);
                    while let Some((rid, v)) = take_frame(&mut buf) {
                        match (&actor, hop) {
                            (Some(a), Hop::EachRequest) => {
                                let a = a.clone();
                                serving.push(async move { (rid, a.ask(Add(v)).await.unwrap()) });
                            }
                            (Some(_), _) => {
                                read.0.push(rid);
                                read.1.push(v);
                            }
                            (None, _) => {
                                state += v;
                                let _ = tx.send((rid, state));
                            }
                        }
                    }
                    if let (Some(a), false) = (&actor, read.0.is_empty()) {
                        let a = a.clone();
                        serving_reads.push(async move {
                            let values = a.ask(AddMany(read.1)).await.unwrap();
                            read.0.into_iter().zip(values)
                        });
                    }
                    tokio::select! {
                        n = r.read_buf(&mut buf) => if n.unwrap_or(0) == 0 { return },
                        Some((rid, v)) = serving.next(), if !serving.is_empty() => {
                            let _ = tx.send((rid, v));
                        }
                        Some(replies) = serving_reads.next(), if !serving_reads.is_empty() => {
                            for reply in replies {
                                let _ = tx.send(reply);
                            }
                        }
                    }
                }
            });
        }
    };
    tokio::select! { _ = stdin_closed => {}, _ = serve => {} }
}

/// The baseline's writer task: frames queued on the channel, written in batches.
fn spawn_frame_writer(mut w: tokio::net::tcp::OwnedWriteHalf) -> mpsc::UnboundedSender<(u64, u64)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, u64)>();
    tokio::spawn(async move {
        let mut buf = BytesMut::new();
        while let Some((rid, v)) = rx.recv().await {
            put_frame(&mut buf, rid, v);
            while let Ok((rid, v)) = rx.try_recv() {
                put_frame(&mut buf, rid, v);
            }
            if w.write_all(&buf).await.is_err() {
                return;
            }
            buf.clear();
        }
    });
    tx
}

fn put_frame(buf: &mut BytesMut, rid: u64, v: u64) {
    buf.put_u32(16);
    buf.put_u64(rid);
    buf.put_u64(v);
}

fn take_frame(buf: &mut BytesMut) -> Option<(u64, u64)> {
    if buf.len() < 4 {
        return None;
    }
    let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
    if buf.len() < 4 + len {
        return None;
    }
    buf.advance(4);
    let rid = buf.get_u64();
    let v = buf.get_u64();
    Some((rid, v))
}

#[derive(Clone)]
struct BaselineClient {
    tx: mpsc::UnboundedSender<(u64, u64)>,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<u64>>>>,
    next: Arc<std::sync::atomic::AtomicU64>,
}

impl BaselineClient {
    async fn connect(addr: &str) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (mut r, w) = stream.into_split();
        let tx = spawn_frame_writer(w);
        let pending: Arc<Mutex<HashMap<u64, oneshot::Sender<u64>>>> = Default::default();
        let p = pending.clone();
        tokio::spawn(async move {
            let mut buf = BytesMut::with_capacity(64 * 1024);
            loop {
                while let Some((rid, v)) = take_frame(&mut buf) {
                    if let Some(tx) = p.lock().unwrap().remove(&rid) {
                        let _ = tx.send(v);
                    }
                }
                if r.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
            }
        });
        Self {
            tx,
            pending,
            next: Default::default(),
        }
    }

    async fn call(&self, v: u64) -> u64 {
        let rid = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(rid, tx);
        self.tx.send((rid, v)).unwrap();
        rx.await.unwrap()
    }
}

// ---------------------------------------------------------------------------------------
// Figures

const SEQ_CALLS: usize = 10_000;
const WINDOW_CALLS: usize = 100_000;

/// Sequential latencies in ns, sorted.
async fn sequential<F, Fut>(n: usize, mut f: F) -> Vec<u64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..500 {
        f().await;
    }
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f().await;
        lat.push(t.elapsed().as_nanos() as u64);
    }
    lat.sort_unstable();
    lat
}

/// Calls per second with `window` in flight.
async fn windowed<F, Fut>(n: usize, window: usize, f: F) -> f64
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let t = Instant::now();
    futures::stream::iter(0..n)
        .map(|_| f())
        .buffer_unordered(window)
        .for_each(|()| async {})
        .await;
    n as f64 / t.elapsed().as_secs_f64()
}

/// Starts the baseline server (`--echo-server` and `args`) and connects to it; the
/// process ends when the returned child is dropped.
async fn baseline_server(args: &[&str]) -> (tokio::process::Child, BaselineClient) {
    let mut server = Command::new(std::env::current_exe().unwrap())
        .arg("--echo-server")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(server.stdout.take().unwrap()).lines();
    let addr = read_prefixed(&mut out, "READY ").await;
    (server, BaselineClient::connect(&addr).await)
}

/// P1, P2, P2' and P2''; with `tls`, P1 and P2 over mutual TLS (T1) beside P1 and P2
/// without it, measured in turn in the same run.
async fn p1_p2(tls: bool) -> Vec<Row> {
    let dir = std::env::temp_dir().join(format!("processhub-bench-tls-{}", std::process::id()));
    if tls {
        pki::Pki::new().write_to(&dir);
    }
    let (hub, mut procs) = cluster(2).await;
    let b = procs[0].id;
    let id = ids_owned_by(&hub, b, 1, "p1").remove(0);
    let c = Counter::start(&hub, id, Counter::default()).await.unwrap();
    // The same over mutual TLS: a second cluster, measured in turn with the first.
    let secure = if tls {
        let (hub, procs) = cluster_opts(2, PartitionTolerance::default(), Some(&dir)).await;
        let id = ids_owned_by(&hub, procs[0].id, 1, "t1").remove(0);
        let c = Counter::start(&hub, id, Counter::default()).await.unwrap();
        Some((hub, procs, c))
    } else {
        None
    };
    let (_server, base) = baseline_server(&[]).await;
    let (_actor_server, hop) = baseline_server(&["--actor"]).await;
    let (_batch_server, hop_per_read) = baseline_server(&["--actor-batch"]).await;

    // For profiling: `BENCH_SOAK_P2=5` runs P2's processhub side alone for 5 seconds
    // first, and then its baseline for as long (attach `perf record -a` or `perf stat`
    // once "soak" is printed); each side's calls per second are printed after it,
    // overall and per window of 100,000 calls.
    if let Some(secs) = std::env::var("BENCH_SOAK_P2")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        println!("soak: processhub for {secs} s");
        let began = Instant::now();
        let mut calls = 0;
        let mut rates = Vec::new();
        while began.elapsed() < Duration::from_secs(secs) {
            rates.push(
                windowed(WINDOW_CALLS, 64, || async {
                    c.add(1).await.unwrap();
                })
                .await as u64,
            );
            calls += WINDOW_CALLS;
        }
        let rate = calls as f64 / began.elapsed().as_secs_f64();
        println!(
            "soak: {calls} calls, {rate:.0}/s (each window: {rates:?}); baseline for {secs} s"
        );
        let began = Instant::now();
        let mut calls = 0;
        let mut rates = Vec::new();
        while began.elapsed() < Duration::from_secs(secs) {
            rates.push(
                windowed(WINDOW_CALLS, 64, || async {
                    base.call(1).await;
                })
                .await as u64,
            );
            calls += WINDOW_CALLS;
        }
        let rate = calls as f64 / began.elapsed().as_secs_f64();
        println!("soak: {calls} calls, {rate:.0}/s (each window: {rates:?}); done");
    }
    let (mut p50, mut p99, mut b50, mut b99, mut rate, mut brate, mut hrate) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut t50, mut t99, mut trate) = (vec![], vec![], vec![]);
    let mut hbrate = vec![];
    for _ in 0..reps(5) {
        if let Some((_, _, tc)) = &secure {
            let lat = sequential(SEQ_CALLS, || async {
                tc.add(1).await.unwrap();
            })
            .await;
            t50.push(percentile(&lat, 0.5));
            t99.push(percentile(&lat, 0.99));
            trate.push(
                windowed(WINDOW_CALLS, 64, || async {
                    tc.add(1).await.unwrap();
                })
                .await,
            );
        }
        let lat = sequential(SEQ_CALLS, || async {
            c.add(1).await.unwrap();
        })
        .await;
        p50.push(percentile(&lat, 0.5));
        p99.push(percentile(&lat, 0.99));
        let lat = sequential(SEQ_CALLS, || async {
            base.call(1).await;
        })
        .await;
        b50.push(percentile(&lat, 0.5));
        b99.push(percentile(&lat, 0.99));
        rate.push(
            windowed(WINDOW_CALLS, 64, || async {
                c.add(1).await.unwrap();
            })
            .await,
        );
        brate.push(
            windowed(WINDOW_CALLS, 64, || async {
                base.call(1).await;
            })
            .await,
        );
        hrate.push(
            windowed(WINDOW_CALLS, 64, || async {
                hop.call(1).await;
            })
            .await,
        );
        hbrate.push(
            windowed(WINDOW_CALLS, 64, || async {
                hop_per_read.call(1).await;
            })
            .await,
        );
    }
    let (p50, p99, b50, b99) = (median(p50), median(p99), median(b50), median(b99));
    let (rate, brate, hrate) = (median(rate), median(brate), median(hrate));
    let hbrate = median(hbrate);
    drop(procs.remove(0));
    hub.shutdown().await.unwrap();
    let mut rows = Vec::new();
    if let Some((thub, tprocs, _)) = secure {
        let (t50, t99, trate) = (median(t50), median(t99), median(trate));
        drop(tprocs);
        thub.shutdown().await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        rows.push(Row {
            id: "T1",
            figure: "P1 over mutual TLS: p50 / p99 (baseline: P1 without TLS)",
            value: format!("{:.1} / {:.1} µs", t50 / 1e3, t99 / 1e3),
            baseline: Some(format!("{:.1} / {:.1} µs", p50 / 1e3, p99 / 1e3)),
            ratio: Some(t50 / p50),
            target: "(the cost of TLS)",
            met: true,
        });
        rows.push(Row {
            id: "T2",
            figure: "P2 over mutual TLS: calls/s (baseline: P2 without TLS)",
            value: format!("{trate:.0}"),
            baseline: Some(format!("{rate:.0}")),
            ratio: Some(trate / rate),
            target: "(the cost of TLS)",
            met: true,
        });
    }
    rows.extend([
        Row {
            id: "P1",
            figure: "remote call, 1 in flight: p50 / p99",
            value: format!("{:.1} / {:.1} µs", p50 / 1e3, p99 / 1e3),
            baseline: Some(format!("{:.1} / {:.1} µs", b50 / 1e3, b99 / 1e3)),
            ratio: Some(p50 / b50),
            target: "p50 ≤ 1.0× (issue 16)",
            met: p50 / b50 <= 1.0,
        },
        Row {
            id: "P2",
            figure: "remote calls, 64 in flight: calls/s",
            value: format!("{:.0}", rate),
            baseline: Some(format!("{:.0}", brate)),
            ratio: Some(rate / brate),
            target: "≥ 0.8× (issue 16)",
            met: rate / brate >= 0.8,
        },
    ]);
    // Diagnostics: the baseline server with the actor hop, without processhub.
    let diagnostics = [
        (
            "P2'",
            "diagnostic: the plain TCP server with a kameo ask per request",
            hrate,
        ),
        (
            "P2''",
            "diagnostic: the plain TCP server with one kameo ask per read (as processhub's serving side)",
            hbrate,
        ),
    ];
    rows.extend(diagnostics.map(|(id, figure, r)| Row {
        id,
        figure,
        value: format!("{r:.0}"),
        baseline: Some(format!("{brate:.0}")),
        ratio: Some(r / brate),
        target: "(explains P2)",
        met: true,
    }));
    rows
}

/// One no-op handler on every hook point, and a no-op before-move handler.
fn observe(hub: &Hub) {
    for point in processhub::HookPoint::ALL {
        hub.hooks().register(*point, 0, |_| {});
    }
    hub.hooks()
        .before_move(0, |_| processhub::MoveConsent::Ready);
}

/// O1–O3: P1, P2 and P3 on a cluster whose nodes serve their admin address (the
/// Prometheus recorder on) and run a no-op hook handler on every point, beside the same
/// figures on a plain cluster, measured in turn in the same run.
async fn o1() -> Vec<Row> {
    let (plain, plain_procs) = cluster(2).await;
    // The node processes of the observed cluster inherit the variable.
    std::env::set_var(OBSERVED_ENV, "1");
    let observed = Hub::builder(HUB_ID)
        .admin_listen("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    observe(&observed);
    let observed_procs = vec![NodeProcess::spawn(observed.listen_addr()).await];
    std::env::remove_var(OBSERVED_ENV);
    wait_for("members", Duration::from_secs(30), || {
        observed.nodes().len() == 2
    })
    .await;
    let remote =
        |hub: &Hub, node: NodeId, prefix: &str| ids_owned_by(hub, node, 1, prefix).remove(0);
    let pc = Counter::start(
        &plain,
        remote(&plain, plain_procs[0].id, "o-p"),
        Counter::default(),
    )
    .await
    .unwrap();
    let oc = Counter::start(
        &observed,
        remote(&observed, observed_procs[0].id, "o-o"),
        Counter::default(),
    )
    .await
    .unwrap();
    let pl = Counter::start(
        &plain,
        remote(&plain, plain.node_id(), "o-pl"),
        Counter::default(),
    )
    .await
    .unwrap();
    let ol = Counter::start(
        &observed,
        remote(&observed, observed.node_id(), "o-ol"),
        Counter::default(),
    )
    .await
    .unwrap();
    let (mut p1, mut o1, mut p2, mut o2, mut p3, mut o3) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..reps(5) {
        for (c, p50, rate) in [(&pc, &mut p1, &mut p2), (&oc, &mut o1, &mut o2)] {
            let lat = sequential(SEQ_CALLS, || async {
                c.add(1).await.unwrap();
            })
            .await;
            p50.push(percentile(&lat, 0.5));
            rate.push(
                windowed(WINDOW_CALLS, 64, || async {
                    c.add(1).await.unwrap();
                })
                .await,
            );
        }
        for (c, p50) in [(&pl, &mut p3), (&ol, &mut o3)] {
            let lat = sequential(SEQ_CALLS * 2, || async {
                c.add(1).await.unwrap();
            })
            .await;
            p50.push(percentile(&lat, 0.5));
        }
    }
    // The exporter really served: its page lists the calls just made.
    let page = http_get(observed.admin_addr().unwrap(), "/metrics").await;
    assert!(
        page.contains("processhub_calls_total"),
        "the exporter counts calls"
    );
    drop(plain_procs);
    drop(observed_procs);
    plain.shutdown().await.unwrap();
    observed.shutdown().await.unwrap();
    let (p1, o1, p2, o2, p3, o3) = (
        median(p1),
        median(o1),
        median(p2),
        median(o2),
        median(p3),
        median(o3),
    );
    vec![
        Row {
            id: "O1",
            figure: "P1 with hooks on every point and the exporter on: p50 (baseline: P1 without)",
            value: format!("{:.1} µs", o1 / 1e3),
            baseline: Some(format!("{:.1} µs", p1 / 1e3)),
            ratio: Some(o1 / p1),
            target: "(the cost of observing)",
            met: true,
        },
        Row {
            id: "O2",
            figure:
                "P2 with hooks on every point and the exporter on: calls/s (baseline: P2 without)",
            value: format!("{o2:.0}"),
            baseline: Some(format!("{p2:.0}")),
            ratio: Some(o2 / p2),
            target: "(the cost of observing)",
            met: true,
        },
        Row {
            id: "O3",
            figure: "P3 with hooks on every point and the exporter on: p50 (baseline: P3 without)",
            value: format!("{:.2} µs", o3 / 1e3),
            baseline: Some(format!("{:.2} µs", p3 / 1e3)),
            ratio: Some(o3 / p3),
            target: "(the cost of observing)",
            met: true,
        },
    ]
}

/// A GET over plain HTTP/1.1: the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    raw.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

async fn p3() -> Row {
    let hub = Hub::builder(HUB_ID).start().await.unwrap();
    let c = Counter::start(&hub, "p3", Counter::default())
        .await
        .unwrap();
    let plain = PlainCounter::spawn(PlainCounter { n: 0 });
    let (mut ours, mut theirs) = (vec![], vec![]);
    for _ in 0..reps(5) {
        let lat = sequential(SEQ_CALLS * 2, || async {
            c.add(1).await.unwrap();
        })
        .await;
        ours.push(percentile(&lat, 0.5));
        let lat = sequential(SEQ_CALLS * 2, || async {
            plain.ask(Add(1)).await.unwrap();
        })
        .await;
        theirs.push(percentile(&lat, 0.5));
    }
    let (ours, theirs) = (median(ours), median(theirs));
    hub.shutdown().await.unwrap();
    Row {
        id: "P3",
        figure: "local call through a handle: p50",
        value: format!("{:.2} µs", ours / 1e3),
        baseline: Some(format!("{:.2} µs (kameo ask)", theirs / 1e3)),
        ratio: Some(ours / theirs),
        target: "≤ 1.1× (issue 16)",
        met: ours / theirs <= 1.1,
    }
}

const P4_COMPONENTS: usize = 100_000;

async fn p4_p5() -> Vec<Row> {
    let (mut starts, mut detect, mut recover, mut held) = (vec![], vec![], vec![], vec![]);
    for _ in 0..reps(3) {
        let (hub, mut procs) = cluster(3).await;
        let items: Vec<(String, Counter)> = (0..P4_COMPONENTS)
            .map(|i| (format!("c-{i}"), Counter::default()))
            .collect();
        let t = Instant::now();
        let results = Counter::start_many(&hub, items).await;
        let took = t.elapsed();
        assert!(results.iter().all(|r| r.is_ok()), "every start succeeds");
        starts.push(P4_COMPONENTS as f64 / took.as_secs_f64());

        // P5: kill -9 one node; detection alone, then every one of its children answering.
        let victim = procs[0].id;
        wait_for("registry", Duration::from_secs(60), || {
            hub.children().len() == P4_COMPONENTS
        })
        .await;
        let lost: Vec<String> = hub
            .children()
            .into_iter()
            .filter(|c| c.owner == victim)
            .map(|c| c.id.to_string())
            .collect();
        held.push(lost.len() as f64);
        let mut events = hub.events();
        let killed = Instant::now();
        procs[0].child.start_kill().unwrap();
        let _ = &mut events;
        // The failure detector's own time: the victim is unreachable (downing, the lease
        // wait and the restarts come after).
        let detected = async {
            while !hub.unreachable().contains(&victim) {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            killed.elapsed()
        };
        let answered = async {
            let mut pending = lost.clone();
            while !pending.is_empty() {
                let results: Vec<bool> = futures::stream::iter(pending.iter().cloned())
                    .map(|id| {
                        let h = Counter::handle(&hub, id);
                        async move { h.get().await.is_ok() }
                    })
                    .buffered(512)
                    .collect()
                    .await;
                pending = pending
                    .into_iter()
                    .zip(results)
                    .filter(|(_, ok)| !ok)
                    .map(|(id, _)| id)
                    .collect();
            }
            killed.elapsed()
        };
        let (d, a) = tokio::join!(detected, answered);
        detect.push(d.as_secs_f64());
        recover.push(a.as_secs_f64());
        drop(procs);
        let _ = hub.shutdown().await;
    }
    let (starts, detect, recover, held) = (
        median(starts),
        median(detect),
        median(recover),
        median(held),
    );
    vec![
        Row {
            id: "P4",
            figure: "awaited start of 100,000 across 3 nodes",
            value: format!("{starts:.0}/s"),
            baseline: None,
            ratio: None,
            target: "≥ 50,000/s",
            met: starts >= 50_000.0,
        },
        Row {
            id: "P5",
            figure: "kill -9 of 1 of 3 nodes: all its children answer again",
            value: format!("{recover:.2} s ({held:.0} children)"),
            baseline: Some(format!("{detect:.2} s (failure detection)")),
            ratio: Some(recover / detect),
            target: "≤ 2 s total",
            met: recover <= 2.0,
        },
    ]
}

const P6_COMPONENTS: usize = 50_000;

async fn p6() -> Vec<Row> {
    // Measured in fresh node processes (this process has freed memory that RSS would not
    // show again): B owns every component, C only holds their registry entries.
    let (mut per_child, mut per_entry) = (vec![], vec![]);
    for _ in 0..reps(3) {
        let (hub, mut procs) = cluster(3).await;
        let b = procs[0].id;
        let ids = ids_owned_by(&hub, b, P6_COMPONENTS, "m");
        // Warm up allocators and lazily built tables with a small batch first.
        let warm: Vec<(String, Counter)> = ids_owned_by(&hub, b, 1000, "warm")
            .into_iter()
            .map(|id| (id, Counter::default()))
            .collect();
        Counter::start_many(&hub, warm).await;
        wait_registries(&mut procs, 1000).await;
        let b_before: u64 = procs[0].ask("rss", "RSS ").await.parse().unwrap();
        let c_before: u64 = procs[1].ask("rss", "RSS ").await.parse().unwrap();
        let items: Vec<(String, Counter)> =
            ids.into_iter().map(|id| (id, Counter::default())).collect();
        let r = Counter::start_many(&hub, items).await;
        assert!(r.iter().all(|r| r.is_ok()));
        wait_registries(&mut procs, P6_COMPONENTS + 1000).await;
        let b_after: u64 = procs[0].ask("rss", "RSS ").await.parse().unwrap();
        let c_after: u64 = procs[1].ask("rss", "RSS ").await.parse().unwrap();
        let entry = c_after.saturating_sub(c_before) as f64 / P6_COMPONENTS as f64;
        let both = b_after.saturating_sub(b_before) as f64 / P6_COMPONENTS as f64;
        per_entry.push(entry);
        per_child.push(both - entry);
        drop(procs);
        let _ = hub.shutdown().await;
    }
    let (child, entry) = (median(per_child), median(per_entry));
    vec![
        Row {
            id: "P6a",
            figure: "memory per idle component on its owner",
            value: format!("{child:.0} B"),
            baseline: None,
            ratio: None,
            target: "≤ 2048 B",
            met: child <= 2048.0,
        },
        Row {
            id: "P6b",
            figure: "memory per registry entry on another node",
            value: format!("{entry:.0} B"),
            baseline: None,
            ratio: None,
            target: "≤ 300 B",
            met: entry <= 300.0,
        },
    ]
}

/// Waits until every node process holds `n` registry entries.
async fn wait_registries(procs: &mut [NodeProcess], n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for p in procs.iter_mut() {
        loop {
            let answer = p.ask("count", "COUNT ").await;
            let entries: usize = answer
                .split(' ')
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if entries == n {
                break;
            }
            assert!(Instant::now() < deadline, "registry never reached {n}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn p7() -> Row {
    let hub = Hub::builder(HUB_ID).start().await.unwrap();
    let n = 100_000;
    let items: Vec<(String, Counter)> = (0..n)
        .map(|i| (format!("l-{i}"), Counter::default()))
        .collect();
    Counter::start_many(&hub, items).await;
    // Random ids, made up front and few enough to stay in cache, so the loop measures
    // the registry's lookups rather than misses on the probe strings themselves.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let distinct: Vec<String> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("l-{}", x % n as u64)
        })
        .collect();
    let probes: Vec<&String> = distinct.iter().cycle().take(1_000_000).collect();
    let mut times = vec![];
    for _ in 0..reps(5) {
        let t = Instant::now();
        let mut found = 0usize;
        for id in &probes {
            found += hub.lookup(id.as_str()).is_some() as usize;
        }
        assert_eq!(found, probes.len());
        times.push(t.elapsed().as_nanos() as f64 / probes.len() as f64);
    }
    let ns = median(times);
    hub.shutdown().await.unwrap();
    Row {
        id: "P7",
        figure: "registry lookup, random id among 100,000",
        value: format!("{ns:.0} ns"),
        baseline: None,
        ratio: None,
        target: "≤ 200 ns",
        met: ns <= 200.0,
    }
}

/// CPU time a process has used so far (user and system), from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces, closed by the last ')').
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    let per_second = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(100);
    Duration::from_micros(ticks * 1_000_000 / per_second.max(1))
}

/// The share of a core each node process of an idle 3-node cluster uses, over `window`,
/// with `components` children in the cluster (started from the bench's own hub, then
/// left alone for a few seconds so the moves and standbys are done).
async fn idle_cpu(components: usize, window: Duration) -> f64 {
    let (hub, procs) = cluster(3).await;
    let mut started = 0;
    while started < components {
        let n = (components - started).min(10_000);
        let items: Vec<(String, Counter)> = (started..started + n)
            .map(|i| (format!("i-{i}"), Counter::default()))
            .collect();
        for r in Counter::start_many(&hub, items).await {
            r.unwrap();
        }
        started += n;
    }
    wait_for("registry", Duration::from_secs(120), || {
        hub.children().len() == components
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pids: Vec<u32> = procs.iter().filter_map(|p| p.child.id()).collect();
    let before: Vec<Duration> = pids.iter().map(|p| cpu_time(*p)).collect();
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let used: f64 = pids
        .iter()
        .zip(before)
        .map(|(p, b)| (cpu_time(*p) - b).as_secs_f64())
        .sum();
    let _ = hub.shutdown().await;
    drop(procs);
    100.0 * used / elapsed / pids.len().max(1) as f64
}

/// I1: idle CPU per node process at 100,000 children against the same cluster with no
/// children (gossip and the planner's timer alone), in the same run.
async fn i1() -> Row {
    let window = Duration::from_secs(10);
    let base = idle_cpu(0, window).await;
    let full = idle_cpu(100_000, window).await;
    Row {
        id: "I1",
        figure: "idle CPU per node process, 3 nodes, 100,000 children (% of a core)",
        value: format!("{full:.2} %"),
        baseline: Some(format!("{base:.2} % (no children)")),
        ratio: Some(full / base.max(0.01)),
        target: "≈ 1 (an idle cluster costs what gossip costs)",
        met: full <= base * 1.5 + 0.1,
    }
}

async fn p8() -> Row {
    // Placement depends only on the ring, so in-process hubs measure it exactly.
    let a = Hub::builder(HUB_ID).start().await.unwrap();
    let seed = a.listen_addr().to_string();
    let b = Hub::builder(HUB_ID)
        .seeds([seed.clone()])
        .start()
        .await
        .unwrap();
    let c = Hub::builder(HUB_ID)
        .seeds([seed.clone()])
        .start()
        .await
        .unwrap();
    wait_for("3 members", Duration::from_secs(30), || {
        a.nodes().len() == 3 && b.nodes().len() == 3 && c.nodes().len() == 3
    })
    .await;
    let n = 30_000;
    let items: Vec<(String, Counter)> = (0..n)
        .map(|i| (format!("j-{i}"), Counter::default()))
        .collect();
    Counter::start_many(&a, items).await;
    wait_for("registry", Duration::from_secs(30), || {
        a.children().len() == n
    })
    .await;
    let before: HashMap<std::sync::Arc<str>, NodeId> =
        a.children().into_iter().map(|c| (c.id, c.owner)).collect();
    let d = Hub::builder(HUB_ID).seeds([seed]).start().await.unwrap();
    wait_for("4 members", Duration::from_secs(30), || {
        a.nodes().len() == 4
    })
    .await;
    wait_for("moves", Duration::from_secs(60), || {
        a.children()
            .iter()
            .all(|c| Some(c.owner) == a.ring_owner(&c.id))
    })
    .await;
    let moved = a
        .children()
        .iter()
        .filter(|c| before.get(&c.id) != Some(&c.owner))
        .count();
    let frac = moved as f64 / n as f64;
    for h in [a, b, c, d] {
        let _ = h.shutdown().await;
    }
    Row {
        id: "P8",
        figure: "fraction moved when a 4th node joins 3",
        value: format!("{frac:.3}"),
        baseline: Some("0.250 (ideal)".into()),
        ratio: Some(frac / 0.25),
        target: "≤ 1.1× ideal",
        met: frac / 0.25 <= 1.1,
    }
}

/// S1: how evenly 10,000 children spread over 4 in-process hubs (placement needs no
/// network to measure): max / mean children per node, consistent hashing as the baseline.
async fn s1() -> Vec<Row> {
    const N: usize = 10_000;
    let a = Hub::builder(HUB_ID).start().await.unwrap();
    let seed = a.listen_addr().to_string();
    let mut hubs = vec![a];
    for _ in 0..3 {
        hubs.push(
            Hub::builder(HUB_ID)
                .seeds([seed.clone()])
                .start()
                .await
                .unwrap(),
        );
    }
    wait_for("4 members", Duration::from_secs(30), || {
        hubs.iter().all(|h| h.nodes().len() == 4)
    })
    .await;
    let ids = |prefix: &'static str| (0..N).map(move |i| format!("{prefix}-{i}"));
    // Consistent hashing and bounded load from one node; round robin from all four at
    // once, 100 at a time each (they see each other's starts late: the worst case).
    Counter::start_many(
        &hubs[0],
        ids("s-hash").map(|i| (i, Counter::default())).collect(),
    )
    .await;
    BoundedCounter::start_many(
        &hubs[0],
        ids("s-bound")
            .map(|i| (i, BoundedCounter::default()))
            .collect(),
    )
    .await;
    let all: Vec<String> = ids("s-turn").collect();
    let per_hub = futures::future::join_all(hubs.iter().enumerate().map(|(k, h)| {
        let mine: Vec<String> = all.iter().skip(k).step_by(4).cloned().collect();
        async move {
            for chunk in mine.chunks(100) {
                TurnCounter::start_many(
                    h,
                    chunk
                        .iter()
                        .map(|i| (i.clone(), TurnCounter::default()))
                        .collect(),
                )
                .await;
            }
        }
    }));
    per_hub.await;
    wait_for("registry", Duration::from_secs(30), || {
        hubs[0].children().iter().filter(|c| !c.pending).count() == 3 * N
    })
    .await;
    let spread = |prefix: &str| {
        let mut per: HashMap<NodeId, usize> = HashMap::new();
        for c in hubs[0].children() {
            if c.id.starts_with(prefix) {
                *per.entry(c.owner).or_default() += 1;
            }
        }
        let max = per.values().copied().max().unwrap_or(0);
        (max as f64 / (N as f64 / 4.0), per.len())
    };
    let (hash, _) = spread("s-hash-");
    let (bound, _) = spread("s-bound-");
    let (turn, _) = spread("s-turn-");
    for h in hubs {
        let _ = h.shutdown().await;
    }
    vec![
        Row {
            id: "S1",
            figure: "bounded_load: max / mean children per node, 10,000 over 4",
            value: format!("{bound:.3}"),
            baseline: Some(format!("{hash:.3} (consistent_hash)")),
            ratio: Some(bound / hash),
            target: "≤ 1.25 (the cap)",
            met: bound <= 1.25,
        },
        Row {
            id: "S1'",
            figure: "round_robin from 4 nodes at once: max / mean",
            value: format!("{turn:.3}"),
            baseline: Some(format!("{hash:.3} (consistent_hash)")),
            ratio: Some(turn / hash),
            target: "≤ 1.05 (in turn)",
            met: turn <= 1.05,
        },
    ]
}

const M1_COMPONENTS: usize = 100_000;

/// Sequential calls to random children from `hub` until `stop`; latencies in ns and the
/// number of failed calls.
async fn probe_calls(
    hub: Hub,
    ids: Arc<Vec<String>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (Vec<u64>, usize) {
    let mut lat = Vec::new();
    let mut failed = 0;
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let id = &ids[(x % ids.len() as u64) as usize];
        let t = Instant::now();
        if Counter::handle(&hub, id.clone()).add(1).await.is_err() {
            failed += 1;
        }
        lat.push(t.elapsed().as_nanos() as u64);
    }
    lat.sort_unstable();
    (lat, failed)
}

/// Hot migration: a 4th node joins 3 holding 100,000 children; the time until every
/// child runs on its new owner, and the latency of calls during the move against the
/// same calls in steady state.
async fn m1() -> Vec<Row> {
    let (mut took, mut moved_n, mut p50, mut p99, mut b50, mut b99, mut fails) =
        (vec![], vec![], vec![], vec![], vec![], vec![], 0usize);
    for _ in 0..reps(1) {
        let (hub, mut procs) = cluster(3).await;
        let ids: Vec<String> = (0..M1_COMPONENTS).map(|i| format!("mv-{i}")).collect();
        let r = Counter::start_many(
            &hub,
            ids.iter()
                .map(|id| (id.clone(), Counter::default()))
                .collect(),
        )
        .await;
        assert!(r.iter().all(|r| r.is_ok()));
        wait_for("registry", Duration::from_secs(60), || {
            hub.children().len() == M1_COMPONENTS
        })
        .await;
        let ids = Arc::new(ids);
        // Steady state.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let probe = tokio::spawn(probe_calls(hub.clone(), ids.clone(), stop.clone()));
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (steady, _) = probe.await.unwrap();
        b50.push(percentile(&steady, 0.5));
        b99.push(percentile(&steady, 0.99));
        // The join, under the same calls.
        let before: HashMap<std::sync::Arc<str>, NodeId> = hub
            .children()
            .into_iter()
            .map(|c| (c.id, c.owner))
            .collect();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let probe = tokio::spawn(probe_calls(hub.clone(), ids.clone(), stop.clone()));
        procs.push(NodeProcess::spawn(hub.listen_addr()).await);
        let joiner = procs.last().unwrap().id;
        wait_for("4 members", Duration::from_secs(30), || {
            hub.nodes().len() == 4
        })
        .await;
        let t = Instant::now();
        wait_for("the moves", Duration::from_secs(120), || {
            hub.children()
                .iter()
                .all(|c| Some(c.owner) == hub.ring_owner(&c.id))
        })
        .await;
        took.push(t.elapsed().as_secs_f64());
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (during, failed) = probe.await.unwrap();
        fails += failed;
        p50.push(percentile(&during, 0.5));
        p99.push(percentile(&during, 0.99));
        moved_n.push(
            hub.children()
                .iter()
                .filter(|c| c.owner == joiner && before.get(&c.id) != Some(&joiner))
                .count() as f64,
        );
        drop(procs);
        let _ = hub.shutdown().await;
    }
    let (took, moved_n) = (median(took), median(moved_n));
    let (p50, p99, b50, b99) = (median(p50), median(p99), median(b50), median(b99));
    vec![
        Row {
            id: "M1",
            figure: "hot rebalance of 100,000 when a 4th node joins 3",
            value: format!("{took:.2} s ({moved_n:.0} moved)"),
            baseline: None,
            ratio: None,
            target: "(recorded)",
            met: true,
        },
        Row {
            id: "M1'",
            figure: "call latency during that rebalance: p50 / p99",
            value: format!("{:.0} / {:.0} µs ({fails} failed)", p50 / 1e3, p99 / 1e3),
            baseline: Some(format!("{:.0} / {:.0} µs (steady)", b50 / 1e3, b99 / 1e3)),
            ratio: Some(p99 / b99),
            target: "(recorded; 0 failed)",
            met: fails == 0,
        },
    ]
}

/// R1: a write to a component kept on three nodes, against the same write unreplicated;
/// the primary runs in a node process, the caller is on another node (its standbys tell
/// the caller they hold each write: 1.5 round trips). Issue 16's goals: ≤ 2.0× sync,
/// ≤ 1.15× async.
async fn r1() -> Vec<Row> {
    let (hub, procs) = cluster(3).await;
    let b = procs[0].id;
    let ids = ids_owned_by(&hub, b, 3, "r1");
    let plain = Counter::start(&hub, ids[0].clone(), Counter::default())
        .await
        .unwrap();
    let sync = SyncCounter::start(&hub, ids[1].clone(), SyncCounter::default())
        .await
        .unwrap();
    let asyn = AsyncCounter::start(&hub, ids[2].clone(), AsyncCounter::default())
        .await
        .unwrap();
    wait_for("standbys", Duration::from_secs(20), || {
        ids[1..]
            .iter()
            .all(|id| hub.lookup(id).is_some_and(|i| i.standbys.len() == 2))
    })
    .await;
    let (mut p, mut s, mut a) = (vec![], vec![], vec![]);
    for _ in 0..reps(3) {
        let lat = sequential(SEQ_CALLS, || async {
            plain.add(1).await.unwrap();
        })
        .await;
        p.push(percentile(&lat, 0.5));
        let lat = sequential(SEQ_CALLS, || async {
            sync.add(1).await.unwrap();
        })
        .await;
        s.push(percentile(&lat, 0.5));
        let lat = sequential(SEQ_CALLS, || async {
            asyn.add(1).await.unwrap();
        })
        .await;
        a.push(percentile(&lat, 0.5));
    }
    let (p, s, a) = (median(p), median(s), median(a));
    drop(procs);
    hub.shutdown().await.unwrap();
    vec![
        Row {
            id: "R1",
            figure: "remote write, replicas = 3, sync: p50",
            value: format!("{:.1} µs", s / 1e3),
            baseline: Some(format!("{:.1} µs (unreplicated)", p / 1e3)),
            ratio: Some(s / p),
            target: "≤ 2.0× (issue 16)",
            met: s / p <= 2.0,
        },
        Row {
            id: "R1'",
            figure: "remote write, replicas = 3, async: p50",
            value: format!("{:.1} µs", a / 1e3),
            baseline: Some(format!("{:.1} µs (unreplicated)", p / 1e3)),
            ratio: Some(a / p),
            target: "≤ 1.15× (issue 16)",
            met: a / p <= 1.15,
        },
    ]
}

/// `n` writes after 5 to warm up: their latencies in ns, sorted.
async fn timed_writes<F, Fut>(n: usize, mut write: F) -> Vec<u64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, CallError>>,
{
    let mut lat = Vec::with_capacity(n);
    for i in 0..n + 5 {
        let t = Instant::now();
        write().await.unwrap();
        if i >= 5 {
            lat.push(t.elapsed().as_nanos() as u64);
        }
    }
    lat.sort_unstable();
    lat
}

/// R2: a synchronous write to a replicated state of 100 B to 16 MiB (`replicas = 3`),
/// its call shipped (`ship = "calls"`) against its state shipped (the default); the
/// primary runs in a node process, the caller is on another node.
async fn r2() -> Vec<Row> {
    const SIZES: [(&str, usize, usize); 5] = [
        ("R2 100 B", 100, 2_000),
        ("R2 10 KiB", 10 << 10, 2_000),
        ("R2 1 MiB", 1 << 20, 200),
        ("R2 8 MiB", 8 << 20, 30),
        // As large as the default frame limit (`max_frame_size`, 16 MiB): its state
        // ships in parts.
        ("R2 16 MiB", 16 << 20, 20),
    ];
    let (hub, procs) = cluster(3).await;
    let b = procs[0].id;
    let mut rows = Vec::new();
    for (k, (id, size, writes)) in SIZES.into_iter().enumerate() {
        let ids = ids_owned_by(&hub, b, 2, &format!("r2-{k}"));
        let state = BlobState::start(&hub, ids[0].clone(), BlobState::default())
            .await
            .unwrap();
        let calls = BlobCalls::start(&hub, ids[1].clone(), BlobCalls::default())
            .await
            .unwrap();
        state.grow(size as u64).await.unwrap();
        calls.grow(size as u64).await.unwrap();
        wait_for("standbys", Duration::from_secs(60), || {
            ids.iter()
                .all(|id| hub.lookup(id).is_some_and(|i| i.standbys.len() == 2))
        })
        .await;
        // One after the other, a few warm-up writes each first, and a pause between:
        // a state shipped leaves work behind on every node (its buffers freed) that
        // would slow the write after it.
        let c = timed_writes(writes, || calls.add(1)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let s = timed_writes(writes, || state.add(1)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (s50, c50) = (percentile(&s, 0.5), percentile(&c, 0.5));
        let ms = |ns: f64| {
            if ns >= 1e6 {
                format!("{:.2} ms", ns / 1e6)
            } else {
                format!("{:.1} µs", ns / 1e3)
            }
        };
        rows.push(Row {
            id,
            figure: "sync write to a replicated state, its call shipped: p50",
            value: ms(c50),
            baseline: Some(format!("{} (its state shipped)", ms(s50))),
            ratio: Some(c50 / s50),
            target: "(recorded)",
            met: true,
        });
    }
    drop(procs);
    hub.shutdown().await.unwrap();
    rows
}

// ---------------------------------------------------------------------------------------
// Fencing, and the cost of the lease

/// F1: the other two of 3 nodes are stopped (SIGSTOP): this node, a minority of one,
/// serves writes until its lease runs out, then refuses them (`NoQuorum`). H1: they are
/// continued; how long until this node serves writes again.
async fn f1_h1() -> Vec<Row> {
    let (mut fenced, mut resumed) = (vec![], vec![]);
    for _ in 0..reps(3) {
        let (hub, procs) = cluster(3).await;
        let id = ids_owned_by(&hub, hub.node_id(), 1, "f1").remove(0);
        let c = Counter::start(&hub, id, Counter::default()).await.unwrap();
        for _ in 0..100 {
            c.add(1).await.unwrap();
        }
        let signal = |sig: libc::c_int| {
            for p in &procs {
                let pid = p.child.id().expect("a running node") as libc::pid_t;
                // SAFETY: kill(2) on a child process this bench started and owns.
                assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
            }
        };
        signal(libc::SIGSTOP);
        let stopped = Instant::now();
        let mut last_ok = Duration::ZERO;
        loop {
            match c.add(1).await {
                Ok(_) => last_ok = stopped.elapsed(),
                Err(CallError::NoQuorum) => break,
                Err(e) => panic!("a write on the minority: {e}"),
            }
            assert!(stopped.elapsed() < Duration::from_secs(10), "never fenced");
        }
        fenced.push(last_ok.as_secs_f64());
        signal(libc::SIGCONT);
        let continued = Instant::now();
        while c.add(1).await.is_err() {
            assert!(
                continued.elapsed() < Duration::from_secs(30),
                "never served again"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        resumed.push(continued.elapsed().as_secs_f64());
        drop(procs);
        let _ = hub.shutdown().await;
    }
    let (fenced, resumed) = (median(fenced), median(resumed));
    let lease = 0.4;
    vec![
        Row {
            id: "F1",
            figure: "minority of 1 of 3 (the others stopped): last write it acknowledged",
            value: format!("{:.0} ms after the stop", fenced * 1e3),
            baseline: Some(format!("{:.0} ms (the lease)", lease * 1e3)),
            ratio: Some(fenced / lease),
            target: "≤ 1× the lease",
            met: fenced <= lease,
        },
        Row {
            id: "H1",
            figure: "the others continued (SIGCONT): writes served again",
            value: format!("{:.0} ms after", resumed * 1e3),
            baseline: None,
            ratio: None,
            target: "(recorded)",
            met: true,
        },
    ]
}

/// L1: P1 and P2 under the default strategy (a lease checked before and after every
/// call, renewed while calls run) beside the same cluster under `Divergence` (no lease
/// at all), in the same run.
async fn l1() -> Vec<Row> {
    let measure = |strategy: PartitionTolerance| async move {
        let (hub, mut procs) = cluster_with(2, strategy).await;
        let b = procs[0].id;
        let id = ids_owned_by(&hub, b, 1, "l1").remove(0);
        let c = Counter::start(&hub, id, Counter::default()).await.unwrap();
        let (mut p50, mut rate) = (vec![], vec![]);
        for _ in 0..reps(5) {
            let lat = sequential(SEQ_CALLS, || async {
                c.add(1).await.unwrap();
            })
            .await;
            p50.push(percentile(&lat, 0.5));
            rate.push(
                windowed(WINDOW_CALLS, 64, || async {
                    c.add(1).await.unwrap();
                })
                .await,
            );
        }
        drop(procs.remove(0));
        hub.shutdown().await.unwrap();
        (median(p50), median(rate))
    };
    let (lp50, lrate) = measure(PartitionTolerance::default()).await;
    let (dp50, drate) = measure(PartitionTolerance::Divergence).await;
    vec![
        Row {
            id: "L1",
            figure: "P1 with the lease (MajorityQuorum): p50",
            value: format!("{:.1} µs", lp50 / 1e3),
            baseline: Some(format!("{:.1} µs (Divergence: no lease)", dp50 / 1e3)),
            ratio: Some(lp50 / dp50),
            target: "≤ 1.05×",
            met: lp50 / dp50 <= 1.05,
        },
        Row {
            id: "L2",
            figure: "P2 with the lease (MajorityQuorum): calls/s",
            value: format!("{lrate:.0}"),
            baseline: Some(format!("{drate:.0} (Divergence: no lease)")),
            ratio: Some(lrate / drate),
            target: "≥ 0.95×",
            met: lrate / drate >= 0.95,
        },
    ]
}
