//! The registry: every child of the cluster, held in full on every node.
//!
//! Each node is the authority for the children it hosts: it publishes an [`Entry`]
//! when one starts and a removal when one stops, as deltas over its connections, and a
//! full snapshot of its own entries when a connection opens (anti-entropy). Conflicts
//! are settled by the epoch: a higher epoch wins; at an equal epoch the larger node id
//! wins, so every node settles the same way without talking.

use std::collections::HashMap;
use std::sync::Arc;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::core::entry::{wins, Entry};
use crate::node::NodeId;

/// What an upsert did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Upsert {
    /// The entry is now the one given.
    Applied,
    /// The registry holds a winning entry; the given one was ignored.
    Ignored,
}

/// Registry traffic: the sender is the origin of every entry it names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Push {
    Upsert(Vec<(String, Entry)>),
    Remove(Vec<(String, u64)>),
    /// The sender's own entries, in one or more parts; `last` closes it.
    Snapshot {
        entries: Vec<(String, Entry)>,
        first: bool,
        last: bool,
    },
    /// The sender leaves the cluster now.
    Leaving,
    /// The sender takes no new children (it is draining).
    Draining,
    // Appended: the variants above keep their bytes on the wire.
    /// Children of dead nodes that every survivor re-assigned to the receiver, pending
    /// its start: (id, entry naming the receiver, the node it ran on). A node that
    /// joined after the death has no other way to learn of them (snapshots carry only
    /// what their sender owns).
    Assigned(Vec<(String, Entry, NodeId)>),
    /// The sender downed these nodes (or heard that a peer did, and downs them too):
    /// see [`crate::core::downing`].
    Down(Vec<NodeId>),
    /// The sender's claims of these new ids are over without a start (it lost them, or
    /// the start failed): a grant to it is released.
    Unclaim(Vec<String>),
    /// Children the sender handed over: each entry names the new owner under the
    /// move's epoch, as the new owner will. A node that does not hear the new owner yet
    /// (it connects to it later) learns of the move so; otherwise the sender's entry
    /// would stay there for good once the child stopped before that connection opened
    /// (and come back as a restart if the sender died).
    Moved(Vec<(String, Entry)>),
    /// The removals the sender's registry remembers, as a connection opens (after its
    /// snapshot): (id, epoch, whether an entry of that very epoch is refused too). A
    /// node that did not hear a stop (it joined, or its link was down) learns of it so,
    /// instead of taking in an older entry of the child from a node cut off meanwhile,
    /// and having it restarted when that node is downed (simulator seed 17, 5 nodes,
    /// partition,crash: a stopped child came back).
    Removed(Vec<(String, u64, bool)>),
    /// The states the sender kept of its replicated children when it was downed, as a
    /// connection opens: (id, epoch, shipment). See `crate::core::engine::salvage`.
    Salvaged(Vec<(String, u64, u64)>),
}

/// The registry of one node. Keys are shared with [`crate::ChildInfo`] (no copy on a
/// lookup) and hashed with foldhash under a fixed seed (fast, and the same iteration
/// order in every run: the simulator replays a seed exactly).
///
/// The entries are an [`IndexMap`]: they live in one vector, beside a table of 8-byte
/// indices, rather than in the buckets of a hash table. A hash table doubles by copying
/// itself into a new block and freeing the old one; freeing a block of megabytes makes
/// glibc raise its mmap and trim thresholds to that size, and keep up to twice as much
/// freed memory in the process from then on. A vector grows in place (`realloc`, which
/// moves a large block's pages with `mremap` and frees nothing), and its room not yet
/// used is never touched. With 51,000 entries an entry cost 351-377 B of RSS in a hash
/// table and 218-238 B here (BENCHMARKS.md, P6b). A removal moves the last entry into
/// its place (`swap_remove`): the order of iteration is that of the operations, the
/// same in every run.
#[derive(Clone, Debug, Default)]
pub(crate) struct Registry {
    entries: IndexMap<Arc<str>, Entry, foldhash::fast::FixedState>,
    /// Entries re-assigned by the planner after their node died or left, to the node
    /// they came from, until the new owner confirms. Rare, so kept beside the entries
    /// rather than in each of them.
    pending: HashMap<Arc<str>, NodeId, foldhash::fast::FixedState>,
    type_names: HashMap<Box<str>, Arc<str>, foldhash::fast::FixedState>,
    /// Children removed lately. An entry of the removal's epoch or older that arrives
    /// meanwhile (sent before the removal, over another link) is refused instead of
    /// bringing the child back.
    removed: HashMap<Arc<str>, Tombstone, foldhash::fast::FixedState>,
    /// The changes the registry hooks hear of, while they are wanted
    /// ([`Self::record_changes`]).
    changes: Option<Vec<Change>>,
}

/// A change the registry hooks hear of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// `id` is registered on `owner` at `epoch` (new, moved or restarted).
    Registered {
        id: Arc<str>,
        type_name: Arc<str>,
        owner: NodeId,
        epoch: u64,
    },
    /// `id`, last on `owner`, is out of the registry.
    Unregistered { id: Arc<str>, owner: NodeId },
}

/// A removal remembered by the registry.
#[derive(Clone, Copy, Debug)]
struct Tombstone {
    /// The epoch it was removed at.
    epoch: u64,
    /// Planner ticks since.
    age: u8,
    /// The node whose snapshot lacked the child, if that is how it went (no removal
    /// was heard). That node's own word, later, overrides it: see
    /// [`Registry::owner_speaks`].
    unlisted_by: Option<NodeId>,
    /// Whether an entry of the removal's own epoch is refused too (not for the removal
    /// of a child this registry did not know: another node may run it under that
    /// epoch, having won a tie at it).
    at_epoch: bool,
}

impl Tombstone {
    fn new(epoch: u64, unlisted_by: Option<NodeId>) -> Self {
        Self {
            epoch,
            age: 0,
            unlisted_by,
            at_epoch: true,
        }
    }

    /// Whether it refuses an entry of `epoch`.
    fn refuses(&self, epoch: u64) -> bool {
        epoch < self.epoch || (self.at_epoch && epoch == self.epoch)
    }
}

/// How many planner ticks a removal is remembered for: longer than an entry sent before
/// it can take to arrive over another link.
pub(crate) const TOMBSTONE_TICKS: u8 = 10;

impl Registry {
    /// Whether to record the changes for the registry hooks from now on.
    pub(crate) fn record_changes(&mut self, on: bool) {
        match (on, self.changes.is_some()) {
            (true, false) => self.changes = Some(Vec::new()),
            (false, true) => self.changes = None,
            _ => {}
        }
    }

    /// The changes recorded since the last call.
    pub(crate) fn take_changes(&mut self) -> Vec<Change> {
        match &mut self.changes {
            Some(c) if !c.is_empty() => std::mem::take(c),
            _ => Vec::new(),
        }
    }

    fn registered(&mut self, id: &Arc<str>) {
        if let (Some(changes), Some(e)) = (&mut self.changes, self.entries.get(&**id)) {
            changes.push(Change::Registered {
                id: id.clone(),
                type_name: e.type_name.clone(),
                owner: e.owner,
                epoch: e.epoch,
            });
        }
    }

    fn unregistered(changes: &mut Option<Vec<Change>>, id: &Arc<str>, e: &Entry) {
        if let Some(changes) = changes {
            changes.push(Change::Unregistered {
                id: id.clone(),
                owner: e.owner,
            });
        }
    }

    /// The entry of `id`.
    pub(crate) fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.get(id)
    }

    /// Whether any entry is pending a restart.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Where `id` came from, if it is pending a restart.
    pub(crate) fn pending_from(&self, id: &str) -> Option<NodeId> {
        if self.pending.is_empty() {
            return None;
        }
        self.pending.get(id).copied()
    }

    /// Re-assigns `id` (planner only): new owner and epoch, and the pending mark.
    pub(crate) fn reassign(
        &mut self,
        id: &Arc<str>,
        owner: NodeId,
        epoch: u64,
        pending_from: Option<NodeId>,
    ) {
        if let Some(e) = self.entries.get_mut(&**id) {
            e.owner = owner;
            e.epoch = epoch;
            match pending_from {
                Some(from) => {
                    self.pending.insert(id.clone(), from);
                }
                None => {
                    self.pending.remove(&**id);
                }
            }
        }
    }

    /// Takes in `entry` for `id`, re-assigned by the others to this registry's node
    /// while `from` (its old node) is gone: kept pending, unless a winning entry is here.
    /// Whether it was taken.
    pub(crate) fn adopt(&mut self, id: &str, mut entry: Entry, from: NodeId) -> bool {
        if self.entries.get(id).is_some_and(|e| !wins(&entry, e))
            || self.removed_since(id, entry.epoch)
        {
            return false;
        }
        entry.type_name = self.intern(&entry.type_name);
        let id: Arc<str> = Arc::from(id);
        self.entries.insert(id.clone(), entry);
        self.pending.insert(id, from);
        true
    }

    /// The entries pending a restart on `node` (re-assigned to it, not confirmed), with
    /// the node each came from, sorted by id.
    pub(crate) fn pending_on(&self, node: NodeId) -> Vec<(String, Entry, NodeId)> {
        let mut out: Vec<(String, Entry, NodeId)> = self
            .pending
            .iter()
            .filter_map(|(id, from)| {
                let e = self.entries.get(id)?;
                (e.owner == node).then(|| (id.to_string(), e.clone(), *from))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Every pending entry: (id, owner, epoch), sorted.
    pub(crate) fn pending_entries(&self) -> Vec<(Arc<str>, NodeId, u64)> {
        let mut out: Vec<(Arc<str>, NodeId, u64)> = self
            .pending
            .keys()
            .filter_map(|id| {
                let e = self.entries.get(id)?;
                Some((id.clone(), e.owner, e.epoch))
            })
            .collect();
        out.sort();
        out
    }

    /// Drops the entry of `id` (planner only: a child that stays down).
    pub(crate) fn drop_entry(&mut self, id: &str) {
        if let Some((id, e)) = self.entries.swap_remove_entry(id) {
            Self::unregistered(&mut self.changes, &id, &e);
        }
        self.pending.remove(id);
    }

    /// The entry of `id`, with the shared key.
    pub(crate) fn get_key_value(&self, id: &str) -> Option<(&Arc<str>, &Entry)> {
        self.entries.get_key_value(id)
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Every entry.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Entry)> {
        self.entries.iter()
    }

    /// One shared allocation per type name, however many children it has.
    pub(crate) fn intern(&mut self, type_name: &str) -> Arc<str> {
        if let Some(t) = self.type_names.get(type_name) {
            return t.clone();
        }
        let t: Arc<str> = Arc::from(type_name);
        self.type_names.insert(type_name.into(), t.clone());
        t
    }

    /// Whether an entry of `epoch` for `id` is older than its recent removal.
    pub(crate) fn removed_since(&self, id: &str, epoch: u64) -> bool {
        !self.removed.is_empty() && self.removed.get(id).is_some_and(|t| t.refuses(epoch))
    }

    /// The epoch for a new start of `id`: past the one it was removed at lately (so that
    /// every registry that remembers the removal takes it), else 1.
    pub(crate) fn fresh_epoch(&self, id: &str) -> u64 {
        self.removed.get(id).map_or(1, |t| t.epoch + 1)
    }

    /// A planner tick: removals remembered for [`TOMBSTONE_TICKS`] are forgotten.
    pub(crate) fn age_removals(&mut self) {
        if self.removed.is_empty() {
            return;
        }
        self.removed.retain(|_, t| {
            t.age += 1;
            t.age < TOMBSTONE_TICKS
        });
    }

    /// Inserts `entry` unless the registry holds one that wins over it, or removed the
    /// child lately at its epoch or a later one. An applied entry comes from its owner,
    /// so it is no longer pending.
    pub(crate) fn upsert(&mut self, id: &str, mut entry: Entry) -> Upsert {
        if self.removed_since(id, entry.epoch) {
            return Upsert::Ignored;
        }
        entry.type_name = self.intern(&entry.type_name);
        // Heard of by the registry hooks: a new id, a new owner or epoch, or a
        // restart confirmed (a metadata or standby change is not a registration).
        let news = self.changes.is_some()
            && self.entries.get(id).is_none_or(|old| {
                (old.owner, old.epoch) != (entry.owner, entry.epoch)
                    || self.pending.contains_key(id)
            });
        let applied = match self.entries.get_mut(id) {
            // The owner confirms what the planner predicted.
            Some(old) if old.epoch == entry.epoch && old.owner == entry.owner => {
                *old = entry;
                true
            }
            // The node the planner predicted says what it runs: it is the authority on
            // its own children, whatever epoch was predicted (a prediction made from a
            // view it never had, say a joiner that died at once, would wait for ever).
            Some(old) if old.owner == entry.owner && self.pending.contains_key(id) => {
                *old = entry;
                true
            }
            // A prediction yields to what a node says it runs at that epoch or later:
            // it is a guess (found by soak seed 1065: a rejoined node predicted its own
            // restart of a child moved meanwhile, and at the same epoch its larger node
            // id won over the real owner's entry, for good).
            Some(old) if self.pending.contains_key(id) && entry.epoch >= old.epoch => {
                *old = entry;
                true
            }
            Some(old) if !wins(&entry, old) => false,
            Some(old) => {
                *old = entry;
                true
            }
            None => {
                self.entries.insert(Arc::from(id), entry);
                true
            }
        };
        if !applied {
            return Upsert::Ignored;
        }
        if !self.pending.is_empty() {
            self.pending.remove(id);
        }
        if news {
            if let Some((key, _)) = self.entries.get_key_value(id) {
                let key = key.clone();
                self.registered(&key);
            }
        }
        if !self.removed.is_empty() {
            self.removed.remove(id);
        }
        Upsert::Applied
    }

    /// Removes `id` if `origin` owns it at an epoch no newer than `epoch`, or if it is
    /// pending a restart here from `origin` (the planner re-assigned it, but `origin`
    /// stopped it, under its lease, before anything replaced it).
    pub(crate) fn remove(&mut self, id: &str, origin: NodeId, epoch: u64) -> Option<Entry> {
        let pending_from_origin = self.pending_from(id) == Some(origin);
        match self.entries.get(id) {
            Some(e) if (e.owner == origin && e.epoch <= epoch) || pending_from_origin => {
                self.pending.remove(id);
                let (key, entry) = self.entries.swap_remove_entry(id)?;
                Self::unregistered(&mut self.changes, &key, &entry);
                self.removed.insert(key, Tombstone::new(epoch, None));
                Some(entry)
            }
            // Not known here (yet): remembered all the same, so that an older entry of it
            // arriving later (over another link, or in the snapshot of a node cut off
            // until then) does not bring it back; see `Push::Removed` for the stop a
            // node never heard.
            None => {
                if self.removed.get(id).is_none_or(|t| t.epoch < epoch) {
                    let mut t = Tombstone::new(epoch, None);
                    t.at_epoch = false;
                    self.removed.insert(Arc::from(id), t);
                }
                None
            }
            _ => None,
        }
    }

    /// Replaces everything `origin` owns with `snapshot` (a full list from that node).
    pub(crate) fn replace_origin(&mut self, origin: NodeId, snapshot: Vec<(String, Entry)>) {
        self.retain_origin(origin, &snapshot);
        for (id, entry) in snapshot {
            self.upsert(&id, entry);
        }
    }

    /// Drops the entries owned by `origin` that its `snapshot` lacks (it no longer runs
    /// them), but for those being restarted here; each is remembered as removed, as if
    /// its removal had arrived (it may have been lost with a connection).
    pub(crate) fn retain_origin(&mut self, origin: NodeId, snapshot: &[(String, Entry)]) {
        let keep: std::collections::HashSet<&str> =
            snapshot.iter().map(|(id, _)| id.as_str()).collect();
        let pending = &self.pending;
        let removed = &mut self.removed;
        let changes = &mut self.changes;
        self.entries.retain(|id, e| {
            let stays = e.owner != origin || pending.contains_key(id) || keep.contains(&**id);
            if !stays {
                removed.insert(id.clone(), Tombstone::new(e.epoch, Some(origin)));
                Self::unregistered(changes, id, e);
            }
            stays
        });
    }

    /// The removals remembered now, sorted by id: (id, epoch, whether that very epoch is
    /// refused too), for [`Push::Removed`].
    pub(crate) fn removals(&self) -> Vec<(String, u64, bool)> {
        let mut list: Vec<(String, u64, bool)> = self
            .removed
            .iter()
            .map(|(id, t)| (id.to_string(), t.epoch, t.at_epoch))
            .collect();
        list.sort();
        list
    }

    /// A peer remembers `id` removed at `epoch`: an entry older than that (or of that
    /// epoch, with `at_epoch`) is stale here too, and one arriving later is refused.
    /// Whether an entry was dropped.
    pub(crate) fn removed_elsewhere(&mut self, id: &str, epoch: u64, at_epoch: bool) -> bool {
        let t = Tombstone {
            at_epoch,
            ..Tombstone::new(epoch, None)
        };
        let stale = self.entries.get(id).is_some_and(|e| t.refuses(e.epoch));
        if stale {
            self.pending.remove(id);
            if let Some((key, entry)) = self.entries.swap_remove_entry(id) {
                Self::unregistered(&mut self.changes, &key, &entry);
            }
        }
        let newer = match self.removed.get(id) {
            None => true,
            Some(old) => (old.epoch, old.at_epoch) < (epoch, at_epoch),
        };
        if newer && (stale || !self.entries.contains_key(id)) {
            self.removed.insert(Arc::from(id), t);
        }
        stale
    }

    /// `owner` itself says it runs `id`, after a snapshot of its own that lacked it:
    /// that snapshot was older. (A snapshot is taken as its connection opens, and the
    /// owner's pushes follow it on that connection; but a third node may tell of the
    /// child first, say the node that moved it there, and the snapshot, arriving
    /// after, would drop the entry and keep the owner's own word out.)
    pub(crate) fn owner_speaks(&mut self, id: &str, owner: NodeId) {
        if !self.removed.is_empty()
            && self
                .removed
                .get(id)
                .is_some_and(|t| t.unlisted_by == Some(owner))
        {
            self.removed.remove(id);
        }
    }

    /// Entries owned by `node`.
    pub(crate) fn owned_by(&self, node: NodeId) -> Vec<(String, Entry)> {
        self.entries
            .iter()
            .filter(|(_, e)| e.owner == node)
            .map(|(id, e)| (id.to_string(), e.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::entry::StartState;

    fn node(port: u16) -> NodeId {
        NodeId::new(([127, 0, 0, 1], port).into(), 1)
    }

    fn entry(owner: NodeId, epoch: u64) -> Entry {
        Entry {
            type_name: "T".into(),
            owner,
            epoch,
            start_state: StartState::new(),
            flags: Default::default(),
            standbys: None,
            meta: None,
        }
    }

    #[test]
    fn higher_epoch_wins_then_larger_node() {
        let mut r = Registry::default();
        assert_eq!(r.upsert("a", entry(node(1), 2)), Upsert::Applied);
        assert_eq!(r.upsert("a", entry(node(2), 1)), Upsert::Ignored);
        assert_eq!(r.upsert("a", entry(node(2), 2)), Upsert::Applied);
        assert_eq!(r.upsert("a", entry(node(1), 2)), Upsert::Ignored);
        assert_eq!(r.get("a").unwrap().owner, node(2));
    }

    #[test]
    fn removal_needs_the_owner_and_an_epoch_at_least_as_new() {
        let mut r = Registry::default();
        r.upsert("a", entry(node(1), 3));
        assert!(r.remove("a", node(2), 9).is_none());
        assert!(r.remove("a", node(1), 2).is_none());
        assert!(r.remove("a", node(1), 3).is_some());
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn snapshot_replaces_what_the_origin_owns() {
        let mut r = Registry::default();
        r.upsert("a", entry(node(1), 1));
        r.upsert("b", entry(node(1), 1));
        r.upsert("c", entry(node(2), 1));
        r.replace_origin(
            node(1),
            vec![
                ("b".into(), entry(node(1), 1)),
                ("d".into(), entry(node(1), 1)),
            ],
        );
        let mut ids: Vec<&str> = r.iter().map(|(id, _)| &**id).collect();
        ids.sort();
        assert_eq!(ids, ["b", "c", "d"]);
        // What the snapshot lacked is remembered as removed, as a removal push would
        // have it (a stop whose answer was lost with the connection reads it).
        assert!(r.removed_since("a", 1));
        assert!(!r.removed_since("b", 1));
        assert_eq!(r.upsert("a", entry(node(1), 1)), Upsert::Ignored);
        // Only the snapshot's own node, saying it runs the child after all, ends that
        // memory (its snapshot was older than what it says now).
        r.owner_speaks("a", node(2));
        assert_eq!(r.upsert("a", entry(node(1), 1)), Upsert::Ignored);
        r.owner_speaks("a", node(1));
        assert_eq!(r.upsert("a", entry(node(1), 1)), Upsert::Applied);
        // A removal heard is not ended so.
        assert!(r.remove("a", node(1), 1).is_some());
        r.owner_speaks("a", node(1));
        assert_eq!(r.upsert("a", entry(node(1), 1)), Upsert::Ignored);
    }

    /// Found by simulator seed 17 (5 nodes, partition,crash): a joiner heard a child's
    /// stop before it heard of the child, then took in an older entry of it from the
    /// snapshot of its old owner (cut off until then), and had it restarted when that
    /// owner was downed: a stopped child came back.
    #[test]
    fn a_removal_of_a_child_not_known_yet_refuses_its_older_entries() {
        let mut r = Registry::default();
        assert!(r.remove("a", node(3), 2).is_none(), "nothing to remove");
        // Remembered, and passed on as a connection opens (its own epoch open).
        assert_eq!(r.removals(), vec![("a".to_string(), 2, false)]);
        assert_eq!(r.upsert("a", entry(node(2), 1)), Upsert::Ignored);
        assert!(!r.adopt("a", entry(node(2), 1), node(2)));
        // Its own epoch stays open (another node may have won a tie at it), and a new
        // start takes the next one.
        assert_eq!(r.fresh_epoch("a"), 3);
        assert_eq!(r.upsert("a", entry(node(4), 2)), Upsert::Applied);
        // A later removal of an unknown child moves the memory on; an older one does not.
        assert!(r.remove("b", node(3), 5).is_none());
        assert!(r.remove("b", node(3), 4).is_none());
        assert_eq!(r.upsert("b", entry(node(1), 4)), Upsert::Ignored);
        assert_eq!(r.upsert("b", entry(node(1), 5)), Upsert::Applied);
    }

    /// Found by the simulator's soak (every message fault at once): the old owner's
    /// entry, sent just before it handed the child over, arrived over its slow link
    /// after the new owner's removal, and the stopped child stayed in one registry.
    #[test]
    fn an_entry_older_than_a_removal_is_refused_until_the_removal_is_forgotten() {
        let mut r = Registry::default();
        r.upsert("a", entry(node(2), 4));
        assert!(r.remove("a", node(2), 4).is_some());
        assert_eq!(r.upsert("a", entry(node(1), 3)), Upsert::Ignored);
        assert_eq!(r.upsert("a", entry(node(2), 4)), Upsert::Ignored);
        assert!(!r.adopt("a", entry(node(1), 4), node(2)));
        assert!(r.get("a").is_none());
        // A new start takes the epoch after the removal, and every registry that
        // remembers it takes that.
        assert_eq!(r.fresh_epoch("a"), 5);
        assert_eq!(r.fresh_epoch("b"), 1);
        for _ in 0..TOMBSTONE_TICKS - 1 {
            r.age_removals();
        }
        assert_eq!(r.upsert("a", entry(node(1), 3)), Upsert::Ignored);
        r.age_removals();
        assert_eq!(r.upsert("a", entry(node(1), 1)), Upsert::Applied);
        // An applied entry ends the memory of the removal.
        assert!(r.remove("a", node(1), 1).is_some());
        assert_eq!(r.upsert("a", entry(node(3), 2)), Upsert::Applied);
        assert_eq!(r.fresh_epoch("a"), 1);
    }

    /// Found by the simulator (seed 215: a joiner that died at once, a slow node): a
    /// prediction of a restart on node 1 at epoch 3 ignored node 1's own entry at epoch 2,
    /// and stayed pending for ever.
    #[test]
    fn a_predicted_owner_s_own_entry_settles_the_prediction() {
        let mut r = Registry::default();
        r.upsert("a", entry(node(3), 1));
        let id: Arc<str> = Arc::from("a");
        r.reassign(&id, node(1), 3, Some(node(3)));
        assert_eq!(r.pending_from("a"), Some(node(3)));
        // Another node's older claim does not settle it.
        assert_eq!(r.upsert("a", entry(node(2), 2)), Upsert::Ignored);
        assert_eq!(r.upsert("a", entry(node(1), 2)), Upsert::Applied);
        assert_eq!(r.get("a").map(|e| (e.owner, e.epoch)), Some((node(1), 2)));
        assert_eq!(r.pending_from("a"), None);
        // Once settled, the usual rule: an older entry of the same owner loses.
        assert_eq!(r.upsert("a", entry(node(1), 1)), Upsert::Ignored);
    }

    /// Found by soak seed 1103: a node that rejoined, cut off, predicted the restart of
    /// a child of a member it could not hear; that member stopped it meanwhile, and its
    /// removal, not matching the prediction, was dropped: the child stayed for good.
    #[test]
    fn a_removal_from_the_node_a_prediction_came_from_removes_it() {
        let mut r = Registry::default();
        r.upsert("a", entry(node(3), 1));
        r.upsert("b", entry(node(3), 1));
        for id in ["a", "b"] {
            r.reassign(&Arc::from(id), node(1), 2, Some(node(3)));
        }
        assert!(
            r.remove("a", node(2), 1).is_none(),
            "not where it came from"
        );
        assert!(r.remove("a", node(3), 1).is_some());
        assert!(r.removed_since("a", 1));
        // The new owner's own entry is not refused by the removal of the old one.
        assert!(r.remove("b", node(3), 1).is_some());
        assert_eq!(r.upsert("b", entry(node(1), 2)), Upsert::Applied);
    }

    /// Found by soak seed 1065: a prediction lost, at the same epoch, to the entry of the
    /// node that really ran the child, because the predicted node had the larger id.
    #[test]
    fn a_prediction_yields_to_an_owner_s_entry_as_new() {
        let mut r = Registry::default();
        r.upsert("a", entry(node(2), 2));
        r.reassign(&Arc::from("a"), node(3), 3, Some(node(2)));
        assert_eq!(r.upsert("a", entry(node(1), 2)), Upsert::Ignored, "older");
        assert_eq!(r.upsert("a", entry(node(1), 3)), Upsert::Applied);
        assert_eq!(r.get("a").map(|e| (e.owner, e.epoch)), Some((node(1), 3)));
        assert_eq!(r.pending_from("a"), None);
    }

    #[test]
    fn type_names_are_shared() {
        let mut r = Registry::default();
        r.upsert("a", entry(node(1), 1));
        r.upsert("b", entry(node(1), 1));
        assert!(Arc::ptr_eq(
            &r.get("a").unwrap().type_name,
            &r.get("b").unwrap().type_name
        ));
    }
}
