//! Several hubs in one process: placement, calls from every node, registry agreement,
//! errors, restarts on death, moves on join, graceful shutdown.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{
    cluster, hub, views_agree, wait_members, wait_until, Kept, Label, Tally, TallyHandle,
};
use processhub::prelude::*;
use processhub::RestartReason;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_components_called_from_every_hub() {
    let hubs = cluster("thousand", 3).await;
    let items: Vec<(String, Tally)> = (0..1000)
        .map(|i| (format!("tally-{i}"), Tally::default()))
        .collect();
    let started = Tally::start_many(&hubs[0], items).await;
    assert_eq!(started.len(), 1000);
    for r in &started {
        r.as_ref().expect("every start succeeds");
    }

    // Placement is spread over every node.
    let mut per_node: HashMap<NodeId, usize> = HashMap::new();
    for h in &hubs {
        per_node.insert(h.node_id(), h.local_children());
    }
    assert_eq!(per_node.values().sum::<usize>(), 1000);
    for (node, count) in &per_node {
        assert!(*count > 200, "{node} runs only {count}");
    }

    // Every component called from every hub.
    for h in &hubs {
        let calls = (0..1000).map(|i| {
            let t = Tally::handle(h, format!("tally-{i}"));
            async move { t.add(1).await }
        });
        for r in futures::future::join_all(calls).await {
            r.expect("call succeeds");
        }
    }
    for i in (0..1000).step_by(97) {
        for h in &hubs {
            assert_eq!(
                Tally::handle(h, format!("tally-{i}")).get().await.unwrap(),
                3
            );
            assert_eq!(
                Tally::handle(h, format!("tally-{i}"))
                    .slow_get()
                    .await
                    .unwrap(),
                3
            );
        }
    }

    // Every registry agrees, and says each one runs where it runs.
    wait_until("registries converge", Duration::from_secs(10), || async {
        hubs.iter().all(|h| h.children().len() == 1000)
    })
    .await;
    for i in 0..1000 {
        let id = format!("tally-{i}");
        let infos: Vec<ChildInfo> = hubs.iter().map(|h| h.lookup(&id).unwrap()).collect();
        assert!(infos.windows(2).all(|w| w[0] == w[1]), "{infos:?}");
        assert_eq!(infos[0].epoch, 1);
        assert!(infos[0].type_name.ends_with("::Tally"));
    }

    // Stop all from the last hub: the registry empties everywhere.
    for i in 0..1000 {
        Tally::stop(&hubs[2], &format!("tally-{i}"))
            .await
            .expect("stop");
    }
    wait_until("registries empty", Duration::from_secs(10), || async {
        hubs.iter()
            .all(|h| h.children().is_empty() && h.local_children() == 0)
    })
    .await;
    for h in &hubs {
        h.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_clear_and_immediate() {
    let hubs = cluster("errors", 3).await;
    let (a, b, c) = (&hubs[0], &hubs[1], &hubs[2]);

    // Ids are arbitrary UTF-8; empty is refused.
    for id in ["with space", "with/slash", "🦀 crab", "ünïcødé"] {
        let t = Tally::start(a, id, Tally::default()).await.unwrap();
        assert_eq!(t.add_both(1, 2, "x".into()).await.unwrap(), "x:3");
        assert_eq!(Tally::handle(c, id).get().await.unwrap(), 3);
    }
    assert_eq!(
        Tally::start(a, "", Tally::default()).await.unwrap_err(),
        StartError::EmptyId
    );

    // A duplicate start is refused, from any node, naming the node that runs it.
    let t = Tally::start(a, "dup", Tally::default()).await.unwrap();
    t.add(7).await.unwrap();
    let owner = a.lookup("dup").unwrap().owner;
    for h in &hubs {
        match Tally::start(h, "dup", Tally::default()).await {
            Err(StartError::AlreadyStarted { id, node }) => {
                assert_eq!(id, "dup");
                assert_eq!(node, owner);
            }
            other => panic!("expected AlreadyStarted, got {other:?}"),
        }
    }
    assert_eq!(t.get().await.unwrap(), 7, "the running one is untouched");

    // Unknown stop: NotFound at once, not after a timeout.
    let began = std::time::Instant::now();
    for h in &hubs {
        assert_eq!(
            Tally::stop(h, "never-started").await.unwrap_err(),
            StopError::NotFound {
                id: "never-started".into()
            }
        );
        match Tally::handle(h, "never-started").get().await {
            Err(CallError::NotFound { id }) => assert_eq!(id, "never-started"),
            other => panic!("expected NotFound, got {other:?}"),
        }
    }
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "took {:?}",
        began.elapsed()
    );

    // Call after stop.
    Tally::stop(b, "dup").await.unwrap();
    for h in &hubs {
        assert!(matches!(
            Tally::handle(h, "dup").get().await,
            Err(CallError::NotFound { .. })
        ));
    }
    assert!(matches!(
        Tally::stop(c, "dup").await,
        Err(StopError::NotFound { .. })
    ));

    // Types do not mix.
    Label::start(a, "label", Label::default()).await.unwrap();
    for h in &hubs {
        match Tally::handle(h, "label").get().await {
            Err(CallError::WrongType {
                expected, actual, ..
            }) => {
                assert!(expected.ends_with("::Tally") && actual.ends_with("::Label"));
            }
            other => panic!("expected WrongType, got {other:?}"),
        }
        assert!(matches!(
            Tally::stop(h, "label").await,
            Err(StopError::WrongType { .. })
        ));
    }
    Label::handle(b, "label").set("hi".into()).await.unwrap();
    assert_eq!(Label::handle(c, "label").text().await.unwrap(), "hi");

    for h in &hubs {
        h.shutdown().await.unwrap();
    }
    // A stopped hub says so.
    assert_eq!(
        Tally::handle(a, "label").get().await.unwrap_err(),
        CallError::HubStopped
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_an_error_and_the_component_goes_on() {
    let hubs = cluster("panics", 2).await;
    let mut events: Vec<_> = hubs.iter().map(|h| h.events()).collect();
    let t = Tally::start(&hubs[0], "boom", Tally::default())
        .await
        .unwrap();
    t.add(1).await.unwrap();
    for h in &hubs {
        match Tally::handle(h, "boom").explode(true).await {
            Err(CallError::Panicked { id, message }) => {
                assert_eq!(id, "boom");
                assert!(message.contains("asked to explode"));
            }
            other => panic!("expected Panicked, got {other:?}"),
        }
    }
    // It still runs, with the state the panics left.
    assert_eq!(t.get().await.unwrap(), 2001);
    let owner = hubs[0].lookup("boom").unwrap().owner;
    let i = hubs.iter().position(|h| h.node_id() == owner).unwrap();
    let mut restarts = 0;
    while let Ok(ev) = events[i].try_recv() {
        if let HubEvent::ChildRestarted {
            id,
            reason: RestartReason::Panicked { .. },
            ..
        } = ev
        {
            assert_eq!(id, "boom");
            restarts += 1;
        }
    }
    assert_eq!(restarts, 2);
    for h in &hubs {
        h.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubs_of_other_ids_never_mix() {
    let a = hub("alpha", &[]).await;
    // A hub whose only seed is of another cluster does not join it, nor start alone:
    // the hub id is in every proof, so the seed refuses it.
    let refused = Hub::builder("beta")
        .listen("127.0.0.1:0")
        .seeds([a.listen_addr().to_string()])
        .join_timeout(Duration::from_millis(800))
        .start()
        .await;
    assert!(
        matches!(refused, Err(HubError::ClusterKeyRefused { .. })),
        "{refused:?}"
    );
    let b = hub("beta", &[]).await;
    // Seeds of both: it joins its own, and hears nothing of the other.
    let a2 = hub("alpha", &[b.listen_addr(), a.listen_addr()]).await;
    wait_members(&[a.clone(), a2.clone()], 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(b.nodes(), vec![b.node_id()]);
    assert!(!a.nodes().contains(&b.node_id()));
    Tally::start(&b, "only-beta", Tally::default())
        .await
        .unwrap();
    assert!(matches!(
        Tally::handle(&a, "only-beta").get().await,
        Err(CallError::NotFound { .. })
    ));
    for h in [a, b, a2] {
        h.shutdown().await.unwrap();
    }
}

async fn answers_everywhere(hubs: &[Hub], ids: &[String]) -> bool {
    for h in hubs {
        for id in ids {
            if Tally::handle(h, id.clone()).get().await.is_err() {
                return false;
            }
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_moves_and_graceful_shutdown_hands_over() {
    let mut hubs = cluster("moves", 3).await;
    let ids: Vec<String> = (0..300).map(|i| format!("m-{i}")).collect();
    let handles: Vec<TallyHandle> = Tally::start_many(
        &hubs[0],
        ids.iter().map(|i| (i.clone(), Tally::default())).collect(),
    )
    .await
    .into_iter()
    .map(|r| r.unwrap())
    .collect();
    assert_eq!(handles.len(), 300);

    // A 4th node joins: some children move to it, all keep answering.
    let mut joined_events = hubs[0].events();
    let d = hub("moves", &[hubs[0].listen_addr()]).await;
    hubs.push(d.clone());
    wait_members(&hubs, 4).await;
    wait_until(
        "children move to the joiner",
        Duration::from_secs(10),
        || async { d.local_children() > 30 },
    )
    .await;
    wait_until(
        "every child answers from every hub",
        Duration::from_secs(10),
        || answers_everywhere(&hubs, &ids),
    )
    .await;
    let total: usize = hubs.iter().map(|h| h.local_children()).sum();
    assert_eq!(total, 300, "each child runs exactly once");
    let mut saw_join = false;
    while let Ok(ev) = joined_events.try_recv() {
        saw_join |= matches!(ev, HubEvent::NodeJoined { node } if node == d.node_id());
    }
    assert!(saw_join);

    // Graceful shutdown of one: the others take over at once, without waiting for the
    // failure detector.
    let leaving = hubs.remove(1);
    let left_id = leaving.node_id();
    let mut events = hubs[0].events();
    let began = std::time::Instant::now();
    leaving.shutdown().await.unwrap();
    wait_members(&hubs, 3).await;
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "leave took {:?}",
        began.elapsed()
    );
    wait_until(
        "every child answers after the leave",
        Duration::from_secs(10),
        || answers_everywhere(&hubs, &ids),
    )
    .await;
    let total: usize = hubs.iter().map(|h| h.local_children()).sum();
    assert_eq!(total, 300);
    let mut graceful = false;
    while let Ok(ev) = events.try_recv() {
        graceful |= matches!(ev, HubEvent::NodeLeft { node, graceful: true } if node == left_id);
    }
    assert!(graceful, "NodeLeft is reported as graceful");
    for h in &hubs {
        h.shutdown().await.unwrap();
    }
}

#[test]
fn public_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + Clone + std::fmt::Debug + 'static>() {}
    assert_send_sync::<Hub>();
    assert_send_sync::<TallyHandle>();
    assert_send_sync::<ChildInfo>();
    assert_send_sync::<HubEvent>();
    assert_send_sync::<NodeId>();
    fn assert_error<E: std::error::Error + Send + Sync + 'static>() {}
    assert_error::<CallError>();
    assert_error::<StartError>();
    assert_error::<StopError>();
    assert_error::<HubError>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_children_sleep_and_wake_with_their_state() {
    let seedless = Hub::builder("sleepy")
        .cluster_key(common::KEY)
        .hibernate_after(Some(Duration::from_millis(200)))
        .start()
        .await
        .unwrap();
    let other = Hub::builder("sleepy")
        .cluster_key(common::KEY)
        .seeds([seedless.listen_addr().to_string()])
        .hibernate_after(Some(Duration::from_millis(200)))
        .start()
        .await
        .unwrap();
    let hubs = [seedless, other];
    wait_members(&hubs, 2).await;
    let ids: Vec<String> = (0..40).map(|i| format!("z-{i}")).collect();
    for r in Tally::start_many(
        &hubs[0],
        ids.iter().map(|i| (i.clone(), Tally::default())).collect(),
    )
    .await
    {
        r.unwrap();
    }
    // Children start asleep: no actor until the first call.
    assert_eq!(hubs.iter().map(|h| h.active_children()).sum::<usize>(), 0);
    for id in &ids[..10] {
        assert_eq!(Tally::handle(&hubs[1], id.clone()).add(5).await.unwrap(), 5);
    }
    assert_eq!(hubs.iter().map(|h| h.active_children()).sum::<usize>(), 10);
    wait_until(
        "idle children go to sleep",
        Duration::from_secs(5),
        || async { hubs.iter().map(|h| h.active_children()).sum::<usize>() == 0 },
    )
    .await;
    // They wake with their state, from either node.
    for id in &ids[..10] {
        assert_eq!(Tally::handle(&hubs[0], id.clone()).add(1).await.unwrap(), 6);
    }
    for h in &hubs {
        h.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_call_is_lost_while_children_sleep_and_wake_under_load() {
    // A sleep time so short that children go to sleep between calls all the time.
    let a = Hub::builder("restless")
        .cluster_key(common::KEY)
        .hibernate_after(Some(Duration::from_millis(2)))
        .start()
        .await
        .unwrap();
    let b = Hub::builder("restless")
        .cluster_key(common::KEY)
        .seeds([a.listen_addr().to_string()])
        .hibernate_after(Some(Duration::from_millis(2)))
        .start()
        .await
        .unwrap();
    let hubs = [a, b];
    wait_members(&hubs, 2).await;
    let ids: Vec<String> = (0..8).map(|i| format!("r-{i}")).collect();
    for r in Tally::start_many(
        &hubs[0],
        ids.iter().map(|i| (i.clone(), Tally::default())).collect(),
    )
    .await
    {
        r.unwrap();
    }
    let mut tasks = Vec::new();
    for (n, h) in hubs.iter().enumerate() {
        for id in &ids {
            let t = Tally::handle(h, id.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..150u64 {
                    t.add(1)
                        .await
                        .expect("no call fails because its child slept");
                    if (i + n as u64).is_multiple_of(7) {
                        tokio::time::sleep(Duration::from_millis(3)).await;
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    for id in &ids {
        assert_eq!(
            Tally::handle(&hubs[1], id.clone()).get().await.unwrap(),
            300,
            "{id}"
        );
    }
    for h in &hubs {
        h.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_busy_past_the_call_timeout_is_a_timeout_locally_and_remotely() {
    let builder = |seeds: Vec<String>| {
        Hub::builder("busy")
            .cluster_key(common::KEY)
            .seeds(seeds)
            .call_timeout(Duration::from_millis(300))
    };
    let a = builder(vec![]).start().await.unwrap();
    let b = builder(vec![a.listen_addr().to_string()])
        .start()
        .await
        .unwrap();
    wait_members(&[a.clone(), b.clone()], 2).await;
    let id = (0..)
        .map(|i| format!("busy-{i}"))
        .find(|id| a.ring_owner(id) == Some(a.node_id()))
        .unwrap();
    Tally::start(&a, id.clone(), Tally::default())
        .await
        .unwrap();
    for (hub, where_) in [(&a, "local"), (&b, "remote")] {
        let started = std::time::Instant::now();
        match Tally::handle(hub, id.clone()).nap(1_500).await {
            Err(CallError::Timeout { after, .. }) => assert_eq!(after, Duration::from_millis(300)),
            other => panic!("{where_}: expected Timeout, got {other:?}"),
        }
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "{where_}: gave up after {took:?}"
        );
    }
    for h in [a, b] {
        h.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_children_keep_as_many_copies_as_there_are_nodes_up_to_n() {
    let hubs = cluster("kept", 3).await;
    let mut events: Vec<_> = hubs.iter().map(|h| h.events()).collect();
    let ids: Vec<String> = (0..60).map(|i| format!("kept-{i}")).collect();
    for r in Kept::start_many(
        &hubs[0],
        ids.iter().map(|i| (i.clone(), Kept::default())).collect(),
    )
    .await
    {
        r.unwrap();
    }
    for id in &ids {
        assert_eq!(Kept::handle(&hubs[1], id.clone()).add(2).await.unwrap(), 2);
    }
    let copies = |hub: &Hub, n: usize| {
        ids.iter().all(|id| {
            hub.lookup(id).is_some_and(|i| {
                let mut all = i.standbys.clone();
                all.push(i.owner);
                all.sort();
                all.dedup();
                all.len() == n && i.standbys.len() == n - 1
            })
        })
    };
    wait_until(
        "3 copies of each, seen from every hub",
        Duration::from_secs(10),
        || async { hubs.iter().all(|h| copies(h, 3)) },
    )
    .await;
    // Each standby was reported by its primary's hub.
    let mut added = 0;
    for e in &mut events {
        while let Ok(ev) = e.try_recv() {
            added += usize::from(matches!(ev, HubEvent::ReplicaAdded { .. }));
        }
    }
    assert_eq!(added, 2 * ids.len());
    // A node leaves gracefully: its primaries hand over, and each child is on the two
    // nodes left, with its state.
    let mut hubs = hubs;
    let leaver = hubs.remove(2);
    leaver.shutdown().await.unwrap();
    wait_members(&hubs, 2).await;
    wait_until("2 copies of each", Duration::from_secs(10), || async {
        hubs.iter().all(|h| copies(h, 2))
    })
    .await;
    for id in &ids {
        assert_eq!(
            Kept::handle(&hubs[0], id.clone()).add(1).await.unwrap(),
            3,
            "{id}"
        );
    }
    // It comes back (a new incarnation): three copies again.
    hubs.push(hub("kept", &[hubs[0].listen_addr()]).await);
    wait_members(&hubs, 3).await;
    wait_until("3 copies again", Duration::from_secs(10), || async {
        hubs.iter().all(|h| copies(h, 3))
    })
    .await;
    // Every hub plans a promotion from the same view: the old owners of the children
    // that moved to the joiner see the standbys the joiner named.
    wait_until(
        "every hub sees the same copies",
        Duration::from_secs(10),
        || async { views_agree(&hubs, &ids) },
    )
    .await;
    for h in &hubs {
        h.shutdown().await.unwrap();
    }
}

/// A counter with a copy on every member, shipped after each reply.
#[distributed(replicas = "all", sync = "async")]
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct Everywhere {
    n: u64,
}

#[distributed]
impl Everywhere {
    /// Adds and returns the new value.
    pub fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_all_follow_joins_and_leaves() {
    let mut hubs = cluster("everywhere", 2).await;
    let ids: Vec<String> = (0..30).map(|i| format!("ev-{i}")).collect();
    for id in &ids {
        Everywhere::start(&hubs[0], id.clone(), Everywhere::default())
            .await
            .unwrap();
        Everywhere::handle(&hubs[1], id.clone())
            .add(1)
            .await
            .unwrap();
    }
    let on_all = |hubs: &[Hub]| {
        let n = hubs.len();
        ids.iter().all(|id| {
            hubs.iter().all(|h| {
                h.lookup(id).is_some_and(|i| {
                    i.standbys.len() == n - 1
                        && hubs
                            .iter()
                            .all(|m| m.node_id() == i.owner || i.standbys.contains(&m.node_id()))
                })
            })
        })
    };
    wait_until("a copy on both", Duration::from_secs(10), || async {
        on_all(&hubs)
    })
    .await;
    hubs.push(hub("everywhere", &[hubs[0].listen_addr()]).await);
    wait_members(&hubs, 3).await;
    wait_until("a copy on all three", Duration::from_secs(10), || async {
        on_all(&hubs)
    })
    .await;
    let leaver = hubs.remove(0);
    leaver.shutdown().await.unwrap();
    wait_members(&hubs, 2).await;
    wait_until(
        "a copy on the two left",
        Duration::from_secs(10),
        || async { on_all(&hubs) },
    )
    .await;
    for id in &ids {
        assert_eq!(
            Everywhere::handle(&hubs[1], id.clone())
                .add(1)
                .await
                .unwrap(),
            2,
            "{id}"
        );
    }
    for h in &hubs {
        h.shutdown().await.unwrap();
    }
}

/// Kept on three nodes; a node holding a copy answers reads itself.
#[distributed(replicas = 3, reads = "any")]
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct Gauge {
    n: u64,
}

#[distributed]
impl Gauge {
    /// Sets the value, slowly.
    pub async fn set_slowly(&mut self, n: u64, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.n = n;
        self.n
    }

    /// The value.
    pub fn get(&self) -> u64 {
        self.n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_any_are_served_by_a_standby_copy_possibly_stale() {
    let hubs = cluster("gauge", 3).await;
    let g = Gauge::start(&hubs[0], "g", Gauge::default()).await.unwrap();
    assert_eq!(g.set_slowly(1, 0).await.unwrap(), 1);
    wait_until("two standbys", Duration::from_secs(10), || async {
        hubs[0].lookup("g").is_some_and(|i| i.standbys.len() == 2)
    })
    .await;
    let info = hubs[0].lookup("g").unwrap();
    let standby = hubs
        .iter()
        .find(|h| h.node_id() == info.standbys[0])
        .unwrap()
        .clone();
    // A sync write is on the standbys once acknowledged: the copy reads it.
    assert_eq!(Gauge::handle(&standby, "g").get().await.unwrap(), 1);
    // While the primary is busy with a slow write, the standby answers at once, with
    // the value before it.
    let writer = {
        let g = g.clone();
        tokio::spawn(async move { g.set_slowly(2, 1_000).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    assert_eq!(
        Gauge::handle(&standby, "g").get().await.unwrap(),
        1,
        "stale, as documented"
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "served locally"
    );
    assert_eq!(writer.await.unwrap().unwrap(), 2);
    assert_eq!(Gauge::handle(&standby, "g").get().await.unwrap(), 2);
    for h in &hubs {
        h.shutdown().await.unwrap();
    }
}

/// Three replicas that each answer on their own.
#[distributed(replicas = 3, replication = "active_active")]
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct Local {
    n: u64,
}

#[distributed]
impl Local {
    /// Adds and returns the new value.
    pub fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_active_replicas_answer_where_they_run() {
    let hubs = cluster("active", 3).await;
    Local::start(&hubs[0], "a", Local::default()).await.unwrap();
    wait_until(
        "a replica on every node",
        Duration::from_secs(10),
        || async {
            hubs.iter().all(|h| h.local_children() == 1)
                && hubs[0].lookup("a").is_some_and(|i| i.standbys.len() == 2)
        },
    )
    .await;
    // Each node's calls go to its own replica: the copies diverge, as documented.
    for h in &hubs {
        assert_eq!(Local::handle(h, "a").add(1).await.unwrap(), 1);
    }
    for h in &hubs {
        assert_eq!(Local::handle(h, "a").add(1).await.unwrap(), 2);
    }
    // The primary's node leaves: its instance stops, and a replica takes over as it is.
    for h in &hubs[1..] {
        Local::handle(h, "a").add(10).await.unwrap();
    }
    let first = hubs[0].node_id();
    let mut hubs = hubs;
    let primary = hubs[0].lookup("a").unwrap().owner;
    let leaver = hubs.remove(hubs.iter().position(|h| h.node_id() == primary).unwrap());
    leaver.shutdown().await.unwrap();
    wait_members(&hubs, 2).await;
    wait_until(
        "a new primary with its replica",
        Duration::from_secs(10),
        || async {
            hubs[0]
                .lookup("a")
                .is_some_and(|i| i.owner != primary && i.standbys.len() == 1)
                && hubs.iter().all(|h| h.local_children() == 1)
        },
    )
    .await;
    // Each survivor keeps its own copy (2 on the first hub, 12 on the others): none is
    // overwritten by the leaver's.
    for h in &hubs {
        let own = if h.node_id() == first { 2 } else { 12 };
        assert_eq!(Local::handle(h, "a").add(0).await.unwrap(), own);
    }
    // A stop reaches every replica.
    Local::stop(&hubs[1], "a").await.unwrap();
    wait_until("every replica stopped", Duration::from_secs(10), || async {
        hubs.iter()
            .all(|h| h.local_children() == 0 && h.lookup("a").is_none())
    })
    .await;
    for h in &hubs {
        h.shutdown().await.unwrap();
    }
}

/// A generic component: each instance is a component type of its own.
#[distributed(instances(Stack<u64>, Stack<String>))]
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct Stack<T> {
    items: Vec<T>,
}

#[distributed]
impl<T> Stack<T>
where
    T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Pushes and returns the depth.
    pub fn push(&mut self, item: T) -> usize {
        self.items.push(item);
        self.items.len()
    }

    /// The top item.
    pub fn top(&self) -> Option<T> {
        self.items.last().cloned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_components_run_each_instance_by_its_own_name() {
    let hubs = cluster("generic", 2).await;
    let ids: Vec<String> = (0..20).map(|i| format!("stack-{i}")).collect();
    for id in &ids {
        Stack::<u64>::start(&hubs[0], format!("{id}-n"), Stack::default())
            .await
            .unwrap();
        Stack::<String>::start(&hubs[0], format!("{id}-s"), Stack::default())
            .await
            .unwrap();
    }
    // Called from the other hub (remote calls for about half): each instance decodes its
    // own arguments.
    for id in &ids {
        let n = Stack::<u64>::handle(&hubs[1], format!("{id}-n"));
        assert_eq!(n.push(7).await.unwrap(), 1);
        assert_eq!(n.top().await.unwrap(), Some(7));
        let s = Stack::<String>::handle(&hubs[1], format!("{id}-s"));
        assert_eq!(s.push("seven".into()).await.unwrap(), 1);
        assert_eq!(s.top().await.unwrap(), Some("seven".to_string()));
    }
    let types: std::collections::HashSet<String> = hubs[1]
        .children()
        .iter()
        .map(|c| c.type_name.to_string())
        .collect();
    assert!(
        types.contains("cluster::Stack<u64>") && types.contains("cluster::Stack<String>"),
        "{types:?}"
    );
    // The wrong instance for an id is a clear error, not a misread state.
    let wrong = Stack::<String>::handle(&hubs[1], "stack-0-n")
        .top()
        .await
        .unwrap_err();
    assert!(matches!(wrong, CallError::WrongType { .. }), "{wrong}");
    for h in &hubs {
        h.shutdown().await.unwrap();
    }
}

/// A seed that does not answer (nothing listens there, or its name does not resolve)
/// is an error, not a cluster of one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_whose_seeds_do_not_answer_fails_with_no_seed_reachable() {
    // A port nothing listens on: bound, then let go.
    let free = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for seed in [free.to_string(), "no-such-host.invalid:7000".to_string()] {
        let started = std::time::Instant::now();
        let err = Hub::builder("no-seed")
            .listen("127.0.0.1:0")
            .seeds([seed.clone()])
            .join_timeout(Duration::from_millis(600))
            .start()
            .await
            .expect_err("no seed answers");
        match &err {
            HubError::NoSeedReachable { seeds, waited } => {
                assert_eq!(seeds, &vec![seed.clone()]);
                assert_eq!(*waited, Duration::from_millis(600));
            }
            other => panic!("{seed}: {other:?}"),
        }
        assert!(err.to_string().contains("no seed answered"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10), "{seed}");
    }
}

/// A hub that joins knows the cluster's children when `start` returns: its registry
/// came with the join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_that_joins_knows_every_child_when_its_start_returns() {
    let first = hub("joins-knowing", &[]).await;
    let items: Vec<(String, Tally)> = (0..300)
        .map(|i| (format!("known-{i}"), Tally::default()))
        .collect();
    for r in Tally::start_many(&first, items).await {
        r.unwrap();
    }
    let second = hub("joins-knowing", &[first.listen_addr()]).await;
    assert_eq!(second.children().len(), 300, "at once, no waiting");
    let third = hub("joins-knowing", &[first.listen_addr()]).await;
    assert_eq!(third.children().len(), 300);
    assert!(third.nodes().len() >= 2);
    for h in [&third, &second, &first] {
        h.shutdown().await.unwrap();
    }
}

/// A component that reads its own instance: its epoch is a fencing token.
#[distributed]
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Fenced {
    writes: u64,
}

#[distributed]
impl Fenced {
    /// A write: its fencing token, and the node that ran it.
    pub fn write(&mut self) -> (u64, NodeId) {
        self.writes += 1;
        let me = processhub::current_instance().expect("inside a method");
        (me.epoch, me.node)
    }

    /// The same, from an async read.
    pub async fn token(&self) -> u64 {
        tokio::task::yield_now().await;
        processhub::current_instance().map_or(0, |i| i.epoch)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_reads_its_epoch_as_a_fencing_token_that_grows_when_it_moves() {
    let hubs = cluster("fenced", 2).await;
    assert!(processhub::current_instance().is_none());
    let id = "fenced-0".to_string();
    Fenced::start(&hubs[0], id.clone(), Fenced::default())
        .await
        .unwrap();
    let owner = hubs.iter().position(|h| h.local_children() == 1).unwrap();
    let (epoch, node) = Fenced::handle(&hubs[1 - owner], id.clone())
        .write()
        .await
        .unwrap();
    assert_eq!((epoch, node), (1, hubs[owner].node_id()));
    assert_eq!(
        Fenced::handle(&hubs[owner], id.clone())
            .token()
            .await
            .unwrap(),
        1
    );
    // Drained away, it runs elsewhere under a higher epoch.
    let report = hubs[owner].drain().await.unwrap();
    assert_eq!(report.moved, 1);
    let (epoch, node) = Fenced::handle(&hubs[owner], id.clone())
        .write()
        .await
        .unwrap();
    assert_eq!(node, hubs[1 - owner].node_id());
    assert!(epoch > 1, "{epoch}");
    assert_eq!(
        Fenced::handle(&hubs[1 - owner], id.clone())
            .token()
            .await
            .unwrap(),
        epoch
    );
    for h in &hubs {
        h.shutdown().await.unwrap();
    }
}

/// Whether `events` report a peer that failed authentication within 5 s.
async fn unauthenticated_reported(events: &mut tokio::sync::broadcast::Receiver<HubEvent>) -> bool {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(HubEvent::Unauthenticated { .. }) = events.recv().await {
                return;
            }
        }
    })
    .await
    .is_ok()
}

/// A hub with the right hub id and seeds but a wrong key, or none, never gets in: its
/// start fails and says the key was refused, the members report it
/// (`HubEvent::Unauthenticated`), and what runs in the cluster is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_without_the_cluster_key_never_gets_in() {
    let hubs = cluster("keyed", 3).await;
    let mut events = hubs[0].events();
    Tally::start(&hubs[0], "keyed-1", Tally::default())
        .await
        .unwrap();
    let seed = hubs[0].listen_addr().to_string();
    for key in [Some("a-key-of-another-cluster"), None] {
        let mut b = Hub::builder("keyed")
            .listen("127.0.0.1:0")
            .seeds([seed.clone()])
            .join_timeout(Duration::from_millis(1500));
        if let Some(key) = key {
            b = b.cluster_key(key);
        }
        // Meanwhile the members never count it in (its gossip is dropped).
        let watching = hubs.clone();
        let watch = tokio::spawn(async move {
            let mut most = 0;
            for _ in 0..100 {
                for h in &watching {
                    most = most.max(h.nodes().len());
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            most
        });
        let refused = b.start().await;
        assert!(
            matches!(refused, Err(HubError::ClusterKeyRefused { .. })),
            "{key:?}: {refused:?}"
        );
        assert_eq!(
            watch.await.unwrap(),
            3,
            "{key:?}: the stranger was never a member"
        );
    }
    assert!(
        unauthenticated_reported(&mut events).await,
        "the refused handshakes were reported"
    );
    for h in &hubs {
        assert_eq!(
            Tally::handle(h, "keyed-1").add(1).await.ok().map(|_| ()),
            Some(()),
            "the cluster still serves"
        );
    }
    for h in hubs {
        h.shutdown().await.unwrap();
    }
}

/// A key rotation: a hub that proves with the new key and accepts the old one and a
/// hub that proves with the old key and accepts the new one form one cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubs_mid_rotation_accept_each_others_keys() {
    let (old, new) = ("the-old-cluster-key-0123", "the-new-cluster-key-0123");
    let a = Hub::builder("rotating")
        .cluster_key(old)
        .accept_cluster_key(new)
        .start()
        .await
        .unwrap();
    let b = Hub::builder("rotating")
        .cluster_key(new)
        .accept_cluster_key(old)
        .seeds([a.listen_addr().to_string()])
        .start()
        .await
        .unwrap();
    wait_members(&[a.clone(), b.clone()], 2).await;
    Tally::start(&a, "rotating-1", Tally::default())
        .await
        .unwrap();
    assert_eq!(Tally::handle(&b, "rotating-1").add(2).await.unwrap(), 2);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Never open by accident: no key on an address other machines can reach is refused
/// (checked before anything is bound), and so is a key too short to be one; an id
/// longer than `MAX_ID_LEN` is refused with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_and_long_ids_are_refused_clearly() {
    if std::env::var_os(processhub::CLUSTER_KEY_ENV).is_none() {
        let open = Hub::builder("open").listen("0.0.0.0:0").start().await;
        assert!(
            matches!(open, Err(HubError::NoClusterKey { .. })),
            "{open:?}"
        );
    }
    let weak = Hub::builder("weak").cluster_key("short").start().await;
    assert!(
        matches!(weak, Err(HubError::WeakClusterKey { len: 5, .. })),
        "{weak:?}"
    );
    let h = hub("long-ids", &[]).await;
    let id = "x".repeat(processhub::MAX_ID_LEN + 1);
    let r = Tally::start(&h, id, Tally::default()).await;
    assert!(
        matches!(r, Err(StartError::IdTooLong { len, max }) if len == max + 1),
        "{:?}",
        r.map(|_| ())
    );
    let id = "y".repeat(processhub::MAX_ID_LEN);
    Tally::start(&h, id, Tally::default()).await.unwrap();
    h.shutdown().await.unwrap();
}

/// Mutual TLS: three hubs with certificates of one authority form a cluster and serve
/// across nodes; a client that speaks plain TCP is closed on and reported; a hub with
/// the cluster key but a certificate of another authority does not start
/// (`HubError::TlsRefused`), and the cluster serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_under_mutual_tls_serves_and_refuses_untrusted_certificates() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = common::Pki::new();
    let tls_hub = |seeds: Vec<String>, tls: processhub::Tls| {
        Hub::builder("tls")
            .cluster_key(common::KEY)
            .listen("127.0.0.1:0")
            .seeds(seeds)
            .join_timeout(Duration::from_millis(1500))
            .tls(tls)
            .start()
    };
    let first = tls_hub(vec![], pki.tls()).await.unwrap();
    let seed = first.listen_addr().to_string();
    let mut hubs = vec![first];
    for _ in 0..2 {
        hubs.push(tls_hub(vec![seed.clone()], pki.tls()).await.unwrap());
    }
    wait_members(&hubs, 3).await;
    let mut events = hubs[0].events();
    let ids: Vec<String> = (0..30).map(|i| format!("tls-{i}")).collect();
    for id in &ids {
        Tally::start(&hubs[0], id, Tally::default()).await.unwrap();
    }
    for (k, id) in ids.iter().enumerate() {
        let h = &hubs[k % 3];
        assert_eq!(Tally::handle(h, id).add(2).await.unwrap(), 2, "{id}");
    }
    let spread: std::collections::BTreeSet<NodeId> = ids
        .iter()
        .filter_map(|id| hubs[0].lookup(id).map(|c| c.owner))
        .collect();
    assert_eq!(spread.len(), 3, "the children run on every node");

    // Plain TCP, even a well-formed length prefix: closed on, reported.
    let mut raw = tokio::net::TcpStream::connect(hubs[0].listen_addr())
        .await
        .unwrap();
    raw.write_all(&[0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8])
        .await
        .unwrap();
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(6), raw.read_to_end(&mut got)).await;
    assert!(closed.is_ok(), "a plain TCP client is closed on");
    assert!(
        unauthenticated_reported(&mut events).await,
        "the failed TLS handshake was reported"
    );

    // The right key, a certificate of another authority.
    let stranger = common::Pki::new();
    let refused = tls_hub(vec![seed.clone()], stranger.tls()).await;
    assert!(
        matches!(refused, Err(HubError::TlsRefused { .. })),
        "{refused:?}"
    );
    for (k, id) in ids.iter().enumerate() {
        let h = &hubs[(k + 1) % 3];
        assert_eq!(
            Tally::handle(h, id).add(1).await.unwrap(),
            3,
            "{id}: the cluster serves on"
        );
    }
    for h in hubs {
        h.shutdown().await.unwrap();
    }
}

/// TLS material that cannot work is refused when the [`processhub::Tls`] is made.
#[test]
fn bad_tls_material_is_refused_clearly() {
    use processhub::{Tls, TlsError};
    let pki = common::Pki::new();
    let other = common::Pki::new();
    let e = Tls::from_pem("not pem", &pki.key, &pki.ca).unwrap_err();
    assert!(matches!(e, TlsError::Certificate { .. }), "{e}");
    let e = Tls::from_pem(&pki.cert, "no key here", &pki.ca).unwrap_err();
    assert!(matches!(e, TlsError::Key(_)), "{e}");
    let e = Tls::from_pem(&pki.cert, &pki.key, "").unwrap_err();
    assert!(matches!(e, TlsError::Certificate { .. }), "{e}");
    let e = Tls::from_pem(&pki.cert, &other.key, &pki.ca).unwrap_err();
    assert!(
        matches!(e, TlsError::Config(_)),
        "a key of another certificate: {e}"
    );
    let e = Tls::from_files("/nonexistent/cert.pem", "k", "r").unwrap_err();
    assert!(matches!(e, TlsError::Read { .. }), "{e}");
    let e = pki.tls().server_name("not a name!").unwrap_err();
    assert!(matches!(e, TlsError::BadName(_)), "{e}");
    assert!(pki.tls().server_name("processhub.test").is_ok());
}

/// A journal kept on three nodes whose writes ship as calls (`ship = "calls"`),
/// replayed where a copy is used. `here` counts the writes this instance applied
/// itself, and is not part of the state: after a promotion it counts the writes the
/// copy replayed.
#[distributed(replicas = 3, ship = "calls", reads = "any")]
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct Journal {
    lines: Vec<String>,
    #[serde(skip)]
    here: u64,
}

#[distributed]
impl Journal {
    /// Appends a line and returns how many there are.
    pub fn append(&mut self, line: String) -> usize {
        self.here += 1;
        self.lines.push(line);
        self.lines.len()
    }

    /// Every line.
    pub fn lines(&self) -> Vec<String> {
        self.lines.clone()
    }

    /// How many lines; and how many writes this instance applied (or replayed).
    pub fn counts(&self) -> (usize, u64) {
        (self.lines.len(), self.here)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_shipped_as_calls_are_replayed_by_the_copy_promoted_when_the_primary_dies() {
    let mut hubs = cluster("journal", 3).await;
    // A large state (about 100 KB): the calls fit beside it many times.
    let first: Vec<String> = (0..1000).map(|i| format!("{i:0100}")).collect();
    let j = Journal::start(
        &hubs[0],
        "j",
        Journal {
            lines: first.clone(),
            here: 0,
        },
    )
    .await
    .unwrap();
    wait_until("two standbys", Duration::from_secs(10), || async {
        hubs[0].lookup("j").is_some_and(|i| i.standbys.len() == 2)
    })
    .await;
    let info = hubs[0].lookup("j").unwrap();
    let mut expected = first;
    for i in 0..50 {
        let line = format!("write {i}");
        expected.push(line.clone());
        // Half from the primary's own node (a local write), half from another.
        let from = if i % 2 == 0 {
            info.owner
        } else {
            info.standbys[0]
        };
        let hub = hubs.iter().find(|h| h.node_id() == from).unwrap();
        let n = Journal::handle(hub, "j").append(line).await.unwrap();
        assert_eq!(n, expected.len());
    }
    // A copy answers reads with every acknowledged write: its state with the calls
    // replayed on it.
    let standby = hubs
        .iter()
        .find(|h| h.node_id() == info.standbys[1])
        .unwrap();
    assert_eq!(
        Journal::handle(standby, "j").counts().await.unwrap(),
        (1050, 50)
    );
    // The primary dies: a standby is promoted with its state and the writes it holds as
    // calls, replayed before it serves.
    let survivor = kill_primary(&mut hubs, "j").await;
    let j2 = Journal::handle(&survivor, "j");
    assert_eq!(j2.lines().await.unwrap(), expected, "no write lost");
    assert_eq!(
        j2.counts().await.unwrap(),
        (1050, 50),
        "the promoted copy replayed the 50 writes it held as calls"
    );
    assert_eq!(j2.append("after".into()).await.unwrap(), 1051);
    drop(j);
    for h in &hubs {
        h.shutdown().await.unwrap();
    }
}

/// As [`Journal`], shipped after the reply (`sync = "async"`).
#[distributed(replicas = 2, ship = "calls", sync = "async", reads = "any")]
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct LooseJournal {
    lines: Vec<u32>,
}

#[distributed]
impl LooseJournal {
    /// Appends a number and returns how many there are.
    pub fn append(&mut self, n: u32) -> usize {
        self.lines.push(n);
        self.lines.len()
    }

    /// Every number.
    pub fn lines(&self) -> Vec<u32> {
        self.lines.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_shipped_as_calls_after_the_reply_reach_the_copy_in_order() {
    let hubs = cluster("loose", 2).await;
    let j = LooseJournal::start(&hubs[0], "l", LooseJournal::default())
        .await
        .unwrap();
    wait_until("a standby", Duration::from_secs(10), || async {
        hubs[0].lookup("l").is_some_and(|i| i.standbys.len() == 1)
    })
    .await;
    let standby = hubs
        .iter()
        .find(|h| h.node_id() == hubs[0].lookup("l").unwrap().standbys[0])
        .unwrap()
        .clone();
    // Many writes at once from both nodes: their shipments may cross; a copy that
    // misses one gets the state, and ends with every write in the primary's order.
    let writes = (0..200u32).map(|i| {
        let h = LooseJournal::handle(&hubs[(i % 2) as usize], "l");
        async move { h.append(i).await.unwrap() }
    });
    let mut counts = futures::future::join_all(writes).await;
    counts.sort_unstable();
    assert_eq!(counts, (1..=200).collect::<Vec<_>>());
    let on_primary = j.lines().await.unwrap();
    wait_until(
        "the copy holds every write",
        Duration::from_secs(10),
        || async {
            LooseJournal::handle(&standby, "l").lines().await.ok() == Some(on_primary.clone())
        },
    )
    .await;
    for h in &hubs {
        h.shutdown().await.unwrap();
    }
}

/// A counter kept on two nodes whose state ships after the reply (`sync = "async"`),
/// read on either.
#[distributed(replicas = 2, sync = "async", reads = "any")]
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct Lagging {
    n: u64,
}

#[distributed]
impl Lagging {
    /// Adds one and returns the new value.
    pub fn bump(&mut self) -> u64 {
        self.n += 1;
        self.n
    }

    /// The value.
    pub fn value(&self) -> u64 {
        self.n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynchronous_writes_of_a_window_ship_together_after_it() {
    const WINDOW: Duration = Duration::from_secs(3);
    let hubs = common::cluster_with("window", 2, |b| b.async_ship_window(WINDOW)).await;
    Lagging::start(&hubs[0], "t", Lagging::default())
        .await
        .unwrap();
    wait_until("a standby", Duration::from_secs(10), || async {
        hubs[0].lookup("t").is_some_and(|i| i.standbys.len() == 1)
    })
    .await;
    let info = hubs[0].lookup("t").unwrap();
    let on = |node| hubs.iter().find(|h| h.node_id() == node).unwrap().clone();
    let (primary, standby) = (on(info.owner), on(info.standbys[0]));
    let started = std::time::Instant::now();
    for i in 1..=50 {
        assert_eq!(Lagging::handle(&primary, "t").bump().await.unwrap(), i);
    }
    let stale = Lagging::handle(&standby, "t").value().await.unwrap();
    // Within the window none of its writes has shipped yet (50 local writes and a
    // local read take milliseconds; the check means something only if they did).
    if started.elapsed() < WINDOW / 2 {
        assert_eq!(
            stale, 0,
            "the standby copy got a write before the window ended"
        );
    }
    // After it, one shipment brings the copy every write of the window.
    wait_until(
        "the copy holds every write",
        Duration::from_secs(20),
        || async { Lagging::handle(&standby, "t").value().await.ok() == Some(50) },
    )
    .await;
    assert!(
        started.elapsed() >= WINDOW,
        "the copy took the writes before the window ended"
    );
    for h in &hubs {
        h.shutdown().await.unwrap();
    }
}

/// A replicated component whose state can be larger than a frame.
#[distributed(replicas = 3)]
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct BigKept {
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
    writes: u64,
}

#[distributed]
impl BigKept {
    /// Makes the state `len` bytes made from `seed`; how many writes it took so far.
    pub fn grow(&mut self, len: usize, seed: u8) -> u64 {
        self.data = (0..len).map(|i| (i as u8).wrapping_mul(seed)).collect();
        self.writes += 1;
        self.writes
    }

    /// Length and checksum of the state, and the writes it took.
    pub fn digest(&self) -> (usize, u64, u64) {
        (self.data.len(), common::checksum(&self.data), self.writes)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_state_larger_than_a_frame_reaches_its_standbys_in_parts() {
    let mut hubs = common::cluster_with("big-kept", 3, |b| b.max_frame_size(64 * 1024)).await;
    BigKept::start(&hubs[0], "big", BigKept::default())
        .await
        .unwrap();
    wait_until("two standbys", Duration::from_secs(10), || async {
        hubs[0].lookup("big").is_some_and(|i| i.standbys.len() == 2)
    })
    .await;
    // Writes that make the state three and five times a frame: each is acknowledged
    // once both standbys hold it (it ships whole, in parts).
    let big = BigKept::handle(&hubs[1], "big");
    assert_eq!(big.grow(200 * 1024, 7).await.unwrap(), 1);
    assert_eq!(big.grow(320 * 1024, 9).await.unwrap(), 2);
    let before = big.digest().await.unwrap();
    assert_eq!((before.0, before.2), (320 * 1024, 2));
    // The primary dies: a standby is promoted with the whole state.
    let survivor = kill_primary(&mut hubs, "big").await;
    let promoted = BigKept::handle(&survivor, "big");
    assert_eq!(promoted.digest().await.unwrap(), before, "no write lost");
    assert_eq!(promoted.grow(100 * 1024, 3).await.unwrap(), 3);
    for h in &hubs {
        h.shutdown().await.unwrap();
    }
}

/// Kills the node running `id`'s primary (one of three) and waits until one of the two
/// others has promoted a standby: a survivor.
async fn kill_primary(hubs: &mut Vec<Hub>, id: &str) -> Hub {
    let owner = hubs[0].lookup(id).unwrap().owner;
    let dead = hubs.iter().position(|h| h.node_id() == owner).unwrap();
    hubs.remove(dead).kill().await;
    wait_members(hubs, 2).await;
    let survivor = hubs[0].clone();
    wait_until("a promoted primary", Duration::from_secs(10), || async {
        survivor
            .lookup(id)
            .is_some_and(|i| i.owner != owner && !i.pending)
    })
    .await;
    survivor
}
