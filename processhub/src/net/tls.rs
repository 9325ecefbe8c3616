//! Mutual TLS between nodes (optional): [`Tls`], set with
//! [`HubBuilder::tls`](crate::HubBuilder::tls).
//!
//! Every node holds a certificate chain and its key, and the roots it trusts; each side
//! of a connection checks the other's certificate against those roots (rustls, through
//! tokio-rustls, with the `aws-lc-rs` provider, rustls's default). The cluster key's handshake (see
//! `net::auth`) then runs inside the encrypted stream as without TLS, so a node needs
//! both a trusted certificate and the key.
//!
//! The transport writes to a connection without waiting (see [`LinkWrite`]), on the
//! sender's own thread when it can; a TLS stream only offers async writes. So a TLS
//! link's write side is a bounded buffer that a task of its own drains into the TLS
//! stream; the read side runs the TLS handshake first, then reads frames as TCP does.
//! Both run within the transport's handshake timeout: the listener hands out the link at
//! once, and a peer that stalls its TLS handshake holds one handshake slot until then.
//!
//! ```text
//!  accept/dial ─► TcpStream ─► Link { read: TLS handshake, then frames ──► transport
//!                                     write: buffer ─► pump task ─► TLS write half }
//! ```

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};
use tokio_util::codec::FramedRead;

use super::link::{FrameLimit, Limited, Link, LinkWrite, Listener, Network};

/// What a node's TLS is made of: its certificate chain and key, and the roots it trusts
/// for the other nodes' certificates. Set with [`HubBuilder::tls`](crate::HubBuilder::tls).
///
/// Every node presents its certificate, and accepts a peer only if the peer's chain
/// leads to one of the roots. By default a dialing node also checks that the peer's
/// certificate names the IP address it dialed (a subject alternative name); with
/// [`Tls::server_name`] every node's certificate names one name instead (for example one
/// certificate for the whole cluster, or addresses that change).
///
/// ```no_run
/// # fn main() -> Result<(), processhub::TlsError> {
/// let tls = processhub::Tls::from_files("node.pem", "node.key", "cluster-ca.pem")?
///     .server_name("processhub.internal")?;
/// let builder = processhub::Hub::builder("orders")
///     .cluster_key("a secret of at least sixteen bytes")
///     .tls(tls);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Tls {
    inner: Arc<Configs>,
}

struct Configs {
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
    name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("server_name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

/// Why a [`Tls`] could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("could not read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// The PEM text holds no certificate (the chain or the roots), or one that does
    /// not parse.
    #[error("no certificate in the {what}: {message}")]
    Certificate {
        /// Which: "certificate chain" or "trusted roots".
        what: &'static str,
        /// What the parser said.
        message: String,
    },
    /// The PEM text holds no private key (PKCS#8, PKCS#1 or SEC1), or one that does
    /// not parse.
    #[error("no private key: {0}")]
    Key(String),
    /// rustls refused the configuration (a key that does not match the certificate, a
    /// root it cannot use).
    #[error("TLS configuration refused: {0}")]
    Config(String),
    /// Not a DNS name or an IP address.
    #[error("{0:?} is not a server name (a DNS name or an IP address)")]
    BadName(String),
}

impl Tls {
    /// From PEM text: `cert_chain` (this node's certificate first), `key` (its private
    /// key) and `roots` (the certificates trusted for every node's chain).
    pub fn from_pem(
        cert_chain: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
        roots: impl AsRef<[u8]>,
    ) -> Result<Self, TlsError> {
        let chain = certificates(cert_chain.as_ref(), "certificate chain")?;
        let key = PrivateKeyDer::from_pem_slice(key.as_ref())
            .map_err(|e| TlsError::Key(e.to_string()))?;
        let mut store = rustls::RootCertStore::empty();
        for root in certificates(roots.as_ref(), "trusted roots")? {
            store
                .add(root)
                .map_err(|e| TlsError::Config(e.to_string()))?;
        }
        let store = Arc::new(store);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = |e: rustls::Error| TlsError::Config(e.to_string());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::clone(&store),
            Arc::clone(&provider),
        )
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
        let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(config)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(config)?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(config)?
            .with_root_certificates(store)
            .with_client_auth_cert(chain, key)
            .map_err(config)?;
        Ok(Self {
            inner: Arc::new(Configs {
                client: Arc::new(client),
                server: Arc::new(server),
                name: None,
            }),
        })
    }

    /// From PEM files (see [`Tls::from_pem`]).
    pub fn from_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
        roots: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| TlsError::Read {
                path: p.display().to_string(),
                source,
            })
        };
        Self::from_pem(
            read(cert_chain.as_ref())?,
            read(key.as_ref())?,
            read(roots.as_ref())?,
        )
    }

    /// The name every node's certificate carries, checked by the dialing side instead
    /// of the address it dialed.
    pub fn server_name(self, name: &str) -> Result<Self, TlsError> {
        let name = ServerName::try_from(name.to_string())
            .map_err(|_| TlsError::BadName(name.to_string()))?;
        let c = &self.inner;
        Ok(Self {
            inner: Arc::new(Configs {
                client: Arc::clone(&c.client),
                server: Arc::clone(&c.server),
                name: Some(name),
            }),
        })
    }

    fn name_for(&self, to: SocketAddr) -> ServerName<'static> {
        self.inner
            .name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(to.ip().into()))
    }
}

fn certificates(pem: &[u8], what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Certificate {
            what,
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Certificate {
            what,
            message: "none found".into(),
        });
    }
    Ok(certs)
}

/// A TLS handshake that failed: the peer's certificate, or ours, was refused.
#[derive(Debug)]
pub(crate) struct TlsRefused(String);

impl std::fmt::Display for TlsRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TLS handshake failed: {}", self.0)
    }
}

impl std::error::Error for TlsRefused {}

/// A TLS error read after the handshake (under TLS 1.3 the acceptor refuses the
/// dialer's certificate with an alert the dialer reads then) as a [`TlsRefused`].
fn refusal(e: io::Error) -> io::Error {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => io::Error::new(io::ErrorKind::PermissionDenied, TlsRefused(tls.to_string())),
        None => e,
    }
}

/// Whether `e` is a failed TLS handshake.
pub(crate) fn is_refusal(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<TlsRefused>())
}

/// TCP under TLS: the network between processes, encrypted.
#[derive(Clone, Debug)]
pub(crate) struct TlsTcp(pub(crate) Tls);

impl Network for TlsTcp {
    fn dial(&self, to: SocketAddr) -> BoxFuture<'static, io::Result<Link>> {
        let role = Role::Client(
            TlsConnector::from(Arc::clone(&self.0.inner.client)),
            self.0.name_for(to),
        );
        Box::pin(async move { link(TcpStream::connect(to).await?, role) })
    }
}

/// A TCP listener whose connections run TLS.
pub(crate) struct TlsListener {
    pub(crate) listener: TcpListener,
    pub(crate) tls: Tls,
}

impl Listener for TlsListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(Link, SocketAddr)>> {
        Box::pin(async move {
            let (stream, from) = self.listener.accept().await?;
            let role = Role::Server(TlsAcceptor::from(Arc::clone(&self.tls.inner.server)));
            Ok((link(stream, role)?, from))
        })
    }
}

/// Which end of the TLS handshake a link is.
enum Role {
    Client(TlsConnector, ServerName<'static>),
    Server(TlsAcceptor),
}

/// The link over `stream`: the TLS handshake runs as its read side is first read.
fn link(stream: TcpStream, role: Role) -> io::Result<Link> {
    stream.set_nodelay(true).ok();
    // A second handle on the socket, to close it both ways at once (as TCP links do).
    let socket = socket2::Socket::from(stream.as_fd().try_clone_to_owned()?);
    let write = Arc::new(TlsWrite {
        state: Mutex::new(Buffered::default()),
        data: Notify::new(),
        space: Notify::new(),
        socket,
    });
    let (half_tx, half_rx) = oneshot::channel();
    let handshake = async move {
        let tls: TlsStream<TcpStream> = match role {
            Role::Client(connector, name) => connector.connect(name, stream).await.map(Into::into),
            Role::Server(acceptor) => acceptor.accept(stream).await.map(Into::into),
        }
        .map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, TlsRefused(e.to_string())))?;
        let (read, write) = tokio::io::split(tls);
        let _ = half_tx.send(write);
        Ok::<_, io::Error>(read)
    };
    let limit = FrameLimit::handshake();
    let frames_limit = limit.clone();
    let read = futures_util::stream::once(handshake)
        .map(move |read| match read {
            Ok(read) => FramedRead::new(read, Limited::new(frames_limit.clone()))
                .map(|body| body.map(bytes::BytesMut::freeze).map_err(refusal))
                .left_stream(),
            Err(e) => {
                futures_util::stream::once(std::future::ready(Err::<Bytes, _>(e))).right_stream()
            }
        })
        .flatten();
    tokio::spawn(pump(half_rx, Arc::clone(&write)));
    Ok(Link {
        read: Box::pin(read),
        write,
        limit,
    })
}

/// How many bytes a TLS link's write side holds before `try_write` says `WouldBlock`.
const BUFFER: usize = 256 * 1024;

#[derive(Default)]
struct Buffered {
    buf: Vec<u8>,
    /// Closed by this side.
    closed: bool,
    /// The stream broke (or its handshake failed): writes fail from now on.
    broken: bool,
    /// The pump is writing a chunk it took.
    writing: bool,
}

/// How long a closed TLS link may take to send what it holds before its socket closes.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// The write side of a TLS link: a bounded buffer the pump task drains.
struct TlsWrite {
    state: Mutex<Buffered>,
    /// Wakes the pump: bytes (or the close) to write.
    data: Notify,
    /// Wakes writers waiting for room.
    space: Notify,
    socket: socket2::Socket,
}

impl LinkWrite for TlsWrite {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        let mut st = self.state.lock().unwrap();
        if st.closed || st.broken {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let room = BUFFER.saturating_sub(st.buf.len());
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = room.min(buf.len());
        st.buf.extend_from_slice(&buf[..n]);
        drop(st);
        self.data.notify_one();
        Ok(n)
    }

    fn writable(&self) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            loop {
                let room = self.space.notified();
                tokio::pin!(room);
                room.as_mut().enable();
                {
                    let st = self.state.lock().unwrap();
                    if st.closed || st.broken {
                        return Err(io::ErrorKind::BrokenPipe.into());
                    }
                    if st.buf.len() < BUFFER {
                        return Ok(());
                    }
                }
                room.await;
            }
        })
    }

    fn shutdown(&self) {
        let idle = {
            let mut st = self.state.lock().unwrap();
            st.closed = true;
            st.buf.is_empty() && !st.writing
        };
        self.data.notify_one();
        self.space.notify_waiters();
        // The peer sees the close now, and this side's reader ends; what is still
        // buffered (a refusal, the last replies) goes first, for at most `LINGER`.
        let later = match (idle, tokio::runtime::Handle::try_current()) {
            (false, Ok(rt)) => self.socket.try_clone().ok().map(|s| (rt, s)),
            _ => None,
        };
        match later {
            Some((rt, socket)) => {
                rt.spawn(async move {
                    tokio::time::sleep(LINGER).await;
                    let _ = socket.shutdown(std::net::Shutdown::Both);
                });
            }
            None => {
                let _ = self.socket.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

/// Drains a TLS link's buffer into its stream once the handshake has given the write
/// half; ends when the link is closed (after sending what it held) or the stream breaks.
async fn pump(half: oneshot::Receiver<WriteHalf<TlsStream<TcpStream>>>, link: Arc<TlsWrite>) {
    let broken = |link: &TlsWrite| {
        let mut st = link.state.lock().unwrap();
        st.broken = true;
        st.writing = false;
        drop(st);
        link.space.notify_waiters();
    };
    let Ok(mut out) = half.await else {
        return broken(&link);
    };
    let mut chunk = Vec::new();
    loop {
        let more = link.data.notified();
        tokio::pin!(more);
        more.as_mut().enable();
        let closed = {
            let mut st = link.state.lock().unwrap();
            std::mem::swap(&mut st.buf, &mut chunk);
            st.writing = !chunk.is_empty();
            st.closed
        };
        if !chunk.is_empty() {
            let wrote = async {
                out.write_all(&chunk).await?;
                out.flush().await
            };
            if wrote.await.is_err() {
                return broken(&link);
            }
            link.state.lock().unwrap().writing = false;
            chunk.clear();
            if chunk.capacity() > BUFFER {
                chunk = Vec::new();
            }
            link.space.notify_waiters();
            continue;
        }
        if closed {
            let _ = tokio::time::timeout(LINGER, out.shutdown()).await;
            let _ = link.socket.shutdown(std::net::Shutdown::Both);
            return;
        }
        more.await;
    }
}
