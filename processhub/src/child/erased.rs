//! A child whatever its type: what the hub holds of it, and what it holds of the hub.

use crate::core::engine::ChildHandle;
use crate::core::entry::EpochCell;
use crate::core::item::StartFailure;
use crate::core::recent::SharedRecent;
use crate::error::CallError;
use crate::net::wire::EncodedCall;
use crate::node::NodeId;
use futures_util::future::BoxFuture;
use std::any::Any;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How a child just made came to run here: which of its hooks run on arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// Started, or restarted from its start state: `#[on_start]`, then its role.
    Started,
    /// Arrived in a move (`#[on_handover_in]` ran as its state was decoded) or promoted
    /// from a standby copy: its role (and `#[on_start]` for a cold move).
    HandedOver,
    /// An active/active replica made from its primary's state: its role.
    Replica,
}

impl ChildHandle for Arc<dyn ErasedChild> {
    fn type_name(&self) -> &str {
        ErasedChild::type_name(&**self)
    }

    fn was_called(&self) -> bool {
        ErasedChild::was_called(&**self)
    }

    fn set_epoch(&self, epoch: u64) {
        ErasedChild::set_epoch(&**self, epoch)
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
    /// `from`: the node they came from (the callers of its identified writes).
    fn call_batch(
        self: Arc<Self>,
        from: NodeId,
        calls: Vec<EncodedCall>,
        respond: Responder,
    ) -> BoxFuture<'static, ()>;
    fn stop(self: Arc<Self>) -> BoxFuture<'static, ()>;
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
    /// Whether its type answers move consent (`#[move_consent]`).
    fn consents(&self) -> bool;
    /// Asks it whether it may move now (waking it if it sleeps); `Ready` if it is gone.
    fn move_consent(self: Arc<Self>) -> BoxFuture<'static, crate::MoveConsent>;
    /// Runs the hooks of a child just made (dormant), once its start is admitted and
    /// outside the hub's lock: `#[on_start]` (a start, a restart from the start state,
    /// a cold move), then `#[on_role_change]` with the role it starts in. A start
    /// refused runs none.
    fn arrive(&self, how: Arrival) -> Result<(), StartFailure>;
    /// Its epoch changed (a promotion in place, a rolled-back move).
    fn set_epoch(&self, epoch: u64);
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
    /// Stops it (a duplicate that lost) and returns its encoded state, to be merged
    /// into the instance kept; `None` if it was stopped already.
    fn take_for_merge(self: Arc<Self>) -> BoxFuture<'static, Option<Result<Vec<u8>, String>>>;
    /// Merges the encoded state of a duplicate dropped elsewhere into this instance
    /// (`#[on_conflict]`), then ships the result to its standbys; `None` if the instance
    /// stopped or moved away first (nothing merged).
    fn merge(self: Arc<Self>, other: Vec<u8>) -> BoxFuture<'static, Option<Result<(), String>>>;
}

/// What a child needs to know about itself, kept while it sleeps; what the hub hands a
/// child it starts.
#[derive(Debug)]
pub(crate) struct ChildCtx {
    pub(crate) id: Arc<str>,
    pub(crate) node: NodeId,
    /// Its epoch: set by the engine, read by the instance.
    pub(crate) epoch: EpochCell,
    pub(crate) events: crate::hooks::Events,
    /// Keeps the standbys in step, for a type with `replicas` > 1.
    pub(crate) replicator: Option<Arc<dyn Replicator>>,
    /// The role an instance of a replicated child starts in.
    pub(crate) role: Option<crate::core::entry::Role>,
    /// Its latest identified writes (kept while it sleeps; from the copy on a promotion).
    pub(crate) recent: SharedRecent,
    /// Where it notes that it woke: the hub's sleep sweep visits those only, not every
    /// child (`None`: nobody puts it to sleep).
    pub(crate) awake: Option<Awake>,
    /// The node's lease, checked before each call and before its reply goes (`None`:
    /// not checked, as for a read on a standby copy).
    pub(crate) lease: Option<Arc<crate::child::lease::Lease>>,
}

/// The children that woke since the sweep last saw them (see [`Sleeper`]).
pub(crate) type Awake = Arc<std::sync::Mutex<Vec<std::sync::Weak<dyn Sleeper>>>>;

/// A child the sleep sweep can put to sleep.
pub(crate) trait Sleeper: Send + Sync + 'static {
    /// Puts the child to sleep (its state kept, its actor stopped) if it was not called
    /// for `idle`; true if it started to.
    fn try_hibernate(self: Arc<Self>, idle: Duration, now: Instant) -> bool;
    /// Whether an actor runs for it now.
    fn is_awake(&self) -> bool;
}

/// The caller of an identified write from another node, which its standbys may tell
/// once they hold the write ([`crate::core::held`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WriteCaller {
    pub(crate) node: NodeId,
    pub(crate) call_id: u128,
}

/// Ships a replicated child's state to its standby nodes (implemented by the hub).
pub(crate) trait Replicator: Send + Sync + 'static {
    /// Sends `state` (encoded) to the child's standbys; true once each standby the ring
    /// gives it has it, false if the call's deadline passed first (or the child is no
    /// longer primary here). `caller`: the write's, told by the standbys if the
    /// shipment goes to its published set.
    fn ship(
        &self,
        id: Arc<str>,
        type_name: &'static str,
        epoch: u64,
        state: Vec<u8>,
        recent: SharedRecent,
        caller: Option<WriteCaller>,
    ) -> BoxFuture<'static, bool>;

    /// Sends a write as its call (`ship = "calls"`) to the child's standbys, if each
    /// of them holds every shipment before it and their logs have room: a future that
    /// is true once each took it, false if one did not (the state must go then).
    /// `None`, with nothing sent, if the state must go instead.
    fn ship_call(
        &self,
        id: Arc<str>,
        type_name: &'static str,
        epoch: u64,
        call: (&str, &[u8]),
        recent: SharedRecent,
        caller: Option<WriteCaller>,
    ) -> Option<BoxFuture<'static, bool>>;

    /// When the state after an asynchronous write (`sync = "async"`) ships: now, with a
    /// shipment already due (it takes the state as it is then), or after a window, from
    /// a shipment the caller makes due now ([`Self::shipment_begins`] when it begins).
    fn ship_when(&self) -> ShipWhen;

    /// The shipment made due by [`Self::ship_when`] takes the state now: a write after
    /// this makes another due.
    fn shipment_begins(&self);
}

/// When an asynchronous write's state ships ([`Replicator::ship_when`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ShipWhen {
    /// Now, on its own (no window).
    Now,
    /// With the shipment already due.
    Due,
    /// After this window, in a shipment made due now.
    After(std::time::Duration),
}

impl std::fmt::Debug for dyn Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Replicator")
    }
}

/// A lifecycle hook to run on a running instance.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Hook {
    /// Its new role (an active replica promoted in place): `#[on_role_change]`.
    Role(crate::core::entry::Role),
    /// It is being stopped for good: `#[on_stop]`.
    Stop,
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

    pub(crate) fn answer(mut self, replies: Option<Replies>) {
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
