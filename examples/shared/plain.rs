//! P3's baseline, shared by the bench and the probe: the counter's work in a plain
//! kameo actor.

/// A counter as a plain kameo actor.
#[derive(kameo::Actor)]
pub struct PlainCounter {
    /// The value.
    pub n: u64,
}

/// Adds its number; the reply is the new value.
pub struct Add(pub u64);

impl kameo::message::Message<Add> for PlainCounter {
    type Reply = u64;

    async fn handle(
        &mut self,
        Add(by): Add,
        _: &mut kameo::message::Context<Self, Self::Reply>,
    ) -> u64 {
        self.n += by;
        self.n
    }
}
