//! The receiving side of a resume for another instance's session (SPEC
//! 11): dial the owner, hand it the client's request as it came, and from
//! then on copy bytes both ways. The owner answers (`200`, `410`, 4409,
//! 4410) through its own HTTP/1.1 loop and session code, so there is one
//! resume path, not two; this side only relays.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Uri};
use tether_wire::SessionId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::peer::{self, Preamble};
use super::{Cluster, Owner};
use crate::body::Body;
use crate::exchange::ConnInfo;
use crate::metrics::{ForwardResult, Forwarded};

/// A peer connection on which the owner has answered, with what it sent
/// past its answer head (replayed lines, or WebSocket frames).
pub(crate) struct Relayed {
    pub(crate) stream: TcpStream,
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) after_head: Bytes,
}

/// Fields a relayed request does not carry: its body is never relayed (a
/// body on a resume is discarded, SPEC 2), and the connection is the
/// peer connection's own.
const NOT_RELAYED: [HeaderName; 4] = [
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::EXPECT,
    HeaderName::from_static("keep-alive"),
];

/// Sends `method target` with `headers` to the owner of `id` and reads its
/// answer head. `None`: the owner is absent, cannot be reached within
/// `origin_connect_timeout`, or broke off; the caller answers the one
/// `410`. Counted in `tether_cluster_forwarded_total{kind="resume"}`.
pub(crate) async fn to_owner(
    cluster: &Cluster,
    id: &SessionId,
    conn: ConnInfo,
    method: &Method,
    target: &Uri,
    headers: &HeaderMap,
    keep_connection: bool,
) -> Option<Relayed> {
    let count = |r| cluster.metrics.cluster.forwarded(Forwarded::Resume, r);
    let (addr, node) = match (cluster.owner(id), id.owner()) {
        (Owner::Peer(addr), Some(node)) => (addr, node),
        _ => {
            count(ForwardResult::Gone);
            return None;
        }
    };
    let attempt = || {
        exchange(
            cluster,
            addr,
            node,
            conn,
            method,
            target,
            headers,
            keep_connection,
        )
    };
    let relayed = match attempt().await {
        // The owner closed the connection before any byte of an answer:
        // it did nothing with the request. An upgrading owner's old
        // process does so for a session that has just left it (SPEC 10);
        // the next connection reaches the new process.
        Err(Unanswered) => attempt().await.ok().flatten(),
        Ok(relayed) => relayed,
    };
    match &relayed {
        Some(r) if r.status.is_success() || r.status == StatusCode::SWITCHING_PROTOCOLS => {
            count(ForwardResult::Ok)
        }
        Some(_) => count(ForwardResult::Gone),
        None => {
            tracing::warn!(target: "tether", node, %addr, "cluster: the owner of a resumed session cannot be reached");
            count(ForwardResult::Error)
        }
    }
    relayed
}

/// The owner closed a peer connection before any byte of its answer.
struct Unanswered;

/// One request to the owner on a new peer connection: `Ok(None)` when it
/// cannot be reached, breaks off mid-answer or takes too long.
#[allow(clippy::too_many_arguments)]
async fn exchange(
    cluster: &Cluster,
    addr: SocketAddr,
    node: &str,
    conn: ConnInfo,
    method: &Method,
    target: &Uri,
    headers: &HeaderMap,
    keep_connection: bool,
) -> Result<Option<Relayed>, Unanswered> {
    let preamble = Preamble {
        client: conn.peer,
        https: conn.https,
    };
    let Some(mut stream) = peer::dial(cluster, addr, node, preamble).await else {
        return Ok(None);
    };
    let mut head = Vec::with_capacity(512);
    let target = target.path_and_query().map_or("/", |p| p.as_str());
    head.extend_from_slice(format!("{method} {target} HTTP/1.1\r\n").as_bytes());
    for (name, value) in headers {
        let dropped =
            NOT_RELAYED.contains(name) || (!keep_connection && name == header::CONNECTION);
        if dropped {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let answer = async {
        if stream.write_all(&head).await.is_err() {
            // Closed before the request was even taken.
            return Answer::Nothing;
        }
        read_answer(&mut stream, cluster.max_header_bytes).await
    };
    let answer = tokio::time::timeout(cluster.answer_timeout, answer).await;
    let (status, headers, after_head) = match answer {
        Ok(Answer::Head(status, headers, after_head)) => (status, headers, after_head),
        Ok(Answer::Nothing) => return Err(Unanswered),
        Ok(Answer::Broken) | Err(_) => return Ok(None),
    };
    Ok(Some(Relayed {
        stream,
        status,
        headers,
        after_head,
    }))
}

/// How an owner answered on a peer connection.
enum Answer {
    Head(StatusCode, HeaderMap, Bytes),
    /// Closed (or reset) before any byte.
    Nothing,
    /// Closed mid-head, or not an HTTP/1.1 answer head.
    Broken,
}

/// Reads an HTTP/1.1 answer head: status, headers, and the bytes after it.
async fn read_answer<R: AsyncRead + Unpin>(io: &mut R, max: usize) -> Answer {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        match io.read_buf(&mut buf).await {
            Ok(n) if n > 0 => {}
            _ if buf.is_empty() => return Answer::Nothing,
            _ => return Answer::Broken,
        }
        match parse_answer(&buf) {
            Some(Parsed::Complete(status, headers, len)) => {
                return Answer::Head(status, headers, buf.split_off(len).freeze())
            }
            Some(Parsed::Partial) if buf.len() < max => {}
            _ => return Answer::Broken,
        }
    }
}

enum Parsed {
    Complete(StatusCode, HeaderMap, usize),
    Partial,
}

/// An answer head in `buf`, if it is one; `None` when it is not HTTP.
fn parse_answer(buf: &[u8]) -> Option<Parsed> {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut fields);
    match resp.parse(buf).ok()? {
        httparse::Status::Complete(len) => {
            let status = StatusCode::from_u16(resp.code?).ok()?;
            let mut headers = HeaderMap::new();
            for f in resp.headers.iter() {
                let name = HeaderName::from_bytes(f.name.as_bytes()).ok()?;
                headers.append(name, HeaderValue::from_bytes(f.value).ok()?);
            }
            Some(Parsed::Complete(status, headers, len))
        }
        httparse::Status::Partial => Some(Parsed::Partial),
    }
}

/// The owner's `200` to a native resume as this side's answer: the same
/// head (the client connection writes `Connection: Keep-Alive` itself).
pub(crate) fn native_answer(relayed: &Relayed) -> Response<Body> {
    let mut resp = Response::new(Body::Empty);
    *resp.status_mut() = relayed.status;
    for (name, value) in &relayed.headers {
        if name != header::CONNECTION && name != header::DATE {
            resp.headers_mut().append(name, value.clone());
        }
    }
    resp
}

/// A WebSocket client frame (masked, as RFC 6455 requires of clients)
/// carrying `payload` as one binary message: the control record the
/// receiving side already read, replayed to the owner.
pub(crate) fn masked_binary(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x82);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mut mask = [0u8; 4];
    getrandom::fill(&mut mask).expect("the operating system's random source failed");
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Copies bytes both ways between the client and the owner until either
/// side ends; `first` goes to the client before anything else. Each
/// The caller tunes the client's socket as for a session first. Each
/// direction reads only when its last write is done: the backpressure of
/// each end reaches the other. The first side to end ends both: a client
/// gone detaches the session at the owner, and a connection the owner
/// closed (takeover, end) closes the client's, even a half-open one.
pub(crate) async fn pump<C>(mut client: C, peer: TcpStream, first: Bytes)
where
    C: AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    if !first.is_empty() && client.write_all(&first).await.is_err() {
        return;
    }
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut peer_read, mut peer_write) = peer.into_split();
    tokio::select! {
        _ = tokio::io::copy(&mut client_read, &mut peer_write) => {}
        _ = async {
            let _ = tokio::io::copy(&mut peer_read, &mut client_write).await;
            let _ = client_write.shutdown().await;
        } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_frames_unmask_to_the_payload() {
        for len in [0usize, 5, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let frame = masked_binary(&payload);
            assert_eq!(frame[0], 0x82);
            assert_eq!(frame[1] & 0x80, 0x80);
            let (len_bytes, at) = match frame[1] & 0x7f {
                126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            assert_eq!(len_bytes, len);
            let mask = &frame[at..at + 4];
            let body: Vec<u8> = frame[at + 4..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(body, payload);
        }
    }

    #[tokio::test]
    async fn answers_are_read_with_what_follows() {
        let wire = b"HTTP/1.1 200 OK\r\nSessionID: abc\r\nContent-Length: 0\r\n\r\nline 1\n";
        let Answer::Head(status, headers, rest) = read_answer(&mut &wire[..], 1024).await else {
            panic!("no answer head");
        };
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["sessionid"], "abc");
        assert_eq!(&rest[..], b"line 1\n");
        let broken = [&b"HTTP/1.1 200 OK\r\n"[..], b"garbage\r\n\r\n"];
        for wire in broken {
            assert!(matches!(
                read_answer(&mut &wire[..], 1024).await,
                Answer::Broken
            ));
        }
        // Only a close before any byte may be tried again.
        assert!(matches!(
            read_answer(&mut &b""[..], 1024).await,
            Answer::Nothing
        ));
    }
}
