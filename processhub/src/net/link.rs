//! The network seam: where a connection's byte stream comes from.
//!
//! A connection is a stream of length-prefixed frames each way. The transport
//! (handshake, request ids, batching, serving) runs the same over any [`Network`]: TCP
//! between processes ([`Tcp`]), or the in-memory network of `net::memory`, which still
//! encodes and decodes every frame and can cut, black-hole or delay a link.
//!
//! ```text
//!  Transport ── dial(addr) ──► Network ──► Link { read: frames in, write: bytes out }
//!            ◄─ accept() ──── Listener
//! ```

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{Stream, StreamExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Decoder, FramedRead, LengthDelimitedCodec};

/// The read side of a connection: frame bodies (the length prefix stripped); a frame
/// over the limit, or a broken stream, is an error and ends it.
pub(crate) type FrameRead = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// The write side of a connection's byte stream, shared by the senders and the
/// connection's writer task.
pub(crate) trait LinkWrite: Send + Sync + 'static {
    /// Writes what can be written now, without waiting (`WouldBlock` if nothing can).
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    /// Waits until a write may make progress.
    fn writable(&self) -> BoxFuture<'_, io::Result<()>>;
    /// Closes the stream both ways: the peer sees it at once.
    fn shutdown(&self);
}

/// The largest frame body a connection reads (a larger one is an error and ends it).
/// A link starts at [`HANDSHAKE_LIMIT`]: until the peer has proved it holds the cluster
/// key, it may send only a small handshake; the transport raises the limit to the hub's
/// frame size once the handshake is done.
#[derive(Clone, Debug)]
pub(crate) struct FrameLimit(Arc<AtomicUsize>);

/// The largest frame read before a connection is authenticated.
pub(crate) const HANDSHAKE_LIMIT: usize = 1024;

impl FrameLimit {
    /// A limit of [`HANDSHAKE_LIMIT`].
    pub(crate) fn handshake() -> Self {
        Self(Arc::new(AtomicUsize::new(HANDSHAKE_LIMIT)))
    }

    /// The limit now.
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Frames up to `bytes` from now on.
    pub(crate) fn set(&self, bytes: usize) {
        self.0.store(bytes, Ordering::Relaxed);
    }
}

/// A connection's byte stream, split, and the limit on the frames its read side takes.
pub(crate) struct Link {
    pub(crate) read: FrameRead,
    pub(crate) write: Arc<dyn LinkWrite>,
    pub(crate) limit: FrameLimit,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Link")
    }
}

/// Where the transport dials its peers.
pub(crate) trait Network: Send + Sync + 'static {
    /// A connection to `to`, reading frames up to [`HANDSHAKE_LIMIT`] bytes at first.
    fn dial(&self, to: SocketAddr) -> BoxFuture<'static, io::Result<Link>>;
}

/// Where the transport accepts connections.
pub(crate) trait Listener: Send + 'static {
    /// The next connection (reading frames up to [`HANDSHAKE_LIMIT`] bytes at first),
    /// and where it came from.
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(Link, SocketAddr)>>;
}

/// Writes all of `buf` through a shared write side.
pub(crate) async fn write_all(write: &dyn LinkWrite, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        write.writable().await?;
        match write.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// TCP: the network between processes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Tcp;

impl Tcp {
    fn link(stream: TcpStream) -> Link {
        stream.set_nodelay(true).ok();
        let (read, write) = stream.into_split();
        let limit = FrameLimit::handshake();
        let codec = Limited::new(limit.clone());
        let frames = FramedRead::new(read, codec).map(|body| body.map(bytes::BytesMut::freeze));
        Link {
            read: Box::pin(frames),
            write: Arc::new(write),
            limit,
        }
    }
}

/// A length-delimited codec whose limit follows a [`FrameLimit`]: the length prefix is
/// checked before the body is buffered.
pub(crate) struct Limited {
    codec: LengthDelimitedCodec,
    limit: FrameLimit,
}

impl Limited {
    /// A codec reading frames up to `limit`.
    pub(crate) fn new(limit: FrameLimit) -> Self {
        Self {
            codec: LengthDelimitedCodec::builder()
                .max_frame_length(limit.get())
                .new_codec(),
            limit,
        }
    }

    /// Its limit.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn limit(&self) -> &FrameLimit {
        &self.limit
    }
}

impl Decoder for Limited {
    type Item = bytes::BytesMut;
    type Error = io::Error;

    fn decode(&mut self, src: &mut bytes::BytesMut) -> io::Result<Option<Self::Item>> {
        let limit = self.limit.get();
        if self.codec.max_frame_length() != limit {
            self.codec.set_max_frame_length(limit);
        }
        self.codec.decode(src)
    }
}

impl Network for Tcp {
    fn dial(&self, to: SocketAddr) -> BoxFuture<'static, io::Result<Link>> {
        Box::pin(async move { Ok(Tcp::link(TcpStream::connect(to).await?)) })
    }
}

impl Listener for TcpListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(Link, SocketAddr)>> {
        Box::pin(async move {
            let (stream, from) = TcpListener::accept(self).await?;
            Ok((Tcp::link(stream), from))
        })
    }
}

impl LinkWrite for OwnedWriteHalf {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        OwnedWriteHalf::try_write(self, buf)
    }

    fn writable(&self) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(OwnedWriteHalf::writable(self))
    }

    fn shutdown(&self) {
        // The write side is shared with senders: shut the socket down explicitly so the
        // peer sees the close now, not when the last sender lets go.
        let stream: &TcpStream = self.as_ref();
        let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Both);
    }
}
