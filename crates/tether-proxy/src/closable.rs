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
    /// The connection task waiting on a read, woken to see the close.
    reader: AtomicWaker,
}

impl CloseHandle {
    pub(crate) fn close(&self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.reader.wake();
    }
}

pub(crate) struct ClosableIo {
    io: TokioIo<TcpStream>,
    shared: Arc<Shared>,
}

impl ClosableIo {
    fn closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }
}

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
        if polled.is_pending() {
            self.shared.reader.register(cx.waker());
            // A close between the check and the registration.
            if self.closed() {
                return Poll::Ready(Err(aborted()));
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
        if self.closed() {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
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
        if self.closed() {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
