use processhub::prelude::*;

#[distributed(name = 3)]
#[derive(Default, Serialize, Deserialize)]
pub struct Tally {
    n: u64,
}

fn main() {}
