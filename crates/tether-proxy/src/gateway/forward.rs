//! The plain leaf of the request path (SPEC 5): hop-by-hop fields out,
//! forwarding fields in, then the pooled client to the vhost's origin (or
//! to a worker for an ordinary WebSocket on a candidate path).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use tower::Service;

use super::split::is_upgrade;
use super::RelayedFrom;
use super::Routed;
use crate::body::Body;
use crate::exchange::text_response;
use crate::forward::{UpstreamError, Upstreams};
use crate::headers;
use crate::metrics::{Limit, Metrics, UpstreamErrors};

/// Cheap to clone: each request's future holds its own handle.
#[derive(Clone)]
pub(crate) struct Forward(Arc<Upstream>);

struct Upstream {
    upstreams: Upstreams,
    metrics: Arc<Metrics>,
}

impl Forward {
    pub(crate) fn new(upstreams: Upstreams, metrics: Arc<Metrics>) -> Forward {
        Forward(Arc::new(Upstream { upstreams, metrics }))
    }
}

type Boxed = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl Service<Routed> for Forward {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Boxed;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, routed: Routed) -> Boxed {
        let this = self.0.clone();
        Box::pin(async move { Ok(this.forward(routed).await) })
    }
}

impl Upstream {
    async fn forward(&self, routed: Routed) -> Response<Body> {
        let Routed {
            conn,
            mut req,
            vhost,
            host,
            worker,
        } = routed;
        let upgrade = is_upgrade(&req);
        let (upstream, errors) = worker
            .as_ref()
            .map_or((&vhost.config.origin, &vhost.origin_errors), |w| {
                (&w.url, &w.errors)
            });
        let host = host.unwrap_or_default();
        let h = req.headers_mut();
        headers::strip_hop_by_hop(h, upgrade);
        headers::strip_client_session_fields(h);
        h.remove(header::EXPECT);
        headers::add_forwarding(h, conn.peer.ip(), conn.https, &host);
        if !h.contains_key(header::HOST) && !host.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&host) {
                h.insert(header::HOST, v);
            }
        }
        // A request without Host (HTTP/1.0, or HTTP/2 without :authority)
        // names the upstream, as its URL does.
        if !h.contains_key(header::HOST) {
            if let Ok(v) = HeaderValue::from_str(&upstream.authority) {
                h.insert(header::HOST, v);
            }
        }
        match self.upstreams.send(upstream, req).await {
            Ok(mut resp) => {
                let relayed_upgrade = upgrade && resp.status() == StatusCode::SWITCHING_PROTOCOLS;
                headers::strip_hop_by_hop(resp.headers_mut(), relayed_upgrade);
                resp.extensions_mut().insert(RelayedFrom(errors.clone()));
                resp
            }
            Err(e) => upstream_failure(&self.metrics, errors, e),
        }
    }
}

/// The answer to a failed upstream exchange, counted where it belongs:
/// an upstream error, a limit (503), or the client's stalled body (408).
pub(crate) fn upstream_failure(
    metrics: &Metrics,
    upstream: &UpstreamErrors,
    e: UpstreamError,
) -> Response<Body> {
    let text = match e {
        UpstreamError::Timeout => "the origin server did not answer in time\n",
        UpstreamError::Saturated => {
            metrics.limit_hit(Limit::UpstreamConnections);
            "the origin server is busy; try again soon\n"
        }
        UpstreamError::ClientStalled => {
            metrics.limit_hit(Limit::BodyTimeout);
            "the request body stopped arriving\n"
        }
        _ => "the origin server could not be reached or failed to answer\n",
    };
    if let Some(kind) = e.metric_kind() {
        upstream.count(kind);
    }
    let mut resp = text_response(e.status(), text);
    match e {
        UpstreamError::Saturated => {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        UpstreamError::ClientStalled => {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        _ => {}
    }
    resp
}
