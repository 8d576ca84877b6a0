//! Upstream connections the gateway can close on demand.
//!
//! An answer that breaks the framing rules (SPEC 5) must not leave its
//! connection in the pool: whatever the origin sent after it is not to be
//! trusted as the start of the next answer. hyper-util offers per-request
//! connection capture for that, but it costs a channel and an extension
//! map on every request; here each connection carries one small handle
//! instead, which hyper-util puts in the extensions of every answer it
//! reads on that connection ([`Connected::extra`]). Closing through it
//! makes the connection's next read or write fail, which hyper turns into
//! the connection's end (the origin sees it closed).
//!
//! A kept-alive connection is also looked at before a request is written
//! on it: an origin that closed it while idle (Apache stopping, its
//! keep-alive timeout) is found by the kernel at once, while hyper's pool
//! learns it only when the connection's task next runs. Writing there
//! would lose the request after it was written, which for a message
//! request ends the session (SPEC 6); refused before any byte goes out,
//! it is [`NotWritten`] and may be sent again on another connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A connector whose connections can be closed through the
/// [`CloseHandle`] found in each answer's extensions.
#[derive(Clone)]
pub(crate) struct ClosableConnector(pub(crate) HttpConnector);

/// Closes the connection an answer arrived on.
#[derive(Clone)]
pub(crate) struct CloseHandle(Arc<Shared>);

#[derive(Default)]
struct Shared {
    closed: AtomicBool,
    /// Switched to another protocol (`101`): a relayed byte stream now,
    /// not requests, and nothing to look at before a write.
    upgraded: AtomicBool,
    /// The connection task waiting on a read, woken to see the close.
    reader: AtomicWaker,
}

impl CloseHandle {
    /// The connection carries an upgraded protocol from now on.
    pub(crate) fn upgraded(&self) {
        self.0.upgraded.store(true, Ordering::Release);
    }

    pub(crate) fn close(&self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.reader.wake();
    }
}

pub(crate) struct ClosableIo {
    io: TokioIo<TcpStream>,
    shared: Arc<Shared>,
    /// No byte written since the last answer's bytes came (or since the
    /// connection was made): the next write starts a request, on a
    /// connection that may have sat idle. Also true for a connection never
    /// used yet: hyper-util may connect one while a pooled one frees up,
    /// and keep it idle for a later request.
    between_requests: bool,
}

impl ClosableIo {
    fn closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    fn note_written(&mut self, written: &Poll<io::Result<usize>>) {
        if matches!(written, Poll::Ready(Ok(n)) if *n > 0) {
            self.between_requests = false;
        }
    }

    /// Whether the next write may go out: `Err` if the connection is
    /// closed by the gateway, or is between requests and the origin
    /// already closed or reset it, or sent bytes nobody asked for.
    fn writable(&mut self) -> io::Result<()> {
        if self.closed() {
            return Err(aborted());
        }
        if self.between_requests
            && !self.shared.upgraded.load(Ordering::Relaxed)
            && peer_left(self.io.inner())
        {
            self.shared.closed.store(true, Ordering::Release);
            return Err(io::Error::new(io::ErrorKind::ConnectionAborted, NotWritten));
        }
        Ok(())
    }
}

/// One non-blocking peek: the origin's end (EOF) or a reset already
/// there. Bytes waiting are not a reason: an answer may come before the
/// request's body is all written, and hyper reads what an idle connection
/// was sent unasked and closes it itself.
fn peer_left(stream: &TcpStream) -> bool {
    use rustix::io::Errno;
    use rustix::net::RecvFlags;
    let mut byte = [0u8; 1];
    match rustix::net::recv(stream, &mut byte[..], RecvFlags::PEEK | RecvFlags::DONTWAIT) {
        Ok((_, 0)) => true,
        Ok(_) | Err(Errno::AGAIN | Errno::INTR) => false,
        Err(_) => true,
    }
}

/// The origin had closed a kept-alive connection before any byte of the
/// request was written on it: the request never reached it.
#[derive(Debug)]
pub(crate) struct NotWritten;

impl std::fmt::Display for NotWritten {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the origin closed the kept-alive connection before the request was written")
    }
}

impl std::error::Error for NotWritten {}

fn aborted() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "closed by the gateway after a malformed answer",
    )
}

impl tower::Service<Uri> for ClosableConnector {
    type Response = ClosableIo;
    type Error = <HttpConnector as tower::Service<Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<ClosableIo, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move {
            let io = connecting.await?;
            Ok(ClosableIo {
                io,
                shared: Arc::default(),
                between_requests: true,
            })
        })
    }
}

impl Connection for ClosableIo {
    fn connected(&self) -> Connected {
        self.io.connected().extra(CloseHandle(self.shared.clone()))
    }
}

impl Read for ClosableIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        if self.closed() {
            return Poll::Ready(Err(aborted()));
        }
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        match polled {
            // Bytes came (or the end, after which nothing is written).
            Poll::Ready(Ok(())) => self.between_requests = true,
            Poll::Ready(Err(_)) => {}
            Poll::Pending => {
                self.shared.reader.register(cx.waker());
                // A close between the check and the registration.
                if self.closed() {
                    return Poll::Ready(Err(aborted()));
                }
            }
        }
        polled
    }
}

impl Write for ClosableIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.writable()?;
        let written = Pin::new(&mut self.io).poll_write(cx, buf);
        self.note_written(&written);
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.writable()?;
        let written = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.note_written(&written);
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn connected() -> (ClosableIo, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut connector = ClosableConnector(HttpConnector::new());
        let uri: Uri = format!("http://{addr}/").parse().unwrap();
        let (io, accepted) =
            tokio::join!(tower::Service::call(&mut connector, uri), listener.accept());
        (io.unwrap(), accepted.unwrap().0)
    }

    async fn read_some(io: &mut ClosableIo) -> usize {
        let mut raw = [0u8; 64];
        let mut buf = hyper::rt::ReadBuf::new(&mut raw);
        poll_fn(|cx| Pin::new(&mut *io).poll_read(cx, buf.unfilled()))
            .await
            .unwrap();
        buf.filled().len()
    }

    async fn write(io: &mut ClosableIo, bytes: &[u8]) -> io::Result<usize> {
        poll_fn(|cx| Pin::new(&mut *io).poll_write(cx, bytes)).await
    }

    #[tokio::test]
    async fn a_request_is_not_written_on_a_connection_the_origin_closed() {
        let (mut io, mut origin) = connected().await;
        write(&mut io, b"first request").await.unwrap();
        origin.write_all(b"its answer").await.unwrap();
        assert_eq!(read_some(&mut io).await, 10);
        // The origin closes the idle connection; the kernel knows at once.
        let mut seen = Vec::new();
        origin.read_buf(&mut seen).await.unwrap();
        drop(origin);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let err = write(&mut io, b"second request").await.unwrap_err();
        assert!(err.get_ref().is_some_and(|e| e.is::<NotWritten>()), "{err}");
        assert_eq!(seen, b"first request");
    }

    #[tokio::test]
    async fn a_spare_connection_the_origin_closed_carries_no_request() {
        // hyper-util may connect while a pooled connection frees up, and
        // keep the new one idle, unused, for a later request.
        let (mut io, origin) = connected().await;
        drop(origin);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let err = write(&mut io, b"first request").await.unwrap_err();
        assert!(err.get_ref().is_some_and(|e| e.is::<NotWritten>()), "{err}");
    }

    #[tokio::test]
    async fn an_open_kept_alive_connection_carries_the_next_request() {
        let (mut io, mut origin) = connected().await;
        write(&mut io, b"first").await.unwrap();
        origin.write_all(b"answer").await.unwrap();
        assert_eq!(read_some(&mut io).await, 6);
        assert_eq!(write(&mut io, b"second").await.unwrap(), 6);
        let mut seen = vec![0u8; 11];
        origin.read_exact(&mut seen).await.unwrap();
        assert_eq!(seen, b"firstsecond");
    }

    #[tokio::test]
    async fn an_answer_before_the_whole_body_does_not_stop_the_body() {
        let (mut io, mut origin) = connected().await;
        write(&mut io, b"head").await.unwrap();
        origin.write_all(b"early answer, and more").await.unwrap();
        assert!(read_some(&mut io).await > 0);
        origin.write_all(b" still coming").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(write(&mut io, b"body").await.unwrap(), 4);
    }
}
