//! The engine's decisions, each with its exact output: one event per call, then
//! `assert_eq!(expected, engine.take_output())`.

use super::plan::Restart;
use super::replicas::CopyRefused;
use super::testing::{engine, entry, id_owned_by, moved_item, new_item, node, start, TestChild};
use super::{
    Effect, Kept, LoggedCall, Missing, Output, Route, ShipPlan, MAX_HOPS, MAX_LOGGED_BYTES,
    MAX_LOGGED_CALLS,
};
use crate::core::entry::{Flags, Role};
use crate::core::item::{StartFailure, StartOutcome, StopOutcome};
use crate::core::registry::Push;
use crate::core::ring::Ring;
use crate::core::view::Gossip;
use crate::events::{HubEvent, RestartReason};
use crate::node::NodeId;

fn out(
    pushes: Vec<Push>,
    effects: Vec<Effect<TestChild>>,
    events: Vec<HubEvent>,
) -> Output<TestChild> {
    Output {
        pushes,
        effects,
        events,
    }
}

fn upsert(id: &str, e: crate::core::entry::Entry) -> Push {
    Push::Upsert(vec![(id.to_string(), e)])
}

fn gossip(members: &[u16]) -> Gossip {
    Gossip {
        members: members.iter().map(|p| node(*p)).collect(),
        ..Gossip::default()
    }
}

// ---- starts ----

#[test]
fn a_new_start_is_admitted_then_published_once_with_its_event() {
    let mut e = engine(1, &[1]);
    let item = new_item("a", "T");
    assert_eq!(e.admit(&item), Ok(1));
    assert_eq!(
        e.take_output(),
        Output::default(),
        "admission publishes nothing"
    );
    let a1 = TestChild::new("a1", "T");
    assert_eq!(
        e.started(&item, 1, Ok(a1.clone())),
        StartOutcome::Started {
            node: node(1),
            epoch: 1
        }
    );
    assert_eq!(
        e.take_output(),
        out(
            vec![upsert("a", entry("T", node(1), 1))],
            vec![],
            vec![HubEvent::ChildStarted {
                id: "a".into(),
                type_name: "T".into(),
                node: node(1),
                epoch: 1,
            }],
        )
    );
    assert_eq!(e.route("a"), Route::Local(a1));
}

#[test]
fn a_second_start_of_an_id_is_refused_while_the_first_runs_its_hooks_and_after() {
    let mut e = engine(1, &[1, 2]);
    let item = new_item("a", "T");
    assert_eq!(e.admit(&item), Ok(1));
    // Reserved: the second start runs no hook at all.
    assert_eq!(
        e.admit(&item),
        Err(StartOutcome::AlreadyStarted { node: node(1) })
    );
    e.started(&item, 1, Ok(TestChild::new("a1", "T")));
    assert_eq!(
        e.admit(&item),
        Err(StartOutcome::AlreadyStarted { node: node(1) })
    );
    // An id another node runs: refused with that node.
    e.push(node(2), upsert("b", entry("T", node(2), 1)));
    assert_eq!(
        e.admit(&new_item("b", "T")),
        Err(StartOutcome::AlreadyStarted { node: node(2) })
    );
    e.take_output();
    assert_eq!(e.take_output(), Output::default());
}

#[test]
fn a_start_whose_hook_panicked_publishes_nothing_and_frees_its_id() {
    let mut e = engine(1, &[1]);
    let item = new_item("a", "T");
    let epoch = e.admit(&item).unwrap();
    let failed = Err(StartFailure::Hook("#[on_start] panicked: boom".into()));
    assert_eq!(
        e.started(&item, epoch, failed),
        StartOutcome::HookPanicked {
            node: node(1),
            message: "a: #[on_start] panicked: boom".into()
        }
    );
    assert_eq!(e.take_output(), Output::default());
    assert_eq!(e.route("a"), Route::LocalMissing { pending: false });
    assert_eq!(e.admit(&item), Ok(1), "it may start again");
    // A state that does not decode, and a type this binary lacks.
    assert_eq!(
        e.started(
            &item,
            1,
            Err(StartFailure::State("start state: eof".into()))
        ),
        StartOutcome::BadState {
            node: node(1),
            message: "a: start state: eof".into()
        }
    );
    e.admit(&item).unwrap();
    assert_eq!(
        e.started(&item, 1, Err(StartFailure::UnknownType)),
        StartOutcome::UnknownType { node: node(1) }
    );
}

#[test]
fn a_start_goes_to_its_ring_owner_or_its_placed_node_and_stops_bouncing() {
    let e = engine(1, &[1, 2]);
    let mine = id_owned_by(1, &[1, 2]);
    let theirs = id_owned_by(2, &[1, 2]);
    assert_eq!(e.start_target(&new_item(&mine, "T"), 0), None);
    assert_eq!(e.start_target(&new_item(&theirs, "T"), 0), Some(node(2)));
    // Forwarded often enough between nodes whose views differ: it starts here.
    assert_eq!(e.start_target(&new_item(&theirs, "T"), MAX_HOPS), None);
    // The node its strategy chose takes it, whatever the ring says.
    let placed = crate::core::item::StartItem {
        node: Some(node(1)),
        ..new_item(&theirs, "T")
    };
    assert_eq!(e.start_target(&placed, 0), None);
}

#[test]
fn a_placer_keeps_bounded_load_under_the_cap_and_leaves_the_ring_to_the_owner() {
    let e = engine(1, &[1, 2, 3]);
    let mut p = e.placer("BL", None);
    let mut per: std::collections::BTreeMap<NodeId, usize> = Default::default();
    for i in 0..30 {
        let n = p
            .place(&format!("b{i}"))
            .unwrap()
            .expect("placed by the strategy");
        *per.entry(n).or_default() += 1;
    }
    assert_eq!(per.values().sum::<usize>(), 30);
    assert!(per.values().all(|n| *n <= 13), "{per:?}");
    // Consistent hashing, or a type this binary lacks: the ring owner decides.
    assert_eq!(e.placer("T", None).place("x"), Ok(None));
    assert_eq!(e.placer("Nope", None).place("x"), Ok(None));
    // A node named for a type that is not `guided`.
    assert!(e.placer("T", Some(node(2))).place("x").is_err());
}

/// A child of node 3 restarted on node 1 from its start state, node 3 gone.
fn restarted_here(e: &mut super::Engine<TestChild>, id: &str, child: &TestChild) {
    e.push(node(3), upsert(id, entry("T", node(3), 1)));
    e.gossip(gossip(&[1, 2]));
    e.take_output();
    let r = e
        .restart(id, 2, node(3))
        .expect("a restart from the start state");
    assert!(!r.promoted);
    let epoch = e.admit(&r.item).unwrap();
    e.started(&r.item, epoch, Ok(child.clone()));
    e.restarted(
        r,
        &StartOutcome::Started {
            node: node(1),
            epoch,
        },
    );
    e.take_output();
}

#[test]
fn a_hand_over_replaces_a_restarted_copy_never_called_and_not_one_that_served() {
    let id = id_owned_by(1, &[1, 2]);
    let mut e = engine(1, &[1, 2, 3]);
    let restarted = TestChild::new("restarted", "T");
    restarted_here(&mut e, &id, &restarted);
    // The source died while its hand-over was on the way: the state arrives now.
    let handed = moved_item(&id, "T", 2);
    assert_eq!(e.admit(&handed), Ok(2));
    let arrived = TestChild::new("arrived", "T");
    e.started(&handed, 2, Ok(arrived.clone()));
    assert_eq!(
        e.take_output(),
        out(
            vec![upsert(&id, entry("T", node(1), 2))],
            vec![Effect::Stop {
                id: id.as_str().into(),
                child: restarted,
                report: false
            }],
            vec![HubEvent::ChildArrived {
                id: id.clone(),
                node: node(1),
                epoch: 2
            }],
        )
    );
    assert_eq!(e.route(&id), Route::Local(arrived));

    // A restarted copy that was called has served writes: it stays.
    let mut e = engine(1, &[1, 2, 3]);
    let served = TestChild::new("served", "T");
    restarted_here(&mut e, &id, &served);
    served.call();
    assert_eq!(
        e.admit(&handed),
        Err(StartOutcome::AlreadyStarted { node: node(1) })
    );
}

#[test]
fn a_stop_unregisters_and_publishes_and_refuses_what_it_must() {
    let mut e = engine(1, &[1, 2]);
    let a1 = TestChild::new("a1", "T");
    start(&mut e, "a", &a1);
    assert_eq!(e.stop("nope", "T"), Err(StopOutcome::NotFound));
    assert_eq!(
        e.stop("a", "Other"),
        Err(StopOutcome::WrongType { actual: "T".into() })
    );
    e.push(node(2), upsert("b", entry("T", node(2), 1)));
    assert_eq!(
        e.stop("b", "T"),
        Err(StopOutcome::NotHere { owner: node(2) })
    );
    assert_eq!(e.take_output(), Output::default());
    assert_eq!(e.stop("a", "T"), Ok(a1));
    assert_eq!(
        e.take_output(),
        out(vec![Push::Remove(vec![("a".into(), 1)])], vec![], vec![])
    );
    assert!(e.registry.get("a").is_none());
}

// ---- pushes ----

/// `a` of type `type_name` runs on `e`'s node 1, then node 2's entry for it arrives by
/// `push`: same epoch, larger node id, so node 2's copy wins everywhere.
fn lose_a(
    e: &mut super::Engine<TestChild>,
    type_name: &'static str,
    push: impl FnOnce(crate::core::entry::Entry) -> Push,
) -> TestChild {
    let a1 = TestChild::new("a1", type_name);
    start(e, "a", &a1);
    e.push(node(2), push(entry(type_name, node(2), 1)));
    a1
}

fn a_resolved() -> Vec<HubEvent> {
    vec![HubEvent::DuplicateResolved {
        id: "a".into(),
        kept: (node(2), 1),
        dropped: (node(1), 1),
    }]
}

fn stopped(child: TestChild) -> Vec<Effect<TestChild>> {
    vec![Effect::Stop {
        id: "a".into(),
        child,
        report: true,
    }]
}

#[test]
fn a_winning_entry_from_its_owner_stops_the_duplicate_here() {
    let mut e = engine(1, &[1, 2]);
    let a1 = lose_a(&mut e, "T", |en| upsert("a", en));
    assert_eq!(e.take_output(), out(vec![], stopped(a1), a_resolved()));
    assert_eq!(e.route("a"), Route::Remote(node(2)));
    assert_eq!(e.missing("a"), Missing::NotHere(node(2)));

    // The same from the snapshot of a connection that opened (after a split healed).
    let mut e = engine(1, &[1, 2]);
    let a1 = lose_a(&mut e, "T", |en| Push::Snapshot {
        entries: vec![("a".into(), en)],
        first: true,
        last: true,
    });
    assert_eq!(e.take_output(), out(vec![], stopped(a1), a_resolved()));
    assert_eq!(e.route("a"), Route::Remote(node(2)));
}

#[test]
fn under_divergence_a_losing_duplicate_of_a_merging_type_goes_to_the_winner_to_merge() {
    // The tests' engine runs `Divergence`; `M` has `#[on_conflict]`.
    let mut e = engine(1, &[1, 2]);
    let a1 = lose_a(&mut e, "M", |en| upsert("a", en));
    let merge = vec![Effect::Merge {
        id: "a".into(),
        child: a1,
        into: node(2),
    }];
    assert_eq!(e.take_output(), out(vec![], merge, a_resolved()));
    assert_eq!(e.route("a"), Route::Remote(node(2)));

    // The winner's engine ignores the loser's entry: nothing of it stops there.
    let mut w = engine(2, &[1, 2]);
    let a2 = TestChild::new("a2", "M");
    start(&mut w, "a", &a2);
    w.push(node(1), upsert("a", entry("M", node(1), 1)));
    assert_eq!(w.take_output(), Output::default());
    assert_eq!(w.route("a"), Route::Local(a2));

    // Under a quorum strategy only one side served: the duplicate just stops.
    let (mut e, _) = majority_engine(1, &[1, 2, 3]);
    let a1 = lose_a(&mut e, "M", |en| upsert("a", en));
    assert_eq!(e.take_output(), out(vec![], stopped(a1), a_resolved()));
}

#[test]
fn a_losing_entry_or_one_naming_another_owner_changes_nothing() {
    let mut e = engine(2, &[1, 2, 3]);
    let a2 = TestChild::new("a2", "T");
    start(&mut e, "a", &a2);
    e.push(node(1), upsert("a", entry("T", node(1), 1)));
    // A peer publishes only what it owns.
    e.push(node(1), upsert("a", entry("T", node(3), 9)));
    e.push(node(1), upsert("b", entry("T", node(3), 1)));
    assert_eq!(e.take_output(), Output::default());
    assert_eq!(e.registry.get("a"), Some(&entry("T", node(2), 1)));
    assert!(e.registry.get("b").is_none());
    assert_eq!(e.route("a"), Route::Local(a2));
}

#[test]
fn a_goodbye_refreshes_the_view_and_the_survivors_restart_what_is_theirs() {
    let members = [1, 2, 3];
    let mine = id_owned_by(1, &[1, 2]);
    let theirs = id_owned_by(2, &[1, 2]);
    let mut e = engine(1, &members);
    e.push(node(3), upsert(&mine, entry("T", node(3), 1)));
    e.push(node(3), upsert(&theirs, entry("T", node(3), 1)));
    e.push(node(3), Push::Leaving);
    assert_eq!(e.take_output(), out(vec![], vec![Effect::Refresh], vec![]));
    e.refresh_members();
    assert_eq!(
        e.take_output(),
        out(
            vec![],
            vec![
                Effect::Peers(vec![node(1), node(2)]),
                Effect::Restart {
                    id: mine.clone(),
                    epoch: 2,
                    from: node(3)
                },
            ],
            vec![HubEvent::NodeLeft {
                node: node(3),
                graceful: true
            }],
        )
    );
    // Both re-assigned alike on every node, pending until their new owner confirms.
    assert_eq!(
        e.registry.get(&theirs).map(|e| (e.owner, e.epoch)),
        Some((node(2), 2))
    );
    assert_eq!(e.route(&mine), Route::LocalMissing { pending: true });
    assert_eq!(e.missing(&mine), Missing::Restarting);
    assert!(e.retry_after_not_found(&theirs, node(3)));
}

#[test]
fn children_re_assigned_to_a_joiner_are_told_to_it_and_it_starts_them() {
    // Node 3 dies; node 4 joins before the survivors restarted its child, and is now
    // its ring owner: the survivors re-assign it to node 4, pending.
    let id = id_owned_by(4, &[1, 2, 4]);
    let mut e = engine(1, &[1, 2, 3]);
    e.push(node(3), upsert(&id, entry("T", node(3), 1)));
    e.gossip(gossip(&[1, 2]));
    e.take_output();
    e.gossip(gossip(&[1, 2, 4]));
    let theirs = crate::core::entry::Entry {
        owner: node(4),
        epoch: 2,
        ..entry("T", node(3), 1)
    };
    let told = vec![(id.clone(), theirs, node(3))];
    let o = e.take_output();
    assert_eq!(o.pushes, vec![Push::Assigned(told.clone())], "{o:?}");
    assert_eq!(
        e.assigned_to(node(4)),
        told,
        "and on a new connection to it"
    );
    // The joiner never saw node 3: it takes the child in and starts it.
    let mut joiner = engine(4, &[1, 2, 4]);
    joiner.push(node(1), Push::Assigned(told.clone()));
    let o = joiner.take_output();
    assert_eq!(
        o.effects,
        vec![Effect::Restart {
            id: id.clone(),
            epoch: 2,
            from: node(3)
        }]
    );
    // Told again (every survivor tells): nothing more.
    joiner.push(node(2), Push::Assigned(told.clone()));
    assert_eq!(joiner.take_output(), Output::default());
    // Not over another node's instance of that epoch (restarted there by a node whose
    // view was newer than the teller's, seed 61): nothing starts, the entry stays.
    let mut restarted = engine(4, &[1, 2, 4]);
    let elsewhere = crate::core::entry::Entry {
        owner: node(2),
        epoch: 2,
        ..entry("T", node(3), 1)
    };
    restarted.push(node(2), upsert(&id, elsewhere.clone()));
    restarted.take_output();
    restarted.push(node(1), Push::Assigned(told.clone()));
    assert_eq!(restarted.take_output(), Output::default());
    assert_eq!(restarted.registry.get(&id), Some(&elsewhere));
    // Not for another node, nor of a node it sees alive.
    let mut other = engine(2, &[1, 2, 3]);
    other.push(node(1), Push::Assigned(told.clone()));
    assert_eq!(other.take_output(), Output::default());
    assert!(other.registry.get(&id).is_none());
    // Stopped here under that epoch (before the teller heard of it): not taken in, and
    // the removal said again, so that the teller's prediction ends.
    let mut stopped = engine(4, &[1, 2, 4]);
    stopped.push(node(1), Push::Assigned(told.clone()));
    stopped.take_output();
    let r = stopped.restart(&id, 2, node(3)).expect("restarted here");
    let epoch = stopped.admit(&r.item).unwrap();
    let child = TestChild::new("c", "T");
    stopped.started(&r.item, epoch, Ok(child.clone()));
    stopped.take_output();
    assert_eq!(stopped.stop(&id, "T"), Ok(child));
    assert!(stopped.registry.get(&id).is_none());
    stopped.take_output();
    stopped.push(node(2), Push::Assigned(told));
    assert_eq!(
        stopped.take_output(),
        out(vec![Push::Remove(vec![(id.clone(), 2)])], vec![], vec![])
    );
    assert!(stopped.registry.get(&id).is_none());
}

#[test]
fn what_a_node_not_yet_counted_as_a_member_owns_is_not_restarted_here() {
    // Node 4 (re)joins knowing 2 and 4. Node 1's connection opens before gossip tells
    // node 4 of node 1: its snapshot names a child that node 4 would own were node 1
    // gone. It is not gone, only not heard of yet: nothing restarts (that restart wins
    // over the running instance by its epoch, and the instance's state is lost).
    let ring = |m: &[u16]| Ring::new(m.iter().map(|p| node(*p)));
    let id = (0..)
        .map(|i| format!("id-{i}"))
        .find(|id| {
            ring(&[1, 2, 3, 4]).owner(id) == Some(node(1))
                && ring(&[2, 3, 4]).owner(id) == Some(node(4))
                && ring(&[2, 4]).owner(id) == Some(node(4))
        })
        .unwrap();
    let mut e = engine(4, &[2, 4]);
    e.push(
        node(1),
        Push::Snapshot {
            entries: vec![(id.clone(), entry("T", node(1), 1))],
            first: true,
            last: true,
        },
    );
    e.gossip(gossip(&[2, 3, 4]));
    assert_eq!(
        e.take_output(),
        out(
            vec![],
            vec![Effect::Peers(vec![node(2), node(3), node(4)])],
            vec![HubEvent::NodeJoined { node: node(3) }],
        )
    );
    assert_eq!(
        e.registry.get(&id).map(|e| (e.owner, e.epoch)),
        Some((node(1), 1))
    );
    assert_eq!(e.registry.pending_from(&id), None);
    // Then it is a member, and once it is gone its child restarts here.
    super::testing::synced(&mut e, 3);
    e.gossip(gossip(&[1, 2, 3, 4]));
    e.take_output();
    e.gossip(gossip(&[2, 3, 4]));
    let o = e.take_output();
    assert_eq!(
        o.effects,
        vec![
            Effect::Peers(vec![node(2), node(3), node(4)]),
            Effect::Dead(vec![node(1)]),
            Effect::Restart {
                id: id.clone(),
                epoch: 2,
                from: node(1)
            },
        ],
        "{o:?}"
    );
}

#[test]
fn a_restart_that_cannot_be_carried_out_is_unregistered_and_reported() {
    let mut e = engine(1, &[1, 2]);
    let id = id_owned_by(1, &[1]);
    e.push(node(2), upsert(&id, entry("Unknown", node(2), 1)));
    e.gossip(gossip(&[1]));
    e.take_output();
    let r = e.restart(&id, 2, node(2)).unwrap();
    let outcome = StartOutcome::UnknownType { node: node(1) };
    e.restarted(r, &outcome);
    assert_eq!(
        e.take_output(),
        out(
            vec![Push::Remove(vec![(id.clone(), 2)])],
            vec![],
            vec![HubEvent::ChildLost {
                id: id.clone(),
                reason: format!("{outcome:?}"),
            }],
        )
    );
    assert!(e.registry.get(&id).is_none());
}

#[test]
fn a_restart_from_the_start_state_is_reported_as_one() {
    let id = id_owned_by(1, &[1, 2]);
    let mut e = engine(1, &[1, 2, 3]);
    e.push(node(3), upsert(&id, entry("T", node(3), 1)));
    e.gossip(gossip(&[1, 2]));
    e.take_output();
    let r = e.restart(&id, 2, node(3)).unwrap();
    assert_eq!(
        (r.item.state.clone(), r.item.start_state.clone()),
        (vec![1], None)
    );
    let epoch = e.admit(&r.item).unwrap();
    e.started(&r.item, epoch, Ok(TestChild::new("c", "T")));
    e.restarted(
        r,
        &StartOutcome::Started {
            node: node(1),
            epoch: 2,
        },
    );
    assert_eq!(
        e.take_output(),
        out(
            vec![upsert(&id, entry("T", node(1), 2))],
            vec![],
            vec![HubEvent::ChildRestarted {
                id: id.clone(),
                node: node(1),
                epoch: 2,
                reason: RestartReason::NodeDown { node: node(3) },
            }],
        )
    );
}

// ---- replication ----

fn replicated(type_name: &str, owner: NodeId, standbys: &[u16]) -> crate::core::entry::Entry {
    crate::core::entry::Entry {
        standbys: Some(standbys.iter().map(|p| node(*p)).collect()),
        ..entry(type_name, owner, 1)
    }
}

#[test]
fn the_first_live_standby_promotes_its_copy_with_the_writes_it_holds() {
    let id = "x";
    let mut e = engine(1, &[1, 2, 3]);
    e.push(node(3), upsert(id, replicated("R3", node(3), &[1, 2])));
    let kept = e.keep_copy(id, "R3", (1, 5), vec![9], (vec![(7, vec![42])], false));
    assert_eq!(kept, Ok(Kept::Copy));
    e.take_output();
    e.gossip(gossip(&[1, 2]));
    let plan = e.take_output();
    assert!(
        plan.effects.contains(&Effect::Restart {
            id: id.into(),
            epoch: 2,
            from: node(3)
        }),
        "{plan:?}"
    );
    let r: Restart = e.restart(id, 2, node(3)).unwrap();
    assert!(r.promoted);
    assert_eq!(r.item.state, vec![9]);
    assert_eq!(r.item.start_state.as_deref(), Some(&vec![1]));
    assert_eq!(r.recent.get(7), Some(&vec![42]));
    assert_eq!(e.standby_copy(id), None, "the copy is the primary now");
}

#[test]
fn a_copy_taken_by_its_promotion_is_not_made_again_by_the_replaced_primary() {
    let id = "x";
    let mut e = engine(1, &[1, 2, 3]);
    e.push(node(3), upsert(id, replicated("R3", node(3), &[1, 2])));
    e.keep_copy(id, "R3", (1, 5), vec![9], (vec![], false))
        .unwrap();
    e.take_output();
    e.gossip(gossip(&[1, 2]));
    e.take_output();
    // Re-assigned here under epoch 2: the copy is taken, the instance not started yet.
    let r: Restart = e.restart(id, 2, node(3)).unwrap();
    assert!(r.promoted);
    // The replaced primary's last shipment (a write its caller would take as held):
    // refused, not kept as a new copy beside the promoted one.
    assert_eq!(
        e.keep_copy(id, "R3", (1, 6), vec![10], (vec![(7, vec![42])], false)),
        Err(CopyRefused::Replaced {
            id: id.into(),
            known: 2,
            incoming: 1
        })
    );
    assert_eq!(e.standby_copy(id), None);
}

fn logged(method: &str, args: &[u8]) -> LoggedCall {
    LoggedCall {
        method: method.into(),
        args: args.to_vec(),
    }
}

#[test]
fn a_standby_appends_a_write_shipped_as_its_call_only_right_after_the_shipment_it_holds() {
    let mut e = engine(2, &[1, 2]);
    assert_eq!(
        e.keep_call("x", "R3", (1, 1), logged("add", &[1]), vec![]),
        Ok(false),
        "no copy here yet: the state must come first"
    );
    e.keep_copy("x", "R3", (1, 4), vec![10], (vec![], false))
        .unwrap();
    e.take_output();
    assert_eq!(
        e.keep_call("x", "R3", (1, 5), logged("add", &[1]), vec![(7, vec![11])]),
        Ok(true)
    );
    assert_eq!(
        e.keep_call("x", "R3", (1, 7), logged("add", &[3]), vec![]),
        Ok(false),
        "shipment 6 missed (asynchronous shipments may cross): the state must come"
    );
    assert_eq!(
        e.keep_call("x", "R3", (1, 5), logged("add", &[1]), vec![]),
        Ok(true),
        "one it holds: kept once"
    );
    assert_eq!(
        e.keep_call("x", "R3", (2, 1), logged("add", &[4]), vec![]),
        Ok(false),
        "a new primary's first shipment is its state"
    );
    assert!(
        e.keep_call("x", "R3", (0, 9), logged("add", &[4]), vec![])
            .is_err(),
        "an older primary is refused, as its states are"
    );
    assert_eq!(
        e.standby_copy("x"),
        Some((vec![10], 1, vec![logged("add", &[1])]))
    );
    assert_eq!(e.take_output(), Output::default(), "nothing to tell anyone");
    // The state replaces the copy and its calls.
    e.keep_copy("x", "R3", (1, 6), vec![12], (vec![], true))
        .unwrap();
    assert_eq!(e.standby_copy("x"), Some((vec![12], 1, vec![])));
    start(&mut e, "y", &TestChild::new("y", "R3"));
    assert!(
        e.keep_call("y", "R3", (1, 1), logged("add", &[1]), vec![])
            .is_err(),
        "it runs here"
    );
    assert_eq!(
        e.keep_call("z", "AA", (1, 1), logged("add", &[1]), vec![]),
        Ok(false),
        "active/active replicas run their own writes"
    );
}

#[test]
fn a_standby_copy_holds_a_bounded_log_of_calls() {
    let mut e = engine(2, &[1, 2]);
    e.keep_copy("x", "R3", (1, 1), vec![0; 10], (vec![], false))
        .unwrap();
    let big = vec![0; MAX_LOGGED_BYTES / 2];
    assert_eq!(
        e.keep_call("x", "R3", (1, 2), logged("m", &big), vec![]),
        Ok(true)
    );
    assert_eq!(
        e.keep_call("x", "R3", (1, 3), logged("m", &big), vec![]),
        Ok(false),
        "past its bytes"
    );
    e.keep_copy("x", "R3", (1, 3), vec![0; 10], (vec![], false))
        .unwrap();
    for seq in 4..4 + MAX_LOGGED_CALLS as u64 {
        assert_eq!(
            e.keep_call("x", "R3", (1, seq), logged("m", &[]), vec![]),
            Ok(true)
        );
    }
    let next = 4 + MAX_LOGGED_CALLS as u64;
    assert_eq!(
        e.keep_call("x", "R3", (1, next), logged("m", &[]), vec![]),
        Ok(false),
        "past its count"
    );
}

/// Node 1 of 3, holding a standby copy of `x` (primary 3, standbys 1 and 2): version
/// (1, 5), state `[9]`, the reply `[42]` of write 7.
fn copy_of_x() -> super::Engine<TestChild> {
    let mut e = engine(1, &[1, 2, 3]);
    e.push(node(3), upsert("x", replicated("R3", node(3), &[1, 2])));
    e.keep_copy("x", "R3", (1, 5), vec![9], (vec![(7, vec![42])], false))
        .unwrap();
    e
}

#[test]
fn a_promoted_copy_replays_the_writes_it_holds_as_calls() {
    let id = "x";
    let mut e = copy_of_x();
    assert_eq!(
        e.keep_call(id, "R3", (1, 6), logged("add", &[2]), vec![(8, vec![43])]),
        Ok(true)
    );
    e.take_output();
    e.gossip(gossip(&[1, 2]));
    e.take_output();
    let r: Restart = e.restart(id, 2, node(3)).unwrap();
    assert!(r.promoted);
    assert_eq!(r.item.state, vec![9]);
    assert_eq!(r.replay, vec![logged("add", &[2])]);
    assert_eq!(r.recent.get(7), Some(&vec![42]));
    assert_eq!(r.recent.get(8), Some(&vec![43]));
}

// ---- salvage ----

/// `id`'s owner (4) and its standby (5) are gone; the ring places it on 1, where no
/// copy is: the engine of 1, the restart planned.
fn salvage_fixture() -> (super::Engine<TestChild>, String) {
    let id = id_owned_by(1, &[1, 2, 3]);
    let mut e = engine(1, &[1, 2, 3, 4, 5]);
    e.push(node(4), upsert(&id, replicated("R3", node(4), &[5])));
    e.take_output();
    e.gossip(gossip(&[1, 2, 3]));
    let plan = e.take_output();
    assert!(
        plan.effects.contains(&Effect::Restart {
            id: id.clone(),
            epoch: 2,
            from: node(4)
        }),
        "{plan:?}"
    );
    (e, id)
}

fn salvaged(version: (u64, u64), state: u8) -> super::StandbyCopy {
    super::StandbyCopy {
        version,
        state: vec![state],
        calls: Vec::new(),
        recent: crate::core::recent::RecentCalls::from_list(
            vec![(7, vec![state])],
            std::time::Instant::now(),
        ),
    }
}

#[test]
fn a_restart_without_a_copy_fetches_the_newest_salvage_offered_and_promotes_it() {
    let (mut e, id) = salvage_fixture();
    e.push(node(3), Push::Salvaged(vec![(id.clone(), 1, 5)]));
    e.push(node(2), Push::Salvaged(vec![(id.clone(), 1, 7)]));
    e.take_output();
    assert!(
        e.restart(&id, 2, node(4)).is_none(),
        "it waits for the salvage"
    );
    assert_eq!(
        e.take_output().effects,
        vec![Effect::FetchSalvage {
            from: node(2),
            ids: vec![id.clone()]
        }],
        "the newest offer"
    );
    assert!(e.restart(&id, 2, node(4)).is_none());
    assert_eq!(e.take_output(), Output::default(), "fetched once");
    e.salvage_fetched(
        node(2),
        std::slice::from_ref(&id),
        vec![(id.clone(), salvaged((1, 7), 9))],
    );
    let r: Restart = e.restart(&id, 2, node(4)).unwrap();
    assert!(r.promoted);
    assert_eq!(r.item.state, vec![9]);
    assert_eq!(r.item.start_state.as_deref(), Some(&vec![1]));
    assert_eq!(
        r.recent.get(7),
        Some(&vec![9]),
        "it answers the retries of its writes"
    );
}

#[test]
fn a_salvage_not_fetched_gives_way_to_the_next_offer_then_to_the_start_state() {
    let (mut e, id) = salvage_fixture();
    let t0 = e.downing.now();
    e.push(node(3), Push::Salvaged(vec![(id.clone(), 1, 5)]));
    e.push(node(2), Push::Salvaged(vec![(id.clone(), 1, 7)]));
    e.take_output();
    assert!(e.restart(&id, 2, node(4)).is_none());
    e.take_output();
    // Node 2 answers without it (it let it go): node 3's older one is fetched next.
    e.salvage_fetched(node(2), std::slice::from_ref(&id), Vec::new());
    assert!(e.restart(&id, 2, node(4)).is_none());
    assert_eq!(
        e.take_output().effects,
        vec![Effect::FetchSalvage {
            from: node(3),
            ids: vec![id.clone()]
        }]
    );
    // Node 3 does not answer in time: the start state it is.
    e.set_now(t0 + super::FETCH_WAIT + std::time::Duration::from_millis(1));
    let r: Restart = e.restart(&id, 2, node(4)).unwrap();
    assert!(!r.promoted);
    assert_eq!(r.item.state, vec![1]);
}

#[test]
fn a_rejoined_node_restarts_from_its_own_salvage_unless_a_peer_holds_a_newer_one() {
    let (mut e, id) = salvage_fixture();
    // Its former life was the primary: its own state, newer than any standby's copy
    // of that epoch.
    e.keep_salvage(&id, salvaged((1, super::PRIMARY_STATE), 8));
    e.keep_salvage(&id, salvaged((1, 3), 5));
    assert_eq!(
        e.salvage_offers(),
        vec![(id.clone(), 1, super::PRIMARY_STATE)],
        "the newest is kept, and offered"
    );
    e.push(node(2), Push::Salvaged(vec![(id.clone(), 1, 6)]));
    e.take_output();
    let r: Restart = e.restart(&id, 2, node(4)).unwrap();
    assert!(r.promoted);
    assert_eq!(r.item.state, vec![8]);
    assert_eq!(e.take_output().effects, vec![], "nothing fetched");
    assert!(e.salvage_offers().is_empty(), "used up");
}

/// A rejoined node offers the states of its former primaries at once, while their
/// instances finish the calls they have in flight; its own restart of one waits for
/// the state, as a peer's fetch does.
#[test]
fn a_state_still_being_taken_is_offered_and_waited_for() {
    let (mut e, id) = salvage_fixture();
    e.keep_salvage(&id, salvaged((1, 3), 5));
    e.expect_salvage([(std::sync::Arc::from(id.as_str()), 1)]);
    assert_eq!(
        e.salvage_offers(),
        vec![(id.clone(), 1, super::PRIMARY_STATE)],
        "one offer per id, the newest"
    );
    assert!(e.salvage_expected(std::slice::from_ref(&id)));
    assert!(e.restart(&id, 2, node(4)).is_none(), "it waits");
    assert_eq!(e.take_output(), Output::default());
    e.salvage_taken(vec![(
        std::sync::Arc::from(id.as_str()),
        salvaged((1, super::PRIMARY_STATE), 8),
    )]);
    assert!(!e.salvage_expected(std::slice::from_ref(&id)));
    let r: Restart = e.restart(&id, 2, node(4)).unwrap();
    assert!(r.promoted);
    assert_eq!(r.item.state, vec![8]);
}

#[test]
fn a_salvage_of_a_later_epoch_wins_and_offers_of_members_gone_are_not_fetched() {
    let (mut e, id) = salvage_fixture();
    e.keep_salvage(&id, salvaged((1, super::PRIMARY_STATE), 8));
    // Node 5 is not a member any more: its offer is not fetched.
    e.push(node(5), Push::Salvaged(vec![(id.clone(), 3, 1)]));
    e.push(node(2), Push::Salvaged(vec![(id.clone(), 2, 1)]));
    e.take_output();
    assert!(e.restart(&id, 2, node(4)).is_none());
    assert_eq!(
        e.take_output().effects,
        vec![Effect::FetchSalvage {
            from: node(2),
            ids: vec![id.clone()]
        }]
    );
    e.salvage_fetched(
        node(2),
        std::slice::from_ref(&id),
        vec![(id.clone(), salvaged((2, 1), 4))],
    );
    let r: Restart = e.restart(&id, 2, node(4)).unwrap();
    assert_eq!(r.item.state, vec![4]);
}

/// A node just woken from a pause promotes its copy while its lease has run out: the
/// start is refused (`NoQuorum`), and the copy it took for it is kept as salvage, not
/// lost with the refused instance (simulator seed 228, 5 nodes, pause,partition,crash).
#[test]
fn a_promotion_refused_keeps_its_copy_as_salvage() {
    let id = "x";
    let mut e = copy_of_x();
    e.take_output();
    e.gossip(gossip(&[1, 2]));
    e.take_output();
    let r: Restart = e.restart(id, 2, node(3)).unwrap();
    assert!(r.promoted);
    assert_eq!(e.standby_copy(id), None);
    e.restarted(r, &StartOutcome::NoQuorum { node: node(1) });
    assert_eq!(e.salvage_offers(), vec![(id.to_string(), 1, 5)]);
    let r: Restart = e.restart(id, 2, node(3)).unwrap();
    assert!(r.promoted, "the next try promotes it again");
    assert_eq!(r.item.state, vec![9]);
    assert_eq!(r.recent.get(7), Some(&vec![42]));
}

/// A standby that was downed and is heard again rejoins in a moment and offers its
/// copy: the restart from the start state waits for it, and goes ahead once it is
/// not heard any more.
#[test]
fn a_restart_from_the_start_state_waits_for_a_downed_holder_heard_again() {
    let (mut e, id) = salvage_fixture();
    e.gossip(gossip(&[1, 2, 3, 5]));
    e.view.remove(node(5));
    e.take_output();
    assert!(e.restart(&id, 2, node(4)).is_none(), "node 5 rejoins: wait");
    assert_eq!(e.take_output().effects, vec![]);
    e.gossip(gossip(&[1, 2, 3]));
    let r: Restart = e.restart(&id, 2, node(4)).unwrap();
    assert!(!r.promoted);
    assert_eq!(r.item.state, vec![1]);
}

/// The primary the child restarts from was downed and is heard again: it rejoins in a
/// moment and offers its own state. The restart waits for it too, though the entry
/// names this node as the owner by then (simulator seed 287, 5 nodes, the heavy mix).
#[test]
fn a_restart_from_the_start_state_waits_for_the_downed_primary_it_restarts_from() {
    let id = id_owned_by(1, &[1, 2, 3]);
    let (mut e, _) = majority_engine(1, &[1, 2, 3, 4, 5]);
    e.push(node(4), upsert(&id, replicated("R3", node(4), &[5])));
    e.take_output();
    // Both holders downed; the primary is heard again, its standby is not.
    e.view.remove(node(4));
    e.view.remove(node(5));
    e.gossip(gossip(&[1, 2, 3, 4]));
    let plan = e.take_output();
    assert!(plan.effects.contains(&Effect::Restart {
        id: id.clone(),
        epoch: 2,
        from: node(4)
    }));
    assert_eq!(e.registry.get(&id).map(|x| x.owner), Some(node(1)));
    assert!(e.restart(&id, 2, node(4)).is_none(), "node 4 rejoins: wait");
    assert_eq!(e.take_output().effects, vec![]);
    // Not heard any more: the start state.
    e.gossip(gossip(&[1, 2, 3]));
    e.take_output();
    let r: Restart = e.restart(&id, 2, node(4)).unwrap();
    assert!(!r.promoted);
}

#[test]
fn a_rejoin_takes_the_primaries_of_replicated_children_and_the_copies_as_salvage() {
    let mut e = engine(1, &[1, 2]);
    start(&mut e, "r", &TestChild::new("r", "R3"));
    start(&mut e, "p", &TestChild::new("p", "T"));
    e.keep_copy("c", "R3", (4, 2), vec![3], (vec![], false))
        .unwrap();
    let (mut children, copies) = e.take_for_rejoin();
    children.sort_by(|a, b| a.id.cmp(&b.id));
    let children: Vec<(String, u64, bool)> = children
        .into_iter()
        .map(|c| (c.id.to_string(), c.epoch, c.salvage))
        .collect();
    assert_eq!(
        children,
        vec![("p".to_string(), 1, false), ("r".to_string(), 1, true)]
    );
    assert_eq!(copies.len(), 1);
    assert_eq!((&*copies[0].0, copies[0].1.version), ("c", (4, 2)));
    // What it salvaged in an earlier life goes along too (downed twice).
    e.keep_salvage("s", salvaged((3, 1), 2));
    let (children, copies) = e.take_for_rejoin();
    assert!(children.is_empty());
    assert_eq!((&*copies[0].0, copies[0].1.version), ("s", (3, 1)));
    assert!(e.local.is_empty() && e.copies.is_empty());
}

#[test]
fn an_active_replica_is_promoted_in_place_told_its_role_and_its_epoch() {
    let id = "x";
    let mut e = engine(1, &[1, 2, 3]);
    e.push(node(3), upsert(id, replicated("AA", node(3), &[1, 2])));
    assert_eq!(
        e.keep_copy(id, "AA", (1, 1), vec![5], (vec![], false)),
        Ok(Kept::Replica(vec![5]))
    );
    let r1 = TestChild::new("r1", "AA");
    assert!(e.add_replica(id, r1.clone(), 1));
    assert!(!e.add_replica(id, TestChild::new("again", "AA"), 1));
    e.gossip(gossip(&[1, 2]));
    e.take_output();
    assert!(e.restart(id, 2, node(3)).is_none(), "decided in place");
    assert_eq!(
        e.take_output(),
        out(
            vec![upsert(
                id,
                crate::core::entry::Entry {
                    owner: node(1),
                    epoch: 2,
                    ..replicated("AA", node(3), &[2])
                }
            )],
            vec![Effect::Role {
                child: r1.clone(),
                role: Role::Primary
            }],
            vec![HubEvent::PrimaryPromoted {
                id: id.into(),
                node: node(1),
                epoch: 2,
                from: node(3),
            }],
        )
    );
    assert_eq!(r1.epoch(), 2, "the instance reads the engine's epoch");
}

#[test]
fn a_started_primary_gets_standbys_and_a_shipment_makes_the_set_it_reached() {
    let mut e = engine(1, &[1, 2, 3]);
    let x = TestChild::new("x", "R3");
    let item = new_item("x", "R3");
    let epoch = e.admit(&item).unwrap();
    e.started(&item, epoch, Ok(x.clone()));
    e.keep_replicas_if_due();
    let o = e.take_output();
    assert_eq!(
        o.effects,
        vec![Effect::Resync {
            id: "x".into(),
            child: x.clone()
        }]
    );
    let ring = Ring::new([node(1), node(2), node(3)]);
    let desired = e.desired_standbys(&ring, "x", 3);
    assert_eq!(desired.len(), 2);
    assert!(!desired.contains(&node(1)));
    assert_eq!(
        e.ship_plan("x", "R3", 1),
        Some(ShipPlan {
            current: vec![],
            targets: desired.clone(),
            epoch: 1
        })
    );
    assert_eq!(
        e.ship_plan("x", "R3", 0),
        None,
        "a stale instance ships nothing"
    );
    assert!(
        !e.ship_plan("x", "R3", 1).unwrap().acks_direct(),
        "no standby acknowledges to the caller before the set is published"
    );
    e.shipped("x", 1, &[], desired.clone());
    let mut standby_entry = entry("R3", node(1), 1);
    standby_entry.standbys = Some(desired.clone().into_boxed_slice());
    assert_eq!(
        e.take_output(),
        out(
            vec![upsert("x", standby_entry)],
            vec![],
            desired
                .iter()
                .map(|n| HubEvent::ReplicaAdded {
                    id: "x".into(),
                    node: *n
                })
                .collect(),
        )
    );
    assert!(
        e.ship_plan("x", "R3", 1).unwrap().acks_direct(),
        "the set published: its standbys may acknowledge to the caller"
    );
    // A resync under way is not asked for twice; once done, nothing is due (in step).
    e.keep_replicas();
    assert_eq!(e.take_output(), Output::default());
    e.resync_done("x");
    e.keep_replicas();
    assert_eq!(e.take_output(), Output::default());
    // A shipment that reached one standby only: the other is dropped from the set.
    e.shipped("x", 1, &desired, vec![desired[0]]);
    let o = e.take_output();
    assert_eq!(
        o.events,
        vec![HubEvent::ReplicaRemoved {
            id: "x".into(),
            node: desired[1]
        }]
    );
    assert!(
        !e.ship_plan("x", "R3", 1).unwrap().acks_direct(),
        "a set short of the ring's: the primary's reply only"
    );
    e.shipped("x", 7, &[desired[0]], vec![]);
    assert_eq!(
        e.take_output(),
        Output::default(),
        "another epoch's: ignored"
    );
}

#[test]
fn a_standby_keeps_the_newest_copy_and_refuses_an_older_primary() {
    let mut e = engine(2, &[1, 2]);
    assert_eq!(
        e.keep_copy("x", "R3", (1, 2), vec![2], (vec![], false)),
        Ok(Kept::Copy)
    );
    assert_eq!(
        e.keep_copy("x", "R3", (1, 1), vec![1], (vec![], false)),
        Ok(Kept::Copy)
    );
    assert_eq!(
        e.standby_copy("x"),
        Some((vec![2], 1, vec![])),
        "a late shipment is ignored"
    );
    assert_eq!(
        e.keep_copy("x", "R3", (2, 1), vec![3], (vec![], false)),
        Ok(Kept::Copy)
    );
    assert!(e
        .keep_copy("x", "R3", (1, 9), vec![4], (vec![], false))
        .is_err());
    assert_eq!(e.standby_copy("x"), Some((vec![3], 2, vec![])));
    start(&mut e, "y", &TestChild::new("y", "R3"));
    assert!(e
        .keep_copy("y", "R3", (1, 1), vec![], (vec![], false))
        .is_err());
}

#[test]
fn a_passive_standby_hears_when_its_role_begins_and_ends() {
    let mut e = engine(2, &[1, 2, 3]);
    e.push(node(1), upsert("x", replicated("R3", node(1), &[2])));
    e.take_output();
    e.keep_copy("x", "R3", (1, 1), vec![1], (vec![], false))
        .unwrap();
    assert_eq!(
        e.take_output(),
        out(
            vec![],
            vec![],
            vec![HubEvent::StandbyStarted {
                id: "x".into(),
                node: node(2),
                epoch: 1
            }]
        )
    );
    e.keep_copy("x", "R3", (1, 2), vec![2], (vec![], false))
        .unwrap();
    assert_eq!(e.take_output(), Output::default(), "said once");
    // Its primary names another standby set: the copy goes.
    e.push(node(1), upsert("x", replicated("R3", node(1), &[3])));
    assert_eq!(
        e.take_output(),
        out(
            vec![],
            vec![],
            vec![HubEvent::StandbyEnded {
                id: "x".into(),
                node: node(2)
            }]
        )
    );
    assert_eq!(e.standby_copy("x"), None);
}

// ---- moves ----

#[test]
fn a_finished_move_points_the_registry_at_the_new_owner_and_clears_the_old_entry() {
    let mut e = engine(1, &[1, 2]);
    let a1 = TestChild::new("a1", "T");
    start(&mut e, "a", &a1);
    let moves = e.begin_moves(vec![
        ("a".into(), node(2), 2),
        ("a".into(), node(2), 2),
        ("nope".into(), node(2), 2),
    ]);
    assert_eq!(moves.len(), 1);
    assert_eq!(moves[0].0, node(2));
    let m = &moves[0].1;
    assert_eq!(m.len(), 1, "taken up once");
    assert_eq!((m[0].epoch, m[0].from_epoch), (2, 1));
    assert!(e.is_moving());
    e.move_done(&m[0], node(2));
    assert_eq!(
        e.take_output(),
        out(
            vec![Push::Remove(vec![("a".into(), 1)])],
            vec![],
            vec![HubEvent::ChildMigrated {
                id: "a".into(),
                from: node(1),
                to: node(2),
                epoch: 2,
            }],
        )
    );
    assert!(!e.is_moving());
    assert_eq!(e.registry.get("a"), Some(&entry("T", node(2), 2)));
    assert_eq!(e.route("a"), Route::Remote(node(2)));
}

/// Found by `a_real_partition_under_static_quorum_keeps_the_promise` (1 run in 8): after
/// the heal, node 2 moved `x` to node 1's new life under epoch 4 and said so (`Moved`);
/// node 1's snapshot, taken as a connection opened before the move, arrived next and
/// dropped the entry, remembering it as removed at epoch 4; node 1's own entry, right
/// after, was refused. The registry of node 3 lacked `x` for good.
#[test]
fn an_owner_s_entry_after_its_older_snapshot_stands() {
    let mut e = engine(3, &[1, 2, 3]);
    e.push(node(2), upsert("x", entry("T", node(2), 3)));
    e.push(
        node(2),
        Push::Moved(vec![("x".into(), entry("T", node(1), 4))]),
    );
    assert_eq!(e.registry.get("x"), Some(&entry("T", node(1), 4)));
    e.push(
        node(1),
        Push::Snapshot {
            entries: Vec::new(),
            first: true,
            last: true,
        },
    );
    assert_eq!(e.registry.get("x"), None, "the snapshot lacks it");
    // Another node's word does not bring it back: only the owner's.
    e.push(
        node(2),
        Push::Moved(vec![("x".into(), entry("T", node(1), 4))]),
    );
    assert_eq!(e.registry.get("x"), None);
    e.push(node(1), upsert("x", entry("T", node(1), 4)));
    assert_eq!(e.registry.get("x"), Some(&entry("T", node(1), 4)));
}

fn snapshot_of(entries: Vec<(String, crate::core::entry::Entry)>) -> Push {
    Push::Snapshot {
        entries,
        first: true,
        last: true,
    }
}

/// Found by simulator seed 17 (5 nodes, partition,crash): node 3 restarted `p` of the
/// cut-off node 2 under epoch 2 and stopped it; the joiner, node 5, never heard the
/// stop, took `p` in from node 2's snapshot after the heal (epoch 1), re-assigned it to
/// node 2's new life when node 2 was downed, and that one restarted it: a stopped child
/// came back. The removals a node remembers now go with its snapshot.
#[test]
fn removals_remembered_elsewhere_keep_a_stopped_child_stopped() {
    let stale = || vec![("p".to_string(), entry("T", node(2), 1))];
    // The joiner hears the removal first: the stale entry is refused.
    let mut joiner = engine(5, &[2, 3, 5]);
    joiner.push(node(3), Push::Removed(vec![("p".into(), 2, true)]));
    joiner.push(node(2), snapshot_of(stale()));
    assert_eq!(joiner.registry.get("p"), None);
    // Or the stale entry first: the removal drops it.
    let mut joiner = engine(5, &[2, 3, 5]);
    joiner.push(node(2), snapshot_of(stale()));
    assert!(joiner.registry.get("p").is_some());
    joiner.push(node(3), Push::Removed(vec![("p".into(), 2, true)]));
    assert_eq!(joiner.registry.get("p"), None);
    // A newer entry stays (the child was started again since).
    joiner.push(node(3), upsert("p", entry("T", node(3), 3)));
    joiner.push(node(2), Push::Removed(vec![("p".into(), 2, true)]));
    assert_eq!(joiner.registry.get("p"), Some(&entry("T", node(3), 3)));
    // The node a restart was predicted on refuses it, and says the removal again.
    let mut rejoined = engine(2, &[2, 3, 5]);
    rejoined.push(node(3), Push::Removed(vec![("p".into(), 2, true)]));
    rejoined.take_output();
    rejoined.push(
        node(5),
        Push::Assigned(vec![("p".into(), entry("T", node(2), 2), node(9))]),
    );
    assert_eq!(rejoined.registry.get("p"), None);
    assert_eq!(
        rejoined.take_output().pushes,
        vec![Push::Remove(vec![("p".into(), 2)])]
    );
}

/// Node 1 of 3 runs `x` (`R3`) and has begun its move to node 2 under epoch 2.
fn replicated_x_moving_to_2() -> (super::Engine<TestChild>, super::Move<TestChild>) {
    let mut e = engine(1, &[1, 2, 3]);
    start(&mut e, "x", &TestChild::new("x", "R3"));
    let m = e
        .begin_moves(vec![("x".into(), node(2), 2)])
        .remove(0)
        .1
        .remove(0);
    (e, m)
}

#[test]
fn a_moved_replicated_child_says_where_it_went_and_only_its_stale_entries_follow() {
    // The old owner: a replicated child's move is published as where it went (a
    // removal would stop its replicas).
    let (mut e, m) = replicated_x_moving_to_2();
    e.move_done(&m, node(2));
    let went = crate::core::entry::Entry {
        owner: node(2),
        epoch: 2,
        ..e.registry.get("x").unwrap().clone()
    };
    assert_eq!(
        e.take_output().pushes,
        vec![Push::Moved(vec![("x".into(), went.clone())])]
    );
    // A node that does not hear node 2 yet follows it there.
    let mut other = engine(3, &[1, 3]);
    other.push(node(1), upsert("x", entry("R3", node(1), 1)));
    other.take_output();
    other.push(node(1), Push::Moved(vec![("x".into(), went.clone())]));
    assert_eq!(
        other.registry.get("x").map(|e| (e.owner, e.epoch)),
        Some((node(2), 2))
    );
    // Not over what it knows better: a later entry, or a stop.
    let mut later = engine(3, &[1, 2, 3]);
    later.push(node(1), upsert("y", entry("R3", node(1), 1)));
    later.push(node(2), upsert("y", entry("R3", node(2), 3)));
    later.push(node(1), upsert("z", entry("R3", node(1), 1)));
    later.push(node(1), Push::Remove(vec![("z".into(), 1)]));
    later.take_output();
    later.push(
        node(1),
        Push::Moved(vec![
            (
                "y".into(),
                crate::core::entry::Entry {
                    owner: node(2),
                    epoch: 2,
                    ..went.clone()
                },
            ),
            (
                "z".into(),
                crate::core::entry::Entry {
                    owner: node(2),
                    epoch: 2,
                    ..went
                },
            ),
        ]),
    );
    assert_eq!(
        later.registry.get("y").map(|e| (e.owner, e.epoch)),
        Some((node(2), 3))
    );
    assert!(later.registry.get("z").is_none(), "stopped: it stays out");
}

#[test]
fn the_new_owners_entry_arriving_first_is_kept_with_its_standbys() {
    let (mut e, m) = replicated_x_moving_to_2();
    let theirs = crate::core::entry::Entry {
        epoch: 2,
        ..replicated("R3", node(2), &[3])
    };
    // Not a duplicate while it moves: nothing stops.
    e.push(node(2), upsert("x", theirs.clone()));
    assert_eq!(e.take_output(), Output::default());
    e.move_done(&m, node(2));
    let o = e.take_output();
    assert_eq!(
        o.pushes,
        vec![Push::Moved(vec![("x".into(), theirs.clone())])],
        "no removal for a replicated child (it means a stop): where it went"
    );
    assert_eq!(e.registry.get("x"), Some(&theirs));
}

#[test]
fn a_move_with_an_unknown_outcome_rolls_back_under_the_epoch_after_the_one_offered() {
    let mut e = engine(1, &[1, 2]);
    let a1 = TestChild::new("a1", "T");
    start(&mut e, "a", &a1);
    let m = e.begin_moves(vec![("a".into(), node(2), 2)]);
    assert_eq!(m.len(), 1);
    e.move_failed("a", node(2), "timeout".into(), Some(2));
    assert_eq!(
        e.take_output(),
        out(
            vec![upsert("a", entry("T", node(1), 3))],
            vec![],
            vec![HubEvent::MigrationFailed {
                id: "a".into(),
                to: node(2),
                reason: "timeout".into(),
            }],
        )
    );
    assert_eq!(a1.epoch(), 3);
    assert_eq!(e.local["a"].epoch, 3);
    // A move refused outright keeps the epoch it had.
    e.begin_moves(vec![("a".into(), node(2), 4)]);
    e.move_failed("a", node(2), "unreachable".into(), None);
    let o = e.take_output();
    assert_eq!(o.pushes, vec![]);
    assert_eq!(e.local["a"].epoch, 3);
    assert!(!e.is_moving());
}

/// Found by the simulator (seed 14, frame loss): a stop that reached the old owner
/// while the state was on its way let the hand-over bring the child back on the new
/// one.
#[test]
fn a_stop_waits_for_a_move_under_way_to_end() {
    let mut e = engine(1, &[1, 2]);
    let a1 = TestChild::new("a1", "T");
    start(&mut e, "a", &a1);
    let m = e.begin_moves(vec![("a".into(), node(2), 2)]);
    let _ = e.take_output();
    assert_eq!(e.stop("a", "T"), Err(StopOutcome::Moving));
    assert_eq!(e.take_output(), Output::default());
    assert!(e.registry.get("a").is_some());
    e.move_done(&m[0].1[0], node(2));
    let _ = e.take_output();
    assert_eq!(
        e.stop("a", "T"),
        Err(StopOutcome::NotHere { owner: node(2) })
    );
    // A move that failed leaves it here, to be stopped.
    let mut e = engine(1, &[1, 2]);
    start(&mut e, "b", &TestChild::new("b1", "T"));
    e.begin_moves(vec![("b".into(), node(2), 2)]);
    e.move_failed("b", node(2), "unreachable".into(), None);
    assert!(e.stop("b", "T").is_ok());
}

#[test]
fn a_drain_moves_all_but_the_pinned_and_a_leave_hands_over_all() {
    let mut e = engine(1, &[1, 2, 3]);
    let ids: Vec<String> = (0..6).map(|i| format!("c{i}")).collect();
    for id in &ids {
        start(&mut e, id, &TestChild::new("c", "T"));
    }
    let pinned = new_item("pinned", "T");
    let pinned = crate::core::item::StartItem {
        flags: Flags::new(true, false),
        ..pinned
    };
    let bound = crate::core::item::StartItem {
        flags: Flags::new(true, true),
        ..new_item("bound", "T")
    };
    for item in [&pinned, &bound] {
        let epoch = e.admit(item).unwrap();
        e.started(item, epoch, Ok(TestChild::new("p", "T")));
    }
    e.take_output();
    let others = Ring::new([node(2), node(3)]);
    let to = |id: &str| others.owner(id).unwrap();
    let mut leave: Vec<(String, NodeId, u64)> = ids
        .iter()
        .chain([&"pinned".to_string(), &"bound".to_string()])
        .map(|id| (id.clone(), to(id), 2))
        .collect();
    leave.sort();
    assert_eq!(e.leave_moves(), leave);
    assert_eq!(e.bound_here(), vec![("bound".into(), "T".into())]);
    assert_eq!(e.handed_over_count(), 8);
    e.drain_here();
    let mut drain: Vec<(String, NodeId, u64)> =
        ids.iter().map(|id| (id.clone(), to(id), 2)).collect();
    drain.sort();
    assert_eq!(e.drain_moves(), drain);
    // The plan after the drain moved the same ones.
    let o = e.take_output();
    assert_eq!(
        o.effects,
        vec![
            Effect::Peers(vec![node(1), node(2), node(3)]),
            Effect::Move(drain)
        ]
    );
}

#[test]
fn a_leaving_node_plans_nothing_more() {
    let mut e = engine(1, &[1, 2, 3]);
    e.push(
        node(3),
        upsert(&id_owned_by(1, &[1, 2]), entry("T", node(3), 1)),
    );
    e.leave();
    e.gossip(gossip(&[1, 2]));
    let o = e.take_output();
    assert_eq!(
        o.effects,
        vec![
            Effect::Peers(vec![node(1), node(2)]),
            Effect::Dead(vec![node(3)])
        ],
        "reported, not planned"
    );
}

#[test]
fn the_planners_timer_plans_only_after_a_change_or_while_a_child_is_pending() {
    let mut e = engine(1, &[1, 2]);
    let theirs = id_owned_by(2, &[1, 2]);
    // Started here, though node 2 owns it on the ring: the next plan moves it.
    start(&mut e, &theirs, &TestChild::new("c", "T"));
    e.tick();
    let moves = vec![(theirs.clone(), node(2), 2)];
    assert_eq!(e.take_output().effects, vec![Effect::Move(moves.clone())]);
    // Nothing changed since: the timer plans nothing (an idle node walks no registry).
    e.tick();
    assert_eq!(e.take_output(), Output::default());
    // The move failed: the next tick takes it up again.
    e.begin_moves(moves.clone());
    e.move_failed(&theirs, node(2), "unreachable".into(), None);
    e.take_output();
    e.tick();
    assert_eq!(e.take_output().effects, vec![Effect::Move(moves)]);
    // A child pending its restart here keeps the timer planning until it is confirmed.
    let mut e = engine(1, &[1, 2, 3]);
    let mine = id_owned_by(1, &[1, 2]);
    e.push(node(3), upsert(&mine, entry("T", node(3), 1)));
    e.gossip(gossip(&[1, 2]));
    e.take_output();
    for _ in 0..2 {
        e.tick();
        let restart = Effect::Restart {
            id: mine.clone(),
            epoch: 2,
            from: node(3),
        };
        assert_eq!(e.take_output().effects, vec![restart]);
    }
}

// ---- determinism ----

#[test]
fn the_same_events_give_the_same_output_on_every_engine() {
    let run = || {
        let mut e = engine(1, &[1, 2, 3, 4]);
        let mut outputs = Vec::new();
        for i in 0..200 {
            let owner = node(2 + (i % 3) as u16);
            e.push(owner, upsert(&format!("c{i}"), entry("T", owner, 1)));
        }
        for i in 0..50 {
            start(&mut e, &format!("mine{i}"), &TestChild::new("m", "T"));
        }
        e.gossip(gossip(&[1, 2]));
        outputs.push(e.take_output());
        e.gossip(gossip(&[1, 2, 5]));
        outputs.push(e.take_output());
        outputs.push(Output {
            pushes: vec![Push::Snapshot {
                entries: e.snapshot(),
                first: true,
                last: true,
            }],
            effects: vec![],
            events: vec![],
        });
        outputs
    };
    let (a, b) = (run(), run());
    assert!(a[0].effects.len() > 10, "{:?}", a[0].effects);
    assert_eq!(a, b);
}

/// Found by the simulator (seed 4, connection resets): a move whose answer was lost
/// is asked again under the same epoch; a target that already runs it answers so,
/// and keeps its instance (and whatever it served meanwhile).
#[test]
fn a_hand_over_sent_twice_starts_once() {
    let mut e = engine(2, &[1, 2]);
    let handed = crate::core::item::StartItem {
        epoch: 2,
        start_state: Some(serde_bytes::ByteBuf::from(vec![1])),
        ..new_item("a", "T")
    };
    let first = TestChild::new("a2", "T");
    let epoch = e.admit(&handed).expect("admitted");
    assert_eq!(epoch, 2);
    e.started(&handed, epoch, Ok(first.clone()));
    let _ = e.take_output();
    first.call();
    assert_eq!(
        e.admit(&handed),
        Err(StartOutcome::AlreadyStarted { node: node(2) })
    );
    assert_eq!(e.take_output(), Output::default());
    assert_eq!(e.local["a"].epoch, 2);
    // The source rolls back an unanswered move only once the target is gone.
    let mut source = engine(1, &[1, 2]);
    assert!(!source.may_roll_back_move(node(2)));
    source.gossip(gossip(&[1]));
    assert!(source.may_roll_back_move(node(2)));
}

/// Found by the simulator's soak (seed 29 of every message fault): the old owner's last
/// entry, held up on its slow link, arrived after the new owner's removal and brought a
/// stopped child back into this registry. A fresh start of it later is taken.
#[test]
fn a_removal_is_not_undone_by_an_older_entry_from_another_link() {
    let mut e = engine(3, &[1, 2, 3]);
    e.push(node(1), upsert("a", entry("T", node(1), 3)));
    e.push(node(2), upsert("a", entry("T", node(2), 4)));
    e.push(node(2), Push::Remove(vec![("a".into(), 4)]));
    e.push(node(1), upsert("a", entry("T", node(1), 3)));
    assert!(e.registry.get("a").is_none());
    assert_eq!(e.take_output(), Output::default());
    // Started again here: under the epoch after the removal, which every registry that
    // remembers it takes.
    let item = new_item("a", "T");
    assert_eq!(e.admit(&item), Ok(5));
}

/// A peer that dies has the calls awaiting its answer failed at once (so they go to the
/// new owner); one that says goodbye does not (it still answers, and hands over what it
/// served).
#[test]
fn a_death_fails_the_calls_awaiting_the_dead_and_a_goodbye_does_not() {
    let mut e = engine(1, &[1, 2, 3, 4]);
    e.push(node(4), Push::Leaving);
    e.gossip(gossip(&[1, 2, 4]));
    let o = e.take_output();
    assert_eq!(
        o.effects,
        vec![
            Effect::Refresh,
            Effect::Peers(vec![node(1), node(2)]),
            Effect::Dead(vec![node(3)])
        ]
    );
    assert_eq!(
        o.events,
        vec![
            HubEvent::NodeUnreachable { node: node(3) },
            HubEvent::NodeLeft {
                node: node(3),
                graceful: false
            },
            HubEvent::NodeLeft {
                node: node(4),
                graceful: true
            }
        ]
    );
}

// ---- downing and fencing ----

fn majority_engine(me: u16, members: &[u16]) -> (super::Engine<TestChild>, std::time::Instant) {
    use crate::core::downing::{PartitionTolerance, SafetyConfig};
    let t0 = std::time::Instant::now();
    let safety = SafetyConfig {
        strategy: PartitionTolerance::MajorityQuorum,
        stable_after: std::time::Duration::from_millis(300),
        lease: std::time::Duration::from_millis(400),
    };
    let mut e = super::Engine::new(node(me), super::testing::types, true, safety, t0);
    e.gossip(gossip(members));
    for p in members.iter().filter(|p| **p != me) {
        super::testing::synced(&mut e, *p);
    }
    e.take_output();
    (e, t0)
}

#[test]
fn a_majority_downs_a_silent_member_once_stable_and_replaces_it_a_lease_after_a_quorum_did() {
    use std::time::Duration;
    let (mut e, t0) = majority_engine(1, &[1, 2, 3]);
    e.gossip(gossip(&[1, 2]));
    assert_eq!(
        e.take_output(),
        out(
            vec![],
            vec![],
            vec![HubEvent::NodeUnreachable { node: node(3) }]
        ),
        "unreachable, not gone"
    );
    assert_eq!(e.view.members(), &[node(1), node(2), node(3)]);
    e.set_now(t0 + Duration::from_millis(300));
    e.refresh_members();
    assert_eq!(
        e.take_output(),
        out(
            vec![Push::Down(vec![node(3)])],
            vec![],
            vec![HubEvent::NodesDowned {
                nodes: vec![node(3)]
            }],
        )
    );
    // Node 2 downs it too: a quorum (2 of 3) has; the replacement waits 1.25 leases.
    e.set_now(t0 + Duration::from_millis(310));
    e.push(node(2), Push::Down(vec![node(3)]));
    e.take_output();
    e.set_now(t0 + Duration::from_millis(800));
    e.refresh_members();
    assert!(
        e.take_output().events.is_empty(),
        "not yet: 490 ms after the quorum"
    );
    e.set_now(t0 + Duration::from_millis(810));
    e.refresh_members();
    let o = e.take_output();
    assert_eq!(o.effects[0], Effect::Peers(vec![node(1), node(2)]));
    assert_eq!(o.effects[1], Effect::Dead(vec![node(3)]));
    assert_eq!(
        o.events,
        vec![HubEvent::NodeLeft {
            node: node(3),
            graceful: false
        }]
    );
    // Node 3 is heard again, not knowing it was downed (it was paused, say): connected
    // to, so that the downing repeated on the new connection reaches it, but not a
    // member again.
    e.gossip(gossip(&[1, 2, 3]));
    let o = e.take_output();
    assert_eq!(
        o.effects,
        vec![Effect::Peers(vec![node(1), node(2), node(3)])]
    );
    assert_eq!(e.view.members(), &[node(1), node(2)]);
    // Gone (it rejoined as a new incarnation): no longer.
    e.gossip(gossip(&[1, 2]));
    assert_eq!(
        e.take_output().effects,
        vec![Effect::Peers(vec![node(1), node(2)])]
    );
}

/// Simulator seed 42 (3 nodes, pause,partition,crash,delay): a rejoined node and a
/// joiner, neither ever reached by a member cut off behind a partition, made a majority
/// and downed it; it held every entry, so every registry lost every one. A node downs
/// only members whose registry reached it, and adopts a peer's downing of the others.
#[test]
fn a_member_whose_registry_never_arrived_is_not_downed_on_this_nodes_word() {
    use std::time::Duration;
    let (mut e, t0) = majority_engine(1, &[1, 2]);
    // Node 3 joins; its connection opens, but nothing of it arrives (a cut), and soon
    // the failure detector stops hearing it.
    e.gossip(gossip(&[1, 2, 3]));
    e.gossip(gossip(&[1, 2]));
    e.take_output();
    e.set_now(t0 + Duration::from_secs(5));
    e.refresh_members();
    assert_eq!(
        e.take_output(),
        out(vec![], vec![], vec![]),
        "not downed: its registry never arrived here"
    );
    assert!(
        !e.downing_due(t0 + Duration::from_secs(60)),
        "nothing waits"
    );
    // Node 2, which knew it, downs it: adopted (node 1 does not hear it either).
    e.push(node(2), Push::Down(vec![node(3)]));
    assert_eq!(
        e.take_output(),
        out(
            vec![Push::Down(vec![node(3)])],
            vec![],
            vec![HubEvent::NodesDowned {
                nodes: vec![node(3)]
            }],
        )
    );
}

#[test]
fn a_minority_starts_stops_and_restarts_nothing_and_says_it_lost_its_quorum() {
    let (mut e, _) = majority_engine(1, &[1, 2, 3]);
    let a1 = TestChild::new("a1", "T");
    start(&mut e, "a", &a1);
    e.gossip(gossip(&[1]));
    assert_eq!(
        e.take_output().events,
        vec![
            HubEvent::NodeUnreachable { node: node(2) },
            HubEvent::NodeUnreachable { node: node(3) },
            HubEvent::QuorumLost { node: node(1) }
        ]
    );
    assert!(!e.has_quorum());
    assert_eq!(
        e.admit(&new_item("b", "T")),
        Err(StartOutcome::NoQuorum { node: node(1) })
    );
    assert_eq!(
        e.stop("a", "T"),
        Err(StopOutcome::NoQuorum { node: node(1) })
    );
    assert_eq!(e.restart("a", 2, node(2)).map(|r| r.item.id), None);
    e.gossip(gossip(&[1, 2]));
    let o = e.take_output();
    assert_eq!(
        o.events,
        vec![
            HubEvent::NodeReachable { node: node(2) },
            HubEvent::QuorumRegained { node: node(1) }
        ]
    );
    assert!(
        o.effects.contains(&Effect::Renew),
        "heard again: renew the lease"
    );
}

/// Found by simulator seed 30 (5 nodes, pause,partition,one-way,crash,quick-restart,
/// delay): node 1 downed node 3 alone, its push lost, and no quorum ever did. The restart
/// node 1 predicted for node 3 (of a child of a node that left) stayed pending here for
/// good: node 3's word on it changed an entry known here. It is the word this registry
/// waits for, and changes no owner: it counts.
#[test]
fn a_node_downed_here_alone_confirms_the_restart_predicted_for_it() {
    use std::time::Duration;
    let (mut e, t0) = majority_engine(1, &[1, 2, 3, 4, 5]);
    let id = id_owned_by(3, &[1, 2, 3, 5]);
    e.push(node(4), upsert(&id, entry("T", node(4), 1)));
    e.push(node(4), Push::Leaving);
    e.refresh_members();
    e.take_output();
    assert_eq!(e.registry.pending_from(&id), Some(node(4)));
    assert_eq!(
        e.registry.get(&id).map(|e| (e.owner, e.epoch)),
        Some((node(3), 2))
    );
    // Node 3 goes silent; node 1 (with nodes 2 and 5, a quorum of 4) downs it.
    e.gossip(gossip(&[1, 2, 5]));
    e.set_now(t0 + Duration::from_millis(300));
    e.refresh_members();
    assert_eq!(e.take_output().pushes, vec![Push::Down(vec![node(3)])]);
    // Heard again, node 3 confirms the restart.
    e.gossip(gossip(&[1, 2, 3, 5]));
    e.take_output();
    e.push(node(3), upsert(&id, entry("T", node(3), 2)));
    assert_eq!(e.registry.pending_from(&id), None, "confirmed");
    assert_eq!(
        e.registry.get(&id).map(|e| (e.owner, e.epoch)),
        Some((node(3), 2))
    );
    // A later change to it, known here and no longer awaited, does not count.
    let mut changed = entry("T", node(3), 2);
    changed.standbys = Some(Box::new([]));
    e.push(node(3), upsert(&id, changed));
    assert_eq!(e.registry.get(&id).map(|e| e.standbys.clone()), Some(None));
}

/// Found by soak seeds 1049, 1051 and 1133 (a one-way fault beside a partition): node 1
/// downed node 3 alone, its push lost, and no quorum ever did. Node 3 still owns its
/// children: what it stopped goes (a removal lost with a connection comes back as an
/// id missing from the next snapshot), children unknown here come in; what it changes
/// of those known here does not count (seed 6: woken from a pause, it dropped a
/// standby set on a stale view).
#[test]
fn a_node_downed_here_alone_removes_and_adds_but_changes_nothing_known() {
    use std::time::Duration;
    let (mut e, t0) = majority_engine(1, &[1, 2, 3]);
    e.push(node(3), upsert("c", entry("T", node(3), 1)));
    e.push(node(3), upsert("d", entry("T", node(3), 1)));
    e.gossip(gossip(&[1, 2]));
    e.set_now(t0 + Duration::from_millis(300));
    e.refresh_members();
    assert_eq!(e.take_output().pushes, vec![Push::Down(vec![node(3)])]);
    // Node 3 is heard again; it stopped `c` meanwhile, started `x`, and republishes
    // `d` with no standbys.
    e.gossip(gossip(&[1, 2, 3]));
    assert_eq!(
        e.take_output().events,
        vec![HubEvent::NodeReachable { node: node(3) }],
        "a member again, not a new one"
    );
    let mut d = entry("T", node(3), 1);
    d.standbys = Some(Box::new([]));
    e.push(node(3), upsert("d", d));
    e.push(
        node(3),
        Push::Snapshot {
            entries: vec![
                ("d".into(), entry("T", node(3), 1)),
                ("x".into(), entry("T", node(3), 1)),
            ],
            first: true,
            last: true,
        },
    );
    assert!(e.registry.get("c").is_none(), "stopped there: gone here");
    assert_eq!(e.registry.get("d").map(|e| e.standbys.clone()), Some(None));
    assert!(e.registry.get("x").is_some(), "unknown here: it comes in");
    assert!(!e.is_syncing(), "its snapshot arrived");
    // Its downings count no more.
    e.push(node(3), Push::Down(vec![node(2)]));
    assert!(e.take_output().events.is_empty());
}

#[test]
fn a_node_is_superseded_only_when_a_quorum_says_it_was_downed() {
    let (mut e, _) = majority_engine(1, &[1, 2, 3]);
    e.push(node(2), Push::Down(vec![node(1)]));
    assert!(!e.is_superseded(), "one peer's word is not enough");
    assert!(e.grants_lease(node(2)));
    e.push(node(3), Push::Down(vec![node(1)]));
    assert!(e.is_superseded());
    assert!(e.take_output().effects.contains(&Effect::Downed));
    // A downed node decides nothing more and grants nothing.
    assert!(!e.grants_lease(node(2)));
    assert_eq!(
        e.admit(&new_item("b", "T")),
        Err(StartOutcome::NoQuorum { node: node(1) })
    );
}

#[test]
fn a_peers_downing_of_a_node_heard_here_is_not_adopted() {
    let (mut e, _) = majority_engine(1, &[1, 2, 3]);
    e.push(node(2), Push::Down(vec![node(3)]));
    assert_eq!(e.take_output().pushes, vec![], "node 3 is heard here");
    assert!(e.grants_lease(node(3)));
    assert!(!e.refuses_starts_from(node(3)));
    // Not heard here either: adopted, and said (so that every peer counts this node).
    e.gossip(gossip(&[1, 2]));
    e.take_output();
    e.push(node(2), Push::Down(vec![node(3)]));
    assert_eq!(e.take_output().pushes, vec![Push::Down(vec![node(3)])]);
    assert!(!e.grants_lease(node(3)));
    // Nor does it take the hand-overs of a node it downed (what that node restarted on
    // a stale view would come back), but for its own.
    assert!(e.refuses_starts_from(node(3)));
    assert!(!e.refuses_starts_from(node(2)) && !e.refuses_starts_from(node(1)));
}

#[test]
fn a_hand_over_under_an_epoch_another_node_already_owns_is_refused() {
    let mut e = engine(1, &[1, 2, 3]);
    // Node 3 took the child over under epoch 2 (its node 2 was downed meanwhile).
    e.push(node(3), upsert("a", entry("T", node(3), 2)));
    e.take_output();
    // Node 2's late hand-over under that epoch is stale.
    assert_eq!(
        e.admit(&moved_item("a", "T", 2)),
        Err(StartOutcome::AlreadyStarted { node: node(3) })
    );
    assert_eq!(e.take_output(), Output::default());
    // A move by node 3 itself comes under the next epoch: admitted.
    assert_eq!(e.admit(&moved_item("a", "T", 3)), Ok(3));
}

// ---- claims of new ids ----

/// An id that `before` owns in the ring of `members` and `after` once `joiner` joined.
fn id_moving_to_joiner(members: &[u16], before: u16, joiner: u16) -> String {
    let old = Ring::new(members.iter().map(|p| node(*p)));
    let new = Ring::new(members.iter().chain([&joiner]).map(|p| node(*p)));
    (0..)
        .map(|i| format!("id-{i}"))
        .find(|id| old.owner(id) == Some(node(before)) && new.owner(id) == Some(node(joiner)))
        .expect("some id moves to the joiner")
}

fn tally(granted: usize, started: Option<u16>, pending: Option<u16>) -> super::Tally {
    super::Tally {
        granted,
        started: started.map(node),
        pending: pending.map(node),
    }
}

fn unclaim(id: &str) -> Push {
    Push::Unclaim(vec![id.to_string()])
}

#[test]
fn two_starts_of_a_new_id_on_views_that_differ_by_a_joiner_are_settled_before_either_is_acknowledged(
) {
    use crate::core::item::ClaimAnswer::{Granted, Pending, Started};
    // B (2) does not see the joiner J (4) yet; A (1), C (3) and J do. B owns x in its
    // view, J in the others'. Both start x at once: A hears J first, C hears B first.
    let x = id_moving_to_joiner(&[1, 2, 3], 2, 4);
    let (mut a, _) = majority_engine(1, &[1, 2, 3, 4]);
    let (mut b, _) = majority_engine(2, &[1, 2, 3]);
    let (mut c, _) = majority_engine(3, &[1, 2, 3, 4]);
    let (mut j, _) = majority_engine(4, &[1, 2, 3, 4]);
    let (bx, jx) = (new_item(&x, "T"), new_item(&x, "T"));
    assert_eq!(b.start_target(&bx, 0), None, "B starts it itself");
    assert_eq!(a.start_target(&jx, 0), Some(node(4)), "A forwards it to J");
    assert_eq!(b.admit(&bx), Ok(1));
    assert_eq!(j.admit(&jx), Ok(1));
    assert_eq!(b.claim_peers(&bx, None), Some(vec![node(1), node(3)]));
    assert_eq!(b.claim_heard(None, &[node(1), node(3)], &[]), (1, vec![]));
    assert_eq!(
        j.claim_peers(&jx, None),
        Some(vec![node(1), node(2), node(3)])
    );
    assert_eq!(
        j.claim_heard(None, &[node(1), node(2), node(3)], &[]),
        (2, vec![])
    );
    assert_eq!(
        b.claim_peers(&moved_item(&x, "T", 3), None),
        None,
        "a move is fenced"
    );
    let ids = [x.clone()];
    assert_eq!(a.claim(node(4), &ids), vec![Granted]);
    assert_eq!(a.claim(node(2), &ids), vec![Pending(node(4))]);
    assert_eq!(c.claim(node(2), &ids), vec![Granted]);
    assert_eq!(c.claim(node(4), &ids), vec![Pending(node(2))]);
    assert_eq!(
        b.claim(node(4), &ids),
        vec![Pending(node(2))],
        "B's own start"
    );
    // Neither is acknowledged: each lets its grants go, and tries again a moment later.
    assert_eq!(
        b.claimed(&bx, 1, &tally(1, None, Some(4))),
        Err(StartOutcome::Contended { node: node(4) })
    );
    assert_eq!(b.take_output(), out(vec![unclaim(&x)], vec![], vec![]));
    assert_eq!(
        j.claimed(&jx, 2, &tally(1, None, Some(2))),
        Err(StartOutcome::Contended { node: node(2) })
    );
    assert_eq!(j.take_output(), out(vec![unclaim(&x)], vec![], vec![]));
    for peer in [&mut a, &mut c] {
        for from in [2, 4] {
            peer.push(node(from), unclaim(&x));
        }
        peer.take_output();
    }
    // B tries again first, and wins; its entry reaches the others.
    assert_eq!(b.admit(&bx), Ok(1));
    assert_eq!(a.claim(node(2), &ids), vec![Granted]);
    assert_eq!(c.claim(node(2), &ids), vec![Granted]);
    assert_eq!(b.claimed(&bx, 1, &tally(2, None, None)), Ok(()));
    let b1 = TestChild::new("b1", "T");
    assert_eq!(
        b.started(&bx, 1, Ok(b1)),
        StartOutcome::Started {
            node: node(2),
            epoch: 1
        }
    );
    let published = b.take_output().pushes;
    assert_eq!(published, vec![upsert(&x, entry("T", node(2), 1))]);
    // J's next try is refused with the node that runs it, before and after the entry
    // reached J.
    assert_eq!(j.admit(&jx), Ok(1));
    assert_eq!(a.claim(node(4), &ids), vec![Pending(node(2))]);
    for peer in [&mut a, &mut c, &mut j] {
        peer.push(node(2), published[0].clone());
        peer.take_output();
    }
    assert_eq!(a.claim(node(4), &ids), vec![Started(node(2))]);
    assert_eq!(
        j.claimed(&jx, 2, &tally(0, Some(2), None)),
        Err(StartOutcome::AlreadyStarted { node: node(2) })
    );
    j.take_output();
    assert_eq!(
        j.admit(&jx),
        Err(StartOutcome::AlreadyStarted { node: node(2) })
    );
}

#[test]
fn a_grant_holds_an_id_for_its_claimant_until_its_entry_arrives_it_leaves_or_it_ages_out() {
    use crate::core::item::ClaimAnswer::{Granted, Pending};
    let (mut e, t0) = majority_engine(1, &[1, 2, 3]);
    let ids = ["a".to_string()];
    assert_eq!(e.claim(node(2), &ids), vec![Granted]);
    assert_eq!(e.claim(node(2), &ids), vec![Granted], "its own claim again");
    assert_eq!(e.claim(node(3), &ids), vec![Pending(node(2))]);
    assert_eq!(
        e.admit(&new_item("a", "T")),
        Err(StartOutcome::Contended { node: node(2) }),
        "this node's own start waits its turn"
    );
    assert_eq!(
        e.take_output(),
        Output::default(),
        "a grant publishes nothing"
    );
    // Its entry arrived: the registry holds the id now.
    e.push(node(2), upsert("a", entry("T", node(2), 1)));
    e.push(node(2), Push::Remove(vec![("a".to_string(), 1)]));
    assert_eq!(e.claim(node(3), &ids), vec![Granted]);
    // Another's release changes nothing; its own does.
    e.push(node(2), unclaim("a"));
    assert_eq!(e.claim(node(2), &ids), vec![Pending(node(3))]);
    e.push(node(3), unclaim("a"));
    assert_eq!(e.claim(node(2), &ids), vec![Granted]);
    // Aged out.
    e.set_now(t0 + super::claims::CLAIM_TTL);
    assert_eq!(e.claim(node(3), &ids), vec![Granted]);
    // Its claimant left.
    e.push(node(3), Push::Leaving);
    e.gossip(gossip(&[1, 2]));
    e.take_output();
    assert_eq!(e.view.members(), &[node(1), node(2)]);
    assert_eq!(e.admit(&new_item("a", "T")), Ok(2));
}

#[test]
fn the_grants_of_a_burst_of_starts_give_their_room_back_once_settled() {
    use crate::core::item::ClaimAnswer;
    let (mut e, _) = majority_engine(1, &[1, 2, 3]);
    let ids: Vec<String> = (0..10_000).map(|i| format!("burst-{i}")).collect();
    assert!(e
        .claim(node(2), &ids)
        .iter()
        .all(|a| *a == ClaimAnswer::Granted));
    let full = e.claims.capacity();
    assert!(full >= 10_000);
    // Their entries arrive: every grant is over, and the map gives its room back.
    for id in &ids[..9_990] {
        e.push(node(2), upsert(id, entry("T", node(2), 1)));
    }
    assert_eq!(e.claims.len(), 10);
    assert!(
        e.claims.capacity() <= 64,
        "{} of {full}",
        e.claims.capacity()
    );
    // The rest are let go by their claimant, or age out.
    e.push(node(2), unclaim(&ids[9_990]));
    assert_eq!(e.claims.len(), 9);
    e.set_now(e.downing.now() + super::claims::CLAIM_TTL);
    e.age_claims();
    assert!(e.claims.is_empty());
    assert_eq!(
        e.claim(node(3), &ids[..1]),
        vec![ClaimAnswer::Started(node(2))]
    );
}

#[test]
fn a_claim_is_refused_where_the_id_runs_or_starts_and_a_downed_node_abstains() {
    use crate::core::item::ClaimAnswer::{Abstain, Pending, Started};
    let (mut e, _) = majority_engine(1, &[1, 2, 3]);
    start(&mut e, "here", &TestChild::new("h", "T"));
    e.push(node(3), upsert("there", entry("T", node(3), 1)));
    assert_eq!(e.admit(&new_item("starting", "T")), Ok(1));
    let ids: Vec<String> = ["here", "there", "starting"].map(String::from).to_vec();
    assert_eq!(
        e.claim(node(2), &ids),
        vec![Started(node(1)), Started(node(3)), Pending(node(1))]
    );
    e.superseded();
    e.take_output();
    assert_eq!(e.claim(node(2), &ids), vec![Abstain; 3]);
}

#[test]
fn a_claim_short_of_a_quorum_starts_nothing_and_a_failed_start_lets_its_claim_go() {
    let (mut e, _) = majority_engine(1, &[1, 2, 3]);
    let item = new_item("a", "T");
    assert_eq!(e.claim_peers(&item, None), Some(vec![node(2), node(3)]));
    assert_eq!(e.claim_heard(None, &[node(2), node(3)], &[]), (1, vec![]));
    assert_eq!(e.admit(&item), Ok(1));
    assert_eq!(
        e.claimed(&item, 1, &tally(0, None, None)),
        Err(StartOutcome::NoQuorum { node: node(1) }),
        "no peer answered"
    );
    assert_eq!(e.take_output(), out(vec![unclaim("a")], vec![], vec![]));
    assert_eq!(e.admit(&item), Ok(1), "the id is free again");
    assert_eq!(e.claimed(&item, 1, &tally(1, None, None)), Ok(()));
    assert_eq!(
        e.started(&item, 1, Err(StartFailure::Hook("boom".into()))),
        StartOutcome::HookPanicked {
            node: node(1),
            message: "a: boom".into()
        }
    );
    assert_eq!(e.take_output(), out(vec![unclaim("a")], vec![], vec![]));
    // Alone, nothing is claimed.
    assert_eq!(engine(1, &[1]).claim_peers(&item, None), None);
    // But a start forwarded here by a node this view lacks (a joiner that hears of
    // nobody yet) is claimed from that node, which must grant it: a node that does
    // not see the joiner may be starting the id itself, and asks that node too.
    let (joiner, _) = majority_engine(4, &[4]);
    assert_eq!(
        joiner.claim_peers(&item, Some(node(1))),
        Some(vec![node(1)])
    );
    assert_eq!(
        joiner.claim_heard(Some(node(1)), &[node(1)], &[]),
        (1, vec![])
    );
    // One it knows counts once.
    assert_eq!(
        e.claim_peers(&item, Some(node(2))),
        Some(vec![node(2), node(3)])
    );
    assert_eq!(
        e.claim_heard(Some(node(2)), &[node(2), node(3)], &[]),
        (1, vec![])
    );
}

// ---- metadata and the registry hooks ----

#[test]
fn metadata_is_set_by_the_owner_and_published_and_others_say_where_it_runs() {
    use crate::core::item::MetaOutcome;
    use crate::metadata::{shared, Metadata};
    let mut e = engine(1, &[1, 2]);
    let a1 = TestChild::new("a1", "T");
    start(&mut e, "a", &a1);
    let meta = shared(Metadata::new().with("k", "v").tagged("region:eu"));
    assert_eq!(e.update_meta("a", meta.clone()), MetaOutcome::Updated);
    let mut tagged = entry("T", node(1), 1);
    tagged.meta = meta.clone();
    assert_eq!(
        e.take_output(),
        out(vec![upsert("a", tagged)], vec![], vec![]),
        "the entry, same epoch, new metadata"
    );
    assert_eq!(e.update_meta("a", meta.clone()), MetaOutcome::Updated);
    assert_eq!(
        e.take_output(),
        Output::default(),
        "no change: nothing sent"
    );
    assert_eq!(e.update_meta("nobody", meta.clone()), MetaOutcome::NotFound);
    e.push(node(2), upsert("b", entry("T", node(2), 1)));
    e.take_output();
    assert_eq!(
        e.update_meta("b", meta),
        MetaOutcome::NotHere { owner: node(2) }
    );
    assert_eq!(e.take_output(), Output::default());
}

#[test]
fn metadata_update_waits_while_the_child_moves() {
    use crate::core::item::MetaOutcome;
    use crate::metadata::{shared, Metadata};
    let mut e = engine(1, &[1, 2]);
    let a1 = TestChild::new("a1", "T");
    start(&mut e, "a", &a1);
    let moves = e.begin_moves(vec![("a".into(), node(2), 2)]);
    assert_eq!(moves.len(), 1);
    let meta = shared(Metadata::new().tagged("x"));
    assert_eq!(e.update_meta("a", meta), MetaOutcome::Busy);
    assert_eq!(e.take_output(), Output::default());
}

#[test]
fn registry_hooks_hear_of_registrations_and_removals_while_wanted() {
    let mut e = engine(1, &[1, 2]);
    e.push(node(2), upsert("quiet", entry("T", node(2), 1)));
    assert_eq!(e.take_output().events, vec![], "not recorded unless wanted");
    e.registry.record_changes(true);
    e.push(node(2), upsert("b", entry("T", node(2), 1)));
    let registered = HubEvent::ChildRegistered {
        id: "b".into(),
        type_name: "T".into(),
        owner: node(2),
        epoch: 1,
    };
    assert_eq!(e.take_output().events, vec![registered]);
    // The same owner and epoch again (a metadata change, a snapshot): no news.
    let mut tagged = entry("T", node(2), 1);
    tagged.meta = crate::metadata::shared(crate::metadata::Metadata::new().tagged("t"));
    e.push(node(2), upsert("b", tagged));
    assert_eq!(e.take_output().events, vec![]);
    // Moved: registered again, on its new owner.
    e.push(node(2), upsert("b", entry("T", node(2), 2)));
    assert_eq!(
        e.take_output().events,
        vec![HubEvent::ChildRegistered {
            id: "b".into(),
            type_name: "T".into(),
            owner: node(2),
            epoch: 2,
        }]
    );
    e.push(node(2), Push::Remove(vec![("b".into(), 2)]));
    assert_eq!(
        e.take_output().events,
        vec![HubEvent::ChildUnregistered {
            id: "b".into(),
            owner: node(2),
        }]
    );
    // A start here is heard of too, after its own event.
    let a1 = TestChild::new("a1", "T");
    let item = super::testing::new_item("a", "T");
    let epoch = e.admit(&item).unwrap();
    e.started(&item, epoch, Ok(a1));
    let events = e.take_output().events;
    assert!(
        matches!(events[0], HubEvent::ChildStarted { .. }),
        "{events:?}"
    );
    assert_eq!(
        events[1],
        HubEvent::ChildRegistered {
            id: "a".into(),
            type_name: "T".into(),
            owner: node(1),
            epoch,
        }
    );
}

#[test]
fn a_hand_over_needs_the_lease_but_for_a_graceful_leave() {
    let mut e = engine(1, &[1, 2, 3]);
    assert!(e.moves_need_lease(), "a move is a write");
    e.leave();
    assert!(!e.moves_need_lease(), "leaving, the others let it go");
    let mut downed = engine(1, &[1, 2, 3]);
    downed.superseded();
    assert!(downed.moves_need_lease(), "downed: it hands nothing over");
}

#[test]
fn removals_are_told_to_peers_but_under_divergence() {
    let (mut e, _) = majority_engine(3, &[2, 3, 5]);
    e.push(node(2), upsert("p", entry("T", node(2), 1)));
    e.push(node(2), Push::Remove(vec![("p".into(), 1)]));
    assert_eq!(e.removals_to_tell(), vec![("p".into(), 1, true)]);
    let mut d = engine(3, &[2, 3, 5]);
    d.push(node(2), upsert("p", entry("T", node(2), 1)));
    d.push(node(2), Push::Remove(vec![("p".into(), 1)]));
    assert!(d.registry.removed_since("p", 1));
    assert_eq!(d.removals_to_tell(), Vec::new());
}

#[test]
fn a_joiner_that_hears_of_few_members_yet_counts_its_quorum_over_the_members_its_peers_name() {
    use crate::core::item::ClaimAnswer::{Granted, Pending};
    // J (4) joined through H (1) and hears of H alone yet; H sees every node. O (2) does
    // not see J yet, and its failure detector does not hear H for a moment (H stays a
    // member, unreachable): it asks N (3) alone. J and O claim x at once: the nodes they
    // ask first do not overlap. (Before the quorum counted the members the answers
    // name, both starts were acknowledged: J took one grant of its view {H, J} for a
    // quorum.)
    let x = "x".to_string();
    let ids = [x.clone()];
    let (mut h, _) = majority_engine(1, &[1, 2, 3, 4]);
    let (mut o, _) = majority_engine(2, &[1, 2, 3]);
    o.gossip(gossip(&[2, 3]));
    o.take_output();
    let (mut n, _) = majority_engine(3, &[1, 2, 3]);
    let (mut j, _) = majority_engine(4, &[1, 4]);
    let (ox, jx) = (new_item(&x, "T"), new_item(&x, "T"));
    assert_eq!(o.admit(&ox), Ok(1));
    assert_eq!(j.admit(&jx), Ok(1));
    assert_eq!(o.claim_peers(&ox, None), Some(vec![node(3)]));
    assert_eq!(j.claim_peers(&jx, Some(node(1))), Some(vec![node(1)]));
    assert_eq!(n.claim(node(2), &ids), vec![Granted]);
    assert_eq!(h.claim(node(4), &ids), vec![Granted]);
    let named = |e: &super::Engine<TestChild>| e.view.members().to_vec();
    // O's answer names O's own members: it needs one grant, and has it.
    assert_eq!(
        o.claim_heard(None, &[node(3)], &named(&n)),
        (1, vec![]),
        "an unreachable member of O's own view is not asked again"
    );
    assert_eq!(o.claimed(&ox, 1, &tally(1, None, None)), Ok(()));
    // H named four members: J needs two grants, and asks the two it did not know.
    let (needed, more) = j.claim_heard(Some(node(1)), &[node(1)], &named(&h));
    assert_eq!((needed, more.clone()), (2, vec![node(2), node(3)]));
    assert_eq!(o.claim(node(4), &ids), vec![Pending(node(2))]);
    assert_eq!(n.claim(node(4), &ids), vec![Pending(node(2))]);
    assert_eq!(
        j.claimed(&jx, needed, &tally(1, None, Some(2))),
        Err(StartOutcome::Contended { node: node(2) })
    );
}

#[test]
fn a_grant_to_a_claimant_the_granter_does_not_see_yet_holds() {
    use crate::core::item::ClaimAnswer::{Granted, Pending};
    // N (3) does not see the joiner J (4) yet; J's claim of x is granted there, and
    // holds: another claim waits, and so does N's own start.
    let ids = ["x".to_string()];
    let (mut n, t0) = majority_engine(3, &[1, 2, 3]);
    assert_eq!(n.claim(node(4), &ids), vec![Granted]);
    assert_eq!(n.claim(node(2), &ids), vec![Pending(node(4))]);
    assert_eq!(
        n.admit(&new_item("x", "T")),
        Err(StartOutcome::Contended { node: node(4) })
    );
    n.age_claims();
    assert_eq!(
        n.claim(node(2), &ids),
        vec![Pending(node(4))],
        "kept by a tick"
    );
    // A claimant that was a member and is gone lets it go; so does age.
    n.set_now(t0 + super::claims::CLAIM_TTL);
    assert_eq!(n.claim(node(2), &ids), vec![Granted]);
    n.push(node(2), Push::Leaving);
    n.gossip(gossip(&[1, 3]));
    n.take_output();
    assert_eq!(n.view.members(), &[node(1), node(3)]);
    assert_eq!(n.claim(node(1), &ids), vec![Granted]);
}
