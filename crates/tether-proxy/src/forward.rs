//! The plain reverse proxy: a pooled HTTP/1.1 client to origins (SPEC 5).
//!
//! One `Upstreams` client per config load is shared by every vhost; a
//! reload builds a new one (its timeouts and `max_upstream_connections`
//! may have changed) and requests in flight finish on the old one. Errors
//! say which side failed and map to exactly one status and one metric kind.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use http_body::Body as _;
use tokio::sync::Semaphore;

use http::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::{Body, BodyEnd, UpstreamPermit, WatchedBody};
use crate::closable::{ClosableConnector, CloseHandle, NotWritten};
use crate::codec::answer;
use crate::config::{OriginUrl, ServerConfig};
use crate::metrics::UpstreamKind;

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

    fn classify(err: &hyper_util::client::legacy::Error) -> UpstreamError {
        let mut source: Option<&(dyn StdError + 'static)> = err.source();
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<io::Error>() {
                return match io.kind() {
                    io::ErrorKind::TimedOut => UpstreamError::Timeout,
                    io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::AddrNotAvailable
                    | io::ErrorKind::HostUnreachable
                    | io::ErrorKind::NetworkUnreachable
                    | io::ErrorKind::NotFound => UpstreamError::Connect,
                    _ if err.is_connect() => UpstreamError::Connect,
                    _ => UpstreamError::Reset,
                };
            }
            if let Some(h) = e.downcast_ref::<hyper::Error>() {
                if h.is_parse() || h.is_parse_status() || h.is_parse_too_large() {
                    return UpstreamError::Protocol;
                }
            }
            source = e.source();
        }
        if err.is_connect() {
            UpstreamError::Connect
        } else {
            UpstreamError::Reset
        }
    }
}

/// hyper's read buffer per upstream connection: an answer is read this much
/// at a time, and only as the client takes bytes, so a client that does
/// not read holds little (64 KiB here measured 512 KiB per connection,
/// 16 KiB about 100). It also bounds an answer's head, as HAProxy's default
/// 16 KiB buffer does.
const MAX_UPSTREAM_BUFFER: usize = 16 * 1024;

/// How long an idle upstream connection is kept for reuse: shorter than
/// Apache's default `KeepAliveTimeout` (5 s), so that the gateway, not
/// the origin, closes it. An origin that closes first races the next
/// request written on the connection, and a written request that gets no
/// answer is a 502 for a plain request and the session's end for a
/// message request (SPEC 6). An idle connection also holds an Apache
/// prefork child that could serve someone else.
const POOL_IDLE: Duration = Duration::from_secs(4);

/// The pooled client to origins.
#[derive(Clone)]
pub(crate) struct Upstreams {
    client: Client<ClosableConnector, Body>,
    response_timeout: Duration,
    connect_timeout: Duration,
    /// A client body that sends nothing this long ends the exchange (408).
    body_stall: Duration,
    limits: Arc<UpstreamLimits>,
}

/// `max_upstream_connections` per upstream authority: requests in flight
/// (one connection each on HTTP/1.1), so that one client's fan-out, e.g.
/// many HTTP/2 streams, cannot open connections without bound. Built for
/// every origin and worker of a config load, then only read: no lock on
/// the request path.
struct UpstreamLimits {
    by_upstream: HashMap<String, Arc<Semaphore>>,
    /// For an upstream the config load did not name (none in `tether run`).
    other: Arc<Semaphore>,
}

impl UpstreamLimits {
    fn semaphore(&self, authority: &str) -> &Arc<Semaphore> {
        self.by_upstream.get(authority).unwrap_or(&self.other)
    }
}

impl Upstreams {
    /// The client of a config load whose origins and workers are
    /// `upstreams` (their authorities, each with its own cap).
    pub(crate) fn new<'a>(
        server: &ServerConfig,
        upstreams: impl IntoIterator<Item = &'a str>,
    ) -> Upstreams {
        let cap = server.max_upstream_connections;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(server.origin_connect_timeout));
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(server.max_upstream_connections.min(256))
            .http1_max_buf_size(MAX_UPSTREAM_BUFFER)
            .set_host(false)
            .build(ClosableConnector(connector));
        Upstreams {
            client,
            response_timeout: server.origin_response_timeout,
            connect_timeout: server.origin_connect_timeout,
            body_stall: server.idle_timeout,
            limits: Arc::new(UpstreamLimits {
                by_upstream: upstreams
                    .into_iter()
                    .map(|a| (a.to_owned(), Arc::new(Semaphore::new(cap))))
                    .collect(),
                other: Arc::new(Semaphore::new(cap)),
            }),
        }
    }

    /// `origin_response_timeout`.
    pub(crate) fn response_timeout(&self) -> Duration {
        self.response_timeout
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
        mut req: Request<Body>,
    ) -> Result<Response<Body>, Failed> {
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        *req.uri_mut() = Uri::builder()
            .scheme("http")
            .authority(upstream.authority.as_str())
            .path_and_query(path)
            .build()
            .map_err(|_| Failed::sent(UpstreamError::Protocol))?;
        *req.version_mut() = http::Version::HTTP_11;
        let asked_upgrade = asks_upgrade(&req);
        let to_head = req.method() == http::Method::HEAD;

        let semaphore = self.limits.semaphore(&upstream.authority);
        let permit = match semaphore.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                match tokio::time::timeout(self.connect_timeout, semaphore.clone().acquire_owned())
                    .await
                {
                    Ok(Ok(p)) => p,
                    _ => {
                        tracing::warn!(upstream = %upstream.as_written, "max_upstream_connections reached");
                        return Err(Failed::sent(UpstreamError::Saturated));
                    }
                }
            }
        };

        let mut body_end = None;
        if !req.body().is_end_stream() {
            let body = std::mem::replace(req.body_mut(), Body::Empty);
            let (watched, ended) = WatchedBody::wrap(body, self.body_stall);
            *req.body_mut() = watched;
            body_end = Some(ended);
        }
        let answer = self.client.request(req);
        tokio::pin!(answer);
        // The response timer starts when the body is over (SPEC 5); an
        // origin may also answer before it read the whole body.
        if let Some(ended) = body_end {
            tokio::select! {
                // A stalled body also fails the request inside hyper; the
                // stall is the cause to report (408), so it is looked at
                // first.
                biased;
                how = ended => if how == Ok(BodyEnd::Stalled) {
                    return Err(Failed::sent(UpstreamError::ClientStalled));
                },
                r = &mut answer => return self.check(upstream, r, permit, to_head, asked_upgrade),
            }
        }
        match tokio::time::timeout(self.response_timeout, answer).await {
            Err(_) => Err(Failed::sent(UpstreamError::Timeout)),
            Ok(r) => self.check(upstream, r, permit, to_head, asked_upgrade),
        }
    }

    fn check(
        &self,
        upstream: &OriginUrl,
        answer: Result<Response<hyper::body::Incoming>, hyper_util::client::legacy::Error>,
        permit: UpstreamPermit,
        to_head: bool,
        asked_upgrade: bool,
    ) -> Result<Response<Body>, Failed> {
        let resp = match answer {
            Ok(resp) => resp,
            Err(e) => {
                let kind = UpstreamError::classify(&e);
                tracing::debug!(upstream = %upstream.as_written, error = ?e, ?kind, "upstream failed");
                // hyper-util says `is_connect` only for errors of the
                // connector, before a connection existed to write on; a
                // pooled connection hyper-util already knew closed is
                // retried inside it and never reaches here; one only the
                // kernel knew closed is `NotWritten` (closable.rs).
                let stale = not_written(&e);
                return Err(Failed {
                    kind,
                    unsent: e.is_connect() || stale,
                    stale,
                });
            }
        };
        match answer::framing(resp.status(), resp.headers(), to_head, asked_upgrade) {
            Ok(framing) => {
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    if let Some(conn) = resp.extensions().get::<CloseHandle>() {
                        conn.upgraded();
                    }
                }
                let (mut parts, body) = resp.into_parts();
                answer::normalize(parts.status, &mut parts.headers, framing);
                Ok(Response::from_parts(parts, Body::Upstream(body, permit)))
            }
            Err(why) => {
                if let Some(conn) = resp.extensions().get::<CloseHandle>() {
                    conn.close();
                }
                tracing::warn!(upstream = %upstream.as_written, status = resp.status().as_u16(), why, "upstream answer refused");
                Err(Failed::sent(UpstreamError::Protocol))
            }
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
    /// A kept-alive connection was found closed by the upstream before
    /// the request was written on it: another connection may well work,
    /// so this says nothing yet of the upstream's health.
    pub(crate) stale: bool,
}

impl Failed {
    fn sent(kind: UpstreamError) -> Failed {
        Failed {
            kind,
            unsent: false,
            stale: false,
        }
    }
}

fn not_written(err: &hyper_util::client::legacy::Error) -> bool {
    let mut source: Option<&(dyn StdError + 'static)> = err.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if io.get_ref().is_some_and(|inner| inner.is::<NotWritten>()) {
                return true;
            }
        }
        source = e.source();
    }
    false
}

/// `Connection: upgrade` with an `Upgrade` field: the request asks to
/// switch protocols, so a `101` may answer it.
fn asks_upgrade<B>(req: &Request<B>) -> bool {
    req.headers().contains_key(http::header::UPGRADE)
        && req
            .headers()
            .get_all(http::header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .any(|t| crate::codec::trim(t).eq_ignore_ascii_case(b"upgrade"))
}
