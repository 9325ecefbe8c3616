use processhub::prelude::*;

#[distributed]
#[derive(Default, Serialize, Deserialize)]
pub struct Tally {
    n: u64,
}

#[distributed(crate = ::processhub, replicas = 3)]
impl Tally {
    pub fn get(&self) -> u64 {
        self.n
    }
}

fn main() {}
