//! Moves: which children of this node leave on a drain or a shutdown, and where; what
//! a finished move publishes; the epoch a failed one rolls back to.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{targets, ChildHandle, Engine, LocalChild};
use crate::core::entry::{Entry, Flags, StartState};
use crate::core::ring::Ring;
use crate::events::HubEvent;
use crate::node::NodeId;

/// A child on its way to another node: what the shell needs to send it.
#[derive(Clone, Debug)]
pub(crate) struct Move<C> {
    pub(crate) id: String,
    /// The epoch it runs under at the target.
    pub(crate) epoch: u64,
    /// The epoch it ran under here.
    pub(crate) from_epoch: u64,
    pub(crate) type_name: String,
    pub(crate) start_state: Vec<u8>,
    pub(crate) flags: Flags,
    pub(crate) child: C,
    /// Its metadata (updates are refused while it moves).
    pub(crate) meta: crate::metadata::Meta,
}

impl<C: ChildHandle> Engine<C> {
    /// Takes up moves of children of this node, `(id, to, epoch there)`: those still
    /// owned here and not already moving, grouped by target (in node order). They count
    /// as moving until [`Self::move_done`], [`Self::move_failed`] or
    /// [`Self::move_dropped`].
    pub(crate) fn begin_moves(
        &mut self,
        moves: Vec<(String, NodeId, u64)>,
    ) -> Vec<(NodeId, Vec<Move<C>>)> {
        let mut by_node: BTreeMap<NodeId, Vec<Move<C>>> = BTreeMap::new();
        for (id, to, epoch) in moves {
            let (Some(e), Some(l)) = (self.registry.get(&id), self.local.get(&*id)) else {
                continue;
            };
            if e.owner != self.me || self.moving.contains(&*id) {
                continue;
            }
            let m = Move {
                type_name: e.type_name.to_string(),
                start_state: e.start_state.to_vec(),
                flags: e.flags,
                meta: e.meta.clone(),
                child: l.child.clone(),
                from_epoch: l.epoch,
                epoch,
                id,
            };
            self.moving.insert(Arc::from(m.id.as_str()));
            by_node.entry(to).or_default().push(m);
        }
        by_node.into_iter().collect()
    }

    /// Whether a move to `to` whose answer is unknown may roll back now, the child going
    /// on here: only once `to` is no longer a member (nothing of it runs), since until
    /// then it may run the child, and both would serve. (The shell asks the target again
    /// meanwhile; a target unreachable past the move's deadline still rolls back.)
    pub(crate) fn may_roll_back_move(&self, to: NodeId) -> bool {
        self.view.members().binary_search(&to).is_err()
    }

    /// A move taken up ended without a hand-over (the child stopped meanwhile).
    pub(crate) fn move_dropped(&mut self, id: &str) {
        self.dirty = true;
        self.moving.remove(id);
    }

    /// A move succeeded: the registry points at the new owner (before the waiting calls
    /// are let go, so they follow it).
    pub(crate) fn move_done(&mut self, m: &Move<C>, to: NodeId) {
        self.dirty = true;
        let (id, epoch) = (m.id.as_str(), m.epoch);
        self.moving.remove(id);
        self.local.remove(id);
        // The new owner's own entry may be here already (its push can overtake its
        // answer): it is the truth, standbys included, and is kept. Otherwise ours says
        // what the new owner will: the standbys stay, but for itself.
        let confirmed = self
            .registry
            .get(id)
            .is_some_and(|e| (e.epoch, e.owner) >= (epoch, to));
        if !confirmed {
            let (standbys, meta) = match self.registry.get(id) {
                Some(e) => (e.standbys_but(to), e.meta.clone()),
                None => (None, None),
            };
            let entry = Entry {
                type_name: self.registry.intern(&m.type_name),
                owner: to,
                epoch,
                start_state: StartState::from_slice(&m.start_state),
                flags: m.flags,
                standbys,
                meta,
            };
            self.registry.upsert(id, entry);
        }
        // The new owner's entry (a later epoch) replaces ours everywhere; the removal
        // only clears it sooner. Not for a replicated child: to its replicas a removal
        // means a stop; they, and the nodes that do not hear the new owner yet, learn
        // where it went.
        if self.replicas_of(&m.type_name) <= 1 {
            self.out.remove(id, m.from_epoch);
        } else if let Some(e) = self.registry.get(id).filter(|e| e.owner == to) {
            let e = e.clone();
            self.out.moved(id, e);
        }
        self.out.events.push(HubEvent::ChildMigrated {
            id: id.to_string(),
            from: self.me,
            to,
            epoch,
        });
    }

    /// A move failed: the child goes on here, with its state.
    ///
    /// When the target was sent the child under `offered` and its answer is unknown (a
    /// timeout, a lost connection), the target may run it anyway: the child here takes
    /// the epoch after `offered`, so the registry keeps this one everywhere and the
    /// target, seeing it, stops its copy.
    pub(crate) fn move_failed(
        &mut self,
        id: &str,
        to: NodeId,
        reason: String,
        offered: Option<u64>,
    ) {
        self.dirty = true;
        tracing::warn!(%id, %to, "move failed, it stays here: {reason}");
        self.moving.remove(id);
        if let (Some(offered), Some(local)) = (offered, self.local.get_mut(id)) {
            local.epoch = offered + 1;
            local.child.set_epoch(offered + 1);
            if let Some(mut entry) = self.registry.get(id).cloned() {
                entry.owner = self.me;
                entry.epoch = offered + 1;
                self.registry.upsert(id, entry.clone());
                self.out.upsert(id, entry);
            }
        }
        self.out.events.push(HubEvent::MigrationFailed {
            id: id.to_string(),
            to,
            reason,
        });
    }

    /// Whether a child running here is handed over when this node leaves or drains.
    /// Active/active instances are not: a replica elsewhere takes over as it is (each
    /// instance has its own state, and a hand-over would overwrite the one it reached).
    fn hands_over(&self, id: &str, l: &LocalChild<C>) -> bool {
        let active = self.active_active(l.child.type_name());
        let others_run = self.registry.get(id).is_some_and(|e| {
            e.standbys
                .as_deref()
                .is_some_and(|s| s.iter().any(|n| *n != self.me))
        });
        !(l.replica || active && others_run)
    }

    /// How many children running here a drain or a leave would hand over.
    pub(crate) fn handed_over_count(&self) -> usize {
        self.local
            .iter()
            .filter(|(id, l)| self.hands_over(id, l))
            .count()
    }

    /// The moves of a drain (this node is off the ring already): every child handed
    /// over that is not pinned, to where its strategy sends it now. Sorted by id.
    pub(crate) fn drain_moves(&self) -> Vec<(String, NodeId, u64)> {
        let ring = self.view.ring().clone();
        let members = self.view.members().to_vec();
        let targets = targets(self.me, self.types, &self.registry, &ring, &members);
        let mut moves: Vec<(String, NodeId, u64)> = self
            .local
            .iter()
            .filter(|(id, l)| self.hands_over(id, l))
            .filter_map(|(id, l)| {
                let e = self.registry.get(id)?;
                if e.flags.pinned() {
                    return None;
                }
                let to = targets(id, e).filter(|to| *to != self.me)?;
                Some((id.to_string(), to, l.epoch + 1))
            })
            .collect();
        moves.sort();
        moves
    }

    /// The moves of a graceful leave: every child handed over, to where its strategy
    /// would send it if this node were gone. Sorted by id.
    pub(crate) fn leave_moves(&self) -> Vec<(String, NodeId, u64)> {
        let others = Ring::new(
            self.view
                .ring()
                .members()
                .iter()
                .copied()
                .filter(|n| *n != self.me),
        );
        let members: Vec<NodeId> = self
            .view
            .members()
            .iter()
            .copied()
            .filter(|n| *n != self.me)
            .collect();
        let targets = targets(self.me, self.types, &self.registry, &others, &members);
        let mut moves: Vec<(String, NodeId, u64)> = self
            .local
            .iter()
            .filter(|(id, l)| self.hands_over(id, l))
            .filter_map(|(id, l)| {
                let to = match self.registry.get(id) {
                    Some(e) => targets(id, e),
                    None => others.owner(id),
                }?;
                Some((id.to_string(), to, l.epoch + 1))
            })
            .collect();
        moves.sort();
        moves
    }

    /// Children pinned here that stay down when their node goes: they stop with it.
    /// `(id, type name)`, sorted.
    pub(crate) fn bound_here(&self) -> Vec<(String, String)> {
        let mut bound: Vec<(String, String)> = self
            .local
            .iter()
            .filter(|(id, _)| {
                self.registry
                    .get(id)
                    .is_some_and(|e| e.flags.pinned() && e.flags.stay_down())
            })
            .map(|(id, l)| (id.to_string(), l.child.type_name().to_string()))
            .collect();
        bound.sort();
        bound
    }
}
