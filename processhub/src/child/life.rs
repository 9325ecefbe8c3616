//! A child's life: asleep (its state alone), awake (a kameo actor), taken (frozen for a
//! sleep, a stop or a move).

use crate::child::component::unknown_method;
use crate::child::component::{
    panic_message, Component, ComponentActor, Dispatch, EpochOf, Merge, Replay, Resync,
};
use crate::child::erased::Sleeper;
use crate::child::erased::{Arrival, ChildCtx, ErasedChild};
use crate::child::erased::{Hook, Responder, ShipWhen, WriteCaller};
use crate::core::item::StartFailure;
use crate::events::HubEvent;
use crate::net::wire::EncodedCall;
use crate::node::NodeId;
use futures_util::future::BoxFuture;
use kameo::actor::{ActorRef, Spawn};
use kameo::error::{ActorStopReason, PanicError};
use kameo::message::Message;
use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

type ActorJoin<T> =
    tokio::task::JoinHandle<Result<(ComponentActor<T>, ActorStopReason), PanicError>>;

enum Life<T: Component> {
    /// The state alone: no actor, no task. A child starts so, and returns to it when idle.
    Dormant(T),
    /// A kameo actor runs it.
    Active(ActorRef<ComponentActor<T>>, ActorJoin<T>),
    /// Its actor is stopping to hand the state back; callers wait.
    Taking,
    /// Frozen for a move: the state is kept here until the move succeeds (then the
    /// child is gone) or fails (then it goes on here). Callers wait.
    Held(T),
    Stopped,
}

struct Slot<T: Component> {
    life: Life<T>,
    /// Calls between `enter` and the end of their ask: the actor is never stopped under
    /// them.
    in_flight: u32,
    /// Set while the state is being taken: new calls wait, calls in flight finish.
    frozen: bool,
    last_used: Instant,
    /// Set by the first call.
    called: bool,
}

/// Remote calls to one child, in arrival order, encoded as they came off the wire.
///
/// A connection hands a child every call that arrived for it in one read as one
/// message, and the actor writes the replies to the connection itself: one thread
/// wake-up per batch instead of two per call (thread wake-ups are the largest cost of a
/// remote call: BENCHMARKS.md, P2). The actor runs the calls one after the other,
/// exactly as it would run them one message each. The message holds the child awake
/// (`Entered`) until it has run.
#[doc(hidden)]
pub struct CallBatch<T: Component> {
    /// The node the calls came from.
    pub(crate) from: NodeId,
    pub(crate) calls: Vec<EncodedCall>,
    pub(crate) respond: Responder,
    pub(crate) _entered: Entered<T>,
}

impl<T: Component> std::fmt::Debug for CallBatch<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallBatch")
            .field("calls", &self.calls.len())
            .finish()
    }
}

impl<T: Dispatch> Message<CallBatch<T>> for ComponentActor<T> {
    type Reply = ();

    async fn handle(
        &mut self,
        batch: CallBatch<T>,
        _: &mut kameo::message::Context<Self, Self::Reply>,
    ) {
        let mut replies = Vec::with_capacity(batch.calls.len());
        self.batching = true;
        for call in &batch.calls {
            let Ok(method) = std::str::from_utf8(&call.method) else {
                replies.push(Err(unknown_method::<T>("(not UTF-8)")));
                continue;
            };
            // A retried write this child already applied: its reply, not a second go.
            if let (true, Some(recent)) = (call.call_id != 0, &self.recent) {
                let done = recent.lock().unwrap().get(call.call_id).cloned();
                if let Some(reply) = done {
                    tracing::trace!(id = %self.id, call_id = call.call_id, "a retried write answered from the table");
                    // Acknowledged only under a lease, as the first try would have been:
                    // a write its standbys may lack is not confirmed by a fenced node.
                    match self.lease.as_ref() {
                        Some(lease) => match lease.ready().await {
                            Ok(()) => replies.push(Ok(reply)),
                            Err(e) => replies.push(Err(e)),
                        },
                        None => replies.push(Ok(reply)),
                    }
                    continue;
                }
            }
            let mut reply = match call.trace {
                None => T::apply(self, method, &call.args).await,
                Some(trace) => {
                    let span = tracing::debug_span!(
                        "processhub.serve",
                        r#type = T::TYPE_NAME,
                        method,
                        trace_id = trace
                    );
                    let apply =
                        tracing::Instrument::instrument(T::apply(self, method, &call.args), span);
                    crate::trace::serving(trace, apply).await
                }
            };
            if call.call_id != 0 {
                tracing::trace!(id = %self.id, call_id = call.call_id, ?reply, epoch = self.epoch, "applied an identified write");
            }
            if T::is_write(method) {
                // Recorded before the state ships, so standbys know this call too.
                if let (Ok(bytes), true, Some(recent)) = (&reply, call.call_id != 0, &self.recent) {
                    let now = tokio::time::Instant::now().into_std();
                    recent
                        .lock()
                        .unwrap()
                        .record(call.call_id, bytes.clone(), now);
                }
                // Its call ships only if it ran to its reply (a call refused before it
                // ran, for want of a lease or of a readable argument, changed nothing
                // and must not be replayed); otherwise the state goes.
                let ran = reply.is_ok().then_some(&call.args[..]);
                // Its standbys may tell its caller they hold it (half a round trip
                // sooner than this reply): only a write recorded in the table, whose
                // reply they get with it.
                let caller = (ran.is_some() && call.call_id != 0 && self.recent.is_some())
                    .then_some(WriteCaller {
                        node: batch.from,
                        call_id: call.call_id,
                    });
                if let Err(e) = self.replicated(method, ran, caller).await {
                    reply = Err(e);
                }
            }
            replies.push(reply);
        }
        self.batching = false;
        // Confirmed once more before any reply goes: a node paused or cut off while
        // the batch ran may have been replaced meanwhile, and acknowledges none of it.
        // (Each call was confirmed before it ran; the replies go together, after the
        // last.)
        if let (Some(lease), true) = (&self.lease, replies.iter().any(Result::is_ok)) {
            if let Err(e) = lease.ready().await {
                for reply in replies.iter_mut().filter(|r| r.is_ok()) {
                    *reply = Err(e.clone());
                }
            }
        }
        batch.respond.answer(Some(replies));
    }
}

/// One child of type `T`: dormant until called, an actor while in use, dormant again
/// after being idle for the hub's hibernation time. An idle child costs its state and a
/// few words, not a task and a mailbox (a kameo actor is about 6 KB: BENCHMARKS.md, P6).
///
/// Sleep, stop and migration share one operation, [`Child::take`]: freeze (new calls
/// wait), let the calls in flight finish, stop the actor gracefully and take its state
/// back. Nothing a caller was told is lost, and nothing is applied twice: a waiting call
/// has not been applied, and goes where the child goes.
#[doc(hidden)]
pub struct Child<T: Component> {
    ctx: ChildCtx,
    slot: Mutex<Slot<T>>,
    changed: Notify,
}

impl<T: Component> std::fmt::Debug for Child<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Child").field("id", &self.ctx.id).finish()
    }
}

/// A shared child (for generated code).
#[doc(hidden)]
pub type ChildRef<T> = Arc<Child<T>>;

/// A call in progress on an active child: holds the actor awake.
pub(crate) struct Entered<T: Component> {
    pub(crate) actor: ActorRef<ComponentActor<T>>,
    child: ChildRef<T>,
}

impl<T: Component> Drop for Entered<T> {
    fn drop(&mut self) {
        let mut slot = self.child.slot.lock().unwrap();
        slot.in_flight -= 1;
        slot.last_used = Instant::now();
        if slot.frozen && slot.in_flight == 0 {
            drop(slot);
            self.child.changed.notify_waiters();
        }
    }
}

impl<T: Component> Child<T> {
    /// The reply of identified write `call_id` if this child applied it already (here,
    /// or on the primary it was promoted from).
    pub(crate) fn applied_reply(&self, call_id: u128) -> Option<Vec<u8>> {
        self.ctx
            .recent
            .as_ref()?
            .lock()
            .unwrap()
            .get(call_id)
            .cloned()
    }

    fn new(state: T, ctx: ChildCtx) -> Self {
        Self {
            ctx,
            slot: Mutex::new(Slot {
                life: Life::Dormant(state),
                in_flight: 0,
                frozen: false,
                last_used: Instant::now(),
                called: false,
            }),
            changed: Notify::new(),
        }
    }

    /// The actor, woken if the child sleeps; `None` once the child is stopped or gone.
    pub(crate) async fn enter(self: &Arc<Self>) -> Option<Entered<T>> {
        loop {
            let wait = self.changed.notified();
            tokio::pin!(wait);
            {
                let mut slot = self.slot.lock().unwrap();
                if slot.frozen {
                    wait.as_mut().enable();
                } else {
                    if let Life::Dormant(_) = slot.life {
                        let Life::Dormant(state) = std::mem::replace(&mut slot.life, Life::Stopped)
                        else {
                            unreachable!()
                        };
                        slot.life = self.activate(state, None);
                    }
                    match &slot.life {
                        Life::Active(actor, _) => {
                            let actor = actor.clone();
                            slot.in_flight += 1;
                            slot.called = true;
                            return Some(Entered {
                                actor,
                                child: Arc::clone(self),
                            });
                        }
                        Life::Stopped => return None,
                        Life::Taking | Life::Held(_) => {
                            wait.as_mut().enable();
                        }
                        Life::Dormant(_) => unreachable!("activated above"),
                    }
                }
            }
            wait.await;
        }
    }

    /// Ships its whole state to its standbys, through its actor (woken if it sleeps).
    async fn resync_now(self: Arc<Self>) {
        if let Some(entered) = self.enter().await {
            let _ = entered.actor.ask(Resync).await;
        }
    }

    fn activate(self: &Arc<Self>, state: T, replay: Option<Replay<T>>) -> Life<T> {
        let prepared = ComponentActor::prepare();
        let actor = prepared.actor_ref().clone();
        let join = prepared.spawn(ComponentActor {
            state,
            id: self.ctx.id.clone(),
            node: self.ctx.node,
            epoch: self.ctx.epoch.get(),
            home: Arc::downgrade(self) as std::sync::Weak<dyn EpochOf>,
            events: self.ctx.events.clone(),
            replicator: self.ctx.replicator.clone(),
            recent: self.ctx.recent.clone(),
            lease: self.ctx.lease.clone(),
            replay,
            batching: false,
        });
        if let Some(awake) = &self.ctx.awake {
            awake
                .lock()
                .unwrap()
                .push(Arc::downgrade(self) as std::sync::Weak<dyn Sleeper>);
        }
        Life::Active(actor, join)
    }

    /// Freezes the child, lets the calls in flight finish, stops its actor and returns
    /// its state; the child stays frozen (callers wait) until [`Self::put_back`] or
    /// [`Self::finish`]. `None` if it is stopped, or another take holds it.
    pub(crate) async fn take(self: &Arc<Self>) -> Option<T> {
        loop {
            let wait = self.changed.notified();
            tokio::pin!(wait);
            let running = {
                let mut slot = self.slot.lock().unwrap();
                if matches!(slot.life, Life::Stopped) {
                    return None;
                }
                if slot.frozen && !matches!(slot.life, Life::Active(..) | Life::Dormant(_)) {
                    // Another take holds it: wait for its end, then look again.
                    wait.as_mut().enable();
                    None
                } else {
                    slot.frozen = true;
                    if slot.in_flight > 0 {
                        wait.as_mut().enable();
                        None
                    } else {
                        match std::mem::replace(&mut slot.life, Life::Taking) {
                            Life::Dormant(state) => return Some(state),
                            Life::Active(actor, join) => Some((actor, join)),
                            _ => unreachable!("checked above"),
                        }
                    }
                }
            };
            let Some((actor, join)) = running else {
                wait.await;
                continue;
            };
            let _ = actor.stop_gracefully().await;
            return match join.await {
                Ok(Ok((actor, _))) => Some(actor.state),
                _ => {
                    tracing::error!(id = %self.ctx.id, "its actor failed while stopping; the child is lost");
                    self.ctx.events.send(HubEvent::ChildLost {
                        id: self.ctx.id.to_string(),
                        reason: "its actor failed while stopping".into(),
                    });
                    self.finish();
                    None
                }
            };
        }
    }

    /// Holds a taken state while a move is under way (callers keep waiting).
    pub(crate) fn hold(&self, state: T) {
        self.slot.lock().unwrap().life = Life::Held(state);
    }

    /// Ends a take: the child goes on here with `state` (it wakes at its next call).
    pub(crate) fn put_back(&self, state: T) {
        {
            let mut slot = self.slot.lock().unwrap();
            slot.life = Life::Dormant(state);
            slot.frozen = false;
        }
        self.changed.notify_waiters();
    }

    /// Ends a take for good: the child is stopped or lives elsewhere now; waiting callers
    /// get `None` and look again where it is.
    pub(crate) fn finish(&self) {
        {
            let mut slot = self.slot.lock().unwrap();
            slot.life = Life::Stopped;
            slot.frozen = false;
        }
        self.changed.notify_waiters();
    }

    /// Puts back a held state (a move failed).
    pub(crate) fn release_held(&self) {
        let held = {
            let mut slot = self.slot.lock().unwrap();
            match std::mem::replace(&mut slot.life, Life::Stopped) {
                Life::Held(state) => Some(state),
                other => {
                    slot.life = other;
                    None
                }
            }
        };
        if let Some(state) = held {
            self.put_back(state);
        }
    }
}

impl<T: Component> EpochOf for Child<T> {
    fn epoch(&self) -> u64 {
        self.ctx.epoch.get()
    }

    fn reship(self: Arc<Self>) {
        tokio::spawn(self.resync_now());
    }

    fn ship_soon(self: Arc<Self>) -> bool {
        let Some(r) = self.ctx.replicator.clone() else {
            return false;
        };
        match r.ship_when() {
            ShipWhen::Now => false,
            ShipWhen::Due => true,
            ShipWhen::After(window) => {
                tokio::spawn(async move {
                    tokio::time::sleep(window).await;
                    // Writes from here on make another shipment due; this one takes the
                    // state once the writes before it in the actor's mailbox ran.
                    r.shipment_begins();
                    self.resync_now().await;
                });
                true
            }
        }
    }
}

impl<T: Component> Sleeper for Child<T> {
    fn try_hibernate(self: Arc<Self>, idle: Duration, now: Instant) -> bool {
        {
            let slot = self.slot.lock().unwrap();
            let idle_enough = now.saturating_duration_since(slot.last_used) >= idle;
            if !matches!(slot.life, Life::Active(..))
                || slot.frozen
                || slot.in_flight > 0
                || !idle_enough
            {
                return false;
            }
        }
        tokio::spawn(async move {
            if let Some(state) = self.take().await {
                self.put_back(state);
            }
        });
        true
    }

    fn is_awake(&self) -> bool {
        matches!(self.slot.lock().unwrap().life, Life::Active(..))
    }
}

impl<T: Dispatch> ErasedChild for Child<T> {
    fn type_name(&self) -> &'static str {
        T::TYPE_NAME
    }

    fn id(&self) -> &str {
        &self.ctx.id
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }

    fn call_batch(
        self: Arc<Self>,
        from: NodeId,
        calls: Vec<EncodedCall>,
        respond: Responder,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            // Gone: `respond` is dropped unused and answers `None`.
            let Some(entered) = self.enter().await else {
                return;
            };
            let actor = entered.actor.clone();
            let batch = CallBatch {
                from,
                calls,
                respond,
                _entered: entered,
            };
            // If the actor is not running, the batch comes back in the error and is
            // dropped: nothing ran, and its responder answers `None`.
            let _ = actor.tell(batch).send().await;
        })
    }

    fn stop(self: Arc<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let _ = self.take().await;
            self.finish();
        })
    }

    fn was_called(&self) -> bool {
        self.slot.lock().unwrap().called
    }

    fn recent_calls(&self) -> Vec<(u128, Vec<u8>)> {
        self.ctx
            .recent
            .as_ref()
            .map_or_else(Vec::new, |r| r.lock().unwrap().to_list())
    }

    fn arrive(&self, how: Arrival) -> Result<(), StartFailure> {
        let on_start = match how {
            Arrival::Started => true,
            // A cold move restarts from the start state.
            Arrival::HandedOver => !T::HOT_MIGRATION,
            Arrival::Replica => false,
        };
        match &mut self.slot.lock().unwrap().life {
            Life::Dormant(state) => {
                if on_start {
                    run_on_start(state)?;
                }
                if let Some(role) = self.ctx.role {
                    std::panic::catch_unwind(AssertUnwindSafe(|| state.on_role_change(role)))
                        .map_err(|p| {
                            StartFailure::Hook(format!(
                                "#[on_role_change] panicked: {}",
                                panic_message(&*p)
                            ))
                        })?;
                }
                Ok(())
            }
            // Made dormant a moment ago, not yet registered: nothing woke it.
            _ => Ok(()),
        }
    }

    fn set_epoch(&self, epoch: u64) {
        self.ctx.epoch.set(epoch);
    }

    fn run_hook(self: Arc<Self>, hook: Hook) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            if let Some(entered) = self.enter().await {
                let _ = entered.actor.ask(hook).await;
            }
        })
    }

    fn consents(&self) -> bool {
        T::CONSENTS
    }

    fn move_consent(self: Arc<Self>) -> BoxFuture<'static, crate::MoveConsent> {
        Box::pin(async move {
            if !T::CONSENTS {
                return crate::MoveConsent::Ready;
            }
            match self.enter().await {
                Some(entered) => {
                    let ready = entered.actor.ask(crate::child::component::ConsentAsk).await;
                    if ready.unwrap_or(true) {
                        crate::MoveConsent::Ready
                    } else {
                        crate::MoveConsent::Defer
                    }
                }
                None => crate::MoveConsent::Ready,
            }
        })
    }

    fn resync(self: Arc<Self>) -> BoxFuture<'static, ()> {
        Box::pin(self.resync_now())
    }

    fn is_active(&self) -> bool {
        self.is_awake()
    }

    fn freeze_for_move(
        self: Arc<Self>,
    ) -> BoxFuture<'static, Option<Result<Option<Vec<u8>>, String>>> {
        Box::pin(async move {
            let mut state = self.take().await?;
            let encoded = if T::HOT_MIGRATION {
                match std::panic::catch_unwind(AssertUnwindSafe(|| state.on_handover_out())) {
                    Ok(()) => postcard::to_allocvec(&state)
                        .map(Some)
                        .map_err(|e| format!("encoding the state: {e}")),
                    Err(p) => Err(format!(
                        "#[on_handover_out] panicked: {}",
                        panic_message(&*p)
                    )),
                }
            } else {
                Ok(None)
            };
            self.hold(state);
            Some(encoded)
        })
    }

    fn move_failed(&self) {
        self.release_held();
    }

    fn move_done(&self) {
        self.finish();
    }

    fn take_for_merge(self: Arc<Self>) -> BoxFuture<'static, Option<Result<Vec<u8>, String>>> {
        Box::pin(async move {
            let state = self.take().await?;
            self.finish();
            Some(postcard::to_allocvec(&state).map_err(|e| format!("encoding the state: {e}")))
        })
    }

    fn merge(self: Arc<Self>, other: Vec<u8>) -> BoxFuture<'static, Option<Result<(), String>>> {
        Box::pin(async move {
            let other: T = match postcard::from_bytes(&other) {
                Ok(other) => other,
                Err(e) => return Some(Err(format!("malformed state of the duplicate: {e}"))),
            };
            let entered = self.enter().await?;
            match entered.actor.ask(Merge(other)).await {
                Ok(()) => Some(Ok(())),
                Err(kameo::error::SendError::HandlerError(e)) => Some(Err(e)),
                Err(_) => None,
            }
        })
    }
}

/// Makes a typed child (dormant until its first call).
pub(crate) fn spawn_typed<T: Dispatch>(state: T, ctx: ChildCtx) -> Arc<dyn ErasedChild> {
    Arc::new(Child::new(state, ctx))
}

/// Makes a child promoted from a standby copy that holds writes as calls: awake at
/// once, its actor replaying them before it runs anything else (a dormant child could
/// be moved or put to sleep with the state they lack).
pub(crate) fn spawn_replaying<T: Dispatch>(
    state: T,
    ctx: ChildCtx,
    calls: Vec<crate::core::engine::LoggedCall>,
) -> Arc<dyn ErasedChild> {
    let child = Arc::new(Child::new(state, ctx));
    {
        let mut slot = child.slot.lock().unwrap();
        if let Life::Dormant(state) = std::mem::replace(&mut slot.life, Life::Stopped) {
            let replay = Replay {
                calls,
                apply: crate::child::component::apply_boxed::<T>,
            };
            slot.life = child.activate(state, Some(replay));
        }
    }
    child
}

/// Runs `#[on_start]`, a panic being an error.
pub(crate) fn run_on_start<T: Dispatch>(state: &mut T) -> Result<(), StartFailure> {
    std::panic::catch_unwind(AssertUnwindSafe(|| state.on_start()))
        .map_err(|p| StartFailure::Hook(format!("#[on_start] panicked: {}", panic_message(&*p))))
}
