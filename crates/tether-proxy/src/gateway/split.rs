//! The persistent-candidate split (SPEC 2, 3): a request on a vhost with
//! `[vhost.persistent]` whose path matches its globs is the session
//! layer's; a WebSocket upgrade there that does not offer `persistent`
//! is an ordinary proxied WebSocket to a worker; the rest is plain.

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::header;
use http::{Request, Response, StatusCode, Version};
use tower::{Layer, Service};

use super::Routed;
use crate::body::Body;
use crate::exchange::text_response;
use crate::session::{self, websocket, SessionEnv};

#[derive(Clone)]
pub(crate) struct SplitLayer {
    session: SessionEntry,
}

impl SplitLayer {
    pub(crate) fn new(session: SessionEntry) -> SplitLayer {
        SplitLayer { session }
    }
}

impl<P> Layer<P> for SplitLayer {
    type Service = Split<P, SessionEntry>;

    fn layer(&self, plain: P) -> Self::Service {
        Split {
            plain,
            session: self.session.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Split<P, S> {
    plain: P,
    session: S,
}

type Early = Ready<Result<Response<Body>, Infallible>>;

impl<P, S> Service<Routed> for Split<P, S>
where
    P: Service<Routed, Response = Response<Body>, Error = Infallible>,
    S: Service<Routed, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<Either<Early, P::Future>, S::Future>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both sides are always ready (they hold no capacity of their own).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut routed: Routed) -> Self::Future {
        let Some(route) = routed
            .vhost
            .persistent
            .as_ref()
            .filter(|r| r.matches(routed.req.uri().path()))
        else {
            return Either::Left(Either::Right(self.plain.call(routed)));
        };
        let h = routed.req.headers();
        if !is_upgrade(&routed.req)
            || (websocket::is_websocket(h) && websocket::offers_persistent(h))
        {
            return Either::Right(self.session.call(routed));
        }
        // An ordinary WebSocket on a candidate path: to a worker chosen as
        // for a new session, with no SessionID and no resume (SPEC 3).
        let any = tether_wire::SessionId::from_random(rand_bytes());
        match route.workers.pick(&any) {
            Some(w) => {
                routed.worker = Some(w);
                Either::Left(Either::Right(self.plain.call(routed)))
            }
            None => Either::Left(Either::Left(ready(Ok(text_response(
                StatusCode::BAD_GATEWAY,
                "no worker is up\n",
            ))))),
        }
    }
}

/// `Connection: upgrade` with an `Upgrade` field on HTTP/1.1.
pub(super) fn is_upgrade(req: &Request<Body>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .any(|t| crate::codec::trim(t).eq_ignore_ascii_case(b"upgrade"))
}

fn rand_bytes() -> [u8; 24] {
    let mut b = [0u8; 24];
    let _ = getrandom::fill(&mut b);
    b
}

/// The session layer's entry: a native candidate (open, resume, end) or a
/// persistent WebSocket upgrade.
#[derive(Clone)]
pub(crate) struct SessionEntry {
    env: Arc<SessionEnv>,
}

impl SessionEntry {
    pub(crate) fn new(env: Arc<SessionEnv>) -> SessionEntry {
        SessionEntry { env }
    }
}

type Boxed = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl Service<Routed> for SessionEntry {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<Early, Boxed>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, routed: Routed) -> Self::Future {
        let Routed {
            conn, req, vhost, ..
        } = routed;
        let Some(route) = vhost.persistent.clone() else {
            // The split sends only candidates here.
            return Either::Left(ready(Ok(text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "not a persistent path\n",
            ))));
        };
        if is_upgrade(&req) {
            // The `101` is answered at once; the session opens after it.
            let resp = websocket::accept(&self.env, &vhost.scope, &route, conn, &req);
            return Either::Left(ready(Ok(resp)));
        }
        let env = self.env.clone();
        Either::Right(Box::pin(async move {
            Ok(session::handle(&env, &vhost.scope, &route, conn, req).await)
        }))
    }
}
