//! The little HTTP/1.1 the native client needs: request heads, answer heads
//! (parsed with `httparse`), and plain answer bodies.

use std::fmt::Write as _;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use tether_wire::http1::chunked::{BadChunk, ChunkedDecoder, Piece};
use tether_wire::http1::framing::{answer_framing, AnswerFraming};

use crate::config::Target;
use crate::ClientError;

/// Longest answer head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Longest plain (non-session) answer body kept; the rest is not read.
pub(crate) const MAX_PLAIN_BODY: usize = 1024 * 1024;

/// An answer's status line and headers.
#[derive(Debug, Clone)]
pub(crate) struct ResponseHead {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
}

impl ResponseHead {
    /// First header of that name (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }

    /// Status 200 with `Connection-Type: Persistent` (value case-insensitive).
    pub(crate) fn is_persistent(&self) -> bool {
        self.status == 200
            && self
                .header("Connection-Type")
                .is_some_and(|v| v.eq_ignore_ascii_case("persistent"))
    }

    /// How the answer's body is delimited, by the same strict rules the
    /// gateway holds answers to (tether-wire's `http1`): two framings,
    /// differing lengths or a coding other than `chunked` are refused.
    pub(crate) fn framing(&self) -> Result<AnswerFraming, ClientError> {
        let fields = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        answer_framing(self.status, fields, false, false)
            .map_err(|why| ClientError::Protocol(format!("bad answer framing: {why}")))
    }

    /// `Content-Length`, if the answer is framed by one.
    pub(crate) fn content_length(&self) -> Result<Option<u64>, ClientError> {
        Ok(match self.framing()? {
            AnswerFraming::Length(n) => Some(n),
            _ => None,
        })
    }
}

/// What a request says about the session.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SessionHeaders<'a> {
    /// A new session: no `SessionID`.
    Open,
    /// A resume: `SessionID` and `Session-Received`.
    Resume { id: &'a str, received: u64 },
    /// An explicit end: `DELETE` with `SessionID`.
    End { id: &'a str },
}

/// Builds a request head (no body).
pub(crate) fn request(
    target: &Target,
    accept: &str,
    extra: &[(String, String)],
    session: SessionHeaders<'_>,
) -> Vec<u8> {
    let method = match session {
        SessionHeaders::End { .. } => "DELETE",
        _ => "GET",
    };
    let mut head = String::with_capacity(256);
    let _ = write!(
        head,
        "{method} {} HTTP/1.1\r\nHost: {}\r\nAccept: {accept}\r\n",
        target.path, target.host_header
    );
    for (name, value) in extra {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    match session {
        SessionHeaders::Open => {}
        SessionHeaders::Resume { id, received } => {
            let _ = write!(head, "SessionID: {id}\r\nSession-Received: {received}\r\n");
        }
        SessionHeaders::End { id } => {
            let _ = write!(
                head,
                "SessionID: {id}\r\nContent-Length: 0\r\nConnection: close\r\n"
            );
        }
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Reads one answer head from `stream`; bytes after it stay in `buf`.
/// Interim `1xx` answers (but `101`) are skipped.
pub(crate) async fn read_head(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
) -> Result<ResponseHead, ClientError> {
    loop {
        if let Some((head, len)) = parse_head(buf)? {
            buf.advance(len);
            if (100..200).contains(&head.status) && head.status != 101 {
                continue;
            }
            return Ok(head);
        }
        if buf.len() >= MAX_HEAD {
            return Err(ClientError::Protocol("answer head too long".into()));
        }
        buf.reserve(4096);
        if stream.read_buf(buf).await? == 0 {
            return Err(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before the answer head",
            )));
        }
    }
}

/// Parses a complete head at the start of `buf`: `None` while incomplete.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; 96];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(buf) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(len)) => {
            let status = response.code.unwrap_or(0);
            let headers = response
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_owned(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            Ok(Some((ResponseHead { status, headers }, len)))
        }
        Err(e) => Err(ClientError::Protocol(format!("bad answer head: {e}"))),
    }
}

/// Reads a plain answer's body: chunked, by Content-Length, or to close;
/// at most [`MAX_PLAIN_BODY`] bytes are kept.
pub(crate) async fn read_plain_body(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    head: &ResponseHead,
) -> Result<Bytes, ClientError> {
    let limit = match head.framing()? {
        AnswerFraming::None => return Ok(Bytes::new()),
        AnswerFraming::Chunked => return read_chunked(stream, buf).await,
        AnswerFraming::Length(n) => Some(n.min(MAX_PLAIN_BODY as u64) as usize),
        AnswerFraming::UntilClose => None,
    };
    loop {
        let want = limit.unwrap_or(MAX_PLAIN_BODY);
        if buf.len() >= want {
            return Ok(buf.split_to(want).freeze());
        }
        buf.reserve(4096);
        if stream.read_buf(buf).await? == 0 {
            if limit.is_some() {
                return Err(ClientError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed inside the answer body",
                )));
            }
            return Ok(buf.split().freeze());
        }
    }
}

async fn read_chunked(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<Bytes, ClientError> {
    let mut decoder = ChunkedDecoder::new();
    let mut body = BytesMut::new();
    loop {
        match decode_chunk(&mut decoder, buf)? {
            Some(Piece::Data(data)) => {
                if body.len() < MAX_PLAIN_BODY {
                    let room = MAX_PLAIN_BODY - body.len();
                    body.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Some(Piece::Trailers(_)) => {}
            Some(Piece::End) => return Ok(body.freeze()),
            None => {
                buf.reserve(4096);
                if stream.read_buf(buf).await? == 0 {
                    return Err(ClientError::Protocol(
                        "connection closed inside a chunked body".into(),
                    ));
                }
            }
        }
    }
}

fn decode_chunk(
    decoder: &mut ChunkedDecoder,
    buf: &mut BytesMut,
) -> Result<Option<Piece>, ClientError> {
    decoder
        .decode(buf)
        .map_err(|BadChunk(why)| ClientError::Protocol(format!("bad chunked body: {why}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads() {
        let t = Target::parse("http://127.0.0.1:81/a.pphp?x=1").unwrap();
        let extra = vec![("Cookie".to_owned(), "a=b".to_owned())];
        let r = request(&t, "application/x-persistent", &extra, SessionHeaders::Open);
        assert_eq!(
            r,
            b"GET /a.pphp?x=1 HTTP/1.1\r\nHost: 127.0.0.1:81\r\nAccept: application/x-persistent\r\nCookie: a=b\r\n\r\n"
        );
        let r = request(
            &t,
            "x/y",
            &[],
            SessionHeaders::Resume {
                id: "abc",
                received: 7,
            },
        );
        let r = String::from_utf8(r).unwrap();
        assert!(r.starts_with("GET /a.pphp?x=1 HTTP/1.1\r\n"));
        assert!(r.contains("\r\nSessionID: abc\r\nSession-Received: 7\r\n\r\n"));
        let r =
            String::from_utf8(request(&t, "x/y", &[], SessionHeaders::End { id: "abc" })).unwrap();
        assert!(r.starts_with("DELETE /a.pphp?x=1 HTTP/1.1\r\n"));
        assert!(r.contains("SessionID: abc\r\n"));
    }

    #[test]
    fn heads_parse() {
        let raw = b"HTTP/1.1 200 OK\r\nconnection-type: PERSISTENT\r\nSessionID: s1\r\nContent-Length: 3\r\n\r\nabcline\n";
        let (head, len) = parse_head(raw).unwrap().unwrap();
        assert!(head.is_persistent());
        assert_eq!(head.header("sessionid"), Some("s1"));
        assert_eq!(head.content_length().unwrap(), Some(3));
        assert_eq!(&raw[len..], b"abcline\n");
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nA: b\r\n")
            .unwrap()
            .is_none());
        assert!(parse_head(b"NOPE\r\n\r\n").is_err());
    }

    #[test]
    fn chunks_decode() {
        let mut buf = BytesMut::from(&b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: v\r\n\r\nrest"[..]);
        let mut dec = ChunkedDecoder::new();
        let mut out = Vec::new();
        loop {
            match decode_chunk(&mut dec, &mut buf).unwrap() {
                Some(Piece::Data(d)) => out.extend_from_slice(&d),
                Some(Piece::Trailers(_)) => {}
                Some(Piece::End) => break,
                None => panic!("incomplete"),
            }
        }
        assert_eq!(out, b"abcde");
        assert_eq!(&buf[..], b"rest");
        let mut partial = BytesMut::from(&b"5\r\nab"[..]);
        let mut dec = ChunkedDecoder::new();
        assert!(matches!(
            decode_chunk(&mut dec, &mut partial),
            Ok(Some(Piece::Data(_)))
        ));
        assert!(decode_chunk(&mut dec, &mut partial).unwrap().is_none());
        let mut bad = BytesMut::from(&b"zz\r\n"[..]);
        assert!(decode_chunk(&mut ChunkedDecoder::new(), &mut bad).is_err());
    }

    /// The client holds answers to the gateway's rules: a lenient reader
    /// took `Content-Length` with `Transfer-Encoding`, or any coding ending
    /// in `chunked`.
    #[test]
    fn ambiguous_answers_are_refused() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
        ] {
            let (head, _) = parse_head(raw).unwrap().unwrap();
            assert!(head.framing().is_err(), "{}", String::from_utf8_lossy(raw));
        }
    }
}
