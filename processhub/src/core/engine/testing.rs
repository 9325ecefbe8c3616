//! Fixtures for the engine's tests: an engine in one line, children that are plain
//! values, start items and entries.

use std::cell::Cell;
use std::rc::Rc;

use super::{ChildHandle, Engine, TypeInfo};
use crate::core::entry::{Entry, Flags, StartState};
use crate::core::item::StartItem;
use crate::core::placement::{Distribution, TypePlacement};
use crate::core::view::Gossip;
use crate::node::NodeId;

/// A child as the engine's tests see it: compared by name.
#[derive(Clone, Debug)]
pub(crate) struct TestChild {
    pub(crate) name: &'static str,
    type_name: &'static str,
    called: Rc<Cell<bool>>,
    epoch: Rc<Cell<u64>>,
}

impl PartialEq for TestChild {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for TestChild {}

impl TestChild {
    /// A child `name` of type `type_name`, never called.
    pub(crate) fn new(name: &'static str, type_name: &'static str) -> Self {
        Self {
            name,
            type_name,
            called: Rc::new(Cell::new(false)),
            epoch: Rc::new(Cell::new(0)),
        }
    }

    /// Marks it called.
    pub(crate) fn call(&self) {
        self.called.set(true);
    }

    /// The epoch the engine last set on it (0 if none).
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.get()
    }
}

impl ChildHandle for TestChild {
    fn type_name(&self) -> &str {
        self.type_name
    }

    fn was_called(&self) -> bool {
        self.called.get()
    }

    fn set_epoch(&self, epoch: u64) {
        self.epoch.set(epoch);
    }
}

fn no_custom() -> Option<&'static dyn crate::core::placement::Strategy> {
    None
}

/// The tests' type table: `T` (plain), `R3` (3 copies, active/passive), `AA` (3 copies,
/// active/active), `BL` (bounded load), `M` (plain, merges duplicates); anything else
/// is unknown.
pub(crate) fn types(type_name: &str) -> Option<TypeInfo> {
    let (replicas, active_active, kind) = match type_name {
        "T" | "M" => (1, false, Distribution::ConsistentHash),
        "R3" => (3, false, Distribution::ConsistentHash),
        "AA" => (3, true, Distribution::ConsistentHash),
        "BL" => (1, false, Distribution::BoundedLoad),
        _ => return None,
    };
    Some(TypeInfo {
        replicas,
        active_active,
        merges: type_name == "M",
        placement: TypePlacement {
            kind,
            custom: no_custom,
        },
    })
}

/// Node `port` of the tests (incarnation 1).
pub(crate) fn node(port: u16) -> NodeId {
    NodeId::new(([127, 0, 0, 1], port).into(), 1)
}

/// Downing at once, as before downing was a decision: `Divergence`, no waiting (the
/// tests of other decisions); the downing's own tests set theirs.
pub(crate) fn at_once() -> crate::core::downing::SafetyConfig {
    crate::core::downing::SafetyConfig {
        strategy: crate::core::downing::PartitionTolerance::Divergence,
        stable_after: std::time::Duration::ZERO,
        lease: std::time::Duration::ZERO,
    }
}

/// The engine of node `me` in a cluster of `members` (ports), its output taken.
pub(crate) fn engine(me: u16, members: &[u16]) -> Engine<TestChild> {
    let mut e = Engine::new(node(me), types, true, at_once(), std::time::Instant::now());
    e.gossip(Gossip {
        members: members.iter().map(|p| node(*p)).collect(),
        ..Gossip::default()
    });
    // Each peer's (empty) registry has arrived, as over a connection that opened.
    for p in members.iter().filter(|p| **p != me) {
        synced(&mut e, *p);
    }
    e.take_output();
    e
}

/// Peer `port`'s whole registry (empty) arrived, as its connection opened.
pub(crate) fn synced(e: &mut Engine<TestChild>, port: u16) {
    e.push(
        node(port),
        crate::core::registry::Push::Snapshot {
            entries: Vec::new(),
            first: true,
            last: true,
        },
    );
}

/// A new start of `id` (epoch 0), its state `[1]`.
pub(crate) fn new_item(id: &str, type_name: &str) -> StartItem {
    StartItem {
        id: id.to_string(),
        type_name: type_name.to_string(),
        state: vec![1],
        epoch: 0,
        start_state: None,
        flags: Flags::default(),
        node: None,
        recent: Vec::new(),
        meta: None,
    }
}

/// A hand-over of `id` under `epoch`: the latest state `[2]`, the start state `[1]`.
pub(crate) fn moved_item(id: &str, type_name: &str, epoch: u64) -> StartItem {
    StartItem {
        state: vec![2],
        epoch,
        start_state: Some(serde_bytes::ByteBuf::from(vec![1])),
        ..new_item(id, type_name)
    }
}

/// The entry of a child of `type_name` on `owner` under `epoch`, its start state `[1]`.
pub(crate) fn entry(type_name: &str, owner: NodeId, epoch: u64) -> Entry {
    Entry {
        type_name: type_name.into(),
        owner,
        epoch,
        start_state: StartState::from_slice(&[1]),
        flags: Flags::default(),
        standbys: None,
        meta: None,
    }
}

/// Starts `id` here as `child` (a new start), its output taken.
pub(crate) fn start(e: &mut Engine<TestChild>, id: &str, child: &TestChild) {
    let item = new_item(id, child.type_name);
    let epoch = e.admit(&item).expect("admitted");
    e.started(&item, epoch, Ok(child.clone()));
    e.take_output();
}

/// The first of `candidates` whose ring owner among `members` is `owner`.
pub(crate) fn id_owned_by(owner: u16, members: &[u16]) -> String {
    let ring = crate::core::ring::Ring::new(members.iter().map(|p| node(*p)));
    (0..)
        .map(|i| format!("id-{i}"))
        .find(|id| ring.owner(id) == Some(node(owner)))
        .expect("some id lands on every member")
}
