//! The serving side: what arrives from other nodes (calls, starts, stops, parts of big
//! states, shipments, registry pushes, new connections).

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use super::{HubInner, SNAPSHOT_CHUNK};
use crate::child::erased::Responder;
use crate::child::erased::{ChildCtx, ErasedChild};
use crate::child::types::vtable;
use crate::core::engine::LoggedCall;
use crate::core::engine::Missing;
use crate::core::item::{StartFailure, StartItem, StartOutcome};
use crate::core::recent::calls_from_wire;
use crate::core::recent::RecentCalls;
use crate::core::registry::Push;
use crate::core::staging::Part;
use crate::error::CallError;
use crate::events::HubEvent;
use crate::net::batch::{batches, entry_size};
use crate::net::conn::Conn;
use crate::net::transport::{InCall, Inbound, ReplySink, Serving};
use crate::net::wire::EncodedCall;
use crate::net::wire::{
    ClaimAsk, Merge, MergeStaged, Replicate, ReplicateCall, ReplicateStaged, Stage, Start,
    StartStaged, Stop, UpdateMeta,
};
use crate::net::wire::{Command, Response};
use crate::node::NodeId;

impl HubInner {
    /// Serves calls that arrived over the network together: the lookups happen now,
    /// and each child gets its calls, in arrival order, as one message (one actor
    /// wake-up); its actor answers them through `reply`. Calls that can be answered
    /// at once are.
    fn serve_calls(
        self: &Arc<Self>,
        from: NodeId,
        calls: Vec<InCall<'_>>,
        reply: &ReplySink,
        out: &mut Vec<Serving>,
    ) {
        type Group = (Arc<dyn ErasedChild>, Vec<u64>, Vec<EncodedCall>);
        let mut groups: Vec<Group> = Vec::new();
        let mut by_id: HashMap<&str, usize> = HashMap::new();
        let mut answered: Vec<(u64, Response)> = Vec::new();
        {
            let engine = self.engine.read().unwrap();
            for c in calls {
                let Some(local) = engine.local.get(c.id) else {
                    answered.push((c.rid, self.not_here(c.id, engine.missing(c.id))));
                    continue;
                };
                let child = &local.child;
                if child.type_name() != c.type_name {
                    let err = crate::error::CallError::WrongType {
                        id: c.id.to_string(),
                        expected: c.type_name.to_string(),
                        actual: child.type_name().to_string(),
                    };
                    answered.push((c.rid, Response::Reply(Err(err))));
                    continue;
                }
                let g = *by_id.entry(c.id).or_insert_with(|| {
                    groups.push((Arc::clone(child), Vec::new(), Vec::new()));
                    groups.len() - 1
                });
                groups[g].1.push(c.rid);
                groups[g].2.push(c.call);
            }
        }
        if !answered.is_empty() {
            reply(answered);
        }
        for (child, rids, calls) in groups {
            let hub = Arc::clone(self);
            let reply = Arc::clone(reply);
            let id: Arc<str> = Arc::from(child.id());
            let respond = Responder::new(move |replies| {
                let responses = match replies {
                    Some(replies) => rids
                        .into_iter()
                        .zip(replies)
                        .map(|(rid, r)| (rid, Response::Reply(r.map(serde_bytes::ByteBuf::from))))
                        .collect(),
                    // It moved or stopped while the calls waited: send the callers after it.
                    None => {
                        let missing = hub.engine.read().unwrap().missing(&id);
                        let resp = hub.not_here(&id, missing);
                        rids.into_iter().map(|rid| (rid, resp.clone())).collect()
                    }
                };
                reply(responses);
            });
            out.push(child.call_batch(from, calls, respond));
        }
    }

    /// Starts items sent by node `from` (new children, or moved ones).
    async fn serve_start(
        self: Arc<Self>,
        from: NodeId,
        items: Vec<StartItem>,
        hops: u8,
    ) -> Response {
        if self.is_stopped() {
            let o = StartOutcome::ShuttingDown { node: self.me() };
            return Response::Started(vec![o; items.len()]);
        }
        if self.engine.read().unwrap().refuses_starts_from(from) {
            // (The sender was downed: `NoQuorum` of it, as it would say itself.)
            let o = StartOutcome::NoQuorum { node: from };
            return Response::Started(vec![o; items.len()]);
        }
        // Decode the states (and run `#[on_handover_in]`) first, outside the hub's lock
        // and on a blocking thread: a big state or a slow hook must hold up neither the
        // rest of the node nor a worker of its runtime. A child made here starts
        // dormant; if the item turns out not to start here, it is dropped unused.
        let here: Vec<bool> = {
            let engine = self.engine.read().unwrap();
            items
                .iter()
                .map(|i| engine.start_target(i, hops).is_none())
                .collect()
        };
        let hub = Arc::clone(&self);
        let count = items.len();
        type Prepared = Vec<Option<Result<Arc<dyn ErasedChild>, StartFailure>>>;
        let prepare = move || {
            let prepared: Prepared = items
                .iter()
                .zip(here)
                .map(|(item, here)| here.then(|| hub.prepare_child(item, None)))
                .collect();
            (items, prepared)
        };
        // In a simulated world every task runs on the world's clock: no other thread.
        let made = if self.inline_decode {
            Ok(prepare())
        } else {
            tokio::task::spawn_blocking(prepare).await
        };
        let (items, mut prepared) = match made {
            Ok(made) => made,
            Err(e) => {
                let o = StartOutcome::Failed {
                    message: format!("preparing the children failed: {e}"),
                };
                return Response::Started(vec![o; count]);
            }
        };
        let outcomes = self
            .start_items(items, hops, Some(from), |i, item, ctx| {
                match prepared[i].take() {
                    Some(child) => child,
                    // Placed here after all (the ring changed meanwhile): make it now.
                    None => self.prepare_child(item, Some(ctx)),
                }
            })
            .await;
        Response::Started(outcomes)
    }

    /// A dormant child for a start item arriving from another node (`ctx`, or one made
    /// here): its state decoded, and `#[on_handover_in]` run if it was handed over.
    fn prepare_child(
        &self,
        item: &StartItem,
        ctx: Option<ChildCtx>,
    ) -> Result<Arc<dyn ErasedChild>, StartFailure> {
        let vt = vtable(&item.type_name).ok_or(StartFailure::UnknownType)?;
        let mut ctx = ctx.unwrap_or_else(|| {
            self.child_ctx(
                Arc::from(item.id.as_str()),
                item.epoch.max(1),
                &item.type_name,
            )
        });
        if !item.recent.is_empty() {
            // Writes it already applied stay known where it goes.
            let recent = calls_from_wire(item.recent.clone());
            ctx.recent = Some(Arc::new(std::sync::Mutex::new(RecentCalls::from_list(
                recent,
                tokio::time::Instant::now().into_std(),
            ))));
        }
        // A state that arrives with its start state beside it was handed over.
        (vt.spawn)(&item.state, ctx, item.start_state.is_some())
    }

    /// The answer to a call for a child this node does not run, from where the
    /// registry places it.
    fn not_here(&self, id: &str, missing: Missing) -> Response {
        match missing {
            Missing::NotHere(owner) => Response::NotHere { owner },
            // Being restarted here (its node died; the start is under way): the caller
            // tries again in a moment.
            Missing::Restarting => Response::NotHere { owner: self.me() },
            Missing::NotFound => Response::Reply(Err(CallError::NotFound { id: id.to_string() })),
        }
    }
}

impl Inbound for HubInner {
    fn calls(
        self: Arc<Self>,
        from: NodeId,
        calls: Vec<InCall<'_>>,
        reply: &ReplySink,
        out: &mut Vec<Serving>,
    ) {
        self.serve_calls(from, calls, reply, out);
    }

    fn request(self: Arc<Self>, from: NodeId, req: Command<'_>) -> BoxFuture<'static, Response> {
        match req {
            Command::Start(Start { items, hops }) => Box::pin(self.serve_start(from, items, hops)),
            Command::Stage(Stage {
                transfer,
                offset,
                total,
                data,
            }) => {
                let part = Part {
                    offset,
                    total,
                    data: &data,
                };
                let staged = self.staging.lock().unwrap().stage(
                    (from, transfer),
                    part,
                    self.max_state_size,
                    Instant::now().into_std(),
                );
                Box::pin(std::future::ready(Response::Staged(
                    staged.map_err(|e| e.to_string()),
                )))
            }
            Command::Replicate(r, ack) => {
                Box::pin(std::future::ready(self.keep_replicated(*r, ack)))
            }
            Command::MergeStaged(MergeStaged { transfer }) => {
                let m = self.take_staged::<Merge>(from, transfer, "duplicate");
                Box::pin(async move {
                    match m {
                        Ok(m) => {
                            self.merge_here(&m.id, &m.type_name, m.state.into_vec())
                                .await
                        }
                        Err(message) => Response::Merged(Err(message)),
                    }
                })
            }
            Command::ReplicateStaged(ReplicateStaged { transfer }) => {
                let r = self.take_staged::<Replicate>(from, transfer, "copy");
                Box::pin(std::future::ready(match r {
                    Ok(r) => self.keep_replicated(r, None),
                    Err(message) => Response::Replicated(Err(message)),
                }))
            }
            Command::StartStaged(StartStaged { transfer, hops }) => {
                let items = self.take_staged::<Vec<StartItem>>(from, transfer, "items");
                Box::pin(async move {
                    match items {
                        Ok(items) => self.serve_start(from, items, hops).await,
                        Err(message) => Response::Staged(Err(message)),
                    }
                })
            }
            Command::Stop(Stop { id, type_name }) => {
                Box::pin(async move { Response::Stopped(self.stop_local(&id, &type_name).await) })
            }
            Command::Merge(Merge {
                id,
                type_name,
                state,
            }) => Box::pin(async move { self.merge_here(&id, &type_name, state.into_vec()).await }),
            Command::Salvage(ids) => Box::pin(async move { self.give_salvage(&ids).await }),
            Command::Claim(ClaimAsk { ids }) => {
                let (answers, members) = self
                    .decide(|engine| (engine.claim(from, &ids), engine.view.members().to_vec()));
                Box::pin(std::future::ready(Response::Claimed { answers, members }))
            }
            Command::ReplicateCall(call, ack) => {
                let ReplicateCall {
                    id,
                    type_name,
                    epoch,
                    seq,
                    method,
                    args,
                    recent,
                } = *call;
                let call = LoggedCall {
                    method,
                    args: args.into_vec(),
                };
                let kept = self.keep_call(&id, &type_name, (epoch, seq), call, (recent, ack));
                Box::pin(std::future::ready(kept))
            }
            Command::UpdateMeta(UpdateMeta { id, meta }) => {
                let outcome = self.decide(|engine| engine.update_meta(&id, meta));
                Box::pin(std::future::ready(Response::MetaUpdated(outcome)))
            }
            Command::Lease(_) => {
                let granted = self.engine.read().unwrap().grants_lease(from);
                if !granted {
                    tracing::info!(me = %self.me(), %from, "refused the lease of a downed node");
                }
                Box::pin(std::future::ready(Response::Lease { granted }))
            }
        }
    }

    fn push(&self, from: NodeId, push: Push) {
        self.decide(|engine| engine.push(from, push));
    }

    fn held(&self, from: NodeId, held: crate::net::wire::Held) {
        crate::client::held::heard(&self.held, from, held);
    }

    fn unauthenticated(&self, addr: std::net::SocketAddr, dialed: bool) {
        tracing::warn!(
            %addr,
            dialed,
            "a peer did not prove it holds the cluster key: is its key this cluster's?"
        );
        self.emit(HubEvent::Unauthenticated { addr, dialed });
    }

    fn connected(&self, peer: NodeId, as_me: NodeId, conn: &Arc<Conn>, register: &dyn Fn()) {
        // Hold the engine's lock: no delta can slip between the snapshot and
        // registration.
        let engine = self.engine.write().unwrap();
        // (A rejoin swaps the engine after the transport's identity: the engine says
        // who this node is now. Found by soak seed 1113: the new life's snapshot and
        // pushes went out on a connection made as the old one, and the peer, which had
        // downed the old one, ignored them all.)
        if engine.me() != as_me {
            tracing::debug!(%peer, %as_me, "closing a connection made as a former incarnation");
            conn.close();
            return;
        }
        // What it kept of its former life (it was downed): a peer restarting one of
        // those children takes it rather than its start state. Before the snapshot,
        // whose end lets the peer restart what it was waiting to restart.
        for chunk in engine.salvage_offers().chunks(SNAPSHOT_CHUNK) {
            conn.push(&Push::Salvaged(chunk.to_vec()));
        }
        let own = engine.snapshot();
        let mut chunks = batches(&own, SNAPSHOT_CHUNK, self.batch_bytes(), entry_size).peekable();
        if chunks.peek().is_none() {
            conn.push(&Push::Snapshot {
                entries: Vec::new(),
                first: true,
                last: true,
            });
        }
        let mut first = true;
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            conn.push(&Push::Snapshot {
                entries: chunk.to_vec(),
                first,
                last,
            });
            first = false;
        }
        // The stops it remembers, before what it re-assigned (the peer may not have
        // heard of a stop: it joined, or its link was down).
        let removals = engine.removals_to_tell();
        for chunk in removals.chunks(SNAPSHOT_CHUNK) {
            conn.push(&Push::Removed(chunk.to_vec()));
        }
        // What the others re-assigned to it while it was away, pending its start.
        let assigned = engine.assigned_to(peer);
        if !assigned.is_empty() {
            conn.push(&Push::Assigned(assigned));
        }
        // Whom this node downed (a push of it may have been lost with a connection).
        let downed = engine.downing.downed_here();
        if !downed.is_empty() {
            conn.push(&Push::Down(downed));
        }
        register();
        drop(engine);
        tracing::debug!(me = %self.me(), %peer, "connected");
    }
}

impl HubInner {
    /// What `from` staged under `transfer`, decoded as a `T` (`what` names it in the
    /// error), or why not.
    fn take_staged<T: serde::de::DeserializeOwned>(
        &self,
        from: NodeId,
        transfer: u64,
        what: &str,
    ) -> Result<T, String> {
        let staged = self.staging.lock().unwrap().take((from, transfer));
        let bytes = staged.map_err(|e| e.to_string())?;
        postcard::from_bytes(&bytes).map_err(|e| format!("malformed staged {what}: {e}"))
    }
}
