mod reexport {
    pub use processhub as ph;
}

use processhub::prelude::*;

// A processhub re-exported under another name: both attributes say where it is.
#[distributed(crate = crate::reexport::ph)]
#[derive(Default, Serialize, Deserialize)]
pub struct Invoice {
    total: u64,
}

#[distributed(crate = crate::reexport::ph)]
impl Invoice {
    pub fn add_line(&mut self, amount: u64) -> u64 {
        self.total += amount;
        self.total
    }

    #[on_stop]
    fn archived(&mut self) {}
}

fn main() {
    let _ = InvoiceHandle::add_line;
}
