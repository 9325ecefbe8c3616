//! Why a request got no response.

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
