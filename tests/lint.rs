//! Typical components compile without a warning under strict lints (and clippy's, in
//! CI: `cargo clippy --all-targets -- -D warnings`): the expansion adds nothing the user
//! would have to silence.
#![deny(warnings, unused_qualifications, missing_docs)]

use processhub::prelude::*;
use processhub::Role;

/// A counter.
#[distributed]
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct Counter {
    n: u64,
}

#[distributed]
impl Counter {
    /// Adds and returns the new value.
    pub fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }

    /// The value, from an async method.
    pub async fn get(&self) -> u64 {
        self.n
    }

    /// Several arguments, a unit result.
    pub fn reset(&mut self, to: u64, note: String) {
        let _ = note;
        self.n = to;
    }

    /// A component error of its own.
    pub fn take(&mut self, by: u64) -> Result<u64, String> {
        self.n = self.n.checked_sub(by).ok_or("not enough")?;
        Ok(self.n)
    }

    #[on_start]
    fn started(&mut self) {}

    #[on_stop]
    fn stopped(&mut self) {}

    /// A local helper.
    #[distributed(skip)]
    pub fn peek(&self) -> u64 {
        self.n
    }
}

/// A replicated account with role and handover hooks.
#[distributed(replicas = 3, reads = "any", name = "lint.Account/v1")]
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct Account {
    balance: i64,
    primary: bool,
}

#[distributed]
impl Account {
    /// Deposits and returns the balance.
    pub fn deposit(&mut self, amount: i64) -> i64 {
        self.balance += amount;
        self.balance
    }

    #[on_role_change]
    fn role(&mut self, role: Role) {
        self.primary = role == Role::Primary;
    }

    #[on_handover_out]
    fn leaving(&mut self) {}

    #[on_handover_in]
    fn arrived(&mut self) {}
}

/// Placed on a named node.
#[distributed(distribution = "guided", pinned, on_node_death = "stay_down")]
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct Device {
    reads: u64,
}

#[distributed]
impl Device {
    /// Reads it.
    pub fn read(&mut self) -> u64 {
        self.reads += 1;
        self.reads
    }
}

#[tokio::test]
async fn strict_components_work() {
    let hub = Hub::builder("lint")
        .listen("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let c = Counter::start(&hub, "c", Counter::default()).await.unwrap();
    assert_eq!(c.add(2).await.unwrap(), 2);
    assert_eq!(c.take(5).await.unwrap(), Err("not enough".to_string()));
    c.reset(1, "x".into()).await.unwrap();
    assert_eq!(c.get().await.unwrap(), 1);
    let a = Account::start(&hub, "a", Account::default()).await.unwrap();
    assert_eq!(a.deposit(3).await.unwrap(), 3);
    let d = Device::start_on(&hub, "d", Device::default(), hub.node_id())
        .await
        .unwrap();
    assert_eq!(d.read().await.unwrap(), 1);
    hub.shutdown().await.unwrap();
}
