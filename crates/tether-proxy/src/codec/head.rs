//! Strict parsing of an HTTP/1.x request head (SPEC 5, "Ambiguous framing").
//!
//! Everything that could let two parsers disagree about where a request ends
//! is refused here, before any byte reaches an upstream: Content-Length with
//! Transfer-Encoding, differing Content-Lengths, a Transfer-Encoding whose
//! last coding is not `chunked`, obs-fold, whitespace before a colon, invalid
//! header bytes (the last three are refused by `httparse` itself, which is
//! strict for requests by default), CONNECT, and a missing or repeated Host.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Version};

/// Header lines parsed on the stack; a head with more is parsed again with
/// room for as many as its size allows (the size is what is limited, by
/// `max_header_bytes`, never the count).
const STACK_HEADERS: usize = 128;

/// Why a head was refused; each maps to one status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeadError {
    /// 400: malformed or ambiguous.
    Malformed(&'static str),
    /// 431: too many header lines (size is checked by the reader).
    TooLarge,
    /// 501: a transfer coding the gateway does not decode (RFC 9112 §6.1).
    Unsupported(&'static str),
}

/// How the request body is delimited on the client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// A request head that passed the strict checks.
#[derive(Debug)]
pub(crate) struct RequestHead {
    pub(crate) method: Method,
    /// The request-target as sent (origin-form, absolute-form or `*`).
    pub(crate) target: Bytes,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    pub(crate) framing: Framing,
    /// The client asked for `100 Continue` before sending its body.
    pub(crate) expect_continue: bool,
    /// The client wants the connection kept open after this exchange.
    pub(crate) keep_alive: bool,
    /// `Connection: upgrade` with an `Upgrade` header.
    pub(crate) upgrade: bool,
}

/// Finds the end of a request head: the offset just past the empty line, or
/// `None` when it has not arrived yet. `from` lets callers resume a scan.
pub(crate) fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    let mut i = start;
    while let Some(pos) = buf[i..].iter().position(|&b| b == b'\n') {
        let lf = i + pos;
        // "\n\n" (bare LF line endings, which httparse accepts) or "\n\r\n".
        if buf.get(lf + 1) == Some(&b'\n') {
            return Some(lf + 2);
        }
        if buf.get(lf + 1) == Some(&b'\r') && buf.get(lf + 2) == Some(&b'\n') {
            return Some(lf + 3);
        }
        i = lf + 1;
    }
    None
}

/// Parses a complete head (`buf` ends just past its empty line).
pub(crate) fn parse(buf: &[u8]) -> Result<RequestHead, HeadError> {
    let mut slots = [httparse::EMPTY_HEADER; STACK_HEADERS];
    match parse_with(buf, &mut slots) {
        Err(HeadError::TooLarge) => {
            // Every header line takes at least 3 bytes ("a:" and LF).
            let mut slots = vec![httparse::EMPTY_HEADER; buf.len() / 3 + 1];
            parse_with(buf, &mut slots)
        }
        r => r,
    }
}

fn parse_with<'b>(
    buf: &'b [u8],
    slots: &mut [httparse::Header<'b>],
) -> Result<RequestHead, HeadError> {
    let mut req = httparse::Request::new(slots);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HeadError::Malformed("incomplete head")),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed("malformed request head")),
    }
    let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
        .map_err(|_| HeadError::Malformed("bad method"))?;
    if method == Method::CONNECT {
        return Err(HeadError::Malformed("CONNECT is not served"));
    }
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let target = Bytes::copy_from_slice(req.path.unwrap_or("").as_bytes());
    check_target(&method, &target)?;

    let mut headers = HeaderMap::with_capacity(req.headers.len());
    let mut lengths: Option<u64> = None;
    let mut codings: Vec<Bytes> = Vec::new();
    let mut hosts = 0usize;
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| HeadError::Malformed("bad header name"))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| HeadError::Malformed("bad header value"))?;
        if name == http::header::CONTENT_LENGTH {
            for part in h.value.split(|&b| b == b',') {
                let n = parse_length(trim(part))?;
                match lengths {
                    Some(prev) if prev != n => {
                        return Err(HeadError::Malformed("differing Content-Length values"))
                    }
                    _ => lengths = Some(n),
                }
            }
        } else if name == http::header::TRANSFER_ENCODING {
            for part in h.value.split(|&b| b == b',') {
                let coding = trim(part);
                if coding.is_empty() {
                    return Err(HeadError::Malformed("empty transfer coding"));
                }
                codings.push(Bytes::copy_from_slice(coding));
            }
        } else if name == http::header::HOST {
            hosts += 1;
        }
        headers.append(name, value);
    }

    let framing = if !codings.is_empty() {
        if lengths.is_some() {
            return Err(HeadError::Malformed(
                "Content-Length with Transfer-Encoding",
            ));
        }
        if version == Version::HTTP_10 {
            return Err(HeadError::Malformed("Transfer-Encoding in HTTP/1.0"));
        }
        let chunked_at: Vec<usize> = codings
            .iter()
            .enumerate()
            .filter(|(_, c)| c.eq_ignore_ascii_case(b"chunked"))
            .map(|(i, _)| i)
            .collect();
        if chunked_at != [codings.len() - 1] {
            return Err(HeadError::Malformed(
                "Transfer-Encoding is not chunked last",
            ));
        }
        // `gzip, chunked`: the origin would get the body with the outer
        // coding stripped off its label (only `chunked` is forwarded).
        if codings.len() > 1 {
            return Err(HeadError::Unsupported(
                "a transfer coding other than chunked",
            ));
        }
        Framing::Chunked
    } else {
        match lengths {
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        }
    };
    // A zero Content-Length still has to be forwarded as such.
    let framing = match (framing, lengths) {
        (Framing::None, Some(0)) => Framing::Length(0),
        (f, _) => f,
    };

    // Identical duplicates count as one, and go upstream as one.
    if let Some(n) = lengths {
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
    }

    if hosts > 1 {
        return Err(HeadError::Malformed("more than one Host header"));
    }
    if hosts == 0 && version == Version::HTTP_11 {
        return Err(HeadError::Malformed("HTTP/1.1 request without Host"));
    }

    let connection = connection_tokens(&headers);
    let keep_alive = match version {
        Version::HTTP_10 => connection.keep_alive && !connection.close,
        _ => !connection.close,
    };
    let upgrade = connection.upgrade && headers.contains_key(http::header::UPGRADE);
    let expect_continue = version == Version::HTTP_11
        && headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));

    Ok(RequestHead {
        method,
        target,
        version,
        headers,
        framing,
        expect_continue,
        keep_alive,
        upgrade,
    })
}

/// The request-target forms a gateway serves (RFC 9112 §3.2): origin-form,
/// absolute-form with `http` or `https`, and `*` for OPTIONS only; the
/// authority-form belongs to CONNECT, which is refused anyway.
fn check_target(method: &Method, target: &[u8]) -> Result<(), HeadError> {
    if target == b"*" {
        return if method == Method::OPTIONS {
            Ok(())
        } else {
            Err(HeadError::Malformed("asterisk-form target without OPTIONS"))
        };
    }
    if target.starts_with(b"/") {
        return Ok(());
    }
    let scheme_end = target.windows(3).position(|w| w == b"://");
    match scheme_end.map(|end| &target[..end]) {
        Some(s) if s.eq_ignore_ascii_case(b"http") || s.eq_ignore_ascii_case(b"https") => Ok(()),
        Some(_) => Err(HeadError::Malformed(
            "absolute-form target with a foreign scheme",
        )),
        None => Err(HeadError::Malformed("authority-form or relative target")),
    }
}

fn parse_length(v: &[u8]) -> Result<u64, HeadError> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::Malformed("bad Content-Length"));
    }
    Ok(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

pub(crate) use tether_wire::http1::trim;

/// The tokens of the `Connection` header(s) that matter to framing.
#[derive(Debug, Default)]
pub(crate) struct ConnectionTokens {
    pub(crate) close: bool,
    pub(crate) keep_alive: bool,
    pub(crate) upgrade: bool,
}

pub(crate) fn connection_tokens(headers: &HeaderMap) -> ConnectionTokens {
    let mut t = ConnectionTokens::default();
    for v in headers.get_all(http::header::CONNECTION) {
        for token in v.as_bytes().split(|&b| b == b',') {
            let token = trim(token);
            if token.eq_ignore_ascii_case(b"close") {
                t.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                t.keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                t.upgrade = true;
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<RequestHead, HeadError> {
        let raw = raw.replace('\n', "\r\n");
        let end = find_head_end(raw.as_bytes(), 0).expect("complete head");
        parse(&raw.as_bytes()[..end])
    }

    fn refused(raw: &str) -> bool {
        matches!(head(raw), Err(HeadError::Malformed(_)))
    }

    #[test]
    fn plain_get() {
        let h = head("GET /a?b HTTP/1.1\nHost: x\n\n").unwrap();
        assert_eq!(h.method, Method::GET);
        assert_eq!(&h.target[..], b"/a?b");
        assert_eq!(h.framing, Framing::None);
        assert!(h.keep_alive);
    }

    #[test]
    fn framing() {
        let h = head("POST / HTTP/1.1\nHost: x\nContent-Length: 5\n\n").unwrap();
        assert_eq!(h.framing, Framing::Length(5));
        let h = head("POST / HTTP/1.1\nHost: x\nContent-Length: 5\nContent-Length: 5\n\n").unwrap();
        assert_eq!(h.framing, Framing::Length(5));
        assert!(matches!(
            head("POST / HTTP/1.1\nHost: x\nTransfer-Encoding: gzip, chunked\n\n"),
            Err(HeadError::Unsupported(_))
        ));
        assert!(head("OPTIONS * HTTP/1.1\nHost: x\n\n").is_ok());
        assert!(head("GET HTTP://a.test/x HTTP/1.1\nHost: a.test\n\n").is_ok());
        let h = head("POST / HTTP/1.1\nHost: x\nContent-Length: 0\n\n").unwrap();
        assert_eq!(h.framing, Framing::Length(0));
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for raw in [
            "POST / HTTP/1.1\nHost: x\nContent-Length: 5\nTransfer-Encoding: chunked\n\n",
            "POST / HTTP/1.1\nHost: x\nContent-Length: 5\nContent-Length: 6\n\n",
            "POST / HTTP/1.1\nHost: x\nContent-Length: 5, 6\n\n",
            "POST / HTTP/1.1\nHost: x\nContent-Length: +5\n\n",
            "POST / HTTP/1.1\nHost: x\nContent-Length: 0x5\n\n",
            "POST / HTTP/1.1\nHost: x\nContent-Length:\n\n",
            "POST / HTTP/1.1\nHost: x\nTransfer-Encoding: chunked, gzip\n\n",
            "POST / HTTP/1.1\nHost: x\nTransfer-Encoding: identity\n\n",
            "POST / HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\nTransfer-Encoding: chunked\n\n",
            "POST / HTTP/1.1\nHost: x\nTransfer-Encoding: xchunked\n\n",
            "POST / HTTP/1.1\nHost: x\nTransfer-Encoding: chunked,\n\n",
            "GET / HTTP/1.1\nHost: x\nX-A: 1\n  folded\n\n",
            "GET / HTTP/1.1\nHost: x\nX-A : 1\n\n",
            "GET / HTTP/1.1\nHost: x\nX-A\t: 1\n\n",
            "GET / HTTP/1.1\nHost: x\nX-(A): 1\n\n",
            "CONNECT x:443 HTTP/1.1\nHost: x\n\n",
            "GET / HTTP/1.1\n\n",
            "GET / HTTP/1.1\nHost: x\nHost: y\n\n",
            "GET / HTTP/2.0\nHost: x\n\n",
            "GET /\nHost: x\n\n",
            "GET a.test:80 HTTP/1.1\nHost: a.test\n\n",
            "GET * HTTP/1.1\nHost: a.test\n\n",
            "GET ftp://a.test/ HTTP/1.1\nHost: a.test\n\n",
            "GET a.test/x HTTP/1.1\nHost: a.test\n\n",
        ] {
            assert!(refused(raw), "not refused: {raw:?}");
        }
        let nul = "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n";
        assert!(parse(nul.as_bytes()).is_err());
    }

    #[test]
    fn connection_semantics() {
        assert!(!head("GET / HTTP/1.0\n\n").unwrap().keep_alive);
        assert!(
            head("GET / HTTP/1.0\nConnection: keep-alive\n\n")
                .unwrap()
                .keep_alive
        );
        assert!(
            !head("GET / HTTP/1.1\nHost: x\nConnection: close\n\n")
                .unwrap()
                .keep_alive
        );
        let h =
            head("GET / HTTP/1.1\nHost: x\nConnection: Upgrade\nUpgrade: websocket\n\n").unwrap();
        assert!(h.upgrade);
        let h =
            head("PUT / HTTP/1.1\nHost: x\nExpect: 100-continue\nContent-Length: 1\n\n").unwrap();
        assert!(h.expect_continue);
    }

    #[test]
    fn many_small_headers_are_fine() {
        let mut raw = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
        for i in 0..500 {
            raw.push_str(&format!("X-{i}: 1\r\n"));
        }
        raw.push_str("\r\n");
        let h = parse(raw.as_bytes()).expect("500 headers parse");
        assert_eq!(h.headers.len(), 501);
    }

    #[test]
    fn head_end_scanning() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nrest", 0), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: x\r\n", 0), None);
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n\nx", 0), Some(16));
        let full = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(find_head_end(full, 20), Some(full.len()));
    }
}
