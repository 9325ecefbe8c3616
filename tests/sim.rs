//! The simulator: determinism, seeds of the faults the library survives (crashes,
//! message faults, pauses, partitions, one-way cuts), and the expected failures the
//! seeds found that are not fixed yet.

use std::time::Duration;

use processhub::sim::{check, Sim, SimConfig, Workload};

fn small() -> Workload {
    Workload {
        plain: 10,
        replicated: 10,
        ship_calls: false,
        clients_per_node: 2,
        interval: Duration::from_millis(20),
    }
}

#[test]
fn a_quiet_run_keeps_every_promise() {
    let mut sim = Sim::new(1, SimConfig::default());
    let w = small();
    let history = w.start(&mut sim);
    sim.run_for(Duration::from_secs(2));
    let report = check(&mut sim, &w, &history);
    assert!(report.passed(), "{report:?}");
    assert!(
        history
            .ops()
            .iter()
            .filter(|o| matches!(o.outcome, Some(Ok(_))))
            .count()
            > 100
    );
}

use processhub::sim::{FaultKind, Scenario};

fn scenario(faults: &[FaultKind]) -> Scenario {
    Scenario {
        workload: small(),
        duration: Duration::from_secs(3),
        faults: faults.to_vec(),
        ..Scenario::default()
    }
}

/// A run's outcome counts the writes to replicated counters that their standbys'
/// word acknowledged (`core::held`) and those their primary's reply did: with no
/// fault, nearly every write from another node is answered by the standbys.
#[test]
fn a_quiet_run_reports_writes_acknowledged_by_their_standbys() {
    let outcome = scenario(&[]).run(5);
    assert!(outcome.report.passed(), "{:?}", outcome.report);
    let (standbys, primary) = outcome.writes_acknowledged;
    assert!(
        standbys >= 20,
        "{standbys} by the standbys, {primary} by the primary"
    );
    assert!(
        standbys > 4 * primary,
        "{standbys} by the standbys, {primary} by the primary"
    );
    // No more than the writes acknowledged in all.
    assert!(standbys + primary <= outcome.calls.1 as u64);
}

/// `s` with 20 plain and 20 replicated counters, for 4 s.
fn bigger(s: Scenario) -> Scenario {
    Scenario {
        workload: Workload {
            plain: 20,
            replicated: 20,
            ..Workload::default()
        },
        duration: Duration::from_secs(4),
        ..s
    }
}

/// Runs `s` from each of `seeds`, on every core; each must keep every promise. A
/// failure prints the command that replays it.
fn assert_seeds_pass(s: &Scenario, seeds: impl IntoIterator<Item = u64>) {
    let seeds: Vec<u64> = seeds.into_iter().collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (seeds, failures) = (&seeds, &failures);
            scope.spawn(move || {
                for seed in seeds.iter().skip(t).step_by(threads) {
                    let out = s.run(*seed);
                    if !out.report.passed() || out.calls.1 <= 100 {
                        failures.lock().unwrap().push(format!(
                            "seed {seed} (replay: {}): {} calls acknowledged\n{:#?}\n{:#?}",
                            s.replay_command(*seed),
                            out.calls.1,
                            out.plan,
                            out.report
                        ));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Whether invariant `name` failed in `out`.

#[test]
fn the_same_seed_gives_the_same_trace() {
    let s = scenario(&[FaultKind::Crash, FaultKind::Delay]);
    let (a, b) = (s.run(42), s.run(42));
    assert_eq!(a.plan, b.plan);
    assert_eq!(a.calls, b.calls);
    assert_eq!(a.report, b.report, "seed 42 ran twice");
    assert_ne!(
        s.run(43).report.trace,
        a.report.trace,
        "another seed, another run"
    );
}

/// Not only the fingerprint: every event of every hub, in the same order, and the same
/// acknowledgements, run after run, under the faults that wake many tasks at once
/// (connections lost and made again, leases lost). Tokio's `watch` channel woke its
/// waiters in an order drawn from each runtime's own random seed; two runs of one
/// seed then ordered a node's events of one instant differently (and, rarely, acked
/// different calls), so a soak's failing seed did not always replay.
#[test]
fn the_same_seed_gives_the_same_events_in_the_same_order() {
    let s = Scenario {
        record_events: true,
        ..scenario(&[FaultKind::Crash, FaultKind::Pause, FaultKind::Partition])
    };
    for seed in [1, 2] {
        let (a, b) = (s.run(seed), s.run(seed));
        assert!(!a.events.is_empty());
        assert_eq!(a.calls, b.calls, "seed {seed}");
        assert_eq!(a.writes_acknowledged, b.writes_acknowledged, "seed {seed}");
        if let Some(i) =
            (0..a.events.len().min(b.events.len())).find(|&i| a.events[i] != b.events[i])
        {
            panic!(
                "seed {seed}: event {i} differs between two runs:\n  {}\n  {}",
                a.events[i], b.events[i]
            );
        }
        assert_eq!(a.events.len(), b.events.len(), "seed {seed}");
    }
}

#[test]
fn seeds_of_crashes_and_slow_links_keep_every_promise() {
    assert_seeds_pass(&scenario(&[FaultKind::Crash, FaultKind::Delay]), 0..10);
}

/// The seeds CI runs of the faults the library survives today.
const SURVIVED: std::ops::Range<u64> = 100..150;

#[test]
fn fifty_seeds_of_crashes_restarts_and_slow_links_keep_every_promise() {
    let s = scenario(&[FaultKind::Crash, FaultKind::Delay, FaultKind::Delay]);
    assert_seeds_pass(&s, SURVIVED);
}

/// Turned around (it was an expected failure): a node paused for about three times the
/// failure-detection time under writes. The others (a majority) down it once its lease
/// must have run out and take over; it serves nothing after waking (its lease ran out),
/// learns it was downed and rejoins as a new incarnation. No acknowledged write of a
/// replicated counter is lost, no value is acknowledged twice; the plain counters of
/// the paused node restart from their start state, as a crashed node's do.
#[test]
fn a_pause_keeps_every_promise() {
    let s = scenario(&[FaultKind::Pause]);
    assert_seeds_pass(&s, 1..9);
}

/// Found by the simulator (crash faults with an immediate restart): a node crashes and
/// a fresh node joins before the survivors restarted the crashed node's children. The
/// survivors re-assign a child whose ring owner is now the joiner to the joiner; the
/// joiner, which never saw the dead node, learns of it only because they tell it
/// (`Push::Assigned`). Before that fix the entry stayed pending and the child
/// unreachable for ever.
#[test]
fn a_restart_that_joins_at_once_takes_over_the_children_it_owns_now() {
    assert_seeds_pass(
        &scenario(&[FaultKind::QuickRestart, FaultKind::Delay]),
        0..20,
    );
}

/// The seeds CI runs of message faults: per-frame loss (retransmitted, as TCP does),
/// duplication, reordering, connection resets, and a slow node, beside a crash and a
/// slow link. What they found, fixed: a stop that met a move under way (the hand-over
/// brought the child back), a move whose answer a reset lost (both copies served until
/// the rollback), a stop whose answer a reset lost (reported as not found), an old
/// owner's entry arriving after the new owner's removal (the stopped child stayed in one
/// registry), a prediction of a restart that ignored the predicted node's own entry,
/// and link timing across the nodes' clocks.
const MESSAGE_FAULTS: std::ops::Range<u64> = 200..250;
/// Crashes and every message fault.
const MESSAGE_FAULT_KINDS: [FaultKind; 6] = [
    FaultKind::Crash,
    FaultKind::Drop,
    FaultKind::Duplicate,
    FaultKind::Reorder,
    FaultKind::Reset,
    FaultKind::Delay,
];

#[test]
fn fifty_seeds_of_lost_duplicated_reordered_and_reset_frames_keep_every_promise() {
    let s = scenario(&MESSAGE_FAULT_KINDS);
    assert_seeds_pass(&s, MESSAGE_FAULTS);
}

#[test]
fn seeds_of_a_slow_node_keep_every_promise() {
    let s = scenario(&[FaultKind::Slow, FaultKind::Crash, FaultKind::Reorder]);
    assert_seeds_pass(&s, 300..315);
}

/// Two crashes within the time it takes to rebuild the standby sets, the second with a
/// fresh node joining at once. This was an expected failure (seed 64: the joiner's
/// registry lacked a replicated child's standbys, and it restarted the child from its
/// start state over the in-step copy); turned around. The cause was the simulator's: a
/// crashed node's connections closed before the frames it had sent arrived, where TCP
/// delivers a killed process's data before its reset. With the crash as the kernel
/// makes it, seed 64 and 400 seeds of this mix keep every promise.
#[test]
fn two_crashes_in_a_row_with_a_node_joining_at_once_keep_every_promise() {
    let s = scenario(&[
        FaultKind::Crash,
        FaultKind::QuickRestart,
        FaultKind::Delay,
        FaultKind::Drop,
    ]);
    let s = bigger(s);
    assert_seeds_pass(&s, [64].into_iter().chain(400..415));
}

/// A pause and a crash (a fresh node joining in its place) on 3 nodes: the example's
/// defaults with `--faults pause,crash`.
fn pause_and_crash() -> Scenario {
    Scenario {
        faults: vec![FaultKind::Pause, FaultKind::Crash],
        ..Scenario::default()
    }
}

/// Found by the simulator once gossip brings a resumed node's peers back one by one
/// (the multi-process pause test saw it 1 run in 12): a paused node is downed and
/// rejoins; a peer's connection opens and its registry arrives before gossip counts
/// that peer as a member here. The rejoined node took the peer's children for those of
/// a dead node and restarted them, under a higher epoch: the peer stopped its running
/// instances as duplicates, and their acknowledged writes were lost. Only the children
/// of a node this view counted as a member and no longer does are restarted now.
#[test]
fn a_rejoined_node_restarts_nothing_of_a_peer_it_has_not_heard_of_yet() {
    assert_seeds_pass(&pause_and_crash(), [755, 886]);
}

/// Found by the same simulator change, two ways a stopped child came back:
/// - seed 705: a node paused past its downing woke on its old view, restarted a child
///   of a dead node and handed it to the joiner that had taken it over and stopped it
///   meanwhile. A node now takes no hand-over from a node it downed.
/// - seed 580: a replicated child moved while one node did not hear its new owner yet,
///   and stopped before that connection opened: the old owner's entry stayed there for
///   good. The old owner now says where the child went (`Push::Moved`).
#[test]
fn a_stopped_child_stays_stopped_after_a_pause_a_crash_and_a_join() {
    assert_seeds_pass(&pause_and_crash(), [580, 705]);
}

/// Replicated counters whose writes ship as calls (`ship = "calls"`), replayed by the
/// copy promoted. Seeds 110, 120, 170 and 176 found a write applied twice: a write
/// refused before it ran (its node woke from a pause past its lease) still shipped its
/// call, which the standby promoted meanwhile replayed, and the caller's retry ran it
/// again there. A call now ships only if its method ran to its reply; otherwise the
/// state goes, which is harmless.
#[test]
fn writes_shipped_as_calls_survive_pauses_and_crashes_applied_once() {
    let s = Scenario {
        workload: Workload {
            ship_calls: true,
            ..Workload::default()
        },
        ..pause_and_crash()
    };
    assert_seeds_pass(&s, [110, 120, 170, 176].into_iter().chain(0..16));
}

/// Found by a sweep of 5 nodes with a partition and a crash (a fresh node joining in
/// its place): a node cut off is downed, its child is promoted elsewhere and stopped;
/// the joiner, which heard the cut-off node's snapshot before it heard of the downing,
/// predicts a restart of the child on its standby and tells that node so
/// (`Push::Assigned`) for ever. The told node stopped it under that epoch: it now says
/// the removal again, which ends the prediction. (Seeds 18 and 40; 300 seeds of this
/// mix failed 9 times before, 6 now: the others were left for the next round.)
///
/// The next round, three more ways a stopped child came back on this mix:
/// - seed 17: the joiner never heard the stop at all (it connected to the stopping node
///   later), so it took the child in from the cut-off node's snapshot and had it
///   restarted on that node's new life. A connection now also carries the removals its
///   sender remembers (`Push::Removed`).
/// - seeds 250 and 260: the cut-off node, back after the heal and not yet aware it was
///   downed, handed the child over to the joiner, which answered that a third node
///   (promoted in its place) runs it; the mover recorded the joiner as the owner,
///   under the promoted copy's epoch, so that entry outlived the stop. A node now
///   hands nothing over without the lease of the life the children belong to (but on
///   a graceful leave).
/// - seeds 236, 271 and 290 pass with those.
///
/// 300 seeds of this mix now pass.
#[test]
fn a_joiners_prediction_of_a_stopped_child_ends_when_its_node_says_it_stopped() {
    let s = five_nodes(&[FaultKind::Partition, FaultKind::Crash]);
    assert_seeds_pass(&s, [18, 40, 17, 236, 250, 260, 271, 290]);
}

/// The command line's scenario on 5 nodes, with `faults`.
fn five_nodes(faults: &[FaultKind]) -> Scenario {
    Scenario {
        config: processhub::sim::SimConfig {
            nodes: 5,
            ..processhub::sim::SimConfig::default()
        },
        faults: faults.to_vec(),
        ..Scenario::default()
    }
}

/// Found by a sweep of 5 nodes with a pause, a partition and a crash: 14 of seeds 1-40
/// lost acknowledged writes of replicated counters (2, 5, 6, 7, 8, 13, 14, 16, 28, 31,
/// 33, 36, 39, and 417 of a longer sweep). Every holder of a copy of one was gone at once: the primary's node
/// crashed, or was cut off or paused past its lease and downed, and so were its
/// standbys'. The downed ones rejoined and dropped what they held, and the majority
/// restarted the counter from its start state. Now a rejoining node keeps those states
/// aside (salvage), tells its peers, and a restart with no copy of its own fetches the
/// newest (`core::engine::salvage`). In seed 417 the rejoined node restarted one itself
/// while its former instance was still finishing a call before giving up its state: a
/// restart or a fetch of a state being taken now waits for it. In seed 228 the
/// cut-off standby rejoined the very moment its id restarted from the start state
/// elsewhere: a restart from the start state now waits while a downed holder of a copy
/// is heard again (it rejoins in a moment); and a promotion refused for want of a lease
/// keeps its copy as salvage instead of losing it.
///
/// Seed 17 of the same mix never converged: the paused node, as it woke and before it
/// heard it was downed, downed a peer on its stale view, and its new life inherited
/// that decision, refusing that peer's leases and hand-overs for good. A new life now
/// forgets what its old one decided alone.
/// Two seeds of the heavy 5-node mix (`pause,partition,one-way,crash,quick-restart,delay`)
/// that restarted a replicated counter from its start state while its latest state
/// lived on. Seed 208: a standby was promoted, and its resync reached one new standby
/// while the other was cut off; the shipment was published only once every standby
/// took it (or its deadline passed), the primary crashed before, and the restart knew
/// only the old, dead standby. The nodes that took a shipment now join the published
/// set at once. Seed 287: the cut-off primary, downed, was heard again as the child
/// restarted; the wait for a rejoining holder's salvage looked at the entry's owner,
/// which named the restarting node by then, not at the node it restarts from.
#[test]
fn a_copy_reached_by_an_unfinished_shipment_or_held_by_a_rejoining_primary_is_not_lost() {
    let s = five_nodes(&[
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::OneWay,
        FaultKind::Crash,
        FaultKind::QuickRestart,
        FaultKind::Delay,
    ]);
    assert_seeds_pass(&s, [208, 287]);
}

#[test]
fn a_child_whose_every_copy_holder_was_downed_or_crashed_keeps_its_acknowledged_writes() {
    let s = five_nodes(&[FaultKind::Pause, FaultKind::Partition, FaultKind::Crash]);
    assert_seeds_pass(
        &s,
        [2, 5, 6, 7, 8, 13, 14, 16, 17, 28, 31, 33, 36, 39, 417, 228]
            .into_iter()
            .chain(41..45),
    );
}

/// A node started during a partition used to be on a side of its own for the
/// simulator's failure detectors while its links to both sides stayed open, and the
/// majority downed it (5 nodes, pause,partition,crash: seeds 239, 581, 598 lost writes
/// of a plain counter moved to it). It is on side 0 now, its links cut as its failure
/// detector has them. That exposed two flaws of the engine:
/// - seed 42 (3 nodes, pause,partition,crash,delay): a node back from a pause and a
///   joiner, neither ever reached by a node cut off meanwhile, made a majority and
///   downed it; it held every registry entry, and every registry lost every one. A node
///   now downs only members whose registry reached it (`Downing::knows`), and adopts
///   the downing of the others from a peer that knew them.
/// - seed 61 (same), under a stricter quorum rule tried and set aside (see the
///   expected failure below; the seed passes without it too): a node woke from a pause
///   with a registry that missed a restart of a child elsewhere, and assigned the child
///   to a joiner at the same epoch; the tie-break of equal epochs let the joiner start
///   a second instance, which a stop then hit while the first lived on. An assignment
///   no longer takes a child over from another node's entry as new (engine test
///   `children_re_assigned_to_a_joiner_are_told_to_it_and_it_starts_them`).
#[test]
fn a_node_that_joins_during_a_partition_and_the_majority_it_makes_keep_every_promise() {
    assert_seeds_pass(
        &five_nodes(&[FaultKind::Pause, FaultKind::Partition, FaultKind::Crash]),
        [239, 581, 598],
    );
    assert_seeds_pass(&mixed(), [42, 61]);
}

/// Two fresh nodes join one side of a split of 3 (an autoscaler replacing what that
/// side lost) some time after it began; the split heals 3 s later.
fn fresh_nodes_join_one_side(
    seed: u64,
    minority: bool,
    join_after: u64,
) -> processhub::sim::Report {
    let mut sim = Sim::new(seed, SimConfig::default());
    let w = small();
    let history = w.start(&mut sim);
    sim.run_for(Duration::from_secs(1));
    // Nodes that join are on side 0.
    sim.partition(if minority { &[0, 1, 1] } else { &[1, 0, 0] });
    sim.run_for(Duration::from_millis(join_after));
    sim.add_node();
    sim.add_node();
    sim.run_for(Duration::from_secs(3));
    sim.heal_partition();
    sim.run_for(Duration::from_secs(3));
    check(&mut sim, &w, &history)
}

/// Joiners on the majority's side of a split, or on the minority's within the failure
/// detector's delay (before the split is seen): every promise holds.
#[test]
fn fresh_nodes_that_join_the_majority_of_a_split_keep_every_promise() {
    for (seed, minority, join_after) in [(3, true, 100), (4, false, 700), (5, false, 1500)] {
        let report = fresh_nodes_join_one_side(seed, minority, join_after);
        assert!(
            report.passed(),
            "seed {seed}, minority {minority}, joined {join_after} ms in: {report:?}"
        );
    }
}

/// An expected failure, kept to be turned around: two fresh nodes that join the
/// minority side of a split of 3 once the split is seen make it a majority of 5 in its
/// own eyes, while the other side, which never saw them, is a majority of the 3 it
/// knows: both sides serve the same counters, and a value is acknowledged twice.
/// Counting a joiner only once the view is whole (Akka's rule) fixes it, but leaves a
/// cluster whose majority crashed stuck until `Hub::reset_cluster_size`, even after
/// fresh nodes replace the crashed ones (73 of 150 seeds of
/// `--faults crash,quick-restart,delay,drop` then failed); the choice is for the
/// project's steering.
#[test]
fn fresh_nodes_that_join_the_minority_of_a_split_make_a_second_majority_expected_failure() {
    for (seed, join_after) in [(1, 700), (2, 1500)] {
        let report = fresh_nodes_join_one_side(seed, true, join_after);
        let single_writer = &report.checks[0];
        assert_eq!(single_writer.name, "single-writer");
        assert!(
            matches!(&single_writer.verdict, processhub::sim::Verdict::Fail(why) if why.contains("acknowledged twice")),
            "seed {seed}: fixed? turn this test around: {report:?}"
        );
    }
}

/// Turned around (it was an expected failure): one node cut off from the others for
/// twice the detection time. The majority downs it and takes over after its lease ran
/// out; the cut-off node fences itself (`NoQuorum`) and restarts nothing; on the heal it
/// learns it was downed and rejoins. Every promise holds.
#[test]
fn a_partition_keeps_every_promise() {
    let s = scenario(&[FaultKind::Partition]);
    assert_seeds_pass(&s, 1..9);
}

/// Turned around (it was an expected failure): one node's frames to the others vanish
/// while it still hears them. The others down it (it hears their `Down` and rejoins at
/// once); its new incarnation joins once the cut heals. Every promise holds.
#[test]
fn a_one_way_partition_keeps_every_promise() {
    let s = scenario(&[FaultKind::OneWay]);
    assert_seeds_pass(&s, 1..9);
}

/// Pauses, partitions, crashes (a fresh node joining in place) and slow links in one
/// run, each drawn from the seed.
fn mixed() -> Scenario {
    Scenario {
        workload: Workload {
            plain: 20,
            replicated: 20,
            ..small()
        },
        duration: Duration::from_secs(4),
        faults: vec![
            FaultKind::Pause,
            FaultKind::Partition,
            FaultKind::Crash,
            FaultKind::Delay,
        ],
        ..Scenario::default()
    }
}

/// 300 seeds of [`mixed`]. (Two of them failed while the simulator resumed a paused node
/// by running through its timers one by one, each at its own deadline, as if it had run
/// fast through its pause; it now jumps the clock, as SIGCONT does. Seed 197 failed
/// until a node took children in only under its lease.)
#[test]
fn seeds_of_pauses_partitions_crashes_and_delays_keep_every_promise() {
    let s = mixed();
    assert_seeds_pass(&s, 0..300);
}

/// Every fault at once: pauses, partitions and one-way cuts beside crashes and frames
/// lost, duplicated, reordered, delayed and reset. The soak found each of these fixes:
/// a downed node still heard is connected to (1003), one downed by a single peer still
/// removes what it stopped and adds what is unknown (1049, 1133), a stop whose answer
/// was lost counts only a removal seen (1024, 1065), a removal cancels a restart
/// predicted from its node (1103), a connection made as a former incarnation is closed
/// (1113), a prediction yields to an owner's entry (1065), a hand-over needs the
/// receiver's lease (226).
#[test]
fn seeds_of_pauses_partitions_crashes_and_message_faults_keep_every_promise() {
    let s = Scenario {
        faults: vec![
            FaultKind::Pause,
            FaultKind::Partition,
            FaultKind::OneWay,
            FaultKind::Crash,
            FaultKind::Drop,
            FaultKind::Reset,
            FaultKind::Reorder,
            FaultKind::Duplicate,
            FaultKind::Delay,
        ],
        ..mixed()
    };
    assert_seeds_pass(&s, 0..300);
}

#[test]
fn an_idle_cluster_sends_nothing_whatever_the_size_of_its_registry() {
    use processhub::sim::{Sim, SimConfig, Workload};
    let idle = |components: usize| {
        let mut sim = Sim::new(3, SimConfig::default());
        let w = Workload {
            plain: components,
            replicated: 0,
            ship_calls: false,
            clients_per_node: 0,
            interval: Duration::from_millis(20),
        };
        let _history = w.start(&mut sim);
        sim.run_for(Duration::from_secs(2));
        let sent = |sim: &Sim| {
            (0..3)
                .map(|i| sim.sent(i))
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
        };
        let before = sent(&sim);
        assert!(before.0 > 0, "the start itself was carried");
        sim.run_for(Duration::from_secs(5));
        let after = sent(&sim);
        (after.0 - before.0, after.1 - before.1)
    };
    let (small, big) = (idle(100), idle(3000));
    assert_eq!(
        small,
        (0, 0),
        "frames and bytes in 5 idle seconds, 100 children"
    );
    assert_eq!(
        big,
        (0, 0),
        "frames and bytes in 5 idle seconds, 3000 children"
    );
}

/// A call under way to a node that dies is not left to run out its timeout: once the
/// node is taken for dead, the call goes to the child's new owner.
#[test]
fn a_call_in_flight_to_a_node_that_dies_goes_to_the_new_owner_at_once() {
    use processhub::sim::SimCounter;
    let mut sim = Sim::new(
        5,
        SimConfig {
            call_timeout: Duration::from_secs(5),
            ..SimConfig::default()
        },
    );
    let w = Workload {
        plain: 30,
        replicated: 0,
        ship_calls: false,
        clients_per_node: 0,
        interval: Duration::from_millis(20),
    };
    let _history = w.start(&mut sim);
    let gone = sim.hub(2).node_id();
    let id = (0..30)
        .map(|i| format!("p-{i}"))
        .find(|id| sim.hub(0).lookup(id).is_some_and(|c| c.owner == gone))
        .expect("a counter on node 2");
    // Node 2 falls silent (frames vanish, no reset) as the call leaves node 0.
    sim.partition(&[0, 0, 1]);
    let hub = sim.hub(0).clone();
    let asked = sim.now();
    let answer = sim.run_until(0, Duration::from_secs(10), async move {
        SimCounter::handle(&hub, id).add(1).await
    });
    let took = sim.now() - asked;
    assert!(matches!(answer, Some(Ok(_))), "{answer:?}");
    // Detection (500 ms) and the restart, not the 5 s call timeout.
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

/// Found by the soak (seeds 215 and 221): a node that joined and died at once, with a
/// slow node. One survivor predicted a child's restart on a node at an epoch that node
/// never used; the node's own entry now settles the prediction.
#[test]
fn a_joiner_that_dies_at_once_leaves_no_prediction_pending() {
    let s = scenario(&[
        FaultKind::Slow,
        FaultKind::Crash,
        FaultKind::QuickRestart,
        FaultKind::Reorder,
    ]);
    let s = bigger(s);
    assert_seeds_pass(&s, [215, 221]);
}

/// The three first nodes start the same 100 new ids at once, round after round, while a
/// fresh node joins; each member hears of the joiner, and the joiner of each member, at a
/// moment of its own (`join_spread`), so views differ for a while and the joiner's may
/// lack members. Returns the ids whose start more than one node acknowledged, and how
/// many ids no node did.
fn race_starts_across_a_join(seed: u64, rounds: usize) -> (Vec<(String, Vec<usize>)>, usize) {
    use processhub::sim::SimCounter;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let mut sim = Sim::new(
        seed,
        SimConfig {
            join_spread: Duration::from_millis(300),
            ..SimConfig::default()
        },
    );
    let acks: Arc<Mutex<BTreeMap<String, Vec<usize>>>> = Default::default();
    for round in 0..rounds {
        if round == 1 {
            sim.add_node();
        }
        let up: Vec<usize> = sim.up().into_iter().filter(|&i| i < 3).collect();
        let done = Arc::new(AtomicUsize::new(0));
        for &i in &up {
            let hub = sim.hub(i).clone();
            let (acks, done) = (acks.clone(), done.clone());
            sim.spawn(i, async move {
                let items = (0..100)
                    .map(|k| (format!("race-{round}-{k}"), SimCounter::default()))
                    .collect();
                let results = SimCounter::start_many(&hub, items).await;
                let mut acks = acks.lock().unwrap();
                for (k, r) in results.iter().enumerate() {
                    let by = acks.entry(format!("race-{round}-{k}")).or_default();
                    if r.is_ok() {
                        by.push(i);
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        let end = sim.now() + Duration::from_secs(30);
        while done.load(Ordering::SeqCst) < up.len() {
            assert!(sim.now() < end, "seed {seed}: round {round}'s starts end");
            sim.step();
        }
        sim.run_for(Duration::from_millis(20));
    }
    let acks = acks.lock().unwrap();
    let twice = acks
        .iter()
        .filter(|(_, by)| by.len() > 1)
        .map(|(id, by)| (id.clone(), by.clone()))
        .collect();
    let none = acks.values().filter(|by| by.is_empty()).count();
    (twice, none)
}

/// Starts racing a join whose news reaches each node at its own moment. (The
/// multi-process form of this, `starts_racing_a_join_acknowledge_one_start_per_id`,
/// acknowledged some ids of an early round twice in about one CI run of ten: a joiner
/// that heard of few members counted its claim's quorum over them. The engine test
/// `a_joiner_that_hears_of_few_members_yet_counts_its_quorum_over_the_members_its_peers_name`
/// has that interleaving; these seeds pass with and without the fix, as the simulator's
/// failure detector never suspects a live member, which that interleaving needs.)
#[test]
fn starts_racing_a_join_whose_news_spreads_unevenly_acknowledge_one_start_per_id() {
    for seed in 0..100 {
        let (twice, none) = race_starts_across_a_join(seed, 12);
        assert!(
            twice.is_empty(),
            "seed {seed}: acknowledged by more than one node: {twice:?}"
        );
        assert_eq!(none, 0, "seed {seed}: every id started");
    }
}
