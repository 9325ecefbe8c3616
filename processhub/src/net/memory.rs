//! The in-memory network: many hubs in one process, no sockets.
//!
//! Every frame is still encoded by the sender and decoded by the receiver (the bytes
//! that would go over TCP go through a channel instead), so the transport above runs
//! exactly as it does over TCP. A link (one direction between two addresses) can be
//! cut (its connections close, new ones are refused), black-holed (frames vanish, the
//! connection stays up, as in a partition without a reset) or delayed; healing it
//! restores it. Addresses are handed out like ports: `127.0.0.1:0` gets a fresh one.
//!
//! ```text
//!  sender: encode ─► LinkWrite::try_write ─► faults of (from, to) ─► pump (delay)
//!                                                                     │ frames in order
//!  receiver: decode ◄─ FrameRead ◄────────────────────────────────────┘
//! ```

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::link::{Link, LinkWrite, Listener, Network};

/// What is wrong with a link, one direction between two addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Fault {
    /// Connections close and dials are refused.
    pub(crate) cut: bool,
    /// Frames are dropped; the connection stays up.
    pub(crate) black_hole: bool,
    /// Each frame arrives this much later (in order).
    pub(crate) delay: Duration,
}

type Accepted = (Link, SocketAddr);

#[derive(Default)]
struct State {
    listeners: HashMap<SocketAddr, mpsc::UnboundedSender<Accepted>>,
    faults: BTreeMap<(SocketAddr, SocketAddr), Fault>,
    /// Live write sides, per direction, to close when a link is cut.
    pipes: BTreeMap<(SocketAddr, SocketAddr), Vec<Weak<MemWrite>>>,
    next_port: u16,
    /// Frames and bytes sent, per sending address.
    sent: BTreeMap<SocketAddr, (u64, u64)>,
}

/// An in-memory network: cheap to clone, all clones are the same network.
#[derive(Clone, Default)]
pub(crate) struct MemoryNetwork {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryNetwork")
    }
}

// Faults are set by the tests, and by the simulator that runs many hubs in one world.
#[cfg_attr(not(any(test, feature = "sim")), allow(dead_code))]
impl MemoryNetwork {
    /// Listens on `addr` (port 0: a fresh port): the address bound, its listener, and
    /// the network as seen from it (what its transport dials with).
    pub(crate) fn bind(
        &self,
        addr: SocketAddr,
    ) -> io::Result<(SocketAddr, MemListener, MemEndpoint)> {
        let mut st = self.state.lock().unwrap();
        let addr = if addr.port() == 0 {
            loop {
                st.next_port = st.next_port.wrapping_add(1).max(1);
                let candidate = SocketAddr::new(addr.ip(), st.next_port);
                if !st.listeners.contains_key(&candidate) {
                    break candidate;
                }
            }
        } else {
            addr
        };
        if st.listeners.contains_key(&addr) {
            return Err(io::ErrorKind::AddrInUse.into());
        }
        let (tx, rx) = mpsc::unbounded_channel();
        st.listeners.insert(addr, tx);
        Ok((
            addr,
            MemListener {
                addr,
                rx,
                net: self.clone(),
            },
            MemEndpoint {
                net: self.clone(),
                me: addr,
            },
        ))
    }

    /// Sets what is wrong with the link from `from` to `to` (one direction). A cut
    /// closes the connections on it now.
    pub(crate) fn set_fault(&self, from: SocketAddr, to: SocketAddr, fault: Fault) {
        let closing: Vec<Arc<MemWrite>> = {
            let mut st = self.state.lock().unwrap();
            if fault == Fault::default() {
                st.faults.remove(&(from, to));
            } else {
                st.faults.insert((from, to), fault);
            }
            if fault.cut {
                st.pipes
                    .remove(&(from, to))
                    .unwrap_or_default()
                    .iter()
                    .filter_map(Weak::upgrade)
                    .collect()
            } else {
                Vec::new()
            }
        };
        for pipe in closing {
            pipe.shutdown();
        }
    }

    /// Sets `fault` on both directions between `a` and `b`.
    #[cfg(test)]
    pub(crate) fn set_fault_both(&self, a: SocketAddr, b: SocketAddr, fault: Fault) {
        self.set_fault(a, b, fault);
        self.set_fault(b, a, fault);
    }

    /// Frames and bytes sent from `addr` so far (length prefixes included).
    pub(crate) fn sent(&self, addr: SocketAddr) -> (u64, u64) {
        self.state
            .lock()
            .unwrap()
            .sent
            .get(&addr)
            .copied()
            .unwrap_or_default()
    }

    /// Heals every link.
    pub(crate) fn heal_all(&self) {
        self.state.lock().unwrap().faults.clear();
    }

    fn fault(&self, from: SocketAddr, to: SocketAddr) -> Fault {
        self.state
            .lock()
            .unwrap()
            .faults
            .get(&(from, to))
            .copied()
            .unwrap_or_default()
    }

    fn unbind(&self, addr: SocketAddr) {
        self.state.lock().unwrap().listeners.remove(&addr);
    }

    /// One direction of a connection: frames written at `from` arrive at the returned
    /// reader, at `to`.
    fn pipe(
        &self,
        from: SocketAddr,
        to: SocketAddr,
        max_frame: usize,
    ) -> (Arc<MemWrite>, super::link::FrameRead) {
        let (deliver, delivered) = mpsc::unbounded_channel::<Bytes>();
        let (pump, mut pumped) = mpsc::unbounded_channel::<(Option<Instant>, Bytes)>();
        // Frames leave in the order they were written, each no earlier than its time.
        tokio::spawn(async move {
            while let Some((at, frame)) = pumped.recv().await {
                if let Some(at) = at {
                    tokio::time::sleep_until(at).await;
                }
                if deliver.send(frame).is_err() {
                    return;
                }
            }
        });
        let write = Arc::new(MemWrite {
            from,
            to,
            net: Arc::downgrade(&self.state),
            inner: Mutex::new(WriteState {
                pump: Some(pump),
                partial: Vec::new(),
            }),
        });
        self.state
            .lock()
            .unwrap()
            .pipes
            .entry((from, to))
            .or_default()
            .push(Arc::downgrade(&write));
        let read = tokio_stream_of(delivered).map(move |frame| {
            if frame.len() > max_frame {
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "frame of {} bytes exceeds the limit of {max_frame}",
                        frame.len()
                    ),
                ))
            } else {
                Ok(frame)
            }
        });
        (write, Box::pin(read))
    }
}

/// The frames of a channel, as a stream.
fn tokio_stream_of(
    mut rx: mpsc::UnboundedReceiver<Bytes>,
) -> impl futures_util::Stream<Item = Bytes> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A [`MemoryNetwork`] as one address sees it: its dials come from that address, so
/// the faults between two nodes' addresses apply to their connections.
#[derive(Clone, Debug)]
pub(crate) struct MemEndpoint {
    net: MemoryNetwork,
    me: SocketAddr,
}

impl Network for MemEndpoint {
    fn dial(&self, to: SocketAddr, max_frame: usize) -> BoxFuture<'static, io::Result<Link>> {
        let (net, from) = (self.net.clone(), self.me);
        Box::pin(async move {
            if net.fault(from, to).cut || net.fault(to, from).cut {
                return Err(io::ErrorKind::ConnectionRefused.into());
            }
            let accept = net
                .state
                .lock()
                .unwrap()
                .listeners
                .get(&to)
                .cloned()
                .ok_or(io::ErrorKind::ConnectionRefused)?;
            let (out_write, out_read) = net.pipe(from, to, max_frame);
            let (in_write, in_read) = net.pipe(to, from, max_frame);
            let theirs = Link {
                read: out_read,
                write: in_write,
            };
            accept
                .send((theirs, from))
                .map_err(|_| io::Error::from(io::ErrorKind::ConnectionRefused))?;
            Ok(Link {
                read: in_read,
                write: out_write,
            })
        })
    }
}

/// Accepts the connections dialed to one address of a [`MemoryNetwork`].
pub(crate) struct MemListener {
    addr: SocketAddr,
    rx: mpsc::UnboundedReceiver<Accepted>,
    net: MemoryNetwork,
}

impl std::fmt::Debug for MemListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemListener")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for MemListener {
    fn drop(&mut self) {
        self.net.unbind(self.addr);
    }
}

impl Listener for MemListener {
    fn accept(&mut self, _max_frame: usize) -> BoxFuture<'_, io::Result<(Link, SocketAddr)>> {
        Box::pin(async move {
            self.rx
                .recv()
                .await
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
        })
    }
}

struct WriteState {
    pump: Option<mpsc::UnboundedSender<(Option<Instant>, Bytes)>>,
    /// Bytes of a frame not written whole yet.
    partial: Vec<u8>,
}

/// The write side of one direction of an in-memory connection.
struct MemWrite {
    from: SocketAddr,
    to: SocketAddr,
    net: Weak<Mutex<State>>,
    inner: Mutex<WriteState>,
}

impl MemWrite {
    fn fault(&self) -> Fault {
        self.net
            .upgrade()
            .and_then(|st| {
                st.lock()
                    .unwrap()
                    .faults
                    .get(&(self.from, self.to))
                    .copied()
            })
            .unwrap_or_default()
    }
}

impl LinkWrite for MemWrite {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        let fault = self.fault();
        if fault.cut {
            self.shutdown();
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        let mut inner = self.inner.lock().unwrap();
        let Some(pump) = inner.pump.clone() else {
            return Err(io::ErrorKind::BrokenPipe.into());
        };
        inner.partial.extend_from_slice(buf);
        // Whole frames go; a partial one waits for the rest of its bytes.
        let mut at = 0;
        while inner.partial.len() - at >= 4 {
            let len =
                u32::from_be_bytes(inner.partial[at..at + 4].try_into().expect("4 bytes")) as usize;
            if inner.partial.len() - at - 4 < len {
                break;
            }
            let frame = Bytes::copy_from_slice(&inner.partial[at + 4..at + 4 + len]);
            at += 4 + len;
            if fault.black_hole {
                continue;
            }
            let when = (!fault.delay.is_zero()).then(|| Instant::now() + fault.delay);
            if pump.send((when, frame)).is_err() {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
        }
        inner.partial.drain(..at);
        drop(inner);
        if let Some(st) = self.net.upgrade() {
            let frames = frames_in(buf);
            let mut st = st.lock().unwrap();
            let sent = st.sent.entry(self.from).or_default();
            sent.0 += frames;
            sent.1 += buf.len() as u64;
        }
        Ok(buf.len())
    }

    fn writable(&self) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn shutdown(&self) {
        // The reader sees the end once the frames already sent are delivered.
        self.inner.lock().unwrap().pump = None;
    }
}

/// How many frame headers start in `buf`, counting as if it began on a frame (the
/// writers hand over whole frames; a partial one counts where it starts).
fn frames_in(buf: &[u8]) -> u64 {
    let (mut at, mut frames) = (0usize, 0u64);
    while buf.len().saturating_sub(at) >= 4 {
        let len = u32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
        frames += 1;
        at += 4 + len;
    }
    frames
}
