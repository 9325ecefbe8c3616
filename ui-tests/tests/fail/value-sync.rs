use processhub::prelude::*;

#[distributed(replicas = 3, sync = "eventually")]
#[derive(Default, Serialize, Deserialize)]
pub struct Ledger {
    n: u64,
}

fn main() {}
