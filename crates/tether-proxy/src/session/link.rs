//! A client connection attached to a session, seen by the session task as
//! lines in and bytes out. The session task knows nothing else of the
//! transport: the native HTTP/1.1 link is a raw byte stream after the answer
//! head; the WebSocket link (SPEC 3) slots in beside it as another variant.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tether_wire::LineReader;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Size of the per-thread read buffer that session sockets are read into.
const SCRATCH: usize = 16 * 1024;
/// Send buffer on native session sockets: lines in socket buffers are
/// "sent" but may never arrive, so keep them few (SPEC 4 "Replay window").
const SESSION_SNDBUF: usize = 16 * 1024;

/// A client connection the gateway can hand to a session.
pub trait ClientIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// Socket settings for a native session connection (SPEC 4
    /// "Liveness of native clients").
    fn tune_for_session(&self) {}
}

impl ClientIo for TcpStream {
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

thread_local! {
    static SCRATCH_BUF: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; SCRATCH].into_boxed_slice());
}

/// Reads what `io` has into `lines`, through a per-thread buffer: a session
/// owns only the bytes it actually received, never a read buffer of its
/// own, so idle sessions stay small and what one keeps (a partial line, a
/// line in its replay window) does not pin a large allocation.
pub(crate) fn poll_read_lines<R: AsyncRead + Unpin + ?Sized>(
    io: &mut R,
    cx: &mut Context<'_>,
    lines: &mut LineReader,
) -> Poll<io::Result<usize>> {
    SCRATCH_BUF.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let mut rb = ReadBuf::new(&mut scratch[..]);
        match Pin::new(io).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                lines.push(rb.filled());
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
}

/// What reading a client produced.
pub(crate) enum ClientRead {
    Line(Bytes),
    /// The client closed or the connection failed: detach.
    Gone,
    /// A line over `max_line`: the session ends.
    TooLong,
}

/// A native (HTTP/1.1) client connection after its answer head.
pub(crate) struct Link {
    io: Box<dyn ClientIo>,
    input: LineReader,
    out: BytesMut,
    eof: bool,
}

impl Link {
    pub(crate) fn native(io: Box<dyn ClientIo>, max_line: usize) -> Link {
        io.tune_for_session();
        Link {
            io,
            input: LineReader::new(max_line),
            out: BytesMut::new(),
            eof: false,
        }
    }

    /// Bytes queued toward the client and not yet written.
    pub(crate) fn pending(&self) -> usize {
        self.out.len()
    }

    pub(crate) fn queue(&mut self, line: &[u8]) {
        self.out.extend_from_slice(line);
    }

    /// The next whole client line, if one can be had without blocking.
    pub(crate) fn poll_line(&mut self, cx: &mut Context<'_>) -> Poll<ClientRead> {
        loop {
            match self.input.next_line() {
                Ok(Some(line)) => return Poll::Ready(ClientRead::Line(line)),
                Ok(None) => {}
                Err(_) => return Poll::Ready(ClientRead::TooLong),
            }
            if self.eof {
                return Poll::Ready(ClientRead::Gone);
            }
            match poll_read_lines(&mut self.io, cx, &mut self.input) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    // Bytes after the last LF are not a line (SPEC 2).
                    self.input.discard_partial();
                    self.eof = true;
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => {
                    // Idle sessions hold no read buffer.
                    self.input.shrink();
                    return Poll::Pending;
                }
            }
        }
    }

    /// Writes what it can of the queued bytes; `Ready(Ok(()))` when some
    /// progress was made.
    pub(crate) fn poll_write_some(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.io).poll_write(cx, &self.out) {
            Poll::Ready(Ok(0)) => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => {
                self.out.advance(n);
                if self.out.is_empty() {
                    self.out = BytesMut::new();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Ends the connection after everything queued was written (EOF).
    pub(crate) fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            std::task::ready!(self.poll_write_some(cx))?;
        }
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
