//! The admin listener (SPEC 7): health and readiness; metrics and the push
//! API hang off the same router as they arrive.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::body::Body;
use crate::gateway::{text_response, Runtime};
use tokio::sync::watch;

/// What the admin endpoints report.
#[derive(Default)]
pub struct AdminState {
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
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let state = state.clone();
        let runtime = runtime.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let state = state.clone();
                let rt = runtime.borrow().clone();
                async move { Ok::<_, Infallible>(route(&state, &rt, &req)) }
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
