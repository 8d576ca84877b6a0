//! HTTP/2 client connections (cleartext with prior knowledge, or over TLS
//! chosen by ALPN), served by hyper with the same gateway service as
//! HTTP/1.
//!
//! SPEC 5 timers for HTTP/2: no complete HEADERS within
//! `header_read_timeout` of the accept, or no open stream for
//! `idle_timeout`, and the connection is sent GOAWAY and closed.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::body::Body;
use crate::conn_limits::{ConnLimits, ConnPermit};
use crate::exchange::Unanswered;
use crate::gateway::{self, ConnInfo, Runtime};
use crate::metrics::Limit;

/// How long a connection told GOAWAY may take to close by itself.
const GOAWAY_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Per-stream bytes hyper buffers toward a client before it stops polling
/// the answer body.
const H2_SEND_BUFFER: usize = 64 * 1024;

/// The client preface every HTTP/2 connection starts with.
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Streams in progress and the moment the count last changed.
struct Activity {
    open: AtomicUsize,
    seen_any: std::sync::atomic::AtomicBool,
    changed: Notify,
}

struct StreamGuard(Arc<Activity>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_one();
    }
}

pub(crate) async fn serve<IO>(
    io: IO,
    prefix: BytesMut,
    accepted: Instant,
    rt: Arc<Runtime>,
    info: ConnInfo,
    drain: CancellationToken,
    limits: Arc<ConnLimits>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity {
        open: AtomicUsize::new(0),
        seen_any: false.into(),
        changed: Notify::new(),
    });
    let service = {
        let activity = activity.clone();
        let rt = rt.clone();
        let draining = crate::session::Draining(drain.clone());
        service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            // A session's down channel ends when the server drains (SPEC 13).
            req.extensions_mut().insert(draining.clone());
            let concurrent = activity.open.fetch_add(1, Ordering::AcqRel);
            activity.seen_any.store(true, Ordering::Release);
            activity.changed.notify_one();
            // The connection's place covers its first stream; each stream
            // beyond it takes a place of the address's own (SPEC 7 limits,
            // issue: streams fanned out to the origin).
            let extra = (concurrent > 0).then(|| {
                limits.try_acquire_stream(info.peer.ip(), rt.server.max_connections_per_ip)
            });
            let guard = StreamGuard(activity.clone());
            let rt = rt.clone();
            let started = Instant::now();
            let method = req.method().clone();
            let target = req.uri().path_and_query().map(|p| p.as_str().to_owned());
            // A stream over the address's budget never enters the path.
            let answer = match &extra {
                Some(None) => None,
                _ => {
                    let mut path = rt.path.clone();
                    Some(gateway::handle(&mut path, info, req.map(Body::Incoming)))
                }
            };
            async move {
                let (mut resp, stream_place) = match answer {
                    None => {
                        rt.metrics.limit_hit(Limit::ConnectionsPerIp);
                        let mut resp = gateway::text_response(
                            http::StatusCode::SERVICE_UNAVAILABLE,
                            "too many connections; try again soon\n",
                        );
                        resp.headers_mut().insert(
                            http::header::RETRY_AFTER,
                            http::HeaderValue::from_static("1"),
                        );
                        (resp, None)
                    }
                    Some(answer) => (answer.await, extra.flatten()),
                };
                if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                    // No upgrades over HTTP/2 (RFC 8441 is not offered).
                    resp = gateway::text_response(
                        http::StatusCode::BAD_GATEWAY,
                        "the origin switched protocols on an HTTP/2 stream\n",
                    );
                }
                if resp.extensions().get::<Unanswered>().is_some() {
                    tracing::debug!(peer = %info.peer, "stream refused unanswered: the client tries again");
                    return Err(h2::Error::from(h2::Reason::REFUSED_STREAM));
                }
                let answered_by = resp
                    .extensions_mut()
                    .remove::<gateway::AnsweredBy>()
                    .map_or_else(|| rt.unrouted.clone(), |a| a.0);
                let finished = Finished {
                    _guard: guard,
                    _place: stream_place,
                    metrics: answered_by,
                    peer: info.peer,
                    method,
                    target,
                    status: resp.status().as_u16(),
                    started,
                    bytes: 0,
                };
                Ok::<_, h2::Error>(resp.map(|body| StreamBody { body, finished }))
            }
        })
    };
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_header_list_size(rt.server.max_header_bytes as u32)
        // A client that does not read holds at most this much of an
        // answer per stream in tether (then the origin is read slower).
        .max_send_buf_size(H2_SEND_BUFFER)
        .serve_connection(TokioIo::new(Prefixed { prefix, io }), service);
    tokio::pin!(conn);
    let server = &rt.server;
    let mut deadline = accepted + server.header_read_timeout;
    let mut shutting_down = false;
    // After GOAWAY hyper waits for the client's PING ack with no deadline
    // of its own; a silent client gets this long, then the socket closes.
    let mut hard_stop = Instant::now();
    loop {
        tokio::select! {
            _ = &mut conn => return,
            _ = tokio::time::sleep_until(hard_stop), if shutting_down => return,
            _ = activity.changed.notified() => {
                if activity.open.load(Ordering::Acquire) == 0 {
                    deadline = Instant::now() + server.idle_timeout;
                }
            }
            _ = tokio::time::sleep_until(deadline), if !shutting_down => {
                let idle = activity.open.load(Ordering::Acquire) == 0;
                if idle || !activity.seen_any.load(Ordering::Acquire) {
                    rt.metrics.limit_hit(if activity.seen_any.load(Ordering::Acquire) {
                        Limit::IdleTimeout
                    } else {
                        Limit::HeaderTimeout
                    });
                    conn.as_mut().graceful_shutdown();
                    shutting_down = true;
                    hard_stop = Instant::now() + GOAWAY_GRACE;
                } else {
                    deadline = Instant::now() + server.idle_timeout;
                }
            }
            _ = drain.cancelled(), if !shutting_down => {
                conn.as_mut().graceful_shutdown();
                shutting_down = true;
                // Streams in flight may finish within the drain; the drain's
                // own deadline bounds them.
                hard_stop = Instant::now() + rt.server.drain_timeout;
                if activity.open.load(Ordering::Acquire) == 0 {
                    hard_stop = Instant::now() + GOAWAY_GRACE;
                }
            }
        }
    }
}

/// The response body of one stream: the stream counts as open, and its
/// answer is logged and measured, until the body is done or dropped (a
/// long streamed answer is not "no open stream").
struct StreamBody {
    body: Body,
    finished: Finished,
}

struct Finished {
    _guard: StreamGuard,
    _place: Option<ConnPermit>,
    metrics: Arc<crate::metrics::VhostMetrics>,
    peer: std::net::SocketAddr,
    method: http::Method,
    target: Option<String>,
    status: u16,
    started: Instant,
    bytes: u64,
}

impl Drop for Finished {
    fn drop(&mut self) {
        let took = self.started.elapsed();
        self.metrics.response(self.status, took);
        gateway::log_access(
            self.peer,
            self.method.as_str(),
            self.target.as_deref().unwrap_or("/"),
            self.status,
            self.bytes,
            took,
            true,
        );
    }
}

impl http_body::Body for StreamBody {
    type Data = bytes::Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &frame {
            if let Some(d) = f.data_ref() {
                this.finished.bytes += d.len() as u64;
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// An IO that first yields bytes already read from it.
struct Prefixed<IO> {
    prefix: BytesMut,
    io: IO,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                self.prefix = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
