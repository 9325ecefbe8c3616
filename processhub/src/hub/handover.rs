//! Hot and cold moves: freeze, send, confirm or roll back.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::time::Instant;

use super::{HubInner, START_BATCH};
use crate::child::erased::ErasedChild;
use crate::core::engine::MAX_HOPS;
use crate::core::item::{StartItem, StartOutcome};
use crate::core::recent::calls_to_wire;
use crate::events::HubEvent;
use crate::hooks::{MoveConsent, MoveRequest, MOVE_CONSENT_POLL};
use crate::net::batch::{batches, item_size};
use crate::net::error::TransportError;
use crate::net::transport::RECONNECT_WAIT;
use crate::net::wire::{Request, Response};
use crate::net::wire::{Stage, Start, StartStaged};
use crate::node::NodeId;

/// How long a move waits for a connection to its target before it fails.
const CONNECT_FOR_MOVE: std::time::Duration = std::time::Duration::from_secs(2);

/// A child on its way to another node.
type Move = crate::core::engine::Move<Arc<dyn ErasedChild>>;

/// What became of a moved child sent to its new owner.
struct Sent {
    outcome: StartOutcome,
    /// The request reached the target: the child may have started there.
    offered: bool,
    /// The target could not be reached at all.
    unreachable: bool,
    /// The target answered (else its answer was lost, or did not come in time).
    answered: bool,
}

/// One run of moves: the targets found unreachable (the rest of their batches fail at
/// once), and the node's life the children belong to, with its lease.
struct MoveRun {
    unreachable: std::sync::Mutex<HashSet<NodeId>>,
    life: NodeId,
    lease: Arc<crate::child::lease::Lease>,
}

impl HubInner {
    /// Moves these children in a task of its own (see [`Self::move_children`]).
    pub(super) fn spawn_moves(self: Arc<Self>, moves: Vec<(String, NodeId, u64)>) {
        tokio::spawn(async move {
            self.move_children(moves).await;
        });
    }

    /// Moves children to their new owners, at most `move_concurrency` frozen at a time,
    /// in batches of up to [`START_BATCH`] per owner: each is frozen (new calls wait,
    /// calls in flight finish), its state taken (or, for `migration = "cold"`, its start
    /// state used), started on the new owner under the next epoch, and then gone from
    /// here: the waiting calls follow it. A move that fails or does not finish within
    /// `move_timeout` puts the child back here, with its state. Returns (moved, failed).
    pub(crate) async fn move_children(
        self: Arc<Self>,
        moves: Vec<(String, NodeId, u64)>,
    ) -> (usize, usize) {
        use futures_util::StreamExt;
        // The life these children belong to, with them (a rejoin makes a new one).
        let (by_node, life) = {
            let mut engine = self.engine.write().unwrap();
            (engine.begin_moves(moves), engine.me())
        };
        let children: usize = by_node.iter().map(|(_, m)| m.len()).sum();
        if children == 0 {
            return (0, 0);
        }
        self.emit(HubEvent::RedistributionStarted { children });
        let batch = self.move_concurrency.min(START_BATCH);
        let parallel = (self.move_concurrency / batch).max(1);
        // Once a target proves unreachable, the rest of its batches fail at once (put
        // back here) instead of each waiting for the deadline.
        let run = MoveRun {
            unreachable: std::sync::Mutex::new(HashSet::new()),
            life,
            lease: self.lease(),
        };
        let mut units: Vec<(NodeId, Vec<Move>)> = Vec::new();
        for (to, moves) in by_node {
            let mut moves = moves.into_iter().peekable();
            while moves.peek().is_some() {
                units.push((to, moves.by_ref().take(batch).collect()));
            }
        }
        let run = &run;
        let mut batches = Vec::with_capacity(units.len());
        for (to, chunk) in units {
            batches.push(self.move_batch(to, chunk, run));
        }
        let span = tracing::debug_span!("processhub.moves", children);
        let (moved, failed) = tracing::Instrument::instrument(
            futures_util::stream::iter(batches)
                .buffer_unordered(parallel)
                .fold((0, 0), |(m, f), (dm, df)| async move { (m + dm, f + df) }),
            span,
        )
        .await;
        self.emit(HubEvent::RedistributionCompleted { moved, failed });
        (moved, failed)
    }

    /// Moves one batch of children to `to`, once the before-move handlers let them go:
    /// those they let go at once first, then each deferred one when they let it go or
    /// the maximum deferral passed. Returns (moved, failed).
    async fn move_batch(&self, to: NodeId, chunk: Vec<Move>, run: &MoveRun) -> (usize, usize) {
        if !self.events.has_before_move() && !chunk.iter().any(|m| m.child.consents()) {
            return self.move_consented(to, chunk, run).await;
        }
        let (mut waiting, ready) = self.consent(chunk, to).await;
        if !waiting.is_empty() {
            self.emit(HubEvent::MigrationDeferred {
                ids: waiting.iter().map(|m| m.id.clone()).collect(),
                to,
            });
        }
        let (mut moved, mut failed) = if ready.is_empty() {
            (0, 0)
        } else {
            self.move_consented(to, ready, run).await
        };
        let until = Instant::now() + self.max_move_deferral;
        while !waiting.is_empty() {
            let go: Vec<Move>;
            if Instant::now() >= until {
                tracing::warn!(
                    deferred = waiting.len(),
                    %to,
                    "moves deferred past the maximum deferral go ahead"
                );
                go = std::mem::take(&mut waiting);
            } else {
                tokio::time::sleep(MOVE_CONSENT_POLL).await;
                (waiting, go) = self.consent(std::mem::take(&mut waiting), to).await;
            }
            if !go.is_empty() {
                let (m, f) = self.move_consented(to, go, run).await;
                moved += m;
                failed += f;
            }
        }
        (moved, failed)
    }

    /// Asks the before-move handlers, then each child whose type answers consent
    /// (`#[move_consent]`, all at once), whether its move to `to` may go now: (the
    /// deferred, the ready).
    async fn consent(&self, moves: Vec<Move>, to: NodeId) -> (Vec<Move>, Vec<Move>) {
        let hooked = self.events.has_before_move();
        let answers = futures_util::future::join_all(moves.iter().map(|m| async move {
            let request = MoveRequest {
                id: &m.id,
                type_name: &m.type_name,
                to,
            };
            if hooked && self.events.consent(&request) == MoveConsent::Defer {
                return true;
            }
            m.child.consents() && m.child.clone().move_consent().await == MoveConsent::Defer
        }))
        .await;
        let (mut deferred, mut ready) = (Vec::new(), Vec::new());
        for (m, defer) in moves.into_iter().zip(answers) {
            if defer {
                deferred.push(m);
            } else {
                ready.push(m);
            }
        }
        (deferred, ready)
    }

    /// Moves one batch of children to `to` now. Returns (moved, failed).
    async fn move_consented(&self, to: NodeId, chunk: Vec<Move>, run: &MoveRun) -> (usize, usize) {
        let (mut moved, mut failed) = (0, 0);
        // A move waits for the connection it needs (a joiner's is being dialed as the
        // plan that moves children to it runs), before anything is frozen.
        let reachable = !run.unreachable.lock().unwrap().contains(&to)
            && self.transport.connected_within(to, CONNECT_FOR_MOVE).await;
        if !reachable {
            run.unreachable.lock().unwrap().insert(to);
            for m in &chunk {
                let reason = format!("{to} is unreachable");
                self.move_failed(m.id.as_str(), &*m.child, to, reason, None);
            }
            return (0, chunk.len());
        }
        let deadline = Instant::now() + self.move_timeout;
        let frozen =
            futures_util::future::join_all(chunk.iter().map(|m| m.child.clone().freeze_for_move()))
                .await;
        // Handing a child over is a write: only under the lease of the life the children
        // belong to (a rejoin revokes it), asked once they are frozen (nothing changes
        // them after). A node downed meanwhile learns it so before it hands a child to a
        // node that has not heard of the downing yet, and a node that rejoined hands over
        // nothing of its former life: found by simulator seeds 250 and 260 (5 nodes,
        // partition,crash). A node leaving gracefully needs none (the others let it go).
        if self.me() != run.life {
            // Its former life's children are nobody's now (the rejoin stopped the
            // others, and the new life's registry does not know them): dropped, without
            // a report or a push, as the rejoin drops the others.
            for (m, state) in chunk.iter().zip(&frozen) {
                if state.is_some() {
                    // Frozen, its state held: let go of it (the calls waiting on it
                    // look again, and find where the child runs now).
                    m.child.move_done();
                }
            }
            return (0, chunk.len());
        }
        let needs_lease = self.engine.read().unwrap().moves_need_lease();
        let refused = if needs_lease {
            run.lease.ready().await.err().map(|e| e.to_string())
        } else {
            None
        };
        if let Some(e) = refused {
            for (m, state) in chunk.iter().zip(&frozen) {
                match state {
                    Some(Ok(_)) => {
                        failed += 1;
                        self.move_failed(m.id.as_str(), &*m.child, to, e.clone(), None);
                    }
                    Some(Err(reason)) => {
                        failed += 1;
                        self.move_failed(m.id.as_str(), &*m.child, to, reason.clone(), None);
                    }
                    None => self.engine.write().unwrap().move_dropped(m.id.as_str()),
                }
            }
            return (moved, failed);
        }
        let mut items = Vec::with_capacity(chunk.len());
        let mut sent = Vec::with_capacity(chunk.len());
        for (m, state) in chunk.into_iter().zip(frozen) {
            match state {
                Some(Ok(state)) => {
                    items.push(StartItem {
                        id: m.id.clone(),
                        type_name: m.type_name.clone(),
                        state: state.unwrap_or_else(|| m.start_state.clone()),
                        epoch: m.epoch,
                        start_state: Some(serde_bytes::ByteBuf::from(m.start_state.clone())),
                        flags: m.flags,
                        node: None,
                        recent: calls_to_wire(&m.child.recent_calls()),
                        meta: m.meta.clone(),
                    });
                    sent.push(m);
                }
                Some(Err(reason)) => {
                    failed += 1;
                    self.move_failed(m.id.as_str(), &*m.child, to, reason, None);
                }
                // Stopped meanwhile: nothing to move.
                None => {
                    self.engine.write().unwrap().move_dropped(m.id.as_str());
                }
            }
        }
        let outcomes = self.send_settled(to, items, deadline).await;
        for (
            m,
            Sent {
                outcome,
                offered,
                unreachable: gone,
                ..
            },
        ) in sent.into_iter().zip(outcomes)
        {
            match outcome {
                StartOutcome::Started { .. } | StartOutcome::AlreadyStarted { .. } => {
                    moved += 1;
                    self.move_done(&m, to);
                }
                other => {
                    failed += 1;
                    if gone {
                        run.unreachable.lock().unwrap().insert(to);
                    }
                    // Unknown outcome only if the request went out.
                    let offered = offered.then_some(m.epoch);
                    self.move_failed(m.id.as_str(), &*m.child, to, format!("{other:?}"), offered);
                }
            }
        }
        (moved, failed)
    }

    /// Starts moved children on `to` (see [`Self::send_moved`]), asking again for those
    /// whose answer was lost while the deadline allows: the same start under the same
    /// epoch, which the target answers "already started" if the first one reached it.
    /// Until then the child stays frozen here, so the state sent is still its state. It
    /// rolls back once the target is no longer a member (nothing runs there), or, while
    /// the target may run it (two instances serving), only when it stays unreachable
    /// past the deadline.
    async fn send_settled(
        &self,
        to: NodeId,
        items: Vec<StartItem>,
        deadline: Instant,
    ) -> Vec<Sent> {
        let mut outcomes = self.send_moved(to, &items, deadline).await;
        loop {
            let unsettled: Vec<usize> = (0..outcomes.len())
                .filter(|i| outcomes[*i].offered && !outcomes[*i].answered)
                .collect();
            if unsettled.is_empty()
                || Instant::now() + RECONNECT_WAIT >= deadline
                || self.is_stopped()
                || self.engine.read().unwrap().may_roll_back_move(to)
            {
                return outcomes;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            let again: Vec<StartItem> = unsettled.iter().map(|i| items[*i].clone()).collect();
            let answers = self.send_moved(to, &again, deadline).await;
            for (i, answer) in unsettled.into_iter().zip(answers) {
                // A retry that did not go out leaves the first outcome: it was offered.
                if answer.answered {
                    outcomes[i] = answer;
                }
            }
        }
    }

    /// Starts moved children on `to`: in requests of up to half a frame, and each state
    /// too large for that in parts. One outcome per item, in order.
    async fn send_moved(&self, to: NodeId, items: &[StartItem], deadline: Instant) -> Vec<Sent> {
        let limit = self.batch_bytes();
        let mut outcomes = Vec::with_capacity(items.len());
        for group in batches(items, START_BATCH, limit, item_size) {
            let res = if group.len() == 1 && item_size(&group[0]) > limit {
                self.send_staged(to, group, deadline).await
            } else {
                let req = Request::Start(Start {
                    items: group.to_vec(),
                    hops: MAX_HOPS,
                });
                self.transport
                    .request_within(to, req, RECONNECT_WAIT, deadline)
                    .await
            };
            match res {
                Ok(Response::Started(o)) if o.len() == group.len() => {
                    outcomes.extend(o.into_iter().map(|outcome| Sent {
                        outcome,
                        offered: true,
                        unreachable: false,
                        answered: true,
                    }));
                }
                other => {
                    let unreachable = matches!(other, Err(TransportError::NotConnected));
                    let offered = !unreachable
                        && !matches!(
                            other,
                            Err(TransportError::TooLarge { .. } | TransportError::Encode(_))
                        );
                    let message = format!("no start on {to}: {other:?}");
                    outcomes.extend(group.iter().map(|_| Sent {
                        outcome: StartOutcome::Failed {
                            message: message.clone(),
                        },
                        offered,
                        unreachable,
                        answered: false,
                    }));
                }
            }
        }
        outcomes
    }

    /// Sends `items` to `to` in parts of half a frame, then asks it to start them.
    async fn send_staged(
        &self,
        to: NodeId,
        items: &[StartItem],
        deadline: Instant,
    ) -> Result<Response, TransportError> {
        let bytes =
            postcard::to_allocvec(items).map_err(|e| TransportError::Encode(e.to_string()))?;
        self.send_in_parts(to, &bytes, RECONNECT_WAIT, deadline, |transfer| {
            Request::StartStaged(StartStaged {
                transfer,
                hops: MAX_HOPS,
            })
        })
        .await
    }

    /// Sends `value` to `to`: as the request `whole(value)` when `size` (the bytes of it
    /// that vary; the rest is far less than the other half) fits in half a frame, else
    /// encoded and sent in parts ([`Self::send_in_parts`]), then `staged(transfer)`.
    /// Each request waits up to `connect_wait` for the connection, all of it until
    /// `deadline`.
    pub(super) async fn send_whole_or_staged<T: serde::Serialize>(
        &self,
        to: NodeId,
        (value, size): (T, usize),
        (connect_wait, deadline): (std::time::Duration, Instant),
        whole: impl FnOnce(T) -> Request<'static>,
        staged: impl FnOnce(u64) -> Request<'static>,
    ) -> Result<Response, TransportError> {
        if size <= self.batch_bytes() {
            return self
                .transport
                .request_within(to, whole(value), connect_wait, deadline)
                .await;
        }
        let bytes =
            postcard::to_allocvec(&value).map_err(|e| TransportError::Encode(e.to_string()))?;
        drop(value);
        self.send_in_parts(to, &bytes, connect_wait, deadline, staged)
            .await
    }

    /// Sends `bytes` (an encoded request body too large for one frame) to `to` in parts
    /// of half a frame under a new transfer, then `finish(transfer)`, which asks the
    /// receiver to act on what it staged: that request's answer, or the answer that
    /// refused a part. Each request waits up to `connect_wait` for the connection (as
    /// [`Transport::request_within`](crate::net::transport::Transport::request_within)).
    pub(super) async fn send_in_parts(
        &self,
        to: NodeId,
        bytes: &[u8],
        connect_wait: std::time::Duration,
        deadline: Instant,
        finish: impl FnOnce(u64) -> Request<'static>,
    ) -> Result<Response, TransportError> {
        if bytes.len() > self.max_state_size {
            return Err(TransportError::TooLarge {
                size: bytes.len(),
                max: self.max_state_size,
            });
        }
        let transfer = self.next_transfer.fetch_add(1, Ordering::Relaxed);
        let part = self.batch_bytes().max(1);
        for (i, data) in bytes.chunks(part).enumerate() {
            let req = Request::Stage(Stage {
                transfer,
                offset: (i * part) as u64,
                total: bytes.len() as u64,
                data: std::borrow::Cow::Borrowed(data),
            });
            match self
                .transport
                .request_within(to, req, connect_wait, deadline)
                .await?
            {
                Response::Staged(Ok(())) => {}
                other => return Ok(other),
            }
        }
        self.transport
            .request_within(to, finish(transfer), connect_wait, deadline)
            .await
    }

    /// A move succeeded: the registry points at the new owner before the waiting calls
    /// are let go, so they follow it.
    fn move_done(&self, m: &Move, to: NodeId) {
        self.decide(|engine| engine.move_done(m, to));
        m.child.move_done();
    }

    /// A move failed: the child goes on here, with its state (see
    /// `Engine::move_failed` for the epoch it takes when the outcome is unknown).
    fn move_failed(
        &self,
        id: &str,
        child: &dyn ErasedChild,
        to: NodeId,
        reason: String,
        offered: Option<u64>,
    ) {
        self.decide(|engine| engine.move_failed(id, to, reason, offered));
        child.move_failed();
    }
}
