//! The demo: a 3-node cluster as three OS processes on loopback, a few thousand
//! components called from every node, one node paused (SIGSTOP for two seconds, then
//! SIGCONT) under deposits, another killed with SIGKILL, and what the cluster did told as
//! a timeline with a closing summary. Vaults, kept on three nodes each (`replicas = 3`),
//! show standbys taking over with every acknowledged deposit. It stops by itself.
//!
//! ```sh
//! cargo run --release --example demo
//! ```
//!
//! The first process is node A and the orchestrator; it re-executes itself twice with
//! `--node <seed>` to run nodes B and C, and drives them through their stdin.
//!
//! Node A serves the live cluster page and its metrics (`HubBuilder::admin_listen`); the
//! demo prints the address. With `--keep-up`, it stops before node C leaves and keeps
//! the cluster (nodes A and C, after B's death and C's pause) up until Ctrl-C, so that
//! the page can be looked at:
//!
//! ```sh
//! cargo run --release --example demo -- --keep-up
//! ```

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use processhub::prelude::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const HUB_ID: &str = "demo";
const COMPONENTS: usize = 3000;

/// A bank account: the component of the demo.
#[distributed]
#[derive(Default, Serialize, Deserialize)]
pub struct Account {
    balance: i64,
    deposits: u64,
}

#[distributed]
impl Account {
    /// Deposits and returns the new balance.
    pub fn deposit(&mut self, amount: i64) -> i64 {
        self.balance += amount;
        self.deposits += 1;
        self.balance
    }

    /// The balance.
    pub fn balance(&self) -> i64 {
        self.balance
    }
}

/// A vault: the same account, kept on three nodes. Each deposit reaches both standbys
/// before it is acknowledged, so a crash of its node loses none.
#[distributed(replicas = 3)]
#[derive(Default, Serialize, Deserialize)]
pub struct Vault {
    balance: i64,
}

#[distributed]
impl Vault {
    /// Deposits and returns the new balance.
    pub fn deposit(&mut self, amount: i64) -> i64 {
        self.balance += amount;
        self.balance
    }

    /// The balance.
    pub fn balance(&self) -> i64 {
        self.balance
    }
}

const VAULTS: usize = 300;

fn vault_ids() -> Vec<String> {
    (0..VAULTS).map(|i| format!("vault-{i:03}")).collect()
}

fn ids() -> Vec<String> {
    (0..COMPONENTS).map(|i| format!("account-{i:04}")).collect()
}

/// Deposits 1 into every account from `hub`; returns (ok, failed).
async fn deposit_all(hub: &Hub) -> (usize, usize) {
    let mut ok = 0;
    let mut failed = 0;
    for chunk in ids().chunks(256) {
        let calls = chunk.iter().map(|id| {
            let a = Account::handle(hub, id.clone());
            async move { a.deposit(1).await }
        });
        for r in futures::future::join_all(calls).await {
            if r.is_ok() {
                ok += 1
            } else {
                failed += 1
            }
        }
    }
    (ok, failed)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--node") {
        let seed = args
            .get(i + 1)
            .expect("--node takes the seed address")
            .clone();
        node_main(seed).await;
    } else {
        orchestrate().await;
    }
}

/// A node process: joins, then obeys its stdin until it closes.
async fn node_main(seed: String) {
    let hub = Hub::builder(HUB_ID)
        .listen("127.0.0.1:0")
        .seeds([seed])
        .start()
        .await
        .expect("node starts");
    println!("READY {}", hub.node_id());
    // What this node goes through, for the orchestrator's timeline.
    let mut events = hub.events();
    tokio::spawn(async move {
        while let Ok(ev) = events.recv().await {
            match ev {
                HubEvent::QuorumLost { .. } => println!("SAW quorum lost: serving nothing"),
                HubEvent::QuorumRegained { .. } => println!("SAW quorum regained"),
                HubEvent::Rejoined { old, new, dropped } => println!(
                    "SAW downed by the others: rejoined as {new} (was {old}), {dropped} superseded instances stopped unpublished (the states of replicated ones kept aside, unserved, in case every other copy is gone)"
                ),
                _ => {}
            }
        }
    });
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = stdin.next_line().await {
        match line.trim() {
            "deposit" => {
                let began = Instant::now();
                let (ok, failed) = deposit_all(&hub).await;
                println!("DEPOSITED {ok} {failed} {}", began.elapsed().as_millis());
            }
            "count" => println!("COUNT {}", hub.local_children()),
            "id" => println!("ID {}", hub.node_id()),
            "shutdown" => {
                hub.shutdown().await.expect("shutdown");
                println!("BYE");
                return;
            }
            _ => println!("UNKNOWN"),
        }
    }
}

struct NodeProcess {
    name: &'static str,
    child: Child,
    out: Lines<BufReader<ChildStdout>>,
    id: NodeId,
}

impl NodeProcess {
    async fn spawn(name: &'static str, seed: std::net::SocketAddr) -> NodeProcess {
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .args(["--node", &seed.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn a node process");
        let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let ready = read_prefixed(&mut out, "READY ").await;
        let (addr, inc) = ready.split_once('#').expect("node id");
        let id = NodeId::new(
            addr.parse().expect("addr"),
            inc.parse().expect("incarnation"),
        );
        NodeProcess {
            name,
            child,
            out,
            id,
        }
    }

    async fn ask(&mut self, command: &str, answer: &str) -> String {
        self.ask_telling(command, answer).await.0
    }

    /// Like `ask`, with what the node said it saw on the way (`SAW ...` lines).
    async fn ask_telling(&mut self, command: &str, answer: &str) -> (String, Vec<String>) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .expect("write to node");
        read_telling(&mut self.out, answer).await
    }

    /// Sends `signal` (SIGSTOP, SIGCONT) to the node's process.
    fn signal(&self, signal: libc::c_int) {
        let pid = self.child.id().expect("a running node") as libc::pid_t;
        // SAFETY: kill(2) on a child process this demo started and still owns.
        let r = unsafe { libc::kill(pid, signal) };
        assert_eq!(r, 0, "kill({pid}, {signal})");
    }
}

/// How many accounts each node (by name) runs, as `hub` sees it.
fn placement<'a>(hub: &Hub, names: &BTreeMap<NodeId, &'a str>) -> BTreeMap<&'a str, usize> {
    let mut per: BTreeMap<&str, usize> = BTreeMap::new();
    for info in hub
        .children()
        .iter()
        .filter(|i| i.id.starts_with("account-"))
    {
        *per.entry(names.get(&info.owner).copied().unwrap_or("?"))
            .or_default() += 1;
    }
    per
}

/// What the pause of a node did, as the demo reports it.
struct PauseReport {
    downed_after: Option<Duration>,
    promoted: usize,
    rejoined: Option<(NodeId, Duration)>,
    acked: usize,
    refused: usize,
    lost: usize,
}

/// Pauses node `c` (SIGSTOP) for `pause` while node A deposits into every vault, then
/// continues it; checks that no acknowledged deposit was lost.
async fn pause_under_deposits(
    t: &Timeline,
    hub: &Hub,
    c: &mut NodeProcess,
    pause: Duration,
) -> PauseReport {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let mut before = BTreeMap::new();
    for id in vault_ids() {
        let b = Vault::handle(hub, id.clone())
            .balance()
            .await
            .expect("balance");
        before.insert(id, b);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let hub = hub.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut acked: BTreeMap<String, (usize, usize)> = BTreeMap::new();
            while !stop.load(Ordering::Relaxed) {
                let calls = vault_ids().into_iter().map(|id| {
                    let v = Vault::handle(&hub, id.clone());
                    async move { (id, v.deposit(1).await) }
                });
                for (id, r) in futures::future::join_all(calls).await {
                    let e = acked.entry(id).or_default();
                    if r.is_ok() {
                        e.0 += 1
                    } else {
                        e.1 += 1
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    t.say(format!(
        "SIGSTOP node C (pid {}) for {pause:?}, while node A deposits into every vault",
        c.child.id().unwrap_or(0)
    ));
    let paused = Instant::now();
    // What node A sees, as it happens.
    let watch = {
        let mut events = hub.events();
        let stop = stop.clone();
        let c_id = c.id;
        tokio::spawn(async move {
            let (mut downed, mut promoted, mut rejoined) = (None, 0, None);
            while !stop.load(Ordering::Relaxed) {
                let Ok(Ok(ev)) =
                    tokio::time::timeout(Duration::from_millis(50), events.recv()).await
                else {
                    continue;
                };
                match ev {
                    HubEvent::NodesDowned { nodes } if nodes.contains(&c_id) => {
                        downed.get_or_insert(paused.elapsed());
                    }
                    HubEvent::PrimaryPromoted { from, .. } if from == c_id => promoted += 1,
                    HubEvent::NodeJoined { node } if node.addr() == c_id.addr() && node != c_id => {
                        rejoined = Some((node, paused.elapsed()));
                    }
                    _ => {}
                }
            }
            (downed, promoted, rejoined)
        })
    };
    c.signal(libc::SIGSTOP);
    tokio::time::sleep(pause).await;
    c.signal(libc::SIGCONT);
    t.say("SIGCONT node C");
    let addr = c.id.addr();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(hub.nodes().iter().any(|m| m.addr() == addr) && hub.unreachable().is_empty()) {
        assert!(Instant::now() < deadline, "node C did not come back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = load.await.expect("the deposits");
    let (downed_after, promoted, rejoined) = watch.await.expect("the watch");
    let report = PauseReport {
        downed_after,
        promoted,
        rejoined,
        acked: acked.values().map(|a| a.0).sum(),
        refused: acked.values().map(|a| a.1).sum(),
        lost: 0,
    };
    let mut report = report;
    if let Some(d) = report.downed_after {
        t.say(format!(
            "nodes A and B (a majority of 3) downed node C {d:?} after it stopped; its vaults \
             were taken over by standbys once its lease had run out ({} promoted on A), its \
             plain accounts restarted from their start state (as after a crash)",
            report.promoted
        ));
    }
    if let Some((n, d)) = report.rejoined {
        t.say(format!(
            "node A saw node C join again as {n}, {d:?} after it stopped"
        ));
    }
    let (new_id, saw) = c.ask_telling("id", "ID ").await;
    for s in &saw {
        t.say(format!("node C: {s}"));
    }
    let (a, inc) = new_id.split_once('#').expect("node id");
    let new_id = NodeId::new(a.parse().expect("addr"), inc.parse().expect("incarnation"));
    if new_id != c.id {
        t.say(format!("node C is a member again as {new_id}"));
        c.id = new_id;
    } else {
        t.say("node C was not downed: it renewed its lease and went on");
    }
    for (id, (ok, failed)) in &acked {
        let now = Vault::handle(hub, id.clone()).balance().await.unwrap_or(-1);
        let was = before[id];
        if now < was + *ok as i64 || now > was + (*ok + *failed) as i64 {
            report.lost += 1;
        }
    }
    t.say(format!(
        "deposits during the pause: {} acknowledged, {} refused or timed out (NoQuorum while \
         the cluster decided); vaults that lost an acknowledged deposit: {}",
        report.acked, report.refused, report.lost
    ));
    report
}

async fn read_prefixed(out: &mut Lines<BufReader<ChildStdout>>, prefix: &str) -> String {
    read_telling(out, prefix).await.0
}

/// The rest of the next line starting with `prefix`, and what the node said it saw on
/// the way (`SAW ...` lines).
async fn read_telling(
    out: &mut Lines<BufReader<ChildStdout>>,
    prefix: &str,
) -> (String, Vec<String>) {
    let mut saw = Vec::new();
    let answer = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let line = out
                .next_line()
                .await
                .expect("read node output")
                .expect("node exited early");
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_string();
            }
            if let Some(seen) = line.strip_prefix("SAW ") {
                saw.push(seen.to_string());
            }
        }
    })
    .await
    .expect("node answered in time");
    (answer, saw)
}

struct Timeline {
    began: Instant,
}

impl Timeline {
    fn say(&self, what: impl std::fmt::Display) {
        println!("[{:>8.3}s] {what}", self.began.elapsed().as_secs_f64());
    }
}

async fn orchestrate() {
    let t = Timeline {
        began: Instant::now(),
    };
    println!("processhub demo: 3 nodes (3 OS processes) on loopback, {COMPONENTS} accounts\n");
    let keep_up = std::env::args().any(|a| a == "--keep-up");
    let hub = Hub::builder(HUB_ID)
        .listen("127.0.0.1:0")
        .admin_listen("127.0.0.1:0")
        .start()
        .await
        .expect("node A starts");
    t.say(format!(
        "node A {} up (this process, pid {})",
        hub.node_id(),
        std::process::id()
    ));
    let page = format!("http://{}/", hub.admin_addr().expect("admin address"));
    t.say(format!("cluster page: {page}  (metrics: {page}metrics)"));
    let mut b = NodeProcess::spawn("B", hub.listen_addr()).await;
    t.say(format!(
        "node B {} up (pid {})",
        b.id,
        b.child.id().unwrap_or(0)
    ));
    let mut c = NodeProcess::spawn("C", hub.listen_addr()).await;
    t.say(format!(
        "node C {} up (pid {})",
        c.id,
        c.child.id().unwrap_or(0)
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while hub.nodes().len() < 3 {
        assert!(Instant::now() < deadline, "the cluster did not form");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t.say("cluster formed: every node sees 3 members");

    let began = Instant::now();
    let started = Account::start_many(
        &hub,
        ids()
            .into_iter()
            .map(|id| (id, Account::default()))
            .collect(),
    )
    .await;
    let failed_starts = started.iter().filter(|r| r.is_err()).count();
    t.say(format!(
        "started {} accounts from node A in {:?} ({failed_starts} failed)",
        started.len() - failed_starts,
        began.elapsed()
    ));
    let names: BTreeMap<NodeId, &str> = [(hub.node_id(), "A"), (b.id, "B"), (c.id, "C")].into();
    t.say(format!(
        "placement on the ring: {:?}",
        placement(&hub, &names)
    ));

    let mut calls = 0;
    let mut call_errors = 0;
    let began = Instant::now();
    let (ok, failed) = deposit_all(&hub).await;
    t.say(format!(
        "node A deposited into every account: {ok} ok, {failed} failed, {:?}",
        began.elapsed()
    ));
    calls += ok + failed;
    call_errors += failed;
    for node in [&mut b, &mut c] {
        let answer = node.ask("deposit", "DEPOSITED ").await;
        let v: Vec<usize> = answer.split(' ').map(|x| x.parse().unwrap_or(0)).collect();
        t.say(format!(
            "node {} deposited into every account: {} ok, {} failed, {} ms",
            node.name, v[0], v[1], v[2]
        ));
        calls += v[0] + v[1];
        call_errors += v[1];
    }
    // Vaults: kept on three nodes, each deposit on both standbys before its reply.
    for r in Vault::start_many(
        &hub,
        vault_ids()
            .into_iter()
            .map(|id| (id, Vault::default()))
            .collect(),
    )
    .await
    {
        r.expect("vault starts");
    }
    for _ in 0..3 {
        for id in vault_ids() {
            Vault::handle(&hub, id)
                .deposit(1)
                .await
                .expect("vault deposit");
        }
    }
    let vaults_on_b: Vec<String> = vault_ids()
        .into_iter()
        .filter(|id| hub.lookup(id).is_some_and(|i| i.owner == b.id))
        .collect();
    t.say(format!(
        "started {VAULTS} vaults kept on 3 nodes each, 3 deposits into each; node B is the primary of {}",
        vaults_on_b.len()
    ));
    let on_a_before: Vec<String> = hub
        .children()
        .into_iter()
        .filter(|i| i.owner == hub.node_id() && i.id.starts_with("account-"))
        .map(|i| i.id.to_string())
        .collect();
    let pause = pause_under_deposits(&t, &hub, &mut c, Duration::from_secs(2)).await;
    let names: BTreeMap<NodeId, &str> = [(hub.node_id(), "A"), (b.id, "B"), (c.id, "C")].into();
    let vaults_on_b: Vec<String> = vault_ids()
        .into_iter()
        .filter(|id| hub.lookup(id).is_some_and(|i| i.owner == b.id))
        .collect();
    let mut vault_balances = BTreeMap::new();
    for id in &vaults_on_b {
        let b = Vault::handle(&hub, id.clone())
            .balance()
            .await
            .unwrap_or(-1);
        vault_balances.insert(id.clone(), b);
    }
    let on_b: Vec<String> = hub
        .children()
        .into_iter()
        .filter(|i| i.owner == b.id && i.id.starts_with("account-"))
        .map(|i| i.id.to_string())
        .collect();

    t.say(format!(
        "kill -9 node B (pid {}), which runs {} accounts",
        b.child.id().unwrap_or(0),
        on_b.len()
    ));
    let mut events = hub.events();
    let killed = Instant::now();
    b.child.start_kill().expect("SIGKILL");
    let _ = b.child.wait().await;

    // Watch the failover: detection (NodeLeft) and restarts, from the event stream, and
    // every account answering, from calls.
    let b_id = b.id;
    let watcher = tokio::spawn(async move {
        let mut detected = None;
        let mut restarted_on_a = 0;
        let mut last_restart = None;
        let until = Instant::now() + Duration::from_secs(30);
        while let Ok(Ok(ev)) = tokio::time::timeout_at(until.into(), events.recv()).await {
            match ev {
                HubEvent::NodeLeft { node, .. } if node == b_id => {
                    detected = Some(killed.elapsed());
                }
                HubEvent::ChildRestarted { .. } => {
                    restarted_on_a += 1;
                    last_restart = Some(killed.elapsed());
                }
                HubEvent::NodeLeft { .. } => break,
                _ => {}
            }
        }
        (detected, restarted_on_a, last_restart)
    });
    let mut recovered = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while recovered.is_none() && Instant::now() < deadline {
        let checks = on_b.iter().map(|id| {
            let a = Account::handle(&hub, id.clone());
            async move { a.balance().await }
        });
        let answers = futures::future::join_all(checks).await;
        if answers.iter().all(|r| r.is_ok()) {
            recovered = Some(killed.elapsed());
        }
    }
    t.say(format!(
        "all {} accounts of node B answer again ({} after the kill)",
        on_b.len(),
        recovered.map_or("NOT".into(), |d| format!("{d:?}"))
    ));
    t.say(format!("placement now: {:?}", placement(&hub, &names)));
    if recovered.is_none() {
        // What node A's registry says of the accounts that still do not answer.
        let checks = on_b.iter().map(|id| {
            let a = Account::handle(&hub, id.clone());
            async move { (id.clone(), a.balance().await) }
        });
        let silent: Vec<(String, String)> = futures::future::join_all(checks)
            .await
            .into_iter()
            .filter_map(|(id, r)| r.err().map(|e| (id, e.to_string())))
            .collect();
        let mut by_owner: BTreeMap<String, usize> = BTreeMap::new();
        for (id, _) in &silent {
            let owner = hub.lookup(id).map_or("none".into(), |i| {
                format!(
                    "{}{}",
                    names.get(&i.owner).copied().unwrap_or("?"),
                    if i.pending { " (pending)" } else { "" }
                )
            });
            *by_owner.entry(owner).or_default() += 1;
        }
        t.say(format!(
            "{} accounts of node B still do not answer; by owner in node A's registry: {by_owner:?}",
            silent.len()
        ));
        for (id, e) in silent.iter().take(3) {
            let info = hub.lookup(id);
            t.say(format!(
                "  {id}: {e}; {:?}",
                info.map(|i| (i.owner, i.epoch, i.pending))
            ));
        }
    }
    let answer = c.ask("deposit", "DEPOSITED ").await;
    let v: Vec<usize> = answer.split(' ').map(|x| x.parse().unwrap_or(0)).collect();
    t.say(format!(
        "node C deposited into every account again: {} ok, {} failed",
        v[0], v[1]
    ));
    calls += v[0] + v[1];
    call_errors += v[1];
    let mut vaults_kept = 0;
    for id in &vaults_on_b {
        if Vault::handle(&hub, id.clone()).balance().await.ok() == Some(vault_balances[id]) {
            vaults_kept += 1;
        }
    }
    t.say(format!(
        "vaults of node B: {vaults_kept} of {} taken over by a standby with every deposit",
        vaults_on_b.len()
    ));
    let sample = Account::handle(&hub, on_b[0].clone())
        .balance()
        .await
        .unwrap_or(-1);
    let stayed = on_a_before
        .iter()
        .find(|id| !on_b.contains(id) && hub.lookup(id).is_some_and(|i| i.owner == hub.node_id()))
        .cloned()
        .expect("some stayed on node A");
    let kept = Account::handle(&hub, stayed).balance().await.unwrap_or(-1);

    // Node C leaves gracefully: it hands its accounts over, with their balances.
    let on_c: Vec<String> = hub
        .children()
        .into_iter()
        .filter(|i| i.owner == c.id && i.id.starts_with("account-"))
        .map(|i| i.id.to_string())
        .collect();
    let mut balances_before = Vec::new();
    for id in &on_c {
        balances_before.push(
            Account::handle(&hub, id.clone())
                .balance()
                .await
                .unwrap_or(-1),
        );
    }
    if keep_up {
        t.say(format!(
            "--keep-up: the cluster stays up; look at {page} (Ctrl-C goes on with the demo)"
        ));
        let _ = tokio::signal::ctrl_c().await;
    }
    c.ask("shutdown", "BYE").await;
    let _ = c.child.wait().await;
    let mut kept_on_move = 0;
    for (id, before) in on_c.iter().zip(&balances_before) {
        if Account::handle(&hub, id.clone()).balance().await.ok() == Some(*before) {
            kept_on_move += 1;
        }
    }
    t.say(format!(
        "node C shut down gracefully: {kept_on_move} of its {} accounts moved to node A with their balances",
        on_c.len()
    ));
    let (detected, restarted_on_a, last_restart) = watcher.await.expect("watcher");
    hub.shutdown().await.expect("shutdown");
    t.say("node A shut down");

    println!("\nsummary");
    println!("  components            {COMPONENTS} accounts on 3 nodes");
    println!("  calls                 {calls} deposits from 3 nodes, {call_errors} failed");
    println!(
        "  killed                node B with SIGKILL, running {} accounts",
        on_b.len()
    );
    println!(
        "  failure acted on      {}",
        detected.map_or("not seen".into(), |d| format!("{d:?} after the kill"))
    );
    println!(
        "  recovered             {}",
        recovered.map_or("NOT within 30 s".into(), |d| format!(
            "{d:?} after the kill"
        ))
    );
    println!(
        "  restarted on node A   {restarted_on_a}, the last {} after the kill (the rest on node C)",
        last_restart.map_or("-".into(), |d| format!("{d:?}"))
    );
    println!("  an account of node B  balance {sample}: restarted from its start state, then 1 deposit (cold restart)");
    println!("  an account that stayed balance {kept}: 4 deposits, none lost");
    println!(
        "  vaults of node B      {vaults_kept} of {} kept every deposit: a standby took over (replicas = 3, hot standby)",
        vaults_on_b.len()
    );
    println!(
        "  paused                node C with SIGSTOP for 2 s under {} vault deposits ({} refused or timed out)",
        pause.acked, pause.refused
    );
    println!(
        "  fenced and downed     {}",
        pause.downed_after.map_or("not downed: the pause was shorter than the downing".into(), |d| format!(
            "by nodes A and B within {d:?}; {} vault primaries of C promoted on A, after C's lease ran out",
            pause.promoted
        ))
    );
    println!(
        "  rejoined              {}",
        pause.rejoined.map_or("-".into(), |(n, d)| format!(
            "as {n}, {d:?} after the pause began"
        ))
    );
    println!(
        "  lost in the pause     {} vaults lost an acknowledged deposit",
        pause.lost
    );
    println!("  graceful leave        node C handed over {kept_on_move} of {} accounts, balances kept (hot migration)", on_c.len());
    if recovered.is_none()
        || pause.lost > 0
        || call_errors > 0
        || kept_on_move != on_c.len()
        || vaults_kept != vaults_on_b.len()
    {
        std::process::exit(1);
    }
}
