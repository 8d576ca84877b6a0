//! The request path: one service that every client request goes through,
//! whatever its transport (HTTP/1.1 connection task or hyper's HTTP/2).
//!
//! In order: find the vhost by Host (421 when none), refuse an absolute-form
//! target for a foreign host (400), then forward to the origin (502/504 on
//! its failure). Persistent candidates branch off here to `session`.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};

use crate::body::Body;
use crate::config::{Config, ServerConfig};
pub use crate::exchange::{text_response, ConnInfo};
use crate::forward::{UpstreamError, Upstreams};
use crate::headers;
use crate::metrics::{Limit, Metrics, VhostMetrics};
use crate::router::{host_without_port, Routes, Vhost};
use crate::session::{self, websocket, Registry, SessionEnv};

/// Everything a request needs from one config load. Swapped whole on reload.
pub struct Runtime {
    pub server: ServerConfig,
    pub routes: Routes,
    pub upstreams: Upstreams,
    /// Live sessions; shared by every config load.
    pub sessions: Arc<Registry>,
    /// What the session layer uses of this load.
    pub session_env: Arc<SessionEnv>,
    pub metrics: Arc<Metrics>,
    /// The families of answers given before a vhost is known (`vhost=""`).
    pub unrouted: Arc<VhostMetrics>,
    /// Certificates by SNI for `tls_listen`; `None` without TLS vhosts.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
}

impl Runtime {
    pub fn new(
        config: &Config,
        upstreams: Upstreams,
        sessions: Arc<Registry>,
        metrics: Arc<Metrics>,
    ) -> Runtime {
        let session_env = Arc::new(SessionEnv::new(
            config.server.clone(),
            upstreams.clone(),
            sessions.clone(),
            metrics.clone(),
        ));
        Runtime {
            session_env,
            server: config.server.clone(),
            routes: Routes::new(config, &metrics, sessions.workers()),
            upstreams,
            sessions,
            unrouted: metrics.vhost(""),
            metrics,
            tls: crate::tls::server_config(config).unwrap_or_else(|e| {
                tracing::error!(error = %e, "TLS certificates could not be loaded; TLS listeners close their connections");
                None
            }),
        }
    }
}

/// Which vhost's families count an answer; rides in its extensions.
#[derive(Clone)]
pub struct AnsweredBy(pub Arc<VhostMetrics>);

/// Answers one request; the answer carries the [`AnsweredBy`] of its vhost.
pub async fn handle(rt: Arc<Runtime>, conn: ConnInfo, req: Request<Body>) -> Response<Body> {
    let (metrics, mut resp) = route(&rt, conn, req).await;
    resp.extensions_mut().insert(AnsweredBy(metrics));
    resp
}

async fn route(
    rt: &Arc<Runtime>,
    conn: ConnInfo,
    mut req: Request<Body>,
) -> (Arc<VhostMetrics>, Response<Body>) {
    // HTTP/2 carries the host in :authority; HTTP/1.1 in Host.
    let host: Option<String> = match req.headers().get(header::HOST) {
        Some(h) => match h.to_str() {
            Ok(h) if headers::valid_host(h) => Some(h.to_owned()),
            _ => return (rt.unrouted.clone(), bad_host()),
        },
        None => match req.uri().authority() {
            Some(a) if !headers::valid_host(a.as_str()) => {
                return (rt.unrouted.clone(), bad_host())
            }
            a => a.map(|a| a.as_str().to_owned()),
        },
    };
    let Some(vhost) = rt.routes.find(host.as_deref()).cloned() else {
        return (
            rt.unrouted.clone(),
            text_response(
                StatusCode::MISDIRECTED_REQUEST,
                "no virtual host serves this Host\n",
            ),
        );
    };
    let metrics = vhost.metrics().clone();
    if req.method() == http::Method::CONNECT {
        // HTTP/1 CONNECT never gets this far (the strict head refuses it);
        // over HTTP/2 it is refused here, never forwarded (SPEC 5).
        return (
            metrics,
            text_response(StatusCode::BAD_REQUEST, "CONNECT is not served\n"),
        );
    }
    let h = req.headers_mut();
    headers::drop_underscored(h);
    if req.version() == Version::HTTP_2 {
        headers::join_cookies(req.headers_mut());
    }
    let resp = forward(rt, &vhost, host, conn, req).await;
    (metrics, resp)
}

/// `400` for a `Host` (or `:authority`) that is not `host[:port]`: it is
/// never forwarded, whatever vhost it might fall to.
fn bad_host() -> Response<Body> {
    let mut resp = text_response(StatusCode::BAD_REQUEST, "invalid Host\n");
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

async fn forward(
    rt: &Arc<Runtime>,
    vhost: &Arc<Vhost>,
    host: Option<String>,
    conn: ConnInfo,
    mut req: Request<Body>,
) -> Response<Body> {
    if req.version() < Version::HTTP_2 {
        if let Some(authority) = req.uri().authority() {
            let target_host = host_without_port(authority.as_str()).to_ascii_lowercase();
            let same_as_host = host
                .as_deref()
                .map(host_without_port)
                .is_some_and(|h| h.eq_ignore_ascii_case(&target_host));
            if !same_as_host && !vhost.serves(&target_host) {
                let mut resp = text_response(
                    StatusCode::BAD_REQUEST,
                    "the absolute-form target names a host this virtual host does not serve\n",
                );
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return resp;
            }
        }
    }
    let upgrade = is_upgrade(&req);
    let mut worker = None;
    if let Some(route) = &vhost.persistent {
        if route.matches(req.uri().path()) {
            if !upgrade {
                return session::handle(&rt.session_env, &vhost.scope, route, conn, req).await;
            }
            let h = req.headers();
            if websocket::is_websocket(h) && websocket::offers_persistent(h) {
                return websocket::accept(&rt.session_env, &vhost.scope, route, conn, &req);
            }
            // A WebSocket that is not a persistent session goes to a worker
            // as an ordinary proxied WebSocket (SPEC 3).
            let any = tether_wire::SessionId::from_random(rand_bytes());
            match route.workers.pick(&any) {
                Some(w) => worker = Some(w),
                None => return text_response(StatusCode::BAD_GATEWAY, "no worker is up\n"),
            }
        }
    }
    let upstream = worker.as_ref().map_or(&vhost.config.origin, |w| &w.url);
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
    match rt.upstreams.send(upstream, req).await {
        Ok(mut resp) => {
            let relayed_upgrade = upgrade && resp.status() == StatusCode::SWITCHING_PROTOCOLS;
            headers::strip_hop_by_hop(resp.headers_mut(), relayed_upgrade);
            resp
        }
        Err(e) => upstream_failure(rt, vhost, e),
    }
}

fn rand_bytes() -> [u8; 24] {
    let mut b = [0u8; 24];
    let _ = getrandom::fill(&mut b);
    b
}

fn is_upgrade(req: &Request<Body>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .any(|t| crate::codec::trim(t).eq_ignore_ascii_case(b"upgrade"))
}

/// The answer to a failed upstream exchange, counted where it belongs:
/// an upstream error, a limit (503), or the client's stalled body (408).
pub(crate) fn upstream_failure(rt: &Runtime, vhost: &Vhost, e: UpstreamError) -> Response<Body> {
    let text = match e {
        UpstreamError::Timeout => "the origin server did not answer in time\n",
        UpstreamError::Saturated => {
            rt.metrics.limit_hit(Limit::UpstreamConnections);
            "the origin server is busy; try again soon\n"
        }
        UpstreamError::ClientStalled => {
            rt.metrics.limit_hit(Limit::BodyTimeout);
            "the request body stopped arriving\n"
        }
        _ => "the origin server could not be reached or failed to answer\n",
    };
    if e.is_upstream_fault() {
        vhost.metrics().upstream_error(e.as_str());
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

/// The access log line of one answered request (SPEC 8), whatever the
/// transport and whoever answered.
pub(crate) fn log_access(
    peer: SocketAddr,
    method: &str,
    target: &str,
    status: u16,
    bytes: u64,
    took: std::time::Duration,
    complete: bool,
) {
    tracing::info!(
        target: "tether::access",
        client = %peer,
        method,
        target,
        status,
        bytes,
        ms = took.as_millis() as u64,
        complete,
    );
}
