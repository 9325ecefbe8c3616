//! Authenticated gossip: chitchat's datagrams, each with a counter and a MAC.
//!
//! ```text
//!  chitchat ─send(to, envelope)─► codec socket ─(loopback)─► encoder: its bytes
//!            bytes ‖ counter ‖ HMAC(key, "gossip" ‖ hub id ‖ from ‖ to ‖ counter ‖ bytes) ─► to
//!  from ─► public socket: MAC checked (any key held), counter not seen from `from`
//!            ─► mirror of `from` ─(loopback)─► codec socket ─► chitchat, as from `from`
//! ```
//!
//! chitchat keeps its wire encoding to itself: a [`chitchat::transport::Transport`] is
//! handed envelopes, not bytes. So this one lets chitchat's own UDP socket encode and
//! decode them over loopback (a socket of its own, bound to 127.0.0.1), and signs and
//! checks the bytes on the way out and in. Each peer address has a loopback "mirror"
//! socket that forwards its checked datagrams, so that the codec socket sees them come
//! from an address that maps back to the peer. A datagram whose MAC matches no key, or
//! whose counter was seen from that address (a replay), or that is too old for the
//! window, is dropped and counted. The MAC covers both addresses: a datagram cannot be
//! replayed to another member either. Counters start from the clock in nanoseconds,
//! so a restarted sender goes on above what it sent before.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpSocket as CodecSocket};
use chitchat::ChitchatEnvelope;
use tokio::net::UdpSocket;

use crate::net::auth::ClusterAuth;

/// The bytes added to each datagram: the counter, then the MAC.
const TRAILER: usize = 8 + 32;
/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_507;
/// How many counters below the highest seen from an address are still taken, once each.
const WINDOW: u64 = 1024;
/// At most this many peer addresses have a mirror socket (the oldest go first).
const MAX_MIRRORS: usize = 4096;

/// Chitchat's transport, authenticated with the cluster key.
pub(crate) struct AuthTransport {
    auth: Arc<ClusterAuth>,
    hub_id: String,
    /// Where a stranger's address goes (the hub reports it).
    strangers: Strangers,
}

/// Told the address of each sender whose datagram had no valid MAC (at most once a
/// second per address).
pub(crate) type Strangers = Arc<dyn Fn(SocketAddr) + Send + Sync>;

/// The answer to a datagram without a valid MAC, so that a hub with another key (or
/// none) can say why it found no cluster. It carries nothing of the node; it is not
/// authenticated (anyone can send it: it only ever feeds an error message); it is never
/// answered.
pub(crate) const REFUSED: &[u8] = b"processhub/1 gossip refused";

impl AuthTransport {
    pub(crate) fn new(auth: Arc<ClusterAuth>, hub_id: &str, strangers: Strangers) -> Self {
        Self {
            auth,
            hub_id: hub_id.to_string(),
            strangers,
        }
    }
}

#[async_trait]
impl Transport for AuthTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let public = UdpSocket::bind(listen_addr).await?;
        let me = public.local_addr()?;
        let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
        let codec = CodecSocket::open(loopback).await?;
        let codec_addr = codec.local_addr()?;
        let encoder = UdpSocket::bind(loopback).await?;
        let encoder_addr = encoder.local_addr()?;
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Ok(Box::new(AuthSocket {
            auth: Arc::clone(&self.auth),
            hub_id: self.hub_id.clone(),
            me,
            public,
            codec,
            codec_addr,
            encoder,
            encoder_addr,
            mirrors: HashMap::new(),
            mirror_order: VecDeque::new(),
            from_mirror: HashMap::new(),
            seen: HashMap::new(),
            counter: start,
            buf: vec![0; MAX_DATAGRAM].into_boxed_slice(),
            dropped: 0,
            strangers: Arc::clone(&self.strangers),
            answered: HashMap::new(),
        }))
    }
}

/// What has been seen from one address: the highest counter, and which of the
/// [`WINDOW`] below it.
#[derive(Default)]
struct Seen {
    highest: u64,
    /// Bit `i`: counter `highest - i` was seen.
    bits: [u64; (WINDOW / 64) as usize],
}

impl Seen {
    /// Whether `counter` is new (and marks it seen).
    fn take(&mut self, counter: u64) -> bool {
        if counter > self.highest {
            let shift = counter - self.highest;
            self.shift(shift);
            self.highest = counter;
            self.bits[0] |= 1;
            return true;
        }
        let back = self.highest - counter;
        if back >= WINDOW {
            return false;
        }
        let (word, bit) = ((back / 64) as usize, back % 64);
        let new = self.bits[word] & (1 << bit) == 0;
        self.bits[word] |= 1 << bit;
        new
    }

    /// Moves the window up by `by`.
    fn shift(&mut self, by: u64) {
        if by >= WINDOW {
            self.bits = Default::default();
            return;
        }
        let (words, bits) = ((by / 64) as usize, by % 64);
        let n = self.bits.len();
        for i in (0..n).rev() {
            let mut v = if i >= words {
                self.bits[i - words] << bits
            } else {
                0
            };
            if bits > 0 && i > words {
                v |= self.bits[i - words - 1] >> (64 - bits);
            }
            self.bits[i] = v;
        }
    }
}

/// What a datagram turned out to be.
enum Checked {
    /// Signed with a key held here, and new: its chitchat bytes.
    Good(usize),
    /// Signed, but its counter was seen already (or is below the window).
    Replayed,
    /// A member's answer that our MAC was wrong.
    Refusal,
    /// Not signed with any key held here.
    Stranger,
}

struct AuthSocket {
    auth: Arc<ClusterAuth>,
    hub_id: String,
    me: SocketAddr,
    public: UdpSocket,
    /// chitchat's own socket, on loopback: it encodes what goes out (to the encoder)
    /// and decodes what came in (from a mirror).
    codec: CodecSocket,
    codec_addr: SocketAddr,
    encoder: UdpSocket,
    encoder_addr: SocketAddr,
    /// A loopback socket per peer address, and back.
    mirrors: HashMap<SocketAddr, UdpSocket>,
    mirror_order: VecDeque<SocketAddr>,
    from_mirror: HashMap<SocketAddr, SocketAddr>,
    seen: HashMap<SocketAddr, Seen>,
    counter: u64,
    buf: Box<[u8]>,
    dropped: u64,
    strangers: Strangers,
    /// When each stranger was last answered [`REFUSED`] (and reported).
    answered: HashMap<SocketAddr, Instant>,
}

impl AuthSocket {
    /// The mirror of `peer`, made if it has none.
    async fn mirror(&mut self, peer: SocketAddr) -> anyhow::Result<&UdpSocket> {
        if !self.mirrors.contains_key(&peer) {
            if self.mirrors.len() >= MAX_MIRRORS {
                if let Some(old) = self.mirror_order.pop_front() {
                    if let Some(m) = self.mirrors.remove(&old) {
                        if let Ok(a) = m.local_addr() {
                            self.from_mirror.remove(&a);
                        }
                    }
                    self.seen.remove(&old);
                }
            }
            let m = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
            self.from_mirror.insert(m.local_addr()?, peer);
            self.mirrors.insert(peer, m);
            self.mirror_order.push_back(peer);
        }
        Ok(&self.mirrors[&peer])
    }

    /// Checks the datagram of `n` bytes from `from` in the buffer.
    fn check(&mut self, from: SocketAddr, n: usize) -> Checked {
        if &self.buf[..n] == REFUSED {
            return Checked::Refusal;
        }
        if n < TRAILER {
            return Checked::Stranger;
        }
        let body = n - TRAILER;
        let mut counter = [0u8; 8];
        counter.copy_from_slice(&self.buf[body..body + 8]);
        let counter = u64::from_le_bytes(counter);
        let mut mac = [0u8; 32];
        mac.copy_from_slice(&self.buf[body + 8..n]);
        if !self.auth.verify_datagram(
            &self.hub_id,
            from,
            self.me,
            counter,
            &self.buf[..body],
            &mac,
        ) {
            return Checked::Stranger;
        }
        if self.seen.entry(from).or_default().take(counter) {
            Checked::Good(body)
        } else {
            Checked::Replayed
        }
    }

    /// A datagram from `from` had no valid MAC: logged, reported and answered
    /// [`REFUSED`], at most once a second per address.
    async fn stranger(&mut self, from: SocketAddr) {
        self.dropped += 1;
        let now = Instant::now();
        if self
            .answered
            .get(&from)
            .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(1))
        {
            return;
        }
        if self.answered.len() >= MAX_MIRRORS {
            self.answered.clear();
        }
        self.answered.insert(from, now);
        tracing::warn!(%from, dropped = self.dropped,
            "dropped gossip without a valid MAC: is its cluster key this cluster's?");
        (self.strangers)(from);
        let _ = self.public.send_to(REFUSED, from).await;
    }
}

#[async_trait]
impl Socket for AuthSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.me)
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        // Whatever an earlier, cancelled send left in the encoder goes.
        while self.encoder.try_recv_from(&mut self.buf).is_ok() {}
        self.codec.send(self.encoder_addr, envelope).await?;
        let (n, _) = self.encoder.recv_from(&mut self.buf).await?;
        if n + TRAILER > MAX_DATAGRAM {
            anyhow::bail!("a gossip message of {n} bytes leaves no room for its MAC");
        }
        self.counter += 1;
        let mac = self
            .auth
            .sign_datagram(&self.hub_id, self.me, to, self.counter, &self.buf[..n]);
        self.buf[n..n + 8].copy_from_slice(&self.counter.to_le_bytes());
        self.buf[n + 8..n + TRAILER].copy_from_slice(&mac);
        let sent = self.public.send_to(&self.buf[..n + TRAILER], to).await?;
        Ok(SendOutcome {
            num_bytes_sent: sent,
        })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            // Both branches may be cancelled (chitchat selects over this); what came
            // in is mapped back to its sender by the mirror it came through, so no
            // state is shared between the two.
            tokio::select! {
                decoded = self.codec.recv() => {
                    let mut out = decoded?;
                    match self.from_mirror.get(&out.from_addr) {
                        Some(peer) => {
                            out.from_addr = *peer;
                            return Ok(out);
                        }
                        None => continue,
                    }
                }
                got = self.public.recv_from(&mut self.buf) => {
                    let (n, from) = match got {
                        Ok(x) => x,
                        // A port unreachable from an earlier send, and the like.
                        Err(e) if e.kind() != std::io::ErrorKind::OutOfMemory => {
                            tracing::debug!("gossip recv: {e}");
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    };
                    let body = match self.check(from, n) {
                        Checked::Good(body) => body,
                        Checked::Replayed => continue,
                        Checked::Refusal => {
                            // A member found our MAC wrong: the keys differ.
                            self.auth.refused();
                            continue;
                        }
                        Checked::Stranger => {
                            self.stranger(from).await;
                            continue;
                        }
                    };
                    let bytes = self.buf[..body].to_vec();
                    let codec_addr = self.codec_addr;
                    let mirror = self.mirror(from).await?;
                    // (Cancelled before it is sent, the datagram is lost, as UDP may
                    // lose it: nothing else is half done.)
                    let _ = mirror.send_to(&bytes, codec_addr).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::auth::Nonces;
    use chitchat::{ChitchatMessage, ProtocolVersion};
    use std::sync::Mutex;

    const KEY: &str = "gossip-tests-cluster-key";

    fn envelope() -> ChitchatEnvelope {
        ChitchatEnvelope {
            version: ProtocolVersion::V0,
            message: ChitchatMessage::BadCluster,
        }
    }

    async fn socket(
        key: &str,
        strangers: &Arc<Mutex<Vec<SocketAddr>>>,
    ) -> (Box<dyn Socket>, Arc<ClusterAuth>) {
        let auth = Arc::new(ClusterAuth::new(
            vec![key.as_bytes().to_vec()],
            "hub",
            Nonces::Os,
        ));
        let seen = Arc::clone(strangers);
        let t = AuthTransport::new(
            Arc::clone(&auth),
            "hub",
            Arc::new(move |a| seen.lock().unwrap().push(a)),
        );
        let s = t.open(([127, 0, 0, 1], 0).into()).await.unwrap();
        (s, auth)
    }

    /// Whether `s` hands chitchat something within 300 ms (and from where).
    async fn heard(s: &mut Box<dyn Socket>) -> Option<SocketAddr> {
        tokio::time::timeout(Duration::from_millis(300), s.recv())
            .await
            .ok()
            .map(|r| r.unwrap().from_addr)
    }

    /// A member's datagram arrives as from the member; a stranger's (another key) is
    /// dropped, reported, and answered with a refusal its sender counts; a member's
    /// datagram sent elsewhere and replayed from there, or replayed as it was, is
    /// dropped.
    #[tokio::test]
    async fn only_signed_new_datagrams_for_this_node_reach_chitchat() {
        let strangers = Arc::new(Mutex::new(Vec::new()));
        let (mut a, _) = socket(KEY, &strangers).await;
        let (mut b, b_auth) = socket(KEY, &strangers).await;
        let (mut c, c_auth) = socket("another-cluster-key-0123", &strangers).await;
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let c_addr = c.local_addr().unwrap();

        a.send(b_addr, envelope()).await.unwrap();
        assert_eq!(heard(&mut b).await, Some(a_addr));

        c.send(b_addr, envelope()).await.unwrap();
        assert_eq!(heard(&mut b).await, None, "another key");
        assert_eq!(*strangers.lock().unwrap(), vec![c_addr]);
        assert_eq!(heard(&mut c).await, None, "a refusal is no gossip");
        assert_eq!(c_auth.refusals(), 1, "but the stranger counts it");

        // A datagram a member sent to `r`, replayed from `r` to `b`.
        let r = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let r_addr = r.local_addr().unwrap();
        a.send(r_addr, envelope()).await.unwrap();
        let mut d = vec![0u8; 2048];
        let (n, _) = r.recv_from(&mut d).await.unwrap();
        r.send_to(&d[..n], b_addr).await.unwrap();
        assert_eq!(heard(&mut b).await, None, "signed for another node");

        // The same bytes signed for (r → b), delivered twice.
        let body = &d[..n - TRAILER];
        let mac = b_auth.sign_datagram("hub", r_addr, b_addr, 5, body);
        let mut signed = body.to_vec();
        signed.extend_from_slice(&5u64.to_le_bytes());
        signed.extend_from_slice(&mac);
        r.send_to(&signed, b_addr).await.unwrap();
        assert_eq!(heard(&mut b).await, Some(r_addr));
        r.send_to(&signed, b_addr).await.unwrap();
        assert_eq!(heard(&mut b).await, None, "a replay");
    }

    #[test]
    fn a_counter_is_taken_once_within_the_window_and_never_below_it() {
        let mut s = Seen::default();
        assert!(s.take(100));
        assert!(!s.take(100), "a replay");
        assert!(s.take(99), "late, in the window");
        assert!(!s.take(99));
        assert!(s.take(170), "a jump of more than a word");
        assert!(!s.take(100) && !s.take(99) && !s.take(170));
        assert!(s.take(101));
        assert!(s.take(170 + WINDOW), "a jump past the window");
        assert!(!s.take(170), "below the window now");
        assert!(s.take(171 + 1), "inside it");
    }
}
