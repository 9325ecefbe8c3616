//! Components: the `#[distributed]` types, their actors, and the table that lets any
//! node host any component type linked into its binary.
//!
//! Each running child is a kameo actor, [`ComponentActor<T>`], holding the user's state.
//! The macro implements [`Component`] (the type's wire name) and [`Dispatch`] (remote
//! calls by method name), and adds a [`ComponentVTable`] to the [`COMPONENTS`] slice
//! (linkme), which the hub reads to start a type by name.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use kameo::actor::{Actor, ActorRef};
use kameo::error::SendError;
use kameo::message::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::child::erased::Hook;
use crate::child::erased::{ChildCtx, Replicator, WriteCaller};
use crate::core::recent::SharedRecent;
use crate::error::CallError;
use crate::events::{HubEvent, RestartReason};
use crate::node::NodeId;

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
    const ON_NODE_DEATH: crate::core::entry::OnNodeDeath = crate::core::entry::OnNodeDeath::Restart;
    /// Copies of each child kept in step, the primary included
    /// (`#[distributed(replicas = N)]`): with N > 1, every write reaches N - 1 standbys
    /// before it is acknowledged, and a standby takes over if the primary's node dies.
    const REPLICAS: usize = 1;
    /// Whether a write waits for its standbys before it is acknowledged
    /// (`sync = "sync"`, the default) or ships its state soon after, the writes of a
    /// window together (`sync = "async"`: faster; a crash may lose the last writes).
    const SYNC_REPLICATION: bool = true;
    /// Whether a write ships its call, replayed on the standbys (`ship = "calls"`: for
    /// large states; the write methods must be deterministic), instead of the whole
    /// new state (`ship = "state"`, the default).
    const SHIP_CALLS: bool = false;
    /// Whether reads (`&self` methods) may be served by a node's standby copy
    /// (`reads = "any"`: possibly stale) instead of going to the primary.
    const READS_ANY: bool = false;
    /// Whether every replica runs and answers calls on its own
    /// (`replication = "active_active"`): writes are not shipped, copies may diverge.
    const ACTIVE_ACTIVE: bool = false;
    /// How its children are placed (`#[distributed(distribution = "...")]`).
    const DISTRIBUTION: crate::core::placement::Distribution =
        crate::core::placement::Distribution::ConsistentHash;

    /// The strategy of `#[distributed(custom = path::to::Strategy)]`.
    fn custom_strategy() -> Option<&'static dyn crate::core::placement::Strategy> {
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
    fn on_role_change(&mut self, _role: crate::core::entry::Role) {}

    /// Whether the type answers move consent (`#[move_consent]`).
    const CONSENTS: bool = false;

    /// Whether this instance may move to another node now (`#[move_consent]`):
    /// `Defer` keeps it here, serving, and it is asked again every
    /// [`MOVE_CONSENT_POLL`](crate::MOVE_CONSENT_POLL) until it says `Ready` or the hub's
    /// [`max_move_deferral`](crate::HubBuilder::max_move_deferral) passed (ProcessHub's
    /// migration consent). A panic counts as `Ready`.
    fn move_consent(&self) -> crate::MoveConsent {
        crate::MoveConsent::Ready
    }

    /// Whether the type merges a duplicate's state (`#[on_conflict]`).
    const MERGES: bool = false;

    /// Runs on the instance kept when two instances of one id met after a split healed
    /// under [`PartitionTolerance::Divergence`](crate::PartitionTolerance), with the
    /// state of the one dropped (`#[on_conflict]`): what it did on its side can be
    /// merged in. Without it the dropped instance's state is discarded (and reported).
    fn on_conflict(&mut self, _other: Self) {}

    /// Runs the remote call `method` with its encoded `args` on the actor's state and
    /// encodes the reply; an unknown method or bad arguments give an error. (Not
    /// boxed: a batch of calls runs each in the batch's own future.)
    fn apply<'a>(
        actor: &'a mut ComponentActor<Self>,
        method: &'a str,
        args: &'a [u8],
    ) -> impl std::future::Future<Output = Result<Vec<u8>, CallError>> + Send + 'a;

    /// Whether `method` is a write (`&mut self`): after it, the standbys get the state.
    fn is_write(method: &str) -> bool;
}

/// Where an actor reads its child's current epoch.
pub(crate) trait EpochOf: Send + Sync + 'static {
    fn epoch(&self) -> u64;
    /// Ships the child's whole state to its standbys soon (an asynchronous write's
    /// call that a standby could not take).
    fn reship(self: Arc<Self>) {}
    /// After an asynchronous write: whether a shipment of the state is due that will
    /// carry it (one made due now, after the hub's window, or one due already); false
    /// if the state must ship now.
    fn ship_soon(self: Arc<Self>) -> bool {
        false
    }
}

/// The home of an actor that runs no child (a read on a standby copy).
pub(crate) struct NoHome;

impl EpochOf for NoHome {
    fn epoch(&self) -> u64 {
        0
    }
}

/// The kameo actor that runs one child.
pub struct ComponentActor<T> {
    pub(crate) state: T,
    pub(crate) id: Arc<str>,
    pub(crate) node: NodeId,
    /// Its epoch when it woke (read from `home` while the child lives).
    pub(crate) epoch: u64,
    /// The child it runs: where its current epoch is kept.
    pub(crate) home: std::sync::Weak<dyn EpochOf>,
    pub(crate) events: crate::hooks::Events,
    pub(crate) replicator: Option<Arc<dyn Replicator>>,
    pub(crate) recent: SharedRecent,
    /// The node's lease: no call is served, and no reply sent, without it.
    pub(crate) lease: Option<Arc<crate::child::lease::Lease>>,
    /// Writes to apply before anything else runs: those a promoted standby copy held
    /// as calls (`ship = "calls"`).
    pub(crate) replay: Option<Replay<T>>,
    /// Serving a batch of remote calls (`CallBatch`): the lease is confirmed once more
    /// after the batch's last call, before any of its replies goes, rather than after
    /// each call.
    pub(crate) batching: bool,
}

/// How a message's method runs on an actor ([`Dispatch::apply`]).
pub(crate) type ApplyFn<T> = for<'a> fn(
    &'a mut ComponentActor<T>,
    &'a str,
    &'a [u8],
) -> BoxFuture<'a, Result<Vec<u8>, CallError>>;

/// [`Dispatch::apply`], boxed: an [`ApplyFn`].
pub(crate) fn apply_boxed<'a, T: Dispatch>(
    actor: &'a mut ComponentActor<T>,
    method: &'a str,
    args: &'a [u8],
) -> BoxFuture<'a, Result<Vec<u8>, CallError>> {
    Box::pin(T::apply(actor, method, args))
}

/// Writes a promoted copy held as calls, and how to run them.
pub(crate) struct Replay<T> {
    pub(crate) calls: Vec<crate::core::engine::LoggedCall>,
    pub(crate) apply: ApplyFn<T>,
}

impl<T> ComponentActor<T> {
    /// Runs the writes a standby copy held as calls, in order, on its state: as the
    /// primary ran them, except that nothing ships and no lease is asked (the copy
    /// holds them already; the instance asks for its lease before it serves).
    pub(crate) async fn replay(&mut self, replay: Replay<T>) {
        let replicator = self.replicator.take();
        let lease = self.lease.take();
        for call in &replay.calls {
            if let Err(e) = (replay.apply)(self, &call.method, &call.args).await {
                // As on the primary: the error was its reply, the state is what it left.
                tracing::debug!(id = %self.id, method = %call.method, "a replayed write failed: {e}");
            }
        }
        self.replicator = replicator;
        self.lease = lease;
    }
}

/// What [`ComponentActor::__guard`] needs of the actor (for generated code).
#[doc(hidden)]
#[derive(Debug)]
pub struct CallContext<'a> {
    id: &'a Arc<str>,
    node: NodeId,
    epoch: u64,
    events: &'a crate::hooks::Events,
    lease: Option<&'a crate::child::lease::Lease>,
    /// Whether the lease is confirmed after the method ran (not when a batch's replies
    /// wait for one confirmation after its last call).
    confirm_after: bool,
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

    async fn on_start(mut args: Self, _: ActorRef<Self>) -> Result<Self, Self::Error> {
        if let Some(replay) = args.replay.take() {
            args.replay(replay).await;
        }
        Ok(args)
    }
}

impl<T> ComponentActor<T> {
    /// Runs a method's future, turning a panic into [`CallError::Panicked`]; the actor
    /// goes on with the state the panic left, and the hub reports a restart. The node's
    /// lease is checked before the method runs and again before its reply goes: a node
    /// without one (cut off from a quorum, or paused past it) serves nothing
    /// ([`CallError::NoQuorum`]).
    #[doc(hidden)]
    pub async fn __guard<R>(
        cx: CallContext<'_>,
        fut: impl std::future::Future<Output = R>,
    ) -> Result<R, CallError> {
        let CallContext {
            id,
            node,
            epoch,
            events,
            lease,
            confirm_after,
        } = cx;
        if let Some(lease) = lease {
            lease.ready().await?;
        }
        let here = Instance {
            id: id.clone(),
            node,
            epoch,
        };
        match AssertUnwindSafe(CURRENT.scope(here, fut))
            .catch_unwind()
            .await
        {
            Ok(r) => {
                // Still confirmed once it ran: a node paused meanwhile may have been
                // replaced, and must not acknowledge. (In a batch, once after its last
                // call: `CallBatch`.)
                if let (Some(lease), true) = (lease, confirm_after) {
                    lease.ready().await?;
                }
                Ok(r)
            }
            Err(payload) => {
                let message = panic_message(&*payload);
                tracing::error!(id = %id, "component panicked: {message}");
                events.send(HubEvent::ChildRestarted {
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

    /// Its epoch now: the child's (the engine may have changed it since it woke).
    fn epoch(&self) -> u64 {
        self.home
            .upgrade()
            .map_or(self.epoch, |child| child.epoch())
    }

    /// What [`Self::__guard`] needs besides the future, and the user's state that
    /// future runs on (for generated code). Borrowed, not cloned: a call costs no
    /// reference count.
    #[doc(hidden)]
    pub fn __context(&mut self) -> (CallContext<'_>, &mut T) {
        let cx = CallContext {
            id: &self.id,
            node: self.node,
            epoch: self.epoch(),
            events: &self.events,
            lease: self.lease.as_deref(),
            confirm_after: !self.batching,
        };
        (cx, &mut self.state)
    }
}

/// The instance of a component that runs a method: its id, its node, and its epoch.
///
/// The epoch grows with every restart, promotion and move of the id, and a receiver
/// refuses the lower one: use it as a fencing token for the component's own side
/// effects (send it with a write to an external database, and have the database refuse
/// writes carrying an older epoch than the newest it has seen).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// The child id.
    pub id: Arc<str>,
    /// The node running it.
    pub node: NodeId,
    /// Its epoch when the call began.
    pub epoch: u64,
}

tokio::task_local! {
    static CURRENT: Instance;
}

/// The instance running the component method this is called from (sync or async), or
/// `None` outside one (for example in `#[on_start]` or in ordinary code).
///
/// ```
/// use processhub::prelude::*;
///
/// #[distributed]
/// #[derive(Default, Serialize, Deserialize)]
/// pub struct Ledger { entries: u64 }
///
/// #[distributed]
/// impl Ledger {
///     /// Appends, and returns the fencing token to write alongside.
///     pub fn append(&mut self) -> u64 {
///         self.entries += 1;
///         processhub::current_instance().map_or(0, |i| i.epoch)
///     }
/// }
/// assert!(processhub::current_instance().is_none());
/// ```
pub fn current_instance() -> Option<Instance> {
    CURRENT.try_with(Instance::clone).ok()
}

pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
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
    (copy, calls): (&[u8], Vec<crate::core::engine::LoggedCall>),
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
        epoch: ctx.epoch.get(),
        home: std::sync::Weak::<NoHome>::new(),
        events: ctx.events,
        replicator: None,
        recent: ctx.recent,
        lease: None,
        replay: None,
        batching: false,
    };
    if !calls.is_empty() {
        actor
            .replay(Replay {
                calls,
                apply: apply_boxed::<T>,
            })
            .await;
    }
    T::apply(&mut actor, method, args).await
}

impl<T: Component> ComponentActor<T> {
    /// After a write (for generated code): with standbys, returns once they have the
    /// new state, so the caller's acknowledgement means the write survives its node.
    /// The lease is checked once more after a synchronous shipment: a standby that did
    /// not answer (a split) may be promoted on the other side, and a write it lacks must
    /// not be acknowledged unless this node is still confirmed by a quorum.
    ///
    /// `args`: the write's arguments, encoded, for a type that ships calls
    /// ([`Self::__call_to_ship`]), if the method ran to its reply (else the state
    /// ships).
    #[doc(hidden)]
    pub async fn __replicated(
        &mut self,
        method: &str,
        args: Option<&[u8]>,
    ) -> Result<(), CallError> {
        self.replicated(method, args, None).await
    }

    /// [`Self::__replicated`]; `caller`: an identified write's caller on another node,
    /// whom its standbys tell once they hold it.
    pub(crate) async fn replicated(
        &mut self,
        method: &str,
        args: Option<&[u8]>,
        caller: Option<WriteCaller>,
    ) -> Result<(), CallError> {
        if T::ACTIVE_ACTIVE {
            // Each replica runs on its own: nothing to ship.
            return Ok(());
        }
        let shipped = match args {
            Some(args) if T::SHIP_CALLS => self.ship_call(method, args, caller).await,
            _ => self.ship_written(caller).await,
        };
        if !T::SYNC_REPLICATION || self.replicator.is_none() {
            return Ok(());
        }
        if !shipped {
            return Err(CallError::NotReplicated {
                id: self.id.to_string(),
            });
        }
        match &self.lease {
            Some(lease) => lease.ready().await,
            None => Ok(()),
        }
    }

    /// A local write's arguments, encoded as a remote call's are, if its type ships
    /// calls to standbys (for generated code).
    #[doc(hidden)]
    pub fn __call_to_ship<M: serde::Serialize>(&self, msg: &M) -> Option<Vec<u8>> {
        if !T::SHIP_CALLS || T::ACTIVE_ACTIVE || self.replicator.is_none() {
            return None;
        }
        postcard::to_allocvec(msg).ok()
    }

    /// Sends a write's call to the standbys (`ship = "calls"`) if each holds every
    /// shipment before it, else the state: whether every standby took it, as
    /// [`Self::ship_state`].
    async fn ship_call(&mut self, method: &str, args: &[u8], caller: Option<WriteCaller>) -> bool {
        let Some(r) = &self.replicator else {
            return true;
        };
        let epoch = self.epoch();
        let recent = self.recent.clone();
        let id = self.id.clone();
        let Some(shipped) = r.ship_call(id, T::TYPE_NAME, epoch, (method, args), recent, caller)
        else {
            return self.ship_written(caller).await;
        };
        if T::SYNC_REPLICATION {
            shipped.await || self.ship_state(caller).await
        } else {
            // A standby that could not take it gets the state, in a later message of
            // this actor's.
            let home = self.home.clone();
            tokio::spawn(async move {
                if !shipped.await {
                    if let Some(home) = home.upgrade() {
                        home.reship();
                    }
                }
            });
            true
        }
    }

    /// The state after a write: sent now ([`Self::ship_state`]), or, for `async`, by a
    /// shipment due within the hub's window, which takes the state as it is then (the
    /// writes of a window go in one shipment): true then.
    async fn ship_written(&mut self, caller: Option<WriteCaller>) -> bool {
        if !T::SYNC_REPLICATION
            && self.replicator.is_some()
            && self.home.upgrade().is_some_and(|home| home.ship_soon())
        {
            return true;
        }
        self.ship_state(caller).await
    }

    /// Sends the state to the standbys (or, active/active, makes the replicas run):
    /// whether every standby took it (`sync`; always true for `async`, which does not
    /// wait).
    async fn ship_state(&mut self, caller: Option<WriteCaller>) -> bool {
        let Some(r) = &self.replicator else {
            return true;
        };
        match postcard::to_allocvec(&self.state) {
            Ok(state) => {
                let shipped = r.ship(
                    self.id.clone(),
                    T::TYPE_NAME,
                    self.epoch(),
                    state,
                    self.recent.clone(),
                    caller,
                );
                if T::SYNC_REPLICATION {
                    shipped.await
                } else {
                    tokio::spawn(shipped);
                    true
                }
            }
            Err(e) => {
                tracing::error!(id = %self.id, "could not encode the state to replicate: {e}");
                false
            }
        }
    }
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

/// Asks the instance whether it may move now (`#[move_consent]`): the reply is
/// whether it is ready.
pub(crate) struct ConsentAsk;

impl<T: Dispatch> Message<ConsentAsk> for ComponentActor<T> {
    type Reply = bool;

    async fn handle(&mut self, _: ConsentAsk, _: &mut kameo::message::Context<Self, bool>) -> bool {
        let state = &self.state;
        match std::panic::catch_unwind(AssertUnwindSafe(|| state.move_consent())) {
            Ok(consent) => consent == crate::MoveConsent::Ready,
            Err(p) => {
                tracing::error!(id = %self.id, "#[move_consent] panicked: {}", panic_message(&*p));
                true
            }
        }
    }
}

/// The state of a duplicate dropped after a split healed, for `#[on_conflict]`: merged
/// into this instance, whose standbys then get the result.
pub(crate) struct Merge<T>(pub(crate) T);

impl<T: Dispatch> Message<Merge<T>> for ComponentActor<T> {
    type Reply = Result<(), String>;

    async fn handle(
        &mut self,
        Merge(other): Merge<T>,
        _: &mut kameo::message::Context<Self, Result<(), String>>,
    ) -> Result<(), String> {
        let state = &mut self.state;
        std::panic::catch_unwind(AssertUnwindSafe(|| state.on_conflict(other)))
            .map_err(|p| format!("#[on_conflict] panicked: {}", panic_message(&*p)))?;
        if T::ACTIVE_ACTIVE || self.ship_state(None).await {
            Ok(())
        } else {
            Err("merged, but the standbys did not all take the merged state".to_string())
        }
    }
}

/// Brings a replicated child's standby set in line with the ring, with its state: run
/// by the actor, so no write slips between the snapshot and the new set.
pub(crate) struct Resync;

impl<T: Component> Message<Resync> for ComponentActor<T> {
    type Reply = ();

    async fn handle(&mut self, _: Resync, _: &mut kameo::message::Context<Self, ()>) {
        self.ship_state(None).await;
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
