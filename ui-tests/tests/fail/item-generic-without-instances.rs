use processhub::prelude::*;

#[distributed]
#[derive(Default, Serialize, Deserialize)]
pub struct Boxed<T> {
    value: T,
}

fn main() {}
