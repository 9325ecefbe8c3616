use processhub::prelude::*;

#[distributed]
#[derive(Default)]
pub struct Plain {
    n: u64,
}

fn main() {}
