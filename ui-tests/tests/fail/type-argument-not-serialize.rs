use processhub::prelude::*;

pub struct Opaque;

#[distributed]
#[derive(Default, Serialize, Deserialize)]
pub struct Tally {
    n: u64,
}

#[distributed]
impl Tally {
    pub fn take(&mut self, o: Opaque) -> u64 {
        let _ = o;
        self.n
    }
}

fn main() {}
