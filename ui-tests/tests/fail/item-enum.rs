use processhub::prelude::*;

#[distributed]
pub enum State {
    On,
    Off,
}

fn main() {}
