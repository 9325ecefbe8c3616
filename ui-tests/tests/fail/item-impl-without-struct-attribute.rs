use processhub::prelude::*;

// The struct lacks #[distributed]: its impl block cannot make calls of its methods.
#[derive(Default, Serialize, Deserialize)]
pub struct Tally {
    n: u64,
}

#[distributed]
impl Tally {
    pub fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
}

fn main() {}
