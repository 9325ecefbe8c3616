use processhub::prelude::*;

#[distributed]
#[derive(Default, Serialize, Deserialize)]
pub struct Once {
    n: u64,
}

#[distributed]
impl Once {
    pub fn consume(self) -> u64 {
        self.n
    }
}

fn main() {}
