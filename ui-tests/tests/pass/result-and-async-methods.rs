use processhub::prelude::*;

/// An account.
#[distributed]
#[derive(Default, Serialize, Deserialize)]
pub struct Account {
    balance: u64,
}

/// The component's own error: it reaches the caller inside the call's result.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum Refused {
    Insufficient { short: u64 },
}

#[distributed]
impl Account {
    pub fn withdraw(&mut self, amount: u64) -> Result<u64, Refused> {
        if amount > self.balance {
            return Err(Refused::Insufficient {
                short: amount - self.balance,
            });
        }
        self.balance -= amount;
        Ok(self.balance)
    }

    pub async fn audit(&self, note: String, times: u32) -> (String, u32) {
        (note, times)
    }

    pub fn nothing(&mut self) {}
}

#[allow(dead_code)]
async fn use_it(h: AccountHandle) {
    // Transport errors and the component's own are apart.
    let outer: Result<Result<u64, Refused>, CallError> = h.withdraw(5).await;
    let _ = outer;
    let _: Result<(String, u32), CallError> = h.audit("x".into(), 2).await;
    let _: Result<(), CallError> = h.nothing().await;
}

fn main() {}
