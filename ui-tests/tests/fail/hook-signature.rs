use processhub::prelude::*;

#[distributed]
#[derive(Default, Serialize, Deserialize)]
pub struct Tally {
    n: u64,
}

#[distributed]
impl Tally {
    pub fn get(&self) -> u64 {
        self.n
    }

    #[on_handover_in]
    fn arrived(&mut self, extra: u64) {
        self.n += extra;
    }
}

fn main() {}
