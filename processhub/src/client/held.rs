//! A caller's wait for the standbys of its write (see [`crate::core::held`]).

use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::core::held::{HeldWrites, Word};
use crate::net::wire::Held;
use crate::node::NodeId;

/// The hub's table of its callers' writes waiting for their standbys' word.
pub(crate) type HeldTable = Mutex<HeldWrites<oneshot::Sender<Vec<u8>>>>;

/// A standby's word arrived: completes its caller once every standby said so.
pub(crate) fn heard(table: &HeldTable, from: NodeId, held: Held) {
    let done = table.lock().unwrap().heard(Word {
        from,
        call_id: held.call_id,
        epoch: held.epoch,
        seq: held.seq,
        standbys: &held.standbys,
    });
    if let Some(done) = done {
        let _ = done.send(held.reply.into_vec());
    }
}

/// One caller's wait, for as long as its call lasts (forgotten when dropped).
pub(crate) struct HeldWait<'a> {
    table: &'a HeldTable,
    call_id: u128,
    reply: oneshot::Receiver<Vec<u8>>,
}

impl<'a> HeldWait<'a> {
    /// Waits for the standbys of write `call_id` (before it goes out).
    pub(crate) fn new(table: &'a HeldTable, call_id: u128) -> Self {
        let (tx, reply) = oneshot::channel();
        table.lock().unwrap().wait(call_id, tx);
        Self {
            table,
            call_id,
            reply,
        }
    }

    /// The write's reply, once every standby of its shipment said it holds it; never
    /// if they do not.
    pub(crate) async fn reply(&mut self) -> Vec<u8> {
        match (&mut self.reply).await {
            Ok(reply) => reply,
            Err(_) => std::future::pending().await,
        }
    }
}

impl Drop for HeldWait<'_> {
    fn drop(&mut self) {
        self.table.lock().unwrap().forget(self.call_id);
    }
}
