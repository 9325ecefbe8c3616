use processhub::prelude::*;

#[distributed(pinned = true)]
#[derive(Default, Serialize, Deserialize)]
pub struct Local {
    n: u64,
}

fn main() {}
