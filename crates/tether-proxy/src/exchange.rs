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
