//! Per-id start options: pinning, and what happens to a child when its node dies.

use crate::child::component::Component;
use crate::core::entry::Flags;
pub use crate::core::entry::{OnNodeDeath, Role};
use crate::metadata::Metadata;
use crate::node::NodeId;

/// Options of one start, over the component type's defaults (`#[distributed(pinned)]`,
/// `#[distributed(on_node_death = "...")]`), and the child's metadata. Used with the
/// generated `start_with` and `start_many_with`.
///
/// ```
/// # use processhub::{Metadata, OnNodeDeath, StartOptions};
/// let options = StartOptions::new()
///     .pinned(true)
///     .on_node_death(OnNodeDeath::StayDown)
///     .metadata(Metadata::new().with("owner", "billing").tagged("region:eu"));
/// # let _ = options;
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StartOptions {
    pinned: Option<bool>,
    on_node_death: Option<OnNodeDeath>,
    node: Option<NodeId>,
    metadata: Metadata,
}

impl StartOptions {
    /// The type's defaults.
    pub const fn new() -> Self {
        Self {
            pinned: None,
            on_node_death: None,
            node: None,
            metadata: Metadata::new(),
        }
    }

    /// The child's metadata and tags (with `start_many_with`: every child's), kept in
    /// its registry entry on every node: see [`Metadata`]. Before-start hooks may
    /// change it per child.
    pub fn metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// The metadata given.
    pub(crate) fn meta(&self) -> &Metadata {
        &self.metadata
    }

    /// The node to start on, for a type with `distribution = "guided"` (for other types
    /// the start fails with [`crate::StartError::Placement`]). A node that is not a live
    /// member taking new children is an error too.
    pub const fn node(mut self, node: NodeId) -> Self {
        self.node = Some(node);
        self
    }

    /// The node named, if any.
    pub(crate) fn named(&self) -> Option<NodeId> {
        self.node
    }

    /// Whether this child stays on the node it starts on while that node lives: joins
    /// and drains do not move it. A graceful shutdown of its node hands it over (or
    /// stops it, with [`OnNodeDeath::StayDown`]).
    pub const fn pinned(mut self, pinned: bool) -> Self {
        self.pinned = Some(pinned);
        self
    }

    /// What happens to this child when its node dies.
    pub const fn on_node_death(mut self, policy: OnNodeDeath) -> Self {
        self.on_node_death = Some(policy);
        self
    }

    /// The flags a child of type `T` started with these options carries.
    pub(crate) fn flags<T: Component>(&self) -> Flags {
        // Placed once (guided, local, ...): kept on its node while that node lives.
        let pinned = self.pinned.unwrap_or(T::PINNED) || T::DISTRIBUTION.placed_once();
        let stay_down = self.on_node_death.unwrap_or(T::ON_NODE_DEATH) == OnNodeDeath::StayDown;
        Flags::new(pinned, stay_down).with_distribution(T::DISTRIBUTION)
    }
}
