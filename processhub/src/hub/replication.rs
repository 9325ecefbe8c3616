//! Replication: standby sets, shipments of a primary's state, standby copies and
//! active/active replicas.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use super::HubInner;
use crate::child::erased::Arrival;
use crate::child::erased::{ChildCtx, Replicator};
use crate::child::types::vtable;
use crate::core::engine::{Kept, ShipPlan};
use crate::core::entry::{EpochCell, Role};
use crate::core::recent::calls_to_wire;
use crate::core::recent::SharedRecent;
use crate::net::transport::RECONNECT_WAIT;
use crate::net::wire::Replicate;
use crate::net::wire::{Request, Response};
use crate::node::NodeId;

/// How long a shipment that did not reach every standby waits before it looks again.
const RESHIP_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

impl HubInner {
    /// This node's standby copy of `id`, if it holds one, and a context to run it in.
    pub(crate) fn standby_copy(&self, id: &Arc<str>) -> Option<(Vec<u8>, ChildCtx)> {
        let (state, epoch) = self.engine.read().unwrap().standby_copy(id)?;
        Some((
            state,
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
    ) -> bool {
        let CallsToShip {
            unshipped,
            recent,
            in_step,
        } = calls;
        let deadline = Instant::now() + self.call_timeout;
        let delta = calls_to_wire(&unshipped);
        let mut have: Vec<NodeId> = Vec::new();
        loop {
            let in_step_now = in_step.lock().unwrap().clone();
            let plan = self.engine.read().unwrap().ship_plan(&id, type_name, epoch);
            // Not this node's primary under this epoch (any more): nothing to keep in
            // step, and nothing to acknowledge.
            let Some(ShipPlan {
                current,
                targets,
                epoch,
            }) = plan
            else {
                in_step.lock().unwrap().clear();
                return false;
            };
            if targets.is_empty() && current.is_empty() {
                in_step.lock().unwrap().clear();
                return true;
            }
            let missing: Vec<NodeId> = targets
                .iter()
                .copied()
                .filter(|n| !have.contains(n))
                .collect();
            let whole = missing.iter().any(|n| !in_step_now.contains(n)).then(|| {
                recent
                    .as_ref()
                    .map(|r| calls_to_wire(&r.lock().unwrap().to_list()))
                    .unwrap_or_default()
            });
            let sends = missing.iter().map(|node| {
                let append = in_step_now.contains(node) && have.is_empty();
                let req = Request::Replicate(Replicate {
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
                });
                let t = &self.transport;
                async move {
                    matches!(
                        t.request_within(*node, req, RECONNECT_WAIT, deadline).await,
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
                in_step.lock().unwrap().clone_from(&took);
                self.decide(|engine| engine.shipped(&id, epoch, &current, took));
                return all;
            }
            // A standby did not take it: its node may be downed and replaced meanwhile.
            tokio::time::sleep(RESHIP_PAUSE).await;
        }
    }

    /// Keeps a standby copy sent by a replicated child's primary (the engine decides
    /// which copy it keeps), or runs an active/active replica from it.
    pub(super) fn keep_copy(
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

/// The hub's side of replication for one child: sends its state to its standbys.
pub(super) struct HubReplicator {
    pub(super) hub: Weak<HubInner>,
    /// Shipments so far (kept while the child sleeps: its actor is made anew).
    pub(super) seq: AtomicU64,
    /// The standbys that took every shipment of this instance, its table of identified
    /// writes included: they get only what is new of it.
    pub(super) in_step: Arc<std::sync::Mutex<Vec<NodeId>>>,
}

/// A shipment's part of a child's table of identified writes ([`RecentCalls`]): what
/// a standby in step lacks, and the whole table for the others.
struct CallsToShip {
    unshipped: Vec<(u128, Vec<u8>)>,
    recent: SharedRecent,
    in_step: Arc<std::sync::Mutex<Vec<NodeId>>>,
}

impl Replicator for HubReplicator {
    fn ship(
        &self,
        id: Arc<str>,
        type_name: &'static str,
        epoch: u64,
        state: Vec<u8>,
        recent: SharedRecent,
    ) -> BoxFuture<'static, bool> {
        let hub = self.hub.clone();
        // Numbered now, in the order of the writes, with the calls recorded since the
        // previous shipment.
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let unshipped = recent
            .as_ref()
            .map(|r| r.lock().unwrap().take_unshipped())
            .unwrap_or_default();
        let calls = CallsToShip {
            unshipped,
            recent,
            in_step: self.in_step.clone(),
        };
        Box::pin(async move {
            match hub.upgrade() {
                Some(hub) => hub.ship(id, type_name, (epoch, seq), state, calls).await,
                None => false,
            }
        })
    }
}
