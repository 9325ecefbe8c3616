//! A child's life on this node as the hub runs it: starts, stops, restarts of the
//! children of dead nodes, drain, shutdown and kill.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{DrainReport, HubInner, START_BATCH};
use crate::child::erased::Arrival;
use crate::child::erased::Hook;
use crate::child::erased::{ChildCtx, ErasedChild};
use crate::child::types::vtable;
use crate::core::engine::Tally;
use crate::core::item::{StartFailure, StartItem, StartOutcome, StopOutcome};
use crate::core::registry::Push;
use crate::error::HubError;
use crate::events::HubEvent;
use crate::net::batch::{batches, item_size};
use crate::net::error::TransportError;
use crate::net::wire::{ClaimAsk, Request, Response, Start};
use crate::node::NodeId;
use std::collections::BTreeMap;

/// Once a member's registry arrived, how long a joining hub waits for the other
/// members' (see `HubInner::join`).
const JOIN_SETTLE: Duration = Duration::from_secs(2);

/// The shortest a claim waits for the peers' answers (see [`HubInner::start_items`]).
const MIN_CLAIM_WAIT: Duration = Duration::from_millis(250);

/// An instance made for a start, or why it could not be.
type Spawned = Result<Arc<dyn ErasedChild>, StartFailure>;

/// How many more times a new id is tried after its start met another start of it under
/// way on another node (see [`HubInner::start_items`]).
const CLAIM_TRIES: u32 = 6;

impl HubInner {
    /// Starts `item` here if this node may (see [`Self::start_local_batch`]).
    pub(crate) fn start_local(
        &self,
        item: &StartItem,
        spawn: impl FnOnce(ChildCtx) -> Spawned,
    ) -> StartOutcome {
        let mut spawn = Some(spawn);
        let mut out = self.start_local_batch(&[item], |_, ctx| {
            (spawn.take().expect("one item, one spawn"))(ctx)
        });
        out.pop().expect("one item, one outcome")
    }

    /// Starts these items here, and tells the peers in pushes of up to [`START_BATCH`]
    /// entries rather than one frame per child. `spawn` gets the item's position.
    /// Outcomes come in order. No claims: for moves and restarts (see
    /// [`Self::start_claimed_batch`] for new children).
    ///
    /// The engine admits the items (reserving their ids) under one lock; their
    /// instances are made and their start hooks run outside it (a user hook never holds
    /// up the node, and none runs for a start refused); then the engine registers them
    /// under one lock.
    pub(crate) fn start_local_batch(
        &self,
        items: &[&StartItem],
        spawn: impl FnMut(usize, ChildCtx) -> Spawned,
    ) -> Vec<StartOutcome> {
        let admitted = self.decide(|engine| items.iter().map(|item| engine.admit(item)).collect());
        self.finish_batch(items, admitted, spawn)
    }

    /// Admits the items of `batch` and claims their new ids from the other members (see
    /// `crate::core::engine`'s claims): what may go ahead, for [`Self::finish_batch`].
    ///
    /// `via`: the node that sent them here, if one did (a start forwarded by the node
    /// that placed it here): it is asked too, even if this node's view lacks it.
    async fn admit_and_claim(
        &self,
        batch: &[&StartItem],
        via: Option<NodeId>,
    ) -> Vec<Result<u64, StartOutcome>> {
        let admitted = self.decide(|engine| batch.iter().map(|item| engine.admit(item)).collect());
        self.claim_batch(batch, admitted, via).await
    }

    /// Claims the admitted new ids of `items` from every reachable peer at once, and
    /// lets the engine decide on the answers: what it refuses is released.
    async fn claim_batch(
        &self,
        items: &[&StartItem],
        mut admitted: Vec<Result<u64, StartOutcome>>,
        via: Option<NodeId>,
    ) -> Vec<Result<u64, StartOutcome>> {
        let (plan, wait) = {
            let engine = self.engine.read().unwrap();
            let mut plan: Option<Vec<NodeId>> = None;
            let mut claimed = Vec::new();
            for (k, (item, a)) in items.iter().zip(&admitted).enumerate() {
                if a.is_err() {
                    continue;
                }
                if let Some(p) = engine.claim_peers(item, via) {
                    plan.get_or_insert(p);
                    claimed.push(k);
                }
            }
            let lease = engine.downing.config.lease;
            (plan.map(|p| (p, claimed)), lease.max(MIN_CLAIM_WAIT))
        };
        let Some((peers, claimed)) = plan else {
            return admitted;
        };
        let ids: Vec<String> = claimed.iter().map(|&k| items[k].id.clone()).collect();
        // A peer that does not answer within a lease (paused, or cut off and not yet
        // downed) is not waited for longer: the grants of the others may be enough.
        // (At least MIN_CLAIM_WAIT: a very short lease must not fail starts on a busy
        // machine.)
        let mut tallies = vec![Tally::default(); ids.len()];
        let mut heard: Vec<NodeId> = Vec::new();
        self.ask_claim(
            &peers,
            &ids,
            Instant::now() + wait,
            &mut tallies,
            &mut heard,
        )
        .await;
        // The answers named members this view lacks (a joiner's view fills as gossip
        // brings them): the quorum counts them, and they are asked too, once.
        let (_, more) = self.engine.read().unwrap().claim_heard(via, &peers, &heard);
        if !more.is_empty() {
            self.ask_claim(&more, &ids, Instant::now() + wait, &mut tallies, &mut heard)
                .await;
        }
        let asked: Vec<NodeId> = peers.iter().chain(&more).copied().collect();
        self.decide(|engine| {
            let (needed, _) = engine.claim_heard(via, &asked, &heard);
            for (&k, tally) in claimed.iter().zip(&tallies) {
                if let Err(outcome) = engine.claimed(items[k], needed, tally) {
                    admitted[k] = Err(outcome);
                }
            }
        });
        admitted
    }

    /// Asks `peers` for the claim of `ids` at once, until `deadline`: their answers go
    /// into `tallies` (one per id), the members they name into `heard`.
    async fn ask_claim(
        &self,
        peers: &[NodeId],
        ids: &[String],
        deadline: Instant,
        tallies: &mut [Tally],
        heard: &mut Vec<NodeId>,
    ) {
        let asks = peers.iter().map(|&peer| {
            let ask = Request::Claim(ClaimAsk { ids: ids.to_vec() });
            self.transport.request(peer, ask, deadline)
        });
        for answer in futures_util::future::join_all(asks).await {
            match answer {
                Ok(Response::Claimed { answers, members }) if answers.len() == ids.len() => {
                    for (t, a) in tallies.iter_mut().zip(answers) {
                        t.count(a);
                    }
                    heard.extend(members);
                }
                other => tracing::debug!(me = %self.me(), "a claim went unanswered: {other:?}"),
            }
        }
    }

    /// Makes the instances of the admitted items (outside the engine's lock), then has
    /// the engine register them under one lock.
    fn finish_batch(
        &self,
        items: &[&StartItem],
        admitted: Vec<Result<u64, StartOutcome>>,
        mut spawn: impl FnMut(usize, ChildCtx) -> Spawned,
    ) -> Vec<StartOutcome> {
        let mut made: Vec<Option<Spawned>> = items
            .iter()
            .zip(&admitted)
            .enumerate()
            .map(|(k, (item, admitted))| {
                let epoch = *admitted.as_ref().ok()?;
                let ctx = self.child_ctx(Arc::from(item.id.as_str()), epoch, &item.type_name);
                let how = if item.start_state.is_some() {
                    Arrival::HandedOver
                } else {
                    Arrival::Started
                };
                Some(spawn(k, ctx).and_then(|child| {
                    child.arrive(how)?;
                    Ok(child)
                }))
            })
            .collect();
        self.decide(|engine| {
            let outcomes = items
                .iter()
                .zip(admitted)
                .zip(made.iter_mut())
                .map(|((item, admitted), made)| match admitted {
                    Err(outcome) => outcome,
                    Ok(epoch) => {
                        let made = made.take().expect("made for every admitted item");
                        engine.started(item, epoch, made)
                    }
                })
                .collect();
            // Standbys from the start, not at the next plan.
            engine.keep_replicas_if_due();
            outcomes
        })
    }

    /// Starts a batch: local items here, the others on their owners, concurrently.
    /// Results come in input order.
    ///
    /// A new id that met another node's start of it under way (its claim was refused,
    /// see `crate::core::engine`'s claims) is tried again a few times, a moment apart:
    /// by then the other start has usually been registered, and the answer is where it
    /// runs.
    ///
    /// `via`: the node that forwarded them here, if one did.
    pub(crate) async fn start_items(
        self: &Arc<Self>,
        items: Vec<StartItem>,
        hops: u8,
        via: Option<NodeId>,
        mut local_spawn: impl FnMut(usize, &StartItem, ChildCtx) -> Spawned,
    ) -> Vec<StartOutcome> {
        let mut out: Vec<Option<StartOutcome>> = vec![None; items.len()];
        let mut todo: Vec<(usize, StartItem)> = items.into_iter().enumerate().collect();
        for attempt in 1.. {
            let contended = self
                .start_round(todo, hops, via, &mut local_spawn, &mut out)
                .await;
            if contended.is_empty() || attempt > CLAIM_TRIES {
                break;
            }
            tokio::time::sleep(self.claim_backoff(attempt)).await;
            todo = contended;
        }
        out.into_iter()
            .map(|o| o.expect("every item has an outcome"))
            .collect()
    }

    /// How long a start that met another start of its id waits before its `attempt`th
    /// try: longer each time, and spread by node, so that two nodes that keep meeting
    /// part (the same every run for the same node: the simulator replays a seed).
    fn claim_backoff(&self, attempt: u32) -> Duration {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        (self.me(), attempt).hash(&mut h);
        let spread = h.finish() % 8;
        Duration::from_millis(u64::from(attempt) * 4 + spread * 2)
    }

    /// One try of [`Self::start_items`] over `items` (with their positions): fills
    /// `out`, and gives back the local items whose start met another one of their id.
    async fn start_round(
        self: &Arc<Self>,
        items: Vec<(usize, StartItem)>,
        hops: u8,
        via: Option<NodeId>,
        mut local_spawn: impl FnMut(usize, &StartItem, ChildCtx) -> Spawned,
        out: &mut [Option<StartOutcome>],
    ) -> Vec<(usize, StartItem)> {
        let mut remote: BTreeMap<NodeId, Vec<(usize, StartItem)>> = BTreeMap::new();
        let targets: Vec<Option<NodeId>> = {
            let engine = self.engine.read().unwrap();
            items
                .iter()
                .map(|(_, i)| engine.start_target(i, hops))
                .collect()
        };
        let mut local = Vec::new();
        let mut contended = Vec::new();
        for ((i, item), target) in items.into_iter().zip(targets) {
            match target {
                None => local.push((i, item)),
                Some(owner) => remote.entry(owner).or_default().push((i, item)),
            }
        }
        // Taking children in is a write: only under the lease. (Found by soak seed 226:
        // a node woken from a pause, downed meanwhile, accepted a hand-over on its stale
        // view, then rejoined and dropped it, and with it the only copy of the state.)
        // The local items go first: their entries reach the other owners before the
        // starts sent to them (an owner that answered knows the caller's children too).
        let me = self.me();
        let local_starts = async {
            let mut done = Vec::with_capacity(local.len());
            if !local.is_empty() && self.lease().ready().await.is_err() {
                for (i, _) in local.drain(..) {
                    done.push((i, StartOutcome::NoQuorum { node: me }));
                }
            }
            // Every batch's claim at once (one round trip for all, not one per batch of
            // 512); then their instances, a batch at a time.
            let chunks: Vec<&[(usize, StartItem)]> = local.chunks(START_BATCH).collect();
            let batches: Vec<Vec<&StartItem>> = chunks
                .iter()
                .map(|chunk| chunk.iter().map(|(_, item)| item).collect())
                .collect();
            let admitted = futures_util::future::join_all(
                batches.iter().map(|batch| self.admit_and_claim(batch, via)),
            )
            .await;
            for ((chunk, batch), admitted) in chunks.iter().zip(&batches).zip(admitted) {
                let outcomes = self.finish_batch(batch, admitted, |k, ctx| {
                    local_spawn(chunk[k].0, &chunk[k].1, ctx)
                });
                for ((i, item), o) in chunk.iter().zip(outcomes) {
                    if matches!(o, StartOutcome::Contended { .. }) {
                        contended.push((*i, item.clone()));
                    }
                    done.push((*i, o));
                }
            }
            done
        }
        .await;
        let deadline = Instant::now() + self.call_timeout;
        let mut requests = Vec::new();
        for (node, items) in remote {
            if hops > 0 {
                self.emit(HubEvent::StartsForwarded {
                    ids: items.iter().map(|(_, i)| i.id.clone()).collect(),
                    to: node,
                });
            }
            for chunk in batches(&items, START_BATCH, self.batch_bytes(), |(_, i)| {
                item_size(i)
            }) {
                let (idx, batch): (Vec<usize>, Vec<StartItem>) = chunk.iter().cloned().unzip();
                let t = self.transport.clone();
                requests.push(async move {
                    let res = t
                        .request(
                            node,
                            Request::Start(Start {
                                items: batch,
                                hops: hops + 1,
                            }),
                            deadline,
                        )
                        .await;
                    (node, idx, res)
                });
            }
        }
        let answers = futures_util::future::join_all(requests).await;
        for (i, o) in local_starts {
            out[i] = Some(o);
        }
        for (node, idx, res) in answers {
            match res {
                Ok(Response::Started(outcomes)) if outcomes.len() == idx.len() => {
                    for (i, o) in idx.into_iter().zip(outcomes) {
                        out[i] = Some(o);
                    }
                }
                other => {
                    let outcome = match other {
                        Err(TransportError::Timeout) => StartOutcome::TimedOut,
                        Err(e @ (TransportError::NotConnected | TransportError::Lost)) => {
                            StartOutcome::Unreachable {
                                node,
                                message: format!("{e:?}"),
                            }
                        }
                        Err(e) => StartOutcome::Failed {
                            message: format!("{e:?}"),
                        },
                        Ok(r) => StartOutcome::Failed {
                            message: format!("unexpected response {r:?}"),
                        },
                    };
                    for i in idx {
                        out[i] = Some(outcome.clone());
                    }
                }
            }
        }
        contended
    }

    /// Stops `id` if it runs here.
    pub(crate) async fn stop_local(&self, id: &str, type_name: &str) -> StopOutcome {
        // A stop is a write: only under the lease (a node paused past it, or cut off,
        // may be replaced meanwhile, and the replacement would bring the child back).
        let lease = self.lease();
        if lease.ready().await.is_err() {
            return StopOutcome::NoQuorum { node: self.me() };
        }
        let child = match self.decide(|engine| engine.stop(id, type_name)) {
            Ok(child) => child,
            Err(outcome) => return outcome,
        };
        child.clone().run_hook(Hook::Stop).await;
        child.stop().await;
        self.emit(HubEvent::ChildStopped {
            id: id.to_string(),
            node: self.me(),
        });
        // Confirmed only if still under the lease: its removal may not count otherwise.
        if lease.ready().await.is_err() {
            return StopOutcome::NoQuorum { node: self.me() };
        }
        StopOutcome::Stopped
    }

    /// Puts children that were not called for `hibernate_after` to sleep.
    pub(super) fn hibernate_idle(&self) {
        let Some(idle) = self.hibernate_after else {
            return;
        };
        // Only the children that woke: an idle node with many sleeping children walks
        // none of them.
        let awake = std::mem::take(&mut *self.awake.lock().unwrap());
        let now = Instant::now();
        let mut still = Vec::new();
        for weak in awake {
            let Some(c) = weak.upgrade() else { continue };
            if c.is_awake() && !c.try_hibernate(idle, now) {
                still.push(weak);
            }
        }
        self.awake.lock().unwrap().extend(still);
    }

    /// Restarts a child of a dead or departed node here: as the engine says (a standby
    /// copy promoted, or its start state).
    pub(super) fn restart_local(&self, id: &str, epoch: u64, from: NodeId) {
        let Some(mut restart) = self.decide(|engine| engine.restart(id, epoch, from)) else {
            return;
        };
        let span = tracing::debug_span!(
            "processhub.restart",
            %id,
            epoch,
            %from,
            promoted = restart.promoted
        );
        let _entered = span.enter();
        // The promoted copy's table moves into the instance (not copied).
        let recent = std::mem::take(&mut restart.recent);
        let replay = std::mem::take(&mut restart.replay);
        let item = &restart.item;
        let outcome = match vtable(&item.type_name) {
            Some(vt) => {
                let promoted = restart.promoted;
                self.start_local(item, |mut ctx| {
                    // The promoted copy answers the retries of writes it already holds.
                    if promoted {
                        ctx.recent = Some(Arc::new(std::sync::Mutex::new(recent)));
                    }
                    (vt.promote)(&item.state, ctx, replay)
                })
            }
            None => StartOutcome::UnknownType { node: self.me() },
        };
        self.decide(|engine| engine.restarted(restart, &outcome));
    }

    /// Waits until no move of a child of this node is under way (each ends within the
    /// move timeout, rolled back if it must).
    async fn wait_moves(&self) {
        let deadline = Instant::now() + self.move_timeout + Duration::from_secs(1);
        while self.engine.read().unwrap().is_moving() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub(super) async fn drain(self: &Arc<Self>) -> Result<DrainReport, HubError> {
        if self.is_stopped() {
            return Err(HubError::Stopped);
        }
        // Counted first: the planner starts moving children as soon as this node is
        // off the ring. (Active/active instances stay: they are not handed over.)
        let before = self.engine.read().unwrap().handed_over_count();
        // Take this node off the ring here and everywhere: no new placements.
        self.decide(|engine| engine.drain_here());
        for c in self.transport.connections() {
            c.push(&Push::Draining);
        }
        if let Some(m) = self.membership.lock().await.as_ref() {
            m.announce_draining().await;
        }
        // Where each goes by its strategy, now that this node takes none.
        let moves = self.engine.read().unwrap().drain_moves();
        Arc::clone(self).move_children(moves).await;
        // The planner's timer may have started some of these moves first: wait for them.
        self.wait_moves().await;
        let left = self.engine.read().unwrap().handed_over_count();
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
        self.emit(HubEvent::ShuttingDown { node: self.me() });
        self.stop_admin();
        self.engine.write().unwrap().leave();
        // Children pinned here that stay down when their node goes stop with it.
        let bound = self.engine.read().unwrap().bound_here();
        for (id, type_name) in bound {
            self.stop_local(&id, &type_name).await;
        }
        // Hand every other child to its owner on the ring without this node, with its
        // state (where its strategy says); what cannot be handed over is restarted by
        // the others from its start state.
        let moves = self.engine.read().unwrap().leave_moves();
        if !moves.is_empty() {
            let (moved, failed) = Arc::clone(self).move_children(moves).await;
            tracing::info!(me = %self.me(), moved, failed, "handed children over before leaving");
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
            let waiting = self.engine.read().unwrap().owns_any_with_others_left();
            if !waiting {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let children = self.engine.write().unwrap().take_all(false);
        for child in children {
            child.stop().await;
        }
        self.transport.shutdown().await;
        if let Some(m) = self.membership.lock().await.take() {
            m.shutdown().await;
        }
        Ok(())
    }

    /// Stops as a killed process would: children and their states are gone, and the
    /// peers are told nothing (their failure detector finds out).
    /// Waits until this new hub has joined the cluster its seeds are in: a member
    /// answered, every member in view sent its registry, and the view has not grown for
    /// `quiet` (gossip tells of the members a round at a time). If no member sent its
    /// registry within `timeout`, the hub stops and the start fails with
    /// `NoSeedReachable`. Once one has, the rest get [`JOIN_SETTLE`] more (a member in
    /// view may be dead and never answer); then the hub goes on, and what is missing
    /// arrives as the connections come up.
    pub(super) async fn join(
        &self,
        seeds: &[String],
        timeout: Duration,
        quiet: Duration,
    ) -> Result<(), HubError> {
        let deadline = Instant::now() + timeout;
        let mut settle: Option<Instant> = None;
        let mut last = (0, 0);
        let mut since = Instant::now();
        loop {
            let state = self.engine.read().unwrap().join_state();
            let now = Instant::now();
            if state != last {
                (last, since) = (state, now);
            }
            let (seen, synced) = state;
            if synced > 0 {
                if synced == seen && now - since >= quiet {
                    return Ok(());
                }
                let until = *settle.get_or_insert(now + JOIN_SETTLE);
                if now >= until {
                    if synced < seen {
                        tracing::warn!(
                            me = %self.me(),
                            "joined; {synced} of {seen} members' registries arrived so far"
                        );
                    }
                    return Ok(());
                }
            } else if now >= deadline {
                self.kill().await;
                if let Some(reason) = self.transport.tls_refusal() {
                    return Err(HubError::TlsRefused {
                        seeds: seeds.to_vec(),
                        reason,
                    });
                }
                if self.transport.key_refusals() > 0 {
                    return Err(HubError::ClusterKeyRefused {
                        seeds: seeds.to_vec(),
                    });
                }
                return Err(HubError::NoSeedReachable {
                    seeds: seeds.to_vec(),
                    waited: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub(super) async fn kill(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        self.stop_admin();
        self.engine.write().unwrap().leave();
        self.transport.shutdown().await;
        if let Some(m) = self.membership.lock().await.take() {
            m.shutdown().await;
        }
        let children = self.engine.write().unwrap().take_all(true);
        for child in children {
            child.stop().await;
        }
    }
}
