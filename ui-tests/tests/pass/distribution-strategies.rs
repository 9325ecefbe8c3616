use processhub::placement::{PlacementInput, Strategy};
use processhub::prelude::*;
use processhub::{Hub, NodeId, StartError};

/// Placed on the node the caller names: `start_on` is generated.
#[distributed(distribution = "guided")]
#[derive(Default, Serialize, Deserialize)]
pub struct Printer {
    jobs: u64,
}

#[distributed]
impl Printer {
    pub fn print(&mut self) -> u64 {
        self.jobs += 1;
        self.jobs
    }
}

/// One instance on every member.
#[distributed(distribution = "every_node")]
#[derive(Default, Serialize, Deserialize)]
pub struct LocalCache {
    hits: u64,
}

#[distributed]
impl LocalCache {
    pub fn hit(&mut self) -> u64 {
        self.hits += 1;
        self.hits
    }
}

/// Consistent hashing, no node over 1.25 × the mean.
#[distributed(distribution = "bounded_load", replicas = 2)]
#[derive(Default, Serialize, Deserialize)]
pub struct Session {
    n: u64,
}

#[distributed]
impl Session {
    pub fn touch(&mut self) -> u64 {
        self.n += 1;
        self.n
    }
}

/// Always the lowest member.
#[derive(Default)]
pub struct Lowest;

impl Strategy for Lowest {
    fn place(&self, input: &PlacementInput<'_>) -> Option<NodeId> {
        input.members.first().copied()
    }
}

#[distributed(custom = Lowest)]
#[derive(Default, Serialize, Deserialize)]
pub struct Singleton {
    n: u64,
}

#[distributed]
impl Singleton {
    pub fn get(&self) -> u64 {
        self.n
    }
}

#[distributed(distribution = "local")]
#[derive(Default, Serialize, Deserialize)]
pub struct Here {}

#[distributed]
impl Here {}

#[distributed(distribution = "not_local")]
#[derive(Default, Serialize, Deserialize)]
pub struct Elsewhere {}

#[distributed]
impl Elsewhere {}

#[distributed(distribution = "round_robin")]
#[derive(Default, Serialize, Deserialize)]
pub struct Turn {}

#[distributed]
impl Turn {}

#[distributed(distribution = "consistent_hash")]
#[derive(Default, Serialize, Deserialize)]
pub struct Hashed {}

#[distributed]
impl Hashed {}

#[allow(dead_code)]
async fn start(hub: &Hub, node: NodeId) -> Result<(), StartError> {
    Printer::start_on(hub, "printer-1", Printer::default(), node).await?;
    Ok(())
}

fn main() {}
