//! The sans-IO core: every decision a node makes, and the data it decides over.
//!
//! Nothing here awaits, spawns, reads a clock or opens a socket: events go in, output
//! comes out, and the hub (`crate::hub`) executes it. That keeps every decision testable
//! exactly, and lets the same engine run over TCP or an in-memory network.
//!
//! ```text
//!  event (start, push, gossip, tick, move outcome, shipment) ──► engine::Engine
//!        │  reads/updates: registry, view (members, ring), local children, copies
//!        ▼
//!  Output { pushes, effects, events }  ──► the hub runs it
//! ```
//!
//! `entry` (a registry entry, its flags, the tie-break), `registry` (every child, and
//! the push that carries changes), `ring` (consistent hashing), `view` (members),
//! `placement` (the strategies), `planner` (the membership plan), `engine` (the rest of
//! the decisions, with their tests), `item` (what a start carries), `recent` (the table
//! of identified writes), `held` (writes their standbys acknowledge to the caller),
//! `staging` (transfers in parts).

pub(crate) mod downing;
pub(crate) mod engine;
pub(crate) mod entry;
pub(crate) mod held;
pub(crate) mod item;
pub(crate) mod placement;
pub(crate) mod planner;
pub(crate) mod recent;
pub(crate) mod registry;
pub(crate) mod ring;
pub(crate) mod staging;
pub(crate) mod view;
