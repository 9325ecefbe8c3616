//! Replication: standby sets, shipments of a primary's state, standby copies and
//! active/active replicas.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use super::HubInner;
use crate::child::erased::Arrival;
use crate::child::erased::{ChildCtx, Replicator, ShipWhen, WriteCaller};
use crate::child::types::vtable;
use crate::core::engine::{Kept, ShipPlan};
use crate::core::engine::{LoggedCall, MAX_LOGGED_CALLS};
use crate::core::entry::{EpochCell, Role};
use crate::core::recent::calls_to_wire;
use crate::core::recent::SharedRecent;
use crate::core::recent::{calls_from_wire, WireCalls};
use crate::net::error::TransportError;
use crate::net::transport::RECONNECT_WAIT;
use crate::net::wire::{AckTo, Held, Replicate, ReplicateCall, ReplicateStaged};
use crate::net::wire::{Frame, Request, Response};
use crate::node::NodeId;

/// A standby copy as held: its state, and the writes it holds as calls since.
pub(crate) type HeldCopy = (Vec<u8>, Vec<LoggedCall>);

/// The least a write shipped as its call waits for its standbys before the state goes
/// instead (at most the call's timeout, at least this, else a lease).
const CALL_ROUND_MIN: std::time::Duration = std::time::Duration::from_millis(250);

/// How long a shipment that did not reach every standby waits before it looks again.
const RESHIP_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

impl HubInner {
    /// This node's standby copy of `id`, if it holds one, and a context to run it in.
    pub(crate) fn standby_copy(&self, id: &Arc<str>) -> Option<(HeldCopy, ChildCtx)> {
        let (state, epoch, calls) = self.engine.read().unwrap().standby_copy(id)?;
        Some((
            (state, calls),
            ChildCtx {
                id: id.clone(),
                node: self.me(),
                epoch: EpochCell::new(epoch),
                events: self.events.clone(),
                replicator: None,
                role: None,
                // Reads only: no table of writes needed.
                recent: None,
                awake: None,
                lease: None,
            },
        ))
    }

    /// Sends a replicated child's state (the whole of it: state shipping) to the
    /// standbys the ring gives it now, until every one of them has it: true then. A
    /// standby that does not take it (its node is unreachable) is asked again while the
    /// call's deadline lasts, and once its node is downed and another takes its place the
    /// new one is sent the state instead; false if the deadline passes first: the write
    /// is then not acknowledged, so that no standby that could be promoted lacks an
    /// acknowledged write. The nodes that took it are published as its standby set.
    async fn ship(
        &self,
        id: Arc<str>,
        type_name: &'static str,
        (epoch, seq): (u64, u64),
        state: Vec<u8>,
        calls: CallsToShip,
        caller: Option<WriteCaller>,
    ) -> bool {
        let CallsToShip {
            unshipped,
            recent,
            in_step,
            log,
        } = calls;
        let deadline = Instant::now() + self.call_timeout;
        let delta = calls_to_wire(&unshipped);
        let mut have: Vec<NodeId> = Vec::new();
        loop {
            let in_step_now = in_step.lock().unwrap().clone();
            let plan = self.engine.read().unwrap().ship_plan(&id, type_name, epoch);
            // Not this node's primary under this epoch (any more): nothing to keep in
            // step, and nothing to acknowledge.
            let Some(plan) = plan else {
                in_step.lock().unwrap().clear();
                return false;
            };
            let acks_direct = plan.acks_direct();
            let ShipPlan {
                current,
                targets,
                epoch,
            } = plan;
            if targets.is_empty() && current.is_empty() {
                in_step.lock().unwrap().clear();
                return true;
            }
            let missing: Vec<NodeId> = targets
                .iter()
                .copied()
                .filter(|n| !have.contains(n))
                .collect();
            // A shipment to the published set that no standby took yet: each standby
            // tells the write's caller too (after a round that some took, the primary
            // answers).
            let ack = caller
                .filter(|_| have.is_empty() && acks_direct)
                .map(|c| AckTo {
                    caller: c.node,
                    call_id: c.call_id,
                    standbys: targets.clone(),
                });
            let whole = missing.iter().any(|n| !in_step_now.contains(n)).then(|| {
                recent
                    .as_ref()
                    .map(|r| calls_to_wire(&r.lock().unwrap().to_list()))
                    .unwrap_or_default()
            });
            let sends = missing.iter().map(|node| {
                let append = in_step_now.contains(node) && have.is_empty();
                let copy = Replicate {
                    id: id.to_string(),
                    type_name: type_name.to_string(),
                    epoch,
                    seq,
                    state: serde_bytes::ByteBuf::from(state.clone()),
                    recent: if append {
                        delta.clone()
                    } else {
                        whole.clone().unwrap_or_else(|| {
                            recent
                                .as_ref()
                                .map(|r| calls_to_wire(&r.lock().unwrap().to_list()))
                                .unwrap_or_default()
                        })
                    },
                    append,
                };
                let ack = ack.clone();
                async move {
                    matches!(
                        self.send_copy(*node, copy, ack, deadline).await,
                        Ok(Response::Replicated(Ok(())))
                    )
                }
            });
            let took_now: Vec<NodeId> = futures_util::future::join_all(sends)
                .await
                .into_iter()
                .zip(&missing)
                .filter(|(ok, _)| *ok)
                .map(|(_, n)| *n)
                .collect();
            have.extend(took_now);
            let took: Vec<NodeId> = targets
                .iter()
                .copied()
                .filter(|n| have.contains(n))
                .collect();
            let all = took.len() == targets.len();
            if all || Instant::now() + RESHIP_PAUSE >= deadline {
                if all {
                    *log.lock().unwrap() = CallLog {
                        state: state.len(),
                        ..CallLog::default()
                    };
                }
                in_step.lock().unwrap().clone_from(&took);
                self.decide(|engine| engine.shipped(&id, epoch, &current, took));
                return all;
            }
            // Those that took it hold the latest state: they join the published set now,
            // not only once every standby took it (this node may die first, and the
            // restart must find their copies: simulator seed 208, 5 nodes, the heavy
            // mix, promoted a standby whose new standby took the state while the other
            // was cut off; the primary crashed before its deadline, and the restart,
            // which knew only the old dead standby, began from the start state). Those
            // of the set that did not take it stay: they hold every write acknowledged
            // so far, and this one is not yet.
            let added: Vec<NodeId> = took
                .iter()
                .copied()
                .filter(|n| !current.contains(n))
                .collect();
            if !added.is_empty() {
                let widened: Vec<NodeId> = current.iter().copied().chain(added).collect();
                self.decide(|engine| engine.shipped(&id, epoch, &current, widened));
            }
            // A standby did not take it: its node may be downed and replaced meanwhile.
            tokio::time::sleep(RESHIP_PAUSE).await;
        }
    }

    /// Sends a standby copy to `node`: in one request (asking the standby to tell the
    /// write's caller, with `ack`), or staged in parts of half a frame when it would not
    /// fit in one (a state of many MiB; no word to the caller then).
    async fn send_copy(
        &self,
        node: NodeId,
        copy: Replicate,
        ack: Option<AckTo>,
        deadline: Instant,
    ) -> Result<Response, TransportError> {
        let size = copy.state.len()
            + copy.id.len()
            + copy.type_name.len()
            + copy.recent.iter().map(|(_, r)| r.len() + 24).sum::<usize>();
        let whole = |copy| match ack {
            Some(ack) => Request::ReplicateAcked(copy, ack),
            None => Request::Replicate(copy),
        };
        let staged = |transfer| Request::ReplicateStaged(ReplicateStaged { transfer });
        self.send_whole_or_staged(
            node,
            (copy, size),
            (RECONNECT_WAIT, deadline),
            whole,
            staged,
        )
        .await
    }

    /// Sends a write as its call to every standby in `plan` (each held every shipment
    /// before it): true if each kept it, false if one did not or could not be reached
    /// within a lease (the state goes then, and waits for the slow ones as
    /// [`Self::ship`] does: a write waits for an unresponsive standby about as long as
    /// a state-shipped one).
    async fn ship_call(
        &self,
        id: &str,
        plan: ShipPlan,
        call: ReplicateCall,
        caller: Option<WriteCaller>,
    ) -> bool {
        let ack = caller.filter(|_| plan.acks_direct()).map(|c| AckTo {
            caller: c.node,
            call_id: c.call_id,
            standbys: plan.targets.clone(),
        });
        let ShipPlan {
            current,
            targets,
            epoch,
        } = plan;
        let lease = self.engine.read().unwrap().downing.config.lease;
        let wait = lease.clamp(CALL_ROUND_MIN, self.call_timeout.max(CALL_ROUND_MIN));
        let deadline = Instant::now() + wait;
        let t = &self.transport;
        let sends = targets.iter().map(|node| {
            let copy = ReplicateCall {
                id: call.id.clone(),
                type_name: call.type_name.clone(),
                method: call.method.clone(),
                args: call.args.clone(),
                recent: call.recent.clone(),
                epoch: call.epoch,
                seq: call.seq,
            };
            let req = match &ack {
                Some(ack) => Request::ReplicateCallAcked(copy, ack.clone()),
                None => Request::ReplicateCall(copy),
            };
            async move {
                matches!(
                    t.request_within(*node, req, RECONNECT_WAIT, deadline).await,
                    Ok(Response::Replicated(Ok(())))
                )
            }
        });
        let all = futures_util::future::join_all(sends)
            .await
            .into_iter()
            .all(|took| took);
        if all {
            self.decide(|engine| engine.shipped(id, epoch, &current, targets));
        }
        all
    }

    /// Serves a shipment of a replicated child's state (whole, or staged in parts).
    /// `ack`: the write's caller, told once the copy is kept.
    pub(super) fn keep_replicated(&self, r: Replicate, ack: Option<Box<AckTo>>) -> Response {
        let Replicate {
            id,
            type_name,
            epoch,
            seq,
            state,
            recent,
            append,
        } = r;
        let held = ack.and_then(|ack| held_word(*ack, (epoch, seq), &recent));
        let recent = calls_from_wire(recent);
        let kept = self.keep_copy(
            &id,
            &type_name,
            (epoch, seq),
            state.into_vec(),
            (recent, append),
        );
        if let (Ok(()), Some(held)) = (&kept, held) {
            self.tell_held(held);
        }
        Response::Replicated(kept)
    }

    /// Tells a write's caller that this node holds it: here, if it called from this
    /// node; else if a connection to it is up (if not, the primary's reply answers it).
    fn tell_held(&self, (caller, held): (NodeId, Held)) {
        let me = self.me();
        if caller == me {
            crate::client::held::heard(&self.held, me, held);
        } else {
            self.transport.send_one_way(caller, Frame::Held(held));
        }
    }

    /// Keeps a standby copy sent by a replicated child's primary (the engine decides
    /// which copy it keeps), or runs an active/active replica from it.
    fn keep_copy(
        &self,
        id: &str,
        type_name: &str,
        version: (u64, u64),
        state: Vec<u8>,
        recent: (Vec<(u128, Vec<u8>)>, bool),
    ) -> Result<(), String> {
        let kept = self
            .engine
            .write()
            .unwrap()
            .keep_copy(id, type_name, version, state, recent);
        match kept.map_err(|e| e.to_string())? {
            Kept::Copy => Ok(()),
            Kept::Replica(state) => self.run_replica(id, type_name, version.0, &state),
        }
    }

    /// Appends a write shipped as its call to the standby copy of `id` (the engine
    /// decides whether the copy can take it): `Replicated(Ok)` if kept, `OutOfStep` if
    /// the primary must send the state instead.
    pub(super) fn keep_call(
        &self,
        id: &str,
        type_name: &str,
        version: (u64, u64),
        call: LoggedCall,
        (recent, ack): (WireCalls, Option<Box<AckTo>>),
    ) -> Response {
        let held = ack.and_then(|ack| held_word(*ack, version, &recent));
        let recent = calls_from_wire(recent);
        let kept = self
            .engine
            .write()
            .unwrap()
            .keep_call(id, type_name, version, call, recent);
        match kept {
            Ok(true) => {
                if let Some(held) = held {
                    self.tell_held(held);
                }
                Response::Replicated(Ok(()))
            }
            Ok(false) => Response::OutOfStep,
            Err(e) => Response::Replicated(Err(e.to_string())),
        }
    }

    /// Starts an active/active replica of `id` here from `state`, unless one runs: it
    /// serves calls made here and those sent here, on its own.
    fn run_replica(
        &self,
        id: &str,
        type_name: &str,
        epoch: u64,
        state: &[u8],
    ) -> Result<(), String> {
        let vt = vtable(type_name).ok_or_else(|| format!("unknown type {type_name}"))?;
        if self.engine.read().unwrap().runs_here(id) {
            return Ok(());
        }
        let mut ctx = self.child_ctx(Arc::from(id), epoch, type_name);
        ctx.role = Some(Role::Replica);
        let child = (vt.spawn)(state, ctx, false).map_err(|e| e.to_string())?;
        child.arrive(Arrival::Replica).map_err(|e| e.to_string())?;
        self.engine.write().unwrap().add_replica(id, child, epoch);
        Ok(())
    }
}

/// What a standby tells the caller of a write it keeps (`ack`), with the reply the
/// shipment's table carries for it; none if the table lacks it (the caller then waits
/// for the primary).
fn held_word(ack: AckTo, (epoch, seq): (u64, u64), recent: &WireCalls) -> Option<(NodeId, Held)> {
    let (_, reply) = recent.iter().find(|(id, _)| *id == ack.call_id)?;
    Some((
        ack.caller,
        Held {
            call_id: ack.call_id,
            epoch,
            seq,
            standbys: ack.standbys,
            reply: reply.clone(),
        },
    ))
}

/// The hub's side of replication for one child: sends its state to its standbys.
pub(super) struct HubReplicator {
    pub(super) hub: Weak<HubInner>,
    /// Shipments so far (kept while the child sleeps: its actor is made anew).
    pub(super) seq: AtomicU64,
    /// The standbys that took every shipment of this instance, its table of identified
    /// writes included: they get only what is new of it.
    pub(super) in_step: Arc<std::sync::Mutex<Vec<NodeId>>>,
    /// The calls shipped since the state last went (`ship = "calls"`).
    pub(super) log: Arc<std::sync::Mutex<CallLog>>,
    /// A shipment of the state after asynchronous writes is due: it will take the state
    /// as it is then ([`Replicator::ship_when`]).
    pub(super) due: std::sync::atomic::AtomicBool,
}

/// What a replicated child's standbys hold past its last shipped state, as calls
/// (`ship = "calls"`): once they would hold more calls than [`MAX_LOGGED_CALLS`], or
/// more bytes of calls than the state's size (at least [`LOG_BYTES`]), the state goes
/// again. A copy thus costs at most about twice its state, and a promotion replays a
/// bounded number of calls.
#[derive(Debug, Default)]
pub(super) struct CallLog {
    calls: usize,
    bytes: usize,
    state: usize,
}

/// The bytes of calls a standby may hold past a state smaller than this.
const LOG_BYTES: usize = 4096;

impl CallLog {
    fn has_room(&self, len: usize) -> bool {
        self.calls < MAX_LOGGED_CALLS && self.bytes + len <= self.state.max(LOG_BYTES)
    }
}

/// A shipment's part of a child's table of identified writes ([`RecentCalls`]): what
/// a standby in step lacks, and the whole table for the others.
struct CallsToShip {
    unshipped: Vec<(u128, Vec<u8>)>,
    recent: SharedRecent,
    in_step: Arc<std::sync::Mutex<Vec<NodeId>>>,
    log: Arc<std::sync::Mutex<CallLog>>,
}

impl HubReplicator {
    /// The next shipment's number and the table's entries recorded since the previous
    /// one: taken now, in the order of the writes.
    fn next_shipment(&self, recent: &SharedRecent) -> (u64, Vec<(u128, Vec<u8>)>) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let unshipped = recent
            .as_ref()
            .map(|r| r.lock().unwrap().take_unshipped())
            .unwrap_or_default();
        (seq, unshipped)
    }
}

impl Replicator for HubReplicator {
    fn ship(
        &self,
        id: Arc<str>,
        type_name: &'static str,
        epoch: u64,
        state: Vec<u8>,
        recent: SharedRecent,
        caller: Option<WriteCaller>,
    ) -> BoxFuture<'static, bool> {
        let hub = self.hub.clone();
        let (seq, unshipped) = self.next_shipment(&recent);
        let calls = CallsToShip {
            unshipped,
            recent,
            in_step: self.in_step.clone(),
            log: self.log.clone(),
        };
        Box::pin(async move {
            match hub.upgrade() {
                Some(hub) => {
                    hub.ship(id, type_name, (epoch, seq), state, calls, caller)
                        .await
                }
                None => false,
            }
        })
    }

    fn ship_call(
        &self,
        id: Arc<str>,
        type_name: &'static str,
        epoch: u64,
        (method, args): (&str, &[u8]),
        recent: SharedRecent,
        caller: Option<WriteCaller>,
    ) -> Option<BoxFuture<'static, bool>> {
        let hub = self.hub.upgrade()?;
        let len = method.len() + args.len();
        if !self.log.lock().unwrap().has_room(len) {
            return None;
        }
        let plan = hub
            .engine
            .read()
            .unwrap()
            .ship_plan(&id, type_name, epoch)?;
        {
            let in_step = self.in_step.lock().unwrap();
            if plan.targets.iter().any(|n| !in_step.contains(n)) {
                return None;
            }
        }
        let (seq, unshipped) = self.next_shipment(&recent);
        let call = ReplicateCall {
            id: id.to_string(),
            type_name: type_name.to_string(),
            epoch: plan.epoch,
            seq,
            method: method.to_string(),
            args: serde_bytes::ByteBuf::from(args),
            recent: calls_to_wire(&unshipped),
        };
        let (in_step, log) = (self.in_step.clone(), self.log.clone());
        Some(Box::pin(async move {
            let took = hub.ship_call(&id, plan, call, caller).await;
            if took {
                let mut log = log.lock().unwrap();
                log.calls += 1;
                log.bytes += len;
            } else {
                // The state goes next, with the whole table to every standby.
                in_step.lock().unwrap().clear();
            }
            took
        }))
    }

    fn ship_when(&self) -> ShipWhen {
        let window = self
            .hub
            .upgrade()
            .map_or(std::time::Duration::ZERO, |hub| hub.async_ship_window);
        if window.is_zero() {
            ShipWhen::Now
        } else if self.due.swap(true, Ordering::AcqRel) {
            ShipWhen::Due
        } else {
            ShipWhen::After(window)
        }
    }

    fn shipment_begins(&self) {
        self.due.store(false, Ordering::Release);
    }
}
