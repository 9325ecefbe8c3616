//! Membership changes and the plan: who joined or left, which children this node
//! restarts or moves, and how a child of a dead node comes back here (an active replica
//! promoted in place, a standby copy promoted, or a restart from its start state).

use super::{ChildHandle, Effect, Engine, LoggedCall, Salvaged, StandbyCopy};
use crate::core::entry::{Entry, Role};
use crate::core::item::{StartItem, StartOutcome};
use crate::core::planner::{plan_with_targets, Command};
use crate::core::recent::RecentCalls;
use crate::core::view::Gossip;
use crate::events::{HubEvent, RestartReason};
use crate::node::NodeId;

/// A child of a dead or departed node to start here: [`Engine::restart`].
#[derive(Debug)]
pub(crate) struct Restart {
    /// What to start: the promoted copy's state, or the start state.
    pub(crate) item: StartItem,
    /// From a standby copy (with the replies of the writes it holds), not the start
    /// state.
    pub(crate) promoted: bool,
    /// The promoted copy's table of identified writes.
    pub(crate) recent: RecentCalls,
    /// The writes the promoted copy holds as calls (`ship = "calls"`): replayed on its
    /// state before the instance serves anything.
    pub(crate) replay: Vec<LoggedCall>,
    /// The node it ran on.
    pub(crate) from: NodeId,
    /// The copy promoted, kept until the instance runs: a start that fails (no lease
    /// yet, a node just woken from a pause) gives it back as salvage, rather than lose
    /// the only copy this node had.
    pub(crate) fallback: Option<StandbyCopy>,
}

impl<C: ChildHandle> Engine<C> {
    /// Takes in what gossip says of the members, and plans if they changed.
    pub(crate) fn gossip(&mut self, gossip: Gossip) {
        if !self.downing.config.strategy.fences() {
            // Divergence: a node downed on this side and heard again is a member again.
            for n in &gossip.members {
                self.view.restore(*n);
            }
        }
        self.view.gossip(gossip);
        self.refresh_members();
    }

    /// `from` downed `nodes` (its push): this node downs them too, and says so; a node
    /// that reads it was downed itself is superseded and rejoins.
    pub(crate) fn down_heard(&mut self, from: NodeId, nodes: &[NodeId]) {
        if nodes.contains(&self.me) && self.downing.config.strategy.fences() {
            // Superseded once a quorum says so (one confused peer is not enough).
            self.downed_me_by.insert(from);
            if self.downed_me_by.len() >= self.downing.quorum(self.view.members()) {
                self.superseded();
                return;
            }
        }
        let adopted: Vec<NodeId> = nodes
            .iter()
            .copied()
            .filter(|n| *n != self.me)
            .filter(|n| {
                let hears = self.view.is_alive(*n);
                self.downing.heard_down(from, *n, hears)
            })
            .collect();
        if !adopted.is_empty() {
            tracing::warn!(me = %self.me, %from, nodes = ?adopted, "downed, as a peer decided");
            self.out.events.push(HubEvent::NodesDowned {
                nodes: adopted.clone(),
            });
            self.out
                .pushes
                .push(crate::core::registry::Push::Down(adopted));
        }
        self.refresh_members();
    }

    /// This node was downed by the others: it stops deciding, and the shell rejoins.
    pub(crate) fn superseded(&mut self) {
        if self.downed {
            return;
        }
        tracing::warn!(me = %self.me, "downed by the cluster: rejoining");
        self.downed = true;
        self.leaving = true;
        self.out.effects.push(Effect::Downed);
    }

    /// Whether this node was downed (it rejoins).
    pub(crate) fn is_superseded(&self) -> bool {
        self.downed
    }

    /// The removals this node tells a peer whose connection opens (`Push::Removed`):
    /// those its registry remembers; none under `Divergence`, where both sides of a
    /// split go on and a stop on one side says nothing of the other's instance (its
    /// duplicate is merged after the heal instead).
    pub(crate) fn removals_to_tell(&self) -> Vec<(String, u64, bool)> {
        if self.downing.config.strategy.fences() {
            self.registry.removals()
        } else {
            Vec::new()
        }
    }

    /// Whether a hand-over from this node needs its lease: a write like any other,
    /// but for the hand-overs of a node leaving gracefully (the others let it go, and
    /// may refuse its renewals; what it hands over was not replaced).
    pub(crate) fn moves_need_lease(&self) -> bool {
        !self.leaving || self.downed
    }

    /// This node's process was paused (its timers fired far too late): what its
    /// failure detector saw meanwhile is stale.
    pub(crate) fn paused(&mut self) {
        tracing::warn!(me = %self.me, "this process was paused: its view is stale");
        self.downing.paused();
        self.out.effects.push(Effect::Renew);
    }

    /// Whether something of the downing is due by now (the shell's watch asks often;
    /// most of the time nothing is).
    pub(crate) fn downing_due(&self, now: std::time::Instant) -> bool {
        self.downing.next_due().is_some_and(|t| t <= now)
    }

    /// Whether this node may serve writes: the members it reaches make a quorum.
    pub(crate) fn has_quorum(&self) -> bool {
        let members = self.view.members();
        let reachable = members.iter().filter(|n| self.view.is_alive(**n)).count();
        !self.downed && self.downing.has_quorum(reachable.max(1), members)
    }

    /// Members a lease renewal needs (this node included), and the peers to ask.
    pub(crate) fn lease_quorum(&self) -> (usize, Vec<NodeId>) {
        let members = self.view.members();
        let peers = members.iter().copied().filter(|n| *n != self.me).collect();
        (self.downing.quorum(members), peers)
    }

    /// The answer to `from`'s lease renewal.
    pub(crate) fn grants_lease(&self, from: NodeId) -> bool {
        !self.downed && self.downing.grants(from)
    }

    /// Whether starts sent by `from` (hand-overs, forwarded new starts) are refused:
    /// this node downed it. A downed node acts on a view gone stale (it was paused, or
    /// cut off): a child it restarted there and hands over here would come back after
    /// the cluster took it over, stopped it, or started it elsewhere.
    pub(crate) fn refuses_starts_from(&self, from: NodeId) -> bool {
        from != self.me && self.downing.is_downed(from)
    }

    /// This node takes no new children from now on (it drains); plans.
    pub(crate) fn drain_here(&mut self) {
        self.view.drain(self.me);
        self.refresh_members();
    }

    /// Recomputes the members; downs the unreachable when that is due (telling every
    /// peer) and takes out those whose replacement is due; on a change, reports it, sets
    /// the peers and plans.
    pub(crate) fn refresh_members(&mut self) {
        if self.downed {
            return;
        }
        let (members, unreachable) = self.view.candidates();
        if self.downing.observe(&members, &unreachable) {
            self.out.effects.push(Effect::Renew);
        }
        if unreachable != self.unreachable {
            for &node in &unreachable {
                if !self.unreachable.contains(&node) {
                    self.out.events.push(HubEvent::NodeUnreachable { node });
                }
            }
            for &node in &self.unreachable {
                if !unreachable.contains(&node) && members.contains(&node) {
                    self.out.events.push(HubEvent::NodeReachable { node });
                }
            }
            self.unreachable.clone_from(&unreachable);
        }
        let settled = self
            .downing
            .settle(&members, members.len() - unreachable.len());
        if !settled.down.is_empty() {
            tracing::warn!(me = %self.me, nodes = ?settled.down, "downing unreachable members");
            self.out.events.push(HubEvent::NodesDowned {
                nodes: settled.down.clone(),
            });
            self.out
                .pushes
                .push(crate::core::registry::Push::Down(settled.down));
        }
        for n in settled.remove {
            self.view.remove(n);
        }
        let change = self.view.refresh();
        if let Some(change) = &change {
            // A goodbye lowers the cluster size: a node that left is not on the other
            // side of a split.
            for (n, graceful) in &change.left {
                if *graceful {
                    self.downing.departed(*n, self.view.members().len());
                }
            }
        }
        let quorate = self.has_quorum();
        if quorate != self.quorate {
            self.quorate = quorate;
            let node = self.me;
            self.out.events.push(if quorate {
                tracing::info!(me = %node, "quorum regained");
                HubEvent::QuorumRegained { node }
            } else {
                tracing::warn!(me = %node, "quorum lost: serving nothing until it is back");
                HubEvent::QuorumLost { node }
            });
        }
        // The members, and the downed still heard: connected to, so that they learn
        // they were downed (a node never dialled might never hear it otherwise).
        let peers: Vec<NodeId> = {
            let mut p = self.view.members().to_vec();
            p.extend(self.view.downed_but_heard());
            p.sort();
            p
        };
        let peers_changed = peers != self.peers;
        if peers_changed {
            self.peers.clone_from(&peers);
        }
        let Some(change) = change else {
            if peers_changed {
                self.out.effects.push(Effect::Peers(peers));
            }
            return;
        };
        self.out.effects.push(Effect::Peers(peers));
        let dead: Vec<NodeId> = change
            .left
            .iter()
            .filter(|(_, graceful)| !graceful)
            .map(|(n, _)| *n)
            .collect();
        if !dead.is_empty() {
            self.out.effects.push(Effect::Dead(dead));
        }
        for node in change.joined {
            tracing::info!(me = %self.me, %node, "node joined");
            self.out.events.push(HubEvent::NodeJoined { node });
        }
        for (node, graceful) in change.left {
            tracing::info!(me = %self.me, %node, graceful, "node left");
            self.out.events.push(HubEvent::NodeLeft { node, graceful });
        }
        self.replan();
    }

    /// Runs the planner over the current view: restarts of the children of dead nodes
    /// placed here, moves of children whose place changed, reports of those that stay
    /// down, then the standby sets. Runs after every membership change and on a timer
    /// (to take up what an earlier plan left).
    pub(crate) fn replan(&mut self) {
        if self.leaving {
            return;
        }
        self.dirty = false;
        let ring = self.view.ring().clone();
        let members = self.view.members().to_vec();
        let targets = super::targets(self.me, self.types, &self.registry, &ring, &members);
        let view = &self.view;
        let gone = |n: NodeId| view.is_gone(n);
        let mut commands =
            plan_with_targets(self.me, &members, &gone, &mut self.registry, &targets);
        self.tell_assigned();
        // A start already running or a move under way is not issued twice.
        commands.retain(|c| match c {
            // (An active replica running here is promoted in place.)
            Command::StartLocal { id, .. } => {
                self.local.get(id.as_str()).is_none_or(|l| l.replica)
                    && !self.starting.contains(id.as_str())
            }
            Command::MoveTo { id, .. } => !self.moving.contains(id.as_str()),
            Command::Down { .. } => true,
        });
        let mut moves = Vec::new();
        // A side without a quorum restarts nothing (its restarts stay pending, and are
        // taken up once it has one): the side with one may be taking them over.
        let quorate = self.has_quorum() && !self.is_syncing();
        for c in commands {
            match c {
                Command::StartLocal { id, epoch, from } if quorate => {
                    self.out.effects.push(Effect::Restart { id, epoch, from })
                }
                Command::StartLocal { .. } => {}
                Command::MoveTo { id, to, epoch } => moves.push((id, to, epoch)),
                Command::Down { id, node } => {
                    self.out.events.push(HubEvent::ChildDown { id, node })
                }
            }
        }
        if !moves.is_empty() {
            self.out.effects.push(Effect::Move(moves));
        }
        self.keep_replicas();
    }

    /// Tells the peers of the children re-assigned to another node that were pending
    /// already at the previous plan: a node that joined around their node's death may
    /// not know of them (snapshots carry only what their sender owns), and learns of
    /// them so. A child of a node that just died is not told at once (its new owner
    /// confirms within moments); one not confirmed by the next plan is. Every survivor
    /// tells the same; the receiver takes each once.
    fn tell_assigned(&mut self) {
        let now = self.registry.pending_entries();
        let assigned: Vec<(String, crate::core::entry::Entry, NodeId)> = now
            .iter()
            .filter(|(id, owner, _)| {
                // (Sorted by id: one search each, however many are pending.)
                *owner != self.me
                    && self
                        .pending_last
                        .binary_search_by(|(b, _, _)| b.cmp(id))
                        .is_ok()
            })
            .filter_map(|(id, _, _)| {
                let e = self.registry.get(id)?.clone();
                let from = self.registry.pending_from(id)?;
                Some((id.to_string(), e, from))
            })
            .collect();
        self.pending_last = now;
        if !assigned.is_empty() {
            self.out
                .pushes
                .push(crate::core::registry::Push::Assigned(assigned));
        }
    }

    /// The children re-assigned to `peer` and pending its start, for a connection to
    /// it that opens (after the snapshot of this node's own entries).
    pub(crate) fn assigned_to(
        &self,
        peer: NodeId,
    ) -> Vec<(String, crate::core::entry::Entry, NodeId)> {
        self.registry.pending_on(peer)
    }

    /// The planner's timer: plans again if anything changed since the last plan, or if a
    /// child is still pending its restart (to take up what a plan left: a start under a
    /// passing view, a move that failed, a resync that did not reach every standby).
    /// An idle cluster walks no registry. Ages the registry's memory of removals.
    pub(crate) fn tick(&mut self) {
        self.refresh_members();
        let unsettled = self.downing.unsettled_here();
        if !unsettled.is_empty() && !self.downed {
            self.out
                .pushes
                .push(crate::core::registry::Push::Down(unsettled));
        }
        self.registry.age_removals();
        self.age_claims();
        self.age_salvage();
        if self.dirty || self.registry.has_pending() {
            self.replan();
        }
    }

    /// How the child `id` of dead node `from` comes back here under `epoch`. An active
    /// replica running here becomes the primary as it is (decided now; `None`); a
    /// standby copy here is the latest acknowledged state and is promoted; else the
    /// newest salvage of a downed holder (`None` while it is fetched: the planner's next
    /// round takes the restart up again); otherwise it restarts from its start state.
    /// `None` also when the registry no longer has it.
    pub(crate) fn restart(&mut self, id: &str, epoch: u64, from: NodeId) -> Option<Restart> {
        self.dirty = true;
        // Not without a quorum (the copy is kept for when this side has one).
        if !self.has_quorum() {
            return None;
        }
        let entry = self.registry.get(id)?.clone();
        if let Some(l) = self.local.get_mut(id).filter(|l| l.replica) {
            l.replica = false;
            l.epoch = epoch;
            l.child.set_epoch(epoch);
            let child = l.child.clone();
            // The other replicas run on: they stay named (the next shipment drops those
            // that are gone).
            let entry = Entry {
                owner: self.me,
                epoch,
                standbys: entry.standbys_but(self.me),
                ..entry
            };
            self.registry.upsert(id, entry.clone());
            self.out.upsert(id, entry);
            self.out.effects.push(Effect::Role {
                child,
                role: Role::Primary,
            });
            self.out.events.push(HubEvent::PrimaryPromoted {
                id: id.to_string(),
                node: self.me,
                epoch,
                from,
            });
            return None;
        }
        // A standby copy here; or else what a downed holder salvaged (see `salvage`),
        // fetched first if a peer holds it: the restart waits for it.
        let copy = match self.drop_copy(id) {
            Some(c) => Some(c),
            None => match self.salvage_for(id) {
                Salvaged::Here(c) => Some(c),
                Salvaged::Fetching => return None,
                // A holder of a copy that was downed and is heard again rejoins in a
                // moment, and offers what it holds as its connection opens: wait.
                Salvaged::None if self.holder_rejoining(&entry, from) => return None,
                Salvaged::None => None,
            },
        };
        let promoted = copy.is_some();
        let fallback = copy.clone();
        let (state, recent, replay) = match copy {
            Some(c) => (c.state, c.recent, c.calls),
            None => (
                entry.start_state.to_vec(),
                RecentCalls::default(),
                Vec::new(),
            ),
        };
        let item = StartItem {
            id: id.to_string(),
            type_name: entry.type_name.to_string(),
            state,
            epoch,
            // With the start state beside it, as a moved state arrives.
            start_state: promoted.then(|| serde_bytes::ByteBuf::from(entry.start_state.to_vec())),
            flags: entry.flags,
            recent: Vec::new(),
            node: None,
            meta: entry.meta.clone(),
        };
        Some(Restart {
            item,
            promoted,
            recent,
            replay,
            from,
            fallback,
        })
    }

    /// Whether a holder of a copy of `entry` (a replicated child's owner or standby)
    /// was downed and is heard again: it learns so and rejoins, and its salvage offer
    /// arrives before its registry (simulator seed 228, 5 nodes, pause,partition,crash:
    /// the cut-off standby rejoined the very moment its copy's id restarted from the
    /// start state elsewhere).
    ///
    /// `from`: the owner it is restarted from (the entry names this node by now). It
    /// counts even where the standby set shrank to none (a shipment that reached no
    /// standby: both had crashed), as its own state is salvaged (simulator seed 287, 5
    /// nodes, the heavy mix: the primary, cut off, was downed, and the child restarted
    /// from its start state the moment the cut healed, as the entry's owner was already
    /// the restarting node). A plain child's owner does not count (it restarts from its
    /// start state by design).
    fn holder_rejoining(&self, entry: &Entry, from: NodeId) -> bool {
        if entry.standbys.is_none() && self.replicas_of(&entry.type_name) <= 1 {
            return false;
        }
        let standbys = entry.standbys.as_deref().unwrap_or_default();
        let mut holders = [entry.owner, from]
            .into_iter()
            .chain(standbys.iter().copied());
        let heard: Vec<NodeId> = self.view.downed_but_heard().collect();
        !heard.is_empty() && holders.any(|h| heard.contains(&h))
    }

    /// A restart planned by [`Self::restart`] ended with `outcome`: reported; one that
    /// could not be carried out is unregistered everywhere.
    pub(crate) fn restarted(&mut self, mut restart: Restart, outcome: &StartOutcome) {
        self.dirty = true;
        let id = restart.item.id.as_str();
        if !matches!(
            outcome,
            StartOutcome::Started { .. } | StartOutcome::AlreadyStarted { .. }
        ) {
            if let Some(copy) = restart.fallback.take() {
                self.keep_salvage(id, copy);
            }
        }
        let from = restart.from;
        match outcome {
            StartOutcome::Started { epoch, .. } if restart.promoted => {
                self.out.events.push(HubEvent::PrimaryPromoted {
                    id: id.to_string(),
                    node: self.me,
                    epoch: *epoch,
                    from,
                })
            }
            StartOutcome::Started { epoch, .. } => self.out.events.push(HubEvent::ChildRestarted {
                id: id.to_string(),
                node: self.me,
                epoch: *epoch,
                reason: RestartReason::NodeDown { node: from },
            }),
            StartOutcome::AlreadyStarted { .. } => {}
            // No quorum here yet (a node that just rejoined): it stays pending, and the
            // planner's next tick tries again.
            StartOutcome::NoQuorum { .. } => {}
            other => {
                tracing::error!(%id, "could not restart: {other:?}");
                let epoch = restart.item.epoch;
                if self.registry.remove(id, self.me, epoch).is_some() {
                    self.out.remove(id, epoch);
                }
                self.out.events.push(HubEvent::ChildLost {
                    id: id.to_string(),
                    reason: format!("{other:?}"),
                });
            }
        }
    }
}
