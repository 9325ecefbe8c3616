//! The shell's side of salvage (`crate::core::engine::salvage`): what a downed node
//! keeps as it rejoins, the fetch of a salvage a restart waits for, and the answer to
//! a peer's fetch.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::HubInner;
use crate::child::erased::ErasedChild;
use crate::core::engine::{LoggedCall, StandbyCopy, Superseded, FETCH_WAIT, PRIMARY_STATE};
use crate::core::recent::{calls_from_wire, calls_to_wire, RecentCalls};
use crate::net::wire::{Request, Response, SalvagedCopy};
use crate::node::NodeId;

/// How long a rejoining node waits for one of its instances to give up its state.
const TAKE_WAIT: Duration = Duration::from_secs(1);

impl HubInner {
    /// Stops the instances of a node that was downed, each in a task of its own, at
    /// once; returns a future of the states worth keeping as salvage: those of the
    /// primaries of replicated children, as (id, the state under its epoch, as the
    /// newest version of that epoch, with the replies of its identified writes). An
    /// instance that does not give up its state within a moment is stopped without it.
    pub(super) fn salvage_children(
        &self,
        children: Vec<Superseded<Arc<dyn ErasedChild>>>,
    ) -> impl std::future::Future<Output = Vec<(Arc<str>, StandbyCopy)>> + 'static {
        let me = self.me();
        let mut takes = Vec::new();
        for Superseded {
            id,
            child,
            epoch,
            salvage,
        } in children
        {
            if !salvage {
                // No hand-over, no report, nothing published: a copy that kept serving
                // elsewhere is the one that counts.
                tokio::spawn(async move { child.stop().await });
                continue;
            }
            let take = tokio::spawn(Arc::clone(&child).take_for_merge());
            // (One held by a move under way waits for its end: not for long.)
            takes.push(async move {
                let taken = tokio::time::timeout(TAKE_WAIT, take).await;
                // Read once it stopped: a call it finished meanwhile, whose reply its
                // caller may retry, is among them.
                (id, epoch, child.recent_calls(), taken)
            });
        }
        async move {
            let taken = futures_util::future::join_all(takes).await;
            let now = Instant::now().into_std();
            taken
                .into_iter()
                .filter_map(|(id, epoch, recent, take)| match take {
                    Ok(Ok(Some(Ok(state)))) => Some((
                        id,
                        StandbyCopy {
                            version: (epoch, PRIMARY_STATE),
                            state,
                            calls: Vec::new(),
                            recent: RecentCalls::from_list(recent, now),
                        },
                    )),
                    other => {
                        tracing::warn!(%me, %id, "no state salvaged: {other:?}");
                        None
                    }
                })
                .collect()
        }
    }

    /// The answer to `Request::Salvage`: the salvages of `ids` this node holds, once
    /// those it is still taking from its former instances are in (or no longer), as
    /// many as fit half a frame (at least one); the asker asks again for the rest.
    pub(super) async fn give_salvage(&self, ids: &[String]) -> Response {
        let deadline = Instant::now() + TAKE_WAIT;
        while self.engine.read().unwrap().salvage_expected(ids) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let budget = self.batch_bytes();
        let engine = self.engine.read().unwrap();
        let mut size = 0;
        let mut copies = Vec::new();
        for (id, c) in engine.give_salvage(ids) {
            let bytes = id.len() + c.state.len() + 64;
            if !copies.is_empty() && size + bytes > budget {
                break;
            }
            size += bytes;
            copies.push(SalvagedCopy {
                id: id.to_string(),
                version: c.version,
                state: serde_bytes::ByteBuf::from(c.state.clone()),
                calls: c
                    .calls
                    .iter()
                    .map(|l| (l.method.clone(), serde_bytes::ByteBuf::from(l.args.clone())))
                    .collect(),
                recent: calls_to_wire(&c.recent.to_list()),
            });
        }
        Response::Salvage(copies)
    }

    /// Queues a fetch of the salvages of `ids` from `from`: the restarts of one plan
    /// each ask for theirs, and one request per holder goes once they all have.
    pub(super) fn queue_salvage_fetch(self: Arc<Self>, from: NodeId, ids: Vec<String>) {
        let first = {
            let mut queued = self.salvage_fetches.lock().unwrap();
            let of_from = queued.entry(from).or_default();
            let first = of_from.is_empty();
            of_from.extend(ids);
            first
        };
        if first {
            tokio::spawn(async move {
                // After the rest of the plan's restarts (they run in one go).
                tokio::task::yield_now().await;
                let ids = self
                    .salvage_fetches
                    .lock()
                    .unwrap()
                    .remove(&from)
                    .unwrap_or_default();
                self.fetch_salvage(from, ids).await;
            });
        }
    }

    /// Fetches the salvages of `ids` from `from`, for restarts here that wait for
    /// them (in as many requests as their size needs); what comes (or nothing, if a
    /// fetch failed) goes to the engine.
    async fn fetch_salvage(self: Arc<Self>, from: NodeId, ids: Vec<String>) {
        let deadline = Instant::now() + FETCH_WAIT;
        let mut left: indexmap::IndexSet<String> = ids.iter().cloned().collect();
        let mut got = Vec::new();
        while !left.is_empty() {
            let ask = left.iter().cloned().collect();
            let answer = self
                .transport
                .request(from, Request::Salvage(ask), deadline)
                .await;
            let copies = match answer {
                Ok(Response::Salvage(copies)) => copies,
                other => {
                    tracing::warn!(me = %self.me(), %from, ids = left.len(), "salvage not fetched: {other:?}");
                    break;
                }
            };
            let now = Instant::now().into_std();
            let before = left.len();
            for c in copies {
                if !left.swap_remove(&c.id) {
                    continue;
                }
                let copy = StandbyCopy {
                    version: c.version,
                    state: c.state.into_vec(),
                    calls: c
                        .calls
                        .into_iter()
                        .map(|(method, args)| LoggedCall {
                            method,
                            args: args.into_vec(),
                        })
                        .collect(),
                    recent: RecentCalls::from_list(calls_from_wire(c.recent), now),
                };
                got.push((c.id, copy));
            }
            if left.len() == before {
                // Nothing more of what is left: it does not hold those.
                break;
            }
        }
        self.decide(|engine| engine.salvage_fetched(from, &ids, got));
    }
}
