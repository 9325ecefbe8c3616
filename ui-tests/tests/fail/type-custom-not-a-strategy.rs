use processhub::prelude::*;

#[derive(Default)]
pub struct NotAStrategy;

#[distributed(custom = NotAStrategy)]
#[derive(Default, Serialize, Deserialize)]
pub struct Worker {
    n: u64,
}

#[distributed]
impl Worker {}

fn main() {}
