use processhub::prelude::*;

#[distributed]
#[derive(Default, Serialize, Deserialize)]
pub struct Maker {
    n: u64,
}

#[distributed]
impl Maker {
    pub fn make() -> Self {
        Maker { n: 0 }
    }
}

fn main() {}
