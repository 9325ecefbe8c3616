//! The seams: one suite of cluster scenarios run over TCP with chitchat and over the
//! in-memory network with membership by script; then what only the in-memory network
//! can do (cut, black-hole and delay a link).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::hub::World;
use crate::net::memory::Fault;
use crate::prelude::*;

#[distributed]
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Counter {
    n: u64,
}

#[distributed]
impl Counter {
    pub fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }

    pub fn get(&self) -> u64 {
        self.n
    }
}

/// Where a suite's hubs run.
#[derive(Clone, Debug)]
enum Net {
    /// TCP on loopback, chitchat for membership.
    Tcp,
    /// The in-memory network, membership by script.
    Memory(World),
}

impl Net {
    fn memory() -> Self {
        Net::Memory(World::new(7))
    }

    async fn hub(&self, hub_id: &str, seed: Option<SocketAddr>) -> Hub {
        let b = Hub::builder(hub_id)
            .cluster_key("seams-tests-cluster-key")
            .listen("127.0.0.1:0");
        let b = match self {
            Net::Tcp => b
                .gossip_interval(Duration::from_millis(50))
                .seeds(seed.map(|s| s.to_string())),
            Net::Memory(world) => b.in_world(world),
        };
        b.start().await.unwrap()
    }

    async fn cluster(&self, hub_id: &str, n: usize) -> Vec<Hub> {
        let first = self.hub(hub_id, None).await;
        let seed = first.listen_addr();
        let mut hubs = vec![first];
        for _ in 1..n {
            hubs.push(self.hub(hub_id, Some(seed)).await);
        }
        wait_members(&hubs, n).await;
        hubs
    }
}

async fn wait_until<F, Fut>(what: &str, within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_members(hubs: &[Hub], n: usize) {
    wait_until(
        "every hub sees the members",
        Duration::from_secs(20),
        || async { hubs.iter().all(|h| h.nodes().len() == n) },
    )
    .await;
}

fn registries_agree(hubs: &[Hub], ids: &[String]) -> bool {
    ids.iter().all(|id| {
        let first = hubs[0].lookup(id).map(|i| (i.owner, i.epoch, i.pending));
        first.is_some_and(|(_, _, pending)| !pending)
            && hubs
                .iter()
                .all(|h| h.lookup(id).map(|i| (i.owner, i.epoch, i.pending)) == first)
    })
}

/// Starts `n` counters `{prefix}-{i}` from `hub`.
async fn start_counters(hub: &Hub, prefix: &str, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    let items = ids
        .iter()
        .map(|i| (i.clone(), Counter::default()))
        .collect();
    for r in Counter::start_many(hub, items).await {
        r.unwrap();
    }
    ids
}

/// Every hub calls every child once: each ends at the number of hubs.
async fn calls_from_every_hub_reach_every_child(net: Net) {
    let hubs = net.cluster("seams-calls", 3).await;
    let ids = start_counters(&hubs[0], "c", 150).await;
    for h in &hubs {
        for id in &ids {
            Counter::handle(h, id.clone()).add(1).await.unwrap();
        }
    }
    for id in &ids {
        assert_eq!(
            Counter::handle(&hubs[2], id.clone()).get().await.unwrap(),
            3,
            "{id}"
        );
    }
    wait_until("the registries agree", Duration::from_secs(10), || async {
        registries_agree(&hubs, &ids)
    })
    .await;
    for h in hubs {
        h.shutdown().await.unwrap();
    }
}

/// A node killed: its children restart on the survivors, whose registries agree.
async fn a_killed_nodes_children_restart_on_the_survivors(net: Net) {
    let mut hubs = net.cluster("seams-kill", 3).await;
    let ids = start_counters(&hubs[0], "k", 90).await;
    let victim = hubs[2].node_id();
    let lost: Vec<&String> = ids
        .iter()
        .filter(|id| hubs[0].lookup(id).unwrap().owner == victim)
        .collect();
    assert!(!lost.is_empty());
    hubs.remove(2).kill().await;
    wait_members(&hubs, 2).await;
    wait_until(
        "every child owned by a survivor, agreed",
        Duration::from_secs(20),
        || async {
            registries_agree(&hubs, &ids)
                && ids
                    .iter()
                    .all(|id| hubs[0].lookup(id).unwrap().owner != victim)
        },
    )
    .await;
    for id in &ids {
        assert_eq!(
            Counter::handle(&hubs[1], id.clone()).add(1).await.unwrap(),
            1,
            "{id}"
        );
    }
    for h in hubs {
        h.shutdown().await.unwrap();
    }
}

/// A graceful leave hands every child over with its state.
async fn a_graceful_leave_hands_over_every_child_with_its_state(net: Net) {
    let mut hubs = net.cluster("seams-leave", 3).await;
    let ids = start_counters(&hubs[0], "l", 90).await;
    for id in &ids {
        Counter::handle(&hubs[0], id.clone()).add(5).await.unwrap();
    }
    hubs.remove(1).shutdown().await.unwrap();
    wait_members(&hubs, 2).await;
    for id in &ids {
        assert_eq!(
            Counter::handle(&hubs[1], id.clone()).get().await.unwrap(),
            5,
            "{id}"
        );
    }
    for h in hubs {
        h.shutdown().await.unwrap();
    }
}

macro_rules! on_both {
    ($($scenario:ident),* $(,)?) => {
        mod over_tcp {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Net::Tcp).await
                }
            )*
        }
        mod over_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Net::memory()).await
                }
            )*
        }
    };
}

on_both!(
    calls_from_every_hub_reach_every_child,
    a_killed_nodes_children_restart_on_the_survivors,
    a_graceful_leave_hands_over_every_child_with_its_state,
);

/// Two hubs of one world, a short call timeout, and an id whose owner is the second.
async fn pair(world: &World, timeout: Duration) -> (Hub, Hub, String) {
    let a = Hub::builder("seams-faults")
        .in_world(world)
        .call_timeout(timeout)
        .start()
        .await
        .unwrap();
    let b = Hub::builder("seams-faults")
        .in_world(world)
        .call_timeout(timeout)
        .start()
        .await
        .unwrap();
    wait_members(&[a.clone(), b.clone()], 2).await;
    // (The short call timeout is for the faults, not for the first dial on a busy
    // machine.)
    assert!(
        a.inner
            .transport
            .connected_within(b.node_id(), Duration::from_secs(10))
            .await
    );
    let id = (0..)
        .map(|i| format!("f-{i}"))
        .find(|id| a.ring_owner(id) == Some(b.node_id()))
        .unwrap();
    Counter::start(&a, id.clone(), Counter::default())
        .await
        .unwrap();
    assert_eq!(a.lookup(&id).unwrap().owner, b.node_id());
    (a, b, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_fails_calls_until_it_heals_and_the_transport_dials_again() {
    let world = World::new(1);
    let (a, b, id) = pair(&world, Duration::from_millis(300)).await;
    assert_eq!(Counter::handle(&a, id.clone()).add(1).await.unwrap(), 1);
    world.net.set_fault_both(
        a.listen_addr(),
        b.listen_addr(),
        Fault {
            cut: true,
            ..Fault::default()
        },
    );
    let cut = Counter::handle(&a, id.clone()).add(1).await;
    assert!(
        matches!(
            cut,
            Err(CallError::Timeout { .. } | CallError::ConnectionLost { .. })
        ),
        "{cut:?}"
    );
    world.net.heal_all();
    wait_until(
        "a call gets through again",
        Duration::from_secs(10),
        || async { Counter::handle(&a, id.clone()).get().await.is_ok() },
    )
    .await;
    let n = Counter::handle(&a, id.clone()).add(1).await.unwrap();
    assert!(
        n == 2 || n == 3,
        "the write cut off may or may not have applied: {n}"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// A counter kept on three nodes (`sync`).
#[distributed(replicas = 3)]
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct KeptCounter {
    n: u64,
}

#[distributed]
impl KeptCounter {
    pub fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
}

/// A standby's word that it holds a write (`core::held`) can be lost while the
/// connection stays up: the caller then has its primary's reply, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_standbys_word_is_lost_is_acknowledged_by_its_primary() {
    let world = World::new(11);
    let mut hubs = Vec::new();
    for _ in 0..4 {
        let hub = Hub::builder("seams-held").in_world(&world).start().await;
        hubs.push(hub.unwrap());
    }
    wait_members(&hubs, 4).await;
    let caller = hubs[0].clone();
    let ids: Vec<String> = (0..24).map(|i| format!("h-{i}")).collect();
    for id in &ids {
        KeptCounter::start(&caller, id.clone(), KeptCounter::default())
            .await
            .unwrap();
    }
    wait_until("two standbys each", Duration::from_secs(20), || async {
        ids.iter()
            .all(|id| caller.lookup(id).is_some_and(|i| i.standbys.len() == 2))
    })
    .await;
    // One whose copies are all on other nodes: every word comes over the network.
    let info = ids
        .iter()
        .filter_map(|id| caller.lookup(id))
        .find(|i| i.owner != caller.node_id() && !i.standbys.contains(&caller.node_id()))
        .expect("an id the caller holds no copy of");
    let id = info.id.to_string();
    let k = KeptCounter::handle(&caller, id.clone());
    assert_eq!(k.add(1).await.unwrap(), 1);
    // The first standby's frames to the caller vanish; its connection stays up.
    let standby = info.standbys[0].addr();
    world.net.set_fault(
        standby,
        caller.listen_addr(),
        Fault {
            black_hole: true,
            ..Fault::default()
        },
    );
    for n in 2..=20 {
        assert_eq!(k.add(1).await.unwrap(), n, "acknowledged once, in order");
    }
    assert_eq!(
        caller.inner.held.lock().unwrap().len(),
        0,
        "a write answered by its primary waits for no word any more"
    );
    world.net.heal_all();
    for h in hubs {
        h.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_link_times_calls_out_and_the_connection_serves_again_once_healed() {
    let world = World::new(2);
    let (a, b, id) = pair(&world, Duration::from_millis(300)).await;
    assert_eq!(Counter::handle(&a, id.clone()).get().await.unwrap(), 0);
    world.net.set_fault(
        a.listen_addr(),
        b.listen_addr(),
        Fault {
            black_hole: true,
            ..Fault::default()
        },
    );
    let lost = Counter::handle(&a, id.clone()).add(1).await;
    assert!(matches!(lost, Err(CallError::Timeout { .. })), "{lost:?}");
    world.net.heal_all();
    // The request vanished on the way: the write was never applied.
    assert_eq!(Counter::handle(&a, id.clone()).add(1).await.unwrap(), 1);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_link_delays_every_frame_in_order() {
    let world = World::new(3);
    let (a, b, id) = pair(&world, Duration::from_secs(5)).await;
    let delay = Duration::from_millis(150);
    world.net.set_fault(
        a.listen_addr(),
        b.listen_addr(),
        Fault {
            delay,
            ..Fault::default()
        },
    );
    let started = Instant::now();
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let h = Counter::handle(&a, id.clone());
            tokio::spawn(async move { h.add(1).await.unwrap() })
        })
        .collect();
    let mut replies = Vec::new();
    for c in calls {
        replies.push(c.await.unwrap());
    }
    assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
    replies.sort();
    assert_eq!(replies, (1..=10).collect::<Vec<u64>>(), "each applied once");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_view_is_what_the_hub_plans_with() {
    let world = World::new(4);
    let a = Hub::builder("seams-view")
        .in_world(&world)
        .start()
        .await
        .unwrap();
    let b = Hub::builder("seams-view")
        .in_world(&world)
        .start()
        .await
        .unwrap();
    wait_members(&[a.clone(), b.clone()], 2).await;
    // A failure detector's mistake, scripted: a no longer hears b. One of two is no
    // majority: b is unreachable for a, not downed, and a fences itself.
    world
        .membership
        .set_view(a.node_id(), Some(vec![a.node_id()]));
    wait_until("a does not hear b", Duration::from_secs(5), || async {
        a.unreachable() == vec![b.node_id()]
    })
    .await;
    assert!(a.is_partitioned());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(a.nodes().len(), 2, "b stays a member for a");
    assert_eq!(b.nodes().len(), 2, "b still sees both");
    assert!(!b.is_partitioned(), "b hears a: 2 of 2");
    world.membership.set_view(a.node_id(), None);
    wait_until("a hears b again", Duration::from_secs(5), || async {
        a.unreachable().is_empty() && !a.is_partitioned()
    })
    .await;
    a.shutdown().await.unwrap();
    b.kill().await;
}

/// Under `Divergence` a hub that hears no one downs the others alone, once its view
/// was stable for `stable_after`; one heard again is a member again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_divergence_a_lone_hub_downs_the_silent_and_takes_them_back() {
    let world = World::new(6);
    let hub = || {
        Hub::builder("seams-divergence")
            .in_world(&world)
            .partition_tolerance(crate::PartitionTolerance::Divergence)
            .stable_after(Duration::from_millis(200))
            .start()
    };
    let a = hub().await.unwrap();
    let b = hub().await.unwrap();
    wait_members(&[a.clone(), b.clone()], 2).await;
    world
        .membership
        .set_view(a.node_id(), Some(vec![a.node_id()]));
    wait_until("a downed b", Duration::from_secs(5), || async {
        a.nodes() == vec![a.node_id()]
    })
    .await;
    assert!(!a.is_partitioned(), "divergence never fences");
    world.membership.set_view(a.node_id(), None);
    wait_members(&[a.clone(), b.clone()], 2).await;
    a.shutdown().await.unwrap();
    b.kill().await;
}

/// A node whose membership view still shows everyone, but whose lease renewals get
/// no answer (its links are cut), takes no child in: a start there fails with
/// `NoQuorum` once its lease ran out, and nothing of it is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_its_lease_takes_no_child_in() {
    let world = World::new(10);
    let hub = || Hub::builder("seams-start-lease").in_world(&world).start();
    let hubs = vec![
        hub().await.unwrap(),
        hub().await.unwrap(),
        hub().await.unwrap(),
    ];
    wait_members(&hubs, 3).await;
    let a = &hubs[0];
    let cut = Fault {
        cut: true,
        ..Fault::default()
    };
    for other in &hubs[1..] {
        world
            .net
            .set_fault_both(a.listen_addr(), other.listen_addr(), cut);
    }
    let id = (0..)
        .map(|i| format!("lease-{i}"))
        .find(|id| a.ring_owner(id) == Some(a.node_id()))
        .unwrap();
    // (The view still has a quorum: only the lease can tell.)
    assert_eq!(a.nodes().len(), 3);
    match Counter::start(a, id.clone(), Counter::default()).await {
        Err(StartError::NoQuorum { node, .. }) => assert_eq!(node, a.node_id()),
        other => panic!("a start without the lease: {other:?}"),
    }
    world.net.heal_all();
    // With the lease back, the same start goes through.
    wait_until(
        "the start goes through",
        Duration::from_secs(10),
        || async {
            Counter::start(a, id.clone(), Counter::default())
                .await
                .is_ok()
        },
    )
    .await;
    for h in hubs {
        h.shutdown().await.unwrap();
    }
}

/// Where the stop of a [`Held`] waits: set while its `#[on_stop]` runs, released by
/// the test.
static HELD_STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static HELD_RELEASE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A component whose stop waits for the test to let it finish.
#[distributed]
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Held {}

#[distributed]
impl Held {
    pub fn ping(&self) -> bool {
        true
    }

    #[on_stop]
    fn stopping(&mut self) {
        use std::sync::atomic::Ordering::SeqCst;
        HELD_STOPPING.store(true, SeqCst);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !HELD_RELEASE.load(SeqCst) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// A stop whose answer is lost with its connection stopped the child: once the
/// connection is back, the owner's snapshot lacks it, and the stop says `Ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_whose_answer_was_lost_with_the_connection_is_acknowledged() {
    use std::sync::atomic::Ordering::SeqCst;
    let world = World::new(9);
    let hub = || Hub::builder("seams-stop-lost").in_world(&world).start();
    let (a, b) = (hub().await.unwrap(), hub().await.unwrap());
    wait_members(&[a.clone(), b.clone()], 2).await;
    let id = (0..)
        .map(|i| format!("held-{i}"))
        .find(|id| a.ring_owner(id) == Some(b.node_id()))
        .unwrap();
    Held::start(&a, id.clone(), Held::default()).await.unwrap();
    let stop = tokio::spawn({
        let (a, id) = (a.clone(), id.clone());
        async move { Held::stop(&a, &id).await }
    });
    wait_until("b runs its stop", Duration::from_secs(5), || async {
        HELD_STOPPING.load(SeqCst)
    })
    .await;
    // Every frame of b to a resets the connection from now on: b's answer among them.
    let reset = Fault {
        reset: 1000,
        ..Fault::default()
    };
    world.net.set_fault(b.listen_addr(), a.listen_addr(), reset);
    HELD_RELEASE.store(true, SeqCst);
    wait_until("b stopped it", Duration::from_secs(5), || async {
        b.local_children() == 0
    })
    .await;
    world.net.heal_all();
    assert_eq!(stop.await.unwrap(), Ok(()));
    assert!(a.lookup(&id).is_none());
    a.shutdown().await.unwrap();
    b.kill().await;
}

/// A grow-only set: a merge is the union, so two copies that went on during a split
/// lose none of their adds when they meet.
#[distributed]
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Seen {
    keys: std::collections::BTreeSet<String>,
}

#[distributed]
impl Seen {
    /// Adds `key`; the number of keys.
    pub fn add(&mut self, key: String) -> usize {
        self.keys.insert(key);
        self.keys.len()
    }

    /// The keys without their padding (the `x`s that make them large).
    pub fn names(&self) -> std::collections::BTreeSet<String> {
        self.keys
            .iter()
            .map(|k| k.trim_end_matches('x').to_string())
            .collect()
    }

    #[on_conflict]
    fn union(&mut self, other: Self) {
        self.keys.extend(other.keys);
    }
}

/// Under `Divergence` both sides of a split serve every id; after the heal each
/// duplicate dropped is merged into the one kept (`#[on_conflict]`): every add
/// acknowledged on either side is in what any hub reads afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_divergence_the_duplicates_of_a_split_are_merged_and_lose_no_write() {
    split_and_merge(8, 24, 0, None).await;
}

/// As above, with duplicates larger than a frame: each goes to the instance kept in
/// parts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_larger_than_a_frame_are_merged_in_parts() {
    // Three adds of 24 KiB a side: 72 KiB of keys, over a 64 KiB frame.
    split_and_merge(10, 3, 24 * 1024, Some(64 * 1024)).await;
}

/// Splits three hubs {a} | {b, c} under `Divergence`, adds keys of `key_len` bytes to
/// `n` ids on both sides, heals, and checks that every duplicate was merged once and
/// no acknowledged add was lost.
async fn split_and_merge(seed: u64, n: usize, key_len: usize, max_frame: Option<usize>) {
    let world = World::new(seed);
    let hub = || {
        let b = Hub::builder("seams-merge")
            .in_world(&world)
            .partition_tolerance(crate::PartitionTolerance::Divergence)
            .stable_after(Duration::from_millis(100));
        match max_frame {
            Some(max) => b.max_frame_size(max),
            None => b,
        }
        .start()
    };
    let hubs = vec![
        hub().await.unwrap(),
        hub().await.unwrap(),
        hub().await.unwrap(),
    ];
    wait_members(&hubs, 3).await;
    let ids: Vec<String> = (0..n).map(|i| format!("s-{i}")).collect();
    let items = ids.iter().map(|i| (i.clone(), Seen::default())).collect();
    for r in Seen::start_many(&hubs[0], items).await {
        r.unwrap();
    }
    let mut events: Vec<_> = hubs.iter().map(Hub::events).collect();
    // Split {a} | {b, c}.
    let (a, b, c) = (hubs[0].node_id(), hubs[1].node_id(), hubs[2].node_id());
    let cut = Fault {
        cut: true,
        ..Fault::default()
    };
    for other in [&hubs[1], &hubs[2]] {
        world
            .net
            .set_fault_both(hubs[0].listen_addr(), other.listen_addr(), cut);
    }
    world.membership.set_view(a, Some(vec![a]));
    world.membership.set_view(b, Some(vec![b, c]));
    world.membership.set_view(c, Some(vec![b, c]));
    wait_until(
        "each side downed the other",
        Duration::from_secs(10),
        || async {
            hubs[0].nodes() == vec![a] && hubs[1].nodes().len() == 2 && hubs[2].nodes().len() == 2
        },
    )
    .await;
    // Each side adds keys of its own to every id; a key whose add failed may be in.
    let (mut acked, mut failed) = (Vec::new(), Vec::new());
    for (side, hub) in [&hubs[0], &hubs[1]].into_iter().enumerate() {
        for id in &ids {
            let handle = Seen::handle(hub, id.clone());
            let deadline = Instant::now() + Duration::from_secs(10);
            for k in 0..3 {
                loop {
                    let key = format!("{side}-{k}-{}-", failed.len());
                    match handle.add(format!("{key}{}", "x".repeat(key_len))).await {
                        Ok(_) => {
                            acked.push((id.clone(), key));
                            break;
                        }
                        Err(e) => {
                            assert!(Instant::now() < deadline, "{id} not served: {e}");
                            failed.push((id.clone(), key));
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }
        }
    }
    // Heal.
    for n in [a, b, c] {
        world.membership.set_view(n, None);
    }
    world.net.heal_all();
    wait_members(&hubs, 3).await;
    // Every id ran on both sides: each is merged once, into the instance kept.
    let mut merged = std::collections::BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while merged.len() < ids.len() {
        assert!(
            Instant::now() < deadline,
            "merged only {} of {} ids",
            merged.len(),
            ids.len()
        );
        for rx in &mut events {
            while let Ok(e) = rx.try_recv() {
                if let HubEvent::DuplicateMerged {
                    id,
                    into,
                    from,
                    error,
                } = e
                {
                    assert_eq!(error, None, "{id}: the merge failed");
                    assert_ne!(into, from);
                    assert!(
                        merged.insert(id.clone(), into).is_none(),
                        "{id} merged twice"
                    );
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for id in &ids {
        let seen: Vec<_> = futures_util::future::join_all(
            hubs.iter()
                .map(|h| async { Seen::handle(h, id.clone()).names().await.unwrap() }),
        )
        .await;
        assert!(seen.iter().all(|s| *s == seen[0]), "{id}: {seen:?}");
        for (_, key) in acked.iter().filter(|(i, _)| i == id) {
            assert!(
                seen[0].contains(key),
                "{id}: the acknowledged {key} was lost"
            );
        }
        for key in &seen[0] {
            assert!(
                acked
                    .iter()
                    .chain(&failed)
                    .any(|(i, k)| i == id && k == key),
                "{id}: {key} was never added"
            );
        }
    }
    let running: usize = hubs.iter().map(Hub::local_children).sum();
    assert_eq!(running, ids.len(), "one instance per id");
    for h in hubs {
        h.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_waits_for_the_connection_to_a_joiner_instead_of_failing() {
    let world = World::new(5);
    let a = Hub::builder("seams-join")
        .in_world(&world)
        .start()
        .await
        .unwrap();
    let ids = start_counters(&a, "j", 60).await;
    let mut events = a.events();
    // The joiner gets the next address; its link to the first hub is down at first, as
    // when a plan moves children to a joiner before the connection to it is up.
    let next = SocketAddr::new(a.listen_addr().ip(), a.listen_addr().port() + 1);
    let cut = Fault {
        cut: true,
        ..Fault::default()
    };
    world.net.set_fault_both(a.listen_addr(), next, cut);
    let b = Hub::builder("seams-join")
        .in_world(&world)
        .start()
        .await
        .unwrap();
    assert_eq!(b.listen_addr(), next);
    wait_members(&[a.clone(), b.clone()], 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    world.net.heal_all();
    wait_until(
        "the joiner's children moved",
        Duration::from_secs(10),
        || async {
            ids.iter().all(|id| {
                a.lookup(id)
                    .is_some_and(|i| Some(i.owner) == a.ring_owner(id))
            })
        },
    )
    .await;
    let mut failed = 0;
    while let Ok(e) = events.try_recv() {
        failed += usize::from(matches!(e, HubEvent::MigrationFailed { .. }));
    }
    assert_eq!(failed, 0, "no move failed for want of a connection");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
