use processhub::prelude::*;

#[distributed(instances(Boxed<u64>, Vec<u64>))]
#[derive(Default, Serialize, Deserialize)]
pub struct Boxed<T> {
    value: T,
}

fn main() {}
