use processhub::prelude::*;

/// Restarts from its start state when it moves.
#[distributed(migration = "cold")]
#[derive(Default, Serialize, Deserialize)]
pub struct Session {
    hits: u64,
}

#[distributed]
impl Session {
    pub fn hit(&mut self) -> u64 {
        self.hits += 1;
        self.hits
    }
}

/// Takes its latest state along (the default, written out).
#[distributed(migration = "hot")]
#[derive(Default, Serialize, Deserialize)]
pub struct Ledger {
    total: u64,
}

#[distributed]
impl Ledger {
    pub fn add(&mut self, by: u64) -> u64 {
        self.total += by;
        self.total
    }
}

fn main() {
    let _ = Session::stop;
    let _ = Ledger::stop;
}
