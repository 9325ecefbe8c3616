//! Distribution strategies: on which node a child starts, and where it goes when the
//! members change.
//!
//! A component type chooses one with `#[distributed(distribution = "...")]` (or
//! `custom = path::to::Strategy`). Every node computes placements the same way from the
//! same inputs (the members, the ring, the registry), so they agree without talking.
//!
//! | strategy | placed at start on | a node joins | its node leaves gracefully | its node dies |
//! |---|---|---|---|---|
//! | `consistent_hash` (default) | the ring owner of the id | moves (with its state) if the joiner owns it now | moves to its new ring owner | restarted on its new ring owner |
//! | `guided` | the node named at start (`start_on`, [`crate::StartOptions::node`]) | stays | moves to its ring owner | restarted on its ring owner |
//! | `local` | the node that starts it | stays | moves to its ring owner | restarted on its ring owner |
//! | `not_local` | the first node of the id's preference order that is not the starter (the starter itself in a one-node cluster) | stays | moves to its ring owner | restarted on its ring owner |
//! | `round_robin` | the member with the fewest children of the type, ties in turn | stays | moves to its ring owner | restarted on its ring owner |
//! | `every_node` | every member (one instance each, answering its own node's calls) | an instance starts there, from a copy of the primary's state | its instance stops | its instance is gone; another takes over as primary |
//! | `bounded_load` | the first node of the id's preference order under the cap ([`BOUND`] × the mean) | moves only what puts a node over the new cap | moves to the first node under the cap | restarted on the first node under the cap |
//! | `custom` | what [`Strategy::place`] says | moves where `place` says, if it says another node | moves where `place` says | restarted where `place` says |
//!
//! "Restarted" is from the start state, or from a standby's copy with `replicas = N`;
//! `on_node_death = "stay_down"` keeps a child of a dead node down whatever the strategy.
//! A node that drains takes no new child, and its children move as on a leave, but for
//! those placed once (`guided`, `local`, `not_local`, `round_robin`): they stay while
//! their node lives.

pub use crate::core::placement::{custom_strategy, Distribution, PlacementInput, Strategy, BOUND};
