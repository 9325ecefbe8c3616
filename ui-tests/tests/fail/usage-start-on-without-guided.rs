use processhub::prelude::*;
use processhub::{Hub, NodeId};

#[distributed]
#[derive(Default, Serialize, Deserialize)]
pub struct Worker {
    n: u64,
}

#[distributed]
impl Worker {}

async fn start(hub: &Hub, node: NodeId) {
    let _ = Worker::start_on(hub, "w", Worker::default(), node).await;
}

fn main() {}
