//! Opening a session on a worker (stream mode): send the client's request
//! on a fresh connection, read the answer head, and either keep the
//! connection as the session's line channel (a `200` with
//! `Connection-Type: Persistent`) or relay the answer as a plain response.
//!
//! tether speaks HTTP/1.1 to the worker itself here because the connection
//! must stay in its hands after a `200`, which a pooled client cannot give.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::body::pump::{BodyPump, PumpEvent};
use crate::body::{Body, ChannelBody};
use crate::codec::answer::{self, AnswerFraming};
use crate::codec::encode;
use crate::codec::upstream::{encode_request_head, parse_answer_head, AnswerHead, RequestBody};
use crate::forward::UpstreamError;
use crate::headers;

/// A plain answer's body that makes no progress this long is cut.
const PLAIN_BODY_STALL: Duration = Duration::from_secs(60);

/// What the worker answered.
pub(crate) enum WorkerAnswer {
    Persistent {
        status: StatusCode,
        /// End-to-end fields to pass to the client.
        headers: HeaderMap,
        initial: Bytes,
        stream: TcpStream,
        /// Bytes after the initial body: the start of the worker's lines.
        leftover: BytesMut,
    },
    Plain(Response<Body>),
}

/// Limits that apply while opening.
pub(crate) struct OpenLimits {
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) max_header_bytes: usize,
    pub(crate) max_initial_body: usize,
}

/// Why opening on a worker failed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenError {
    pub(crate) kind: UpstreamError,
    /// The TCP connect itself failed (refused or timed out): the worker
    /// is down (SPEC 7).
    pub(crate) connecting: bool,
}

impl From<UpstreamError> for OpenError {
    fn from(kind: UpstreamError) -> Self {
        OpenError {
            kind,
            connecting: false,
        }
    }
}

pub(crate) async fn open(
    target: (&str, u16),
    req: Request<Body>,
    limits: &OpenLimits,
) -> Result<WorkerAnswer, OpenError> {
    let connect = tokio::time::timeout(limits.connect_timeout, TcpStream::connect(target)).await;
    let mut stream = match connect {
        Ok(Ok(s)) => s,
        failed => {
            return Err(OpenError {
                kind: if failed.is_err() {
                    UpstreamError::Timeout
                } else {
                    UpstreamError::Connect
                },
                connecting: true,
            })
        }
    };
    let _ = stream.set_nodelay(true);
    let is_head = req.method() == Method::HEAD;
    let exchange = async {
        send_request(&mut stream, req).await?;
        read_answer(stream, is_head, limits).await
    };
    match tokio::time::timeout(limits.response_timeout, exchange).await {
        Err(_) => Err(UpstreamError::Timeout.into()),
        Ok(r) => r.map_err(OpenError::from),
    }
}

async fn send_request(stream: &mut TcpStream, req: Request<Body>) -> Result<(), UpstreamError> {
    let (parts, mut body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut head = Vec::with_capacity(512);
    let exact = http_body::Body::size_hint(&body).exact();
    let coding = encode_request_head(&mut head, &parts.method, path, &parts.headers, exact);
    let chunked = coding == RequestBody::Chunked;
    stream
        .write_all(&head)
        .await
        .map_err(|_| UpstreamError::Reset)?;
    while let Some(frame) = body.frame().await {
        // A client body that broke off mid-way: the worker never sees a
        // complete request.
        let frame = frame.map_err(|_| UpstreamError::Reset)?;
        if let Ok(data) = frame.into_data() {
            let mut out = Vec::with_capacity(data.len() + 16);
            if chunked {
                encode::encode_chunk(&mut out, &data);
            } else {
                out.extend_from_slice(&data);
            }
            if !out.is_empty() {
                stream
                    .write_all(&out)
                    .await
                    .map_err(|_| UpstreamError::Reset)?;
            }
        }
    }
    if chunked {
        stream
            .write_all(b"0\r\n\r\n")
            .await
            .map_err(|_| UpstreamError::Reset)?;
    }
    Ok(())
}

async fn read_answer(
    mut stream: TcpStream,
    is_head: bool,
    limits: &OpenLimits,
) -> Result<WorkerAnswer, UpstreamError> {
    let mut buf = BytesMut::with_capacity(4096);
    let (head, used) = loop {
        if stream
            .read_buf(&mut buf)
            .await
            .map_err(|_| UpstreamError::Reset)?
            == 0
        {
            return Err(UpstreamError::Reset);
        }
        if let Some(parsed) = parse_answer_head(&buf).map_err(|_| UpstreamError::Protocol)? {
            break parsed;
        }
        if buf.len() > limits.max_header_bytes {
            return Err(UpstreamError::Protocol);
        }
        if buf.capacity() == buf.len() {
            buf.reserve(4096);
        }
    };
    let _ = buf.split_to(used);
    let AnswerHead {
        status,
        mut headers,
        ..
    } = head;
    if status.is_informational() {
        // 1xx before the final answer: not expected from a worker here.
        return Err(UpstreamError::Protocol);
    }
    let persistent = status == StatusCode::OK
        && !is_head
        && headers
            .get(&headers::CONNECTION_TYPE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"persistent"));
    // The same rules as any upstream answer (SPEC 5): two framings, a
    // coding other than chunked or differing lengths are never relayed.
    let framing = answer::framing(status, &headers, is_head, false).map_err(|why| {
        tracing::warn!(status = status.as_u16(), why, "worker answer refused");
        UpstreamError::Protocol
    })?;
    let (length, chunked) = match framing {
        AnswerFraming::Length(n) => (Some(n), false),
        AnswerFraming::Chunked => (None, true),
        AnswerFraming::None | AnswerFraming::UntilClose => (None, false),
    };
    if persistent {
        if chunked {
            return Err(UpstreamError::Protocol);
        }
        let n = length.unwrap_or(0);
        if n > limits.max_initial_body as u64 {
            return Err(UpstreamError::Protocol);
        }
        let n = n as usize;
        while buf.len() < n {
            if buf.capacity() - buf.len() < n - buf.len() {
                buf.reserve(n - buf.len());
            }
            if stream
                .read_buf(&mut buf)
                .await
                .map_err(|_| UpstreamError::Reset)?
                == 0
            {
                return Err(UpstreamError::Reset);
            }
        }
        let initial = buf.split_to(n).freeze();
        headers::strip_hop_by_hop(&mut headers, false);
        headers::strip_answer_session_fields(&mut headers);
        headers.remove(header::CONTENT_LENGTH);
        return Ok(WorkerAnswer::Persistent {
            status,
            headers,
            initial,
            stream,
            leftover: buf,
        });
    }

    // A plain answer: relay it, body streamed by a small task.
    let bodyless = framing == AnswerFraming::None;
    answer::normalize(status, &mut headers, framing);
    headers::strip_hop_by_hop(&mut headers, false);
    headers::strip_answer_session_fields(&mut headers);
    let pump = if bodyless || length == Some(0) {
        None
    } else if chunked {
        let (body, sender) = ChannelBody::new(None);
        Some((body, BodyPump::new(sender, None)))
    } else if let Some(n) = length {
        let (body, sender) = ChannelBody::new(Some(n));
        Some((body, BodyPump::new(sender, Some(n))))
    } else {
        let (body, sender) = ChannelBody::new(None);
        Some((body, BodyPump::until_eof(sender)))
    };
    let body = match pump {
        None => Body::Empty,
        Some((body, mut pump)) => {
            tokio::spawn(async move {
                let mut stream = stream;
                while let Ok(ev) = pump.step(&mut stream, &mut buf, PLAIN_BODY_STALL).await {
                    if matches!(ev, PumpEvent::Finished | PumpEvent::Abandoned) {
                        break;
                    }
                }
            });
            Body::Channel(body)
        }
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    if !chunked && !bodyless {
        if let Some(n) = length {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
    }
    *resp.headers_mut() = headers;
    Ok(WorkerAnswer::Plain(resp))
}
