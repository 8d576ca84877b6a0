//! Persistent sessions (SPEC 2, 4 and 7): a candidate request is checked in
//! the order of SPEC 2 (406, explicit end, 400, 410, new session), then a
//! session is opened on a worker, resumed, or ended.
//!
//! The answer to the client is an ordinary `Response` carrying a
//! [`Handoff`]: the client connection writes the answer head (and initial
//! body) and then hands its socket to the session task. The task sees only
//! a `Link`, never the transport.
//!
//! - `balance`: worker choice and health; `registry`: the affinity cache
//!   and the session counters; `worker`: opening on a worker;
//!   `task`: the session itself; `link`: a client connection of a session;
//!   `websocket` and `sse` (the HTTP transport of SPEC 13): the browser
//!   transports, each one more kind of link.

pub(crate) mod balance;
mod end;
pub(crate) mod handover;
mod link;
mod mailbox;
mod native;
mod page;
pub(crate) mod push;
mod rate;
pub(crate) mod registry;
mod sse;
mod task;
pub(crate) mod websocket;
mod worker;
mod worker_side;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use tether_wire::{accepts_persistent, parse_session_received, SessionId};
use tokio::sync::oneshot;

pub(crate) use link::ClientIo;
pub(crate) use registry::Registry;
pub(crate) use sse::Draining;

use self::balance::Worker;
use self::balance::{NoWorker, WorkerPool, Workers};
use self::link::Link;
use self::native::NativeLink;
use self::registry::{Refusal, SessionHandle};
pub(crate) use self::task::{prepare, restore, Home, Moved, Prepared};
use self::task::{Command, Opening, Resumed};
use self::worker::{OpenError, OpenLimits, WorkerAnswer};
use self::worker_side::{MessageSide, MessageTarget, StreamSide, WorkerSide};
use crate::body::Body;
use crate::cluster::relay::{self, Relayed};
use crate::cluster::{Cluster, Remote};
use crate::config::ServerConfig;
use crate::config::{PersistentConfig, SessionMode};
use crate::exchange::{text_response, unanswered, ConnInfo};
use crate::forward::{UpstreamError, Upstreams};
use crate::headers;
use crate::metrics::{Limit, Metrics, OpenedOver, ResumeResult, VhostMetrics};

/// What the session layer needs of a config load: the `[server]` limits and
/// timers, the pooled upstream client (message mode), the live sessions
/// and the metric families. Built once per load, shared by its requests.
pub(crate) struct SessionEnv {
    pub(crate) server: ServerConfig,
    pub(crate) upstreams: Upstreams,
    pub(crate) sessions: Arc<Registry>,
    pub(crate) metrics: Arc<Metrics>,
    /// This instance's `[cluster] node` (SPEC 11): new SessionIDs end with
    /// it. None: a single instance.
    pub(crate) node: Option<Arc<str>>,
    /// The cluster this instance is in (SPEC 11): resumes, `DELETE`s of
    /// another instance's sessions go to it.
    pub(crate) cluster: Option<Arc<Cluster>>,
}

impl SessionEnv {
    pub(crate) fn new(
        server: ServerConfig,
        upstreams: Upstreams,
        sessions: Arc<Registry>,
        metrics: Arc<Metrics>,
        cluster: Option<Arc<Cluster>>,
    ) -> SessionEnv {
        SessionEnv {
            server,
            upstreams,
            sessions,
            metrics,
            node: cluster.as_ref().map(|c| c.node.clone()),
            cluster,
        }
    }
}

/// A vhost as its sessions see it: the label its metrics carry, the hosts
/// a session of it may be resumed on, and its metric families. A session
/// keeps the scope it opened with across reloads (SPEC 8).
#[derive(Debug)]
pub(crate) struct VhostScope {
    pub label: Arc<str>,
    pub hosts: Arc<[String]>,
    pub metrics: Arc<VhostMetrics>,
}

impl VhostScope {
    /// Whether `host` (lower-case, no port) names this vhost.
    pub(crate) fn serves(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h == host)
    }
}

/// The persistent side of a vhost, compiled from its config; cheap to
/// clone (a WebSocket upgrade carries it past the `101`).
#[derive(Debug, Clone)]
pub(crate) struct PersistentRoute {
    pub config: Arc<PersistentConfig>,
    pub workers: Arc<Workers>,
}

impl PersistentRoute {
    pub(crate) fn new(
        vhost: &str,
        config: &PersistentConfig,
        pool: &WorkerPool,
        metrics: &Arc<VhostMetrics>,
    ) -> PersistentRoute {
        PersistentRoute {
            workers: Arc::new(Workers::new(vhost, &config.workers, pool, metrics)),
            config: Arc::new(config.clone()),
        }
    }

    /// Whether `path` (the request-target up to `?`) is a candidate.
    pub(crate) fn matches(&self, path: &str) -> bool {
        self.config.globs.iter().any(|g| g.matches(path.as_bytes()))
    }
}

/// Tells the client connection to give its socket to a session once the
/// answer head is written. Rides in the response's extensions.
#[derive(Clone)]
pub(crate) struct Handoff {
    to: HandoffTo,
}

#[derive(Clone)]
enum HandoffTo {
    Session {
        handle: SessionHandle,
        gen: u64,
        max_line: usize,
    },
    /// A resume the session's owner answered over a peer connection (SPEC
    /// 11): the connection's bytes are copied to it from now on. (A
    /// response's extensions must be `Clone`, hence the shared slot.)
    Owner(Arc<std::sync::Mutex<Option<Relayed>>>),
}

impl Handoff {
    fn session(handle: SessionHandle, gen: u64, max_line: usize) -> Handoff {
        Handoff {
            to: HandoffTo::Session {
                handle,
                gen,
                max_line,
            },
        }
    }

    /// Attaches the connection to the session (bytes the connection read
    /// before the head was written are already discarded: SPEC 2).
    pub(crate) fn attach(self, io: Box<dyn ClientIo>) {
        match self.to {
            HandoffTo::Session {
                handle,
                gen,
                max_line,
            } => {
                let cmd = Command::Attach {
                    gen,
                    link: Box::new(Link::Native(NativeLink::new(io, max_line))),
                };
                // Refused only when the session has ended: the connection
                // closes.
                let _ = handle.mailbox.send(cmd);
            }
            HandoffTo::Owner(slot) => {
                let taken = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(relayed) = taken {
                    io.tune_for_session();
                    tokio::spawn(relay::pump(io, relayed.stream, relayed.after_head));
                }
            }
        }
    }
}

/// Answers a persistent candidate.
pub(crate) async fn handle(
    env: &SessionEnv,
    vhost: &Arc<VhostScope>,
    route: &PersistentRoute,
    conn: ConnInfo,
    req: Request<Body>,
) -> Response<Body> {
    if route.config.page_sessions && page::is_navigation(&req, &route.config) {
        if let Some(refusal) = origin_refusal(req.headers(), &route.config, conn) {
            return refusal;
        }
        return page::open(env, vhost, route, conn, req).await;
    }
    // The HTTP transport (SPEC 13), over HTTP/1.1 and HTTP/2 alike.
    if sse::is_down(&req, &route.config.accept) {
        return sse::down(env, vhost, route, conn, req).await;
    }
    if sse::is_up(&req) {
        return sse::up(env, vhost, route, conn, req).await;
    }
    if req.version() == Version::HTTP_2 {
        if req.headers().contains_key(&headers::SESSION_ID) && req.method() != Method::DELETE {
            vhost.metrics.resume(ResumeResult::BadRequest);
        }
        return text_response(
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            "a native persistent session needs HTTP/1.1; browsers use the WebSocket transport\n",
        );
    }
    if let Some(refusal) = origin_refusal(req.headers(), &route.config, conn) {
        if req.headers().contains_key(&headers::SESSION_ID) && req.method() != Method::DELETE {
            vhost.metrics.resume(ResumeResult::BadRequest);
        }
        return refusal;
    }
    let sid = req.headers().get(&headers::SESSION_ID).cloned();
    let explicit_end = req.method() == Method::DELETE && sid.is_some();
    let metrics = &vhost.metrics;
    if !explicit_end && !capable(&req, &route.config) {
        if sid.is_some() {
            metrics.resume(ResumeResult::BadRequest);
        }
        return not_acceptable(&route.config);
    }
    if explicit_end {
        if let Some((cluster, id)) = remote(env, sid.as_ref()) {
            return end_remote(&cluster, &id, vhost).await;
        }
        let Some(handle) = lookup(env, sid.as_ref(), vhost).await else {
            return absent(env);
        };
        let (reply, done) = oneshot::channel();
        if handle.mailbox.send(Command::End { reply }).is_err() || done.await.is_err() {
            return absent(env);
        }
        let mut resp = Response::new(Body::Empty);
        *resp.status_mut() = StatusCode::NO_CONTENT;
        return resp;
    }
    if let Some(sid) = sid {
        let received = match session_received(req.headers(), metrics) {
            Ok(n) => n,
            Err(refusal) => return *refusal,
        };
        if let Some((cluster, id)) = remote(env, Some(&sid)) {
            return resume_remote(&cluster, &id, conn, &req, metrics).await;
        }
        let started = std::time::Instant::now();
        let resp = resume(env, vhost, &route.config, sid.as_bytes(), received).await;
        if resp.status() == StatusCode::OK {
            metrics.resume_took(started.elapsed());
        }
        return resp;
    }
    open(env, vhost, route, conn, req).await
}

/// The cluster and the SessionID when `sid` names another instance of it
/// (SPEC 11); `None` for everything a single instance would do itself.
fn remote(env: &SessionEnv, sid: Option<&HeaderValue>) -> Option<(Arc<Cluster>, SessionId)> {
    let cluster = env.cluster.as_ref()?;
    let id = SessionId::parse(sid?.as_bytes()).ok()?;
    cluster.remote_node(&id)?;
    Some((cluster.clone(), id))
}

/// A native resume of another instance's session, relayed to the owner,
/// whose answer this is; the one `410` when the owner is absent or cannot
/// be reached. A resume is counted by the instance that answers it: the
/// owner, or this one when it answers `410` itself.
async fn resume_remote(
    cluster: &Cluster,
    id: &SessionId,
    conn: ConnInfo,
    req: &Request<Body>,
    metrics: &VhostMetrics,
) -> Response<Body> {
    let relayed = relay::to_owner(
        cluster,
        id,
        conn,
        req.method(),
        req.uri(),
        req.headers(),
        false,
    )
    .await;
    let Some(relayed) = relayed else {
        metrics.resume(ResumeResult::Gone);
        return gone();
    };
    if relayed.status == StatusCode::SERVICE_UNAVAILABLE {
        // The owner turned the client's connection away (its limits).
        return with_retry_after(text_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many connections; try again soon\n",
        ));
    }
    if relayed.status != StatusCode::OK {
        return gone();
    }
    let mut resp = relay::native_answer(&relayed);
    resp.extensions_mut().insert(Handoff {
        to: HandoffTo::Owner(Arc::new(std::sync::Mutex::new(Some(relayed)))),
    });
    resp
}

/// A client's `DELETE` of another instance's session, through NATS: the
/// owner's status, the one `410` when it is absent, `503` when NATS is
/// unreachable (SPEC 11).
async fn end_remote(cluster: &Cluster, id: &SessionId, vhost: &VhostScope) -> Response<Body> {
    let node = id.owner().unwrap_or_default();
    match cluster.end(node, id, &vhost.hosts).await {
        Remote::Status(204) => {
            let mut resp = Response::new(Body::Empty);
            *resp.status_mut() = StatusCode::NO_CONTENT;
            resp
        }
        Remote::Status(_) | Remote::Absent => gone(),
        Remote::Unreachable => with_retry_after(text_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "the cluster cannot reach this session's instance now; try again soon\n",
        )),
    }
}

/// The owner's side of a client `DELETE` relayed by another instance: the
/// same end as a local `DELETE`, on a session of a vhost serving one of
/// `hosts`. `false` for the one `410`.
pub(crate) async fn end_for_hosts(registry: &Registry, raw_id: &str, hosts: &[&str]) -> bool {
    let Some(handle) = push::find(registry, raw_id).await else {
        return false;
    };
    if !handle.hosts.iter().any(|h| hosts.contains(&h.as_str())) {
        return false;
    }
    let (reply, done) = oneshot::channel();
    handle.mailbox.send(Command::End { reply }).is_ok() && done.await.is_ok()
}

/// SPEC 7 (v1.2): a candidate whose `Origin` fails the rule of SPEC 3 gets
/// `403`, so that a cross-site page cannot open or resume a session with
/// the user's cookies (`Accept: application/x-persistent` is a
/// CORS-safelisted value); two `Origin`, `SessionID` or `Session-Received`
/// fields are ambiguous: `400`. Nothing reaches a worker either way.
pub(crate) fn origin_refusal(
    h: &HeaderMap,
    config: &PersistentConfig,
    conn: ConnInfo,
) -> Option<Response<Body>> {
    let twice = |name: &HeaderName| h.get_all(name).iter().nth(1).is_some();
    if twice(&header::ORIGIN) || twice(&headers::SESSION_ID) || twice(&headers::SESSION_RECEIVED) {
        return Some(text_response(
            StatusCode::BAD_REQUEST,
            "Origin, SessionID and Session-Received may each appear once\n",
        ));
    }
    let host = h.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin = h.get(header::ORIGIN).map(HeaderValue::as_bytes);
    if websocket::origin_allowed(origin, host, conn.https, &config.allowed_origins) {
        return None;
    }
    Some(text_response(
        StatusCode::FORBIDDEN,
        "this page's origin may not open a session here\n",
    ))
}

fn capable<B>(req: &Request<B>, config: &PersistentConfig) -> bool {
    let values: Vec<&[u8]> = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    accepts_persistent(&values, &config.accept)
}

fn not_acceptable(config: &PersistentConfig) -> Response<Body> {
    let text = format!(
        "406 Not Acceptable: this resource opens a persistent connection, which needs a client that supports persistent connections. Send Accept: {}\n",
        config.accept.join(", ")
    );
    let mut resp = Response::new(Body::Empty);
    *resp.status_mut() = StatusCode::NOT_ACCEPTABLE;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    *resp.body_mut() = Body::full(text);
    resp
}

/// The one answer for every session that cannot be resumed (SPEC 4):
/// identical whatever the cause, so it tells nothing about which.
fn gone() -> Response<Body> {
    text_response(
        StatusCode::GONE,
        "410 Gone: this session cannot be resumed; start a new one\n",
    )
}

/// The answer for a session not found here: [`gone`], except while an
/// upgrade hands the sessions over, when it may be one that has left; the
/// client's next attempt reaches the new process, which has it or answers
/// `410` (SPEC 10).
fn absent(env: &SessionEnv) -> Response<Body> {
    if env.sessions.handing_over() {
        tracing::debug!("a request for a session not here during the handover: left unanswered");
        unanswered()
    } else {
        gone()
    }
}

fn with_retry_after(mut resp: Response<Body>) -> Response<Body> {
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// The session a request names, waited for while it is on its way here
/// (upgrade).
async fn lookup(
    env: &SessionEnv,
    sid: Option<&HeaderValue>,
    vhost: &VhostScope,
) -> Option<SessionHandle> {
    let id = SessionId::parse(sid?.as_bytes()).ok()?;
    env.sessions.find_or_wait(&id, vhost).await
}

/// A resume of `raw_id` at count `received` on `vhost`, whatever the
/// transport: the session's handle and its answer, or `None` for the one
/// "gone" of SPEC 4; counted either way in `tether_resumes_total`.
pub(crate) async fn resume_session(
    env: &SessionEnv,
    vhost: &VhostScope,
    raw_id: &[u8],
    received: u64,
) -> Option<(SessionHandle, Resumed)> {
    let resumed = async {
        let id = SessionId::parse(raw_id).ok()?;
        let handle = env.sessions.find_or_wait(&id, vhost).await?;
        let (reply, answer) = oneshot::channel();
        handle
            .mailbox
            .send(Command::Resume { received, reply })
            .ok()?;
        let resumed = answer.await.ok()?.ok()?;
        Some((handle, resumed))
    }
    .await;
    match &resumed {
        Some(_) => vhost.metrics.resume(ResumeResult::Ok),
        // Tried again in the new process, which counts it.
        None if env.sessions.handing_over() => {}
        None => vhost.metrics.resume(ResumeResult::Gone),
    }
    resumed
}

/// A resume's `Session-Received` count, or the `400` (counted) for a
/// resume without a valid one (SPEC 4), whatever the transport.
pub(crate) fn session_received(
    h: &HeaderMap,
    metrics: &VhostMetrics,
) -> Result<u64, Box<Response<Body>>> {
    h.get(&headers::SESSION_RECEIVED)
        .and_then(|v| parse_session_received(v.as_bytes()).ok())
        .ok_or_else(|| {
            metrics.resume(ResumeResult::BadRequest);
            Box::new(text_response(
                StatusCode::BAD_REQUEST,
                "a resume needs Session-Received: the number of lines the client received\n",
            ))
        })
}

async fn resume(
    env: &SessionEnv,
    vhost: &VhostScope,
    config: &PersistentConfig,
    raw_id: &[u8],
    received: u64,
) -> Response<Body> {
    let Some((handle, resumed)) = resume_session(env, vhost, raw_id, received).await else {
        return absent(env);
    };
    let handoff = Handoff::session(handle.clone(), resumed.gen, config.max_line);
    persistent_answer(
        StatusCode::OK,
        &handle.id,
        resumed.delivered,
        Bytes::new(),
        HeaderMap::new(),
        handoff,
    )
}

/// A session the worker opened; its task waits for the first client link
/// (generation 0).
pub(crate) struct Opened {
    pub(crate) handle: SessionHandle,
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) initial: Bytes,
}

/// Why no session opened, with the status that says so (WebSocket: 4000 +
/// status); a worker's plain answer comes whole.
pub(crate) enum NotOpened {
    Refused(StatusCode, &'static str),
    Plain(Response<Body>),
}

impl NotOpened {
    fn into_response(self) -> Response<Body> {
        match self {
            NotOpened::Plain(resp) => resp,
            NotOpened::Refused(status, text) => {
                let resp = text_response(status, text);
                if status == StatusCode::SERVICE_UNAVAILABLE
                    || status == StatusCode::TOO_MANY_REQUESTS
                {
                    with_retry_after(resp)
                } else {
                    resp
                }
            }
        }
    }
}

async fn open(
    env: &SessionEnv,
    vhost: &Arc<VhostScope>,
    route: &PersistentRoute,
    conn: ConnInfo,
    req: Request<Body>,
) -> Response<Body> {
    match open_session(env, vhost, route, conn, req, Transport::Native).await {
        Ok(opened) => {
            let handoff = Handoff::session(opened.handle.clone(), 0, route.config.max_line);
            persistent_answer(
                opened.status,
                &opened.handle.id,
                0,
                opened.initial,
                opened.headers,
                handoff,
            )
        }
        Err(not) => not.into_response(),
    }
}

/// The transport a session was opened over (`tether_sessions_opened_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Native,
    WebSocket,
    /// A browser navigation (SPEC 12): the answer is the page.
    Page,
    /// Server-Sent Events down, POSTs up (SPEC 13).
    Http,
}

impl Transport {
    fn as_str(self) -> &'static str {
        match self {
            Transport::Native => "native",
            Transport::WebSocket => "websocket",
            Transport::Page => "page",
            Transport::Http => "http",
        }
    }
}

/// Opens a session on a worker (SPEC 2 step 5 and 6), whatever the
/// transport: limits, a new SessionID, a worker, the forwarded request.
pub(crate) async fn open_session(
    env: &SessionEnv,
    vhost: &Arc<VhostScope>,
    route: &PersistentRoute,
    conn: ConnInfo,
    mut req: Request<Body>,
    transport: Transport,
) -> Result<Opened, NotOpened> {
    let config = &route.config;
    let label = vhost.label.clone();
    let slot = match env.sessions.admit(
        &label,
        conn.peer.ip(),
        config.max_sessions,
        config.max_sessions_per_ip,
    ) {
        Ok(slot) => slot,
        Err(Refusal::Sessions) => {
            return Err(NotOpened::Refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many sessions on this server; try again soon\n",
            ))
        }
        Err(Refusal::SessionsPerIp) => {
            return Err(NotOpened::Refused(
                StatusCode::TOO_MANY_REQUESTS,
                "too many sessions from this address; try again soon\n",
            ))
        }
    };
    let id = mint(env.node.as_deref());
    let pin = match route.workers.claim(&id, config.max_sessions_per_worker) {
        Ok(pin) => pin,
        Err(NoWorker::Down) => {
            return Err(NotOpened::Refused(
                StatusCode::BAD_GATEWAY,
                "no worker is up to serve this session\n",
            ))
        }
        Err(NoWorker::Full) => {
            env.metrics.limit_hit(Limit::WorkerSessions);
            tracing::warn!(
                vhost = &*vhost.label,
                "every worker holds max_sessions_per_worker sessions"
            );
            return Err(NotOpened::Refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "every worker is busy; try again soon\n",
            ));
        }
    };
    let worker = pin.0.clone();

    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let h = req.headers_mut();
    headers::strip_hop_by_hop(h, false);
    headers::strip_client_session_fields(h);
    h.remove(header::EXPECT);
    headers::add_forwarding(h, conn.peer.ip(), conn.https, &host);
    h.insert(
        &headers::SESSION_ID,
        HeaderValue::from_str(id.as_str()).expect("a SessionID is a valid value"),
    );

    let answer = match config.mode {
        SessionMode::Stream => open_stream(env, config, &worker, req).await,
        SessionMode::Message => open_message(env, config, &worker, &vhost.metrics, req).await,
    };
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            if e.connecting {
                worker.mark_down();
            }
            match e.kind.metric_kind() {
                Some(kind) => worker.errors.count(kind),
                None if e.kind == UpstreamError::Saturated => {
                    env.metrics.limit_hit(Limit::UpstreamConnections)
                }
                None => {}
            }
            tracing::warn!(worker = %worker.url.as_written, kind = e.kind.as_str(), "session open failed");
            // A worker that cannot be reached when a session opens: 502
            // (SPEC 4 "Pinning"), whatever the kind of failure.
            let status = if e.connecting {
                StatusCode::BAD_GATEWAY
            } else {
                e.kind.status()
            };
            return Err(NotOpened::Refused(
                status,
                "the worker could not open the session\n",
            ));
        }
    };
    let AcceptedAnswer {
        status,
        headers,
        initial,
        side,
        message,
    } = match answer {
        Answer::Plain(resp) => return Err(NotOpened::Plain(resp)),
        Answer::Persistent(p) => p,
    };
    let handle = task::spawn(Opening {
        id: id.clone(),
        vhost: label,
        hosts: vhost.hosts.clone(),
        config: config.clone(),
        peer: conn.peer,
        worker: side,
        message,
        slot,
        pin,
        registry: env.sessions.clone(),
        metrics: vhost.metrics.clone(),
        transport: transport.as_str(),
    });
    vhost.metrics.session_opened(match transport {
        Transport::Native => OpenedOver::Native,
        Transport::WebSocket => OpenedOver::WebSocket,
        Transport::Page => OpenedOver::Page,
        Transport::Http => OpenedOver::Http,
    });
    tracing::debug!(session = %id, worker = %worker.url.as_written, "session opened");
    Ok(Opened {
        handle,
        status,
        headers,
        initial,
    })
}

/// A worker's persistent answer, ready to become a session.
struct AcceptedAnswer {
    status: StatusCode,
    headers: HeaderMap,
    initial: Bytes,
    side: WorkerSide,
    message: Option<Arc<MessageTarget>>,
}

enum Answer {
    Persistent(AcceptedAnswer),
    Plain(Response<Body>),
}

/// Stream mode: the request on a connection of its own, kept as the line
/// channel after a persistent answer.
async fn open_stream(
    env: &SessionEnv,
    config: &PersistentConfig,
    worker: &Worker,
    req: Request<Body>,
) -> Result<Answer, OpenError> {
    let limits = OpenLimits {
        connect_timeout: env.server.origin_connect_timeout,
        response_timeout: env.server.origin_response_timeout,
        max_header_bytes: env.server.max_header_bytes,
        max_initial_body: config.max_initial_body,
    };
    let target = (worker.url.host.as_str(), worker.url.port);
    Ok(match worker::open(target, req, &limits).await? {
        WorkerAnswer::Plain(resp) => Answer::Plain(resp),
        WorkerAnswer::Persistent {
            status,
            headers,
            initial,
            stream,
            leftover,
        } => Answer::Persistent(AcceptedAnswer {
            status,
            headers,
            initial,
            side: WorkerSide::Stream(StreamSide::new(
                Box::new(stream),
                &leftover,
                config.max_line,
            )),
            message: None,
        }),
    })
}

/// Message mode (SPEC 6): the opening request with `Session-Event: open`
/// through the pooled client; a persistent answer's body (chunked is fine
/// here) is the initial body, and later lines go as `POST`s.
async fn open_message(
    env: &SessionEnv,
    config: &PersistentConfig,
    worker: &Arc<Worker>,
    metrics: &Arc<VhostMetrics>,
    mut req: Request<Body>,
) -> Result<Answer, OpenError> {
    let is_head = req.method() == Method::HEAD;
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    let template = MessageTarget::template(req.headers().clone());
    req.headers_mut().insert(
        HeaderName::from_static("session-event"),
        HeaderValue::from_static("open"),
    );
    let mut resp = env
        .upstreams
        .send(&worker.url, req)
        .await
        .map_err(|kind| OpenError {
            kind,
            connecting: kind == crate::forward::UpstreamError::Connect,
        })?;
    let persistent = resp.status() == StatusCode::OK
        && !is_head
        && resp
            .headers()
            .get(&headers::CONNECTION_TYPE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"persistent"));
    headers::strip_hop_by_hop(resp.headers_mut(), false);
    headers::strip_answer_session_fields(resp.headers_mut());
    if !persistent {
        return Ok(Answer::Plain(resp));
    }
    let (parts, body) = resp.into_parts();
    let initial = http_body_util::Limited::new(body, config.max_initial_body)
        .collect()
        .await
        .map_err(|_| OpenError::from(crate::forward::UpstreamError::Protocol))?
        .to_bytes();
    let mut headers = parts.headers;
    headers.remove(header::CONTENT_LENGTH);
    let message = Arc::new(MessageTarget {
        upstreams: env.upstreams.clone(),
        worker: worker.url.clone(),
        health: worker.clone(),
        retry: config.worker_retry,
        metrics: metrics.clone(),
        target,
        headers: template,
        form: config.message_format == crate::config::MessageFormat::Form,
    });
    Ok(Answer::Persistent(AcceptedAnswer {
        status: parts.status,
        headers,
        initial,
        side: WorkerSide::Message(MessageSide::new(
            message.clone(),
            config.max_line,
            config.detached_backlog,
        )),
        message: Some(message),
    }))
}

/// A new SessionID: 24 bytes from the OS CSPRNG (192 bits), followed in a
/// cluster by this instance's node name (SPEC 11).
fn mint(node: Option<&str>) -> SessionId {
    let mut random = [0u8; 24];
    getrandom::fill(&mut random).expect("the operating system's random source failed");
    match node {
        // The name was validated with the config: `None` cannot happen.
        Some(node) => SessionId::from_random_owned_by(random, node)
            .unwrap_or_else(|| SessionId::from_random(random)),
        None => SessionId::from_random(random),
    }
}

/// The answer head of SPEC 2 / SPEC 4 (the connection writes
/// `Connection: Keep-Alive` itself).
fn persistent_answer(
    status: StatusCode,
    id: &SessionId,
    received: u64,
    initial: Bytes,
    extra: HeaderMap,
    handoff: Handoff,
) -> Response<Body> {
    let mut resp = Response::new(Body::Empty);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        &headers::CONNECTION_TYPE,
        HeaderValue::from_static("Persistent"),
    );
    h.insert(
        &headers::SESSION_ID,
        HeaderValue::from_str(id.as_str()).expect("a SessionID is a valid value"),
    );
    h.insert(&headers::SESSION_RECEIVED, HeaderValue::from(received));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(initial.len()));
    for (name, value) in &extra {
        h.append(name, value.clone());
    }
    if !initial.is_empty() {
        *resp.body_mut() = Body::full(initial);
    }
    resp.extensions_mut().insert(handoff);
    resp
}
