use processhub::prelude::*;

#[distributed]
#[derive(Default, Serialize, Deserialize)]
pub struct Greeter {
    n: u64,
}

#[distributed]
impl Greeter {
    pub fn greet(&mut self, name: &str) -> String {
        format!("hello {name}")
    }
    pub fn sum(&self, values: &[u64]) -> u64 {
        values.iter().sum()
    }
}

fn main() {}
