//! The sans-IO core: ring, registry and the planner that turns a change into commands.
//!
//! Nothing here awaits, spawns, reads a clock or opens a socket: events go in, commands
//! come out, and the hub (`crate::hub`) executes them. That keeps placement and
//! rebalancing testable exactly.
//!
//! ```text
//!  membership change ──► plan_membership_change(view, registry, local) ──► [Command]
//!                                                   │
//!                                   hub executes:  StartLocal / MoveTo
//! ```

pub(crate) mod entry;
pub(crate) mod item;
pub(crate) mod placement;
pub(crate) mod planner;
pub(crate) mod recent;
pub(crate) mod registry;
pub(crate) mod ring;
pub(crate) mod staging;
