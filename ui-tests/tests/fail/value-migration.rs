use processhub::prelude::*;

#[distributed(migration = "warm")]
#[derive(Default, Serialize, Deserialize)]
pub struct Tally {
    n: u64,
}

fn main() {}
