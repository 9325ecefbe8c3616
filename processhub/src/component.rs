//! Components: the `#[distributed]` types, their actors, and the table that lets any
//! node host any component type linked into its binary.
//!
//! Each running child is a kameo actor, [`ComponentActor<T>`], holding the user's state.
//! The macro implements [`Component`] (the type's wire name) and [`Dispatch`] (remote
//! calls by method name), and adds a [`ComponentVTable`] to the [`COMPONENTS`] slice
//! (linkme), which the hub reads to start a type by name.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use kameo::actor::{Actor, ActorRef, Spawn};
use kameo::error::SendError;
use kameo::error::{ActorStopReason, PanicError};
use kameo::message::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::error::CallError;
use crate::events::{HubEvent, RestartReason};
use crate::NodeId;

/// A component type: implemented by `#[distributed]` on a struct.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a #[distributed] component",
    label = "put #[distributed] on the struct `{Self}` too",
    note = "#[distributed] goes on the struct (the component's state) and on its impl block"
)]
pub trait Component: Serialize + DeserializeOwned + Send + 'static {
    /// The type's name on the wire: the same in every binary of the cluster.
    const TYPE_NAME: &'static str;
    /// Whether a move takes the latest state along (`migration = "hot"`, the default)
    /// or restarts from the start state (`migration = "cold"`).
    const HOT_MIGRATION: bool = true;
    /// Whether it stays on the node it started on while that node lives
    /// (`#[distributed(pinned)]`): joins and drains do not move it.
    const PINNED: bool = false;
    /// What happens to its children when their node dies
    /// (`#[distributed(on_node_death = "...")]`).
    const ON_NODE_DEATH: crate::OnNodeDeath = crate::OnNodeDeath::Restart;
    /// Copies of each child kept in step, the primary included
    /// (`#[distributed(replicas = N)]`): with N > 1, every write reaches N - 1 standbys
    /// before it is acknowledged, and a standby takes over if the primary's node dies.
    const REPLICAS: usize = 1;
    /// Whether a write waits for its standbys before it is acknowledged
    /// (`sync = "sync"`, the default) or ships its state right after
    /// (`sync = "async"`: faster; a crash may lose the last writes).
    const SYNC_REPLICATION: bool = true;
    /// Whether reads (`&self` methods) may be served by a node's standby copy
    /// (`reads = "any"`: possibly stale) instead of going to the primary.
    const READS_ANY: bool = false;
    /// Whether every replica runs and answers calls on its own
    /// (`replication = "active_active"`): writes are not shipped, copies may diverge.
    const ACTIVE_ACTIVE: bool = false;
    /// How its children are placed (`#[distributed(distribution = "...")]`).
    const DISTRIBUTION: crate::placement::Distribution =
        crate::placement::Distribution::ConsistentHash;

    /// The strategy of `#[distributed(custom = path::to::Strategy)]`.
    fn custom_strategy() -> Option<&'static dyn crate::placement::Strategy> {
        None
    }
}

/// Remote dispatch by method name, and the lifecycle hooks: implemented by
/// `#[distributed]` on an impl block.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a #[distributed] component with calls",
    label = "put #[distributed] on `impl {Self} {{ ... }}` too",
    note = "#[distributed] goes on the struct (the component's state) and on its impl block"
)]
pub trait Dispatch: Component {
    /// Runs before the state leaves this node in a hot move (`#[on_handover_out]`).
    fn on_handover_out(&mut self) {}

    /// Runs when a state arrives from a hot move, before the first call
    /// (`#[on_handover_in]`).
    fn on_handover_in(&mut self) {}

    /// Runs when the component starts (`#[on_start]`): a start, a restart from its start
    /// state after its node died, a cold move. Not when it wakes from sleep, arrives
    /// in a hot move (`#[on_handover_in]`) or is promoted from a standby copy.
    fn on_start(&mut self) {}

    /// Runs when the component is stopped (`#[on_stop]`): `Type::stop`, or its node
    /// leaving with `pinned` and `on_node_death = "stay_down"`. Not when it sleeps,
    /// moves, or its node dies.
    fn on_stop(&mut self) {}

    /// Runs when an instance of a replicated child takes a role
    /// (`#[on_role_change]`): `Primary` when it starts as the primary (a start, a move's
    /// arrival, a promotion), `Replica` when an active/active replica starts.
    fn on_role_change(&mut self, _role: crate::Role) {}

    /// Runs the remote call `method` with its encoded `args` on the actor's state and
    /// encodes the reply; an unknown method or bad arguments give an error.
    fn apply<'a>(
        actor: &'a mut ComponentActor<Self>,
        method: &'a str,
        args: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, CallError>>;

    /// Whether `method` is a write (`&mut self`): after it, the standbys get the state.
    fn is_write(method: &str) -> bool;
}

/// The kameo actor that runs one child.
pub struct ComponentActor<T> {
    state: T,
    id: Arc<str>,
    node: NodeId,
    epoch: u64,
    events: broadcast::Sender<HubEvent>,
    replicator: Option<Arc<dyn Replicator>>,
    recent: SharedRecent,
}

impl<T> std::fmt::Debug for ComponentActor<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentActor")
            .field("id", &self.id)
            .finish()
    }
}

impl<T: Component> Actor for ComponentActor<T> {
    type Args = Self;
    type Error = std::convert::Infallible;

    async fn on_start(args: Self, _: ActorRef<Self>) -> Result<Self, Self::Error> {
        Ok(args)
    }
}

impl<T> ComponentActor<T> {
    /// The user's state (for generated code).
    #[doc(hidden)]
    pub fn __state(&mut self) -> &mut T {
        &mut self.state
    }

    /// Runs a method's future, turning a panic into [`CallError::Panicked`]; the actor
    /// goes on with the state the panic left, and the hub reports a restart.
    #[doc(hidden)]
    pub async fn __guard<R>(
        id: Arc<str>,
        node: NodeId,
        epoch: u64,
        events: broadcast::Sender<HubEvent>,
        fut: impl std::future::Future<Output = R>,
    ) -> Result<R, CallError> {
        match AssertUnwindSafe(fut).catch_unwind().await {
            Ok(r) => Ok(r),
            Err(payload) => {
                let message = panic_message(&*payload);
                tracing::error!(id = %id, "component panicked: {message}");
                let _ = events.send(HubEvent::ChildRestarted {
                    id: id.to_string(),
                    node,
                    epoch,
                    reason: RestartReason::Panicked {
                        message: message.clone(),
                    },
                });
                Err(CallError::Panicked {
                    id: id.to_string(),
                    message,
                })
            }
        }
    }

    /// What [`Self::__guard`] needs besides the future (for generated code).
    #[doc(hidden)]
    pub fn __context(&self) -> (Arc<str>, NodeId, u64, broadcast::Sender<HubEvent>) {
        (self.id.clone(), self.node, self.epoch, self.events.clone())
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// Decodes the arguments of a remote call (for generated code).
#[doc(hidden)]
pub fn decode_args<M: DeserializeOwned>(args: &[u8]) -> Result<M, CallError> {
    postcard::from_bytes(args).map_err(|e| CallError::Codec {
        message: format!("arguments: {e}"),
    })
}

/// Encodes the reply of a remote call (for generated code).
#[doc(hidden)]
pub fn encode_reply<R: Serialize>(reply: &R) -> Result<Vec<u8>, CallError> {
    postcard::to_allocvec(reply).map_err(|e| CallError::Codec {
        message: format!("reply: {e}"),
    })
}

/// The answer to a method this binary's `T` does not have (for generated code).
#[doc(hidden)]
pub fn unknown_method<T: Component>(method: &str) -> CallError {
    CallError::UnknownMethod {
        type_name: T::TYPE_NAME.into(),
        method: method.into(),
    }
}

/// Runs the read `method` on a standby copy of a `T` (`reads = "any"`): the copy is
/// decoded into an actor of its own, used once and dropped.
pub(crate) async fn read_copy<T: Dispatch>(
    copy: &[u8],
    ctx: ChildCtx,
    method: &str,
    args: &[u8],
) -> Result<Vec<u8>, CallError> {
    let state: T = postcard::from_bytes(copy).map_err(|e| CallError::Codec {
        message: format!("standby copy: {e}"),
    })?;
    let mut actor = ComponentActor {
        state,
        id: ctx.id,
        node: ctx.node,
        epoch: ctx.epoch,
        events: ctx.events,
        replicator: None,
        recent: ctx.recent,
    };
    T::apply(&mut actor, method, args).await
}

impl<T: Component> ComponentActor<T> {
    /// After a write (for generated code): with standbys, returns once they have the
    /// new state, so the caller's acknowledgement means the write survives its node.
    #[doc(hidden)]
    pub async fn __replicated(&mut self) {
        if T::ACTIVE_ACTIVE {
            // Each replica runs on its own: nothing to ship.
            return;
        }
        self.ship_state().await;
    }

    /// Sends the state to the standbys (or, active/active, makes the replicas run).
    async fn ship_state(&mut self) {
        let Some(r) = &self.replicator else {
            return;
        };
        match postcard::to_allocvec(&self.state) {
            Ok(state) => {
                let shipped = r.ship(
                    self.id.clone(),
                    T::TYPE_NAME,
                    self.epoch,
                    state,
                    self.recent.clone(),
                );
                if T::SYNC_REPLICATION {
                    shipped.await
                } else {
                    tokio::spawn(shipped);
                }
            }
            Err(e) => {
                tracing::error!(id = %self.id, "could not encode the state to replicate: {e}")
            }
        }
    }
}

/// A lifecycle hook to run on a running instance.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Hook {
    /// Its new role (an active replica promoted in place): `#[on_role_change]`.
    Role(crate::Role),
    /// It is being stopped for good: `#[on_stop]`.
    Stop,
}

impl<T: Dispatch> Message<Hook> for ComponentActor<T> {
    type Reply = ();

    async fn handle(&mut self, hook: Hook, _: &mut kameo::message::Context<Self, ()>) {
        let state = &mut self.state;
        let ran = std::panic::catch_unwind(AssertUnwindSafe(|| match hook {
            Hook::Role(role) => state.on_role_change(role),
            Hook::Stop => state.on_stop(),
        }));
        if ran.is_err() {
            tracing::error!(id = %self.id, ?hook, "a lifecycle hook panicked");
        }
    }
}

/// Brings a replicated child's standby set in line with the ring, with its state: run
/// by the actor, so no write slips between the snapshot and the new set.
pub(crate) struct Resync;

impl<T: Component> Message<Resync> for ComponentActor<T> {
    type Reply = ();

    async fn handle(&mut self, _: Resync, _: &mut kameo::message::Context<Self, ()>) {
        self.ship_state().await;
    }
}

/// The replies to the calls of a batch, in order.
pub(crate) type Replies = Vec<Result<Vec<u8>, CallError>>;

/// Where the replies of a batch go, once: `Some` when it ran, `None` when the child
/// was gone first (nothing of it applied). Dropped unused, it answers `None`.
pub(crate) struct Responder(Option<Box<dyn FnOnce(Option<Replies>) + Send>>);

impl Responder {
    pub(crate) fn new(f: impl FnOnce(Option<Replies>) + Send + 'static) -> Self {
        Self(Some(Box::new(f)))
    }

    fn answer(mut self, replies: Option<Replies>) {
        if let Some(f) = self.0.take() {
            f(replies);
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(None);
        }
    }
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Responder")
    }
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
    calls: Vec<EncodedCall>,
    respond: Responder,
    _entered: Entered<T>,
}

impl<T: Component> std::fmt::Debug for CallBatch<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallBatch")
            .field("calls", &self.calls.len())
            .finish()
    }
}

/// One call of a [`CallBatch`]: its method name and arguments, shared with the frame.
#[derive(Debug)]
pub(crate) struct EncodedCall {
    pub(crate) method: bytes::Bytes,
    pub(crate) args: bytes::Bytes,
    /// Non-zero for an identified write (see [`RecentCalls`]).
    pub(crate) call_id: u128,
}

impl<T: Dispatch> Message<CallBatch<T>> for ComponentActor<T> {
    type Reply = ();

    async fn handle(
        &mut self,
        batch: CallBatch<T>,
        _: &mut kameo::message::Context<Self, Self::Reply>,
    ) {
        let mut replies = Vec::with_capacity(batch.calls.len());
        for call in &batch.calls {
            let Ok(method) = std::str::from_utf8(&call.method) else {
                replies.push(Err(unknown_method::<T>("(not UTF-8)")));
                continue;
            };
            // A retried write this child already applied: its reply, not a second go.
            if let (true, Some(recent)) = (call.call_id != 0, &self.recent) {
                if let Some(reply) = recent.lock().unwrap().get(call.call_id) {
                    replies.push(Ok(reply.clone()));
                    continue;
                }
            }
            let reply = T::apply(self, method, &call.args).await;
            if T::is_write(method) {
                // Recorded before the state ships, so standbys know this call too.
                if let (Ok(bytes), true, Some(recent)) = (&reply, call.call_id != 0, &self.recent) {
                    recent.lock().unwrap().record(call.call_id, bytes.clone());
                }
                self.__replicated().await;
            }
            replies.push(reply);
        }
        batch.respond.answer(Some(replies));
    }
}

/// Asks the actor; a stopped actor gives the message back.
pub(crate) async fn ask<T, M, R>(
    actor: &ActorRef<ComponentActor<T>>,
    msg: M,
) -> Result<R, AskFailure<M>>
where
    T: Component,
    M: Send + 'static,
    R: Send + 'static,
    ComponentActor<T>: Message<M, Reply = Result<R, CallError>>,
{
    match actor.ask(msg).await {
        Ok(r) => Ok(r),
        Err(SendError::HandlerError(e)) => Err(AskFailure::Call(e)),
        Err(SendError::ActorNotRunning(m)) | Err(SendError::ActorRestarting(m)) => {
            Err(AskFailure::Stopped(Some(m)))
        }
        Err(SendError::MailboxFull(m)) => Err(AskFailure::Stopped(Some(m))),
        Err(SendError::ActorStopped) | Err(SendError::Timeout(_)) => Err(AskFailure::Stopped(None)),
    }
}

/// Why a local ask failed.
#[derive(Debug)]
pub(crate) enum AskFailure<M> {
    /// The method ran and failed.
    Call(CallError),
    /// The actor is not running; the message comes back if it was not handled.
    Stopped(Option<M>),
}

impl<M> From<AskFailure<M>> for CallError {
    fn from(f: AskFailure<M>) -> Self {
        match f {
            AskFailure::Call(e) => e,
            AskFailure::Stopped(_) => CallError::HubStopped,
        }
    }
}

/// A running child, whatever its type.
pub(crate) trait ErasedChild: Send + Sync + 'static {
    fn type_name(&self) -> &'static str;
    fn id(&self) -> &str;
    /// The `Child<T>`, for a typed downcast.
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
    /// Runs remote calls, in order, as one message to the actor, which answers
    /// `respond` with one reply per call (or `None` if the child stopped or moved
    /// before running any of them). The future ends once the message is queued.
    fn call_batch(
        self: Arc<Self>,
        calls: Vec<EncodedCall>,
        respond: Responder,
    ) -> BoxFuture<'static, ()>;
    fn stop(self: Arc<Self>) -> BoxFuture<'static, ()>;
    /// Puts the child to sleep (its state kept, its actor stopped) if it was not called
    /// for `idle`; true if it started to.
    fn try_hibernate(self: Arc<Self>, idle: Duration, now: Instant) -> bool;
    /// Whether an actor runs for it now.
    fn is_active(&self) -> bool;
    /// Whether it has ever been called (here, since it started).
    fn was_called(&self) -> bool;
    /// Brings its standby set in line with the ring, sending its state.
    fn resync(self: Arc<Self>) -> BoxFuture<'static, ()>;
    /// The replies of its latest identified writes (they move with it).
    fn recent_calls(&self) -> Vec<(u128, Vec<u8>)>;
    /// Runs a lifecycle hook on it (waking it if it sleeps).
    fn run_hook(self: Arc<Self>, hook: Hook) -> BoxFuture<'static, ()>;
    /// Runs `#[on_start]` on a child just made (dormant): once its start is decided, so
    /// that a start refused (a duplicate id) runs no hook.
    fn start_hook(&self) -> Result<(), String>;
    /// Freezes it for a move and returns its encoded state (`None` inside for a cold
    /// move: the start state goes instead); `None` if it is stopped. Calls wait until
    /// `move_done` or `move_failed`.
    fn freeze_for_move(
        self: Arc<Self>,
    ) -> BoxFuture<'static, Option<Result<Option<Vec<u8>>, String>>>;
    /// The move failed: it goes on here with its state.
    fn move_failed(&self);
    /// The move succeeded: it is gone from here; waiting calls look again.
    fn move_done(&self);
}

/// What a child needs to know about itself, kept while it sleeps; what the hub hands a
/// child it starts.
#[derive(Debug)]
pub(crate) struct ChildCtx {
    pub(crate) id: Arc<str>,
    pub(crate) node: NodeId,
    pub(crate) epoch: u64,
    pub(crate) events: broadcast::Sender<HubEvent>,
    /// Keeps the standbys in step, for a type with `replicas` > 1.
    pub(crate) replicator: Option<Arc<dyn Replicator>>,
    /// The role an instance of a replicated child starts in.
    pub(crate) role: Option<crate::Role>,
    /// Its latest identified writes (kept while it sleeps; from the copy on a promotion).
    pub(crate) recent: SharedRecent,
}

/// The replies of a replicated child's latest identified writes (remote writes carry a
/// call id): a caller that lost its primary retries with the same id, and the promoted
/// standby answers from here instead of applying the write twice. Shipped with the
/// state: whole to a standby new to this instance, the entries since the last shipment
/// to the others.
#[derive(Debug, Default)]
pub(crate) struct RecentCalls {
    order: std::collections::VecDeque<u128>,
    replies: std::collections::HashMap<u128, Vec<u8>>,
    /// Recorded since the last shipment.
    unshipped: Vec<u128>,
}

/// A child's table of identified writes, shared by its actor and its hub: only for the
/// children of replicated types (the others carry no call ids, and no table: a child
/// costs a few hundred bytes).
pub(crate) type SharedRecent = Option<Arc<Mutex<RecentCalls>>>;

/// How many identified writes a replicated child remembers.
const RECENT_CALLS: usize = 256;

impl RecentCalls {
    pub(crate) fn from_list(list: Vec<(u128, Vec<u8>)>) -> Self {
        let mut r = Self::default();
        r.extend(list);
        r
    }

    pub(crate) fn get(&self, id: u128) -> Option<&Vec<u8>> {
        self.replies.get(&id)
    }

    /// Notes the reply of identified write `id`; the oldest beyond [`RECENT_CALLS`] go.
    pub(crate) fn record(&mut self, id: u128, reply: Vec<u8>) {
        if self.replies.insert(id, reply).is_none() {
            self.order.push_back(id);
            self.unshipped.push(id);
        }
        while self.order.len() > RECENT_CALLS {
            if let Some(old) = self.order.pop_front() {
                self.replies.remove(&old);
            }
        }
    }

    /// Records each of `list` (a shipment's entries, in order).
    pub(crate) fn extend(&mut self, list: Vec<(u128, Vec<u8>)>) {
        for (id, reply) in list {
            self.record(id, reply);
        }
        self.unshipped.clear();
    }

    /// Every entry, oldest first.
    pub(crate) fn to_list(&self) -> Vec<(u128, Vec<u8>)> {
        self.order
            .iter()
            .filter_map(|id| Some((*id, self.replies.get(id)?.clone())))
            .collect()
    }

    /// The entries recorded since the last call (those a standby in step lacks).
    pub(crate) fn take_unshipped(&mut self) -> Vec<(u128, Vec<u8>)> {
        std::mem::take(&mut self.unshipped)
            .into_iter()
            .filter_map(|id| Some((id, self.replies.get(&id)?.clone())))
            .collect()
    }
}

/// Ships a replicated child's state to its standby nodes (implemented by the hub).
pub(crate) trait Replicator: Send + Sync + 'static {
    /// Sends `state` (encoded) to the child's standbys and returns once each has it
    /// or has been left out of its standby set.
    fn ship(
        &self,
        id: Arc<str>,
        type_name: &'static str,
        epoch: u64,
        state: Vec<u8>,
        recent: SharedRecent,
    ) -> BoxFuture<'static, ()>;
}

impl std::fmt::Debug for dyn Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Replicator")
    }
}

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
                        slot.life = self.activate(state);
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

    fn activate(&self, state: T) -> Life<T> {
        let prepared = ComponentActor::prepare();
        let actor = prepared.actor_ref().clone();
        let join = prepared.spawn(ComponentActor {
            state,
            id: self.ctx.id.clone(),
            node: self.ctx.node,
            epoch: self.ctx.epoch,
            events: self.ctx.events.clone(),
            replicator: self.ctx.replicator.clone(),
            recent: self.ctx.recent.clone(),
        });
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
                    let _ = self.ctx.events.send(HubEvent::ChildLost {
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

    fn was_called(&self) -> bool {
        self.slot.lock().unwrap().called
    }

    fn recent_calls(&self) -> Vec<(u128, Vec<u8>)> {
        self.ctx
            .recent
            .as_ref()
            .map_or_else(Vec::new, |r| r.lock().unwrap().to_list())
    }

    fn start_hook(&self) -> Result<(), String> {
        match &mut self.slot.lock().unwrap().life {
            Life::Dormant(state) => run_on_start(state),
            // Made dormant a moment ago, under the hub's lock: nothing woke it.
            _ => Ok(()),
        }
    }

    fn run_hook(self: Arc<Self>, hook: Hook) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            if let Some(entered) = self.enter().await {
                let _ = entered.actor.ask(hook).await;
            }
        })
    }

    fn resync(self: Arc<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            if let Some(entered) = self.enter().await {
                let _ = entered.actor.ask(Resync).await;
            }
        })
    }

    fn is_active(&self) -> bool {
        matches!(self.slot.lock().unwrap().life, Life::Active(..))
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
}

/// Makes a typed child (dormant until its first call).
pub(crate) fn spawn_typed<T: Dispatch>(state: T, ctx: ChildCtx) -> Arc<dyn ErasedChild> {
    Arc::new(Child::new(state, ctx))
}

/// Runs `#[on_start]`, a panic being an error.
pub(crate) fn run_on_start<T: Dispatch>(state: &mut T) -> Result<(), String> {
    std::panic::catch_unwind(AssertUnwindSafe(|| state.on_start()))
        .map_err(|p| format!("#[on_start] panicked: {}", panic_message(&*p)))
}

/// Makes a child from its encoded state. A state handed over in a move runs
/// `#[on_handover_in]` (hot) or `#[on_start]` (cold: it restarts from its start state);
/// a start's `#[on_start]` runs once the start is decided (`ErasedChild::start_hook`).
fn spawn_erased<T: Dispatch>(
    state: &[u8],
    args: ChildCtx,
    handed_over: bool,
) -> Result<Arc<dyn ErasedChild>, String> {
    let mut state: T = postcard::from_bytes(state).map_err(|e| format!("start state: {e}"))?;
    if handed_over && T::HOT_MIGRATION {
        std::panic::catch_unwind(AssertUnwindSafe(|| state.on_handover_in()))
            .map_err(|p| format!("#[on_handover_in] panicked: {}", panic_message(&*p)))?;
    } else if handed_over {
        run_on_start(&mut state)?;
    }
    if let Some(role) = args.role {
        std::panic::catch_unwind(AssertUnwindSafe(|| state.on_role_change(role)))
            .map_err(|p| format!("#[on_role_change] panicked: {}", panic_message(&*p)))?;
    }
    Ok(spawn_typed(state, args))
}

/// Makes a child from its encoded state; `true` when the state arrived in a move.
pub(crate) type SpawnFn = fn(&[u8], ChildCtx, bool) -> Result<Arc<dyn ErasedChild>, String>;

/// One component type, as the hub sees it.
#[doc(hidden)]
pub struct ComponentVTable {
    pub(crate) type_name: &'static str,
    pub(crate) spawn: SpawnFn,
    pub(crate) replicas: usize,
    pub(crate) active_active: bool,
    pub(crate) placement: crate::placement::TypePlacement,
}

impl std::fmt::Debug for ComponentVTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentVTable")
            .field("type_name", &self.type_name)
            .finish()
    }
}

impl ComponentVTable {
    /// The table entry of `T` (for generated code).
    pub const fn of<T: Dispatch>() -> Self {
        Self {
            type_name: T::TYPE_NAME,
            spawn: spawn_erased::<T>,
            replicas: T::REPLICAS,
            active_active: T::ACTIVE_ACTIVE,
            placement: crate::placement::TypePlacement {
                kind: T::DISTRIBUTION,
                custom: T::custom_strategy,
            },
        }
    }
}

/// Every component type linked into this binary.
#[doc(hidden)]
#[linkme::distributed_slice]
pub static COMPONENTS: [ComponentVTable];

/// Copies kept of each child of this type (1 if the type is unknown here).
pub(crate) fn replicas(type_name: &str) -> usize {
    vtable(type_name).map_or(1, |v| v.replicas)
}

/// Whether any component type linked into this binary keeps replicas.
pub(crate) fn any_replicated() -> bool {
    COMPONENTS.iter().any(|v| v.replicas > 1)
}

/// The table entry of a type name, if this binary has it.
pub(crate) fn vtable(type_name: &str) -> Option<&'static ComponentVTable> {
    static INDEX: std::sync::OnceLock<
        std::collections::HashMap<&'static str, &'static ComponentVTable>,
    > = std::sync::OnceLock::new();
    INDEX
        .get_or_init(|| {
            let mut m = std::collections::HashMap::new();
            for v in COMPONENTS {
                if m.insert(v.type_name, v).is_some() {
                    tracing::error!(
                        "two component types are named {:?}; give one `name = \"...\"`",
                        v.type_name
                    );
                }
            }
            m
        })
        .get(type_name)
        .copied()
}

#[cfg(test)]
mod tests {
    use super::{RecentCalls, RECENT_CALLS};

    #[test]
    fn recent_calls_keep_the_latest_and_ship_what_is_new() {
        let mut r = RecentCalls::default();
        for id in 1..=(RECENT_CALLS as u128 + 10) {
            r.record(id, vec![id as u8]);
        }
        // The oldest went; the latest answer.
        assert_eq!(r.get(1), None);
        assert_eq!(r.get(10), None);
        assert_eq!(r.get(11), Some(&vec![11]));
        assert_eq!(r.to_list().len(), RECENT_CALLS);
        // Recorded since the last shipment: only those that are still kept, in order.
        let first = r.take_unshipped();
        assert_eq!(first.len(), RECENT_CALLS);
        assert_eq!(first[0].0, 11);
        r.record(500, vec![5]);
        // A retry recorded again is not new.
        r.record(500, vec![5]);
        assert_eq!(r.take_unshipped(), vec![(500, vec![5])]);
        assert!(r.take_unshipped().is_empty());
        // A standby appending shipments keeps the same table, and owes nothing.
        let mut standby = RecentCalls::from_list(first);
        standby.extend(vec![(500, vec![5])]);
        assert_eq!(standby.to_list(), r.to_list());
        assert!(standby.take_unshipped().is_empty());
    }
}
