//! The client's one error type.

use std::io;

use bytes::Bytes;

/// Everything that can go wrong in the native client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not an `http://host[:port]/path` URL.
    #[error("invalid URL {0}")]
    InvalidUrl(String),
    /// Could not open a TCP connection.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// `host:port` that was tried.
        addr: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An I/O error outside transparent resume (open, close).
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// A connect or an answer took too long.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The gateway (or the origin behind it) answered with something else
    /// than a persistent session: any status but 200, or no
    /// `Connection-Type: Persistent`.
    #[error("not a persistent session: status {status}")]
    NotPersistent {
        /// The answer's status.
        status: u16,
        /// The answer's headers, in order.
        headers: Vec<(String, String)>,
        /// The answer's body (read by Content-Length, chunked or to close).
        body: Bytes,
    },
    /// The connection ended before the whole initial body arrived. The
    /// session is lost: its initial body is never replayed (SPEC 2).
    #[error("connection ended after {got} of {expected} initial body bytes")]
    PartialInitialBody {
        /// Content-Length of the answer.
        expected: u64,
        /// Bytes received.
        got: u64,
    },
    /// The gateway does not know the session any more (`410 Gone`), or
    /// refused the resume for another reason; `reason` holds its body text.
    #[error("session lost: {reason}")]
    SessionLost {
        /// The gateway's reason (body of its answer).
        reason: String,
    },
    /// Every reconnection attempt of the backoff policy failed.
    #[error("could not resume after {attempts} attempts: {last}")]
    ReconnectFailed {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// A line given to `send_line` is not one line (interior LF) or is
    /// longer than `max_line`.
    #[error("invalid line: {0}")]
    InvalidLine(String),
    /// The gateway sent a line longer than `max_line`.
    #[error("received line longer than {max} bytes")]
    LineTooLong {
        /// The configured `max_line`.
        max: usize,
    },
    /// Sending the line would take the unacknowledged lines over
    /// `max_unacked_bytes`.
    #[error("{unacked} bytes of sent lines are unacknowledged; the cap is {max}")]
    ResendBufferFull {
        /// Unacknowledged bytes now held.
        unacked: usize,
        /// The configured `max_unacked_bytes`.
        max: usize,
    },
    /// The gateway broke the protocol (bad head, impossible count ...).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// `DELETE` got another answer than `204`.
    #[error("close answered with status {status}")]
    CloseFailed {
        /// The answer's status.
        status: u16,
        /// The answer's body.
        body: Bytes,
    },
    /// WebSocket transport: the gateway closed the session with this code
    /// (4409 taken over, 4502 the worker failed, ...; docs/httpsocket.md).
    #[error("closed by the gateway: {code} {reason}")]
    WebSocketClosed {
        /// The close code.
        code: u16,
        /// Its reason text.
        reason: String,
    },
    /// The session already ended (or was closed); nothing can be sent.
    #[error("the session has ended")]
    Ended,
}
