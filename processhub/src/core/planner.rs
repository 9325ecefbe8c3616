//! The planner: from a new membership view and the registry, the commands for this node.
//!
//! Every node runs the same plan over the same registry, so they agree without talking:
//! entries of a node that died or left are re-assigned to their new ring owner under the
//! next epoch (marked pending until that owner confirms), and children this node hosts
//! whose ring owner changed are moved to it.

use crate::core::registry::Registry;
use crate::core::ring::Ring;
use crate::NodeId;

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

/// Plans the commands of node `me` for the member set of `ring`, marking re-assigned
/// entries in `registry` as pending. Commands come sorted by id.
pub(crate) fn plan_membership_change(
    me: NodeId,
    ring: &Ring,
    registry: &mut Registry,
) -> Vec<Command> {
    let mut commands = Vec::new();
    if !ring.contains(me) {
        // Leaving: the others take over.
        return commands;
    }
    for (id, entry) in registry.entries_mut() {
        let Some(target) = ring.owner(id) else {
            continue;
        };
        if !ring.contains(entry.owner) {
            // Its node is gone: every node re-assigns it the same way.
            let from = entry.owner;
            entry.owner = target;
            entry.epoch += 1;
            entry.pending = true;
            if target == me {
                commands.push(Command::StartLocal {
                    id: id.to_string(),
                    epoch: entry.epoch,
                    from,
                });
            }
        } else if entry.owner == me && entry.pending {
            // Assigned to us by an earlier plan and not started yet (a start may be
            // under way: the hub ignores commands for children it already runs).
        } else if entry.owner == me && target != me {
            commands.push(Command::MoveTo {
                id: id.to_string(),
                to: target,
                epoch: entry.epoch + 1,
            });
        }
    }
    commands.sort_by(|a, b| command_id(a).cmp(command_id(b)));
    commands
}

fn command_id(c: &Command) -> &str {
    match c {
        Command::StartLocal { id, .. } | Command::MoveTo { id, .. } => id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::registry::Entry;

    fn node(port: u16) -> NodeId {
        NodeId::new(([127, 0, 0, 1], port).into(), 1)
    }

    fn registry_on(ring: &Ring, ids: &[&str]) -> Registry {
        let mut r = Registry::default();
        for id in ids {
            r.upsert(
                id,
                Entry {
                    type_name: "T".into(),
                    owner: ring.owner(id).unwrap(),
                    epoch: 1,
                    start_state: vec![],
                    pending: false,
                },
            );
        }
        r
    }

    const IDS: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];

    #[test]
    fn no_change_no_commands() {
        let ring = Ring::new([node(1), node(2), node(3)]);
        let mut r = registry_on(&ring, &IDS);
        for me in [node(1), node(2), node(3)] {
            assert_eq!(plan_membership_change(me, &ring, &mut r), vec![]);
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
            let cmds = plan_membership_change(me, &after, &mut r);
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
                    (e.owner, e.epoch, e.pending),
                    (after.owner(id).unwrap(), 2, true)
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
            let cmds = plan_membership_change(me, &after, &mut r);
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
        assert_eq!(plan_membership_change(node(4), &after, &mut r), vec![]);
        assert!(moved > 0, "the test ids must cover the joiner");
    }

    #[test]
    fn graceful_leave_plans_like_a_death_and_the_leaver_does_nothing() {
        let before = Ring::new([node(1), node(2), node(3)]);
        let after = Ring::new([node(1), node(3)]);
        let mut r = registry_on(&before, &IDS);
        assert_eq!(plan_membership_change(node(2), &after, &mut r), vec![]);
        let mut r = registry_on(&before, &IDS);
        let cmds = plan_membership_change(node(1), &after, &mut r);
        assert!(cmds
            .iter()
            .all(|c| matches!(c, Command::StartLocal { from, epoch: 2, .. } if *from == node(2))));
    }

    #[test]
    fn a_second_death_reassigns_a_pending_entry_again() {
        let three = Ring::new([node(1), node(2), node(3)]);
        let mut r = registry_on(&three, &IDS);
        let two = Ring::new([node(1), node(2)]);
        let first = plan_membership_change(node(1), &two, &mut r);
        let one = Ring::new([node(1)]);
        let cmds = plan_membership_change(node(1), &one, &mut r);
        // What node 2 had, or was about to restart, now restarts on node 1; what the
        // first plan gave node 1 is already being started there.
        let expected: Vec<&str> = IDS
            .iter()
            .copied()
            .filter(|id| three.owner(id) != Some(node(1)))
            .filter(|id| {
                !first
                    .iter()
                    .any(|c| matches!(c, Command::StartLocal { id: i, .. } if i == id))
            })
            .collect();
        assert!(!first.is_empty() && !expected.is_empty());
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
