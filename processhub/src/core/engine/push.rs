//! Registry pushes from a peer: which copy wins, and what that stops here.
//!
//! A peer publishes only what it owns: an upsert naming another owner is ignored. An
//! entry that wins over the instance running here (a higher epoch, or the same epoch
//! from a larger node id) makes it a duplicate: it stops, unless it is on its way to
//! that node (under `Divergence`, its state is merged into the winner first, if its type
//! has `#[on_conflict]`). An active replica stays while its primary names this node a
//! standby.

use super::{ChildHandle, Effect, Engine};
use crate::core::entry::{wins, Entry, StartState};
use crate::core::registry::{Push, Upsert};
use crate::node::NodeId;

impl<C: ChildHandle> Engine<C> {
    /// Whether this registry predicts that `from` restarts `id` and waits for its word:
    /// the entry names `from` and is pending. Its confirmation changes no owner, so it
    /// counts even from a node downed here alone (found by simulator seed 30, 5 nodes,
    /// the heavy mix: node 0 downed node 3 alone, its push lost, and the restarts it had
    /// predicted for node 3 stayed pending here for good).
    fn awaits(&self, from: NodeId, id: &str) -> bool {
        self.registry.pending_from(id).is_some()
            && self.registry.get(id).is_some_and(|e| e.owner == from)
    }

    /// Applies a push from `from`, in arrival order.
    pub(crate) fn push(&mut self, from: NodeId, push: Push) {
        // The word of a node a quorum downed counts no more (it rejoins as a new
        // incarnation), but for the removal of its own children: a stop it confirmed
        // under its lease, before anything of it was replaced. One this node downed
        // alone, that no quorum did (the push saying so may never have got through),
        // still owns its children: what it removes, and children this registry does
        // not know, count; what it changes of those known here does not (it may act on
        // a view gone stale in a pause), but for its word on a restart this registry
        // predicted it makes (`Self::awaits`).
        let doubted = self.downing.is_downed(from);
        if self.downed
            || (doubted && matches!(push, Push::Down(_) | Push::Assigned(_)))
            || (self.downing.quorum_downed(from) && !matches!(push, Push::Remove(_)))
        {
            tracing::debug!(me = %self.me, %from, "ignored a push of a downed node");
            return;
        }
        self.dirty = true;
        match push {
            Push::Down(nodes) => self.down_heard(from, &nodes),
            Push::Upsert(entries) => {
                for (id, entry) in entries {
                    let counts =
                        !doubted || self.registry.get(&id).is_none() || self.awaits(from, &id);
                    if entry.owner == from && counts {
                        self.claim_settled(&id);
                        self.registry.owner_speaks(&id, from);
                        self.upsert_from(from, &id, entry);
                    }
                }
            }
            Push::Remove(ids) => {
                for (id, epoch) in ids {
                    self.release(from, &id);
                    if self.registry.remove(&id, from, epoch).is_some() {
                        self.drop_copy(&id);
                        // Stopped: an active replica of it here stops too.
                        if self.local.get(id.as_str()).is_some_and(|l| l.replica) {
                            self.stop_instance(&id, true);
                        }
                    }
                }
            }
            Push::Snapshot {
                entries,
                first,
                last,
            } => {
                let buf = self.snapshots.entry(from).or_default();
                if first {
                    buf.clear();
                }
                buf.extend(entries.into_iter().filter(|(_, e)| e.owner == from));
                if last && doubted {
                    // What it no longer runs goes, as its removals would have it (one
                    // may have been lost with the connection this snapshot follows);
                    // what this registry does not know comes in.
                    let snapshot = self.snapshots.remove(&from).unwrap_or_default();
                    self.registry.retain_origin(from, &snapshot);
                    for (id, entry) in snapshot {
                        if self.registry.get(&id).is_none() || self.awaits(from, &id) {
                            self.upsert_from(from, &id, entry);
                        }
                    }
                    self.synced.insert(from);
                    self.downing.knows(from);
                } else if last {
                    let snapshot = self.snapshots.remove(&from).unwrap_or_default();
                    // (A connection that opened after a split healed brings the other
                    // side's instances: duplicates of those that went on here.)
                    for (id, entry) in &snapshot {
                        self.resolve_duplicate(id, entry);
                    }
                    self.registry.replace_origin(from, snapshot);
                    self.synced.insert(from);
                    self.downing.knows(from);
                }
            }
            Push::Assigned(entries) => {
                let mut adopted = false;
                for (id, entry, origin) in entries {
                    // Only what is assigned to this node, of a node gone for it too,
                    // and not running here.
                    let gone = self.view.members().binary_search(&origin).is_err();
                    if entry.owner != self.me || !gone || self.runs_here(&id) {
                        continue;
                    }
                    // Not over another node's instance as new (a teller whose registry
                    // went stale missed that it was restarted there already: simulator
                    // seed 61, 3 nodes, pause,partition,crash,delay, under a stricter
                    // quorum rule since set aside, a node woke from a pause and assigned
                    // a child another had restarted meanwhile, and the tie-break of
                    // equal epochs let this node start a second one).
                    let taken = self
                        .registry
                        .get(&id)
                        .is_some_and(|e| e.owner != origin && e.epoch >= entry.epoch);
                    if taken {
                        continue;
                    }
                    if self.registry.removed_since(&id, entry.epoch) {
                        // Stopped here under that epoch, before the teller (a node that
                        // joined since, say) heard of it: it predicts a restart that
                        // will never come. The removal, again, ends that prediction.
                        self.out.remove(&id, entry.epoch);
                    } else {
                        adopted |= self.registry.adopt(&id, entry, origin);
                    }
                }
                // Started now, not at the next tick of the planner.
                if adopted {
                    self.replan();
                }
            }
            Push::Leaving => {
                self.view.depart(from);
                self.out.effects.push(Effect::Refresh);
            }
            Push::Draining => {
                self.view.drain(from);
                self.out.effects.push(Effect::Refresh);
            }
            Push::Unclaim(ids) => self.unclaimed(from, &ids),
            Push::Salvaged(offers) => self.salvage_offered(from, offers),
            Push::Removed(removals) => {
                for (id, epoch, at_epoch) in removals {
                    // Not over what runs here: this node's own word on its children
                    // stands (its entry is as new as any removal of it).
                    if self.runs_here(&id) {
                        continue;
                    }
                    self.registry.removed_elsewhere(&id, epoch, at_epoch);
                }
            }
            Push::Moved(entries) => {
                for (id, entry) in entries {
                    // Only over the sender's own entry, older than the move: what the
                    // new owner said already, and a child stopped since, stay as they
                    // are.
                    let stale = self
                        .registry
                        .get(&id)
                        .is_some_and(|e| e.owner == from && e.epoch < entry.epoch);
                    if stale && entry.owner != from && self.registry.pending_from(&id).is_none() {
                        self.upsert_from(entry.owner, &id, entry);
                    }
                }
            }
        }
    }

    fn upsert_from(&mut self, from: NodeId, id: &str, entry: Entry) {
        let standby_here = entry
            .standbys
            .as_deref()
            .is_some_and(|s| s.contains(&self.me));
        // An active replica here stays while the primary names it.
        if self.local.get(id).is_some_and(|l| l.replica) {
            if !standby_here {
                self.stop_instance(id, true);
            }
            if self.registry.upsert(id, entry) == Upsert::Ignored {
                tracing::debug!(%id, %from, "ignored a losing entry");
            }
            return;
        }
        self.resolve_duplicate(id, &entry);
        if self.registry.upsert(id, entry) == Upsert::Ignored {
            tracing::debug!(%id, %from, "ignored a losing entry");
        } else if !standby_here {
            // No longer a standby of it: its copy goes.
            self.drop_copy(id);
        }
    }

    /// Stops the instance of `id` here if `entry`, of another node, wins over it: a
    /// duplicate (after a split healed, or starts that raced), reported, and under
    /// `Divergence` merged into the winner if its type says how.
    fn resolve_duplicate(&mut self, id: &str, entry: &Entry) {
        if let Some(l) = self.local.get(id).filter(|l| !l.replica) {
            let ours = Entry {
                type_name: entry.type_name.clone(),
                owner: self.me,
                epoch: l.epoch,
                start_state: StartState::new(),
                flags: entry.flags,
                standbys: None,
                meta: None,
            };
            if wins(entry, &ours) && !self.moving.contains(id) {
                tracing::warn!(%id, "stopping a duplicate: another node won it");
                self.out
                    .events
                    .push(crate::events::HubEvent::DuplicateResolved {
                        id: id.to_string(),
                        kept: (entry.owner, entry.epoch),
                        dropped: (self.me, l.epoch),
                    });
                // Both sides went on (`Divergence`): what this one did is merged into
                // the instance kept, if its type says how.
                if self.downing.config.strategy.fences() || !self.merges(&entry.type_name) {
                    self.stop_instance(id, true);
                } else if let Some((id, l)) = self.local.remove_entry(id) {
                    self.out.effects.push(Effect::Merge {
                        id,
                        child: l.child,
                        into: entry.owner,
                    });
                }
            }
        }
    }

    /// Takes the instance of `id` off this node for the shell to stop.
    fn stop_instance(&mut self, id: &str, report: bool) {
        if let Some((id, l)) = self.local.remove_entry(id) {
            self.out.effects.push(Effect::Stop {
                id,
                child: l.child,
                report,
            });
        }
    }

    /// This node's own confirmed entries (not those it is still restarting, nor those it
    /// no longer runs): the snapshot a new connection gets first.
    pub(crate) fn snapshot(&self) -> Vec<(String, Entry)> {
        let mut own: Vec<(String, Entry)> = self
            .registry
            .owned_by(self.me)
            .into_iter()
            .filter(|(id, _)| {
                self.registry.pending_from(id).is_none() && self.local.contains_key(id.as_str())
            })
            .collect();
        own.sort_by(|a, b| a.0.cmp(&b.0));
        own
    }
}
