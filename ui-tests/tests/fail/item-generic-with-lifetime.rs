use processhub::prelude::*;

#[distributed]
#[derive(Default, Serialize, Deserialize)]
pub struct Named<'a> {
    name: &'a str,
}

fn main() {}
