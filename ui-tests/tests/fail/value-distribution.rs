use processhub::prelude::*;

#[distributed(distribution = "random")]
#[derive(Default, Serialize, Deserialize)]
pub struct Worker {
    n: u64,
}

fn main() {}
