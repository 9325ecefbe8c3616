mod reexport {
    pub use processhub as ph;
}

use processhub::prelude::*;

#[distributed(name = "billing.Invoice/v1", crate = reexport::ph)]
#[derive(Default, Serialize, Deserialize)]
pub struct Invoice {
    total: u64,
}

#[distributed]
impl Invoice {
    pub fn add_line(&mut self, amount: u64) -> u64 {
        self.total += amount;
        self.total
    }
}

fn main() {
    let _ = Invoice::stop;
}
