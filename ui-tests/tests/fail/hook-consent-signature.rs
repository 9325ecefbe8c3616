use processhub::prelude::*;

#[distributed]
#[derive(Default, Serialize, Deserialize)]
pub struct Job {
    busy: bool,
}

#[distributed]
impl Job {
    pub fn busy(&self) -> bool {
        self.busy
    }

    #[move_consent]
    fn consent(&mut self) -> processhub::MoveConsent {
        processhub::MoveConsent::Ready
    }
}

fn main() {}
