//! The plain reverse proxy: a pooled HTTP/1.1 client to origins (SPEC 5).
//!
//! One `Upstreams` client is shared by every vhost and outlives reloads, so
//! keep-alive connections to an origin are reused across them. Errors say
//! which side failed and map to exactly one status and one metric kind.

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use http::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::Body;
use crate::config::{OriginUrl, ServerConfig};

/// How an upstream (origin or worker) failed; also the metric label `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// Refused or unreachable.
    Connect,
    /// Reset or closed before a whole answer.
    Reset,
    /// Connect or response slower than configured.
    Timeout,
    /// An answer the gateway cannot use.
    Protocol,
}

impl UpstreamError {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamError::Connect => "connect",
            UpstreamError::Reset => "reset",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Protocol => "protocol",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            UpstreamError::Timeout => StatusCode::GATEWAY_TIMEOUT,
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

/// The pooled client to origins.
#[derive(Clone)]
pub struct Upstreams {
    client: Client<HttpConnector, Body>,
    response_timeout: Duration,
}

impl Upstreams {
    pub fn new(server: &ServerConfig) -> Upstreams {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(server.origin_connect_timeout));
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .set_host(false)
            .build(connector);
        Upstreams {
            client,
            response_timeout: server.origin_response_timeout,
        }
    }

    /// Sends `req` (its URI still in origin-form) to `upstream` and waits for
    /// the answer head at most `origin_response_timeout`.
    pub async fn send(
        &self,
        upstream: &OriginUrl,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, UpstreamError> {
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
            .map_err(|_| UpstreamError::Protocol)?;
        *req.version_mut() = http::Version::HTTP_11;
        match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
            Err(_) => Err(UpstreamError::Timeout),
            Ok(Err(e)) => {
                let kind = UpstreamError::classify(&e);
                tracing::debug!(upstream = %upstream.as_written, error = %e, ?kind, "upstream failed");
                Err(kind)
            }
            Ok(Ok(resp)) => Ok(resp.map(Body::Incoming)),
        }
    }
}
