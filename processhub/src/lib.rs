//! processhub runs stateful components across a cluster of machines.
//!
//! Every node runs a [`Hub`]; hubs with the same hub id find each other and form a
//! cluster. `#[distributed]` on a struct and its impl block makes a component: each id
//! runs on its owner on a consistent-hash ring, answers calls from any node through a
//! typed handle, and is started again elsewhere when its node dies.
//!
//! ```no_run
//! use processhub::prelude::*;
//!
//! #[distributed]
//! #[derive(Default, Serialize, Deserialize)]
//! pub struct Tally { n: u64 }
//!
//! #[distributed]
//! impl Tally {
//!     pub fn add(&mut self, by: u64) -> u64 { self.n += by; self.n }
//!     pub fn get(&self) -> u64 { self.n }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let hub = Hub::builder("my-hub").listen("127.0.0.1:0").start().await?;
//! let t: TallyHandle = Tally::start(&hub, "user-42", Tally::default()).await?;
//! assert_eq!(t.add(5).await?, 5);
//! assert_eq!(Tally::handle(&hub, "user-42").get().await?, 5);
//! Tally::stop(&hub, "user-42").await?;
//! hub.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! The parts, each a folder, bottom to top (none imports from a layer above it):
//! `core` (every decision: ring, registry, planner, engine; sans-IO), `net` (frames,
//! connections, the TCP transport), `child` (the component contract, a child's life,
//! the type table), `hub` (runs the engine's output: builder, control loop, serving,
//! hand-over, replication, lifecycle, membership), `client` (what handles call).
//!
//! Around them: [`Hooks`] (handlers at every [`HookPoint`], before-start and
//! before-move hooks), [`Metadata`] and tags ([`Hub::query_tag`],
//! [`Hub::update_metadata`]), and telemetry: `tracing` spans with a trace id carried
//! across nodes ([`current_trace_id`]), metrics through the `metrics` facade, and, with
//! [`HubBuilder::admin_listen`], a Prometheus page and a live cluster page served by the
//! hub.

// Generated code names `::processhub`; this lets the crate's own tests (and the
// simulator's workload) use the macro.
#[cfg(any(test, feature = "sim"))]
extern crate self as processhub;

mod admin;
mod changes;
mod child;
mod client;
mod core;
mod error;
mod events;
mod explain;
#[cfg(any(test, feature = "fuzzing"))]
mod fuzz;
mod hooks;
mod hub;
mod metadata;
mod net;
mod node;
mod options;
pub mod placement;
#[cfg(test)]
mod seams;
#[cfg(feature = "sim")]
pub mod sim;
mod telemetry;
#[cfg(test)]
mod tests;
mod trace;

/// The fuzz targets, for a coverage-guided fuzzer's driver (`fuzz/afl`): not an API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod __fuzz {
    /// Runs every fuzz target on `data` (a panic is a finding).
    pub fn run(data: &[u8]) {
        crate::fuzz::run_once(data);
    }
}

pub use crate::child::component::{current_instance, Instance};
pub use crate::core::downing::PartitionTolerance;
pub use crate::error::{CallError, HubError, StartError, StopError};
pub use crate::events::{HubEvent, RestartReason};
pub use crate::explain::{Explanation, MembershipChange, PlannedMove};
pub use crate::hooks::{
    BeforeStart, HookId, HookPoint, Hooks, MoveConsent, MoveRequest, MOVE_CONSENT_POLL, SLOW_HOOK,
};
pub use crate::hub::{
    ChildInfo, DrainReport, Hub, HubBuilder, CLUSTER_KEY_ENV, DEFAULT_CALL_TIMEOUT,
    DEFAULT_HIBERNATE_AFTER, DEFAULT_MAX_FRAME, DEFAULT_MAX_IN_FLIGHT, MAX_ID_LEN, MIN_CLUSTER_KEY,
};
pub use crate::metadata::{Metadata, MAX_METADATA};
pub use crate::net::tls::{Tls, TlsError};
pub use crate::node::NodeId;
pub use crate::options::{OnNodeDeath, Role, StartOptions};
pub use crate::trace::current_trace_id;

/// Makes a struct and its impl block a distributed component.
///
/// Put `#[distributed]` on the struct that holds the component's state, and on its impl
/// block. The struct becomes a component type that any node of a hub can host; every
/// `pub` method of the impl block becomes a call that reaches the component wherever it
/// runs.
///
/// ```
/// use processhub::prelude::*;
///
/// #[distributed]
/// #[derive(Default, Serialize, Deserialize)]
/// pub struct Tally { n: u64 }
///
/// #[distributed]
/// impl Tally {
///     /// `&mut self`: a write.
///     pub fn add(&mut self, by: u64) -> u64 { self.n += by; self.n }
///     /// `&self`: a read. Methods may be `async`.
///     pub async fn get(&self) -> u64 { self.n }
///     /// Not a call: stays a plain method.
///     #[distributed(skip)]
///     pub fn peek(&self) -> u64 { self.n }
/// }
///
/// # async fn run(hub: Hub) -> Result<(), Box<dyn std::error::Error>> {
/// let t: TallyHandle = Tally::start(&hub, "user-42", Tally::default()).await?;
/// assert_eq!(t.add(2).await?, 2);
/// assert_eq!(Tally::handle(&hub, "user-42").get().await?, 2);
/// Tally::stop(&hub, "user-42").await?;
/// # Ok(()) }
/// ```
///
/// # On the struct
///
/// The struct must be `Serialize + Deserialize` (with `#[derive(Serialize, Deserialize)]`
/// from the prelude; no serde dependency of your own is needed), `Send` and `'static`,
/// and may have type parameters: every node starts a component by its type's name, so a
/// generic struct names the instantiations hubs run, each a component type of its own
/// (`#[distributed(instances(Log<u64>, Log<String>))]`, wire names `…::Log<u64>` and
/// `…::Log<String>`; its impl block is `impl<E: Clone + Serialize + DeserializeOwned +
/// Send + Sync + 'static> Log<E>`, and `Log::<u64>::start(..)` returns a
/// `LogHandle<u64>`). Its start state is
/// kept in every node's registry (to restart it if its node dies), so it may be at most
/// half the frame size (8 MiB by default); grow larger states with calls: a state of any
/// size moves, in parts. It gets:
///
/// | item | what it does |
/// |---|---|
/// | `struct TallyHandle` | the typed handle: `Clone + Send + Sync + Debug`, one async method per call, `id()` |
/// | `Tally::start(&hub, id, state)` | starts it on its owner node; `Err(AlreadyStarted { node })` if the id runs anywhere |
/// | `Tally::start_many(&hub, vec![(id, state), ...])` | many starts, batched per node; one result per item |
/// | `Tally::start_with(&hub, id, state, options)`, `Tally::start_many_with(..)` | the same, with [`StartOptions`] for these ids (pinned, [`OnNodeDeath`], the node of a `guided` type, [`Metadata`]) over the type's defaults |
/// | `Tally::start_on(&hub, id, state, node)` | with `distribution = "guided"` only: starts it on `node`; `Err(Placement)` if that is not a live member |
/// | `Tally::handle(&hub, id)` | a handle by id, from any node; nothing is checked until a call |
/// | `Tally::stop(&hub, id)` | stops it wherever it runs; `Err(NotFound)` at once if nothing runs there |
///
/// Options, as `#[distributed(option = value, ...)]` on the struct:
///
/// | option | value | default | meaning |
/// |---|---|---|---|
/// | `name` | a string | `module_path!()::Type` | the type's name on the wire; set it to keep a stable name across renames and rolling upgrades |
/// | `crate` | a path | `::processhub` | where processhub is, when it is re-exported under another name; write it on the impl block too (`#[distributed(crate = ::mylib::processhub)]`: the one option an impl block takes), and the expansion names no other path to processhub |
/// | `pinned` | (no value) | not pinned | the component stays on the node it started on while that node lives: a join or a drain does not move it; when its node leaves gracefully it is handed over (or stopped, with `on_node_death = "stay_down"`) |
/// | `replicas` | an integer from 1 to 255, or `"all"` | `1` | copies kept in step (`"all"`: one on every member of the hub): the primary and `replicas - 1` standbys on the next owners on the ring. Every write (`&mut self` method) sends the new state to the standbys before the caller gets its reply, so a write acknowledged to a caller survives the death of the primary's node: a standby takes over with it ([`HubEvent::PrimaryPromoted`]). Copies are re-made as nodes join, leave and die, so there are `replicas` of them whenever that many nodes are up; [`Hub::lookup`] names the standbys. A write in flight when the primary dies is retried on the promoted standby and applied once (`sync = "sync"`, active/passive) |
/// | `replication` | `"active_passive"` or `"active_active"` | `"active_passive"` | with `replicas`: `"active_passive"` runs one primary and keeps standbys in step; `"active_active"` runs every replica, each answering the calls made on its node (and those sent to it) on its own: writes are not shipped and copies diverge; a new replica starts from the primary's state, and when the primary's node dies or leaves a replica takes over as it is (instances are never handed over) |
/// | `reads` | `"primary"` or `"any"` | `"primary"` | with `replicas`: `"any"` lets a node holding a standby copy answer reads (`&self` methods) itself, without a network hop; the answer may miss the writes in flight at the primary |
/// | `sync` | `"sync"` or `"async"` | `"sync"` | with `replicas`: `"sync"` acknowledges a write once its standbys hold it; `"async"` ships the state after the reply: the writes of a short window (1 ms, [`HubBuilder::async_ship_window`]) in one shipment of the state as it is after them (faster; a crash may lose the last window's writes, never older ones) |
/// | `ship` | `"state"` or `"calls"` | `"state"` | with `replicas`, active/passive: what a write sends its standbys. `"state"` sends the whole new state (methods may be anything; the cost grows with the state). `"calls"` sends the write's call (its method and arguments), which the standby keeps beside its copy and replays, in order, on the copy's state when it is used (a promotion, a read with `reads = "any"`); the whole state still goes to a new standby, after a standby missed a shipment, and whenever the calls held since the last state would outgrow it (at most 1024 calls), so a copy costs at most about twice the state. For large states whose write methods are deterministic (the same state and arguments give the same state and reply: no clock, no randomness, nothing read from outside) |
/// | `on_node_death` | `"restart"` or `"stay_down"` | `"restart"` | when its node dies: `"restart"` starts it on its new ring owner from its start state; `"stay_down"` drops it from every registry and reports [`HubEvent::ChildDown`] on every hub (start it again to bring it back) |
/// | `distribution` | `"consistent_hash"`, `"guided"`, `"local"`, `"not_local"`, `"round_robin"`, `"every_node"` or `"bounded_load"` | `"consistent_hash"` | where its children run, and what happens to them when nodes join, leave and die: see [`placement`] for each. `"guided"` generates `Tally::start_on(&hub, id, state, node)`; `"every_node"` runs one instance on every member, each answering its own node (it stands for `replicas = "all", replication = "active_active"`) |
/// | `custom` | a path to a type implementing [`placement::Strategy`] and `Default` | — | places its children by that strategy instead of a built-in one |
/// | `instances` | `(Type<A>, Type<B>, ...)` | — | for a generic struct, and required there: the instantiations hubs run, each a component type named after its arguments (with `name = "log"`: `log<u64>`) |
/// | `migration` | `"hot"` or `"cold"` | `"hot"` | when the component moves (a join, a graceful shutdown, a drain): `"hot"` takes its latest state along, `"cold"` restarts it from its start state |
///
/// # On the impl block
///
/// Each `pub` method that is not `#[distributed(skip)]` becomes a call:
///
/// - it takes `&self` (a read) or `&mut self` (a write), never `self`;
/// - its arguments are owned values (`String`, not `&str`): they travel over the network;
///   arguments and the return value must be `Serialize + DeserializeOwned + Send`;
/// - it may be `async`;
/// - on the handle it returns `Result<Ret, CallError>`; a method returning `Result<T, E>`
///   gives `Result<Result<T, E>, CallError>`, so the component's own error is never mixed
///   with a transport error;
/// - a panic inside it reaches the caller as `CallError::Panicked`; the component goes on
///   with the state the panic left, and the hub emits `ChildRestarted`.
///
/// Private methods and `#[distributed(skip)]` methods stay local helpers.
///
/// # Hooks
///
/// A method of the impl block marked with one of these runs at that point of the
/// component's life; it is `fn name(&mut self)` and is not a call:
///
/// | attribute | runs |
/// |---|---|
/// | `#[on_start]` | when the component starts: `start`, a restart from its start state after its node died, a cold move. Not when it wakes from sleep, arrives in a hot move, or is promoted from a standby copy. A panic fails the start |
/// | `#[on_stop]` | when it is stopped for good: `Tally::stop`, or its node leaving with `pinned` and `on_node_death = "stay_down"`. Not when it sleeps, moves, or its node dies |
/// | `#[on_handover_out]` | before the state leaves this node in a hot move (to trim it, or to close what cannot travel) |
/// | `#[on_handover_in]` | on the new node when the state arrives, before the first call (to re-open resources) |
/// | `#[on_role_change]` | `fn name(&mut self, role: Role)`, for a replicated type: with [`Role::Primary`] when an instance starts as the primary (a start, a move's arrival, a promotion, an active replica promoted in place), with [`Role::Replica`] when an active/active replica starts. Passive standbys hold bytes, not instances: they get no call |
/// | `#[on_conflict]` | `fn name(&mut self, other: Self)`, under [`PartitionTolerance::Divergence`]: two instances of one id went on during a split; after the heal the one kept gets the state of the one dropped, to merge what it did (a CRDT's join, for example), before it serves its next call; then its standbys get the result. Reported as [`HubEvent::DuplicateMerged`]. Without it the dropped state is discarded (and still reported as [`HubEvent::DuplicateResolved`]) |
/// | `#[move_consent]` | `fn name(&self) -> MoveConsent`, asked before the component moves to another node (a join, a drain, a shutdown): [`MoveConsent::Defer`] keeps it here, serving, while it finishes something (reported as [`HubEvent::MigrationDeferred`]); it is asked again every [`MOVE_CONSENT_POLL`] until it says [`MoveConsent::Ready`] or the hub's [`max_move_deferral`](HubBuilder::max_move_deferral) passed, when it moves anyway (ProcessHub's migration consent). A panic counts as `Ready` |
///
/// A hook that panics fails the move; the component stays where it was, with its state.
///
/// # See expanded code
///
/// For the `Tally` above, roughly (names under `__private` are not a public API):
///
/// ```text
/// #[derive(Clone, Debug)]
/// pub struct TallyHandle { core: ::processhub::__private::HandleCore }
///
/// impl ::processhub::__private::Component for Tally {
///     const TYPE_NAME: &'static str = concat!(module_path!(), "::", "Tally");
/// }
/// #[linkme::distributed_slice(::processhub::__private::COMPONENTS)]
/// static COMPONENT: ComponentVTable = ComponentVTable::of::<Tally>();
/// impl Tally { pub async fn start(..); pub async fn start_many(..);
///              pub fn handle(..); pub async fn stop(..); }
///
/// pub struct __Tally_add(u64);                      // one message per call
/// impl Message<__Tally_add> for ComponentActor<Tally> {
///     type Reply = Result<u64, CallError>;
///     async fn handle(&mut self, msg, _) -> Self::Reply {
///         // runs `state.add(msg.0)`, a panic becomes CallError::Panicked
///     }
/// }
/// impl TallyHandle {
///     pub async fn add(&self, by: u64) -> Result<u64, CallError> {
///         self.core.call::<Tally, __Tally_add, u64>("add", false, __Tally_add(by)).await
///     }
/// }
/// impl Dispatch for Tally {              // remote calls, by method name
///     fn apply(actor, method: &str, args: &[u8]) -> impl Future<..> {
///         // decode the arguments, run `state.add(by)` as above, encode the reply
///         async move { match method { "add" => { .. }, .. } }
///     }
/// }
/// ```
pub use processhub_macros::distributed;

/// What a component author needs: `use processhub::prelude::*;`.
pub mod prelude {
    pub use crate::{
        distributed, CallError, ChildInfo, Hub, HubError, HubEvent, NodeId, OnNodeDeath,
        StartError, StartOptions, StopError,
    };
    // `DeserializeOwned`: the bound a generic component puts on its type parameters.
    pub use serde::{de::DeserializeOwned, Deserialize, Serialize};
}

/// What generated code uses. Not a public API: it changes without notice.
#[doc(hidden)]
pub mod __private {
    pub use crate::child::component::{
        decode_args, encode_reply, unknown_method, CallContext, Component, ComponentActor, Dispatch,
    };
    pub use crate::child::life::{Child, ChildRef};
    pub use crate::child::types::{ComponentVTable, COMPONENTS};
    pub use crate::client::call::HandleCore;
    pub use crate::client::start::{start, start_many};
    pub use crate::client::stop::stop;
    pub use crate::core::placement::custom_strategy;
    pub use futures_util::future::BoxFuture;
    pub use kameo::actor::ActorRef;
    pub use kameo::message::{Context, Message};
    pub use linkme;
    pub use serde;
    pub use std::boxed::Box;
    pub use std::string::String;
    pub use std::vec::Vec;
}
