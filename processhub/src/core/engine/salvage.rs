//! What a downed node kept of its replicated children, and how the cluster uses it
//! when every copy it knows of is gone.
//!
//! A node that was downed (paused past its lease, cut off) rejoins as a new incarnation
//! and serves nothing of its former life. It may still hold the newest state of some
//! of its children: the state of a primary that stopped serving when its lease ran
//! out, a standby copy of a primary that crashed. If the cluster restarted such a child
//! from its start state, its acknowledged writes would be gone. So the rejoined node
//! keeps those states for a while (its *salvage*, never served as it is) and tells each
//! peer whose connection opens which it holds, with their versions (`Push::Salvaged`).
//! A node about to restart a child from its start state (no standby copy of its own)
//! first takes the newest salvage it knows of: its own, or one a peer offered, fetched
//! (`Effect::FetchSalvage`) while the restart waits (the planner's next round takes it
//! up). A fetch that fails or takes too long drops that offer.
//!
//! A salvage is never newer than an instance that kept serving: it is only used where
//! the planner restarts a child whose owner and standbys are all gone, and there the
//! alternative is the start state. Among salvages the newest version wins: a higher
//! epoch, then within one epoch the primary's own state over any standby's copy, then
//! the later shipment.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ChildHandle, Effect, Engine, StandbyCopy};
use crate::node::NodeId;

/// How long a rejoined node keeps what it salvaged, and a peer its offer: past the
/// time the cluster takes to notice a death and restart (a few seconds).
pub(crate) const SALVAGE_KEPT: Duration = Duration::from_secs(60);

/// How long a restart waits for a salvage it fetches before it gives up that offer.
pub(crate) const FETCH_WAIT: Duration = Duration::from_secs(2);

/// The version of a primary's own state (within its epoch, newer than any shipment of
/// it).
pub(crate) const PRIMARY_STATE: u64 = u64::MAX;

/// The salvage of one node: its own, the peers' offers, the fetches under way.
#[derive(Debug, Default)]
pub(crate) struct Salvage {
    /// States this node kept from its former life: (copy, kept until).
    held: std::collections::HashMap<Arc<str>, (StandbyCopy, Instant), super::Fixed>,
    /// The offers heard, per id: (node, version, until), one per node.
    offers: std::collections::HashMap<Arc<str>, Vec<Offer>, super::Fixed>,
    /// Ids whose salvage is being fetched, until when.
    fetching: std::collections::HashMap<Arc<str>, Instant, super::Fixed>,
    /// The primaries of the former life whose states are still being taken (each
    /// instance finishes the calls it has in flight first): id → epoch. Offered already;
    /// a restart of one here, and a peer's fetch, wait for them.
    expected: std::collections::HashMap<Arc<str>, u64, super::Fixed>,
}

/// A peer's word that it holds a salvage: (node, version, kept until).
type Offer = (NodeId, (u64, u64), Instant);

/// What [`Engine::salvage_for`] found for a child about to restart.
#[derive(Debug)]
pub(crate) enum Salvaged {
    /// Nothing: the start state it is.
    None,
    /// This state, kept here.
    Here(StandbyCopy),
    /// A newer one is on its way from a peer: wait.
    Fetching,
}

impl<C: ChildHandle> Engine<C> {
    /// Keeps `copy` of `id` as salvage (this node's former life held it), unless a newer
    /// one is kept already.
    pub(crate) fn keep_salvage(&mut self, id: &str, copy: StandbyCopy) {
        let until = self.downing.now() + SALVAGE_KEPT;
        let held = &mut self.salvage.held;
        if held.get(id).is_some_and(|(c, _)| c.version >= copy.version) {
            return;
        }
        held.insert(Arc::from(id), (copy, until));
    }

    /// What this node kept as salvage (taken, for a rejoin: a node downed twice keeps
    /// what it salvaged the first time).
    pub(crate) fn salvage_held(&mut self) -> Vec<(Arc<str>, StandbyCopy)> {
        self.salvage
            .held
            .drain()
            .map(|(id, (copy, _))| (id, copy))
            .collect()
    }

    /// Whether `type_name` keeps copies of its children (only those are salvaged:
    /// losing a plain child's state with its node is what a plain child promises).
    pub(crate) fn salvages(&self, type_name: &str) -> bool {
        (self.types)(type_name).is_some_and(|t| t.replicas > 1 && !t.active_active)
    }

    /// A rejoin takes the states of these primaries of the former life (id, epoch):
    /// they are offered as held already, and waited for ([`Self::salvage_taken`]).
    pub(crate) fn expect_salvage(&mut self, ids: impl IntoIterator<Item = (Arc<str>, u64)>) {
        self.salvage.expected.extend(ids);
    }

    /// The states the rejoin took (those whose instance gave theirs up): kept; what
    /// was expected and did not come is not waited for any more.
    pub(crate) fn salvage_taken(&mut self, taken: Vec<(Arc<str>, StandbyCopy)>) {
        self.salvage.expected.clear();
        for (id, copy) in taken {
            self.keep_salvage(&id, copy);
        }
        self.dirty = true;
    }

    /// Whether any of `ids` is a state still being taken (a fetch of it waits).
    pub(crate) fn salvage_expected(&self, ids: &[String]) -> bool {
        let expected = &self.salvage.expected;
        !expected.is_empty() && ids.iter().any(|id| expected.contains_key(id.as_str()))
    }

    /// What this node holds, or is taking, for its peers: (id, epoch, seq).
    pub(crate) fn salvage_offers(&self) -> Vec<(String, u64, u64)> {
        let s = &self.salvage;
        let mut offers: Vec<(String, u64, u64)> = s
            .held
            .iter()
            .map(|(id, (c, _))| (id.to_string(), c.version.0, c.version.1))
            .chain(
                s.expected
                    .iter()
                    .map(|(id, epoch)| (id.to_string(), *epoch, PRIMARY_STATE)),
            )
            .collect();
        offers.sort();
        // One per id, the newest (sorted: the last of its run).
        offers.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                (kept.1, kept.2) = (later.1, later.2);
            }
            same
        });
        offers
    }

    /// `from` holds these salvages (its newer word replaces its older one).
    pub(crate) fn salvage_offered(&mut self, from: NodeId, offers: Vec<(String, u64, u64)>) {
        let until = self.downing.now() + SALVAGE_KEPT;
        for (id, epoch, seq) in offers {
            let of_id = self.salvage.offers.entry(Arc::from(id)).or_default();
            of_id.retain(|(n, _, _)| *n != from);
            of_id.push((from, (epoch, seq), until));
        }
        self.dirty = true;
    }

    /// The salvages of `ids` held here, for a peer that fetches them.
    pub(crate) fn give_salvage(&self, ids: &[String]) -> Vec<(&str, &StandbyCopy)> {
        ids.iter()
            .filter_map(|id| {
                let (k, (c, _)) = self.salvage.held.get_key_value(id.as_str())?;
                Some((&**k, c))
            })
            .collect()
    }

    /// A fetch of `asked` from `from` ended: `got` what it still held (nothing if the
    /// fetch failed). The offers of `from` for `asked` are used up; the planner's next
    /// round restarts them (from what came, or the next offer, or the start state).
    pub(crate) fn salvage_fetched(
        &mut self,
        from: NodeId,
        asked: &[String],
        got: Vec<(String, StandbyCopy)>,
    ) {
        self.dirty = true;
        for id in asked {
            self.salvage.fetching.remove(id.as_str());
            self.drop_offer(id, from);
        }
        for (id, copy) in got {
            tracing::info!(me = %self.me, %id, %from, version = ?copy.version, "salvage fetched");
            self.keep_salvage(&id, copy);
        }
    }

    /// What a restart of `id` here starts from, when no standby copy is here: the
    /// newest salvage known (fetched first if a member holds it), or nothing.
    pub(crate) fn salvage_for(&mut self, id: &str) -> Salvaged {
        if self.salvage.expected.contains_key(id) {
            // Its former primary's state, being taken here: wait for it.
            return Salvaged::Fetching;
        }
        let now = self.downing.now();
        let here = self.salvage.held.get(id).map(|(c, _)| c.version);
        let members = self.view.members();
        let offer = self.salvage.offers.get(id).and_then(|of_id| {
            of_id
                .iter()
                .filter(|(n, _, _)| members.binary_search(n).is_ok())
                .max_by_key(|(n, v, _)| (*v, *n))
                .map(|(n, v, _)| (*n, *v))
        });
        if let Some((node, version)) = offer {
            if here.is_none_or(|h| version > h) {
                match self.salvage.fetching.get(id) {
                    Some(until) if *until > now => {}
                    Some(_) => {
                        // Asked, and nothing came in time: that offer is given up.
                        tracing::warn!(me = %self.me, %id, %node, "salvage not fetched in time");
                        self.salvage.fetching.remove(id);
                        self.drop_offer(id, node);
                        return self.salvage_for(id);
                    }
                    None => {
                        self.salvage
                            .fetching
                            .insert(Arc::from(id), now + FETCH_WAIT);
                        self.out.effects.push(Effect::FetchSalvage {
                            from: node,
                            ids: vec![id.to_string()],
                        });
                    }
                }
                return Salvaged::Fetching;
            }
        }
        self.salvage.offers.remove(id);
        match self.salvage.held.remove(id) {
            Some((copy, _)) => Salvaged::Here(copy),
            None => Salvaged::None,
        }
    }

    /// Forgets `node`'s offer of `id`.
    fn drop_offer(&mut self, id: &str, node: NodeId) {
        if let Some(of_id) = self.salvage.offers.get_mut(id) {
            of_id.retain(|(n, _, _)| *n != node);
            if of_id.is_empty() {
                self.salvage.offers.remove(id);
            }
        }
    }

    /// Forgets salvages and offers past their time, and the offers of nodes that are
    /// members no more.
    pub(crate) fn age_salvage(&mut self) {
        let s = &mut self.salvage;
        if s.held.is_empty() && s.offers.is_empty() {
            return;
        }
        let now = self.downing.now();
        let members = self.view.members();
        s.held.retain(|_, (_, until)| *until > now);
        s.offers.retain(|_, of_id| {
            of_id.retain(|(n, _, until)| *until > now && members.binary_search(n).is_ok());
            !of_id.is_empty()
        });
    }
}
