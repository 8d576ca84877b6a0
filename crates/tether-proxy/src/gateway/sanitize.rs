//! What is never forwarded, and what is cleaned before anything is
//! (SPEC 5): CONNECT over HTTP/2 (HTTP/1 CONNECT is refused by the strict
//! head already) and an absolute-form target naming a host the vhost does
//! not serve get `400`; fields whose name holds `_` are dropped; HTTP/2
//! cookie crumbs are joined into one `Cookie`.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use tower::{Layer, Service};

use super::Routed;
use crate::body::Body;
use crate::exchange::text_response;
use crate::headers;
use crate::router::host_without_port;

#[derive(Clone, Copy)]
pub(crate) struct SanitizeLayer;

impl<S> Layer<S> for SanitizeLayer {
    type Service = Sanitize<S>;

    fn layer(&self, inner: S) -> Sanitize<S> {
        Sanitize { inner }
    }
}

#[derive(Clone)]
pub(crate) struct Sanitize<S> {
    inner: S,
}

impl<S> Service<Routed> for Sanitize<S>
where
    S: Service<Routed, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response<Body>, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut routed: Routed) -> Self::Future {
        if let Some(refusal) = refusal(&routed) {
            return Either::Left(ready(Ok(refusal)));
        }
        let h = routed.req.headers_mut();
        headers::drop_underscored(h);
        if routed.req.version() == Version::HTTP_2 {
            headers::join_cookies(routed.req.headers_mut());
        }
        Either::Right(self.inner.call(routed))
    }
}

fn refusal(routed: &Routed) -> Option<Response<Body>> {
    let req = &routed.req;
    if req.method() == Method::CONNECT {
        return Some(text_response(
            StatusCode::BAD_REQUEST,
            "CONNECT is not served\n",
        ));
    }
    if req.version() >= Version::HTTP_2 {
        return None;
    }
    let authority = req.uri().authority()?;
    let target_host = host_without_port(authority.as_str()).to_ascii_lowercase();
    let same_as_host = routed
        .host
        .as_deref()
        .map(host_without_port)
        .is_some_and(|h| h.eq_ignore_ascii_case(&target_host));
    if same_as_host || routed.vhost.serves(&target_host) {
        return None;
    }
    let mut resp = text_response(
        StatusCode::BAD_REQUEST,
        "the absolute-form target names a host this virtual host does not serve\n",
    );
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    Some(resp)
}
