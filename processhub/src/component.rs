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
use kameo::actor::{Actor, ActorRef, Spawn};
use kameo::error::SendError;
use kameo::message::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::error::CallError;
use crate::events::{HubEvent, RestartReason};
use crate::NodeId;

/// A component type: implemented by `#[distributed]` on a struct.
pub trait Component: Serialize + DeserializeOwned + Send + 'static {
    /// The type's name on the wire: the same in every binary of the cluster.
    const TYPE_NAME: &'static str;
}

/// Remote dispatch by method name: implemented by `#[distributed]` on an impl block.
pub trait Dispatch: Component {
    /// Decodes `args` for `method` (now), runs it on the actor and encodes the reply
    /// (in the returned future).
    fn dispatch(
        actor: ActorRef<ComponentActor<Self>>,
        method: &str,
        args: &[u8],
    ) -> BoxFuture<'static, Result<Vec<u8>, CallError>>;
}

/// The kameo actor that runs one child.
pub struct ComponentActor<T> {
    state: T,
    id: Arc<str>,
    node: NodeId,
    epoch: u64,
    events: broadcast::Sender<HubEvent>,
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

/// Handles one remote call of method message `M` (for generated code): decodes the
/// arguments at once, asks the actor and encodes the reply in the returned future.
#[doc(hidden)]
pub fn dispatch_one<T, M, R>(
    actor: ActorRef<ComponentActor<T>>,
    args: &[u8],
) -> BoxFuture<'static, Result<Vec<u8>, CallError>>
where
    T: Component,
    M: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    ComponentActor<T>: Message<M, Reply = Result<R, CallError>>,
{
    let msg: M = match postcard::from_bytes(args) {
        Ok(m) => m,
        Err(e) => {
            let err = CallError::Codec {
                message: format!("arguments: {e}"),
            };
            return Box::pin(async move { Err(err) });
        }
    };
    Box::pin(async move {
        let reply = ask(&actor, msg).await?;
        postcard::to_allocvec(&reply).map_err(|e| CallError::Codec {
            message: format!("reply: {e}"),
        })
    })
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
    /// The `ActorRef<ComponentActor<T>>`.
    fn actor_any(&self) -> &dyn Any;
    fn call(&self, method: &str, args: &[u8]) -> BoxFuture<'static, Result<Vec<u8>, CallError>>;
    fn stop(&self) -> BoxFuture<'static, ()>;
}

struct Child<T: Component> {
    actor: ActorRef<ComponentActor<T>>,
}

impl<T: Dispatch> ErasedChild for Child<T> {
    fn type_name(&self) -> &'static str {
        T::TYPE_NAME
    }

    fn actor_any(&self) -> &dyn Any {
        &self.actor
    }

    fn call(&self, method: &str, args: &[u8]) -> BoxFuture<'static, Result<Vec<u8>, CallError>> {
        T::dispatch(self.actor.clone(), method, args)
    }

    fn stop(&self) -> BoxFuture<'static, ()> {
        let actor = self.actor.clone();
        Box::pin(async move {
            let _ = actor.stop_gracefully().await;
            actor.wait_for_shutdown().await;
        })
    }
}

/// What the hub needs to run a child it was handed.
#[derive(Debug)]
pub(crate) struct SpawnArgs {
    pub(crate) id: Arc<str>,
    pub(crate) node: NodeId,
    pub(crate) epoch: u64,
    pub(crate) events: broadcast::Sender<HubEvent>,
}

/// Spawns a typed child.
pub(crate) fn spawn_typed<T: Dispatch>(state: T, args: SpawnArgs) -> Arc<dyn ErasedChild> {
    let actor = ComponentActor::spawn(ComponentActor {
        state,
        id: args.id,
        node: args.node,
        epoch: args.epoch,
        events: args.events,
    });
    Arc::new(Child { actor })
}

fn spawn_erased<T: Dispatch>(
    state: &[u8],
    args: SpawnArgs,
) -> Result<Arc<dyn ErasedChild>, String> {
    let state: T = postcard::from_bytes(state).map_err(|e| format!("start state: {e}"))?;
    Ok(spawn_typed(state, args))
}

/// Starts a child from its encoded state.
pub(crate) type SpawnFn = fn(&[u8], SpawnArgs) -> Result<Arc<dyn ErasedChild>, String>;

/// One component type, as the hub sees it.
#[doc(hidden)]
pub struct ComponentVTable {
    pub(crate) type_name: &'static str,
    pub(crate) spawn: SpawnFn,
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
        }
    }
}

/// Every component type linked into this binary.
#[doc(hidden)]
#[linkme::distributed_slice]
pub static COMPONENTS: [ComponentVTable];

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
