//! The demo: a 3-node cluster as three OS processes on loopback, a few thousand
//! components called from every node, one node killed with SIGKILL, and the failover
//! told as a timeline with a closing summary. Vaults, kept on three nodes each
//! (`replicas = 3`), show a standby taking over with every deposit. It stops by itself.
//!
//! ```sh
//! cargo run --release --example demo
//! ```
//!
//! The first process is node A and the orchestrator; it re-executes itself twice with
//! `--node <seed>` to run nodes B and C, and drives them through their stdin.

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
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = stdin.next_line().await {
        match line.trim() {
            "deposit" => {
                let began = Instant::now();
                let (ok, failed) = deposit_all(&hub).await;
                println!("DEPOSITED {ok} {failed} {}", began.elapsed().as_millis());
            }
            "count" => println!("COUNT {}", hub.local_children()),
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
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .expect("write to node");
        read_prefixed(&mut self.out, answer).await
    }
}

async fn read_prefixed(out: &mut Lines<BufReader<ChildStdout>>, prefix: &str) -> String {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let line = out
                .next_line()
                .await
                .expect("read node output")
                .expect("node exited early");
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_string();
            }
        }
    })
    .await
    .expect("node answered in time")
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
    let hub = Hub::builder(HUB_ID)
        .listen("127.0.0.1:0")
        .start()
        .await
        .expect("node A starts");
    let mut events = hub.events();
    t.say(format!(
        "node A {} up (this process, pid {})",
        hub.node_id(),
        std::process::id()
    ));
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
    let placement = |hub: &Hub| {
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
    };
    t.say(format!("placement on the ring: {:?}", placement(&hub)));

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
    t.say(format!("placement now: {:?}", placement(&hub)));
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
        if Vault::handle(&hub, id.clone()).balance().await.ok() == Some(3) {
            vaults_kept += 1;
        }
    }
    t.say(format!(
        "vaults of node B: {vaults_kept} of {} taken over by a standby with all 3 deposits",
        vaults_on_b.len()
    ));
    let sample = Account::handle(&hub, on_b[0].clone())
        .balance()
        .await
        .unwrap_or(-1);
    let stayed = ids()
        .into_iter()
        .find(|id| !on_b.contains(id))
        .expect("some stayed");
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
        "  failure detected      {}",
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
    println!("  graceful leave        node C handed over {kept_on_move} of {} accounts, balances kept (hot migration)", on_c.len());
    if recovered.is_none()
        || call_errors > 0
        || kept_on_move != on_c.len()
        || vaults_kept != vaults_on_b.len()
    {
        std::process::exit(1);
    }
}
