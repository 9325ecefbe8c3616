use processhub::prelude::*;

/// Stays on the node it started on while that node lives.
#[distributed(pinned, migration = "hot")]
#[derive(Default, Serialize, Deserialize)]
pub struct Local {
    n: u64,
}

#[distributed]
impl Local {
    pub fn get(&self) -> u64 {
        self.n
    }
}

fn main() {
    let _ = Local::stop;
}
