//! Node-to-node messaging over TCP: one connection per node pair, many requests in
//! flight on it, a writer task that batches frames.
//!
//! ```text
//!  request() ─► pending[rid] = oneshot ─► writer task ─► socket ─► peer reader
//!                                                                   │ spawn
//!  oneshot ◄─ reader task ◄─ socket ◄─ writer task ◄─ Response ◄── Inbound::request
//! ```
//!
//! The node with the smaller [`NodeId`] dials; the other waits to be dialed, so two
//! nodes never open two connections at once. The dialer's `Hello` names the hub id and
//! the incarnation it expects: a peer of another hub, or a restarted node reached with a
//! stale incarnation, is refused; then each side proves it holds the cluster key
//! (`net::auth`) before anything else is read or sent. Malformed or oversize frames close the connection with
//! a logged error; the failure detector, not a closed socket, decides who is dead.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::net::auth::{self, ClusterAuth, Side, Transcript};
use crate::net::link::{write_all, FrameRead, Link, LinkWrite, Listener, Network};
use crate::net::tls;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::core::registry::Push;
use crate::net::conn::{encode_response, Conn, ForgetOnDrop, Outbox, Pending, KEEP_BUFFER, SWEEP};
use crate::net::error::{ConnError, TransportError};
use crate::net::wire::{self, EncodedCall};
use crate::net::wire::{decode, encode, encode_push};
use crate::net::wire::{Call, Command, Frame, Request, Response};
use crate::node::NodeId;

/// How long a handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a dialer waits for the peer's answer to its `Hello` before it dials again:
/// an answer takes a round trip, and a `Hello` lost on a link that was cut (and has
/// healed since) must not hold the connection back for the whole handshake timeout.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest a closing transport waits to go quiet.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How long a call waits for a connection to the owner before it looks again where the
/// child runs (its node may have died, and the registry moved it).
pub(crate) const RECONNECT_WAIT: Duration = Duration::from_millis(100);

/// A call as it arrived: names borrowed from its frame, method and arguments shared
/// with it.
pub(crate) struct InCall<'a> {
    pub(crate) rid: u64,
    pub(crate) id: &'a str,
    pub(crate) type_name: &'a str,
    pub(crate) call: EncodedCall,
}

/// Where responses go: encoded and written to the connection they answer, by whichever
/// thread has them (the child's actor for calls), with no hop back to the reader.
pub(crate) type ReplySink = Arc<dyn Fn(Vec<(u64, Response)>) + Send + Sync>;

/// Work a connection drives for the requests it serves; each answers through the
/// connection's [`ReplySink`].
pub(crate) type Serving = BoxFuture<'static, ()>;

/// The most frames taken off a connection before serving them.
const MAX_BATCH: usize = 256;

/// How many bytes of frames a connection over its in-flight limit holds back before it
/// stops reading (the peer's writes then wait: TCP's own flow control).
const HELD_BYTES: usize = 8 << 20;

/// The limits a transport applies to what its peers send.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// The largest frame.
    pub(crate) max_frame: usize,
    /// Requests served at once per connection; the next ones wait.
    pub(crate) max_in_flight: usize,
}

/// What the hub does with what arrives.
pub(crate) trait Inbound: Send + Sync + 'static {
    /// Serves the calls that arrived together: the synchronous part (lookups) runs
    /// now; every call is answered through `reply`, by the futures pushed onto `out`
    /// or the child's actor.
    fn calls(
        self: Arc<Self>,
        from: NodeId,
        calls: Vec<InCall<'_>>,
        reply: &ReplySink,
        out: &mut Vec<Serving>,
    );
    /// Answers a request other than a call: the synchronous part runs now, on the
    /// borrowed frame; the returned future does the rest.
    fn request(self: Arc<Self>, from: NodeId, req: Command<'_>) -> BoxFuture<'static, Response>;
    /// Applies a push, in arrival order.
    fn push(&self, from: NodeId, push: Push);
    /// A standby's word that it holds a write this node's caller made.
    fn held(&self, from: NodeId, held: wire::Held);
    /// A connection to `peer` is up, the handshake made as `as_me`: `register` makes
    /// it usable for requests and broadcasts; call it after sending what must come
    /// first on it. If this node is no longer `as_me` (it rejoined as a new
    /// incarnation during the handshake), close it instead: the peer would take what
    /// the new life says for the old one's.
    fn connected(&self, peer: NodeId, as_me: NodeId, conn: &Arc<Conn>, register: &dyn Fn());
    /// A peer at `addr` did not prove it holds the cluster key (`dialed`: it is one this
    /// node dialed).
    fn unauthenticated(&self, addr: SocketAddr, dialed: bool);
}

/// At most this many handshakes under way from one IP address; more connections from
/// it are closed at once, until one ends (within [`HANDSHAKE_TIMEOUT`]).
pub(crate) const MAX_HANDSHAKES_PER_IP: usize = 32;
/// At most this many handshakes under way at all.
pub(crate) const MAX_HANDSHAKES: usize = 512;

/// A handshake under way, counted until it ends.
struct HandshakeSlot {
    transport: Arc<Transport>,
    ip: std::net::IpAddr,
}

impl HandshakeSlot {
    /// A slot for a handshake from `ip`, if the limits leave one.
    fn take(t: &Arc<Transport>, ip: std::net::IpAddr) -> Option<Self> {
        let mut h = t.handshakes.lock().unwrap();
        let total: usize = h.values().sum();
        let from_ip = h.entry(ip).or_default();
        if *from_ip >= MAX_HANDSHAKES_PER_IP || total >= MAX_HANDSHAKES {
            return None;
        }
        *from_ip += 1;
        Some(Self {
            transport: Arc::clone(t),
            ip,
        })
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut h = self.transport.handshakes.lock().unwrap();
        if let Some(n) = h.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                h.remove(&self.ip);
            }
        }
    }
}

/// The TCP layer of one hub.
pub(crate) struct Transport {
    /// This node (a new incarnation after a rejoin).
    me: Mutex<NodeId>,
    hub_id: String,
    /// The cluster key(s): who may connect.
    auth: Arc<ClusterAuth>,
    /// Handshakes under way, per IP address.
    handshakes: Mutex<HashMap<std::net::IpAddr, usize>>,
    max_frame: usize,
    /// Requests served at once per connection (see [`Limits`]).
    max_in_flight: u64,
    /// The last failed TLS handshake.
    tls_refusal: Mutex<Option<String>>,
    conns: Mutex<BTreeMap<NodeId, Arc<Conn>>>,
    /// Bumped whenever `conns` changes, to wake requests waiting for a connection.
    version: crate::changes::Changes,
    /// Peers we should be connected to (the live members).
    wanted: Mutex<BTreeSet<NodeId>>,
    inbound: Weak<dyn Inbound>,
    /// Where peers are dialed: TCP, or the in-memory network.
    network: Arc<dyn Network>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").field("me", &self.me()).finish()
    }
}

impl Transport {
    /// A transport for `me`, serving `listener`.
    pub(crate) fn start(
        me: NodeId,
        hub_id: String,
        auth: Arc<ClusterAuth>,
        limits: Limits,
        network: Arc<dyn Network>,
        listener: Box<dyn Listener>,
        inbound: Weak<dyn Inbound>,
    ) -> Arc<Self> {
        let t = Arc::new(Self {
            me: Mutex::new(me),
            hub_id,
            auth,
            handshakes: Mutex::new(HashMap::new()),
            max_frame: limits.max_frame,
            max_in_flight: limits.max_in_flight as u64,
            tls_refusal: Mutex::new(None),
            conns: Mutex::new(BTreeMap::new()),
            version: Default::default(),
            wanted: Mutex::new(BTreeSet::new()),
            inbound,
            network,
            shutdown: CancellationToken::new(),
        });
        tokio::spawn(Arc::clone(&t).accept_loop(listener));
        t
    }

    fn me(&self) -> NodeId {
        *self.me.lock().unwrap()
    }

    /// This node rejoins as `me`: every connection of its previous life closes (the
    /// peers dial, or are dialed by, the new incarnation once they see it).
    pub(crate) fn reincarnate(&self, me: NodeId) {
        *self.me.lock().unwrap() = me;
        self.wanted.lock().unwrap().clear();
        let conns = std::mem::take(&mut *self.conns.lock().unwrap());
        for (_, c) in conns {
            c.close();
        }
        self.version.mark();
    }

    /// The frame limit.
    pub(crate) fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Closes every connection, after what was queued on it is written (for up to a
    /// second: the last frames say goodbye), and stops accepting.
    pub(crate) async fn shutdown(&self) {
        // Go quiet first: answer what is being served, write what is queued, and let
        // peers still routing here (their registries a few milliseconds behind) be told
        // where to go, until no request has come for QUIET (at most CLOSE_GRACE).
        let deadline = Instant::now() + CLOSE_GRACE;
        loop {
            let conns = self.connections();
            let now = Instant::now();
            let quiet = conns
                .iter()
                .all(|c| c.closed.is_cancelled() || c.is_quiet(now));
            if quiet || now >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let conns = std::mem::take(&mut *self.conns.lock().unwrap());
        self.shutdown.cancel();
        for (_, c) in conns {
            c.close();
        }
        self.version.mark();
    }

    /// Sets the peers to stay connected to; dials those this node must dial.
    pub(crate) fn set_wanted(self: &Arc<Self>, peers: impl IntoIterator<Item = NodeId>) {
        let me = self.me();
        let peers: BTreeSet<NodeId> = peers.into_iter().filter(|p| *p != me).collect();
        let added: Vec<NodeId> = {
            let mut wanted = self.wanted.lock().unwrap();
            let added = peers.difference(&wanted).copied().collect();
            *wanted = peers;
            added
        };
        // Connections to nodes that are no longer members are left to close by
        // themselves: a node leaving gracefully still needs to hear who took over.
        for peer in added {
            if me < peer {
                tokio::spawn(Arc::clone(self).dial_loop(peer));
            }
        }
    }

    /// Closes every connection at once, running nothing (the simulator's crash: the
    /// kernel closing a killed process's sockets; the peers read what was sent, then
    /// the end).
    #[cfg_attr(not(any(test, feature = "sim")), allow(dead_code))]
    pub(crate) fn sever(&self) {
        for conn in self.connections() {
            conn.close();
        }
    }

    /// `peer` died: the requests awaiting its answer fail now with `Gone`.
    pub(crate) fn peer_died(&self, peer: NodeId) {
        let conn = self.conns.lock().unwrap().get(&peer).cloned();
        if let Some(conn) = conn {
            conn.fail_all(|| TransportError::Gone);
        }
    }

    /// Connections currently up.
    pub(crate) fn connections(&self) -> Vec<Arc<Conn>> {
        self.conns.lock().unwrap().values().cloned().collect()
    }

    /// Sends a push to every connected peer. Call with the registry lock held, so
    /// pushes leave in the order of the changes they report.
    pub(crate) fn broadcast(&self, push: &Push) {
        let conns = self.conns.lock().unwrap();
        if conns.is_empty() {
            return;
        }
        match encode_push(push) {
            Ok(bytes) => {
                for c in conns.values() {
                    c.send_bytes(&bytes, false);
                }
            }
            Err(e) => tracing::error!("could not encode a push: {e}"),
        }
    }

    /// Sends `req` to `peer` and waits for its response until `deadline`.
    pub(crate) async fn request(
        &self,
        peer: NodeId,
        req: Request<'_>,
        deadline: Instant,
    ) -> Result<Response, TransportError> {
        self.request_within(peer, req, Duration::MAX, deadline)
            .await
    }

    /// Like [`Self::request`], but gives up with `NotConnected` if no connection is up by
    /// `connect_wait`: the caller re-resolves (the owner may have died) and tries again.
    ///
    /// With a connection up, the request is sent when this is called, and the future
    /// returned only waits for its response: it holds neither the request nor a wait
    /// for a connection, so a call's future stays small (futures are moved, and a
    /// caller with many calls in flight copies each one: `perf` put those copies at a
    /// tenth of a calling thread's time). Without one, the wait is boxed.
    pub(crate) fn request_within<'a>(
        &'a self,
        peer: NodeId,
        req: Request<'a>,
        connect_wait: Duration,
        deadline: Instant,
    ) -> impl std::future::Future<Output = Result<Response, TransportError>> + Send + 'a {
        let sent = match self.conns.lock().unwrap().get(&peer).cloned() {
            Some(conn) => Sent::Now(Self::send_request(conn, req, deadline, self.max_frame)),
            None => Sent::Later(Box::pin(async move {
                let conn = self.wait_conn(peer, connect_wait, deadline).await?;
                Self::send_request(conn, req, deadline, self.max_frame)
            })),
        };
        async move {
            let (rx, forget) = match sent {
                Sent::Now(sent) => sent?,
                Sent::Later(sending) => sending.await?,
            };
            // Answered by the response, by the sweep at the deadline, or dropped (Lost)
            // when the connection closes: each takes its entry.
            let response = rx.await;
            forget.answered();
            match response {
                Ok(r) => r,
                Err(_) => Err(TransportError::Lost),
            }
        }
    }

    /// Sends `req` on `conn`: the receiver of its response, and the guard that forgets
    /// it if no one waits any more.
    fn send_request(
        conn: Arc<Conn>,
        req: Request<'_>,
        deadline: Instant,
        max_frame: usize,
    ) -> Sending {
        let rid = conn.next_rid.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let alone = {
            let mut pending = conn.pending.lock().unwrap();
            pending.insert(rid, Pending { deadline, tx });
            conn.note_in_flight(pending.len())
        };
        match conn.send_frames([Frame::Request { rid, req }], alone, max_frame) {
            Ok(true) => Ok((
                rx,
                ForgetOnDrop {
                    conn,
                    rid: Some(rid),
                },
            )),
            Ok(false) => {
                conn.pending.lock().unwrap().remove(&rid);
                Err(TransportError::NotConnected)
            }
            Err(e) => {
                conn.pending.lock().unwrap().remove(&rid);
                Err(e)
            }
        }
    }

    /// Whether a connection to `peer` is up, waiting for it up to `wait`.
    pub(crate) async fn connected_within(&self, peer: NodeId, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        self.wait_conn(peer, wait, deadline).await.is_ok()
    }

    /// Sends a frame that has no response to `peer`, if a connection to it is up now
    /// (written at once on this thread if its writer is idle): true if it went out.
    pub(crate) fn send_one_way(&self, peer: NodeId, frame: Frame<'_>) -> bool {
        let conn = self.conns.lock().unwrap().get(&peer).cloned();
        let Some(conn) = conn else {
            return false;
        };
        match conn.send_frames([frame], true, self.max_frame) {
            Ok(sent) => sent,
            Err(e) => {
                tracing::debug!(%peer, "a one-way frame was not sent: {e:?}");
                false
            }
        }
    }

    /// Whether a connection to `peer` is up now.
    pub(crate) fn is_connected(&self, peer: NodeId) -> bool {
        self.conns.lock().unwrap().contains_key(&peer)
    }

    /// The connection to `peer`, waiting for it up to `wait` (and `deadline`).
    async fn wait_conn(
        &self,
        peer: NodeId,
        wait: Duration,
        deadline: Instant,
    ) -> Result<Arc<Conn>, TransportError> {
        if let Some(c) = self.conns.lock().unwrap().get(&peer) {
            return Ok(c.clone());
        }
        let deadline = Instant::now()
            .checked_add(wait)
            .map_or(deadline, |by| by.min(deadline));
        loop {
            let seen = self.version.seen();
            if self.shutdown.is_cancelled() {
                return Err(TransportError::NotConnected);
            }
            if let Some(c) = self.conns.lock().unwrap().get(&peer) {
                return Ok(c.clone());
            }
            if tokio::time::timeout_at(deadline, self.version.after(seen))
                .await
                .is_err()
            {
                return Err(TransportError::NotConnected);
            }
        }
    }

    fn still_wanted(&self, peer: NodeId) -> bool {
        !self.shutdown.is_cancelled() && self.wanted.lock().unwrap().contains(&peer)
    }

    async fn dial_loop(self: Arc<Self>, peer: NodeId) {
        let mut backoff = Duration::from_millis(20);
        while self.still_wanted(peer) {
            if !self.is_connected(peer) {
                match self.dial(peer).await {
                    Ok(()) => backoff = Duration::from_millis(20),
                    Err(ConnError::BadFrame(e)) if tls::is_refusal(&e) => {
                        self.tls_refused(peer.addr(), true, &e);
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                    Err(e) => {
                        tracing::debug!(%peer, "dial failed: {e}");
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
            }
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
        }
    }

    async fn dial(self: &Arc<Self>, peer: NodeId) -> Result<(), ConnError> {
        let dialing = self.network.dial(peer.addr());
        let Link {
            mut read,
            write,
            limit,
        } = tokio::time::timeout(HANDSHAKE_TIMEOUT, dialing)
            .await
            .map_err(|_| ConnError::ConnectTimeout)??;
        let me = self.me();
        let nonce = self.auth.nonce();
        let hello = encode(&Frame::Hello {
            hub_id: self.hub_id.clone(),
            from: me,
            to: peer,
            nonce,
        })
        .map_err(ConnError::Encode)?;
        write_all(&*write, &hello).await?;
        let (their_nonce, their_proof) = match self.answer(&mut read, peer).await? {
            Frame::Challenge { nonce, proof } => (nonce, proof),
            other => return Err(ConnError::Unexpected(format!("{other:?}"))),
        };
        let t = Transcript {
            hub_id: &self.hub_id,
            dialer: me,
            acceptor: peer,
            dialer_nonce: &nonce,
            acceptor_nonce: &their_nonce,
        };
        let Some(key) = self.auth.verify(Side::Acceptor, &t, &their_proof) else {
            // Said, so that the other side learns the keys differ too.
            refuse(&*write, auth::REFUSED_KEY).await;
            self.unauthenticated(peer.addr(), true);
            return Err(ConnError::Unauthenticated);
        };
        let proof = encode(&Frame::Proof {
            proof: self.auth.prove(key, Side::Dialer, &t),
        })
        .map_err(ConnError::Encode)?;
        write_all(&*write, &proof).await?;
        match self.answer(&mut read, peer).await? {
            Frame::Welcome { node } if node == peer => {}
            Frame::Welcome { node } => {
                return Err(ConnError::WrongNode {
                    reached: node,
                    wanted: peer,
                })
            }
            other => return Err(ConnError::Unexpected(format!("{other:?}"))),
        }
        limit.set(self.max_frame);
        self.run_conn(peer, me, read, write);
        Ok(())
    }

    /// The acceptor's next answer in a handshake; a refusal is an error.
    async fn answer(
        &self,
        read: &mut FrameRead,
        peer: NodeId,
    ) -> Result<Frame<'static>, ConnError> {
        let body = next_body(read, WELCOME_TIMEOUT).await?;
        match decode(&body).map_err(ConnError::Malformed)? {
            Frame::Reject { reason } => {
                if reason == auth::REFUSED_KEY {
                    // Our proof matched no key of theirs: the keys differ.
                    self.unauthenticated(peer.addr(), true);
                }
                Err(ConnError::Refused(reason))
            }
            Frame::Challenge { nonce, proof } => Ok(Frame::Challenge { nonce, proof }),
            Frame::Welcome { node } => Ok(Frame::Welcome { node }),
            other => Err(ConnError::Unexpected(format!("{other:?}"))),
        }
    }

    /// How many peers did not prove they hold the cluster key, or refused ours (in a
    /// handshake, or in gossip).
    pub(crate) fn key_refusals(&self) -> u64 {
        self.auth.refusals()
    }

    /// A TLS handshake with `addr` failed (its certificate or ours was refused).
    fn tls_refused(&self, addr: SocketAddr, dialed: bool, e: &std::io::Error) {
        tracing::warn!(%addr, dialed, "{e}");
        *self.tls_refusal.lock().unwrap() = Some(e.to_string());
        if let Some(inbound) = self.inbound.upgrade() {
            inbound.unauthenticated(addr, dialed);
        }
    }

    /// The last failed TLS handshake, if any.
    pub(crate) fn tls_refusal(&self) -> Option<String> {
        self.tls_refusal.lock().unwrap().clone()
    }

    /// A peer at `addr` did not prove it holds the cluster key.
    fn unauthenticated(&self, addr: SocketAddr, dialed: bool) {
        self.auth.refused();
        if let Some(inbound) = self.inbound.upgrade() {
            inbound.unauthenticated(addr, dialed);
        }
    }

    async fn accept_loop(self: Arc<Self>, mut listener: Box<dyn Listener>) {
        loop {
            let accepted = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((link, from)) => {
                    let Some(slot) = HandshakeSlot::take(&self, from.ip()) else {
                        // Too many handshakes under way from there, or at all.
                        tracing::debug!(%from, "closed a connection: too many handshakes");
                        link.write.shutdown();
                        continue;
                    };
                    let t = Arc::clone(&self);
                    tokio::spawn(async move {
                        let _slot = slot;
                        match Arc::clone(&t).accept(link, from).await {
                            Err(ConnError::BadFrame(e)) if tls::is_refusal(&e) => {
                                t.tls_refused(from, false, &e);
                            }
                            Err(e) => tracing::warn!(%from, "refused a connection: {e}"),
                            Ok(()) => {}
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    async fn accept(self: Arc<Self>, link: Link, from: SocketAddr) -> Result<(), ConnError> {
        let Link {
            mut read,
            write,
            limit,
        } = link;
        // The whole handshake within one timeout: a peer that trickles it is cut off.
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        let within = || deadline.saturating_duration_since(Instant::now());
        let body = next_body(&mut read, within()).await?;
        let me = self.me();
        let (peer, their_nonce) = match decode(&body).map_err(ConnError::Malformed)? {
            Frame::Hello {
                hub_id,
                from,
                to,
                nonce,
            } => {
                if hub_id != self.hub_id {
                    refuse(&*write, auth::REFUSED_HUB).await;
                    return Err(ConnError::OtherHub { theirs: hub_id });
                }
                if to != me {
                    refuse(&*write, auth::REFUSED_INCARNATION).await;
                    return Err(ConnError::StaleIncarnation { to, me });
                }
                (from, nonce)
            }
            other => return Err(ConnError::Unexpected(format!("{other:?}"))),
        };
        let nonce = self.auth.nonce();
        let t = Transcript {
            hub_id: &self.hub_id,
            dialer: peer,
            acceptor: me,
            dialer_nonce: &their_nonce,
            acceptor_nonce: &nonce,
        };
        let challenge = encode(&Frame::Challenge {
            nonce,
            proof: self.auth.prove(0, Side::Acceptor, &t),
        })
        .map_err(ConnError::Encode)?;
        write_all(&*write, &challenge).await?;
        let body = next_body(&mut read, within()).await?;
        let proven = match decode(&body).map_err(ConnError::Malformed)? {
            Frame::Proof { proof } => self.auth.verify(Side::Dialer, &t, &proof).is_some(),
            Frame::Reject { reason } if reason == auth::REFUSED_KEY => {
                // The dialer found our proof wrong: the keys differ.
                self.unauthenticated(from, false);
                write.shutdown();
                return Err(ConnError::Unauthenticated);
            }
            other => return Err(ConnError::Unexpected(format!("{other:?}"))),
        };
        if !proven {
            self.unauthenticated(from, false);
            refuse(&*write, auth::REFUSED_KEY).await;
            return Err(ConnError::Unauthenticated);
        }
        let welcome = encode(&Frame::Welcome { node: me }).map_err(ConnError::Encode)?;
        write_all(&*write, &welcome).await?;
        limit.set(self.max_frame);
        self.run_conn(peer, me, read, write);
        Ok(())
    }

    /// Starts the writer and reader of an established connection.
    fn run_conn(
        self: &Arc<Self>,
        peer: NodeId,
        as_me: NodeId,
        mut frames: FrameRead,
        write: Arc<dyn LinkWrite>,
    ) {
        let Some(inbound) = self.inbound.upgrade() else {
            return;
        };
        let conn = Arc::new(Conn {
            peer,
            write: Arc::clone(&write),
            outbox: Mutex::new(Outbox::default()),
            wake_writer: Notify::new(),
            pending: Mutex::new(HashMap::default()),
            next_rid: AtomicU64::new(1),
            closed: self.shutdown.child_token(),
            serving: AtomicU64::new(0),
            room: Notify::new(),
            load: std::sync::atomic::AtomicU32::new(0),
            last_request: AtomicU64::new(0),
            opened: Instant::now(),
        });

        let writer = Arc::clone(&conn);
        tokio::spawn(async move {
            let mut spare = Vec::new();
            let mut sweep = tokio::time::interval(SWEEP);
            sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                // In a fixed order (the same events give the same run): the close, then
                // the sweep (ready every 50 ms at most), then the writes.
                tokio::select! {
                    biased;
                    _ = writer.closed.cancelled() => return,
                    _ = sweep.tick() => {
                        writer.fail_expired(Instant::now());
                        continue;
                    }
                    _ = writer.wake_writer.notified() => {}
                }
                loop {
                    // Swap buffers with the outbox, so that both keep their capacity.
                    spare.clear();
                    {
                        let mut out = writer.outbox.lock().unwrap();
                        if out.buf.is_empty() {
                            out.flushing = false;
                            break;
                        }
                        std::mem::swap(&mut out.buf, &mut spare);
                    }
                    let chunk = &spare;
                    if let Err(e) = write_all(&*write, chunk).await {
                        tracing::debug!(%peer, "write failed: {e}");
                        writer.close();
                        return;
                    }
                    if spare.capacity() > KEEP_BUFFER {
                        spare = Vec::new();
                    }
                }
            }
        });

        // Register under the hub's control: it sends its snapshot first.
        let me = Arc::clone(self);
        let reg_conn = Arc::clone(&conn);
        inbound.connected(peer, as_me, &conn, &|| {
            let old = me.conns.lock().unwrap().insert(peer, Arc::clone(&reg_conn));
            if let Some(old) = old {
                old.close();
            }
            me.version.mark();
        });

        let t = Arc::clone(self);
        let max = self.max_frame;
        let limit = self.max_in_flight;
        let sink_conn = Arc::clone(&conn);
        let reply: ReplySink = Arc::new(move |responses: Vec<(u64, Response)>| {
            let answered = responses.len() as u64;
            {
                let mut out = sink_conn.outbox.lock().unwrap();
                for (rid, resp) in responses {
                    encode_response(&mut out.buf, rid, resp, max);
                }
                sink_conn.flush_locked(out, true);
            }
            let before = sink_conn.serving.fetch_sub(answered, Ordering::Relaxed);
            if before >= limit && before - answered < limit {
                sink_conn.room.notify_one();
            }
        });
        tokio::spawn(async move {
            // Requests waiting on this connection (for a child to wake, a start to
            // finish), driven here rather than spawned one task each.
            let mut serving: FuturesUnordered<Serving> = FuturesUnordered::new();
            let mut bodies: Vec<Bytes> = Vec::new();
            let mut fresh: Vec<Serving> = Vec::new();
            // Frames held back while this connection serves `limit` requests (the
            // requests, and every frame after the first one held but responses, so
            // that the peer's frames keep their order), and their size.
            let mut held: VecDeque<Bytes> = VecDeque::new();
            let mut held_bytes = 0usize;
            loop {
                if !held.is_empty() {
                    let mut room = limit.saturating_sub(conn.serving.load(Ordering::Relaxed));
                    while let Some(front) = held.front() {
                        if is_request(front) {
                            if room == 0 {
                                break;
                            }
                            room -= 1;
                        }
                        let body = held.pop_front().expect("looked at");
                        held_bytes -= body.len();
                        bodies.push(body);
                    }
                    if let Err(e) = serve_frames(&conn, &inbound, &reply, &bodies, &mut fresh) {
                        tracing::error!(%peer, "closing connection: {e}");
                        break;
                    }
                    bodies.clear();
                    serving.extend(fresh.drain(..));
                }
                // In a fixed order: the close, the requests being served (they end;
                // only frames read add more), room for what is held, then the frames
                // (not while too much is held: the peer waits).
                let reading = held_bytes < HELD_BYTES;
                let next = tokio::select! {
                    biased;
                    _ = conn.closed.cancelled() => None,
                    Some(()) = serving.next(), if !serving.is_empty() => continue,
                    _ = conn.room.notified(), if !held.is_empty() => continue,
                    f = frames.next(), if reading => f,
                };
                // Take every frame already read (up to MAX_BATCH), so that calls to
                // the same child reach it together.
                // `Some(None)`: closed by the peer; `Some(Some(e))`: closed for `e`.
                let mut end: Option<Option<ConnError>> = None;
                match next {
                    None => end = Some(None),
                    Some(Err(e)) => end = Some(Some(ConnError::BadFrame(e))),
                    Some(Ok(body)) => bodies.push(body),
                }
                while end.is_none() && bodies.len() < MAX_BATCH {
                    match frames.next().now_or_never() {
                        None => break,
                        Some(None) => end = Some(None),
                        Some(Some(Err(e))) => end = Some(Some(ConnError::BadFrame(e))),
                        Some(Some(Ok(body))) => bodies.push(body),
                    }
                }
                // Over the limit: what does not fit waits (responses to this node's own
                // requests and lease renewals never do).
                let mut room = limit.saturating_sub(conn.serving.load(Ordering::Relaxed));
                if !held.is_empty() || bodies.len() as u64 > room {
                    bodies.retain(|body| {
                        if held.is_empty() && !is_request(body) || never_held(body) {
                            return true;
                        }
                        if held.is_empty() && room > 0 {
                            room -= 1;
                            return true;
                        }
                        held_bytes += body.len();
                        held.push_back(body.clone());
                        false
                    });
                }
                if let Err(e) = serve_frames(&conn, &inbound, &reply, &bodies, &mut fresh) {
                    end = Some(Some(e));
                }
                bodies.clear();
                serving.extend(fresh.drain(..));
                if let Some(reason) = end {
                    if let Some(reason) = reason {
                        tracing::error!(%peer, "closing connection: {reason}");
                    }
                    break;
                }
            }
            t.drop_conn(&conn);
        });
    }

    fn drop_conn(&self, conn: &Arc<Conn>) {
        conn.close();
        let mut conns = self.conns.lock().unwrap();
        if conns.get(&conn.peer).is_some_and(|c| Arc::ptr_eq(c, conn)) {
            conns.remove(&conn.peer);
            drop(conns);
            self.version.mark();
        }
    }
}

/// Whether a frame body is a request (by its tag: see [`wire::REQUEST_TAG`]).
fn is_request(body: &Bytes) -> bool {
    body.first() == Some(&wire::REQUEST_TAG)
}

/// Whether a frame body never waits behind the in-flight limit: a response or a
/// standby's word on a write (either may be what the requests served here await) or a
/// lease renewal.
fn never_held(body: &Bytes) -> bool {
    matches!(body.first(), Some(&wire::RESPONSE_TAG | &wire::HELD_TAG))
        || wire::is_lease_request(body)
}

/// Serves frames read together, in order: calls to the same child go to it as one
/// batch; responses and pushes are handled at once. An error closes the connection
/// (after the frames before it are served).
fn serve_frames(
    conn: &Arc<Conn>,
    inbound: &Arc<dyn Inbound>,
    reply: &ReplySink,
    bodies: &[Bytes],
    out: &mut Vec<Serving>,
) -> Result<(), ConnError> {
    let peer = conn.peer;
    let mut calls: Vec<InCall<'_>> = Vec::new();
    let mut result = Ok(());
    let mut requests = 0u64;
    for body in bodies {
        let frame = match decode(body) {
            Ok(f) => f,
            Err(e) => {
                result = Err(ConnError::Malformed(e));
                break;
            }
        };
        if let Frame::Request { .. } = frame {
            requests += 1;
            // Counted before it can be answered.
            conn.serving.fetch_add(1, Ordering::Relaxed);
        }
        // Everything that is not a call to a child keeps its place: the calls before it
        // are handed over first.
        let flush = |calls: &mut Vec<InCall<'_>>, out: &mut Vec<Serving>| {
            if !calls.is_empty() {
                Arc::clone(inbound).calls(peer, std::mem::take(calls), reply, out);
            }
        };
        match frame {
            Frame::Request { rid, req } => match req.split() {
                Ok((
                    Call {
                        id,
                        type_name,
                        method,
                        args,
                        call_id,
                    },
                    trace,
                )) => {
                    let (Cow::Borrowed(id), Cow::Borrowed(type_name)) = (id, type_name) else {
                        reply(vec![(
                            rid,
                            Response::Reply(Err(crate::error::CallError::Codec {
                                message: "a call's names must be borrowed from its frame".into(),
                            })),
                        )]);
                        continue;
                    };
                    calls.push(InCall {
                        rid,
                        id,
                        type_name,
                        call: EncodedCall {
                            method: share(body, method.as_bytes()),
                            args: share(body, &args),
                            call_id,
                            trace,
                        },
                    });
                }
                Err(command) => {
                    flush(&mut calls, out);
                    let fut = Arc::clone(inbound).request(peer, command);
                    let reply = Arc::clone(reply);
                    // A task of its own: a start or a stop runs to its end even if this
                    // connection drops (a move whose source dies still lands).
                    let task = tokio::spawn(async move { reply(vec![(rid, fut.await)]) });
                    out.push(Box::pin(async move {
                        let _ = task.await;
                    }));
                }
            },
            Frame::Response { rid, resp } => {
                flush(&mut calls, out);
                let p = conn.pending.lock().unwrap().remove(&rid);
                if let Some(p) = p {
                    let _ = p.tx.send(Ok(resp));
                }
            }
            Frame::Push(push) => {
                flush(&mut calls, out);
                inbound.push(peer, push);
            }
            Frame::Held(held) => inbound.held(peer, held),
            other => {
                flush(&mut calls, out);
                result = Err(ConnError::Unexpected(format!("{other:?}")));
                break;
            }
        }
    }
    if !calls.is_empty() {
        Arc::clone(inbound).calls(peer, calls, reply, out);
    }
    if requests > 0 {
        conn.last_request
            .store(conn.opened.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
    result
}

/// `part` of `body` as a `Bytes` sharing its memory (a copy if it is not inside).
fn share(body: &Bytes, part: &[u8]) -> Bytes {
    let inside = body.as_ptr_range();
    let range = part.as_ptr_range();
    if part.is_empty() || inside.start > range.start || range.end > inside.end {
        Bytes::copy_from_slice(part)
    } else {
        body.slice_ref(part)
    }
}

/// Refuses a handshake: one of the fixed words of `net::auth`, then the close.
async fn refuse(write: &dyn LinkWrite, reason: &'static str) {
    if let Ok(bytes) = encode(&Frame::Reject {
        reason: reason.to_string(),
    }) {
        let _ = write_all(write, &bytes).await;
    }
    write.shutdown();
}

/// The next frame body of a handshake.
async fn next_body(frames: &mut FrameRead, within: Duration) -> Result<Bytes, ConnError> {
    match tokio::time::timeout(within, frames.next()).await {
        Err(_) => Err(ConnError::HandshakeTimeout),
        Ok(None) => Err(ConnError::ClosedInHandshake),
        Ok(Some(Err(e))) => Err(ConnError::BadFrame(e)),
        Ok(Some(Ok(body))) => Ok(body),
    }
}

/// The receiver of a request's response.
type ResponseRx = oneshot::Receiver<Result<Response, TransportError>>;

/// A request sent: its response's receiver, and the guard that forgets it.
type Sending = Result<(ResponseRx, ForgetOnDrop), TransportError>;

/// A request sent at once, or (no connection up yet) to be sent once one is.
enum Sent<'a> {
    Now(Sending),
    Later(BoxFuture<'a, Sending>),
}
