use processhub::prelude::*;

#[distributed]
#[derive(Default, Serialize, Deserialize)]
pub struct Cache {
    hits: u64,
}

#[distributed]
impl Cache {
    pub fn hit(&mut self) -> u64 {
        self.bump();
        self.hits
    }

    /// Stays a plain method: not a call.
    #[distributed(skip)]
    pub fn local_only(&self, borrowed: &str) -> usize {
        borrowed.len()
    }

    /// Associated functions must be skipped.
    #[distributed(skip)]
    pub fn new() -> Self {
        Cache { hits: 0 }
    }

    fn bump(&mut self) {
        self.hits += 1;
    }
}

fn main() {
    let c = Cache::new();
    assert_eq!(c.local_only("abc"), 3);
}
