use processhub::prelude::*;

#[distributed(replicas = 3)]
#[derive(Default, Serialize, Deserialize)]
pub struct Ledger {
    n: u64,
}

#[distributed]
impl Ledger {
    pub fn get(&self) -> u64 {
        self.n
    }

    #[on_role_change]
    fn role(&mut self) {}
}

fn main() {}
