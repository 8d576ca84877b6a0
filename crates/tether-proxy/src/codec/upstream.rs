//! The gateway's side of HTTP/1.1 toward origins and workers: the request
//! heads it writes and the answer heads it reads. The pooled upstream
//! client and the stream-mode worker client both speak through it.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

use super::encode::encode_field;

/// Most header lines accepted in an upstream's answer (hyper's client
/// accepted 100).
const MAX_ANSWER_FIELDS: usize = 128;

/// How the body of a request written by [`encode_request_head`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestBody {
    /// Nothing follows the head.
    None,
    /// Exactly this many bytes follow.
    Length(u64),
    /// Chunks follow, then the last chunk (with any trailers).
    Chunked,
}

/// Writes a request head in origin-form: the fields as given, except the
/// framing ones, which follow from the body's `exact` size (`None` when
/// unknown: chunked). A `Content-Length: 0` the client sent is kept.
pub(crate) fn encode_request_head(
    out: &mut Vec<u8>,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    exact: Option<u64>,
) -> RequestBody {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        encode_field(out, name, value);
    }
    let body = match exact {
        Some(0) if headers.contains_key(header::CONTENT_LENGTH) => {
            out.extend_from_slice(b"content-length: 0\r\n");
            RequestBody::None
        }
        Some(0) => RequestBody::None,
        Some(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
            RequestBody::Length(n)
        }
        None => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            RequestBody::Chunked
        }
    };
    out.extend_from_slice(b"\r\n");
    body
}

/// An upstream's answer head.
#[derive(Debug)]
pub(crate) struct AnswerHead {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
}

impl AnswerHead {
    /// Whether the upstream keeps the connection open after this answer
    /// (RFC 9112 §9.3): HTTP/1.1 unless `close`, HTTP/1.0 only with
    /// `keep-alive`.
    pub(crate) fn keeps_alive(&self) -> bool {
        let tokens = crate::codec::head::connection_tokens(&self.headers);
        match self.version {
            Version::HTTP_11 => !tokens.close,
            _ => tokens.keep_alive && !tokens.close,
        }
    }
}

/// The upstream sent something that is not an HTTP/1.x answer head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadAnswer;

/// Parses an answer head at the start of `buf`: the head and its length,
/// or `None` while it is incomplete.
pub(crate) fn parse_answer_head(buf: &[u8]) -> Result<Option<(AnswerHead, usize)>, BadAnswer> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_ANSWER_FIELDS];
    let mut resp = httparse::Response::new(&mut slots);
    let used = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(BadAnswer),
    };
    let status = StatusCode::from_u16(resp.code.unwrap_or(0)).map_err(|_| BadAnswer)?;
    let version = match resp.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let mut headers = HeaderMap::with_capacity(resp.headers.len());
    for h in resp.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| BadAnswer)?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| BadAnswer)?;
        headers.append(name, value);
    }
    Ok(Some((
        AnswerHead {
            status,
            version,
            headers,
        },
        used,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: Method, fields: &[(&str, &str)], exact: Option<u64>) -> (String, RequestBody) {
        let mut h = HeaderMap::new();
        for (k, v) in fields {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let mut out = Vec::new();
        let body = encode_request_head(&mut out, &method, "/a?b", &h, exact);
        (String::from_utf8(out).unwrap(), body)
    }

    #[test]
    fn framing_fields_follow_the_body() {
        let (text, body) = head(
            Method::POST,
            &[
                ("host", "x"),
                ("content-length", "9"),
                ("transfer-encoding", "chunked"),
            ],
            Some(3),
        );
        assert_eq!(
            text,
            "POST /a?b HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\n"
        );
        assert_eq!(body, RequestBody::Length(3));
        let (text, body) = head(Method::POST, &[("host", "x")], None);
        assert_eq!(
            text,
            "POST /a?b HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        assert_eq!(body, RequestBody::Chunked);
        let (text, body) = head(Method::GET, &[("host", "x")], Some(0));
        assert_eq!(text, "GET /a?b HTTP/1.1\r\nhost: x\r\n\r\n");
        assert_eq!(body, RequestBody::None);
        let (text, _) = head(Method::POST, &[("content-length", "0")], Some(0));
        assert_eq!(text, "POST /a?b HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
    }

    #[test]
    fn answer_heads_parse_or_wait() {
        let text = b"HTTP/1.1 200 OK\r\nA: 1\r\nA: 2\r\n\r\nbody";
        assert_eq!(parse_answer_head(&text[..10]).unwrap().map(|_| ()), None);
        let (h, used) = parse_answer_head(text).unwrap().unwrap();
        assert_eq!(used, text.len() - 4);
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.headers.get_all("a").iter().count(), 2);
        assert!(h.keeps_alive());
        assert!(parse_answer_head(b"HTTP/1.1 2000 OK\r\n\r\n").is_err());
        assert!(parse_answer_head(b"HTTP/1.1 200 OK\r\nA : 1\r\n\r\n").is_err());
        let (h, _) = parse_answer_head(b"HTTP/1.0 200 OK\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keeps_alive());
        let (h, _) = parse_answer_head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keeps_alive());
        let (h, _) = parse_answer_head(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keeps_alive());
    }
}
