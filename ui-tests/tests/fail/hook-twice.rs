use processhub::prelude::*;

#[distributed]
#[derive(Default, Serialize, Deserialize)]
pub struct Tally {
    n: u64,
}

#[distributed]
impl Tally {
    #[on_start]
    fn first(&mut self) {}

    #[on_start]
    fn second(&mut self) {}
}

fn main() {}
