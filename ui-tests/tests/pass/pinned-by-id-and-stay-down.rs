use processhub::prelude::*;

/// Stays on its node and stays down with it, whatever the start says.
#[distributed(pinned, on_node_death = "stay_down")]
#[derive(Default, Serialize, Deserialize)]
pub struct Device {
    n: u64,
}

#[distributed]
impl Device {
    pub fn read(&self) -> u64 {
        self.n
    }
}

/// Restarts elsewhere by default; pinned and kept down per id when asked.
#[distributed(on_node_death = "restart")]
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

async fn use_it(hub: &Hub) -> Result<(), Box<dyn std::error::Error>> {
    let _ = Device::start(hub, "gpu-0", Device::default()).await?;
    let bound = StartOptions::new()
        .pinned(true)
        .on_node_death(OnNodeDeath::StayDown);
    let s = Session::start_with(hub, "s-1", Session::default(), bound.clone()).await?;
    let _: u64 = s.touch().await?;
    let _ = Session::start_many_with(hub, vec![("s-2".into(), Session::default())], bound).await;
    Ok(())
}

fn main() {
    let _ = use_it;
}
