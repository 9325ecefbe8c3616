use processhub::prelude::*;

// Every mistake is reported at once, each where it is: an unknown option and a wrong
// value on the struct...
#[distributed(replicas = 0, colour = "blue")]
#[derive(Default, Serialize, Deserialize)]
pub struct Tally {
    n: u64,
}

#[distributed]
#[derive(Default, Serialize, Deserialize)]
pub struct Other {
    n: u64,
}

// ...and two bad methods on an impl block.
#[distributed]
impl Other {
    pub fn name(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.n)
    }

    pub fn consume(self) -> u64 {
        self.n
    }
}

fn main() {}
