//! Real OS processes: this test binary re-executes itself as cluster nodes, kills one
//! with SIGKILL and shuts another down gracefully. Every child is killed when the test
//! ends, pass or fail (`kill_on_drop`), and exits by itself if the test process dies
//! (its stdin closes).

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{wait_until, Tally};
use processhub::prelude::*;
use processhub::RestartReason;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const NODE_ENV: &str = "PROCESSHUB_TEST_NODE";
const HUB_ID: &str = "multiprocess";

/// The body of a child node; a no-op when run as an ordinary test.
#[test]
fn node_process() {
    let Ok(seed) = std::env::var(NODE_ENV) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let hub = Hub::builder(HUB_ID)
            .listen("127.0.0.1:0")
            .seeds([seed])
            .gossip_interval(Duration::from_millis(50))
            .start()
            .await
            .expect("node hub starts");
        println!("READY {}", hub.node_id());
        let mut stdin = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = stdin.next_line().await {
            match line.trim() {
                "count" => println!("COUNT {}", hub.local_children()),
                "registry" => println!("REGISTRY {}", registry_digest(&hub)),
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

struct Node {
    child: Child,
    out: Lines<BufReader<ChildStdout>>,
    id: NodeId,
}

impl Node {
    async fn spawn(seed: std::net::SocketAddr) -> Node {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .args([
                "--exact",
                "node_process",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(NODE_ENV, seed.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn node process");
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let id = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let line = out.next_line().await.unwrap().expect("node printed READY");
                // libtest prints "test node_process ... " before our first line.
                if let Some(at) = line.find("READY ") {
                    return line[at + 6..].trim().to_string();
                }
            }
        })
        .await
        .expect("node ready in time");
        let id = parse_node_id(&id);
        Node { child, out, id }
    }

    async fn say(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    async fn expect_line(&mut self, prefix: &str) -> String {
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
    let hub = Hub::builder(HUB_ID)
        .listen("127.0.0.1:0")
        .gossip_interval(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
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
    let mut agreed = false;
    for _ in 0..100 {
        c.say("registry").await;
        if c.expect_line("REGISTRY ").await == registry_digest(&hub) {
            agreed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(agreed, "the registries of the survivors converge");
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
