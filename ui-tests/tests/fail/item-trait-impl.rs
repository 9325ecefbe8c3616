use processhub::prelude::*;

#[distributed]
#[derive(Default, Serialize, Deserialize)]
pub struct Tally {
    n: u64,
}

trait Named {
    fn name(&self) -> String;
}

#[distributed]
impl Named for Tally {
    fn name(&self) -> String {
        "tally".into()
    }
}

fn main() {}
