//! Metadata updates: the owner of a child changes its entry's metadata and publishes
//! it; every other node answers where the owner is.

use super::{ChildHandle, Engine};
use crate::core::item::MetaOutcome;
use crate::metadata::Meta;

impl<C: ChildHandle> Engine<C> {
    /// Sets the metadata of `id` to `meta` if it runs here (not moving, not a replica),
    /// and publishes its entry; otherwise says where it runs, or that it does not.
    /// Refused without a quorum: the other side may have taken the child over.
    pub(crate) fn update_meta(&mut self, id: &str, meta: Meta) -> MetaOutcome {
        let Some(entry) = self.registry.get(id) else {
            return MetaOutcome::NotFound;
        };
        if entry.owner != self.me {
            return MetaOutcome::NotHere { owner: entry.owner };
        }
        let runs_here = self.local.get(id).is_some_and(|l| !l.replica);
        if !runs_here || self.moving.contains(id) || self.registry.pending_from(id).is_some() {
            // Starting, restarting or moving: asked again in a moment.
            return MetaOutcome::Busy;
        }
        if !self.has_quorum() {
            return MetaOutcome::NoQuorum;
        }
        let mut entry = entry.clone();
        if entry.meta == meta {
            return MetaOutcome::Updated;
        }
        entry.meta = meta;
        self.registry.upsert(id, entry.clone());
        self.out.upsert(id, entry);
        MetaOutcome::Updated
    }
}
