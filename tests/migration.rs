//! Hot migration: children move with their latest state when a node joins or leaves
//! gracefully, under load, and no acknowledged call is lost or applied twice.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{cluster, hub, wait_members, wait_until, ColdTally, Tally};
use processhub::prelude::*;
use processhub::HubEvent;

const CHILDREN: usize = 1000;

/// The scenarios that load the machine (1,000 children under load, 64 MiB states,
/// hooks that block a thread) run one at a time: on two cores, together they starve
/// each other's failure detectors.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Increments every child from every hub until told to stop; returns the number of
/// increments acknowledged per child, and the errors seen.
fn load(
    hubs: &[Hub],
    ids: &[String],
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(Vec<u64>, Vec<String>)>> {
    hubs.iter()
        .map(|h| {
            let h = h.clone();
            common::spawn_load(ids.to_vec(), stop.clone(), move |id| {
                let t = Tally::handle(&h, id);
                async move { t.add(1).await }
            })
        })
        .collect()
}

/// Stops the load and sums what was acknowledged per child; no call may have failed.
async fn stop_load(
    stop: &Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<(Vec<u64>, Vec<String>)>>,
) -> Vec<u64> {
    stop.store(true, Ordering::Relaxed);
    let mut acked = vec![0u64; CHILDREN];
    for w in workers {
        let (a, errors) = w.await.unwrap();
        assert!(
            errors.is_empty(),
            "calls failed: {:?}",
            &errors[..errors.len().min(5)]
        );
        for (i, n) in a.into_iter().enumerate() {
            acked[i] += n;
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_graceful_leave_under_load_lose_nothing() {
    let _heavy = HEAVY.lock().await;
    let first = hub("hot", &[]).await;
    let seed = first.listen_addr();
    let mut hubs = vec![first, hub("hot", &[seed]).await, hub("hot", &[seed]).await];
    wait_members(&hubs, 3).await;
    let ids: Vec<String> = (0..CHILDREN).map(|i| format!("hot-{i}")).collect();
    for r in Tally::start_many(
        &hubs[0],
        ids.iter().map(|i| (i.clone(), Tally::default())).collect(),
    )
    .await
    {
        r.unwrap();
    }
    let mut migrated = hubs[0].events();
    let stop = Arc::new(AtomicBool::new(false));
    // Only the hubs that stay all along send load (the leaver's own calls would end with
    // HubStopped, which is not a move's fault).
    let stayers = vec![hubs[0].clone(), hubs[2].clone()];
    let workers = load(&stayers, &ids, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A 4th node joins: the children whose owner changed move to it, with their state.
    let joiner = hub("hot", &[seed]).await;
    hubs.push(joiner.clone());
    wait_members(&hubs, 4).await;
    wait_until(
        "children move to the joiner",
        Duration::from_secs(15),
        || async { joiner.local_children() > CHILDREN / 8 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // One leaves gracefully: it hands its children over before it goes.
    let leaver = hubs.remove(1);
    leaver.shutdown().await.unwrap();
    wait_members(&hubs, 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let acked = stop_load(&stop, workers).await;
    // Every counter equals what callers were told, exactly.
    for (i, id) in ids.iter().enumerate() {
        let n = Tally::handle(&hubs[0], id.clone()).get().await.unwrap();
        assert_eq!(n, acked[i], "{id}: counter {n}, acknowledged {}", acked[i]);
        assert!(n > 0);
    }
    let total: usize = hubs.iter().map(|h| h.local_children()).sum();
    assert_eq!(total, CHILDREN, "each child runs exactly once");
    let (mut moved, mut failed) = (0, 0);
    while let Ok(ev) = migrated.try_recv() {
        match ev {
            HubEvent::ChildMigrated { .. } => moved += 1,
            HubEvent::MigrationFailed { .. } => failed += 1,
            _ => {}
        }
    }
    assert!(moved > 0, "hub 0 moved some of its children to the joiner");
    assert_eq!(failed, 0);
    for h in &hubs {
        h.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_children_restart_from_their_start_state_when_they_move() {
    let first = hub("cold", &[]).await;
    let seed = first.listen_addr();
    let hubs = vec![first, hub("cold", &[seed]).await];
    wait_members(&hubs, 2).await;
    let ids: Vec<String> = (0..100).map(|i| format!("cold-{i}")).collect();
    for r in ColdTally::start_many(
        &hubs[0],
        ids.iter()
            .map(|i| (i.clone(), ColdTally::default()))
            .collect(),
    )
    .await
    {
        r.unwrap();
    }
    for id in &ids {
        ColdTally::handle(&hubs[1], id.clone())
            .add(7)
            .await
            .unwrap();
    }
    let joiner = hub("cold", &[seed]).await;
    let all = vec![hubs[0].clone(), hubs[1].clone(), joiner.clone()];
    wait_members(&all, 3).await;
    wait_until(
        "children move to the joiner",
        Duration::from_secs(15),
        || async { joiner.local_children() > 10 },
    )
    .await;
    let on_joiner: Vec<String> = ids
        .iter()
        .filter(|id| joiner.ring_owner(id) == Some(joiner.node_id()))
        .cloned()
        .collect();
    wait_until("every child answers", Duration::from_secs(10), || async {
        let mut ok = true;
        for id in &ids {
            ok &= ColdTally::handle(&joiner, id.clone()).get().await.is_ok();
        }
        ok
    })
    .await;
    for id in &ids {
        let n = ColdTally::handle(&hubs[0], id.clone()).get().await.unwrap();
        let expected = if on_joiner.contains(id) { 0 } else { 7 };
        assert_eq!(n, expected, "{id}");
    }
    for h in all {
        h.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_leave_hands_children_over_with_their_state() {
    let a = hub("handover", &[]).await;
    let b = hub("handover", &[a.listen_addr()]).await;
    wait_members(&[a.clone(), b.clone()], 2).await;
    let ids: Vec<String> = (0..50).map(|i| format!("ho-{i}")).collect();
    for r in Tally::start_many(
        &a,
        ids.iter().map(|i| (i.clone(), Tally::default())).collect(),
    )
    .await
    {
        r.unwrap();
    }
    for id in &ids {
        Tally::handle(&a, id.clone()).add(3).await.unwrap();
    }
    let on_b = b.local_children();
    assert!(on_b > 0);
    let mut events = b.events();
    b.shutdown().await.unwrap();
    wait_members(std::slice::from_ref(&a), 1).await;
    assert_eq!(a.local_children(), ids.len());
    for id in &ids {
        assert_eq!(
            Tally::handle(&a, id.clone()).get().await.unwrap(),
            3,
            "{id} kept its state"
        );
    }
    let mut migrated = 0;
    while let Ok(ev) = events.try_recv() {
        match ev {
            HubEvent::ChildMigrated { to, epoch, .. } => {
                assert_eq!(to, a.node_id());
                assert_eq!(epoch, 2);
                migrated += 1;
            }
            HubEvent::MigrationFailed { .. } => panic!("{ev:?}"),
            _ => {}
        }
    }
    assert_eq!(migrated, on_b);
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_moves_everything_away_under_load_and_takes_nothing_new() {
    let _heavy = HEAVY.lock().await;
    let first = hub("drain", &[]).await;
    let seed = first.listen_addr();
    let hubs = vec![
        first,
        hub("drain", &[seed]).await,
        hub("drain", &[seed]).await,
    ];
    wait_members(&hubs, 3).await;
    let ids: Vec<String> = (0..CHILDREN).map(|i| format!("dr-{i}")).collect();
    for r in Tally::start_many(
        &hubs[0],
        ids.iter().map(|i| (i.clone(), Tally::default())).collect(),
    )
    .await
    {
        r.unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let workers = load(&hubs, &ids, &stop);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let drained = &hubs[1];
    let had = drained.local_children();
    assert!(had > 0);
    let mut events = drained.events();
    let report = drained.drain().await.unwrap();
    assert_eq!(
        report,
        processhub::DrainReport {
            moved: had,
            failed: 0
        }
    );
    assert_eq!(drained.local_children(), 0);
    assert_eq!(drained.nodes().len(), 3, "a drained node stays a member");
    let mut completed = false;
    while let Ok(ev) = events.try_recv() {
        completed |= matches!(ev, HubEvent::DrainCompleted { moved, failed: 0 } if moved == had);
    }
    assert!(completed);

    // Nothing new lands on it, from any node, once the others know.
    wait_until("every node knows", Duration::from_secs(5), || async {
        hubs.iter()
            .all(|h| (0..200).all(|i| h.ring_owner(&format!("new-{i}")) != Some(drained.node_id())))
    })
    .await;
    for h in &hubs {
        let fresh: Vec<(String, Tally)> = (0..50)
            .map(|i| (format!("new-{}-{i}", h.node_id()), Tally::default()))
            .collect();
        for r in Tally::start_many(h, fresh).await {
            r.unwrap();
        }
    }
    assert_eq!(drained.local_children(), 0);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let acked = stop_load(&stop, workers).await;
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            Tally::handle(&hubs[2], id.clone()).get().await.unwrap(),
            acked[i],
            "{id}"
        );
    }
    for h in &hubs {
        h.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handover_hooks_run_once_per_move_on_each_side() {
    use common::Traveller;
    let a = hub("hooks", &[]).await;
    let b = hub("hooks", &[a.listen_addr()]).await;
    wait_members(&[a.clone(), b.clone()], 2).await;
    let ids: Vec<String> = (0..60).map(|i| format!("tr-{i}")).collect();
    for r in Traveller::start_many(
        &a,
        ids.iter()
            .map(|i| (i.clone(), Traveller::default()))
            .collect(),
    )
    .await
    {
        r.unwrap();
    }
    let on_b: Vec<String> = ids
        .iter()
        .filter(|id| b.lookup(id).unwrap().owner == b.node_id())
        .cloned()
        .collect();
    assert!(!on_b.is_empty());
    b.shutdown().await.unwrap();
    wait_members(std::slice::from_ref(&a), 1).await;
    for id in &ids {
        let trips = Traveller::handle(&a, id.clone()).trips().await.unwrap();
        let expected = if on_b.contains(id) { (1, 1) } else { (0, 0) };
        assert_eq!(trips, expected, "{id}");
    }
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_children_stay_on_a_join_and_a_drain_and_leave_with_their_node() {
    use common::PinnedTally;
    let a = hub("pinned", &[]).await;
    let b = hub("pinned", &[a.listen_addr()]).await;
    wait_members(&[a.clone(), b.clone()], 2).await;
    let ids: Vec<String> = (0..60).map(|i| format!("pin-{i}")).collect();
    for r in PinnedTally::start_many(
        &a,
        ids.iter()
            .map(|i| (i.clone(), PinnedTally::default()))
            .collect(),
    )
    .await
    {
        r.unwrap();
    }
    for id in &ids {
        PinnedTally::handle(&b, id.clone()).add(2).await.unwrap();
    }
    let owners: Vec<NodeId> = ids.iter().map(|id| a.lookup(id).unwrap().owner).collect();
    // A join moves nothing pinned, even what the joiner now owns on the ring.
    let c = hub("pinned", &[a.listen_addr()]).await;
    let all = [a.clone(), b.clone(), c.clone()];
    wait_members(&all, 3).await;
    assert!(ids.iter().any(|id| c.ring_owner(id) == Some(c.node_id())));
    tokio::time::sleep(Duration::from_millis(1500)).await; // two planner ticks
    assert_eq!(c.local_children(), 0);
    // A drain leaves them too, and says so.
    let on_b = b.local_children();
    let report = b.drain().await.unwrap();
    assert_eq!(
        report,
        processhub::DrainReport {
            moved: 0,
            failed: on_b
        }
    );
    for (id, owner) in ids.iter().zip(&owners) {
        assert_eq!(a.lookup(id).unwrap().owner, *owner, "{id} stayed");
    }
    // When their node leaves, they go with their state.
    b.shutdown().await.unwrap();
    wait_members(&[a.clone(), c.clone()], 2).await;
    for id in &ids {
        assert_eq!(
            PinnedTally::handle(&a, id.clone()).add(0).await.unwrap(),
            2,
            "{id}"
        );
    }
    for h in [a, c] {
        h.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_state_moves_in_parts() {
    let _heavy = HEAVY.lock().await;
    use common::Blob;
    let a = hub("big", &[]).await;
    let b = hub("big", &[a.listen_addr()]).await;
    wait_members(&[a.clone(), b.clone()], 2).await;
    // Two blobs owned by `a`: one big (in parts of half a frame), one small beside it.
    let ids: Vec<String> = (0..)
        .map(|i| format!("blob-{i}"))
        .filter(|id| a.ring_owner(id) == Some(a.node_id()))
        .take(2)
        .collect();
    let big = Blob::start(&a, ids[0].clone(), Blob::default())
        .await
        .unwrap();
    let small = Blob::start(&a, ids[1].clone(), Blob::default())
        .await
        .unwrap();
    const LEN: usize = 64 * 1024 * 1024;
    assert_eq!(big.fill(LEN, 7).await.unwrap(), LEN);
    small.fill(1000, 9).await.unwrap();
    let (big_before, small_before) = (big.digest().await.unwrap(), small.digest().await.unwrap());

    let report = a.drain().await.unwrap();
    assert_eq!(
        report,
        processhub::DrainReport {
            moved: 2,
            failed: 0
        }
    );
    for id in &ids {
        assert_eq!(a.lookup(id).unwrap().owner, b.node_id(), "{id} moved");
    }
    assert_eq!(
        big.digest().await.unwrap(),
        big_before,
        "the big state arrived whole"
    );
    assert_eq!(small.digest().await.unwrap(), small_before);
    // And on, on a graceful leave of its new node while a join moves children to a
    // third: both moves carry the state.
    let c = hub("big", &[a.listen_addr()]).await;
    wait_members(&[a.clone(), b.clone(), c.clone()], 3).await;
    b.shutdown().await.unwrap();
    assert_eq!(big.digest().await.unwrap(), big_before);
    for h in [a, c] {
        h.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_state_over_half_a_frame_is_refused_clearly() {
    use common::Blob;
    let a = Hub::builder("big-start")
        .cluster_key(common::KEY)
        .max_frame_size(64 * 1024)
        .start()
        .await
        .unwrap();
    let mut blob = Blob::default();
    blob.fill(40 * 1024, 1);
    match Blob::start(&a, "too-big", blob).await {
        Err(StartError::TooLarge { size, max }) => {
            assert!(size > max && max == 32 * 1024, "{size} {max}")
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(a.lookup("too-big").is_none());
    a.shutdown().await.unwrap();
}

/// Children on their way: +1 when a state leaves, -1 when it arrives.
static IN_TRANSIT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
/// The most seen on their way at once.
static MOST_IN_TRANSIT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
/// How long an arriving state holds up its new node, in milliseconds.
static ARRIVAL_DELAY_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A counter that reports its trips (for the two tests below, which run one after the
/// other in one test: they share these statics).
#[distributed]
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct Watched {
    n: u64,
}

#[distributed]
impl Watched {
    /// Adds and returns the new value.
    pub fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }

    #[on_handover_out]
    fn leaving(&mut self) {
        let now = IN_TRANSIT.fetch_add(1, Ordering::SeqCst) + 1;
        MOST_IN_TRANSIT.fetch_max(now, Ordering::SeqCst);
    }

    #[on_handover_in]
    fn arriving(&mut self) {
        IN_TRANSIT.fetch_sub(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(
            ARRIVAL_DELAY_MS.load(Ordering::SeqCst),
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moves_are_bounded_in_number_and_in_time() {
    let _heavy = HEAVY.lock().await;
    // At most `move_concurrency` children frozen at once.
    let a = Hub::builder("bounded")
        .cluster_key(common::KEY)
        .move_concurrency(4)
        .move_timeout(Duration::from_millis(400))
        .start()
        .await
        .unwrap();
    let b = Hub::builder("bounded")
        .cluster_key(common::KEY)
        .seeds([a.listen_addr().to_string()])
        .move_timeout(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    wait_members(&[a.clone(), b.clone()], 2).await;
    let ids: Vec<String> = (0..)
        .map(|i| format!("w-{i}"))
        .filter(|id| a.ring_owner(id) == Some(a.node_id()))
        .take(40)
        .collect();
    for r in Watched::start_many(
        &a,
        ids.iter()
            .map(|i| (i.clone(), Watched::default()))
            .collect(),
    )
    .await
    {
        r.unwrap();
    }
    for id in &ids {
        Watched::handle(&b, id.clone()).add(5).await.unwrap();
    }
    let report = a.drain().await.unwrap();
    assert_eq!(
        report,
        processhub::DrainReport {
            moved: 40,
            failed: 0
        }
    );
    let most = MOST_IN_TRANSIT.load(Ordering::SeqCst);
    assert!(
        (1..=4).contains(&most),
        "{most} moved at once, at most 4 allowed"
    );

    // A move that does not finish within the move timeout is rolled back: the child
    // goes on at its old node with its state, and one copy survives.
    // Everything is on b now; c's share moves to c when it joins: hold the arrivals up
    // past b's move timeout.
    let mut events = b.events();
    ARRIVAL_DELAY_MS.store(600, Ordering::SeqCst);
    let c = hub("bounded", &[a.listen_addr()]).await;
    let all = [a.clone(), b.clone(), c.clone()];
    wait_members(&all, 3).await;
    let failed_id = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(HubEvent::MigrationFailed { id, to, reason }) = events.recv().await {
                assert_eq!(to, c.node_id());
                assert!(reason.contains("Timeout"), "{reason}");
                return id;
            }
        }
    })
    .await
    .expect("a move to the slow node fails");
    ARRIVAL_DELAY_MS.store(0, Ordering::SeqCst);
    assert_eq!(
        Watched::handle(&a, failed_id.clone()).add(0).await.unwrap(),
        5
    );
    // The planner tries again, and this time the moves finish: every child on its
    // ring owner, once, with its state.
    wait_until(
        "every child on its owner, once",
        Duration::from_secs(30),
        || {
            let placed = ids.iter().all(|id| {
                a.lookup(id).map(|i| i.owner) == a.ring_owner(id)
                    && a.ring_owner(id) != Some(a.node_id())
            });
            let running: usize = all.iter().map(|h| h.local_children()).sum();
            std::future::ready(placed && running == ids.len())
        },
    )
    .await;
    assert!(c.local_children() > 0);
    for id in &ids {
        assert_eq!(
            Watched::handle(&a, id.clone()).add(0).await.unwrap(),
            5,
            "{id}"
        );
    }
    assert!(ids.contains(&failed_id));
    for h in all {
        h.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_graceful_leave_children_bound_to_their_node_stop_and_the_others_move() {
    use processhub::{OnNodeDeath, StartOptions};
    let a = hub("bound", &[]).await;
    let b = hub("bound", &[a.listen_addr()]).await;
    wait_members(&[a.clone(), b.clone()], 2).await;
    let on_b: Vec<String> = (0..)
        .map(|i| format!("bound-{i}"))
        .filter(|id| a.ring_owner(id) == Some(b.node_id()))
        .take(20)
        .collect();
    let (bound, free) = on_b.split_at(10);
    let options = StartOptions::new()
        .pinned(true)
        .on_node_death(OnNodeDeath::StayDown);
    for id in bound {
        Tally::start_with(&a, id.clone(), Tally::default(), options.clone())
            .await
            .unwrap();
    }
    for id in free {
        Tally::start(&a, id.clone(), Tally::default())
            .await
            .unwrap();
    }
    for id in &on_b {
        Tally::handle(&a, id.clone()).add(4).await.unwrap();
    }
    b.shutdown().await.unwrap();
    wait_members(std::slice::from_ref(&a), 1).await;
    for id in bound {
        assert!(a.lookup(id).is_none(), "{id} stopped with its node");
    }
    for id in free {
        assert_eq!(
            Tally::handle(&a, id.clone()).get().await.unwrap(),
            4,
            "{id} moved"
        );
    }
    a.shutdown().await.unwrap();
}

/// Stops of [`Lifecycle`] children seen by its `#[on_stop]`, in this process.
static LIFECYCLE_STOPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Starts seen by its `#[on_start]`, in this process.
static LIFECYCLE_STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Counts its starts (in its state, which moves with it) and its stops.
#[distributed]
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct Lifecycle {
    starts: u32,
    touches: u32,
}

#[distributed]
impl Lifecycle {
    /// (starts, touches).
    pub fn touch(&mut self) -> (u32, u32) {
        self.touches += 1;
        (self.starts, self.touches)
    }

    #[on_start]
    fn started(&mut self) {
        self.starts += 1;
        LIFECYCLE_STARTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    #[on_stop]
    fn stopped(&mut self) {
        LIFECYCLE_STOPS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_and_stop_hooks_run_on_starts_restarts_and_stops_not_on_moves() {
    // Four nodes: after a graceful leave and a death two remain, a majority of the three
    // the leave left (a death in a cluster of two stops the other: no majority).
    let mut hubs = cluster("lifecycle", 4).await;
    let ids: Vec<String> = (0..60).map(|i| format!("lc-{i}")).collect();
    for r in Lifecycle::start_many(
        &hubs[0],
        ids.iter()
            .map(|i| (i.clone(), Lifecycle::default()))
            .collect(),
    )
    .await
    {
        r.unwrap();
    }
    // Started once each, wherever it started.
    for id in &ids {
        assert_eq!(
            Lifecycle::handle(&hubs[1], id.clone())
                .touch()
                .await
                .unwrap(),
            (1, 1)
        );
    }
    // A start refused (the id runs already), from every hub: no hook ran for it.
    for h in &hubs {
        for id in &ids {
            let again = Lifecycle::start(h, id.clone(), Lifecycle::default()).await;
            assert!(
                matches!(again, Err(StartError::AlreadyStarted { .. })),
                "{id}"
            );
        }
    }
    let starts = |n| {
        assert_eq!(
            LIFECYCLE_STARTS.load(std::sync::atomic::Ordering::SeqCst),
            n
        )
    };
    starts(60);
    // A graceful leave moves children with their state: no second start.
    let owners: Vec<NodeId> = ids
        .iter()
        .map(|id| hubs[0].lookup(id).unwrap().owner)
        .collect();
    let leaver = hubs.remove(1);
    let left = leaver.node_id();
    leaver.shutdown().await.unwrap();
    wait_members(&hubs, 3).await;
    for (id, owner) in ids.iter().zip(&owners) {
        let got = Lifecycle::handle(&hubs[0], id.clone())
            .touch()
            .await
            .unwrap();
        assert_eq!(got, (1, 2), "{id} (was on {owner}, the leaver was {left})");
    }
    // A death restarts its children from their start state: started again, from there.
    let victim = hubs[1].node_id();
    let on_victim: Vec<&String> = ids
        .iter()
        .filter(|id| hubs[0].lookup(id).unwrap().owner == victim)
        .collect();
    assert!(!on_victim.is_empty());
    hubs.remove(1).kill().await;
    wait_members(&hubs, 2).await;
    for id in &ids {
        let expected = if on_victim.contains(&id) {
            (1, 1)
        } else {
            (1, 3)
        };
        let got = Lifecycle::handle(&hubs[0], id.clone())
            .touch()
            .await
            .unwrap();
        assert_eq!(got, expected, "{id}");
    }
    starts(60 + on_victim.len());
    // Stops run the stop hook, once each; nothing else did.
    assert_eq!(LIFECYCLE_STOPS.load(std::sync::atomic::Ordering::SeqCst), 0);
    for id in &ids {
        Lifecycle::stop(&hubs[0], id).await.unwrap();
    }
    assert_eq!(
        LIFECYCLE_STOPS.load(std::sync::atomic::Ordering::SeqCst),
        60
    );
    for h in &hubs {
        h.shutdown().await.unwrap();
    }
}
