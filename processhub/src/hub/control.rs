//! The control loop: membership changes, the planner's timer, the sleep sweep.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{strategy_targets, Control, HubInner, REPLAN_INTERVAL};
use crate::core::planner::{plan_with_targets, Command};
use crate::core::ring::Ring;
use crate::events::HubEvent;
use crate::node::NodeId;

impl HubInner {
    pub(super) fn recompute_members(self: &Arc<Self>) {
        let (joined, left) = {
            let mut st = self.state.write().unwrap();
            let members: Vec<NodeId> = st
                .chitchat_members
                .iter()
                .copied()
                .filter(|n| !st.departed.contains(n))
                .collect();
            let placing: Vec<NodeId> = members
                .iter()
                .copied()
                .filter(|n| !st.draining.contains(n))
                .collect();
            if members == st.members && placing == st.ring.members() {
                return;
            }
            let old: HashSet<NodeId> = st.members.iter().copied().collect();
            let new: HashSet<NodeId> = members.iter().copied().collect();
            let joined: Vec<NodeId> = new.difference(&old).copied().collect();
            let left: Vec<(NodeId, bool)> = old
                .difference(&new)
                .map(|n| (*n, st.departed.contains(n)))
                .collect();
            st.ring = Arc::new(Ring::new(placing));
            self.transport.set_wanted(members.iter().copied());
            st.members = members;
            (joined, left)
        };
        for node in joined {
            tracing::info!(me = %self.me, %node, "node joined");
            self.emit(HubEvent::NodeJoined { node });
        }
        for (node, graceful) in left {
            tracing::info!(me = %self.me, %node, graceful, "node left");
            self.emit(HubEvent::NodeLeft { node, graceful });
        }
        self.replan();
    }

    /// Runs the planner over the current view and executes its commands. Runs after
    /// every membership change and on a timer (to take up what an earlier plan left).
    fn replan(self: &Arc<Self>) {
        if self.is_stopped() {
            return;
        }
        let commands = {
            let mut guard = self.state.write().unwrap();
            let st = &mut *guard;
            let ring = st.ring.clone();
            let targets = strategy_targets(self.me, &st.registry, &ring, &st.members);
            let mut commands = plan_with_targets(self.me, &st.members, &mut st.registry, &targets);
            // A start already running or a move under way is not issued twice.
            commands.retain(|c| match c {
                // (An active replica running here is promoted in place.)
                Command::StartLocal { id, .. } => {
                    st.local.get(id.as_str()).is_none_or(|l| l.replica)
                }
                Command::MoveTo { id, .. } => !st.moving.contains(id.as_str()),
                Command::Down { .. } => true,
            });
            commands
        };
        let mut moves = Vec::new();
        for c in commands {
            match c {
                Command::StartLocal { id, epoch, from } => self.restart_local(&id, epoch, from),
                Command::MoveTo { id, to, epoch } => moves.push((id, to, epoch)),
                Command::Down { id, node } => self.emit(HubEvent::ChildDown { id, node }),
            }
        }
        if !moves.is_empty() {
            let me = Arc::clone(self);
            tokio::spawn(async move { me.move_children(moves).await });
        }
        self.keep_replicas();
    }
}

pub(super) async fn control_loop(
    hub: Weak<HubInner>,
    mut members: mpsc::UnboundedReceiver<crate::hub::membership::View>,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let mut tick = tokio::time::interval(REPLAN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Sleep sweeps run at half the idle time (so a child sleeps within 1.5x of it).
    let sweep_every = hub
        .upgrade()
        .and_then(|h| h.hibernate_after)
        .map_or(REPLAN_INTERVAL, |idle| {
            (idle / 2).clamp(Duration::from_millis(5), REPLAN_INTERVAL)
        });
    let mut sweep = tokio::time::interval(sweep_every);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let Some(hub) = hub.upgrade() else { return };
                if hub.is_stopped() {
                    return;
                }
                hub.replan();
                // Parts of a big state whose sender went quiet (it died, or gave up).
                hub.staging
                    .lock()
                    .unwrap()
                    .purge(Instant::now().into_std(), hub.move_timeout);
            }
            _ = sweep.tick() => {
                let Some(hub) = hub.upgrade() else { return };
                if hub.is_stopped() {
                    return;
                }
                hub.hibernate_idle();
            }
            m = members.recv() => {
                let Some(view) = m else { return };
                let Some(hub) = hub.upgrade() else { return };
                {
                    let mut st = hub.state.write().unwrap();
                    st.chitchat_members = view.members;
                    st.departed.extend(view.leaving);
                    st.draining.extend(view.draining);
                }
                hub.recompute_members();
            }
            c = control.recv() => {
                let Some(c) = c else { return };
                let Some(hub) = hub.upgrade() else { return };
                {
                    let mut st = hub.state.write().unwrap();
                    match c {
                        Control::Departed(node) => st.departed.insert(node),
                        Control::Draining(node) => st.draining.insert(node),
                    };
                }
                hub.recompute_members();
            }
        }
    }
}
