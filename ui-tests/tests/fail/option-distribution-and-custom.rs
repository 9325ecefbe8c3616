use processhub::placement::{PlacementInput, Strategy};
use processhub::prelude::*;
use processhub::NodeId;

#[derive(Default)]
pub struct Lowest;

impl Strategy for Lowest {
    fn place(&self, input: &PlacementInput<'_>) -> Option<NodeId> {
        input.members.first().copied()
    }
}

#[distributed(distribution = "guided", custom = Lowest)]
#[derive(Default, Serialize, Deserialize)]
pub struct Worker {
    n: u64,
}

fn main() {}
