//! The plain reverse proxy's client to origins and workers (SPEC 5):
//! HTTP/1.1 on pooled connections, each exchange written and read by the
//! task that asked for it ([`crate::body::upstream`]).
//!
//! One `Upstreams` per config load is shared by every vhost; a reload
//! builds a new one (its timeouts and `max_upstream_connections` may have
//! changed) and requests in flight finish on the old one. Errors say which
//! side failed and map to exactly one status and one metric kind.

use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Buf;
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use tokio::net::TcpStream;

use crate::body::upstream::{
    Delimited, RequestWriter, Reuse, UpstreamBody, UpstreamConn, WriteError,
};
use crate::body::{Body, ClientBodyError, WatchedBody};
use crate::codec::answer::{self, AnswerFraming};
use crate::codec::upstream::{encode_request_head, parse_answer_head, AnswerHead, RequestBody};
use crate::config::{OriginUrl, ServerConfig};
use crate::metrics::UpstreamKind;

mod pool;

use pool::{Pool, Pools};

/// How an upstream exchange failed; [`UpstreamError::metric_kind`] says how
/// `tether_upstream_errors_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamError {
    /// Refused or unreachable.
    Connect,
    /// Reset or closed before a whole answer.
    Reset,
    /// Connect or response slower than configured.
    Timeout,
    /// An answer the gateway cannot use.
    Protocol,
    /// Every one of the upstream's `max_upstream_connections` stayed busy
    /// for `origin_connect_timeout`: 503, a limit, not an upstream error.
    Saturated,
    /// The client's body stopped coming (no byte for `idle_timeout`): 408,
    /// the client's fault, not the upstream's.
    ClientStalled,
}

impl UpstreamError {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            UpstreamError::Connect => "connect",
            UpstreamError::Reset => "reset",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Protocol => "protocol",
            UpstreamError::Saturated => "saturated",
            UpstreamError::ClientStalled => "client_stalled",
        }
    }

    /// The `kind` of `tether_upstream_errors_total` that counts it; `None`
    /// for what is a limit or the client's fault, not the upstream's.
    pub(crate) fn metric_kind(self) -> Option<UpstreamKind> {
        match self {
            UpstreamError::Connect => Some(UpstreamKind::Connect),
            UpstreamError::Reset => Some(UpstreamKind::Reset),
            UpstreamError::Timeout => Some(UpstreamKind::Timeout),
            UpstreamError::Protocol => Some(UpstreamKind::Protocol),
            UpstreamError::Saturated | UpstreamError::ClientStalled => None,
        }
    }

    pub(crate) fn status(self) -> StatusCode {
        match self {
            UpstreamError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            UpstreamError::Saturated => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamError::ClientStalled => StatusCode::REQUEST_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

/// The longest answer head accepted, as HAProxy's default 16 KiB buffer
/// bounds it.
const MAX_ANSWER_HEAD: usize = 16 * 1024;

/// The client to origins and workers.
#[derive(Clone)]
pub(crate) struct Upstreams(Arc<Shared>);

struct Shared {
    pools: Pools,
    response_timeout: Duration,
    connect_timeout: Duration,
    /// A client body that sends nothing this long ends the exchange (408).
    body_stall: Duration,
}

impl Upstreams {
    /// The client of a config load whose origins and workers are
    /// `upstreams` (their authorities, each with its own
    /// `max_upstream_connections`: requests in flight, one connection each,
    /// so that one client's fan-out, e.g. many HTTP/2 streams, cannot open
    /// connections without bound).
    pub(crate) fn new<'a>(
        server: &ServerConfig,
        upstreams: impl IntoIterator<Item = &'a str>,
    ) -> Upstreams {
        let cap = server.max_upstream_connections;
        Upstreams(Arc::new(Shared {
            pools: Pools::new(upstreams, cap, cap.min(256)),
            response_timeout: server.origin_response_timeout,
            connect_timeout: server.origin_connect_timeout,
            body_stall: server.idle_timeout,
        }))
    }

    /// `origin_response_timeout`.
    pub(crate) fn response_timeout(&self) -> Duration {
        self.0.response_timeout
    }

    /// Sends `req` (its URI still in origin-form) to `upstream` and waits for
    /// the answer head at most `origin_response_timeout` after the request
    /// body ended. The answer's framing is checked (SPEC 5): one that could
    /// split the client's response stream is refused as `Protocol` and its
    /// connection is never reused.
    pub(crate) async fn send(
        &self,
        upstream: &OriginUrl,
        req: Request<Body>,
    ) -> Result<Response<Body>, UpstreamError> {
        self.send_once(upstream, req).await.map_err(|f| f.kind)
    }

    /// [`Upstreams::send`], saying also whether the request failed before
    /// any byte of it was written, which is what makes resending it safe
    /// (SPEC 6 `worker_retry`).
    pub(crate) async fn send_once(
        &self,
        upstream: &OriginUrl,
        req: Request<Body>,
    ) -> Result<Response<Body>, Failed> {
        let shared = &*self.0;
        let (parts, mut body) = req.into_parts();
        let asked_upgrade = asks_upgrade(&parts.headers);
        let to_head = parts.method == Method::HEAD;
        let pool = shared.pools.get(&upstream.authority);
        let permit = match pool.limit.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let waited = tokio::time::timeout(
                    shared.connect_timeout,
                    pool.limit.clone().acquire_owned(),
                )
                .await;
                match waited {
                    Ok(Ok(p)) => p,
                    _ => {
                        tracing::warn!(upstream = %upstream.as_written, "max_upstream_connections reached");
                        return Err(Failed::sent(UpstreamError::Saturated));
                    }
                }
            }
        };
        if !body.is_end_stream() {
            body = WatchedBody::wrap(body, shared.body_stall).0;
        }
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut head = Vec::with_capacity(512);
        let coding = encode_request_head(
            &mut head,
            &parts.method,
            path,
            &parts.headers,
            body.size_hint().exact(),
        );
        // A safe request without a body may be written twice: if the pooled
        // connection was closed after the look (pool.rs), it goes again on a
        // new one.
        let resendable = coding == RequestBody::None
            && matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        let mut writer = RequestWriter::new(head, body, coding);
        let (mut conn, mut pooled) = match pool.take() {
            Some(conn) => (conn, true),
            None => (self.connect(upstream).await?, false),
        };
        let (head, early) = loop {
            match self.exchange(&mut conn, &mut writer).await {
                Ok(answered) => break answered,
                Err(e) if pooled && resendable && e.closed_unanswered(&conn) && writer.rewind() => {
                    tracing::debug!(upstream = %upstream.as_written, "kept-alive connection closed by the upstream; sending again on a new one");
                    conn = self.connect(upstream).await?;
                    pooled = false;
                }
                Err(e) => return Err(self.refused(upstream, e)),
            }
        };
        let writing = early.then_some(writer);
        let framing = match answer::framing(head.status, &head.headers, to_head, asked_upgrade) {
            Ok(framing) => framing,
            Err(why) => {
                tracing::warn!(upstream = %upstream.as_written, status = head.status.as_u16(), why, "upstream answer refused");
                return Err(Failed::sent(UpstreamError::Protocol));
            }
        };
        let reuse = head.keeps_alive().then(|| pool.clone() as Arc<dyn Reuse>);
        let AnswerHead {
            status,
            version,
            mut headers,
        } = head;
        answer::normalize(status, &mut headers, framing);
        let body = if status == StatusCode::SWITCHING_PROTOCOLS {
            Body::Upstream(Box::new(UpstreamBody::upgraded(conn, permit)))
        } else {
            let delimited = match framing {
                AnswerFraming::None | AnswerFraming::Length(0) => None,
                AnswerFraming::Length(n) => Some(Delimited::Length(n)),
                AnswerFraming::Chunked => Some(Delimited::Chunked),
                AnswerFraming::UntilClose => Some(Delimited::UntilClose),
            };
            match delimited {
                Some(delimited) => Body::Upstream(Box::new(UpstreamBody::new(
                    conn, delimited, writing, reuse, permit,
                ))),
                None => {
                    if let (Some(reuse), None) = (reuse, writing) {
                        reuse.put(conn);
                    }
                    Body::Empty
                }
            }
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        *resp.version_mut() = version;
        *resp.headers_mut() = headers;
        Ok(resp)
    }

    /// Writes the request on `conn` and reads the answer head: `true` with
    /// it when the upstream answered before it had the whole body.
    async fn exchange(
        &self,
        conn: &mut UpstreamConn,
        writer: &mut RequestWriter,
    ) -> Result<(AnswerHead, bool), ExchangeError> {
        // The request goes out while the answer is watched for: an
        // upstream may answer before it has read the whole body.
        let early = poll_fn(|cx| {
            match writer.poll_write(&mut conn.stream, cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(Ok(None)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(write_failure(e))),
                Poll::Pending => {}
            }
            if !writer.head_sent() {
                return Poll::Pending;
            }
            poll_answer_head(conn, cx).map_ok(Some)
        })
        .await?;
        if let Some(head) = early {
            return Ok((head, true));
        }
        // The response timer starts when the body is over (SPEC 5).
        let read = poll_fn(|cx| poll_answer_head(conn, cx));
        match tokio::time::timeout(self.0.response_timeout, read).await {
            Err(_) => Err(ExchangeError::Timeout),
            Ok(head) => Ok((head?, false)),
        }
    }

    /// A new connection to `upstream`; a refusal or a timeout here means
    /// no byte of the request went out.
    async fn connect(&self, upstream: &OriginUrl) -> Result<UpstreamConn, Failed> {
        let connect = TcpStream::connect((upstream.host.as_str(), upstream.port));
        let kind = match tokio::time::timeout(self.0.connect_timeout, connect).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(UpstreamConn {
                    stream,
                    buf: bytes::BytesMut::new(),
                });
            }
            Ok(Err(e)) => {
                tracing::debug!(upstream = %upstream.as_written, error = %e, "upstream connect failed");
                if e.kind() == io::ErrorKind::TimedOut {
                    UpstreamError::Timeout
                } else {
                    UpstreamError::Connect
                }
            }
            Err(_) => UpstreamError::Timeout,
        };
        Err(Failed { kind, unsent: true })
    }

    /// Logs a failed exchange; the failure says what it was.
    fn refused(&self, upstream: &OriginUrl, e: ExchangeError) -> Failed {
        let kind = match &e {
            ExchangeError::Answer(_) => UpstreamError::Protocol,
            ExchangeError::ClientStalled => UpstreamError::ClientStalled,
            ExchangeError::Timeout => UpstreamError::Timeout,
            ExchangeError::Io(io) if io.kind() == io::ErrorKind::TimedOut => UpstreamError::Timeout,
            ExchangeError::Io(_) | ExchangeError::Closed | ExchangeError::ClientBody => {
                UpstreamError::Reset
            }
        };
        match e {
            ExchangeError::Answer(why) => {
                tracing::warn!(upstream = %upstream.as_written, why, "upstream answer refused")
            }
            e => {
                tracing::debug!(upstream = %upstream.as_written, error = ?e, ?kind, "upstream failed")
            }
        }
        Failed::sent(kind)
    }
}

impl Reuse for Pool {
    fn put(self: Arc<Self>, conn: UpstreamConn) {
        Pool::put(&self, conn);
    }
}

/// Why an exchange failed after the connection was made.
#[derive(Debug)]
enum ExchangeError {
    Io(io::Error),
    /// Closed by the upstream before a whole answer head.
    Closed,
    /// Not an answer to relay.
    Answer(&'static str),
    /// The client's body stopped coming.
    ClientStalled,
    /// The client's body broke off.
    ClientBody,
    /// No answer head within `origin_response_timeout`.
    Timeout,
}

impl ExchangeError {
    /// The upstream had closed the connection: it ended or was reset
    /// before a byte of an answer came, so the request went nowhere.
    fn closed_unanswered(&self, conn: &UpstreamConn) -> bool {
        let closed = match self {
            ExchangeError::Closed => true,
            ExchangeError::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        };
        closed && conn.buf.is_empty()
    }
}

fn write_failure(e: WriteError) -> ExchangeError {
    match e {
        WriteError::Io(e) => ExchangeError::Io(e),
        WriteError::Body(e) => {
            let stalled = e
                .downcast_ref::<ClientBodyError>()
                .is_some_and(|e| matches!(e, ClientBodyError::Stalled));
            if stalled {
                ExchangeError::ClientStalled
            } else {
                ExchangeError::ClientBody
            }
        }
    }
}

/// Reads an answer head off `conn`, skipping interim answers other than
/// `101` (a `100 Continue` the gateway did not ask for is not relayed).
fn poll_answer_head(
    conn: &mut UpstreamConn,
    cx: &mut Context<'_>,
) -> Poll<Result<AnswerHead, ExchangeError>> {
    loop {
        if !conn.buf.is_empty() {
            match parse_answer_head(&conn.buf) {
                Ok(Some((head, used))) => {
                    conn.buf.advance(used);
                    if head.status.is_informational()
                        && head.status != StatusCode::SWITCHING_PROTOCOLS
                    {
                        continue;
                    }
                    return Poll::Ready(Ok(head));
                }
                Ok(None) if conn.buf.len() >= MAX_ANSWER_HEAD => {
                    return Poll::Ready(Err(ExchangeError::Answer("answer head too large")))
                }
                Ok(None) => {}
                Err(_) => return Poll::Ready(Err(ExchangeError::Answer("malformed answer head"))),
            }
        }
        if conn.buf.capacity() - conn.buf.len() < 1024 {
            conn.buf.reserve(4096);
        }
        match tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut conn.stream), cx, &mut conn.buf)
        {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(ExchangeError::Closed)),
            Poll::Ready(Ok(_)) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(ExchangeError::Io(e))),
        }
    }
}

/// A failed exchange and whether the request may have reached the
/// upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Failed {
    pub(crate) kind: UpstreamError,
    /// No byte of the request was written: the connection was refused, or
    /// not accepted within `origin_connect_timeout`.
    pub(crate) unsent: bool,
}

impl Failed {
    fn sent(kind: UpstreamError) -> Failed {
        Failed {
            kind,
            unsent: false,
        }
    }
}

/// `Connection: upgrade` with an `Upgrade` field: the request asks to
/// switch protocols, so a `101` may answer it.
fn asks_upgrade(headers: &http::HeaderMap) -> bool {
    headers.contains_key(http::header::UPGRADE)
        && headers
            .get_all(http::header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .any(|t| crate::codec::trim(t).eq_ignore_ascii_case(b"upgrade"))
}
