//! Replication: which nodes hold a primary's standbys, what a shipment's outcome makes
//! of the standby set, and which standby copy a node keeps.

use std::sync::Arc;

use super::{
    ChildHandle, Effect, Engine, LocalChild, LoggedCall, StandbyCopy, MAX_LOGGED_BYTES,
    MAX_LOGGED_CALLS,
};
use crate::core::entry::Entry;
use crate::core::recent::RecentCalls;
use crate::core::ring::Ring;
use crate::events::HubEvent;
use crate::node::NodeId;

/// Where a primary's shipment goes: [`Engine::ship_plan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ShipPlan {
    /// Its standby set as the registry says now.
    pub(crate) current: Vec<NodeId>,
    /// The standbys the ring gives it now.
    pub(crate) targets: Vec<NodeId>,
    /// The epoch it runs under.
    pub(crate) epoch: u64,
}

impl ShipPlan {
    /// Whether its standbys may acknowledge a write straight to the caller
    /// ([`crate::core::held`]): only when it goes to exactly the standby set published
    /// (a set that changes is published by the primary after the shipment, and a copy
    /// is promoted from the set its node heard of: before that, the write would be
    /// held by a set the others do not know yet).
    pub(crate) fn acks_direct(&self) -> bool {
        !self.targets.is_empty() && self.targets == self.current
    }
}

/// What became of a shipment a standby received: [`Engine::keep_copy`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kept {
    /// The copy is kept (or a newer one was already).
    Copy,
    /// An active/active type: an instance should run here from this state
    /// ([`Engine::add_replica`]), unless one runs already.
    Replica(Vec<u8>),
}

impl<C: ChildHandle> Engine<C> {
    /// The standbys the ring gives a child with `replicas` copies run here.
    pub(crate) fn desired_standbys(&self, ring: &Ring, id: &str, replicas: usize) -> Vec<NodeId> {
        ring.owners(id, replicas)
            .into_iter()
            .filter(|n| *n != self.me)
            .take(replicas.saturating_sub(1))
            .collect()
    }

    /// Gives every replicated child running here the standbys the ring says it should
    /// have (after a join, a death, a promotion, a move): a `Resync` for each whose set
    /// differs, unless one is under way.
    pub(crate) fn keep_replicas(&mut self) {
        self.resync_due = false;
        // Runs every second: nothing to do (and no scan of every child) in a binary
        // without replicated types.
        if !self.any_replicated {
            return;
        }
        let ring = self.view.ring().clone();
        let mut due: Vec<(Arc<str>, C)> = Vec::new();
        for (id, l) in &self.local {
            let replicas = self.replicas_of(l.child.type_name());
            if replicas <= 1 || self.moving.contains(id) || self.resyncing.contains(id) {
                continue;
            }
            let Some(e) = self.registry.get(id) else {
                continue;
            };
            if e.owner != self.me || self.registry.pending_from(id).is_some() {
                continue;
            }
            let desired = self.desired_standbys(&ring, id, replicas);
            if e.standbys.as_deref().unwrap_or_default() != desired.as_slice() {
                due.push((id.clone(), l.child.clone()));
            }
        }
        due.sort_by(|a, b| a.0.cmp(&b.0));
        for (id, child) in due {
            self.resyncing.insert(id.clone());
            self.out.effects.push(Effect::Resync { id, child });
        }
    }

    /// [`Self::keep_replicas`] if a replicated child started since it last ran.
    pub(crate) fn keep_replicas_if_due(&mut self) {
        if self.resync_due {
            self.keep_replicas();
        }
    }

    /// A `Resync` of `id` ended.
    pub(crate) fn resync_done(&mut self, id: &str) {
        self.dirty = true;
        self.resyncing.remove(id);
    }

    /// Where the shipment of `id` (a child of `type_name` running here under `epoch`)
    /// goes; `None` if it is not this node's primary under that epoch (moved, replaced,
    /// or a stale instance): nothing to keep in step.
    pub(crate) fn ship_plan(&self, id: &str, type_name: &str, epoch: u64) -> Option<ShipPlan> {
        let e = self.registry.get(id)?;
        if e.owner != self.me || e.epoch != epoch {
            return None;
        }
        let targets = self.desired_standbys(self.view.ring(), id, self.replicas_of(type_name));
        Some(ShipPlan {
            current: e.standbys.as_deref().unwrap_or_default().to_vec(),
            targets,
            epoch,
        })
    }

    /// A shipment of `id` under `epoch` reached `took` (of the set `current` it was
    /// planned with): they are its standby set now, published before the write it
    /// carried is acknowledged.
    pub(crate) fn shipped(&mut self, id: &str, epoch: u64, current: &[NodeId], took: Vec<NodeId>) {
        self.dirty = true;
        if took == current {
            return;
        }
        let Some(e) = self.registry.get(id).cloned() else {
            return;
        };
        if e.owner != self.me || e.epoch != epoch {
            return;
        }
        let added: Vec<NodeId> = took
            .iter()
            .filter(|n| !current.contains(n))
            .copied()
            .collect();
        let removed: Vec<NodeId> = current
            .iter()
            .filter(|n| !took.contains(n))
            .copied()
            .collect();
        let entry = Entry {
            standbys: (!took.is_empty()).then(|| took.into_boxed_slice()),
            ..e
        };
        self.registry.upsert(id, entry.clone());
        self.out.upsert(id, entry);
        for node in added {
            self.out.events.push(HubEvent::ReplicaAdded {
                id: id.to_string(),
                node,
            });
        }
        for node in removed {
            self.out.events.push(HubEvent::ReplicaRemoved {
                id: id.to_string(),
                node,
            });
        }
    }

    /// Keeps a standby copy sent by a replicated child's primary, unless a newer one is
    /// here (shipments after asynchronous writes may arrive out of order). `recent`: the
    /// replies of its identified writes, all of them or (`append`) those since the
    /// previous shipment.
    pub(crate) fn keep_copy(
        &mut self,
        id: &str,
        type_name: &str,
        version: (u64, u64),
        state: Vec<u8>,
        (recent, append): (Vec<(u128, Vec<u8>)>, bool),
    ) -> Result<Kept, CopyRefused> {
        if self.active_active(type_name) {
            return Ok(Kept::Replica(state));
        }
        if self.local.contains_key(id) {
            return Err(CopyRefused::RunsHere { id: id.to_string() });
        }
        // A primary replaced already (here, the re-assignment that promotes this very
        // copy may be under way: the copy is taken, the instance not running yet). Its
        // standbys may acknowledge writes to their caller themselves, so a shipment
        // kept now, and lost to the promotion, would be an acknowledged write lost.
        if let Some(known) = self.registry.get(id).map(|e| e.epoch) {
            if known > version.0 {
                return Err(CopyRefused::Replaced {
                    id: id.to_string(),
                    known,
                    incoming: version.0,
                });
            }
        }
        match self.copies.get_mut(id) {
            Some(c) => {
                let now = self.downing.now();
                if supersedes(c.version, version, id)? {
                    c.version = version;
                    c.state = state;
                    c.calls.clear();
                    if append {
                        c.recent.extend(recent, now);
                    } else {
                        c.recent = RecentCalls::from_list(recent, now);
                    }
                }
            }
            None => {
                self.copies.insert(
                    Arc::from(id),
                    StandbyCopy {
                        version,
                        state,
                        calls: Vec::new(),
                        recent: RecentCalls::from_list(recent, self.downing.now()),
                    },
                );
                self.out.events.push(HubEvent::StandbyStarted {
                    id: id.to_string(),
                    node: self.me,
                    epoch: version.0,
                });
            }
        }
        Ok(Kept::Copy)
    }

    /// Appends a write shipped as its call (`ship = "calls"`) to the standby copy of
    /// `id`, if the copy holds every shipment before it (version `(epoch, seq - 1)`):
    /// true then, or if it holds this one or a newer one already. False if it cannot
    /// take it: no copy here, a shipment missed (asynchronous ones may cross), or
    /// its log is full; the primary then ships the state.
    pub(crate) fn keep_call(
        &mut self,
        id: &str,
        type_name: &str,
        version: (u64, u64),
        call: LoggedCall,
        recent: Vec<(u128, Vec<u8>)>,
    ) -> Result<bool, CopyRefused> {
        if self.active_active(type_name) {
            return Ok(false);
        }
        if self.local.contains_key(id) {
            return Err(CopyRefused::RunsHere { id: id.to_string() });
        }
        let now = self.downing.now();
        let Some(c) = self.copies.get_mut(id) else {
            return Ok(false);
        };
        if !supersedes(c.version, version, id)? {
            return Ok(true);
        }
        let logged: usize = c.calls.iter().map(|c| c.method.len() + c.args.len()).sum();
        let room = c.state.len().max(MAX_LOGGED_BYTES);
        let next = version.1.checked_sub(1) == Some(c.version.1) && version.0 == c.version.0;
        if !next
            || c.calls.len() >= MAX_LOGGED_CALLS
            || logged + call.method.len() + call.args.len() > room
        {
            return Ok(false);
        }
        c.version = version;
        c.calls.push(call);
        c.recent.extend(recent, now);
        Ok(true)
    }

    /// Drops this node's standby copy of `id`, if it holds one (reported: the passive
    /// standby's end, whatever the reason: promoted, running here, no longer named,
    /// stopped).
    pub(crate) fn drop_copy(&mut self, id: &str) -> Option<StandbyCopy> {
        let copy = self.copies.remove(id)?;
        self.out.events.push(HubEvent::StandbyEnded {
            id: id.to_string(),
            node: self.me,
        });
        Some(copy)
    }

    /// Whether an instance of `id` runs here or is starting (then no replica is made).
    pub(crate) fn runs_here(&self, id: &str) -> bool {
        self.local.contains_key(id) || self.starting.contains(id)
    }

    /// Registers an active/active replica of `id` made from a shipment under `epoch`:
    /// it serves the calls made here on its own. False (the shell drops it) if an
    /// instance runs here meanwhile.
    pub(crate) fn add_replica(&mut self, id: &str, child: C, epoch: u64) -> bool {
        self.dirty = true;
        if self.runs_here(id) {
            return false;
        }
        self.local.insert(
            Arc::from(id),
            LocalChild {
                child,
                epoch,
                restarted: false,
                replica: true,
            },
        );
        true
    }

    /// This node's standby copy of `id`: its state and the epoch of the primary that
    /// sent it.
    pub(crate) fn standby_copy(&self, id: &str) -> Option<(Vec<u8>, u64, Vec<LoggedCall>)> {
        let copy = self.copies.get(id)?;
        Some((copy.state.clone(), copy.version.0, copy.calls.clone()))
    }
}

/// Whether a standby copy of version `incoming` (epoch, shipment) replaces one of
/// `held`: a newer shipment does, an older one is ignored (asynchronous shipments may
/// arrive out of order), and one from an older epoch is refused (its primary was
/// replaced: it must learn it is a standby no more).
pub(crate) fn supersedes(
    held: (u64, u64),
    incoming: (u64, u64),
    id: &str,
) -> Result<bool, CopyRefused> {
    if held.0 > incoming.0 {
        return Err(CopyRefused::OlderPrimary {
            id: id.to_string(),
            held: held.0,
            incoming: incoming.0,
        });
    }
    Ok(incoming > held)
}

/// Why a standby refused a shipment (the primary drops it from the standby set).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CopyRefused {
    /// The child runs here: this node is no standby of it.
    #[error("{id} runs here; it has no standby here")]
    RunsHere { id: String },
    /// This node holds a copy from a newer primary: the sender was replaced.
    #[error("a copy of {id} from epoch {held} is newer than {incoming}")]
    OlderPrimary {
        id: String,
        held: u64,
        incoming: u64,
    },
    /// The registry here names the child under a newer epoch: the sender was replaced.
    #[error("{id} runs under epoch {known} now, newer than the shipment's {incoming}")]
    Replaced {
        id: String,
        known: u64,
        incoming: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::supersedes;

    #[test]
    fn newer_copies_win_and_older_epochs_are_refused() {
        assert_eq!(supersedes((1, 1), (1, 2), "x"), Ok(true));
        assert_eq!(supersedes((1, 2), (1, 1), "x"), Ok(false), "late, ignored");
        assert_eq!(supersedes((1, 2), (1, 2), "x"), Ok(false), "again, ignored");
        assert_eq!(
            supersedes((1, 9), (2, 1), "x"),
            Ok(true),
            "a promoted primary"
        );
        assert!(
            supersedes((2, 1), (1, 9), "x").is_err(),
            "a replaced primary"
        );
    }
}
