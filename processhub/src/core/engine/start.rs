//! Starts: whether a start may run here, and what a finished start publishes.
//!
//! A start is decided in two steps, so that no user hook runs under the engine's lock
//! and none runs for a start that is refused: [`Engine::admit`] checks the id and
//! reserves it (a second start of the id is refused from then on); the shell makes the
//! instance and runs its start hooks; [`Engine::started`] registers it, or releases the
//! id if making it failed.

use std::sync::Arc;

use super::{ChildHandle, Effect, Engine, LocalChild};
use crate::core::entry::{Entry, StartState};
use crate::core::item::{StartFailure, StartItem, StartOutcome};
use crate::core::placement::{loads_of, Placer};
use crate::events::HubEvent;
use crate::node::NodeId;

/// How many times a start may be forwarded between nodes whose views differ.
pub(crate) const MAX_HOPS: u8 = 3;

impl<C: ChildHandle> Engine<C> {
    /// Places the new children of `type_name` by its strategy, one after another;
    /// `named` is the node the caller gave (`guided`).
    pub(crate) fn placer(&self, type_name: &str, named: Option<NodeId>) -> Placer {
        let placement = self.info(type_name).map(|t| t.placement);
        let ring = self.view.ring().clone();
        let needs_loads = placement.is_some_and(|p| p.kind.needs_loads());
        let loads = if needs_loads {
            loads_of(&self.registry, &ring, type_name)
        } else {
            Vec::new()
        };
        Placer::new(placement, ring, self.me, named, loads)
    }

    /// Where a start of `item` that came through `hops` forwards goes from here: `None`
    /// to start it here (placed here, or forwarded often enough between nodes whose
    /// views differ), or the node to forward it to.
    pub(crate) fn start_target(&self, item: &StartItem, hops: u8) -> Option<NodeId> {
        let owner = item
            .node
            .unwrap_or_else(|| self.view.ring().owner(&item.id).unwrap_or(self.me));
        (owner != self.me && hops < MAX_HOPS).then_some(owner)
    }

    /// Whether `item` may start here. `Ok(epoch)`: its id is reserved, and the child
    /// runs under `epoch`; finish with [`Self::started`]. `Err`: the answer to the start.
    ///
    /// A new start (epoch 0) is refused if the id runs anywhere the registry knows of; a
    /// moved or restarted child (epoch > 0) if it runs here under that epoch or a newer
    /// one, unless it is a restarted copy never called that a hand-over replaces.
    pub(crate) fn admit(&mut self, item: &StartItem) -> Result<u64, StartOutcome> {
        let me = self.me;
        // A side without a quorum starts nothing: it may be downed, and what it started
        // dropped, before it hears the others again.
        if !self.has_quorum() {
            return Err(StartOutcome::NoQuorum { node: me });
        }
        if self.starting.contains(item.id.as_str()) {
            return Err(StartOutcome::AlreadyStarted { node: me });
        }
        // A peer's claim of the new id was granted here: its start goes first.
        if item.epoch == 0 {
            if let Some(node) = self.granted_elsewhere(&item.id) {
                return Err(StartOutcome::Contended { node });
            }
        }
        if let Some(l) = self.local.get(item.id.as_str()) {
            if !self.keeps(l, item) {
                return Err(StartOutcome::AlreadyStarted { node: me });
            }
        }
        match self.registry.get(&item.id) {
            Some(e) if item.epoch == 0 => {
                return Err(StartOutcome::AlreadyStarted { node: e.owner });
            }
            // A hand-over (or restart) under an epoch another node already owns the id
            // under, or a later one: its sender was superseded (downed, and the child
            // taken over meanwhile). Refused: the epoch is the fencing token.
            Some(e) if e.owner != me && e.epoch >= item.epoch => {
                tracing::warn!(id = %item.id, epoch = item.epoch, owner = %e.owner, at = e.epoch,
                    "refused a stale hand-over");
                return Err(StartOutcome::AlreadyStarted { node: e.owner });
            }
            _ => {}
        }
        self.starting.insert(Arc::from(item.id.as_str()));
        Ok(if item.epoch == 0 {
            self.registry.fresh_epoch(&item.id)
        } else {
            item.epoch
        })
    }

    /// Whether the start of `item` may go ahead beside the instance `l` running here.
    ///
    /// A restart from the start state and a move carrying the latest state can meet
    /// under one epoch: the source died while its hand-over was on the way. The
    /// handed-over state wins if the restarted copy has served nothing yet.
    fn keeps(&self, l: &LocalChild<C>, item: &StartItem) -> bool {
        let handed_over = item.start_state.is_some();
        let supersede =
            l.restarted && handed_over && item.epoch >= l.epoch && !l.child.was_called();
        supersede || (item.epoch != 0 && l.epoch < item.epoch)
    }

    /// Ends the start of `item` admitted under `epoch`: `made` is the instance, or why it
    /// could not be made (a bad state, a start hook that panicked). Registers and
    /// publishes a started child; a replaced copy is stopped.
    pub(crate) fn started(
        &mut self,
        item: &StartItem,
        epoch: u64,
        made: Result<C, StartFailure>,
    ) -> StartOutcome {
        self.dirty = true;
        let me = self.me;
        let id: Arc<str> = self
            .starting
            .take(item.id.as_str())
            .unwrap_or_else(|| Arc::from(item.id.as_str()));
        // A new id's start that failed lets its claim go.
        if self.claimed.remove(item.id.as_str()) && made.is_err() {
            self.unclaim(&item.id);
        }
        let child = match made {
            Ok(child) => child,
            Err(StartFailure::UnknownType) => return StartOutcome::UnknownType { node: me },
            Err(StartFailure::State(message)) => {
                return StartOutcome::BadState {
                    node: me,
                    message: format!("{}: {message}", item.id),
                }
            }
            Err(StartFailure::Hook(message)) => {
                return StartOutcome::HookPanicked {
                    node: me,
                    message: format!("{}: {message}", item.id),
                }
            }
        };
        // Looked at again: the copy here may have been called meanwhile.
        if let Some(l) = self.local.get(&*id) {
            if !self.keeps(l, item) {
                return StartOutcome::AlreadyStarted { node: me };
            }
        }
        let handed_over = item.start_state.is_some();
        let restarted = item.epoch > 0 && !handed_over;
        if self.replicas_of(&item.type_name) > 1 {
            self.resync_due = true;
        }
        // Running here now: a standby copy of it here is stale.
        self.drop_copy(&id);
        let replaced = self.local.insert(
            id.clone(),
            LocalChild {
                child,
                epoch,
                restarted,
                replica: false,
            },
        );
        if let Some(old) = replaced {
            // A restarted copy never called, or one of an older epoch: let it go.
            self.out.effects.push(Effect::Stop {
                id: id.clone(),
                child: old.child,
                report: false,
            });
        }
        let type_name = self.registry.intern(&item.type_name);
        let entry = Entry {
            type_name,
            owner: me,
            epoch,
            start_state: StartState::from_slice(
                item.start_state
                    .as_deref()
                    .map_or(&item.state[..], |s| &s[..]),
            ),
            flags: item.flags,
            // A moved primary keeps the standbys it had (their copies, or running
            // replicas, stay); its next shipment corrects the set.
            standbys: if handed_over {
                self.registry.get(&item.id).and_then(|e| e.standbys_but(me))
            } else {
                None
            },
            meta: item.meta.clone(),
        };
        self.registry.upsert(&item.id, entry.clone());
        self.out.upsert(&item.id, entry);
        if item.epoch == 0 {
            self.out.events.push(HubEvent::ChildStarted {
                id: item.id.clone(),
                type_name: item.type_name.clone(),
                node: me,
                epoch,
            });
        } else if handed_over {
            self.out.events.push(HubEvent::ChildArrived {
                id: item.id.clone(),
                node: me,
                epoch,
            });
        }
        StartOutcome::Started { node: me, epoch }
    }

    /// Stops `id` here if it runs here as a child of `type_name`: unregistered and
    /// published now; the instance is the shell's to stop (after `#[on_stop]`).
    pub(crate) fn stop(
        &mut self,
        id: &str,
        type_name: &str,
    ) -> Result<C, crate::core::item::StopOutcome> {
        self.dirty = true;
        use crate::core::item::StopOutcome;
        // A side without a quorum stops nothing: the side with one may be taking the
        // child over, and would bring it back.
        if !self.has_quorum() {
            return Err(StopOutcome::NoQuorum { node: self.me });
        }
        // An active replica: the primary stops it, and every replica with it.
        if self.local.get(id).is_some_and(|l| l.replica) {
            if let Some(owner) = self.registry.get(id).map(|e| e.owner) {
                return Err(StopOutcome::NotHere { owner });
            }
        }
        match self.local.get(id) {
            None => {
                return Err(match self.registry.get(id) {
                    Some(e) if e.owner != self.me => StopOutcome::NotHere { owner: e.owner },
                    _ => StopOutcome::NotFound,
                });
            }
            Some(l) if l.child.type_name() != type_name => {
                return Err(StopOutcome::WrongType {
                    actual: l.child.type_name().to_string(),
                })
            }
            Some(_) if self.moving.contains(id) => return Err(StopOutcome::Moving),
            Some(_) => {}
        }
        let l = self.local.remove(id).expect("checked above");
        self.registry.remove(id, self.me, l.epoch);
        self.out.remove(id, l.epoch);
        Ok(l.child)
    }
}
