//! What every layer of one request exchange shares, below the stack and
//! the session layer: facts about the client connection, and the small
//! plain-text answers the gateway writes itself.

use std::net::SocketAddr;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::body::Body;

/// Facts about the client connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnInfo {
    pub peer: SocketAddr,
    pub https: bool,
}

/// A small plain-text answer written by the gateway itself.
pub(crate) fn text_response(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::full(text));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    resp
}

/// Marks an answer that must not be given: the client's connection closes
/// unanswered (HTTP/1) or its stream is refused (HTTP/2, `REFUSED_STREAM`),
/// which every client takes as a failed attempt to make again. The old
/// process of an upgrade answers so a request for a session that has left
/// it: the next attempt reaches the new process (SPEC 10).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unanswered;

/// An answer marked [`Unanswered`]; its status is never sent.
pub(crate) fn unanswered() -> Response<Body> {
    let mut resp = Response::new(Body::Empty);
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    resp.extensions_mut().insert(Unanswered);
    resp
}
