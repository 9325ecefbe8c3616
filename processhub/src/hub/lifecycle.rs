//! A child's life on this node as the hub runs it: starts, stops, restarts of the
//! children of dead nodes, drain, shutdown and kill.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{strategy_targets, DrainReport, HubInner, LocalChild, State, MAX_HOPS, START_BATCH};
use crate::child::component::Hook;
use crate::child::erased::{ChildCtx, ErasedChild};
use crate::child::types::{replicas, vtable};
use crate::core::entry::{Entry, StartState};
use crate::core::item::{StartItem, StartOutcome, StopOutcome};
use crate::core::recent::RecentCalls;
use crate::core::registry::Push;
use crate::core::ring::Ring;
use crate::error::HubError;
use crate::events::{HubEvent, RestartReason};
use crate::net::batch::{batches, entry_size, item_size};
use crate::net::error::TransportError;
use crate::net::wire::{Request, Response};
use crate::node::NodeId;

impl HubInner {
    /// Starts `item` here if this node may: the check, the spawn and the registry update
    /// happen under one lock, so two starts of one id cannot both succeed.
    pub(crate) fn start_local(
        &self,
        item: &StartItem,
        spawn: impl FnOnce(ChildCtx) -> Result<Arc<dyn ErasedChild>, String>,
    ) -> StartOutcome {
        let mut spawn = Some(spawn);
        let mut out = self.start_local_batch([item], |_, ctx| {
            (spawn.take().expect("one item, one spawn"))(ctx)
        });
        out.pop().expect("one item, one outcome")
    }

    /// Starts these items here under one lock, and tells the peers in pushes of up to
    /// [`START_BATCH`] entries rather than one frame per child. `spawn` gets the item's
    /// position. Outcomes come in order.
    pub(crate) fn start_local_batch<'a>(
        &self,
        items: impl IntoIterator<Item = &'a StartItem>,
        mut spawn: impl FnMut(usize, ChildCtx) -> Result<Arc<dyn ErasedChild>, String>,
    ) -> Vec<StartOutcome> {
        let mut outcomes = Vec::new();
        let mut started = Vec::new();
        let mut started_types_replicated = false;
        {
            let mut guard = self.state.write().unwrap();
            let st = &mut *guard;
            let mut upserts = Vec::new();
            for (i, item) in items.into_iter().enumerate() {
                started_types_replicated |= replicas(&item.type_name) > 1;
                let outcome = self.start_one(st, item, |ctx| spawn(i, ctx), &mut upserts);
                if let (StartOutcome::Started { epoch, .. }, 0) = (&outcome, item.epoch) {
                    started.push((item.id.clone(), item.type_name.clone(), *epoch));
                }
                outcomes.push(outcome);
            }
            // Under the lock: peers get this node's changes in the order they happened.
            for chunk in batches(&upserts, START_BATCH, self.batch_bytes(), entry_size) {
                self.transport.broadcast(&Push::Upsert(chunk.to_vec()));
            }
        }
        let replicated = started_types_replicated
            && outcomes
                .iter()
                .any(|o| matches!(o, StartOutcome::Started { .. }));
        if replicated {
            // Standbys from the start, not at the next plan.
            if let Some(me) = self.weak.upgrade() {
                me.keep_replicas();
            }
        }
        for (id, type_name, epoch) in started {
            self.emit(HubEvent::ChildStarted {
                id,
                type_name,
                node: self.me,
                epoch,
            });
        }
        outcomes
    }

    fn start_one(
        &self,
        st: &mut State,
        item: &StartItem,
        spawn: impl FnOnce(ChildCtx) -> Result<Arc<dyn ErasedChild>, String>,
        upserts: &mut Vec<(String, Entry)>,
    ) -> StartOutcome {
        // A restart from the start state and a move carrying the latest state can meet
        // here under one epoch: the source died while its handover was on the way. The
        // handed-over state wins if the restarted copy has served nothing yet.
        let handed_over = item.start_state.is_some();
        if let Some(l) = st.local.get(&*item.id) {
            let supersede =
                l.restarted && handed_over && item.epoch >= l.epoch && !l.child.was_called();
            if !supersede && (item.epoch == 0 || l.epoch >= item.epoch) {
                return StartOutcome::AlreadyStarted { node: self.me };
            }
        }
        if item.epoch == 0 {
            if let Some(e) = st.registry.get(&item.id) {
                return StartOutcome::AlreadyStarted { node: e.owner };
            }
        }
        let epoch = item.epoch.max(1);
        let id: Arc<str> = Arc::from(item.id.as_str());
        let child = match spawn(self.child_ctx(id.clone(), epoch, &item.type_name)) {
            Ok(c) => c,
            Err(message) => {
                return StartOutcome::Failed {
                    message: format!("{}: {message}", item.id),
                }
            }
        };
        // Started (or restarted from its start state), not handed over: `#[on_start]`,
        // now that the start is decided.
        if !handed_over {
            if let Err(message) = child.start_hook() {
                return StartOutcome::Failed {
                    message: format!("{}: {message}", item.id),
                };
            }
        }
        let restarted = item.epoch > 0 && !handed_over;
        // Running here now: a standby copy of it here is stale.
        st.copies.remove(&*id);
        let replaced = st.local.insert(
            id,
            LocalChild {
                child,
                epoch,
                restarted,
                replica: false,
            },
        );
        if let Some(old) = replaced {
            // A restarted copy never called, or one of an older epoch: let it go.
            tokio::spawn(old.child.stop());
        }
        let type_name = st.registry.intern(&item.type_name);
        let entry = Entry {
            type_name,
            owner: self.me,
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
                st.registry
                    .get(&item.id)
                    .and_then(|e| e.standbys_but(self.me))
            } else {
                None
            },
        };
        st.registry.upsert(&item.id, entry.clone());
        upserts.push((item.id.clone(), entry));
        StartOutcome::Started {
            node: self.me,
            epoch,
        }
    }

    /// Starts a batch: local items here, the others on their owners, concurrently.
    /// Results come in input order.
    pub(crate) async fn start_items(
        self: &Arc<Self>,
        items: Vec<StartItem>,
        hops: u8,
        mut local_spawn: impl FnMut(usize, &StartItem, ChildCtx) -> Result<Arc<dyn ErasedChild>, String>,
    ) -> Vec<StartOutcome> {
        let mut out: Vec<Option<StartOutcome>> = vec![None; items.len()];
        let mut remote: HashMap<NodeId, Vec<(usize, StartItem)>> = HashMap::new();
        let ring = self.state.read().unwrap().ring.clone();
        let mut local = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let owner = item
                .node
                .unwrap_or_else(|| ring.owner(&item.id).unwrap_or(self.me));
            if owner == self.me || hops >= MAX_HOPS {
                local.push((i, item));
            } else {
                remote.entry(owner).or_default().push((i, item));
            }
        }
        for chunk in local.chunks(START_BATCH) {
            let outcomes = self.start_local_batch(chunk.iter().map(|(_, item)| item), |k, ctx| {
                local_spawn(chunk[k].0, &chunk[k].1, ctx)
            });
            for ((i, _), o) in chunk.iter().zip(outcomes) {
                out[*i] = Some(o);
            }
        }
        let deadline = Instant::now() + self.call_timeout;
        let mut requests = Vec::new();
        for (node, items) in remote {
            for chunk in batches(&items, START_BATCH, self.batch_bytes(), |(_, i)| {
                item_size(i)
            }) {
                let (idx, batch): (Vec<usize>, Vec<StartItem>) = chunk.iter().cloned().unzip();
                let t = self.transport.clone();
                requests.push(async move {
                    let res = t
                        .request(
                            node,
                            Request::Start {
                                items: batch,
                                hops: hops + 1,
                            },
                            deadline,
                        )
                        .await;
                    (idx, res)
                });
            }
        }
        for (idx, res) in futures_util::future::join_all(requests).await {
            match res {
                Ok(Response::Started(outcomes)) if outcomes.len() == idx.len() => {
                    for (i, o) in idx.into_iter().zip(outcomes) {
                        out[i] = Some(o);
                    }
                }
                other => {
                    let message = match other {
                        Err(TransportError::Timeout) => "timeout".to_string(),
                        Err(e) => format!("{e:?}"),
                        Ok(r) => format!("unexpected response {r:?}"),
                    };
                    for i in idx {
                        out[i] = Some(StartOutcome::Failed {
                            message: message.clone(),
                        });
                    }
                }
            }
        }
        out.into_iter()
            .map(|o| o.expect("every item has an outcome"))
            .collect()
    }

    /// Stops `id` if it runs here.
    pub(crate) async fn stop_local(&self, id: &str, type_name: &str) -> StopOutcome {
        let child = {
            let mut st = self.state.write().unwrap();
            // An active replica: the primary stops it, and every replica with it.
            if st.local.get(id).is_some_and(|l| l.replica) {
                if let Some(owner) = st.registry.get(id).map(|e| e.owner) {
                    return StopOutcome::NotHere { owner };
                }
            }
            match st.local.get(id) {
                None => {
                    return match st.registry.get(id) {
                        Some(e) if e.owner != self.me => StopOutcome::NotHere { owner: e.owner },
                        _ => StopOutcome::NotFound,
                    };
                }
                Some(l) if l.child.type_name() != type_name => {
                    return StopOutcome::WrongType {
                        actual: l.child.type_name().to_string(),
                    }
                }
                Some(_) => {}
            }
            let l = st.local.remove(id).expect("checked above");
            st.registry.remove(id, self.me, l.epoch);
            self.transport
                .broadcast(&Push::Remove(vec![(id.to_string(), l.epoch)]));
            l.child
        };
        child.clone().run_hook(Hook::Stop).await;
        child.stop().await;
        self.emit(HubEvent::ChildStopped {
            id: id.to_string(),
            node: self.me,
        });
        StopOutcome::Stopped
    }

    /// Puts children that were not called for `hibernate_after` to sleep.
    pub(super) fn hibernate_idle(&self) {
        let Some(idle) = self.hibernate_after else {
            return;
        };
        let children: Vec<Arc<dyn ErasedChild>> = {
            let st = self.state.read().unwrap();
            st.local.values().map(|l| l.child.clone()).collect()
        };
        let now = Instant::now();
        for c in children {
            c.try_hibernate(idle, now);
        }
    }

    /// Restarts a child of a dead or departed node here, from its start state.
    pub(super) fn restart_local(&self, id: &str, epoch: u64, from: NodeId) {
        // A standby copy here is the latest acknowledged state: promote it.
        let (entry, copy) = {
            let mut guard = self.state.write().unwrap();
            let st = &mut *guard;
            let Some(entry) = st.registry.get(id).cloned() else {
                return;
            };
            // An active/active replica runs here: it becomes the primary as it is.
            if let Some(l) = st.local.get_mut(id).filter(|l| l.replica) {
                l.replica = false;
                l.epoch = epoch;
                // The other replicas run on: they stay named (the next shipment drops
                // those that are gone).
                let entry = Entry {
                    owner: self.me,
                    epoch,
                    standbys: entry.standbys_but(self.me),
                    ..entry
                };
                st.registry.upsert(id, entry.clone());
                self.transport
                    .broadcast(&Push::Upsert(vec![(id.to_string(), entry)]));
                tokio::spawn(
                    l.child
                        .clone()
                        .run_hook(Hook::Role(crate::core::entry::Role::Primary)),
                );
                drop(guard);
                self.emit(HubEvent::PrimaryPromoted {
                    id: id.to_string(),
                    node: self.me,
                    epoch,
                    from,
                });
                return;
            }
            (entry, st.copies.remove(id))
        };
        let promoted = copy.is_some();
        let (state, recent) = match copy {
            Some(c) => (c.state, c.recent),
            None => (entry.start_state.to_vec(), RecentCalls::default()),
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
        };
        let outcome = match vtable(&entry.type_name) {
            Some(vt) => self.start_local(&item, |mut args| {
                // The promoted copy answers the retries of writes it already holds.
                if promoted {
                    args.recent = Some(Arc::new(std::sync::Mutex::new(recent)));
                }
                (vt.spawn)(&item.state, args, false)
            }),
            None => StartOutcome::UnknownType { node: self.me },
        };
        match outcome {
            StartOutcome::Started { epoch, .. } if promoted => {
                self.emit(HubEvent::PrimaryPromoted {
                    id: id.to_string(),
                    node: self.me,
                    epoch,
                    from,
                })
            }
            StartOutcome::Started { epoch, .. } => self.emit(HubEvent::ChildRestarted {
                id: id.to_string(),
                node: self.me,
                epoch,
                reason: RestartReason::NodeDown { node: from },
            }),
            StartOutcome::AlreadyStarted { .. } => {}
            other => {
                tracing::error!(%id, "could not restart: {other:?}");
                let mut st = self.state.write().unwrap();
                if st.registry.remove(id, self.me, epoch).is_some() {
                    self.transport
                        .broadcast(&Push::Remove(vec![(id.to_string(), epoch)]));
                }
                drop(st);
                self.emit(HubEvent::ChildLost {
                    id: id.to_string(),
                    reason: format!("{other:?}"),
                });
            }
        }
    }

    /// Waits until no move of a child of this node is under way (each ends within the
    /// move timeout, rolled back if it must).
    async fn wait_moves(&self) {
        let deadline = Instant::now() + self.move_timeout + Duration::from_secs(1);
        while !self.state.read().unwrap().moving.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Whether a child running here is handed over when this node leaves or drains.
    /// Active/active instances are not: a replica elsewhere takes over as it is (each
    /// instance has its own state, and a handover would overwrite the one it reached).
    fn hands_over(&self, st: &State, id: &str, l: &LocalChild) -> bool {
        let active = vtable(l.child.type_name()).is_some_and(|v| v.active_active);
        let others_run = st.registry.get(id).is_some_and(|e| {
            e.standbys
                .as_deref()
                .is_some_and(|s| s.iter().any(|n| *n != self.me))
        });
        !(l.replica || active && others_run)
    }

    pub(super) async fn drain(self: &Arc<Self>) -> Result<DrainReport, HubError> {
        if self.is_stopped() {
            return Err(HubError::Stopped);
        }
        // Counted first: the planner starts moving children as soon as this node is
        // off the ring.
        // (Active/active instances stay: see `hands_over`.)
        let own = |st: &State| {
            st.local
                .iter()
                .filter(|(id, l)| self.hands_over(st, id, l))
                .count()
        };
        let before = own(&self.state.read().unwrap());
        // Take this node off the ring here and everywhere: no new placements.
        self.state.write().unwrap().draining.insert(self.me);
        self.recompute_members();
        for c in self.transport.connections() {
            c.push(&Push::Draining);
        }
        if let Some(m) = self.membership.lock().await.as_ref() {
            m.announce_draining().await;
        }
        let moves = {
            let st = self.state.read().unwrap();
            // Where each goes by its strategy, now that this node takes none.
            let targets = strategy_targets(self.me, &st.registry, &st.ring, &st.members);
            let moves: Vec<(String, NodeId, u64)> = st
                .local
                .iter()
                .filter(|(id, l)| self.hands_over(&st, id, l))
                .filter_map(|(id, l)| {
                    let e = st.registry.get(id)?;
                    if e.flags.pinned() {
                        return None;
                    }
                    let to = targets(id, e).filter(|to| *to != self.me)?;
                    Some((id.to_string(), to, l.epoch + 1))
                })
                .collect();
            moves
        };
        Arc::clone(self).move_children(moves).await;
        // The planner's timer may have started some of these moves first: wait for them.
        self.wait_moves().await;
        let left = own(&self.state.read().unwrap());
        let report = DrainReport {
            moved: before.saturating_sub(left),
            failed: left,
        };
        self.emit(HubEvent::DrainCompleted {
            moved: report.moved,
            failed: report.failed,
        });
        Ok(report)
    }

    pub(super) async fn shutdown(self: &Arc<Self>) -> Result<(), HubError> {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Children pinned here that stay down when their node goes stop with it.
        let bound: Vec<(String, &'static str)> = {
            let st = self.state.read().unwrap();
            st.local
                .iter()
                .filter(|(id, _)| {
                    st.registry
                        .get(id)
                        .is_some_and(|e| e.flags.pinned() && e.flags.stay_down())
                })
                .map(|(id, l)| (id.to_string(), l.child.type_name()))
                .collect()
        };
        for (id, type_name) in bound {
            self.stop_local(&id, type_name).await;
        }
        // Hand every other child to its owner on the ring without this node, with its
        // state; what cannot be handed over is restarted by the others from its start
        // state.
        let moves: Vec<(String, NodeId, u64)> = {
            let st = self.state.read().unwrap();
            // Where each would go if this node were gone: where its strategy says.
            let others = Ring::new(st.ring.members().iter().copied().filter(|n| *n != self.me));
            let members: Vec<NodeId> = st
                .members
                .iter()
                .copied()
                .filter(|n| *n != self.me)
                .collect();
            let targets = strategy_targets(self.me, &st.registry, &others, &members);
            st.local
                .iter()
                .filter(|(id, l)| self.hands_over(&st, id, l))
                .filter_map(|(id, l)| {
                    let to = match st.registry.get(id) {
                        Some(e) => targets(id, e),
                        None => others.owner(id),
                    }?;
                    Some((id.to_string(), to, l.epoch + 1))
                })
                .collect()
        };
        if !moves.is_empty() {
            let (moved, failed) = Arc::clone(self).move_children(moves).await;
            tracing::info!(me = %self.me, moved, failed, "handed children over before leaving");
        }
        // Moves the planner started before (on a join) are not in that list: let them
        // finish, or the others would restart those children from their start state.
        self.wait_moves().await;
        // Tell the peers directly (fast), then through gossip (reaches the rest).
        for c in self.transport.connections() {
            c.push(&Push::Leaving);
        }
        if let Some(m) = self.membership.lock().await.as_ref() {
            m.announce_leaving().await;
        }
        // Wait until the others have taken over what ran here (or have gone too).
        let deadline = Instant::now() + self.call_timeout;
        while Instant::now() < deadline {
            let waiting = {
                let st = self.state.read().unwrap();
                st.ring.members().len() > 1 && st.registry.iter().any(|(_, e)| e.owner == self.me)
            };
            if !waiting {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let children: Vec<LocalChild> = {
            let mut st = self.state.write().unwrap();
            st.local.drain().map(|(_, l)| l).collect()
        };
        for l in children {
            l.child.stop().await;
        }
        self.transport.shutdown().await;
        if let Some(m) = self.membership.lock().await.take() {
            m.shutdown().await;
        }
        Ok(())
    }

    /// Stops as a killed process would: children and their states are gone, and the
    /// peers are told nothing (their failure detector finds out).
    pub(super) async fn kill(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        self.transport.shutdown().await;
        if let Some(m) = self.membership.lock().await.take() {
            m.shutdown().await;
        }
        let children: Vec<LocalChild> = {
            let mut st = self.state.write().unwrap();
            st.copies.clear();
            st.local.drain().map(|(_, l)| l).collect()
        };
        for l in children {
            l.child.stop().await;
        }
    }
}
