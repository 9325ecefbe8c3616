//! One live connection: its outbox and writer, the requests awaiting their response.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::core::registry::Push;
use crate::net::error::TransportError;
use crate::net::link::LinkWrite;
use crate::net::wire::{encode_into, encode_push};
use crate::net::wire::{Frame, Response};
use crate::node::NodeId;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A request awaiting its response.
pub(super) struct Pending {
    /// When the sweep fails it with `Timeout`.
    pub(super) deadline: Instant,
    pub(super) tx: oneshot::Sender<Result<Response, TransportError>>,
}

/// How long a closing transport waits for requests to stop coming.
pub(super) const QUIET: Duration = Duration::from_millis(100);
/// How often a connection fails the requests past their deadline. A request times out
/// up to this late; in exchange no call registers a timer of its own (timers were a
/// tenth of the calling thread's time at 64 calls in flight: BENCHMARKS.md, P2).
pub(super) const SWEEP: Duration = Duration::from_millis(50);
/// The largest buffer a connection keeps between writes: a big transfer (a state moved
/// in parts of up to half a frame) must not pin megabytes per connection.
pub(super) const KEEP_BUFFER: usize = 1 << 20;

/// Frames the socket has not taken yet.
#[derive(Default)]
pub(super) struct Outbox {
    pub(super) buf: Vec<u8>,
    /// The writer task owns the socket's write side until `buf` is empty.
    pub(super) flushing: bool,
}

/// One live connection.
pub(crate) struct Conn {
    pub(super) peer: NodeId,
    pub(super) write: Arc<dyn LinkWrite>,
    pub(super) outbox: Mutex<Outbox>,
    pub(super) wake_writer: Notify,
    /// Requests awaiting their response, by request id.
    pub(super) pending: Mutex<HashMap<u64, Pending, foldhash::fast::FixedState>>,
    pub(super) next_rid: AtomicU64,
    pub(super) closed: CancellationToken,
    /// Requests being served on this connection.
    pub(super) serving: AtomicU64,
    /// Woken when `serving` drops below the transport's in-flight limit.
    pub(super) room: Notify,
    /// Requests in flight when one is sent, averaged (in 1/256ths): whether this
    /// connection carries one call at a time (write at once) or many (batch).
    pub(super) load: std::sync::atomic::AtomicU32,
    /// When the last request arrived, in nanoseconds since `opened`.
    pub(super) last_request: AtomicU64,
    pub(super) opened: Instant,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("peer", &self.peer).finish()
    }
}

impl Conn {
    /// Sends an encoded frame; false if the connection is closed.
    pub(crate) fn send_bytes(&self, bytes: &[u8], alone: bool) -> bool {
        if self.closed.is_cancelled() {
            return false;
        }
        let mut out = self.outbox.lock().unwrap();
        out.buf.extend_from_slice(bytes);
        self.flush_locked(out, alone)
    }

    /// Encodes frames straight into the outbox (no buffer of their own) and sends
    /// them. `Ok(false)` if the connection is closed; an error (nothing sent) if a frame
    /// does not encode or exceeds `max`.
    pub(crate) fn send_frames<'f>(
        &self,
        frames: impl IntoIterator<Item = Frame<'f>>,
        alone: bool,
        max: usize,
    ) -> Result<bool, TransportError> {
        if self.closed.is_cancelled() {
            return Ok(false);
        }
        let mut out = self.outbox.lock().unwrap();
        let start = out.buf.len();
        for frame in frames {
            if let Err(e) = encode_into(&mut out.buf, &frame, max) {
                out.buf.truncate(start);
                return Err(e);
            }
        }
        Ok(self.flush_locked(out, alone))
    }

    /// Sends what the outbox holds.
    ///
    /// With `alone` (nothing else in flight on this connection) and the writer idle, the
    /// bytes are written at once on the caller's thread, saving a wake-up of the writer
    /// task: thread wake-ups are the largest cost per call (measured with perf).
    /// Otherwise the writer is woken (if it is not already writing) and sends what
    /// gathered in one write: under load, batches save more than the wake-up costs.
    pub(super) fn flush_locked(
        &self,
        mut out: std::sync::MutexGuard<'_, Outbox>,
        alone: bool,
    ) -> bool {
        if out.flushing {
            return true;
        }
        if alone {
            match self.write.try_write(&out.buf) {
                Ok(n) if n == out.buf.len() => {
                    out.buf.clear();
                    if out.buf.capacity() > KEEP_BUFFER {
                        out.buf = Vec::new();
                    }
                    return true;
                }
                Ok(n) => {
                    out.buf.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    out.buf.clear();
                    drop(out);
                    tracing::debug!(peer = %self.peer, "write failed: {e}");
                    self.close();
                    return false;
                }
            }
        }
        out.flushing = true;
        drop(out);
        self.wake_writer.notify_one();
        true
    }

    /// Notes that a request is sent with `in_flight` requests in flight (itself
    /// included); true if the connection carries one request at a time.
    ///
    /// Writing at once is best for a lone request, and worst in a burst: a frame sent
    /// alone is served alone, and the peer answers it alone, so a busy connection would
    /// settle into small batches. The average in flight tells the two apart.
    pub(super) fn note_in_flight(&self, in_flight: usize) -> bool {
        let sample = (in_flight.min(1 << 16) as u32) << 8;
        let old = self.load.load(Ordering::Relaxed);
        let new = old - old / 8 + sample / 8;
        self.load.store(new, Ordering::Relaxed);
        in_flight == 1 && new < 2 << 8
    }

    /// Queues a push.
    pub(crate) fn push(&self, push: &Push) -> bool {
        match encode_push(push) {
            Ok(bytes) => self.send_bytes(&bytes, false),
            Err(e) => {
                tracing::error!("could not encode a push: {e}");
                false
            }
        }
    }

    /// Fails the requests past their deadline with `Timeout`.
    pub(super) fn fail_expired(&self, now: Instant) {
        let mut pending = self.pending.lock().unwrap();
        if pending.is_empty() {
            return;
        }
        let expired: Vec<u64> = pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(rid, _)| *rid)
            .collect();
        for rid in expired {
            if let Some(p) = pending.remove(&rid) {
                let _ = p.tx.send(Err(TransportError::Timeout));
            }
        }
    }

    /// Fails every request awaiting an answer with `err`.
    pub(super) fn fail_all(&self, err: impl Fn() -> TransportError) {
        let drained: Vec<Pending> = self
            .pending
            .lock()
            .unwrap()
            .drain()
            .map(|(_, p)| p)
            .collect();
        for p in drained {
            let _ = p.tx.send(Err(err()));
        }
    }

    /// Nothing served, nothing queued, no request for a while.
    pub(super) fn is_quiet(&self, now: Instant) -> bool {
        let since_open = now.saturating_duration_since(self.opened).as_nanos() as u64;
        let idle = since_open.saturating_sub(self.last_request.load(Ordering::Relaxed));
        let out = self.outbox.lock().unwrap();
        self.serving.load(Ordering::Relaxed) == 0
            && out.buf.is_empty()
            && !out.flushing
            && idle >= QUIET.as_nanos() as u64
    }

    /// Requests being served on this connection now.
    #[cfg(test)]
    pub(crate) fn serving(&self) -> u64 {
        self.serving.load(Ordering::Relaxed)
    }

    pub(crate) fn close(&self) {
        self.closed.cancel();
        self.pending.lock().unwrap().clear();
        self.write.shutdown();
    }
}

/// Removes a request from the pending map when its caller stops waiting for it before
/// it is answered (the caller's future dropped).
pub(super) struct ForgetOnDrop {
    pub(super) conn: Arc<Conn>,
    /// The request; `None` once it was answered (the reader took its entry).
    pub(super) rid: Option<u64>,
}

impl ForgetOnDrop {
    /// Its response came: the reader removed its entry already, nothing to forget.
    pub(super) fn answered(mut self) {
        self.rid = None;
    }
}

impl Drop for ForgetOnDrop {
    fn drop(&mut self) {
        if let Some(rid) = self.rid {
            self.conn.pending.lock().unwrap().remove(&rid);
        }
    }
}

/// Appends the frame of a response to `out`; a reply that cannot travel (too large,
/// or not encodable) becomes an error that can.
pub(super) fn encode_response(out: &mut Vec<u8>, rid: u64, resp: Response, max: usize) {
    let err = match encode_into(out, &Frame::Response { rid, resp }, max) {
        Ok(()) => return,
        Err(TransportError::TooLarge { size, max }) => {
            crate::error::CallError::TooLarge { size, max }
        }
        Err(TransportError::Encode(message)) => crate::error::CallError::Codec { message },
        Err(e) => crate::error::CallError::Codec {
            message: format!("{e:?}"),
        },
    };
    let resp = Response::Reply(Err(err));
    encode_into(out, &Frame::Response { rid, resp }, max)
        .expect("an error response always encodes");
}
