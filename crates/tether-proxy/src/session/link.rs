//! A client connection attached to a session, seen by the session task as
//! lines in and bytes out. The session task knows nothing else of the
//! transport: the native HTTP/1.1 link (`native`) is a raw byte stream
//! after the answer head; the WebSocket link (`websocket`, SPEC 3) carries
//! lines in text frames and control records in binary ones.

use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tether_wire::LineReader;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::end::Closing;
use super::handover::LinkState;
use super::native::NativeLink;
use super::websocket::WsLink;

/// Size of the per-thread read buffer that session sockets are read into.
const SCRATCH: usize = 16 * 1024;
/// Send buffer on session sockets: lines in socket buffers are "sent" but
/// may never arrive, so keep them few (SPEC 4 "Replay window").
const SESSION_SNDBUF: usize = 16 * 1024;

/// A client connection the gateway can hand to a session.
pub(crate) trait ClientIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// Socket settings for a session connection (SPEC 4 "Liveness of
    /// native clients").
    fn tune_for_session(&self) {}

    /// The socket, when the bytes on it are the session's own (plain
    /// TCP): such a connection can move to another process on upgrade
    /// (SPEC 10); a TLS one cannot.
    fn plain_socket(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
}

impl ClientIo for TcpStream {
    fn plain_socket(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        Some(std::os::fd::AsFd::as_fd(self))
    }

    fn tune_for_session(&self) {
        let sock = socket2::SockRef::from(self);
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(15))
            .with_interval(Duration::from_secs(5))
            .with_retries(3);
        let _ = sock.set_tcp_keepalive(&keepalive);
        let _ = sock.set_tcp_user_timeout(Some(Duration::from_secs(30)));
        let _ = sock.set_send_buffer_size(SESSION_SNDBUF);
    }
}

/// In-memory pipes stand for client sockets in tests.
#[cfg(test)]
impl ClientIo for tokio::io::DuplexStream {}

thread_local! {
    static SCRATCH_BUF: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; SCRATCH].into_boxed_slice());
}

/// Reads what `io` has through a per-thread buffer and hands the bytes to
/// `sink`: a session owns only the bytes it actually received, never a read
/// buffer of its own, so idle sessions stay small and what one keeps (a
/// partial line, a line in its replay window) does not pin a large
/// allocation. `Ready(Ok(0))` is the end of the stream.
pub(crate) fn poll_read_with<R: AsyncRead + Unpin + ?Sized>(
    io: &mut R,
    cx: &mut Context<'_>,
    sink: impl FnOnce(&[u8]),
) -> Poll<io::Result<usize>> {
    SCRATCH_BUF.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let mut rb = ReadBuf::new(&mut scratch[..]);
        match Pin::new(io).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                sink(rb.filled());
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
}

/// Writes what `io` takes of `out`; `Ready(Ok(()))` when some progress was
/// made. An emptied buffer gives its memory back (idle links hold none).
pub(crate) fn poll_write_out<W: AsyncWrite + Unpin + ?Sized>(
    io: &mut W,
    cx: &mut Context<'_>,
    out: &mut BytesMut,
) -> Poll<io::Result<()>> {
    match Pin::new(io).poll_write(cx, out) {
        Poll::Ready(Ok(0)) => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
        Poll::Ready(Ok(n)) => {
            out.advance(n);
            if out.is_empty() {
                *out = BytesMut::new();
            }
            Poll::Ready(Ok(()))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

/// [`poll_read_with`] into a line reader.
pub(crate) fn poll_read_lines<R: AsyncRead + Unpin + ?Sized>(
    io: &mut R,
    cx: &mut Context<'_>,
    lines: &mut LineReader,
) -> Poll<io::Result<usize>> {
    poll_read_with(io, cx, |data| lines.push(data))
}

/// What reading a client produced.
pub(crate) enum ClientRead {
    Line(Bytes),
    /// The client has received lines up to this count (WebSocket `ack`).
    Ack(u64),
    /// The client closed or the connection failed: detach.
    Gone,
    /// The client ended the session (WebSocket close 1000).
    End,
    /// A line over `max_line`: the session ends.
    TooLong,
    /// The client broke the transport's rules: the session ends (the link
    /// knows how to say which rule when it is closed).
    Broken,
}

/// Why a line cannot be sent on a link (the session ends; the link knows
/// how to say so when it is closed).
#[derive(Debug)]
pub(crate) struct NotUtf8;

/// A client connection attached to a session.
pub(crate) enum Link {
    Native(NativeLink),
    WebSocket(WsLink),
}

impl Link {
    /// The link as it moves on upgrade with its socket; itself back when
    /// the socket cannot move (TLS).
    pub(crate) fn export(self: Box<Self>) -> Result<(LinkState, OwnedFd), Box<Link>> {
        match *self {
            Link::Native(l) => l.export().map_err(|l| Box::new(Link::Native(*l))),
            Link::WebSocket(l) => l.export().map_err(|l| Box::new(Link::WebSocket(*l))),
        }
    }

    /// A link moved here from another process, on `socket`.
    pub(crate) fn restore(state: LinkState, socket: TcpStream, max_line: usize) -> Link {
        let io: Box<dyn ClientIo> = Box::new(socket);
        match state {
            LinkState::Native { input, out } => {
                Link::Native(NativeLink::restore(io, &input, &out, max_line))
            }
            ws @ LinkState::WebSocket { .. } => Link::WebSocket(WsLink::restore(io, ws, max_line)),
        }
    }

    /// Bytes queued toward the client and not yet written.
    pub(crate) fn pending(&self) -> usize {
        match self {
            Link::Native(l) => l.pending(),
            Link::WebSocket(l) => l.pending(),
        }
    }

    /// Queues one line (LF included) for the client.
    pub(crate) fn queue(&mut self, line: &[u8]) -> Result<(), NotUtf8> {
        match self {
            Link::Native(l) => {
                l.queue(line);
                Ok(())
            }
            Link::WebSocket(l) => l.queue_line(line),
        }
    }

    pub(crate) fn poll_line(&mut self, cx: &mut Context<'_>) -> Poll<ClientRead> {
        match self {
            Link::Native(l) => l.poll_line(cx),
            Link::WebSocket(l) => l.poll_line(cx),
        }
    }

    /// Writes what it can of the queued bytes; `Ready(Ok(()))` when some
    /// progress was made.
    pub(crate) fn poll_write_some(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Link::Native(l) => l.poll_write_some(cx),
            Link::WebSocket(l) => l.poll_write_some(cx),
        }
    }

    /// Everything queued is written, then the end (native EOF, WebSocket
    /// a close frame that says why).
    pub(crate) fn poll_finish(
        &mut self,
        cx: &mut Context<'_>,
        why: Closing,
    ) -> Poll<io::Result<()>> {
        match self {
            Link::Native(l) => l.poll_finish(cx),
            Link::WebSocket(l) => l.poll_finish(cx, why),
        }
    }

    /// `Ready` when the transport's own liveness check says the client is
    /// gone (WebSocket: no pong for 30 s); native liveness is the kernel's.
    pub(crate) fn poll_dead(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            Link::Native(_) => Poll::Pending,
            Link::WebSocket(l) => l.poll_dead(cx),
        }
    }

    /// Lets go of a link its client left (detach): nothing more is sent
    /// but what is queued already (a WebSocket's answer to the client's
    /// close).
    pub(crate) fn release(self) {
        match self {
            Link::Native(_) => {}
            Link::WebSocket(l) => l.release(),
        }
    }

    /// Closes now, without waiting: a WebSocket gets its close frame if the
    /// socket takes it at once (takeover, errors); then the connection is
    /// dropped.
    pub(crate) fn abort(self, why: Closing) {
        match self {
            Link::Native(_) => {}
            Link::WebSocket(l) => l.abort(why),
        }
    }
}
