//! Writing responses on an HTTP/1.x client connection.

use bytes::{BufMut, Bytes};
use http::header::{self, HeaderMap};
use http::{Method, StatusCode, Version};

/// How a response body is delimited toward the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutFraming {
    /// No body at all (HEAD, 1xx, 204, 304).
    Bodyless,
    /// `Content-Length` as given.
    Length,
    Chunked,
    /// HTTP/1.0 client and unknown length: the body ends at close.
    UntilClose,
}

/// Decides the framing of an answer with `status` and `headers` to a
/// `method` request, and fills in `Content-Length` when the body knows its
/// exact size (`exact`).
pub(crate) fn choose_framing(
    method: &Method,
    version: Version,
    status: StatusCode,
    headers: &mut HeaderMap,
    exact: Option<u64>,
) -> OutFraming {
    if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return OutFraming::Bodyless;
    }
    if headers.contains_key(header::CONTENT_LENGTH) {
        return OutFraming::Length;
    }
    if let Some(n) = exact {
        headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from(n));
        return OutFraming::Length;
    }
    if version == Version::HTTP_11 {
        OutFraming::Chunked
    } else {
        OutFraming::UntilClose
    }
}

/// Encodes a status line and headers, then the framing and connection
/// fields the gateway owns.
pub(crate) fn encode_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    framing: OutFraming,
    connection: Option<&'static str>,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if name == header::CONNECTION || name == header::TRANSFER_ENCODING {
            continue;
        }
        encode_field(out, name, value);
    }
    if framing == OutFraming::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if let Some(c) = connection {
        out.extend_from_slice(b"connection: ");
        out.extend_from_slice(c.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends one field line (`name: value` and CRLF), in a head or trailers,
/// whichever way the message goes.
pub(crate) fn encode_field(
    out: &mut Vec<u8>,
    name: &header::HeaderName,
    value: &header::HeaderValue,
) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends one chunk of a chunked body.
pub(crate) fn encode_chunk(out: &mut Vec<u8>, data: &Bytes) {
    if data.is_empty() {
        return;
    }
    out.put_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// Appends the last chunk, with trailers if any.
pub(crate) fn encode_last_chunk(out: &mut Vec<u8>, trailers: Option<&HeaderMap>) {
    out.extend_from_slice(b"0\r\n");
    if let Some(t) = trailers {
        for (name, value) in t {
            encode_field(out, name, value);
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// A complete error answer written by the connection itself, before or
/// instead of a service response; the connection closes after it.
pub(crate) fn error_response(status: StatusCode, text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + text.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Error").as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ");
    out.extend_from_slice(text.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\nconnection: close\r\n\r\n");
    out.extend_from_slice(text.as_bytes());
    out
}
