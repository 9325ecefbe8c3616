use processhub::prelude::*;

#[distributed(distribution = "every_node", replicas = 3)]
#[derive(Default, Serialize, Deserialize)]
pub struct Cache {
    n: u64,
}

fn main() {}
