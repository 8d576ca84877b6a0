//! Accept loops: connection limits, protocol detection, drain.
//!
//! Over `max_connections` or `max_connections_per_ip`, a plain listener
//! accepts the connection, writes `503` with `Retry-After: 1` at once
//! without reading the request, and closes it (SPEC 5).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::gateway::{ConnInfo, Runtime};
use crate::h2;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::conn_limits::{ConnLimits, ConnPermit, LimitHit};
use crate::http1::conn::Http1Conn;
use crate::metrics::{ConnectionGauge, Limit};
use crate::session::ClientIo;

const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\nretry-after: 1\r\ncontent-length: 37\r\nconnection: close\r\n\r\ntoo many connections; try again soon\n";

/// What every accept loop shares.
#[derive(Clone)]
pub(crate) struct Accepting {
    pub(crate) runtime: watch::Receiver<Arc<Runtime>>,
    pub(crate) limits: Arc<ConnLimits>,
    /// SIGTERM: connections finish what is in flight and close.
    pub(crate) drain: CancellationToken,
    pub(crate) tracker: TaskTracker,
}

/// Accepts on one plain listener until `stop` (this listener removed by a
/// reload) or the drain is cancelled.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    configured: SocketAddr,
    tls: bool,
    stop: CancellationToken,
    ctx: Accepting,
) {
    let mut backoff = Duration::from_millis(5);
    // Accepted sockets inherit TCP_NODELAY from the listener (Linux): one
    // system call per listener instead of one per connection.
    let nodelay_inherited = socket2::SockRef::from(&listener)
        .set_tcp_nodelay(true)
        .is_ok();
    let gauge = ctx
        .runtime
        .borrow()
        .metrics
        .listener(&configured.to_string());
    loop {
        // Stops first: once stopped, nothing more is accepted here.
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = ctx.drain.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(5);
                a
            }
            Err(e) => {
                // Out of descriptors and the like: wait, do not spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let rt = ctx.runtime.borrow().clone();
        let permit = match ctx.limits.try_acquire(
            peer.ip(),
            rt.server.max_connections,
            rt.server.max_connections_per_ip,
        ) {
            Ok(p) => p,
            Err(hit) => {
                tracing::debug!(%peer, ?hit, "connection limit hit");
                rt.metrics.limit_hit(match hit {
                    LimitHit::Connections => Limit::Connections,
                    LimitHit::ConnectionsPerIp => Limit::ConnectionsPerIp,
                });
                if !tls {
                    rt.unrouted.response(503, Duration::ZERO);
                    ctx.tracker.spawn(turn_away(stream));
                }
                // On a TLS listener: closed without a handshake (SPEC 5).
                continue;
            }
        };
        let drain = ctx.drain.clone();
        let counted = Counted {
            io: stream,
            _permit: permit,
            _gauge: ConnectionGauge::open(&gauge),
        };
        if tls {
            let Some(server) = rt.tls.clone() else {
                // No vhost has a certificate: nothing to handshake with.
                continue;
            };
            ctx.tracker.spawn(serve_tls(
                counted,
                nodelay_inherited,
                peer,
                rt,
                server,
                drain,
                ctx.limits.clone(),
            ));
        } else {
            ctx.tracker.spawn(serve_connection(
                counted,
                nodelay_inherited,
                peer,
                rt,
                drain,
                ctx.limits.clone(),
            ));
        }
    }
}

/// A client connection that holds its place in the connection counts for
/// as long as it lives, also after it became a session's connection.
pub(crate) struct Counted<IO> {
    io: IO,
    _permit: ConnPermit,
    _gauge: ConnectionGauge,
}

impl<IO> Counted<IO> {
    /// `io` holding `permit` and counted in `gauge` while it lives.
    pub(crate) fn new(io: IO, permit: ConnPermit, gauge: ConnectionGauge) -> Counted<IO> {
        Counted {
            io,
            _permit: permit,
            _gauge: gauge,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<IO: ClientIo> ClientIo for Counted<IO> {
    fn tune_for_session(&self) {
        self.io.tune_for_session();
    }

    fn plain_socket(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.io.plain_socket()
    }
}

impl<IO: ClientIo> ClientIo for TlsStream<IO> {
    fn tune_for_session(&self) {
        self.get_ref().0.tune_for_session();
    }
}

/// A connection on a TLS listener: the handshake must be done within
/// `header_read_timeout` of the accept (else close, no 408); ALPN picks
/// HTTP/2 or HTTP/1.1.
async fn serve_tls(
    stream: Counted<TcpStream>,
    nodelay_inherited: bool,
    peer: SocketAddr,
    rt: Arc<Runtime>,
    tls: Arc<ServerConfig>,
    drain: CancellationToken,
    limits: Arc<ConnLimits>,
) {
    let accepted = Instant::now();
    if !nodelay_inherited {
        let _ = stream.io.set_nodelay(true);
    }
    let deadline = accepted + rt.server.header_read_timeout;
    let handshake = tokio::select! {
        r = tokio::time::timeout_at(deadline, TlsAcceptor::from(tls).accept(stream)) => r,
        _ = drain.cancelled() => return,
    };
    let stream = match handshake {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            rt.metrics.limit_hit(Limit::HeaderTimeout);
            return;
        }
    };
    let info = ConnInfo { peer, https: true };
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        h2::serve(stream, BytesMut::new(), accepted, rt, info, drain, limits).await;
    } else {
        Http1Conn::serve(stream, BytesMut::new(), accepted, rt, info, drain).await;
    }
}

pub(crate) async fn turn_away(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(OVERLOADED).await;
        let _ = stream.shutdown().await;
        // Give the client a moment to read before the close can reset.
        let mut sink = [0u8; 512];
        let _ = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut sink)).await;
    })
    .await;
}

async fn serve_connection(
    stream: Counted<TcpStream>,
    nodelay_inherited: bool,
    peer: SocketAddr,
    rt: Arc<Runtime>,
    drain: CancellationToken,
    limits: Arc<ConnLimits>,
) {
    let accepted = Instant::now();
    if !nodelay_inherited {
        let _ = stream.io.set_nodelay(true);
    }
    let info = ConnInfo { peer, https: false };
    let mut stream = stream;
    let mut buf = BytesMut::with_capacity(4096);
    let deadline = accepted + rt.server.header_read_timeout;
    // Read until the bytes cannot be an HTTP/2 preface, or are one.
    loop {
        let n = buf.len().min(h2::PREFACE.len());
        if buf[..n] != h2::PREFACE[..n] || (n == h2::PREFACE.len()) {
            break;
        }
        tokio::select! {
            biased;
            r = stream.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            _ = tokio::time::sleep_until(deadline) => break,
            _ = drain.cancelled() => return,
        }
    }
    if buf.starts_with(h2::PREFACE) {
        h2::serve(stream, buf, accepted, rt, info, drain, limits).await;
    } else {
        Http1Conn::serve(stream, buf, accepted, rt, info, drain).await;
    }
}
