use processhub::prelude::*;

#[distributed(replicas = 0)]
#[derive(Default, Serialize, Deserialize)]
pub struct Ledger {
    n: u64,
}

#[distributed(replicas = "three")]
#[derive(Default, Serialize, Deserialize)]
pub struct Journal {
    n: u64,
}

fn main() {}
