use processhub::prelude::*;

#[distributed(name = "a", name = "b")]
#[derive(Default, Serialize, Deserialize)]
pub struct Tally {
    n: u64,
}

fn main() {}
