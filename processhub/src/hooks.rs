//! Hook handlers: the user's code, run at the hub's hook points.
//!
//! Every [`HubEvent`] is a hook point ([`HookPoint`]). A handler is registered for one
//! point with a priority ([`Hooks::register`]) and cancelled with the id it got
//! ([`Hooks::cancel`]), at any time. The handlers of a point run in priority order
//! (higher first; equal priorities in the order they were registered), on one thread of
//! the hub's own: every event reaches every handler registered when it happened, in the
//! order the hub emitted them (nothing is dropped, whatever the load), and a handler
//! that is slow delays only the handlers after it, never a call, a start or the node's
//! decisions (which only queue the event). A handler that panics is caught: the
//! handlers after it still run, the panic is logged and reported as
//! [`HubEvent::HookPanicked`], and the hub goes on.
//!
//! ```text
//!   hub ── Events::send(event) ──┬─► broadcast: hub.events() (may lag: Lagged(n))
//!                                └─► queue (unbounded) ─► hook thread: handlers of
//!                                    event.point(), by priority, each caught
//! ```

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use crate::events::HubEvent;

/// A point where hook handlers run: one per kind of [`HubEvent`], named after it.
/// [`HubEvent::point`] tells an event's point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum HookPoint {
    /// [`HubEvent::NodeJoined`]: after a node joined.
    NodeJoined,
    /// [`HubEvent::NodeLeft`]: after a node left (gracefully or not).
    NodeLeft,
    /// [`HubEvent::ChildStarted`]: after a child started here.
    ChildStarted,
    /// [`HubEvent::ChildStopped`]: after a child stopped here.
    ChildStopped,
    /// [`HubEvent::ChildRestarted`]: after a child was restarted here.
    ChildRestarted,
    /// [`HubEvent::ChildMigrated`]: after a child moved out of this node.
    ChildMigrated,
    /// [`HubEvent::MigrationFailed`]: a move out of this node failed.
    MigrationFailed,
    /// [`HubEvent::DrainCompleted`]: a drain of this node ended.
    DrainCompleted,
    /// [`HubEvent::ChildDown`].
    ChildDown,
    /// [`HubEvent::PrimaryPromoted`]: a standby here became the primary.
    PrimaryPromoted,
    /// [`HubEvent::ReplicaAdded`].
    ReplicaAdded,
    /// [`HubEvent::ReplicaRemoved`].
    ReplicaRemoved,
    /// [`HubEvent::StandbyStarted`].
    StandbyStarted,
    /// [`HubEvent::StandbyEnded`].
    StandbyEnded,
    /// [`HubEvent::ChildLost`].
    ChildLost,
    /// [`HubEvent::NodesDowned`]: this node downed unreachable members.
    NodesDowned,
    /// [`HubEvent::QuorumLost`].
    QuorumLost,
    /// [`HubEvent::QuorumRegained`].
    QuorumRegained,
    /// [`HubEvent::Rejoined`]: this node was downed and came back as a new incarnation.
    Rejoined,
    /// [`HubEvent::DuplicateResolved`].
    DuplicateResolved,
    /// [`HubEvent::DuplicateMerged`].
    DuplicateMerged,
    /// [`HubEvent::Unauthenticated`]: a peer did not prove the cluster key.
    Unauthenticated,
    /// [`HubEvent::HookPanicked`]: a hook handler panicked (a handler here that panics
    /// too is logged, not reported again).
    HookPanicked,
    /// [`HubEvent::ChildRegistered`]: every node, after its registry took a new
    /// owner or epoch of a child.
    ChildRegistered,
    /// [`HubEvent::ChildUnregistered`]: every node, after a child left its registry.
    ChildUnregistered,
    /// [`HubEvent::ChildArrived`]: after a child moved in.
    ChildArrived,
    /// [`HubEvent::StartsForwarded`]: after starts were sent on to their owner.
    StartsForwarded,
    /// [`HubEvent::RedistributionStarted`]: before this node's children move away.
    RedistributionStarted,
    /// [`HubEvent::RedistributionCompleted`]: after they moved.
    RedistributionCompleted,
    /// [`HubEvent::ShuttingDown`]: before this hub's graceful shutdown.
    ShuttingDown,
    /// [`HubEvent::MigrationDeferred`]: moves out of this node were deferred.
    MigrationDeferred,
    /// [`HubEvent::NodeUnreachable`]: a member is no longer heard (before it is downed
    /// and leaves).
    NodeUnreachable,
    /// [`HubEvent::NodeReachable`]: an unreachable member is heard again.
    NodeReachable,
}

impl HookPoint {
    /// Every hook point.
    pub const ALL: &'static [HookPoint] = &[
        HookPoint::NodeJoined,
        HookPoint::NodeLeft,
        HookPoint::ChildStarted,
        HookPoint::ChildStopped,
        HookPoint::ChildRestarted,
        HookPoint::ChildMigrated,
        HookPoint::MigrationFailed,
        HookPoint::DrainCompleted,
        HookPoint::ChildDown,
        HookPoint::PrimaryPromoted,
        HookPoint::ReplicaAdded,
        HookPoint::ReplicaRemoved,
        HookPoint::StandbyStarted,
        HookPoint::StandbyEnded,
        HookPoint::ChildLost,
        HookPoint::NodesDowned,
        HookPoint::QuorumLost,
        HookPoint::QuorumRegained,
        HookPoint::Rejoined,
        HookPoint::DuplicateResolved,
        HookPoint::DuplicateMerged,
        HookPoint::Unauthenticated,
        HookPoint::HookPanicked,
        HookPoint::ChildRegistered,
        HookPoint::ChildUnregistered,
        HookPoint::ChildArrived,
        HookPoint::StartsForwarded,
        HookPoint::RedistributionStarted,
        HookPoint::RedistributionCompleted,
        HookPoint::ShuttingDown,
        HookPoint::MigrationDeferred,
        HookPoint::NodeUnreachable,
        HookPoint::NodeReachable,
    ];
}

impl HubEvent {
    /// The hook point this event runs the handlers of.
    pub fn point(&self) -> HookPoint {
        match self {
            HubEvent::NodeJoined { .. } => HookPoint::NodeJoined,
            HubEvent::NodeLeft { .. } => HookPoint::NodeLeft,
            HubEvent::ChildStarted { .. } => HookPoint::ChildStarted,
            HubEvent::ChildStopped { .. } => HookPoint::ChildStopped,
            HubEvent::ChildRestarted { .. } => HookPoint::ChildRestarted,
            HubEvent::ChildMigrated { .. } => HookPoint::ChildMigrated,
            HubEvent::MigrationFailed { .. } => HookPoint::MigrationFailed,
            HubEvent::DrainCompleted { .. } => HookPoint::DrainCompleted,
            HubEvent::ChildDown { .. } => HookPoint::ChildDown,
            HubEvent::PrimaryPromoted { .. } => HookPoint::PrimaryPromoted,
            HubEvent::ReplicaAdded { .. } => HookPoint::ReplicaAdded,
            HubEvent::ReplicaRemoved { .. } => HookPoint::ReplicaRemoved,
            HubEvent::StandbyStarted { .. } => HookPoint::StandbyStarted,
            HubEvent::StandbyEnded { .. } => HookPoint::StandbyEnded,
            HubEvent::ChildLost { .. } => HookPoint::ChildLost,
            HubEvent::NodesDowned { .. } => HookPoint::NodesDowned,
            HubEvent::QuorumLost { .. } => HookPoint::QuorumLost,
            HubEvent::QuorumRegained { .. } => HookPoint::QuorumRegained,
            HubEvent::Rejoined { .. } => HookPoint::Rejoined,
            HubEvent::DuplicateResolved { .. } => HookPoint::DuplicateResolved,
            HubEvent::DuplicateMerged { .. } => HookPoint::DuplicateMerged,
            HubEvent::Unauthenticated { .. } => HookPoint::Unauthenticated,
            HubEvent::HookPanicked { .. } => HookPoint::HookPanicked,
            HubEvent::ChildRegistered { .. } => HookPoint::ChildRegistered,
            HubEvent::ChildUnregistered { .. } => HookPoint::ChildUnregistered,
            HubEvent::ChildArrived { .. } => HookPoint::ChildArrived,
            HubEvent::StartsForwarded { .. } => HookPoint::StartsForwarded,
            HubEvent::RedistributionStarted { .. } => HookPoint::RedistributionStarted,
            HubEvent::RedistributionCompleted { .. } => HookPoint::RedistributionCompleted,
            HubEvent::ShuttingDown { .. } => HookPoint::ShuttingDown,
            HubEvent::MigrationDeferred { .. } => HookPoint::MigrationDeferred,
            HubEvent::NodeUnreachable { .. } => HookPoint::NodeUnreachable,
            HubEvent::NodeReachable { .. } => HookPoint::NodeReachable,
        }
    }
}

/// A registered handler, to cancel it with ([`Hooks::cancel`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HookId(u64);

impl std::fmt::Display for HookId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "hook#{}", self.0)
    }
}

/// A handler that ran longer than this is logged (it delayed the handlers after it).
pub const SLOW_HOOK: Duration = Duration::from_millis(100);

type HandlerFn = dyn Fn(&HubEvent) + Send + Sync;

/// A before-start handler, its component type erased: `Err` refuses the start.
type BeforeFn =
    dyn Fn(&str, &mut dyn std::any::Any, &mut crate::Metadata) -> Result<(), String> + Send + Sync;

/// A new child about to start, as a before-start handler sees it
/// ([`Hooks::before_start`]): its id, and its start state and metadata to read or
/// change.
#[derive(Debug)]
pub struct BeforeStart<'a, T> {
    id: &'a str,
    state: &'a mut T,
    metadata: &'a mut crate::Metadata,
}

impl<T> BeforeStart<'_, T> {
    /// The id being started.
    pub fn id(&self) -> &str {
        self.id
    }

    /// The start state, to read or change (the child starts with what it is after the
    /// last handler).
    pub fn state(&mut self) -> &mut T {
        self.state
    }

    /// Its metadata and tags, to read or change: what the start's options gave
    /// ([`StartOptions::metadata`](crate::StartOptions::metadata)), as the handlers
    /// before this one left it. Over [`MAX_METADATA`](crate::MAX_METADATA) encoded
    /// after the last handler, the start fails.
    pub fn metadata(&mut self) -> &mut crate::Metadata {
        self.metadata
    }
}

type StopFn = dyn Fn(&str) -> Result<(), String> + Send + Sync;

type MoveFn = dyn Fn(&MoveRequest<'_>) -> MoveConsent + Send + Sync;

/// A handler that runs on the path of what it is asked about (a start, a stop, a
/// move), by priority.
struct Guard<F: ?Sized> {
    id: HookId,
    priority: i32,
    f: Arc<F>,
}

/// A handler in a priority list.
trait Ranked {
    fn id(&self) -> HookId;
    fn priority(&self) -> i32;
}

impl<F: ?Sized> Ranked for Guard<F> {
    fn id(&self) -> HookId {
        self.id
    }
    fn priority(&self) -> i32 {
        self.priority
    }
}

impl Ranked for Handler {
    fn id(&self) -> HookId {
        self.id
    }
    fn priority(&self) -> i32 {
        self.priority
    }
}

/// Handlers in the order they run (copied on change: a run reads a snapshot).
type Ranking<E> = Arc<[Arc<E>]>;

/// `list` with `handler` after those of its priority and higher (equal priorities
/// run in the order registered).
fn ranked_with<E: Ranked>(list: Option<&Ranking<E>>, handler: E) -> Ranking<E> {
    let mut v = list.map(|l| l.to_vec()).unwrap_or_default();
    let at = v.partition_point(|h| h.priority() >= handler.priority());
    v.insert(at, Arc::new(handler));
    v.into()
}

/// Takes handler `id` out of `list`; the handler, if it was there.
fn take_ranked<E: Ranked>(list: &mut Ranking<E>, id: HookId) -> Option<Arc<E>> {
    let i = list.iter().position(|h| h.id() == id)?;
    let mut v = list.to_vec();
    let taken = v.remove(i);
    *list = v.into();
    Some(taken)
}

/// A move about to begin, as a before-move handler sees it
/// ([`Hooks::before_move`]).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct MoveRequest<'a> {
    /// The child.
    pub id: &'a str,
    /// Its component type's wire name.
    pub type_name: &'a str,
    /// The node it would move to.
    pub to: crate::NodeId,
}

/// What a before-move handler says of a move ([`Hooks::before_move`]): ProcessHub's
/// migration consent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MoveConsent {
    /// It may move now.
    Ready,
    /// Not yet (it is finishing something): asked again in a moment, until it says
    /// `Ready` or [`HubBuilder::max_move_deferral`](crate::HubBuilder::max_move_deferral)
    /// passed, when the move goes ahead anyway. The child serves calls meanwhile.
    Defer,
}

/// How often a deferred move asks its handlers again.
pub const MOVE_CONSENT_POLL: Duration = Duration::from_millis(20);

struct Handler {
    id: HookId,
    priority: i32,
    f: Arc<HandlerFn>,
    /// Cancelled: it runs no more, even for an event already being handled.
    cancelled: AtomicBool,
}

/// The hook handlers of one hub, and its hook thread.
pub(crate) struct Registry {
    /// Per point, its handlers in the order they run (copied on change).
    handlers: RwLock<HashMap<HookPoint, Ranking<Handler>>>,
    /// Per component type, its before-start handlers in the order they run.
    before: RwLock<HashMap<&'static str, Ranking<Guard<BeforeFn>>>>,
    /// The before-move handlers, in the order they run.
    moves: RwLock<Ranking<Guard<MoveFn>>>,
    /// Per component type, its before-stop handlers in the order they run.
    stops: RwLock<HashMap<&'static str, Ranking<Guard<StopFn>>>>,
    /// How many handlers are registered (none: events are not queued).
    registered: AtomicUsize,
    next_id: AtomicU64,
    /// The hook thread's queue, made at the first registration.
    queue: Mutex<Option<mpsc::Sender<HubEvent>>>,
    /// Events queued and not yet handled.
    queued: AtomicUsize,
    /// Whether a handler of the registry points is registered (the engine records
    /// registry changes only then).
    registry_points: AtomicBool,
    /// Where `HookPanicked` is reported to subscribers.
    events: broadcast::Sender<HubEvent>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("registered", &self.registered.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Registry {
    fn new(events: broadcast::Sender<HubEvent>) -> Arc<Self> {
        Arc::new(Self {
            handlers: RwLock::new(HashMap::new()),
            before: RwLock::new(HashMap::new()),
            moves: RwLock::new(Arc::from(Vec::new())),
            stops: RwLock::new(HashMap::new()),
            registered: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            queue: Mutex::new(None),
            queued: AtomicUsize::new(0),
            registry_points: AtomicBool::new(false),
            events,
        })
    }

    /// Notes whether `handlers` has any for the registry points.
    fn note_registry_points(&self, handlers: &HashMap<HookPoint, Ranking<Handler>>) {
        let any = [HookPoint::ChildRegistered, HookPoint::ChildUnregistered]
            .iter()
            .any(|p| handlers.get(p).is_some_and(|l| !l.is_empty()));
        self.registry_points.store(any, Ordering::Release);
    }

    /// Queues `event` for the handlers, if any are registered.
    fn deliver(&self, event: &HubEvent) {
        if self.registered.load(Ordering::Acquire) == 0 {
            return;
        }
        if let Some(queue) = self.queue.lock().unwrap().as_ref() {
            if queue.send(event.clone()).is_ok() {
                self.queued.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Runs the handlers of `event`'s point, in order, each caught.
    fn run(&self, event: &HubEvent) {
        let point = event.point();
        let Some(handlers) = self.handlers.read().unwrap().get(&point).cloned() else {
            return;
        };
        for h in handlers.iter() {
            if h.cancelled.load(Ordering::Acquire) {
                continue;
            }
            let began = Instant::now();
            let ran = std::panic::catch_unwind(AssertUnwindSafe(|| (h.f)(event)));
            let took = began.elapsed();
            if took > SLOW_HOOK {
                tracing::warn!(hook = %h.id, ?point, ?took, "a slow hook handler delayed the ones after it");
            }
            if let Err(panic) = ran {
                let message = crate::child::component::panic_message(&*panic);
                tracing::error!(hook = %h.id, ?point, "a hook handler panicked: {message}");
                if point != HookPoint::HookPanicked {
                    let reported = HubEvent::HookPanicked {
                        point,
                        hook: h.id,
                        message,
                    };
                    self.deliver(&reported);
                    let _ = self.events.send(reported);
                }
            }
        }
    }

    /// The hook thread's queue, started with the thread if it is not yet.
    fn start_thread(self: &Arc<Self>) {
        let mut queue = self.queue.lock().unwrap();
        if queue.is_some() {
            return;
        }
        let (tx, rx) = mpsc::channel::<HubEvent>();
        let registry: Weak<Registry> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("processhub-hooks".into())
            .spawn(move || {
                // Ends when the hub is gone (the queue's sender with it).
                while let Ok(event) = rx.recv() {
                    let Some(registry) = registry.upgrade() else {
                        return;
                    };
                    registry.run(&event);
                    registry.queued.fetch_sub(1, Ordering::Relaxed);
                }
            });
        match spawned {
            Ok(_) => *queue = Some(tx),
            Err(e) => tracing::error!("could not start the hook thread: {e}"),
        }
    }
}

/// The hook handlers of a hub: [`Hub::hooks`](crate::Hub::hooks). Cheap to clone.
///
/// ```
/// # async fn run() -> Result<(), processhub::HubError> {
/// use processhub::{Hub, HookPoint, HubEvent};
///
/// let hub = Hub::builder("docs").start().await?;
/// let id = hub.hooks().register(HookPoint::ChildStarted, 10, |event| {
///     if let HubEvent::ChildStarted { id, .. } = event {
///         println!("started {id}");
///     }
/// });
/// hub.hooks().cancel(id);
/// # hub.shutdown().await
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Hooks {
    registry: Arc<Registry>,
}

impl Hooks {
    /// Runs `handler` for every event of `point` from now on, before the handlers of
    /// lower `priority` (equal priorities: in the order registered). It runs on the
    /// hub's hook thread, one event at a time, in the order the hub emitted them: it
    /// may block or take long (it delays only the handlers after it, and a run over
    /// [`SLOW_HOOK`] is logged), and a panic in it is caught and reported
    /// ([`HubEvent::HookPanicked`]).
    pub fn register(
        &self,
        point: HookPoint,
        priority: i32,
        handler: impl Fn(&HubEvent) + Send + Sync + 'static,
    ) -> HookId {
        let r = &self.registry;
        r.start_thread();
        let id = HookId(r.next_id.fetch_add(1, Ordering::Relaxed));
        let handler = Handler {
            id,
            priority,
            f: Arc::new(handler),
            cancelled: AtomicBool::new(false),
        };
        let mut handlers = r.handlers.write().unwrap();
        let list = ranked_with(handlers.get(&point), handler);
        handlers.insert(point, list);
        r.registered.fetch_add(1, Ordering::Release);
        r.note_registry_points(&handlers);
        id
    }

    /// Runs `handler` before every new start of a `T` asked of this hub (by
    /// `T::start` or `T::start_many` with this hub), from now on, before the handlers
    /// of lower `priority`: it may change the start state
    /// ([`BeforeStart::state`]), or refuse the start with a reason, which the caller
    /// gets as [`StartError::Refused`](crate::StartError::Refused) (nothing starts,
    /// and no later handler runs). It runs on the caller's task, before the start is
    /// placed or sent: it holds up that start alone (keep it short: it is on the
    /// start's path), never a call or another node. A handler that panics refuses the
    /// start (a check that failed lets nothing through), reported as
    /// [`HubEvent::HookPanicked`] under [`HookPoint::ChildStarted`]. Moves and restarts
    /// of a child already started do not run it.
    pub fn before_start<T: crate::child::component::Component>(
        &self,
        priority: i32,
        handler: impl Fn(&mut BeforeStart<'_, T>) -> Result<(), String> + Send + Sync + 'static,
    ) -> HookId {
        let r = &self.registry;
        let id = HookId(r.next_id.fetch_add(1, Ordering::Relaxed));
        let f: Arc<BeforeFn> = Arc::new(
            move |child: &str, state: &mut dyn std::any::Any, metadata: &mut crate::Metadata| {
                match state.downcast_mut::<T>() {
                    Some(state) => handler(&mut BeforeStart {
                        id: child,
                        state,
                        metadata,
                    }),
                    None => Ok(()),
                }
            },
        );
        let mut before = r.before.write().unwrap();
        let list = ranked_with(before.get(T::TYPE_NAME), Guard { id, priority, f });
        before.insert(T::TYPE_NAME, list);
        id
    }

    /// Asks `handler` before each of this hub's children moves to another node (a
    /// join, a drain, a shutdown), before the handlers of lower `priority`: it may let
    /// it go ([`MoveConsent::Ready`]) or hold it here for a while
    /// ([`MoveConsent::Defer`]: asked again every [`MOVE_CONSENT_POLL`], until every
    /// handler says `Ready` or [`HubBuilder::max_move_deferral`] passed; the child
    /// serves calls meanwhile, and the others move without it). It runs on the move's
    /// task, before anything is frozen: keep it short (a flag to read). A handler that panics counts as `Ready`, and is reported as
    /// [`HubEvent::HookPanicked`] under [`HookPoint::ChildMigrated`]. Restarts after a
    /// node death and promotions are not moves: they do not ask.
    ///
    /// [`HubBuilder::max_move_deferral`]: crate::HubBuilder::max_move_deferral
    pub fn before_move(
        &self,
        priority: i32,
        handler: impl Fn(&MoveRequest<'_>) -> MoveConsent + Send + Sync + 'static,
    ) -> HookId {
        let r = &self.registry;
        let id = HookId(r.next_id.fetch_add(1, Ordering::Relaxed));
        let f: Arc<MoveFn> = Arc::new(handler);
        let mut moves = r.moves.write().unwrap();
        *moves = ranked_with(Some(&moves), Guard { id, priority, f });
        id
    }

    /// Runs `handler` before every stop of a `T` asked of this hub (`T::stop` with this
    /// hub), from now on, before the handlers of lower `priority`: it gets the id and
    /// may refuse the stop with a reason, which the caller gets as
    /// [`StopError::Refused`](crate::StopError::Refused) (nothing stops, and no later
    /// handler runs). It runs on the caller's task before the stop is sent: it holds up
    /// that stop alone (keep it short). A handler that panics refuses the stop, reported
    /// as [`HubEvent::HookPanicked`] under [`HookPoint::ChildStopped`]. A node's
    /// shutdown, a `stay_down` child's node dying and a duplicate's resolution are not
    /// stops asked by a caller: they do not run it.
    pub fn before_stop<T: crate::child::component::Component>(
        &self,
        priority: i32,
        handler: impl Fn(&str) -> Result<(), String> + Send + Sync + 'static,
    ) -> HookId {
        let r = &self.registry;
        let id = HookId(r.next_id.fetch_add(1, Ordering::Relaxed));
        let f: Arc<StopFn> = Arc::new(handler);
        let mut stops = r.stops.write().unwrap();
        let list = ranked_with(stops.get(T::TYPE_NAME), Guard { id, priority, f });
        stops.insert(T::TYPE_NAME, list);
        id
    }

    /// Cancels a handler: it runs for no event from now on (nor for the rest of an
    /// event being handled). Whether it was registered.
    pub fn cancel(&self, id: HookId) -> bool {
        let r = &self.registry;
        if r.stops
            .write()
            .unwrap()
            .values_mut()
            .any(|l| take_ranked(l, id).is_some())
            || take_ranked(&mut r.moves.write().unwrap(), id).is_some()
            || r.before
                .write()
                .unwrap()
                .values_mut()
                .any(|l| take_ranked(l, id).is_some())
        {
            return true;
        }
        let mut handlers = r.handlers.write().unwrap();
        let Some(h) = handlers.values_mut().find_map(|l| take_ranked(l, id)) else {
            return false;
        };
        h.cancelled.store(true, Ordering::Release);
        r.registered.fetch_sub(1, Ordering::Release);
        r.note_registry_points(&handlers);
        true
    }
}

/// Where a hub's events go: its subscribers ([`Hub::events`](crate::Hub::events)) and
/// its hook handlers.
#[derive(Clone, Debug)]
pub(crate) struct Events {
    tx: broadcast::Sender<HubEvent>,
    hooks: Arc<Registry>,
    telemetry: Arc<crate::telemetry::Telemetry>,
}

impl Events {
    /// Events for subscribers that may lag by up to `capacity` events, and for hook
    /// handlers (which never lag), counted by `telemetry`.
    pub(crate) fn new(capacity: usize, telemetry: crate::telemetry::Telemetry) -> Self {
        let (tx, _) = broadcast::channel(capacity);
        let hooks = Registry::new(tx.clone());
        Self {
            tx,
            hooks,
            telemetry: Arc::new(telemetry),
        }
    }

    /// The hub's metrics and recent events.
    pub(crate) fn telemetry(&self) -> &crate::telemetry::Telemetry {
        &self.telemetry
    }

    /// Events queued for the hook handlers and not yet handled.
    pub(crate) fn hook_queue_depth(&self) -> usize {
        self.hooks.queued.load(Ordering::Relaxed)
    }

    /// Reports `event` to the hook handlers and the subscribers.
    pub(crate) fn send(&self, event: HubEvent) {
        self.telemetry.event(&event);
        self.hooks.deliver(&event);
        let _ = self.tx.send(event);
    }

    /// A new subscriber.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<HubEvent> {
        self.tx.subscribe()
    }

    /// Whether a handler of [`HookPoint::ChildRegistered`] or
    /// [`HookPoint::ChildUnregistered`] is registered.
    pub(crate) fn wants_registry_changes(&self) -> bool {
        self.hooks.registry_points.load(Ordering::Acquire)
    }

    /// Runs the before-stop handlers of `type_name` on `id`, in order: the first
    /// refusal (or panic) is the stop's answer.
    pub(crate) fn before_stop(&self, type_name: &str, id: &str) -> Result<(), String> {
        let list = self.hooks.stops.read().unwrap().get(type_name).cloned();
        self.first_refusal(list, HookPoint::ChildStopped, id, |f| f(id))
    }

    /// Runs the guards of `list` in order, each caught: the first refusal, or a panic
    /// (reported under `point`, as a refusal: a check that failed lets nothing
    /// through), is the answer.
    fn first_refusal<F: ?Sized>(
        &self,
        list: Option<Ranking<Guard<F>>>,
        point: HookPoint,
        id: &str,
        mut run: impl FnMut(&F) -> Result<(), String>,
    ) -> Result<(), String> {
        for h in list.iter().flat_map(|l| l.iter()) {
            match std::panic::catch_unwind(AssertUnwindSafe(|| run(&h.f))) {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => return Err(reason),
                Err(panic) => {
                    let message = crate::child::component::panic_message(&*panic);
                    tracing::error!(hook = %h.id, %id, ?point, "a hook guard panicked: {message}");
                    self.send(HubEvent::HookPanicked {
                        point,
                        hook: h.id,
                        message: message.clone(),
                    });
                    let what = match point {
                        HookPoint::ChildStopped => "before-stop",
                        _ => "before-start",
                    };
                    return Err(format!("a {what} hook panicked: {message}"));
                }
            }
        }
        Ok(())
    }

    /// Whether any before-move handler is registered.
    pub(crate) fn has_before_move(&self) -> bool {
        !self.hooks.moves.read().unwrap().is_empty()
    }

    /// What the before-move handlers say of `request`: `Defer` if any does (the first
    /// that does ends the round).
    pub(crate) fn consent(&self, request: &MoveRequest<'_>) -> MoveConsent {
        let list = self.hooks.moves.read().unwrap().clone();
        for h in list.iter() {
            match std::panic::catch_unwind(AssertUnwindSafe(|| (h.f)(request))) {
                Ok(MoveConsent::Ready) => {}
                Ok(MoveConsent::Defer) => return MoveConsent::Defer,
                Err(panic) => {
                    let message = crate::child::component::panic_message(&*panic);
                    tracing::error!(hook = %h.id, id = %request.id, "a before-move hook panicked: {message}");
                    self.send(HubEvent::HookPanicked {
                        point: HookPoint::ChildMigrated,
                        hook: h.id,
                        message,
                    });
                }
            }
        }
        MoveConsent::Ready
    }

    /// Whether any before-start handler is registered for `type_name`.
    pub(crate) fn has_before_start(&self, type_name: &str) -> bool {
        self.hooks.before.read().unwrap().contains_key(type_name)
    }

    /// Runs the before-start handlers of `type_name` on the new child `id` and its
    /// `state`, in order: the first refusal (or panic) is the start's answer.
    pub(crate) fn before_start(
        &self,
        type_name: &str,
        id: &str,
        state: &mut dyn std::any::Any,
        metadata: &mut crate::Metadata,
    ) -> Result<(), String> {
        let list = self.hooks.before.read().unwrap().get(type_name).cloned();
        self.first_refusal(list, HookPoint::ChildStarted, id, |f| {
            f(id, &mut *state, &mut *metadata)
        })
    }

    /// The hook handlers.
    pub(crate) fn hooks(&self) -> Hooks {
        Hooks {
            registry: Arc::clone(&self.hooks),
        }
    }
}
