//! Replication: standby sets, shipments of a primary's state, standby copies and
//! active/active replicas.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use super::{HubInner, LocalChild, StandbyCopy};
use crate::child::erased::{ChildCtx, ErasedChild, Replicator};
use crate::child::types::{any_replicated, replicas, vtable};
use crate::core::entry::Entry;
use crate::core::recent::calls_to_wire;
use crate::core::recent::{RecentCalls, SharedRecent};
use crate::core::registry::Push;
use crate::core::ring::Ring;
use crate::events::HubEvent;
use crate::net::transport::RECONNECT_WAIT;
use crate::net::wire::{Request, Response};
use crate::node::NodeId;

impl HubInner {
    /// This node's standby copy of `id`, if it holds one, and a context to run it in.
    pub(crate) fn standby_copy(&self, id: &Arc<str>) -> Option<(Vec<u8>, ChildCtx)> {
        let st = self.state.read().unwrap();
        let copy = st.copies.get(&**id)?;
        Some((
            copy.state.clone(),
            ChildCtx {
                id: id.clone(),
                node: self.me,
                epoch: copy.version.0,
                events: self.events.clone(),
                replicator: None,
                role: None,
                // Reads only: no table of writes needed.
                recent: None,
            },
        ))
    }

    /// Gives every replicated child running here the standbys the ring says it should
    /// have (after a join, a death, a promotion, a move), sending them its state.
    pub(super) fn keep_replicas(self: &Arc<Self>) {
        // Runs every second: nothing to do (and no scan of every child) in a binary
        // without replicated types.
        if !any_replicated() {
            return;
        }
        let resyncs: Vec<(Arc<str>, Arc<dyn ErasedChild>)> = {
            // Scanned under the read lock (calls keep routing); the write lock only marks.
            let st = self.state.read().unwrap();
            let mut out = Vec::new();
            for (id, l) in &st.local {
                let replicas = replicas(l.child.type_name());
                if replicas <= 1 || st.moving.contains(id) || st.resyncing.contains(id) {
                    continue;
                }
                let Some(e) = st.registry.get(id) else {
                    continue;
                };
                if e.owner != self.me || st.registry.pending_from(id).is_some() {
                    continue;
                }
                let desired = self.desired_standbys(&st.ring, id, replicas);
                if e.standbys.as_deref().unwrap_or_default() != desired.as_slice() {
                    out.push((id.clone(), l.child.clone()));
                }
            }
            drop(st);
            let mut st = self.state.write().unwrap();
            // A resync another replan started meanwhile is not started twice.
            out.retain(|(id, _)| st.resyncing.insert(id.clone()));
            out
        };
        for (id, child) in resyncs {
            let me = Arc::clone(self);
            tokio::spawn(async move {
                child.resync().await;
                me.state.write().unwrap().resyncing.remove(&id);
            });
        }
    }

    /// The standbys the ring gives a child with `replicas` copies run here.
    fn desired_standbys(&self, ring: &Ring, id: &str, replicas: usize) -> Vec<NodeId> {
        ring.owners(id, replicas)
            .into_iter()
            .filter(|n| *n != self.me)
            .take(replicas.saturating_sub(1))
            .collect()
    }

    /// Sends a replicated child's state (the whole of it: state shipping) to the
    /// standbys the ring gives it now, and returns once each has it or is left out.
    /// The nodes that took it are its standby set; a change of the set is published
    /// before this returns, so a write acknowledged after it is on every standby named
    /// in the registry.
    async fn ship(
        &self,
        id: Arc<str>,
        type_name: &'static str,
        (_, seq): (u64, u64),
        state: Vec<u8>,
        calls: CallsToShip,
    ) {
        let CallsToShip {
            unshipped,
            recent,
            in_step,
        } = calls;
        let in_step_now = in_step.lock().unwrap().clone();
        // The registry's epoch, not the actor's: a replica promoted in place keeps its
        // actor (active/active).
        let (current, targets, epoch) = {
            let st = self.state.read().unwrap();
            match st.registry.get(&id) {
                Some(e) if e.owner == self.me => (
                    e.standbys.as_deref().unwrap_or_default().to_vec(),
                    self.desired_standbys(&st.ring, &id, replicas(type_name)),
                    e.epoch,
                ),
                // Not ours (any more): nothing to keep in step.
                _ => {
                    in_step.lock().unwrap().clear();
                    return;
                }
            }
        };
        if targets.is_empty() && current.is_empty() {
            in_step.lock().unwrap().clear();
            return;
        }
        let deadline = Instant::now() + self.call_timeout;
        let delta = calls_to_wire(&unshipped);
        let whole = targets.iter().any(|n| !in_step_now.contains(n)).then(|| {
            recent
                .as_ref()
                .map(|r| calls_to_wire(&r.lock().unwrap().to_list()))
                .unwrap_or_default()
        });
        let sends = targets.iter().map(|node| {
            let append = in_step_now.contains(node);
            let req = Request::Replicate {
                id: id.to_string(),
                type_name: type_name.to_string(),
                epoch,
                seq,
                state: serde_bytes::ByteBuf::from(state.clone()),
                recent: if append {
                    delta.clone()
                } else {
                    whole.clone().unwrap_or_default()
                },
                append,
            };
            let t = &self.transport;
            async move {
                matches!(
                    t.request_within(*node, req, RECONNECT_WAIT, deadline).await,
                    Ok(Response::Replicated(Ok(())))
                )
            }
        });
        let took: Vec<NodeId> = futures_util::future::join_all(sends)
            .await
            .into_iter()
            .zip(&targets)
            .filter(|(ok, _)| *ok)
            .map(|(_, n)| *n)
            .collect();
        in_step.lock().unwrap().clone_from(&took);
        if took == current {
            return;
        }
        let mut st = self.state.write().unwrap();
        let Some(e) = st.registry.get(&id).cloned() else {
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
        st.registry.upsert(&id, entry.clone());
        self.transport
            .broadcast(&Push::Upsert(vec![(id.to_string(), entry)]));
        drop(st);
        for node in added {
            self.emit(HubEvent::ReplicaAdded {
                id: id.to_string(),
                node,
            });
        }
        for node in removed {
            self.emit(HubEvent::ReplicaRemoved {
                id: id.to_string(),
                node,
            });
        }
    }

    /// Keeps a standby copy sent by a replicated child's primary, unless a newer one is
    /// here (shipments after asynchronous writes may arrive out of order).
    pub(super) fn keep_copy(
        &self,
        id: &str,
        type_name: &str,
        version: (u64, u64),
        state: Vec<u8>,
        (recent, append): (Vec<(u128, Vec<u8>)>, bool),
    ) -> Result<(), String> {
        let vt = vtable(type_name);
        if vt.is_some_and(|v| v.active_active) {
            return self.run_replica(id, type_name, version.0, &state);
        }
        let mut st = self.state.write().unwrap();
        if st.local.contains_key(id) {
            return Err(format!("{id} runs here; it has no standby here"));
        }
        match st.copies.get_mut(id) {
            Some(c) => {
                if supersedes(c.version, version, id)? {
                    c.version = version;
                    c.state = state;
                    if append {
                        c.recent.extend(recent);
                    } else {
                        c.recent = RecentCalls::from_list(recent);
                    }
                }
                Ok(())
            }
            None => {
                st.copies.insert(
                    Arc::from(id),
                    StandbyCopy {
                        version,
                        state,
                        recent: RecentCalls::from_list(recent),
                    },
                );
                Ok(())
            }
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
        if self.state.read().unwrap().local.contains_key(id) {
            return Ok(());
        }
        let mut ctx = self.child_ctx(Arc::from(id), epoch, type_name);
        ctx.role = Some(crate::core::entry::Role::Replica);
        let child = (vt.spawn)(state, ctx, false)?;
        let mut st = self.state.write().unwrap();
        if st.local.contains_key(id) {
            return Ok(());
        }
        st.local.insert(
            Arc::from(id),
            LocalChild {
                child,
                epoch,
                restarted: false,
                replica: true,
            },
        );
        Ok(())
    }
}

/// Whether a standby copy of version `incoming` (epoch, shipment) replaces one of
/// `held`: a newer shipment does, an older one is ignored (asynchronous shipments may
/// arrive out of order), and one from an older epoch is refused (its primary was
/// replaced: it must learn it is a standby no more).
fn supersedes(held: (u64, u64), incoming: (u64, u64), id: &str) -> Result<bool, String> {
    if held.0 > incoming.0 {
        return Err(format!(
            "a copy of {id} from epoch {} is newer than {}",
            held.0, incoming.0
        ));
    }
    Ok(incoming > held)
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
    ) -> BoxFuture<'static, ()> {
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
            if let Some(hub) = hub.upgrade() {
                hub.ship(id, type_name, (epoch, seq), state, calls).await;
            }
        })
    }
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
