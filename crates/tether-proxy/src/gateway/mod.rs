//! The request path: one tower service that every client request goes
//! through, whatever its transport (HTTP/1.1 connection task or hyper's
//! HTTP/2), built once per config load by [`request_path`].
//!
//! Metrics and the access log are recorded by the transport when the
//! answer has been written: only it knows how many bytes went out and
//! whether the answer was complete. The answer tells it which vhost's
//! families count it ([`AnsweredBy`]).

mod forward;
mod route;
mod sanitize;
mod split;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use tower::{Service, ServiceBuilder};

use crate::body::Body;
use crate::cluster::Cluster;
use crate::config::{Config, ServerConfig};
pub(crate) use crate::exchange::{text_response, ConnInfo};
use crate::forward::Upstreams;
use crate::metrics::{Metrics, VhostMetrics};
use crate::router::{Routes, Vhost};
use crate::session::{Registry, SessionEnv};

/// Everything a request needs from one config load. Swapped whole on reload.
pub(crate) struct Runtime {
    pub server: ServerConfig,
    pub routes: Arc<Routes>,
    /// Live sessions; shared by every config load.
    pub sessions: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// The families of answers given before a vhost is known (`vhost=""`).
    pub unrouted: Arc<VhostMetrics>,
    /// Certificates by SNI for `tls_listen`; `None` without TLS vhosts.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// The request path of this load; connections clone it (a few `Arc`s).
    pub(crate) path: RequestPath,
    /// SPEC 11; the same for every load of the process.
    pub(crate) cluster: Option<Arc<Cluster>>,
}

impl Runtime {
    pub(crate) fn new(
        config: &Config,
        upstreams: Upstreams,
        sessions: Arc<Registry>,
        metrics: Arc<Metrics>,
        cluster: Option<Arc<Cluster>>,
    ) -> Runtime {
        let routes = Arc::new(Routes::new(config, &metrics, sessions.workers()));
        let unrouted = metrics.vhost("");
        let session_env = Arc::new(SessionEnv::new(
            config.server.clone(),
            upstreams.clone(),
            sessions.clone(),
            metrics.clone(),
            cluster.clone(),
        ));
        let path = request_path(
            routes.clone(),
            unrouted.clone(),
            upstreams,
            session_env,
            metrics.clone(),
        );
        Runtime {
            server: config.server.clone(),
            routes,
            sessions,
            unrouted,
            metrics,
            tls: crate::tls::server_config(config).unwrap_or_else(|e| {
                tracing::error!(error = %e, "TLS certificates could not be loaded; TLS listeners close their connections");
                None
            }),
            path,
            cluster,
        }
    }
}

/// A request as it arrives from a transport.
pub(crate) struct ClientRequest {
    pub(crate) conn: ConnInfo,
    pub(crate) req: Request<Body>,
}

/// A request whose vhost is known.
pub(crate) struct Routed {
    pub(crate) conn: ConnInfo,
    pub(crate) req: Request<Body>,
    pub(crate) vhost: Arc<Vhost>,
    /// The `Host` (or `:authority`) as sent, already checked.
    pub(crate) host: Option<String>,
    /// An ordinary WebSocket on a candidate path goes to a worker, not
    /// to the origin (SPEC 3).
    pub(crate) worker: Option<Arc<crate::session::balance::Worker>>,
}

/// The request path's service: every layer is a named type, so no layer
/// boxes its future; only the two leaves do (one allocation per request).
pub(crate) type RequestPath =
    route::Route<sanitize::Sanitize<split::Split<forward::Forward, split::SessionEntry>>>;

/// The request path, top-down.
fn request_path(
    routes: Arc<Routes>,
    unrouted: Arc<VhostMetrics>,
    upstreams: Upstreams,
    session_env: Arc<SessionEnv>,
    metrics: Arc<Metrics>,
) -> RequestPath {
    ServiceBuilder::new()
        // `Host` (or `:authority`) must be host[:port] (400), and names the
        // vhost (421 when none); every answer says whose families count it.
        .layer(route::RouteLayer::new(routes, unrouted))
        // Never forwarded: CONNECT over HTTP/2 and an absolute-form target
        // for a foreign host (400). Fields with `_` are dropped; HTTP/2
        // cookie crumbs are joined (SPEC 5).
        .layer(sanitize::SanitizeLayer)
        // Persistent candidates (SPEC 2, 3) go to the session layer; an
        // ordinary WebSocket on a candidate path goes to a worker.
        .layer(split::SplitLayer::new(split::SessionEntry::new(
            session_env,
        )))
        // Everything else is proxied (SPEC 5).
        .service(forward::Forward::new(upstreams, metrics))
}

/// Which vhost's families count an answer; rides in its extensions.
#[derive(Clone)]
pub(crate) struct AnsweredBy(pub Arc<VhostMetrics>);

/// The upstream a relayed answer's body comes from, so that a body that
/// fails after its head is counted against it; rides in its extensions.
#[derive(Clone)]
pub(crate) struct RelayedFrom(pub crate::metrics::UpstreamErrors);

/// Answers one request on `path` (a connection's clone of the request
/// path); the answer carries the [`AnsweredBy`] of its vhost. The future
/// does not borrow `path`.
pub(crate) fn handle(
    path: &mut RequestPath,
    conn: ConnInfo,
    req: Request<Body>,
) -> impl Future<Output = Response<Body>> + Send + 'static {
    // Every layer is always ready: no poll_ready is needed.
    let answer = path.call(ClientRequest { conn, req });
    async move {
        match answer.await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }
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
