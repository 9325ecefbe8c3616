use processhub::prelude::*;

#[distributed(replicas = 3, ship = "diffs")]
#[derive(Default, Serialize, Deserialize)]
pub struct Ledger {
    n: u64,
}

fn main() {}
