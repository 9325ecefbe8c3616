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
//! The parts, each its own module: `core` (ring, registry, planner: sans-IO),
//! `transport` (TCP between nodes), `membership` (chitchat gossip and failure
//! detection), `hub` (executes plans, serves requests), `component` (kameo actors).

// Generated code names `::processhub`; this lets the crate's own tests use the macro.
#[cfg(test)]
extern crate self as processhub;

mod component;
mod core;
mod error;
mod events;
mod handle;
mod hub;
mod membership;
mod node;
#[cfg(test)]
mod tests;
mod transport;
mod wire;

pub use crate::error::{CallError, HubError, StartError, StopError};
pub use crate::events::{HubEvent, RestartReason};
pub use crate::hub::{ChildInfo, Hub, HubBuilder, DEFAULT_CALL_TIMEOUT, DEFAULT_MAX_FRAME};
pub use crate::node::NodeId;
pub use processhub_macros::distributed;

/// What a component author needs: `use processhub::prelude::*;`.
pub mod prelude {
    pub use crate::{
        distributed, CallError, ChildInfo, Hub, HubError, HubEvent, NodeId, StartError, StopError,
    };
    pub use serde::{Deserialize, Serialize};
}

/// What generated code uses. Not a public API: it changes without notice.
#[doc(hidden)]
pub mod __private {
    pub use crate::component::{
        dispatch_one, Component, ComponentActor, ComponentVTable, Dispatch, COMPONENTS,
    };
    pub use crate::handle::{start, start_many, stop, HandleCore};
    pub use futures_util::future::BoxFuture;
    pub use kameo::actor::ActorRef;
    pub use kameo::message::{Context, Message};
    pub use linkme;
    pub use serde;
    pub use std::boxed::Box;
    pub use std::string::String;
    pub use std::vec::Vec;
}
