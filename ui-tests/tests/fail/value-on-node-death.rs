use processhub::prelude::*;

#[distributed(pinned, on_node_death = "vanish")]
#[derive(Default, Serialize, Deserialize)]
pub struct Device {
    n: u64,
}

fn main() {}
