//! Finds the vhost of a request by `Host` (or `:authority`), after checking
//! that it is `host[:port]` (SPEC 5): 400 when it is not, 421 when no vhost
//! serves it. Every answer leaves with the families that count it.

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use tower::{Layer, Service};

use super::{AnsweredBy, ClientRequest, Routed};
use crate::body::Body;
use crate::exchange::text_response;
use crate::headers;
use crate::metrics::VhostMetrics;
use crate::router::Routes;

#[derive(Clone)]
pub(crate) struct RouteLayer {
    routes: Arc<Routes>,
    unrouted: Arc<VhostMetrics>,
}

impl RouteLayer {
    pub(crate) fn new(routes: Arc<Routes>, unrouted: Arc<VhostMetrics>) -> RouteLayer {
        RouteLayer { routes, unrouted }
    }
}

impl<S> Layer<S> for RouteLayer {
    type Service = Route<S>;

    fn layer(&self, inner: S) -> Route<S> {
        Route {
            routes: self.routes.clone(),
            unrouted: self.unrouted.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub(crate) struct Route<S> {
    routes: Arc<Routes>,
    unrouted: Arc<VhostMetrics>,
    inner: S,
}

type Early = Ready<Result<Response<Body>, Infallible>>;

impl<S> Service<ClientRequest> for Route<S>
where
    S: Service<Routed, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Answered<Either<Early, S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, ClientRequest { conn, req }: ClientRequest) -> Self::Future {
        let refused = |this: &Self, resp| Answered {
            inner: Either::Left(ready(Ok(resp))),
            by: Some(this.unrouted.clone()),
        };
        // HTTP/2 carries the host in :authority; HTTP/1.1 in Host.
        let host: Option<String> = match req.headers().get(header::HOST) {
            Some(h) => match h.to_str() {
                Ok(h) if headers::valid_host(h) => Some(h.to_owned()),
                _ => return refused(self, bad_host()),
            },
            None => match req.uri().authority() {
                Some(a) if !headers::valid_host(a.as_str()) => return refused(self, bad_host()),
                a => a.map(|a| a.as_str().to_owned()),
            },
        };
        let Some(vhost) = self.routes.find(host.as_deref()).cloned() else {
            return refused(
                self,
                text_response(
                    StatusCode::MISDIRECTED_REQUEST,
                    "no virtual host serves this Host\n",
                ),
            );
        };
        if !conn.https && vhost.config.tls.as_ref().is_some_and(|t| t.redirect_http) {
            if let Some(resp) = to_https(host.as_deref(), vhost.label(), req.uri()) {
                return Answered {
                    inner: Either::Left(ready(Ok(resp))),
                    by: Some(vhost.metrics().clone()),
                };
            }
        }
        let by = vhost.metrics().clone();
        Answered {
            inner: Either::Right(self.inner.call(Routed {
                conn,
                req,
                vhost,
                host,
                worker: None,
            })),
            by: Some(by),
        }
    }
}

/// `308` to the same host and target over https, for a vhost with
/// `redirect_http`. The port of a plain listener means nothing on the TLS
/// side, so the host goes without it (https's 443), as nginx's
/// `return 308 https://$host$request_uri` does. Without a Host the vhost's
/// name is used; the default vhost (`*`) has none, and is served instead.
fn to_https(host: Option<&str>, label: &str, uri: &http::Uri) -> Option<Response<Body>> {
    let host = match host {
        Some(h) => crate::router::host_without_port(h),
        None if label != "*" && !label.is_empty() => label,
        None => return None,
    };
    let target = match uri.path_and_query().map(|p| p.as_str()) {
        Some(p) if p.starts_with('/') => p,
        _ => "/",
    };
    let location = HeaderValue::from_str(&format!("https://{host}{target}")).ok()?;
    let mut resp = text_response(
        StatusCode::PERMANENT_REDIRECT,
        "this site is served over https\n",
    );
    resp.headers_mut().insert(header::LOCATION, location);
    Some(resp)
}

/// `400` for a `Host` (or `:authority`) that is not `host[:port]`: it is
/// never forwarded, whatever vhost it might fall to.
fn bad_host() -> Response<Body> {
    let mut resp = text_response(StatusCode::BAD_REQUEST, "invalid Host\n");
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

pin_project_lite::pin_project! {
    /// The answer of the layers below, marked with the families that
    /// count it.
    pub(crate) struct Answered<F> {
        #[pin]
        inner: F,
        by: Option<Arc<VhostMetrics>>,
    }
}

impl<F> Future for Answered<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut resp) = std::task::ready!(this.inner.poll(cx));
        if let Some(by) = this.by.take() {
            resp.extensions_mut().insert(AnsweredBy(by));
        }
        Poll::Ready(Ok(resp))
    }
}
