use processhub::prelude::*;

#[distributed(replicas = 3, replication = "leader_follower")]
#[derive(Default, Serialize, Deserialize)]
pub struct Ledger {
    n: u64,
}

fn main() {}
