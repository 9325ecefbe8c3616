use processhub::prelude::*;

#[distributed]
#[derive(Default, Serialize, Deserialize)]
pub struct Connection {
    open: bool,
    moves: u32,
}

#[distributed]
impl Connection {
    pub fn is_open(&self) -> bool {
        self.open
    }

    #[on_start]
    fn open(&mut self) {
        self.open = true;
    }

    #[on_stop]
    fn close(&mut self) {
        self.open = false;
    }

    #[on_handover_out]
    fn pause(&mut self) {
        self.moves += 1;
    }

    #[on_handover_in]
    fn resume(&mut self) {}

    #[on_conflict]
    fn merge(&mut self, other: Connection) {
        self.moves = self.moves.max(other.moves);
    }
}

fn main() {}
