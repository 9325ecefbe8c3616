//! Bytes and sockets: the frames between hubs (`wire`), who may connect (`auth`), signed gossip (`gossip`), one
//! connection per node pair (`conn`), the transport that dials, accepts and dispatches (`transport`), and the
//! batching of items into frames (`batch`).

pub(crate) mod auth;
pub(crate) mod batch;
pub(crate) mod conn;
pub(crate) mod error;
pub(crate) mod gossip;
pub(crate) mod link;
pub(crate) mod memory;
pub(crate) mod tls;
pub(crate) mod transport;
pub(crate) mod wire;
