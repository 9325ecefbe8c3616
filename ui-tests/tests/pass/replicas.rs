use processhub::prelude::*;

/// Kept on three nodes: a write is acknowledged once both standbys have it.
#[distributed(replicas = 3, reads = "any")]
#[derive(Default, Serialize, Deserialize)]
pub struct Ledger {
    balance: i64,
}

#[distributed]
impl Ledger {
    pub fn deposit(&mut self, amount: i64) -> i64 {
        self.balance += amount;
        self.balance
    }
    pub fn balance(&self) -> i64 {
        self.balance
    }

    #[on_role_change]
    fn role(&mut self, role: processhub::Role) {
        let _ = role == processhub::Role::Primary;
    }
}

/// A copy on every member, shipped right after each reply.
#[distributed(replicas = "all", sync = "async")]
#[derive(Default, Serialize, Deserialize)]
pub struct Settings {
    version: u64,
}

#[distributed]
impl Settings {
    pub fn bump(&mut self) -> u64 {
        self.version += 1;
        self.version
    }
}

async fn use_it(hub: &Hub) -> Result<(), Box<dyn std::error::Error>> {
    let l = Ledger::start(hub, "acct-1", Ledger::default()).await?;
    let _: i64 = l.deposit(10).await?;
    let _: u64 = Settings::handle(hub, "global").bump().await?;
    let _: Vec<NodeId> = hub.lookup("acct-1").map(|i| i.standbys).unwrap_or_default();
    Ok(())
}

fn main() {
    let _ = use_it;
}
