//! The WebSocket transport of persistent sessions (SPEC 3).
//!
//! An upgrade to a candidate path that offers the `persistent` subprotocol
//! is answered `101` by the gateway itself ([`accept`]); the client's first
//! message, a control record, then says whether it opens a new session or
//! resumes one ([`run`]). Failures after the upgrade are close codes,
//! `4000 + status`. From then on the session task sees a [`WsLink`] like
//! any other link.

pub(crate) mod frame;
mod handshake;
mod link;

use std::sync::Arc;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use tether_wire::{encode_open, BadControl, ClientControl};

pub(crate) use self::handshake::{is_websocket, offers_persistent};
pub(crate) use self::link::WsLink;

pub(crate) use self::link::{close_for, CloseWith, NOT_UTF8};
use super::end::EndReason;
use super::link::{ClientIo, Link};
use super::task::Command;
use super::{
    open_session, resume_session, NotOpened, PersistentRoute, SessionEnv, Transport, VhostScope,
};
use crate::body::Body;
use crate::cluster::{relay, Cluster};
use crate::exchange::{text_response, ConnInfo};
use crate::metrics::ResumeResult;
use tether_wire::SessionId;
use tokio::io::AsyncWriteExt;

/// What the connection needs to run the session side of an accepted
/// upgrade; rides in the `101` answer's extensions.
pub(crate) use handshake::origin_allowed;

#[derive(Clone)]
pub(crate) struct WsUpgrade {
    env: Arc<SessionEnv>,
    vhost: Arc<VhostScope>,
    route: PersistentRoute,
    conn: ConnInfo,
    uri: Uri,
    headers: HeaderMap,
}

/// Answers a persistent WebSocket upgrade: `403` for a foreign Origin,
/// `400` for a malformed handshake, else `101` with the subprotocol.
pub(crate) fn accept(
    env: &Arc<SessionEnv>,
    vhost: &Arc<VhostScope>,
    route: &PersistentRoute,
    conn: ConnInfo,
    req: &Request<Body>,
) -> Response<Body> {
    let headers = req.headers();
    if let Some(refusal) = super::origin_refusal(headers, &route.config, conn) {
        return refusal;
    }
    let Some(key) = handshake::client_key(headers) else {
        return text_response(StatusCode::BAD_REQUEST, "malformed WebSocket handshake\n");
    };
    let mut resp = Response::new(Body::Empty);
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&handshake::accept_key(crate::codec::trim(key.as_bytes())))
            .expect("base64 is a valid value"),
    );
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(handshake::SUBPROTOCOL),
    );
    resp.extensions_mut().insert(WsUpgrade {
        env: env.clone(),
        vhost: vhost.clone(),
        route: route.clone(),
        conn,
        uri: req.uri().clone(),
        headers: req.headers().clone(),
    });
    resp
}

fn close(code: u16, reason: &'static str) -> CloseWith {
    CloseWith { code, reason }
}

/// Runs an accepted upgrade after the `101`: the first control record,
/// then a new session or a resume; `input` holds bytes read past the
/// upgrade request.
pub(crate) async fn run(io: Box<dyn ClientIo>, input: BytesMut, up: WsUpgrade) {
    let route = up.route.clone();
    let mut link = WsLink::new(io, input, route.config.max_line);
    let first = tokio::time::timeout(
        up.env.server.header_read_timeout,
        std::future::poll_fn(|cx| link.poll_first(cx)),
    )
    .await;
    let record = match first {
        Err(_) => return link.close(close(4408, "no control record in time")).await,
        Ok(Err(())) => return link.close(close(4400, "bad control record")).await,
        Ok(Ok(record)) => record,
    };
    match ClientControl::parse(&record) {
        Ok(ClientControl::New) => open(link, up, &route).await,
        Ok(ClientControl::Resume { sid, received }) => {
            if let Some(cluster) = up.env.cluster.clone() {
                if cluster.remote_node(&sid).is_some() {
                    return relay_to_owner(&cluster, &sid, link, &up, &record).await;
                }
            }
            let started = std::time::Instant::now();
            let resumed = resume_session(&up.env, &up.vhost, sid.as_bytes(), received).await;
            let Some((handle, resumed)) = resumed else {
                if up.env.sessions.handing_over() {
                    // It may have left for the new process (SPEC 10): come
                    // back, as after any upgrade's close.
                    return link.close(close(1012, "shutdown")).await;
                }
                return link.close(close(4410, "resume impossible")).await;
            };
            link.queue_control(&encode_open(&handle.id, resumed.delivered, 200, 0));
            if link.flush().await.is_err() {
                return;
            }
            up.vhost.metrics.resume_took(started.elapsed());
            let _ = handle.mailbox.send(Command::Attach {
                gen: resumed.gen,
                link: Box::new(Link::WebSocket(link)),
            });
        }
        // A SessionID that is not one is a resume that cannot be served,
        // like any unknown id (SPEC 4: the one 410).
        Err(BadControl::BadSessionId) => {
            up.vhost.metrics.resume(ResumeResult::Gone);
            link.close(close(4410, "resume impossible")).await
        }
        _ => link.close(close(4400, "bad control record")).await,
    }
}

/// A resume of another instance's session (SPEC 11): the upgrade request
/// and the control record go to the owner, which answers them as its own
/// client's (the open record, 4409, 4410); from then on frames are copied
/// both ways. The owner absent or unreachable: 4410 from here.
async fn relay_to_owner(
    cluster: &Cluster,
    id: &SessionId,
    link: WsLink,
    up: &WsUpgrade,
    record: &[u8],
) {
    let relayed = relay::to_owner(
        cluster,
        id,
        up.conn,
        &Method::GET,
        &up.uri,
        &up.headers,
        true,
    )
    .await;
    let Some(mut relayed) = relayed.filter(|r| r.status == StatusCode::SWITCHING_PROTOCOLS) else {
        up.vhost.metrics.resume(ResumeResult::Gone);
        return link.close(close(4410, "resume impossible")).await;
    };
    let (io, input) = link.into_relay();
    let mut first = relay::masked_binary(record);
    first.extend_from_slice(&input);
    if relayed.stream.write_all(&first).await.is_err() {
        return;
    }
    io.tune_for_session();
    relay::pump(io, relayed.stream, relayed.after_head).await;
}

async fn open(mut link: WsLink, up: WsUpgrade, route: &PersistentRoute) {
    // The worker sees HTTP: the upgrade as a plain GET without the
    // WebSocket fields (SPEC 3).
    let mut headers = up.headers;
    for name in [
        header::CONNECTION,
        header::UPGRADE,
        header::SEC_WEBSOCKET_KEY,
        header::SEC_WEBSOCKET_VERSION,
        header::SEC_WEBSOCKET_PROTOCOL,
        header::SEC_WEBSOCKET_EXTENSIONS,
        header::SEC_WEBSOCKET_ACCEPT,
    ] {
        headers.remove(name);
    }
    let mut req = Request::new(Body::Empty);
    *req.method_mut() = Method::GET;
    *req.uri_mut() = up.uri;
    *req.headers_mut() = headers;
    match open_session(
        &up.env,
        &up.vhost,
        route,
        up.conn,
        req,
        Transport::WebSocket,
    )
    .await
    {
        Ok(opened) => {
            let handle = opened.handle;
            let record = encode_open(
                &handle.id,
                0,
                opened.status.as_u16(),
                opened.initial.len() as u64,
            );
            link.queue_control(&record);
            if !opened.initial.is_empty() && link.queue_text(&opened.initial).is_err() {
                let _ = handle.mailbox.send(Command::Fail(EndReason::ProtocolError));
                return link.close(link::NOT_UTF8).await;
            }
            if link.flush().await.is_err() {
                // Gone before it heard of its session: the session waits
                // out its grace.
                return;
            }
            let _ = handle.mailbox.send(Command::Attach {
                gen: 0,
                link: Box::new(Link::WebSocket(link)),
            });
        }
        Err(NotOpened::Plain(resp)) => {
            let code = 4000 + resp.status().as_u16();
            link.close(close(code, "not a persistent answer")).await;
        }
        Err(NotOpened::Refused(status, _)) => {
            let reason = match status {
                StatusCode::SERVICE_UNAVAILABLE => "overloaded",
                StatusCode::TOO_MANY_REQUESTS => "too many sessions",
                _ => "worker unreachable",
            };
            link.close(close(4000 + status.as_u16(), reason)).await;
        }
    }
}
