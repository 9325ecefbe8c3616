//! Why a request got no response, and why a connection failed.

use crate::node::NodeId;

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
    /// The peer died (it left the view without a goodbye) with the request under way:
    /// whatever it did with it is lost with it, and its children run elsewhere now.
    Gone,
}

/// Why a connection could not be set up, or why it was closed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    /// The peer did not take the connection in time.
    #[error("connect timed out")]
    ConnectTimeout,
    /// The network said no (refused, reset, ...).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The handshake did not end in time.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The peer closed the connection during the handshake.
    #[error("closed during handshake")]
    ClosedInHandshake,
    /// A frame could not be read (over the size limit, or a broken stream).
    #[error("bad frame: {0}")]
    BadFrame(std::io::Error),
    /// A frame does not decode.
    #[error("malformed frame: {0}")]
    Malformed(postcard::Error),
    /// A frame of ours did not encode.
    #[error("could not encode a frame: {0}")]
    Encode(postcard::Error),
    /// The peer reached is not the one dialed.
    #[error("reached {reached}, wanted {wanted}")]
    WrongNode { reached: NodeId, wanted: NodeId },
    /// The peer refused the handshake, saying why.
    #[error("refused: {0}")]
    Refused(String),
    /// A dialer that is not of this hub.
    #[error("a dialer of hub {theirs:?}")]
    OtherHub { theirs: String },
    /// The peer did not prove it holds the cluster key.
    #[error("the peer did not prove it holds the cluster key")]
    Unauthenticated,
    /// A dialer that expects an earlier life of this node.
    #[error("{to} is a previous incarnation of {me}")]
    StaleIncarnation { to: NodeId, me: NodeId },
    /// A frame that has no place where it came.
    #[error("unexpected frame {0}")]
    Unexpected(String),
}
