//! The planner: from a new membership view and the registry, the commands for this node.
//!
//! Every node runs the same plan over the same registry, so they agree without talking:
//! entries of a node that died or left are re-assigned to their new ring owner under the
//! next epoch (marked pending until that owner confirms), and children this node hosts
//! whose ring owner changed are moved to it. The hub also runs the plan on a timer, so a
//! pending entry assigned under a view that has since changed, or a move that failed, is
//! taken up again.

use crate::core::registry::Registry;
#[cfg(test)]
use crate::core::ring::Ring;
use crate::node::NodeId;

/// What this node must do after a membership change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    /// Start `id` here from its start state: its owner `from` died or left.
    StartLocal {
        /// The child.
        id: String,
        /// The epoch it runs under here.
        epoch: u64,
        /// The node it ran on.
        from: NodeId,
    },
    /// `id` ran on `node`, which died or left, and stays down (`on_node_death =
    /// "stay_down"`): it is out of the registry; report it.
    Down {
        /// The child.
        id: String,
        /// The node it ran on.
        node: NodeId,
    },
    /// Move `id`, which runs here, to its new ring owner `to`.
    MoveTo {
        /// The child.
        id: String,
        /// Its new owner.
        to: NodeId,
        /// The epoch it runs under there.
        epoch: u64,
    },
}

/// The plan of consistent hashing alone: [`plan_with_targets`] with the ring owners.
#[cfg(test)]
pub(crate) fn plan_membership_change(
    me: NodeId,
    members: &[NodeId],
    ring: &Ring,
    registry: &mut Registry,
) -> Vec<Command> {
    let gone = |n: NodeId| members.binary_search(&n).is_err();
    plan_with_targets(me, members, &gone, registry, &|id, _| ring.owner(id))
}

/// Plans the commands of node `me`, marking re-assigned entries in `registry` as
/// pending, and dropping the entries of dead nodes' children that stay down. `members`
/// (sorted) are the live nodes; `gone` says whether a node that is not one is known to
/// be gone (only a gone owner's children are re-assigned: one this node never counted
/// as a member may be alive, its membership not yet heard here); `target` gives the
/// node each child should be on (by its distribution strategy, over the members that
/// take new ones: a draining member is alive but takes none; `None`: no member). Pinned
/// children stay on their node while it lives. Commands come sorted by id.
pub(crate) fn plan_with_targets(
    me: NodeId,
    members: &[NodeId],
    gone: &dyn Fn(NodeId) -> bool,
    registry: &mut Registry,
    target: &dyn Fn(&str, &crate::core::entry::Entry) -> Option<NodeId>,
) -> Vec<Command> {
    let mut commands = Vec::new();
    let alive = |n: NodeId| members.binary_search(&n).is_ok();
    let known_gone = gone;
    if !alive(me) {
        // Leaving: the others take over.
        return commands;
    }
    // Decide over the registry as it is, then apply: every decision reads the same state.
    let mut reassign = Vec::new();
    let mut down = Vec::new();
    for (id, entry) in registry.iter() {
        let Some(target) = target(id, entry) else {
            continue;
        };
        let gone = !alive(entry.owner) && gone(entry.owner);
        if entry.flags.stay_down() && gone && registry.pending_from(id).is_none() {
            // Every node drops it the same way; none restarts it.
            down.push(id.clone());
            commands.push(Command::Down {
                id: id.to_string(),
                node: entry.owner,
            });
            continue;
        }
        let pending_from = registry.pending_from(id);
        // A replicated child's first live standby holds its latest state: it takes over.
        let standby = entry
            .standbys
            .as_deref()
            .and_then(|s| s.iter().copied().find(|n| alive(*n)));
        // No standby is a member here, but one this view never heard of may be alive
        // with the latest state (a node that rejoined hears of a paused one only once
        // it runs again): a restart from the start state would lose its writes.
        let unheard = standby.is_none()
            && entry
                .standbys
                .as_deref()
                .is_some_and(|s| s.iter().any(|n| !alive(*n) && !known_gone(*n)));
        let (owner, epoch, pending_from) = if let Some(from) = pending_from.filter(|f| alive(*f)) {
            // The node we took for gone is a member again, same incarnation: it never
            // stopped running it. Undo the unconfirmed re-assignment.
            (from, entry.epoch - 1, None)
        } else if gone && unheard {
            // Wait until that standby is heard of (it is promoted then) or is gone.
            (entry.owner, entry.epoch, pending_from)
        } else if gone {
            // Its node is gone: every node re-assigns it the same way, under the next
            // epoch, and remembers where it came from.
            (
                standby.unwrap_or(target),
                entry.epoch + 1,
                pending_from.or(Some(entry.owner)),
            )
        } else if pending_from.is_some() && entry.owner != target && entry.standbys.is_none() {
            // Assigned under an older view: follow the ring as it is now (same epoch;
            // if two nodes start it, the registry's tie-break keeps one).
            (target, entry.epoch, pending_from)
        } else {
            (entry.owner, entry.epoch, pending_from)
        };
        if (owner, epoch, pending_from) != (entry.owner, entry.epoch, registry.pending_from(id)) {
            reassign.push((id.clone(), owner, epoch, pending_from));
        }
        match pending_from {
            // Pending here: start it (the hub ignores this if it already runs).
            Some(from) if owner == me && (target == me || entry.standbys.is_some()) => commands
                .push(Command::StartLocal {
                    id: id.to_string(),
                    epoch,
                    from,
                }),
            Some(from) if target == me && owner == me => commands.push(Command::StartLocal {
                id: id.to_string(),
                epoch,
                from,
            }),
            None if owner == me && target != me && !entry.flags.pinned() => {
                commands.push(Command::MoveTo {
                    id: id.to_string(),
                    to: target,
                    epoch: epoch + 1,
                })
            }
            _ => {}
        }
    }
    for (id, owner, epoch, pending_from) in reassign {
        registry.reassign(&id, owner, epoch, pending_from);
    }
    for id in down {
        registry.drop_entry(&id);
    }
    commands.sort_by(|a, b| command_id(a).cmp(command_id(b)));
    commands
}

fn command_id(c: &Command) -> &str {
    match c {
        Command::StartLocal { id, .. } | Command::MoveTo { id, .. } | Command::Down { id, .. } => {
            id
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::entry::{Entry, Flags};

    fn node(port: u16) -> NodeId {
        NodeId::new(([127, 0, 0, 1], port).into(), 1)
    }

    fn registry_on(ring: &Ring, ids: &[&str]) -> Registry {
        registry_with(ring, ids, Flags::default())
    }

    fn registry_with(ring: &Ring, ids: &[&str], flags: Flags) -> Registry {
        let mut r = Registry::default();
        for id in ids {
            r.upsert(
                id,
                Entry {
                    type_name: "T".into(),
                    owner: ring.owner(id).unwrap(),
                    epoch: 1,
                    start_state: Default::default(),
                    flags,
                    standbys: None,
                    meta: None,
                },
            );
        }
        r
    }

    const IDS: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];

    #[test]
    fn a_plan_run_again_on_the_same_view_repeats_only_unconfirmed_starts() {
        let before = Ring::new([node(1), node(2), node(3)]);
        let after = Ring::new([node(1), node(2)]);
        let mut r = registry_on(&before, &IDS);
        let first = plan_membership_change(node(1), after.members(), &after, &mut r);
        assert!(!first.is_empty());
        // Nothing confirmed yet: the same starts, same epochs.
        assert_eq!(
            plan_membership_change(node(1), after.members(), &after, &mut r),
            first
        );
        // Once confirmed (the hub clears the mark), nothing more.
        for c in &first {
            let Command::StartLocal { id, .. } = c else {
                panic!()
            };
            let e = r.get(id).unwrap().clone();
            r.upsert(id, e);
        }
        assert_eq!(
            plan_membership_change(node(1), after.members(), &after, &mut r),
            vec![]
        );
    }

    #[test]
    fn a_pending_entry_follows_the_ring_when_views_change() {
        let four = Ring::new([node(1), node(2), node(3), node(4)]);
        let mut r = registry_on(&four, &IDS);
        // Node 1 first sees node 4 die with node 3 also missing (an odd, passing view)...
        let odd = Ring::new([node(1), node(2)]);
        plan_membership_change(node(1), odd.members(), &odd, &mut r);
        // ...then the true view: node 3 is alive. Every orphan of node 4 must be owned
        // by its owner on the true ring, and node 1 starts exactly its share.
        let truth = Ring::new([node(1), node(2), node(3)]);
        let cmds = plan_membership_change(node(1), truth.members(), &truth, &mut r);
        for id in IDS.iter().filter(|id| four.owner(id) == Some(node(4))) {
            assert_eq!(r.get(id).unwrap().owner, truth.owner(id).unwrap());
        }
        let started: Vec<&str> = cmds
            .iter()
            .filter_map(|c| match c {
                Command::StartLocal { id, .. } => Some(id.as_str()),
                _ => None,
            })
            .collect();
        let expected: Vec<&str> = IDS
            .iter()
            .copied()
            .filter(|id| four.owner(id) == Some(node(4)) && truth.owner(id) == Some(node(1)))
            .collect();
        assert_eq!(started, expected);
        // Node 3 was never gone: its children are back under it, unchanged.
        for id in IDS.iter().filter(|id| four.owner(id) == Some(node(3))) {
            let e = r.get(id).unwrap();
            assert_eq!((e.owner, e.epoch, r.pending_from(id)), (node(3), 1, None));
        }
    }

    #[test]
    fn a_draining_member_moves_everything_and_nobody_restarts_it() {
        let all = Ring::new([node(1), node(2), node(3)]);
        let placing = Ring::new([node(1), node(3)]);
        let mut r = registry_on(&all, &IDS);
        // Node 2 drains: it stays a member, but the ring places nothing on it.
        let cmds = plan_membership_change(node(2), all.members(), &placing, &mut r);
        let expected: Vec<Command> = IDS
            .iter()
            .filter(|id| all.owner(id) == Some(node(2)))
            .map(|id| Command::MoveTo {
                id: id.to_string(),
                to: placing.owner(id).unwrap(),
                epoch: 2,
            })
            .collect();
        assert!(!expected.is_empty());
        assert_eq!(cmds, expected);
        // The others see it alive: no orphans, no restarts.
        for me in [node(1), node(3)] {
            let mut r = registry_on(&all, &IDS);
            assert_eq!(
                plan_membership_change(me, all.members(), &placing, &mut r),
                vec![]
            );
        }
    }

    #[test]
    fn pinned_children_stay_on_a_join_and_restart_elsewhere_on_a_death() {
        let three = Ring::new([node(1), node(2), node(3)]);
        let four = Ring::new([node(1), node(2), node(3), node(4)]);
        let pinned = Flags::new(true, false);
        for me in [node(1), node(2), node(3)] {
            let mut r = registry_with(&three, &IDS, pinned);
            assert_eq!(
                plan_membership_change(me, four.members(), &four, &mut r),
                vec![]
            );
        }
        let two = Ring::new([node(1), node(2)]);
        let mut r = registry_with(&three, &IDS, pinned);
        let restarts = plan_membership_change(node(1), two.members(), &two, &mut r);
        let expected = IDS
            .iter()
            .filter(|id| three.owner(id) == Some(node(3)) && two.owner(id) == Some(node(1)))
            .count();
        assert_eq!(restarts.len(), expected);
    }

    #[test]
    fn children_that_stay_down_are_dropped_by_every_node_and_restarted_by_none() {
        let three = Ring::new([node(1), node(2), node(3)]);
        let two = Ring::new([node(1), node(2)]);
        let of_3: Vec<&str> = IDS
            .iter()
            .copied()
            .filter(|id| three.owner(id) == Some(node(3)))
            .collect();
        assert!(!of_3.is_empty());
        for me in [node(1), node(2)] {
            let mut r = registry_with(&three, &IDS, Flags::new(true, true));
            let cmds = plan_membership_change(me, two.members(), &two, &mut r);
            let expected: Vec<Command> = of_3
                .iter()
                .map(|id| Command::Down {
                    id: id.to_string(),
                    node: node(3),
                })
                .collect();
            assert_eq!(cmds, expected, "only reports, from {me}");
            for id in &IDS {
                assert_eq!(r.get(id).is_some(), !of_3.contains(id), "{id}");
            }
            // Said once: the next plan has nothing left to say.
            assert_eq!(
                plan_membership_change(me, two.members(), &two, &mut r),
                vec![]
            );
        }
    }

    #[test]
    fn a_child_whose_only_live_copy_is_on_a_node_not_heard_of_yet_waits_for_it() {
        // Node 1 ran "a" with standbys 2 (dead, known) and 4 (never heard of here: this
        // node rejoined while 4 was paused). Members: 3 and 5, this node.
        let ring = Ring::new([node(3), node(5)]);
        let mut r = Registry::default();
        r.upsert(
            "a",
            Entry {
                type_name: "T".into(),
                owner: node(1),
                epoch: 1,
                start_state: Default::default(),
                flags: Flags::default(),
                standbys: Some(vec![node(2), node(4)].into_boxed_slice()),
                meta: None,
            },
        );
        let members = ring.members().to_vec();
        let plan = |r: &mut Registry, members: &[NodeId], gone: &dyn Fn(NodeId) -> bool| {
            let targets = |_: &str, _: &Entry| Some(node(3));
            plan_with_targets(node(3), members, gone, r, &targets)
        };
        let known_gone = [node(1), node(2)];
        let gone = |n: NodeId| known_gone.contains(&n);
        // No restart from the start state, no re-assignment: it waits.
        assert_eq!(plan(&mut r, &members, &gone), vec![]);
        assert_eq!(r.get("a").unwrap().owner, node(1));
        assert_eq!(r.pending_from("a"), None);
        // Node 4 is heard of: its copy is promoted (node 4 starts it).
        let with_4 = [node(3), node(4), node(5)];
        let mut promoted = r.clone();
        assert_eq!(plan(&mut promoted, &with_4, &gone), vec![]);
        assert_eq!(promoted.get("a").unwrap().owner, node(4));
        assert_eq!(promoted.get("a").unwrap().epoch, 2);
        // Or node 4 is known gone (downed): every copy is gone, it restarts here.
        let all_gone = |n: NodeId| n != node(3) && n != node(5);
        assert_eq!(
            plan(&mut r, &members, &all_gone),
            vec![Command::StartLocal {
                id: "a".into(),
                epoch: 2,
                from: node(1),
            }]
        );
    }

    #[test]
    fn no_change_no_commands() {
        let ring = Ring::new([node(1), node(2), node(3)]);
        let mut r = registry_on(&ring, &IDS);
        for me in [node(1), node(2), node(3)] {
            assert_eq!(
                plan_membership_change(me, ring.members(), &ring, &mut r),
                vec![]
            );
        }
    }

    #[test]
    fn death_restarts_on_new_owner_with_next_epoch() {
        let before = Ring::new([node(1), node(2), node(3)]);
        let after = Ring::new([node(1), node(2)]);
        let mut expected_total = 0;
        let lost: Vec<&str> = IDS
            .iter()
            .copied()
            .filter(|id| before.owner(id) == Some(node(3)))
            .collect();
        for me in [node(1), node(2)] {
            let mut r = registry_on(&before, &IDS);
            let cmds = plan_membership_change(me, after.members(), &after, &mut r);
            let expected: Vec<Command> = lost
                .iter()
                .filter(|id| after.owner(id) == Some(me))
                .map(|id| Command::StartLocal {
                    id: id.to_string(),
                    epoch: 2,
                    from: node(3),
                })
                .collect();
            expected_total += expected.len();
            assert_eq!(cmds, expected);
            for id in &lost {
                let e = r.get(id).unwrap();
                assert_eq!(
                    (e.owner, e.epoch, r.pending_from(id)),
                    (after.owner(id).unwrap(), 2, Some(node(3)))
                );
            }
        }
        assert_eq!(expected_total, lost.len());
        assert!(!lost.is_empty(), "the test ids must cover the dead node");
    }

    #[test]
    fn join_moves_exactly_the_children_whose_owner_changed() {
        let before = Ring::new([node(1), node(2), node(3)]);
        let after = Ring::new([node(1), node(2), node(3), node(4)]);
        let mut moved = 0;
        for me in [node(1), node(2), node(3)] {
            let mut r = registry_on(&before, &IDS);
            let cmds = plan_membership_change(me, after.members(), &after, &mut r);
            let expected: Vec<Command> = IDS
                .iter()
                .filter(|id| before.owner(id) == Some(me) && after.owner(id) == Some(node(4)))
                .map(|id| Command::MoveTo {
                    id: id.to_string(),
                    to: node(4),
                    epoch: 2,
                })
                .collect();
            moved += expected.len();
            assert_eq!(cmds, expected);
        }
        // The joiner itself has nothing to do: the owners push to it.
        let mut r = registry_on(&before, &IDS);
        assert_eq!(
            plan_membership_change(node(4), after.members(), &after, &mut r),
            vec![]
        );
        assert!(moved > 0, "the test ids must cover the joiner");
    }

    #[test]
    fn graceful_leave_plans_like_a_death_and_the_leaver_does_nothing() {
        let before = Ring::new([node(1), node(2), node(3)]);
        let after = Ring::new([node(1), node(3)]);
        let mut r = registry_on(&before, &IDS);
        assert_eq!(
            plan_membership_change(node(2), after.members(), &after, &mut r),
            vec![]
        );
        let mut r = registry_on(&before, &IDS);
        let cmds = plan_membership_change(node(1), after.members(), &after, &mut r);
        assert!(cmds
            .iter()
            .all(|c| matches!(c, Command::StartLocal { from, epoch: 2, .. } if *from == node(2))));
    }

    #[test]
    fn a_second_death_reassigns_a_pending_entry_again() {
        let three = Ring::new([node(1), node(2), node(3)]);
        let mut r = registry_on(&three, &IDS);
        let two = Ring::new([node(1), node(2)]);
        let first = plan_membership_change(node(1), two.members(), &two, &mut r);
        let one = Ring::new([node(1)]);
        let cmds = plan_membership_change(node(1), one.members(), &one, &mut r);
        // Everything that was not on node 1 now starts there: what node 2 had, what it
        // was about to restart, and (again, until confirmed) what the first plan gave
        // node 1.
        let expected: Vec<&str> = IDS
            .iter()
            .copied()
            .filter(|id| three.owner(id) != Some(node(1)))
            .collect();
        assert!(!first.is_empty() && expected.len() > first.len());
        for c in &cmds {
            let Command::StartLocal { id, from, .. } = c else {
                panic!("{c:?}")
            };
            assert_eq!(Some(*from), three.owner(id), "the origin is kept");
        }
        let got: Vec<&str> = cmds
            .iter()
            .map(|c| match c {
                Command::StartLocal { id, .. } => id.as_str(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(got, expected);
    }
}
