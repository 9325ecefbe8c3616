use processhub::prelude::*;

#[distributed]
#[derive(Default, Serialize, Deserialize)]
pub struct Votes {
    n: u64,
}

#[distributed]
impl Votes {
    pub fn get(&self) -> u64 {
        self.n
    }

    #[on_conflict]
    fn merge(&mut self) {}
}

fn main() {}
