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
//! stale incarnation, is refused. Malformed or oversize frames close the connection with
//! a logged error; the failure detector, not a closed socket, decides who is dead.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, Notify};
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use crate::wire::{self, Frame, Push, Request, Response};
use crate::NodeId;

/// How long a handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a closing transport waits for requests to stop coming.
const QUIET: Duration = Duration::from_millis(100);
/// The longest a closing transport waits to go quiet.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How long a call waits for a connection to the owner before it looks again where the
/// child runs (its node may have died, and the registry moved it).
pub(crate) const RECONNECT_WAIT: Duration = Duration::from_millis(100);

/// What the hub does with what arrives.
pub(crate) trait Inbound: Send + Sync + 'static {
    /// Answers a request.
    /// Answers a request: the synchronous part (lookups, decoding) runs now, on the
    /// borrowed frame; the returned future does the rest.
    fn request(self: Arc<Self>, from: NodeId, req: Request<'_>) -> BoxFuture<'static, Response>;
    /// Applies a push, in arrival order.
    fn push(&self, from: NodeId, push: Push);
    /// A connection to `peer` is up: `register` makes it usable for requests and
    /// broadcasts; call it after sending what must come first on it.
    fn connected(&self, peer: NodeId, conn: &Arc<Conn>, register: &dyn Fn());
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TransportError {
    /// No connection to the peer before the deadline; nothing was sent.
    NotConnected,
    /// The connection closed after the request was sent.
    Lost,
    /// No response before the deadline.
    Timeout,
    /// The request exceeds the frame limit; nothing was sent.
    TooLarge { size: usize, max: usize },
    /// The request could not be encoded; nothing was sent.
    Encode(String),
}

/// Frames the socket has not taken yet.
#[derive(Default)]
struct Outbox {
    buf: Vec<u8>,
    /// The writer task owns the socket's write side until `buf` is empty.
    flushing: bool,
}

/// One live connection.
pub(crate) struct Conn {
    peer: NodeId,
    write: Arc<OwnedWriteHalf>,
    outbox: Mutex<Outbox>,
    wake_writer: Notify,
    pending: Mutex<HashMap<u64, oneshot::Sender<Response>>>,
    next_rid: AtomicU64,
    closed: CancellationToken,
    /// Requests being served on this connection.
    serving: AtomicU64,
    /// When the last request arrived, in nanoseconds since `opened`.
    last_request: AtomicU64,
    opened: Instant,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("peer", &self.peer).finish()
    }
}

impl Conn {
    /// Sends an encoded frame; false if the connection is closed.
    ///
    /// With `alone` (nothing else in flight on this connection) and nothing queued, the
    /// frame is written at once on the caller's thread, saving a wake-up of the writer
    /// task: thread wake-ups are the largest cost per call (measured with perf).
    /// Otherwise it is queued, and the writer sends what gathered in one write: under
    /// load, batches save more than the wake-up costs.
    pub(crate) fn send_bytes(&self, bytes: Bytes, alone: bool) -> bool {
        if self.closed.is_cancelled() {
            return false;
        }
        let mut out = self.outbox.lock().unwrap();
        if out.flushing {
            out.buf.extend_from_slice(&bytes);
            return true;
        }
        if !alone {
            out.buf.extend_from_slice(&bytes);
            out.flushing = true;
            drop(out);
            self.wake_writer.notify_one();
            return true;
        }
        let written = match self.write.try_write(&bytes) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) => {
                drop(out);
                tracing::debug!(peer = %self.peer, "write failed: {e}");
                self.close();
                return false;
            }
        };
        if written < bytes.len() {
            out.buf.extend_from_slice(&bytes[written..]);
            out.flushing = true;
            drop(out);
            self.wake_writer.notify_one();
        }
        true
    }

    /// Queues a push.
    pub(crate) fn push(&self, push: &Push) -> bool {
        match wire::encode_push(push) {
            Ok(bytes) => self.send_bytes(bytes, false),
            Err(e) => {
                tracing::error!("could not encode a push: {e}");
                false
            }
        }
    }

    /// Nothing served, nothing queued, no request for a while.
    fn is_quiet(&self, now: Instant) -> bool {
        let since_open = now.saturating_duration_since(self.opened).as_nanos() as u64;
        let idle = since_open.saturating_sub(self.last_request.load(Ordering::Relaxed));
        let out = self.outbox.lock().unwrap();
        self.serving.load(Ordering::Relaxed) == 0
            && out.buf.is_empty()
            && !out.flushing
            && idle >= QUIET.as_nanos() as u64
    }

    fn close(&self) {
        self.closed.cancel();
        self.pending.lock().unwrap().clear();
        // The write side is shared with senders: shut the socket down explicitly so the
        // peer sees the close now, not when the last sender lets go.
        let stream: &TcpStream = (*self.write).as_ref();
        let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Both);
    }
}

/// The TCP layer of one hub.
pub(crate) struct Transport {
    me: NodeId,
    hub_id: String,
    max_frame: usize,
    conns: Mutex<HashMap<NodeId, Arc<Conn>>>,
    /// Bumped whenever `conns` changes, to wake requests waiting for a connection.
    version: watch::Sender<u64>,
    /// Peers we should be connected to (the live members).
    wanted: Mutex<HashSet<NodeId>>,
    inbound: Weak<dyn Inbound>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").field("me", &self.me).finish()
    }
}

impl Transport {
    /// A transport for `me`, serving `listener`.
    pub(crate) fn start(
        me: NodeId,
        hub_id: String,
        max_frame: usize,
        listener: TcpListener,
        inbound: Weak<dyn Inbound>,
    ) -> Arc<Self> {
        let t = Arc::new(Self {
            me,
            hub_id,
            max_frame,
            conns: Mutex::new(HashMap::new()),
            version: watch::channel(0).0,
            wanted: Mutex::new(HashSet::new()),
            inbound,
            shutdown: CancellationToken::new(),
        });
        tokio::spawn(Arc::clone(&t).accept_loop(listener));
        t
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
        let conns: Vec<_> = self.conns.lock().unwrap().drain().collect();
        self.shutdown.cancel();
        for (_, c) in conns {
            c.close();
        }
        self.version.send_modify(|v| *v += 1);
    }

    /// Sets the peers to stay connected to; dials those this node must dial.
    pub(crate) fn set_wanted(self: &Arc<Self>, peers: impl IntoIterator<Item = NodeId>) {
        let peers: HashSet<NodeId> = peers.into_iter().filter(|p| *p != self.me).collect();
        let added: Vec<NodeId> = {
            let mut wanted = self.wanted.lock().unwrap();
            let added = peers.difference(&wanted).copied().collect();
            *wanted = peers;
            added
        };
        // Connections to nodes that are no longer members are left to close by
        // themselves: a node leaving gracefully still needs to hear who took over.
        for peer in added {
            if self.me < peer {
                tokio::spawn(Arc::clone(self).dial_loop(peer));
            }
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
        match wire::encode_push(push) {
            Ok(bytes) => {
                for c in conns.values() {
                    c.send_bytes(bytes.clone(), false);
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
        self.request_within(peer, req, deadline, deadline).await
    }

    /// Like [`Self::request`], but gives up with `NotConnected` if no connection is up by
    /// `connect_by`: the caller re-resolves (the owner may have died) and tries again.
    pub(crate) async fn request_within(
        &self,
        peer: NodeId,
        req: Request<'_>,
        connect_by: Instant,
        deadline: Instant,
    ) -> Result<Response, TransportError> {
        let conn = self.wait_conn(peer, connect_by.min(deadline)).await?;
        let rid = conn.next_rid.fetch_add(1, Ordering::Relaxed);
        let bytes = wire::encode(&Frame::Request { rid, req })
            .map_err(|e| TransportError::Encode(e.to_string()))?;
        if bytes.len() - 4 > self.max_frame {
            return Err(TransportError::TooLarge {
                size: bytes.len() - 4,
                max: self.max_frame,
            });
        }
        let (tx, rx) = oneshot::channel();
        let alone = {
            let mut pending = conn.pending.lock().unwrap();
            pending.insert(rid, tx);
            pending.len() == 1
        };
        if !conn.send_bytes(bytes, alone) {
            conn.pending.lock().unwrap().remove(&rid);
            return Err(TransportError::NotConnected);
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(_)) => Err(TransportError::Lost),
            Err(_) => {
                conn.pending.lock().unwrap().remove(&rid);
                Err(TransportError::Timeout)
            }
        }
    }

    /// Whether a connection to `peer` is up now.
    pub(crate) fn is_connected(&self, peer: NodeId) -> bool {
        self.conns.lock().unwrap().contains_key(&peer)
    }

    async fn wait_conn(
        &self,
        peer: NodeId,
        deadline: Instant,
    ) -> Result<Arc<Conn>, TransportError> {
        let mut version = self.version.subscribe();
        loop {
            if self.shutdown.is_cancelled() {
                return Err(TransportError::NotConnected);
            }
            if let Some(c) = self.conns.lock().unwrap().get(&peer) {
                return Ok(c.clone());
            }
            match tokio::time::timeout_at(deadline, version.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err(TransportError::NotConnected),
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
                    Err(e) => {
                        tracing::debug!(%peer, "dial failed: {e}");
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    async fn dial(self: &Arc<Self>, peer: NodeId) -> Result<(), String> {
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(peer.addr()))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        stream.set_nodelay(true).ok();
        let (read, mut write) = stream.into_split();
        let mut frames = self.framed(read);
        let hello = wire::encode(&Frame::Hello {
            hub_id: self.hub_id.clone(),
            from: self.me,
            to: peer,
        })
        .map_err(|e| e.to_string())?;
        write.write_all(&hello).await.map_err(|e| e.to_string())?;
        let body = next_body(&mut frames).await?;
        match decode_handshake(&body)? {
            Frame::Welcome { node } if node == peer => {}
            Frame::Welcome { node } => return Err(format!("reached {node}, wanted {peer}")),
            Frame::Reject { reason } => return Err(format!("refused: {reason}")),
            other => return Err(format!("unexpected handshake frame {other:?}")),
        }
        self.run_conn(peer, frames, write);
        Ok(())
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = self.shutdown.cancelled() => return,
            };
            match accepted {
                Ok((stream, from)) => {
                    let t = Arc::clone(&self);
                    tokio::spawn(async move {
                        if let Err(e) = t.accept(stream).await {
                            tracing::warn!(%from, "refused a connection: {e}");
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

    async fn accept(self: Arc<Self>, stream: TcpStream) -> Result<(), String> {
        stream.set_nodelay(true).ok();
        let (read, mut write) = stream.into_split();
        let mut frames = self.framed(read);
        let body = next_body(&mut frames).await?;
        let (peer, reject) = match decode_handshake(&body)? {
            Frame::Hello { hub_id, from, to } => {
                let reject = if hub_id != self.hub_id {
                    Some(format!("hub id {hub_id:?} is not {:?}", self.hub_id))
                } else if to != self.me {
                    Some(format!("{to} is a previous incarnation of {}", self.me))
                } else {
                    None
                };
                (from, reject)
            }
            other => return Err(format!("expected Hello, got {other:?}")),
        };
        if let Some(reason) = reject {
            if let Ok(bytes) = wire::encode(&Frame::Reject {
                reason: reason.clone(),
            }) {
                let _ = write.write_all(&bytes).await;
            }
            return Err(reason);
        }
        let welcome = wire::encode(&Frame::Welcome { node: self.me }).map_err(|e| e.to_string())?;
        write.write_all(&welcome).await.map_err(|e| e.to_string())?;
        self.run_conn(peer, frames, write);
        Ok(())
    }

    fn framed(
        &self,
        read: tokio::net::tcp::OwnedReadHalf,
    ) -> FramedRead<tokio::net::tcp::OwnedReadHalf, LengthDelimitedCodec> {
        FramedRead::new(
            read,
            LengthDelimitedCodec::builder()
                .max_frame_length(self.max_frame)
                .new_codec(),
        )
    }

    /// Starts the writer and reader of an established connection.
    fn run_conn(
        self: &Arc<Self>,
        peer: NodeId,
        mut frames: FramedRead<tokio::net::tcp::OwnedReadHalf, LengthDelimitedCodec>,
        write: tokio::net::tcp::OwnedWriteHalf,
    ) {
        let Some(inbound) = self.inbound.upgrade() else {
            return;
        };
        let write = Arc::new(write);
        let conn = Arc::new(Conn {
            peer,
            write: Arc::clone(&write),
            outbox: Mutex::new(Outbox::default()),
            wake_writer: Notify::new(),
            pending: Mutex::new(HashMap::new()),
            next_rid: AtomicU64::new(1),
            closed: self.shutdown.child_token(),
            serving: AtomicU64::new(0),
            last_request: AtomicU64::new(0),
            opened: Instant::now(),
        });

        let writer = Arc::clone(&conn);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = writer.wake_writer.notified() => {}
                    _ = writer.closed.cancelled() => return,
                }
                loop {
                    let chunk = {
                        let mut out = writer.outbox.lock().unwrap();
                        if out.buf.is_empty() {
                            out.flushing = false;
                            break;
                        }
                        std::mem::take(&mut out.buf)
                    };
                    if let Err(e) = write_all(&write, &chunk).await {
                        tracing::debug!(%peer, "write failed: {e}");
                        writer.close();
                        return;
                    }
                }
            }
        });

        // Register under the hub's control: it sends its snapshot first.
        let me = Arc::clone(self);
        let reg_conn = Arc::clone(&conn);
        inbound.connected(peer, &conn, &|| {
            let old = me.conns.lock().unwrap().insert(peer, Arc::clone(&reg_conn));
            if let Some(old) = old {
                old.close();
            }
            me.version.send_modify(|v| *v += 1);
        });

        let t = Arc::clone(self);
        tokio::spawn(async move {
            // Requests in flight on this connection, driven here rather than spawned
            // one task each: no task allocation or scheduling per call.
            let mut serving: FuturesUnordered<BoxFuture<'static, (u64, Response)>> =
                FuturesUnordered::new();
            let max = t.max_frame;
            loop {
                let next = tokio::select! {
                    f = frames.next() => f,
                    Some((rid, resp)) = serving.next(), if !serving.is_empty() => {
                        conn.send_bytes(encode_response(rid, resp, max), serving.is_empty());
                        conn.serving.fetch_sub(1, Ordering::Relaxed);
                        continue;
                    }
                    _ = conn.closed.cancelled() => None,
                };
                let body = match next {
                    None => break,
                    Some(Err(e)) => {
                        tracing::error!(%peer, "closing connection: bad frame: {e}");
                        break;
                    }
                    Some(Ok(body)) => body,
                };
                let frame = match wire::decode(&body) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::error!(%peer, "closing connection: malformed frame: {e}");
                        break;
                    }
                };
                match frame {
                    Frame::Request { rid, req } => {
                        let fut = Arc::clone(&inbound).request(peer, req);
                        conn.serving.fetch_add(1, Ordering::Relaxed);
                        conn.last_request
                            .store(conn.opened.elapsed().as_nanos() as u64, Ordering::Relaxed);
                        serving.push(Box::pin(async move { (rid, fut.await) }));
                    }
                    Frame::Response { rid, resp } => {
                        let tx = conn.pending.lock().unwrap().remove(&rid);
                        if let Some(tx) = tx {
                            let _ = tx.send(resp);
                        }
                    }
                    Frame::Push(push) => inbound.push(peer, push),
                    other => {
                        tracing::error!(%peer, "closing connection: unexpected frame {other:?}");
                        break;
                    }
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
            self.version.send_modify(|v| *v += 1);
        }
    }
}

fn encode_response(rid: u64, resp: Response, max: usize) -> Bytes {
    let encoded = wire::encode(&Frame::Response { rid, resp });
    let err = match encoded {
        Ok(b) if b.len() - 4 <= max => return b,
        Ok(b) => crate::error::CallError::TooLarge {
            size: b.len() - 4,
            max,
        },
        Err(e) => crate::error::CallError::Codec {
            message: e.to_string(),
        },
    };
    // A reply that cannot travel becomes an error that can.
    wire::encode(&Frame::Response {
        rid,
        resp: Response::Reply(Err(err)),
    })
    .expect("an error response always encodes")
}

/// Writes all of `buf` through a shared write half.
async fn write_all(write: &OwnedWriteHalf, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        write.writable().await?;
        match write.try_write(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The next frame body of a handshake.
async fn next_body(
    frames: &mut FramedRead<tokio::net::tcp::OwnedReadHalf, LengthDelimitedCodec>,
) -> Result<bytes::BytesMut, String> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, frames.next()).await {
        Err(_) => Err("handshake timed out".into()),
        Ok(None) => Err("closed during handshake".into()),
        Ok(Some(Err(e))) => Err(format!("bad frame: {e}")),
        Ok(Some(Ok(body))) => Ok(body),
    }
}

fn decode_handshake(body: &[u8]) -> Result<Frame<'_>, String> {
    wire::decode(body).map_err(|e| format!("malformed frame: {e}"))
}
