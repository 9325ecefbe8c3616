//! The in-memory network: many hubs in one process, no sockets.
//!
//! Every frame is still encoded by the sender and decoded by the receiver (the bytes
//! that would go over TCP go through a channel instead), so the transport above runs
//! exactly as it does over TCP. A link (one direction between two addresses) can be
//! cut (its connections close, new ones are refused), black-holed (frames vanish, the
//! connection stays up, as in a partition without a reset) or delayed; healing it
//! restores it. Addresses are handed out like ports: `127.0.0.1:0` gets a fresh one.
//!
//! A connection is a stream, as TCP is: what the wire does to single frames (loss,
//! duplication, reordering) the receiving end repairs the way TCP does, and the
//! transport above sees only what TCP would let it see. A lost frame is sent again
//! after a retransmission timeout (doubling on each loss) and holds back every frame
//! behind it; a duplicate is dropped by the receiver's sequence check; a frame held up
//! on the wire is put back in order, so the frames behind it wait. A reset closes both
//! directions at once and loses what was not delivered yet, as a TCP reset does.
//! Faults that draw per frame draw from the network's seed, in the order frames are
//! written: the same run, the same draws.
//!
//! ```text
//!  sender: encode ─► LinkWrite::try_write ─► faults of (from, to): when it arrives
//!                        (delay, loss → RTO, reorder → jitter), in order, seq numbers
//!  receiver: decode ◄─ FrameRead: waits until then, drops seen seqs, sees a reset
//! ```

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::link::{FrameLimit, Link, LinkWrite, Listener, Network};

/// The first retransmission timeout of a lost frame (Linux's minimum RTO); it doubles
/// on each loss of the same frame.
// Public through `sim::LinkFault`.
#[cfg_attr(not(feature = "sim"), allow(unreachable_pub))]
pub const RETRANSMIT: Duration = Duration::from_millis(200);

/// The longest a frame is held up on the wire when it is reordered.
// Public through `sim::LinkFault`.
#[cfg_attr(not(feature = "sim"), allow(unreachable_pub))]
pub const JITTER: Duration = Duration::from_millis(50);

/// What is wrong with a link, one direction between two addresses. Rates are per mille
/// of the frames written on the link.
// Public through `sim::LinkFault`.
#[cfg_attr(not(feature = "sim"), allow(unreachable_pub))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fault {
    /// Connections close and dials are refused.
    pub cut: bool,
    /// Frames are dropped; the connection stays up.
    pub black_hole: bool,
    /// Each frame arrives this much later (in order).
    pub delay: Duration,
    /// Frames lost on the wire (per mille): each is sent again after
    /// [`RETRANSMIT`] (doubling while it is lost again) and the frames behind it wait.
    pub loss: u16,
    /// Frames that cross the wire twice (per mille): the receiver drops the copy.
    pub duplicate: u16,
    /// Frames held up on the wire by up to [`JITTER`] (per mille): the receiver puts
    /// them back in order, so the frames behind wait.
    pub reorder: u16,
    /// Frames at which the connection is reset (per mille): both directions close at
    /// once and the frames not yet delivered are lost.
    pub reset: u16,
}

impl Fault {
    /// Whether the frames of this link need more than "now, in order".
    fn draws(&self) -> bool {
        self.loss > 0 || self.duplicate > 0 || self.reorder > 0 || self.reset > 0
    }
}

/// splitmix64: the network's draws, from its seed.
#[derive(Debug, Default)]
struct Draws(u64);

impl Draws {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Whether an event of `per_mille` happens.
    fn hit(&mut self, per_mille: u16) -> bool {
        per_mille > 0 && self.next() % 1000 < u64::from(per_mille)
    }
}

type Accepted = (Link, SocketAddr);

#[derive(Default)]
struct State {
    listeners: HashMap<SocketAddr, mpsc::UnboundedSender<Accepted>>,
    faults: BTreeMap<(SocketAddr, SocketAddr), Fault>,
    /// Live write sides, per direction, to close when a link is cut.
    pipes: BTreeMap<(SocketAddr, SocketAddr), Vec<Weak<MemWrite>>>,
    next_port: u16,
    /// Frames and bytes sent, per direction (what crossed the wire: copies and
    /// retransmissions included).
    sent: BTreeMap<(SocketAddr, SocketAddr), (u64, u64)>,
    draws: Draws,
    clock: Clock,
}

/// The network's clock, for when frames arrive. Hubs on runtimes of their own (the
/// simulator) have clocks of their own that cannot be compared: they share the world's
/// time instead, in microseconds, which the simulator steps. Otherwise, the time of
/// the runtime since the network's first frame.
#[derive(Clone, Debug, Default)]
enum Clock {
    #[default]
    Unset,
    Runtime(Instant),
    World(Arc<AtomicU64>),
}

impl Clock {
    fn now(&mut self) -> Duration {
        match self {
            Clock::World(us) => Duration::from_micros(us.load(Ordering::SeqCst)),
            Clock::Runtime(base) => Instant::now().saturating_duration_since(*base),
            Clock::Unset => {
                *self = Clock::Runtime(Instant::now());
                Duration::ZERO
            }
        }
    }
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
    /// A network whose per-frame faults draw from `seed`.
    pub(crate) fn seeded(seed: u64) -> Self {
        let net = Self::default();
        net.state.lock().unwrap().draws = Draws(seed ^ 0x6E65_7477_6F72_6B00);
        net
    }

    /// Times the frames by the world's time (microseconds, stepped by the simulator).
    pub(crate) fn use_world_clock(&self, clock: Arc<AtomicU64>) {
        self.state.lock().unwrap().clock = Clock::World(clock);
    }

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
    /// closes the connections on it now; so does the end of a black hole (the frames it
    /// swallowed are gone: a TCP connection that lost them would have given up and
    /// reset, never gone on without them).
    pub(crate) fn set_fault(&self, from: SocketAddr, to: SocketAddr, fault: Fault) {
        let closing: Vec<Arc<MemWrite>> = {
            let mut st = self.state.lock().unwrap();
            let was_black_hole = st.faults.get(&(from, to)).is_some_and(|f| f.black_hole);
            if fault == Fault::default() {
                st.faults.remove(&(from, to));
            } else {
                st.faults.insert((from, to), fault);
            }
            if fault.cut || (was_black_hole && !fault.black_hole) {
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

    /// Frames and bytes sent from `addr` so far, to anyone (length prefixes included).
    pub(crate) fn sent(&self, addr: SocketAddr) -> (u64, u64) {
        let st = self.state.lock().unwrap();
        st.sent
            .range((addr, SocketAddr::from(([0, 0, 0, 0], 0)))..)
            .take_while(|((from, _), _)| *from == addr)
            .fold((0, 0), |(f, b), (_, (df, db))| (f + df, b + db))
    }

    /// Frames and bytes sent from `from` to `to` so far.
    pub(crate) fn sent_to(&self, from: SocketAddr, to: SocketAddr) -> (u64, u64) {
        let st = self.state.lock().unwrap();
        st.sent.get(&(from, to)).copied().unwrap_or_default()
    }

    /// Heals every link (a black hole's connections close, as in [`Self::set_fault`]).
    pub(crate) fn heal_all(&self) {
        let links: Vec<(SocketAddr, SocketAddr)> =
            self.state.lock().unwrap().faults.keys().copied().collect();
        for (from, to) in links {
            self.set_fault(from, to, Fault::default());
        }
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
    /// reader, at `to`. `conn` is shared by both directions (a reset closes both).
    fn pipe(
        &self,
        from: SocketAddr,
        to: SocketAddr,
        conn: &Arc<Conn>,
    ) -> (Arc<MemWrite>, super::link::FrameRead, FrameLimit) {
        let (wire, arrive) = mpsc::unbounded_channel::<Wire>();
        let write = Arc::new(MemWrite {
            from,
            to,
            net: Arc::downgrade(&self.state),
            conn: conn.clone(),
            inner: Mutex::new(WriteState {
                wire: Some(wire),
                partial: Vec::new(),
                seq: 0,
                last: None,
            }),
        });
        conn.writes.lock().unwrap().push(Arc::downgrade(&write));
        self.state
            .lock()
            .unwrap()
            .pipes
            .entry((from, to))
            .or_default()
            .push(Arc::downgrade(&write));
        let reader = Reader {
            arrive,
            net: Arc::downgrade(&self.state),
            seen: 0,
            conn: conn.clone(),
            limit: FrameLimit::handshake(),
            done: false,
        };
        let limit = reader.limit.clone();
        let read = futures_util::stream::unfold(reader, |mut r| async move {
            let item = r.next().await?;
            Some((item, r))
        });
        (write, Box::pin(read), limit)
    }
}

/// What crosses the wire: a frame's sequence number, when it arrives by the network's
/// clock (`None`: now), the frame.
type Wire = (u64, Option<Duration>, Bytes);

/// What both directions of one connection share.
#[derive(Default)]
struct Conn {
    /// It was reset: both directions are closed, undelivered frames are lost.
    reset: AtomicBool,
    writes: Mutex<Vec<Weak<MemWrite>>>,
}

impl Conn {
    /// Resets the connection: both directions close now.
    fn reset(&self) {
        self.reset.store(true, Ordering::SeqCst);
        let writes: Vec<_> = self.writes.lock().unwrap().drain(..).collect();
        for w in writes.iter().filter_map(Weak::upgrade) {
            w.shutdown();
        }
    }

    fn is_reset(&self) -> bool {
        self.reset.load(Ordering::SeqCst)
    }
}

/// The receiving end of one direction: waits until each frame arrives, drops copies
/// it has seen, ends with an error on a reset.
struct Reader {
    arrive: mpsc::UnboundedReceiver<Wire>,
    net: Weak<Mutex<State>>,
    /// The highest sequence number delivered.
    seen: u64,
    conn: Arc<Conn>,
    limit: FrameLimit,
    done: bool,
}

impl Reader {
    async fn next(&mut self) -> Option<io::Result<Bytes>> {
        if self.done {
            return None;
        }
        loop {
            let Some((seq, at, frame)) = self.arrive.recv().await else {
                self.done = true;
                return self
                    .conn
                    .is_reset()
                    .then(|| Err(io::ErrorKind::ConnectionReset.into()));
            };
            if let Some(at) = at {
                // Each runtime's clock runs with the network's (the simulator steps them
                // together): wait on ours for what is left.
                loop {
                    let now = self
                        .net
                        .upgrade()
                        .map_or(at, |st| st.lock().unwrap().clock.now());
                    if now >= at {
                        break;
                    }
                    tokio::time::sleep(at - now).await;
                }
            }
            if self.conn.is_reset() {
                self.done = true;
                return Some(Err(io::ErrorKind::ConnectionReset.into()));
            }
            if seq <= self.seen {
                continue;
            }
            self.seen = seq;
            let max = self.limit.get();
            return Some(if frame.len() > max {
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("frame of {} bytes exceeds the limit of {max}", frame.len()),
                ))
            } else {
                Ok(frame)
            });
        }
    }
}

/// A [`MemoryNetwork`] as one address sees it: its dials come from that address, so
/// the faults between two nodes' addresses apply to their connections.
#[derive(Clone, Debug)]
pub(crate) struct MemEndpoint {
    net: MemoryNetwork,
    me: SocketAddr,
}

impl Network for MemEndpoint {
    fn dial(&self, to: SocketAddr) -> BoxFuture<'static, io::Result<Link>> {
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
            let conn = Arc::new(Conn::default());
            let (out_write, out_read, out_limit) = net.pipe(from, to, &conn);
            let (in_write, in_read, in_limit) = net.pipe(to, from, &conn);
            let theirs = Link {
                read: out_read,
                write: in_write,
                limit: out_limit,
            };
            accept
                .send((theirs, from))
                .map_err(|_| io::Error::from(io::ErrorKind::ConnectionRefused))?;
            Ok(Link {
                read: in_read,
                write: out_write,
                limit: in_limit,
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
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(Link, SocketAddr)>> {
        Box::pin(async move {
            self.rx
                .recv()
                .await
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
        })
    }
}

struct WriteState {
    /// `None` once this direction is closed.
    wire: Option<mpsc::UnboundedSender<Wire>>,
    /// Bytes of a frame not written whole yet.
    partial: Vec<u8>,
    /// The sequence number of the last frame written.
    seq: u64,
    /// When the last frame written arrives: none arrives before it (in order).
    last: Option<Duration>,
}

/// The write side of one direction of an in-memory connection.
struct MemWrite {
    from: SocketAddr,
    to: SocketAddr,
    net: Weak<Mutex<State>>,
    conn: Arc<Conn>,
    inner: Mutex<WriteState>,
}

/// What the wire did to one frame: how much later it arrives, how many times it
/// crossed, whether the connection was reset at it.
#[derive(Default)]
struct Fate {
    late: Duration,
    crossings: u64,
    reset: bool,
}

impl MemWrite {
    /// The link's fault, and for each of `frames` frames what the wire does to it.
    fn fates(&self, frames: usize) -> (Fault, Duration, Vec<Fate>) {
        let Some(st) = self.net.upgrade() else {
            return (Fault::default(), Duration::ZERO, Vec::new());
        };
        let mut st = st.lock().unwrap();
        let now = st.clock.now();
        let fault = st
            .faults
            .get(&(self.from, self.to))
            .copied()
            .unwrap_or_default();
        if !fault.draws() {
            return (fault, now, Vec::new());
        }
        let fates = (0..frames)
            .map(|_| {
                let mut fate = Fate {
                    late: Duration::ZERO,
                    crossings: 1,
                    reset: st.draws.hit(fault.reset),
                };
                let mut rto = RETRANSMIT;
                while st.draws.hit(fault.loss) {
                    fate.late += rto;
                    fate.crossings += 1;
                    rto = (rto * 2).min(Duration::from_secs(4));
                }
                if st.draws.hit(fault.duplicate) {
                    fate.crossings += 1;
                }
                if st.draws.hit(fault.reorder) {
                    let jitter = JITTER.as_micros() as u64;
                    fate.late += Duration::from_micros(1 + st.draws.next() % jitter);
                }
                fate
            })
            .collect();
        (fault, now, fates)
    }

    fn count(&self, frames: u64, bytes: u64) {
        if let Some(st) = self.net.upgrade() {
            let mut st = st.lock().unwrap();
            let sent = st.sent.entry((self.from, self.to)).or_default();
            sent.0 += frames;
            sent.1 += bytes;
        }
    }
}

impl LinkWrite for MemWrite {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        if self.conn.is_reset() {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        let (fault, now, fates) = self.fates(frames_in(buf) as usize + 1);
        if fault.cut {
            self.shutdown();
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        let mut inner = self.inner.lock().unwrap();
        let Some(wire) = inner.wire.clone() else {
            return Err(io::ErrorKind::BrokenPipe.into());
        };
        inner.partial.extend_from_slice(buf);
        let (mut extra_frames, mut extra_bytes) = (0u64, 0u64);
        let mut fates = fates.into_iter();
        let mut reset = false;
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
            let fate = fates.next().unwrap_or_default();
            if fate.reset {
                reset = true;
                break;
            }
            let late = fault.delay + fate.late;
            let when = if late.is_zero() {
                inner.last.filter(|last| *last > now)
            } else {
                let when = now + late;
                Some(inner.last.map_or(when, |last| last.max(when)))
            };
            inner.last = when;
            inner.seq += 1;
            let seq = inner.seq;
            for _ in 0..fate.crossings.max(1) {
                // The receiving end is gone (its process died): the bytes are taken, as
                // a socket's send buffer takes them, and lost. This end learns of the
                // death from its own reader, after the frames the dead end sent before
                // it died, as over TCP (their data arrives before the reset).
                let _ = wire.send((seq, when, frame.clone()));
            }
            extra_frames += fate.crossings.saturating_sub(1);
            extra_bytes += fate.crossings.saturating_sub(1) * (len as u64 + 4);
        }
        inner.partial.drain(..at);
        drop(inner);
        self.count(
            frames_in(buf) + extra_frames,
            buf.len() as u64 + extra_bytes,
        );
        if reset {
            self.conn.reset();
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        Ok(buf.len())
    }

    fn writable(&self) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn shutdown(&self) {
        // The reader sees the end once the frames already sent are delivered.
        self.inner.lock().unwrap().wire = None;
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
