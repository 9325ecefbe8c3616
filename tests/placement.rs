//! Distribution strategies in an in-process cluster: where each places a child, and
//! what each does when a node joins, leaves gracefully, or dies (`Hub::kill`).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{cluster, hub, wait_members, wait_until};
use processhub::placement::{Distribution, PlacementInput, Strategy};
use processhub::prelude::*;
use processhub::{MembershipChange, NodeId, StartError, StartOptions};

/// A counter placed by the strategy named in `$opts`.
macro_rules! counter {
    ($name:ident, $($opts:tt)*) => {
        #[doc = concat!("A counter placed by `", stringify!($($opts)*), "`.")]
        #[distributed($($opts)*)]
        #[derive(Default, Debug, Serialize, Deserialize)]
        pub struct $name {
            n: u64,
        }

        #[distributed]
        impl $name {
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
    };
}

counter!(Guided, distribution = "guided");
counter!(Local, distribution = "local");
counter!(NotLocal, distribution = "not_local");
counter!(RoundRobin, distribution = "round_robin");
counter!(EveryNode, distribution = "every_node");
counter!(Bounded, distribution = "bounded_load");
counter!(Hashed, distribution = "consistent_hash");
counter!(EuFirst, custom = LowestForEu);

/// Ids starting with "eu-" on the lowest member, the others on their ring owner.
#[derive(Default)]
pub struct LowestForEu;

impl Strategy for LowestForEu {
    fn place(&self, input: &PlacementInput<'_>) -> Option<NodeId> {
        if input.id.starts_with("eu-") {
            input.members.first().copied()
        } else {
            input.current.or_else(|| input.ring_owner())
        }
    }
}

fn owner(hub: &Hub, id: &str) -> Option<NodeId> {
    hub.lookup(id).filter(|i| !i.pending).map(|i| i.owner)
}

/// Waits until every hub sees `id` on `node` (confirmed).
async fn wait_owner(hubs: &[Hub], id: &str, node: NodeId) {
    wait_until(
        &format!("{id} on {node} everywhere"),
        Duration::from_secs(15),
        || async { hubs.iter().all(|h| owner(h, id) == Some(node)) },
    )
    .await;
}

/// Children of a consistent-hash control set moved to `joiner`: the plan after the join
/// has run (so that what did not move was meant to stay).
async fn wait_control_moved(hubs: &[Hub], ids: &[String], joiner: NodeId) {
    wait_until(
        "control children moved to the joiner",
        Duration::from_secs(15),
        || async {
            ids.iter()
                .filter(|id| hubs.iter().all(|h| owner(h, id) == Some(joiner)))
                .count()
                > 0
        },
    )
    .await;
}

async fn start_control(hub: &Hub, prefix: &str) -> Vec<String> {
    let ids: Vec<String> = (0..40).map(|i| format!("{prefix}-{i}")).collect();
    for r in Hashed::start_many(
        hub,
        ids.iter().map(|i| (i.clone(), Hashed::default())).collect(),
    )
    .await
    {
        r.unwrap();
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guided_children_start_where_named_and_stay_until_their_node_goes() {
    let mut hubs = cluster("guided", 3).await;
    let control = start_control(&hubs[0], "g-control").await;
    let target = hubs[2].node_id();
    let g = Guided::start_on(&hubs[0], "g-1", Guided::default(), target)
        .await
        .unwrap();
    wait_owner(&hubs, "g-1", target).await;
    assert_eq!(g.add(5).await.unwrap(), 5);
    let info = hubs[1].explain("g-1").unwrap();
    assert_eq!(info.distribution, Distribution::Guided);
    assert!(
        info.pinned && info.reason.contains("named at start"),
        "{info:?}"
    );
    // Clear errors: no node, a node that is no member, a node for another strategy.
    let none = Guided::start(&hubs[0], "g-2", Guided::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&none, StartError::Placement { reason, .. } if reason.contains("start_on")),
        "{none}"
    );
    let stranger = NodeId::new("127.0.0.1:9".parse().unwrap(), 1);
    let dead = Guided::start_on(&hubs[0], "g-2", Guided::default(), stranger)
        .await
        .unwrap_err();
    assert!(
        matches!(&dead, StartError::Placement { reason, .. } if reason.contains("not a live member")),
        "{dead}"
    );
    let other = Hashed::start_with(
        &hubs[0],
        "h-1",
        Hashed::default(),
        StartOptions::new().node(target),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&other, StartError::Placement { reason, .. } if reason.contains("guided")),
        "{other}"
    );
    // A join moves hashed children, not the guided one.
    hubs.push(hub("guided", &[hubs[0].listen_addr()]).await);
    wait_members(&hubs, 4).await;
    wait_control_moved(&hubs, &control, hubs[3].node_id()).await;
    assert_eq!(owner(&hubs[0], "g-1"), Some(target));
    assert_eq!(hubs[0].lookup("g-1").unwrap().epoch, info.epoch);
    // Its node leaves gracefully: it moves to its ring owner, with its state.
    let leaver = hubs.remove(2);
    leaver.shutdown().await.unwrap();
    wait_members(&hubs, 3).await;
    let ring_owner = hubs[0].ring_owner("g-1").unwrap();
    wait_owner(&hubs, "g-1", ring_owner).await;
    assert_eq!(Guided::handle(&hubs[1], "g-1").get().await.unwrap(), 5);
    // Its node dies: restarted on its ring owner, from its start state.
    let victim = hubs[1].node_id();
    Guided::start_on(&hubs[0], "g-3", Guided::default(), victim)
        .await
        .unwrap();
    assert_eq!(Guided::handle(&hubs[0], "g-3").add(2).await.unwrap(), 2);
    let dying = hubs.remove(1);
    dying.kill().await;
    wait_members(&hubs, 2).await;
    let ring_owner = hubs[0].ring_owner("g-3").unwrap();
    wait_owner(&hubs, "g-3", ring_owner).await;
    assert_eq!(Guided::handle(&hubs[0], "g-3").get().await.unwrap(), 0);
    for h in &hubs {
        h.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_and_not_local_place_by_the_starting_node() {
    let hubs = cluster("local", 3).await;
    let me = hubs[1].node_id();
    Local::start(&hubs[1], "l-1", Local::default())
        .await
        .unwrap();
    wait_owner(&hubs, "l-1", me).await;
    let ids: Vec<String> = (0..30).map(|i| format!("nl-{i}")).collect();
    for r in NotLocal::start_many(
        &hubs[1],
        ids.iter()
            .map(|i| (i.clone(), NotLocal::default()))
            .collect(),
    )
    .await
    {
        r.unwrap();
    }
    let mut spread: HashMap<NodeId, usize> = HashMap::new();
    for id in &ids {
        wait_until("placed", Duration::from_secs(10), || async {
            owner(&hubs[1], id).is_some()
        })
        .await;
        let o = owner(&hubs[1], id).unwrap();
        assert_ne!(o, me, "{id} placed on the node that started it");
        *spread.entry(o).or_default() += 1;
    }
    // Over both other nodes, by the ids' preference order.
    assert_eq!(spread.len(), 2, "{spread:?}");
    // The starter dies: the local child restarts on its ring owner.
    let dying = &hubs[1];
    dying.kill().await;
    let rest = [hubs[0].clone(), hubs[2].clone()];
    wait_members(&rest, 2).await;
    let ring_owner = rest[0].ring_owner("l-1").unwrap();
    wait_owner(&rest, "l-1", ring_owner).await;
    for h in &rest {
        h.shutdown().await.unwrap();
    }
    // One node: not_local has nowhere else to go, and starts it there (documented).
    let alone = hub("not-local-alone", &[]).await;
    NotLocal::start(&alone, "nl-alone", NotLocal::default())
        .await
        .unwrap();
    assert_eq!(owner(&alone, "nl-alone"), Some(alone.node_id()));
    alone.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_starts_visit_the_members_in_turn_from_any_node() {
    let mut hubs = cluster("round-robin", 3).await;
    let mut members: Vec<NodeId> = hubs.iter().map(|h| h.node_id()).collect();
    members.sort();
    for i in 0..9 {
        let id = format!("rr-{i}");
        // Started from each node in turn; the next start sees this one.
        RoundRobin::start(&hubs[i % 3], id.clone(), RoundRobin::default())
            .await
            .unwrap();
        wait_owner(&hubs, &id, members[i % 3]).await;
    }
    // A join: they stay.
    let control = start_control(&hubs[0], "rr-control").await;
    hubs.push(hub("round-robin", &[hubs[0].listen_addr()]).await);
    wait_members(&hubs, 4).await;
    wait_control_moved(&hubs, &control, hubs[3].node_id()).await;
    for i in 0..9 {
        assert_eq!(owner(&hubs[0], &format!("rr-{i}")), Some(members[i % 3]));
    }
    // The next start goes to the joiner, which has none.
    RoundRobin::start(&hubs[1], "rr-9", RoundRobin::default())
        .await
        .unwrap();
    wait_owner(&hubs, "rr-9", hubs[3].node_id()).await;
    for h in &hubs {
        h.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_runs_an_instance_on_each_member_that_answers_its_own_node() {
    let mut hubs = cluster("every-node", 3).await;
    EveryNode::start(&hubs[0], "e", EveryNode::default())
        .await
        .unwrap();
    wait_until(
        "an instance on every node",
        Duration::from_secs(10),
        || async { hubs.iter().all(|h| h.local_children() == 1) },
    )
    .await;
    // Each node's handle reaches its own instance.
    for (i, h) in hubs.iter().enumerate() {
        for _ in 0..=i {
            EveryNode::handle(h, "e").add(1).await.unwrap();
        }
    }
    for (i, h) in hubs.iter().enumerate() {
        assert_eq!(EveryNode::handle(h, "e").get().await.unwrap(), i as u64 + 1);
    }
    assert_eq!(
        hubs[2].explain("e").unwrap().distribution,
        Distribution::EveryNode
    );
    // A joiner gets one.
    hubs.push(hub("every-node", &[hubs[0].listen_addr()]).await);
    wait_members(&hubs, 4).await;
    wait_until(
        "an instance on the joiner",
        Duration::from_secs(10),
        || async { hubs[3].local_children() == 1 },
    )
    .await;
    EveryNode::handle(&hubs[3], "e").add(10).await.unwrap();
    // A member that is not the primary leaves: the others keep theirs and stop naming it.
    let primary = owner(&hubs[0], "e").unwrap();
    let i = hubs.iter().position(|h| h.node_id() != primary).unwrap();
    let leaver = hubs.remove(i);
    let gone = leaver.node_id();
    leaver.shutdown().await.unwrap();
    wait_members(&hubs, 3).await;
    wait_until(
        "the leaver no longer named",
        Duration::from_secs(10),
        || async {
            hubs.iter().all(|h| {
                h.lookup("e")
                    .is_some_and(|e| e.standbys.len() == 2 && !e.standbys.contains(&gone))
            })
        },
    )
    .await;
    for h in &hubs {
        assert_eq!(h.local_children(), 1);
    }
    // The primary's node dies: another instance takes over as it is; each survivor
    // keeps its own.
    let mut counts: HashMap<NodeId, u64> = HashMap::new();
    for h in &hubs {
        counts.insert(h.node_id(), EveryNode::handle(h, "e").get().await.unwrap());
    }
    let i = hubs.iter().position(|h| h.node_id() == primary).unwrap();
    hubs.remove(i).kill().await;
    wait_members(&hubs, 2).await;

    wait_until(
        "a new primary, seen everywhere",
        Duration::from_secs(15),
        || async {
            hubs.iter()
                .all(|h| owner(h, "e").is_some_and(|o| o != primary))
        },
    )
    .await;
    for h in &hubs {
        assert_eq!(
            EveryNode::handle(h, "e").get().await.unwrap(),
            counts[&h.node_id()]
        );
    }
    // The primary leaves gracefully: its instance stops; the other takes over as it is.
    let primary = owner(&hubs[0], "e").unwrap();
    let i = hubs.iter().position(|h| h.node_id() == primary).unwrap();
    hubs.remove(i).shutdown().await.unwrap();
    wait_members(&hubs, 1).await;
    wait_until(
        "the last instance is the primary",
        Duration::from_secs(15),
        || async { owner(&hubs[0], "e") == Some(hubs[0].node_id()) },
    )
    .await;
    assert_eq!(
        EveryNode::handle(&hubs[0], "e").get().await.unwrap(),
        counts[&hubs[0].node_id()]
    );
    hubs[0].shutdown().await.unwrap();
}

fn loads(hub: &Hub, ids: &[String]) -> HashMap<NodeId, usize> {
    let mut out = HashMap::new();
    for id in ids {
        if let Some(o) = owner(hub, id) {
            *out.entry(o).or_default() += 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_load_caps_every_node_and_moves_only_the_excess() {
    let mut hubs = cluster("bounded", 3).await;
    let ids: Vec<String> = (0..300).map(|i| format!("b-{i}")).collect();
    for r in Bounded::start_many(
        &hubs[0],
        ids.iter()
            .map(|i| (i.clone(), Bounded::default()))
            .collect(),
    )
    .await
    {
        r.unwrap();
    }
    wait_until(
        "all placed, seen everywhere",
        Duration::from_secs(10),
        || async {
            hubs.iter()
                .all(|h| loads(h, &ids).values().sum::<usize>() == 300)
        },
    )
    .await;
    let before = loads(&hubs[0], &ids);
    // ceil(1.25 × 100)
    assert!(before.values().all(|l| *l <= 125), "{before:?}");
    for id in &ids {
        Bounded::handle(&hubs[1], id.clone()).add(1).await.unwrap();
    }
    // A 4th joins: the cap falls to ceil(1.25 × 75) = 94; only what is over it moves.
    let mut events = hubs[0].events();
    let plan = hubs[0].plan(MembershipChange::Join(NodeId::new(
        "127.0.0.1:1".parse().unwrap(),
        1,
    )));
    let excess: usize = before.values().map(|l| l.saturating_sub(94)).sum();
    assert_eq!(plan.len(), excess, "{plan:?}");
    hubs.push(hub("bounded", &[hubs[0].listen_addr()]).await);
    wait_members(&hubs, 4).await;
    wait_until(
        "no node over the new cap, seen everywhere",
        Duration::from_secs(15),
        || async {
            hubs.iter().all(|h| {
                let l = loads(h, &ids);
                l.values().sum::<usize>() == 300 && l.values().all(|l| *l <= 94)
            })
        },
    )
    .await;
    let mut moved = 0;
    while let Ok(e) = events.try_recv() {
        moved += usize::from(matches!(e, HubEvent::ChildMigrated { .. }));
    }
    // Moves are reported by the node they leave: this hub's share of them at most.
    assert!(
        moved <= excess,
        "{moved} moved from one node, {excess} over the cap in all"
    );
    for id in &ids {
        assert_eq!(
            Bounded::handle(&hubs[2], id.clone()).get().await.unwrap(),
            1,
            "{id}"
        );
    }
    // A node dies: its children are restarted under the cap of the three left.
    let dying = hubs.remove(1);
    dying.kill().await;
    wait_members(&hubs, 3).await;
    wait_until(
        "the dead node's children placed under the cap",
        Duration::from_secs(15),
        || async {
            hubs.iter().all(|h| {
                let l = loads(h, &ids);
                l.values().sum::<usize>() == 300 && l.values().all(|l| *l <= 125)
            })
        },
    )
    .await;
    // A node leaves gracefully: its children go under the cap of the two left
    // (ceil(1.25 × 150)), with their state.
    let leaver = hubs.remove(2);
    leaver.shutdown().await.unwrap();
    wait_members(&hubs, 2).await;
    wait_until(
        "the leaver's children placed under the cap",
        Duration::from_secs(15),
        || async {
            hubs.iter().all(|h| {
                let l = loads(h, &ids);
                l.values().sum::<usize>() == 300 && l.values().all(|l| *l <= 188)
            })
        },
    )
    .await;
    let mut kept = 0;
    for id in &ids {
        kept += Bounded::handle(&hubs[0], id.clone()).get().await.unwrap();
    }
    // Those of the dead node restarted from 0; the others kept their 1.
    assert!(kept >= 150, "{kept} of 300 kept their state");
    for h in &hubs {
        h.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_strategy_places_and_replaces_children() {
    let hubs = cluster("custom", 3).await;
    let ids: Vec<String> = (0..10)
        .flat_map(|i| [format!("eu-{i}"), format!("us-{i}")])
        .collect();
    for r in EuFirst::start_many(
        &hubs[1],
        ids.iter()
            .map(|i| (i.clone(), EuFirst::default()))
            .collect(),
    )
    .await
    {
        r.unwrap();
    }
    let mut members: Vec<NodeId> = hubs.iter().map(|h| h.node_id()).collect();
    members.sort();
    for id in &ids {
        let want = if id.starts_with("eu-") {
            members[0]
        } else {
            hubs[0].ring_owner(id).unwrap()
        };
        wait_owner(&hubs, id, want).await;
        EuFirst::handle(&hubs[2], id.clone()).add(3).await.unwrap();
    }
    assert_eq!(
        hubs[0].explain("eu-1").unwrap().distribution,
        Distribution::Custom
    );
    // The lowest member leaves: its "eu-" children go to the next lowest, with state.
    let (leaving, rest): (Vec<Hub>, Vec<Hub>) =
        hubs.into_iter().partition(|h| h.node_id() == members[0]);
    leaving[0].shutdown().await.unwrap();
    wait_members(&rest, 2).await;
    for id in ids.iter().filter(|id| id.starts_with("eu-")) {
        wait_owner(&rest, id, members[1]).await;
        assert_eq!(
            EuFirst::handle(&rest[0], id.clone()).get().await.unwrap(),
            3,
            "{id}"
        );
    }
    // A join: they go where the strategy says (the joiner if it is now the lowest).
    let mut hubs = rest;
    hubs.push(hub("custom", &[hubs[0].listen_addr()]).await);
    wait_members(&hubs, 3).await;
    let lowest = hubs.iter().map(|h| h.node_id()).min().unwrap();
    for id in ids.iter().filter(|id| id.starts_with("eu-")) {
        wait_owner(&hubs, id, lowest).await;
        assert_eq!(
            EuFirst::handle(&hubs[1], id.clone()).get().await.unwrap(),
            3,
            "{id}"
        );
    }
    // The lowest dies: restarted on the next lowest, from the start state.
    let i = hubs.iter().position(|h| h.node_id() == lowest).unwrap();
    hubs.remove(i).kill().await;
    wait_members(&hubs, 2).await;
    let lowest = hubs.iter().map(|h| h.node_id()).min().unwrap();
    for id in ids.iter().filter(|id| id.starts_with("eu-")) {
        wait_owner(&hubs, id, lowest).await;
        assert_eq!(
            EuFirst::handle(&hubs[0], id.clone()).get().await.unwrap(),
            0,
            "{id}"
        );
    }
    for h in &hubs {
        h.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_tells_the_moves_a_leave_makes_and_explain_tells_why() {
    let hubs = cluster("plan", 3).await;
    let ids = start_control(&hubs[0], "p").await;
    wait_until("placed everywhere", Duration::from_secs(10), || async {
        hubs.iter()
            .all(|h| ids.iter().all(|id| owner(h, id).is_some()))
    })
    .await;
    let e = hubs[1].explain("p-1").unwrap();
    assert_eq!(e.distribution, Distribution::ConsistentHash);
    assert_eq!(Some(e.owner), owner(&hubs[0], "p-1"));
    assert!(e.reason.contains("ring"), "{}", e.reason);
    assert!(hubs[0].explain("nobody").is_none());
    // The plan of a leave: exactly the leaver's children, each to its ring owner without
    // it; the leave then does just that.
    let leaver = hubs[2].node_id();
    let plan = hubs[0].plan(MembershipChange::Leave(leaver));
    let theirs: Vec<&String> = ids
        .iter()
        .filter(|id| owner(&hubs[0], id) == Some(leaver))
        .collect();
    assert_eq!(plan.len(), theirs.len());
    assert!(plan.iter().all(|m| m.from == leaver && m.to.is_some()));
    hubs[2].shutdown().await.unwrap();
    let rest = [hubs[0].clone(), hubs[1].clone()];
    wait_members(&rest, 2).await;
    for m in &plan {
        wait_owner(&rest, &m.id, m.to.unwrap()).await;
    }
    for h in &rest {
        h.shutdown().await.unwrap();
    }
}

/// For a strategy that places once (`local`, `not_local`, `round_robin`): its children
/// stay on a join, go to their ring owner with their state on a graceful leave of their
/// node, and are restarted on their ring owner from their start state when it dies.
macro_rules! placed_once_lifecycle {
    ($test:ident, $ty:ident, $hub_id:literal) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            let mut hubs = cluster($hub_id, 4).await;
            let ids: Vec<String> = (0..12).map(|i| format!("{}-{i}", $hub_id)).collect();
            for id in &ids {
                $ty::start(&hubs[1], id.clone(), $ty::default())
                    .await
                    .unwrap();
                wait_until("placed everywhere", Duration::from_secs(10), || async {
                    hubs.iter().all(|h| owner(h, id).is_some())
                })
                .await;
                $ty::handle(&hubs[0], id.clone()).add(1).await.unwrap();
            }
            let placed: HashMap<String, NodeId> = ids
                .iter()
                .map(|id| (id.clone(), owner(&hubs[0], id).unwrap()))
                .collect();
            // A join: they stay.
            let control = start_control(&hubs[0], concat!($hub_id, "-control")).await;
            hubs.push(hub($hub_id, &[hubs[0].listen_addr()]).await);
            wait_members(&hubs, 5).await;
            wait_control_moved(&hubs, &control, hubs[4].node_id()).await;
            for id in &ids {
                assert_eq!(
                    owner(&hubs[0], id),
                    Some(placed[id]),
                    "{id} moved on a join"
                );
            }
            // The node of the first leaves gracefully: its children go to their ring
            // owners with their state.
            let i = hubs
                .iter()
                .position(|h| h.node_id() == placed[&ids[0]])
                .unwrap();
            let leaver = hubs.remove(i);
            leaver.shutdown().await.unwrap();
            wait_members(&hubs, 4).await;
            for id in ids.iter().filter(|id| placed[*id] == leaver.node_id()) {
                let to = hubs[0].ring_owner(id).unwrap();
                wait_owner(&hubs, id, to).await;
                assert_eq!(
                    $ty::handle(&hubs[0], id.clone()).get().await.unwrap(),
                    1,
                    "{id}"
                );
            }
            // Another node holding some dies: restarted on their ring owner, from the
            // start state.
            let victim = ids
                .iter()
                .filter_map(|id| owner(&hubs[0], id))
                .find(|n| *n != hubs[0].node_id())
                .expect("a child on another node");
            let i = hubs.iter().position(|h| h.node_id() == victim).unwrap();
            let theirs: Vec<&String> = ids
                .iter()
                .filter(|id| owner(&hubs[0], id) == Some(victim))
                .collect();
            hubs.remove(i).kill().await;
            wait_members(&hubs, 3).await;
            for id in theirs {
                let to = hubs[0].ring_owner(id).unwrap();
                wait_owner(&hubs, id, to).await;
                assert_eq!(
                    $ty::handle(&hubs[0], id.clone()).get().await.unwrap(),
                    0,
                    "{id}"
                );
            }
            for h in &hubs {
                h.shutdown().await.unwrap();
            }
        }
    };
}

placed_once_lifecycle!(
    local_children_stay_on_a_join_and_follow_the_ring_when_their_node_goes,
    Local,
    "lc-local"
);
placed_once_lifecycle!(
    not_local_children_stay_on_a_join_and_follow_the_ring_when_their_node_goes,
    NotLocal,
    "lc-not-local"
);
placed_once_lifecycle!(
    round_robin_children_stay_on_a_join_and_follow_the_ring_when_their_node_goes,
    RoundRobin,
    "lc-round-robin"
);
