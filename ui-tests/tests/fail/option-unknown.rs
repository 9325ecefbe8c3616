use processhub::prelude::*;

#[distributed(replica = 3)]
#[derive(Default, Serialize, Deserialize)]
pub struct Tally {
    n: u64,
}

fn main() {}
