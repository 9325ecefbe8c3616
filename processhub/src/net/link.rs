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
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{Stream, StreamExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

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

/// A connection's byte stream, split.
pub(crate) struct Link {
    pub(crate) read: FrameRead,
    pub(crate) write: Arc<dyn LinkWrite>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Link")
    }
}

/// Where the transport dials its peers.
pub(crate) trait Network: Send + Sync + 'static {
    /// A connection to `to`; frames read from it are at most `max_frame` bytes.
    fn dial(&self, to: SocketAddr, max_frame: usize) -> BoxFuture<'static, io::Result<Link>>;
}

/// Where the transport accepts connections.
pub(crate) trait Listener: Send + 'static {
    /// The next connection, and where it came from.
    fn accept(&mut self, max_frame: usize) -> BoxFuture<'_, io::Result<(Link, SocketAddr)>>;
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
    fn link(stream: TcpStream, max_frame: usize) -> Link {
        stream.set_nodelay(true).ok();
        let (read, write) = stream.into_split();
        let frames = FramedRead::new(
            read,
            LengthDelimitedCodec::builder()
                .max_frame_length(max_frame)
                .new_codec(),
        )
        .map(|body| body.map(bytes::BytesMut::freeze));
        Link {
            read: Box::pin(frames),
            write: Arc::new(write),
        }
    }
}

impl Network for Tcp {
    fn dial(&self, to: SocketAddr, max_frame: usize) -> BoxFuture<'static, io::Result<Link>> {
        Box::pin(async move { Ok(Tcp::link(TcpStream::connect(to).await?, max_frame)) })
    }
}

impl Listener for TcpListener {
    fn accept(&mut self, max_frame: usize) -> BoxFuture<'_, io::Result<(Link, SocketAddr)>> {
        Box::pin(async move {
            let (stream, from) = TcpListener::accept(self).await?;
            Ok((Tcp::link(stream, max_frame), from))
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
