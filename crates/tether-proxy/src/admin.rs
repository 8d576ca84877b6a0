//! The admin listener (SPEC 7): `/healthz`, `/readyz`, `/metrics` and the
//! push API under `/v1/`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::body::Body;
use crate::cluster::{Cluster, Remote};
use crate::gateway::{text_response, Runtime};
use crate::session::push::{self, PushOutcome};
use http_body_util::BodyExt;
use tether_wire::SessionId;
use tokio::sync::watch;

/// What the admin endpoints report.
#[derive(Default)]
pub(crate) struct AdminState {
    /// Every listener bound and the config loaded.
    pub ready: AtomicBool,
    pub draining: AtomicBool,
}

pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    runtime: watch::Receiver<Arc<Runtime>>,
    stop: CancellationToken,
) {
    loop {
        // Stopped first: an upgrade's old process accepts nothing more.
        let (stream, _) = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let runtime = runtime.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let state = state.clone();
                let rt = runtime.borrow().clone();
                async move {
                    let resp = if req.uri().path().starts_with("/v1/") {
                        push_api(&rt, req).await
                    } else {
                        route(&state, &rt, &req)
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn route(state: &AdminState, rt: &Runtime, req: &Request<hyper::body::Incoming>) -> Response<Body> {
    match req.uri().path() {
        "/metrics" => {
            let text = rt.metrics.render(&rt.routes.worker_samples());
            let mut resp = Response::new(Body::full(text));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        "/healthz" => text_response(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if state.draining.load(Ordering::Acquire) {
                text_response(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else if state.ready.load(Ordering::Acquire) {
                text_response(StatusCode::OK, "ready\n")
            } else {
                text_response(StatusCode::SERVICE_UNAVAILABLE, "starting\n")
            }
        }
        _ => text_response(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// The most a push body may hold before it is refused unread.
const MAX_PUSH_BODY: usize = 16 * 1024 * 1024;

/// `POST /v1/sessions/{id}/lines` and `DELETE /v1/sessions/{id}` (SPEC 7).
/// Without an `admin_token` the API is off: every `/v1/` path is `404`.
async fn push_api(rt: &Runtime, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let Some(token) = rt.server.admin_token.as_deref() else {
        return text_response(StatusCode::NOT_FOUND, "not found\n");
    };
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    if !constant_time_eq(presented, token.as_bytes()) {
        let mut resp = text_response(
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is required\n",
        );
        resp.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        return resp;
    }
    let path = req.uri().path().to_owned();
    let Some(rest) = path.strip_prefix("/v1/sessions/") else {
        return text_response(StatusCode::NOT_FOUND, "not found\n");
    };
    let method = req.method().clone();
    match (method, rest.split_once('/')) {
        (http::Method::POST, Some((id, "lines"))) => {
            let body = match http_body_util::Limited::new(req.into_body(), MAX_PUSH_BODY)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return text_response(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "the push body is too large\n",
                    )
                }
            };
            if let Some((cluster, sid)) = remote(rt, id) {
                let node = sid.owner().unwrap_or_default();
                return remote_answer(cluster.push(node, &sid, body).await);
            }
            match push::push(&rt.sessions, id, body).await {
                PushOutcome::Appended => no_content(),
                PushOutcome::NotFound => not_here(rt),
                PushOutcome::LineTooLong => {
                    text_response(StatusCode::BAD_REQUEST, "a line is longer than max_line\n")
                }
                PushOutcome::Full => {
                    let mut resp = text_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the session's unsent output is full; try again soon\n",
                    );
                    resp.headers_mut().insert(
                        http::header::RETRY_AFTER,
                        http::HeaderValue::from_static("1"),
                    );
                    resp
                }
            }
        }
        (http::Method::DELETE, None) => {
            if let Some((cluster, sid)) = remote(rt, rest) {
                let node = sid.owner().unwrap_or_default();
                return remote_answer(cluster.admin_end(node, &sid).await);
            }
            if push::end(&rt.sessions, rest).await {
                no_content()
            } else {
                not_here(rt)
            }
        }
        _ => text_response(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// A session the push API does not find: `404`, except while an upgrade
/// hands the sessions over, when it may have left for the new process:
/// `503` with `Retry-After: 1`, on a connection that closes, so that the
/// retry reaches the new process (SPEC 10).
fn not_here(rt: &Runtime) -> Response<Body> {
    if !rt.sessions.handing_over() {
        return text_response(StatusCode::NOT_FOUND, "no such session\n");
    }
    let mut resp = text_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "this process is handing its sessions over; try again soon\n",
    );
    let h = resp.headers_mut();
    h.insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    h.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    resp
}

/// The cluster and the SessionID when `raw` names another instance's
/// session (SPEC 11: the push API reaches the owner).
fn remote(rt: &Runtime, raw: &str) -> Option<(std::sync::Arc<Cluster>, SessionId)> {
    let cluster = rt.cluster.as_ref()?;
    let id = SessionId::parse(raw.as_bytes()).ok()?;
    cluster.remote_node(&id)?;
    Some((cluster.clone(), id))
}

/// The owner's status as this listener's answer; `404` when the owner is
/// not present, `503` with `Retry-After: 1` when NATS is unreachable.
fn remote_answer(remote: Remote) -> Response<Body> {
    let retry_later = |text: &'static str| {
        let mut resp = text_response(StatusCode::SERVICE_UNAVAILABLE, text);
        resp.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
        resp
    };
    match remote {
        Remote::Status(204) => no_content(),
        Remote::Status(400) => {
            text_response(StatusCode::BAD_REQUEST, "a line is longer than max_line\n")
        }
        Remote::Status(503) => retry_later("the session's unsent output is full; try again soon\n"),
        Remote::Status(_) | Remote::Absent => {
            text_response(StatusCode::NOT_FOUND, "no such session\n")
        }
        Remote::Unreachable => {
            retry_later("the cluster cannot reach this session's instance now; try again soon\n")
        }
    }
}

fn no_content() -> Response<Body> {
    let mut resp = Response::new(Body::Empty);
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

/// Compares all of both (lengths included) without an early exit.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xFF);
    }
    diff == 0
}
