//! One HTTP/1.x client connection: read a head strictly, hand the request
//! to the gateway, write the answer, repeat while keep-alive allows.
//!
//! Timers follow SPEC 5: the first head must be complete within
//! `header_read_timeout` of the accept; a later head within
//! `header_read_timeout` of its first byte, and the wait for that byte is
//! `idle_timeout` (then the connection closes silently). A head timer that
//! runs out is answered `408`; a head over `max_header_bytes` `431`; a
//! malformed or ambiguous one `400`. Each of those closes the connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::body::pump::{BodyPump, PumpEvent};
use crate::body::{Body, ChannelBody, ClientBodyError};
use crate::codec::encode::{self, OutFraming};
use crate::codec::head::{self, Framing, HeadError, RequestHead};
use crate::exchange::Unanswered;
use crate::gateway::{self, AnsweredBy, ConnInfo, RelayedFrom, RequestPath, Runtime};
use crate::metrics::{Limit, UpstreamKind, VhostMetrics};
use crate::session::websocket::{self, WsUpgrade};
use crate::session::{ClientIo, Handoff};

/// Read-buffer growth step for heads.
const HEAD_CHUNK: usize = 4 * 1024;
/// The most of a resume request's body that is read and dropped.
const MAX_DISCARD: u64 = 1024 * 1024;
/// An answer's body piece this big is written from where it is, not
/// copied behind the bytes pending.
const DIRECT_WRITE: usize = 8 * 1024;
/// A read buffer larger than this is given back once it is empty.
const KEEP_BUFFER: usize = 16 * 1024;

/// What the connection does after one exchange.
enum Next {
    KeepAlive,
    Close,
    /// A `101` from the origin: the connection becomes a byte relay.
    Upgrade(Response<Body>),
    /// A persistent answer: the connection leaves HTTP for a session.
    Persistent(Response<Body>, Handoff),
    /// A `101` for a persistent WebSocket session.
    WebSocket(Response<Body>, WsUpgrade),
}

enum HeadRead {
    Head(RequestHead),
    /// Closed by the client, idle timeout, or drain: no answer.
    Closed,
    /// Answer with this status and close.
    Refuse(StatusCode, &'static str),
}

pub(crate) struct Http1Conn<IO> {
    reader: ReadHalf<IO>,
    writer: WriteHalf<IO>,
    buf: BytesMut,
    out: Vec<u8>,
    rt: Arc<Runtime>,
    /// This connection's clone of the config load's request path.
    path: RequestPath,
    info: ConnInfo,
    drain: CancellationToken,
    /// Plain TCP: closing sends the FIN, no `shutdown` first (TLS has its
    /// close_notify to send).
    plain: bool,
}

impl<IO> Http1Conn<IO>
where
    IO: ClientIo,
{
    /// Serves the connection to its end. `buf` holds bytes already read
    /// (while looking for an HTTP/2 preface); `accepted` is the accept time.
    pub(crate) async fn serve(
        io: IO,
        buf: BytesMut,
        accepted: Instant,
        rt: Arc<Runtime>,
        info: ConnInfo,
        drain: CancellationToken,
    ) {
        let plain = io.plain_socket().is_some();
        let (reader, writer) = tokio::io::split(io);
        let mut conn = Http1Conn {
            reader,
            writer,
            buf,
            out: Vec::new(),
            path: rt.path.clone(),
            rt,
            info,
            drain,
            plain,
        };
        let mut head_deadline = Some(accepted + conn.rt.server.header_read_timeout);
        loop {
            let head = match conn.read_head(head_deadline).await {
                HeadRead::Head(h) => h,
                HeadRead::Closed => break,
                HeadRead::Refuse(status, text) => {
                    conn.refuse(status, text).await;
                    break;
                }
            };
            head_deadline = None;
            match conn.exchange(head).await {
                Next::KeepAlive => {}
                Next::Close => break,
                Next::Upgrade(resp) => {
                    // A task of its own: the relay's future is much smaller
                    // than this connection's, and it may live for hours.
                    tokio::spawn(conn.relay_upgrade(resp));
                    return;
                }
                Next::Persistent(resp, handoff) => return conn.hand_over(resp, handoff).await,
                Next::WebSocket(resp, up) => return conn.upgrade_session(resp, up).await,
            }
            if conn.buf.is_empty() && conn.buf.capacity() > KEEP_BUFFER {
                conn.buf = BytesMut::new();
            }
            if conn.out.capacity() > KEEP_BUFFER {
                conn.out = Vec::new();
            }
        }
        if !conn.plain {
            let _ = conn.writer.shutdown().await;
        }
    }

    async fn read_head(&mut self, mut deadline: Option<Instant>) -> HeadRead {
        let server = &self.rt.server;
        // Clocks are read only to wait: a head already read needs none.
        let mut idle_until = None;
        let mut scanned = 0;
        loop {
            // Empty lines before a request line are ignored (RFC 9112 §2.2).
            while self.buf.starts_with(b"\r\n") || self.buf.starts_with(b"\n") {
                let n = if self.buf[0] == b'\r' { 2 } else { 1 };
                self.buf.advance(n);
            }
            if let Some(end) = head::find_head_end(&self.buf, scanned) {
                if end > server.max_header_bytes {
                    return HeadRead::Refuse(
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "the request head is larger than this server accepts\n",
                    );
                }
                let parsed = head::parse(&self.buf[..end]);
                self.buf.advance(end);
                return match parsed {
                    Ok(h) => HeadRead::Head(h),
                    Err(HeadError::TooLarge) => HeadRead::Refuse(
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "the request has too many header fields\n",
                    ),
                    Err(HeadError::Unsupported(why)) => {
                        tracing::debug!(peer = %self.info.peer, why, "refused request head");
                        HeadRead::Refuse(
                            StatusCode::NOT_IMPLEMENTED,
                            "the request uses a transfer coding this server does not support\n",
                        )
                    }
                    Err(HeadError::Malformed(why)) => {
                        tracing::debug!(peer = %self.info.peer, why, "refused request head");
                        HeadRead::Refuse(
                            StatusCode::BAD_REQUEST,
                            "malformed or ambiguous request\n",
                        )
                    }
                };
            }
            scanned = self.buf.len();
            if self.buf.len() > server.max_header_bytes {
                return HeadRead::Refuse(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "the request head is larger than this server accepts\n",
                );
            }
            if self.buf.capacity() - self.buf.len() < 512 {
                self.buf.reserve(HEAD_CHUNK);
            }
            if !self.buf.is_empty() && deadline.is_none() {
                deadline = Some(Instant::now() + server.header_read_timeout);
            }
            let waiting_idle = deadline.is_none();
            let until = deadline.unwrap_or_else(|| {
                *idle_until.get_or_insert_with(|| Instant::now() + server.idle_timeout)
            });
            if self.drain.is_cancelled() {
                return HeadRead::Closed;
            }
            tokio::select! {
                // Bytes that are there are taken before a timer or the
                // drain is even looked at (no timer is set for them).
                biased;
                read = self.reader.read_buf(&mut self.buf) => match read {
                    Ok(0) | Err(_) => return HeadRead::Closed,
                    Ok(_) => {}
                },
                _ = tokio::time::sleep_until(until) => {
                    return if waiting_idle {
                        self.rt.metrics.limit_hit(Limit::IdleTimeout);
                        HeadRead::Closed
                    } else {
                        HeadRead::Refuse(
                            StatusCode::REQUEST_TIMEOUT,
                            "the request head did not arrive in time\n",
                        )
                    };
                }
                // Draining: a head not yet complete is not a request in
                // flight; close without an answer.
                _ = self.drain.cancelled() => return HeadRead::Closed,
            }
        }
    }

    /// Answers with `status` and closes; counted for the vhost `""`
    /// (SPEC 9: an answer given before a vhost is known).
    async fn refuse(&mut self, status: StatusCode, text: &str) {
        let unrouted = self.rt.unrouted.clone();
        self.refuse_for(&unrouted, status, text).await;
    }

    /// [`Self::refuse`] counted for a vhost that is known.
    async fn refuse_for(&mut self, metrics: &VhostMetrics, status: StatusCode, text: &str) {
        match status {
            StatusCode::REQUEST_TIMEOUT => self.rt.metrics.limit_hit(Limit::HeaderTimeout),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
                self.rt.metrics.limit_hit(Limit::HeaderBytes)
            }
            _ => {}
        }
        self.answer_and_close(metrics, status, text).await;
    }

    /// `408` for a request body that stopped arriving (limit `body_timeout`).
    async fn body_stalled(&mut self, host: Option<&HeaderValue>) {
        tracing::debug!(peer = %self.info.peer, "request body stalled");
        self.rt.metrics.limit_hit(Limit::BodyTimeout);
        let metrics = self.vhost_metrics(host);
        self.answer_and_close(
            &metrics,
            StatusCode::REQUEST_TIMEOUT,
            "the request body stopped arriving\n",
        )
        .await;
    }

    /// Writes a gateway's own error answer, counted and logged; the caller
    /// closes the connection after it.
    async fn answer_and_close(&mut self, metrics: &VhostMetrics, status: StatusCode, text: &str) {
        metrics.response(status.as_u16(), Duration::ZERO);
        gateway::log_access(
            self.info.peer,
            "-",
            "-",
            status.as_u16(),
            0,
            Duration::ZERO,
            true,
        );
        let bytes = encode::error_response(status, text);
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = self.writer.write_all(&bytes).await;
            let _ = self.writer.flush().await;
        })
        .await;
    }

    /// One request and its answer.
    async fn exchange(&mut self, head: RequestHead) -> Next {
        let started = Instant::now();
        let method = head.method.clone();
        let version = head.version;
        let expect_continue = head.expect_continue;
        let Ok(uri) = Uri::from_maybe_shared(head.target.clone()) else {
            self.refuse(StatusCode::BAD_REQUEST, "malformed request target\n")
                .await;
            return Next::Close;
        };
        let (body, mut pump) = match head.framing {
            Framing::None | Framing::Length(0) => (Body::Empty, None),
            Framing::Length(n) => {
                let (body, sender) = ChannelBody::new(Some(n));
                (Body::Channel(body), Some(BodyPump::new(sender, Some(n))))
            }
            Framing::Chunked => {
                let (body, sender) = ChannelBody::new(None);
                (Body::Channel(body), Some(BodyPump::new(sender, None)))
            }
        };
        // Kept to count, for the vhost the request was for, what this loop
        // answers itself about a body (100 Continue, a bad chunk); bodyless
        // requests, the common case, skip the clone.
        let host = match head.framing {
            Framing::None | Framing::Length(0) => None,
            _ => head.headers.get(header::HOST).cloned(),
        };
        let mut req = Request::new(body);
        *req.method_mut() = head.method;
        *req.uri_mut() = uri;
        *req.version_mut() = version;
        *req.headers_mut() = head.headers;
        req.extensions_mut()
            .insert(crate::session::Draining(self.drain.clone()));

        let stall = self.rt.server.idle_timeout;
        let mut sent_continue = false;
        let response = gateway::handle(&mut self.path, self.info, req);
        tokio::pin!(response);
        let mut resp = loop {
            let pumping = pump.as_ref().is_some_and(BodyPump::active);
            tokio::select! {
                resp = &mut response => break resp,
                ev = async { pump.as_mut().expect("pumping").step(&mut self.reader, &mut self.buf, stall).await }, if pumping => {
                    match ev {
                        Ok(PumpEvent::Demanded) if expect_continue => {
                            if self.writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err() {
                                return Next::Close;
                            }
                            self.vhost_metrics(host.as_ref()).response(100, Duration::ZERO);
                            sent_continue = true;
                        }
                        Ok(_) => {}
                        Err(ClientBodyError::BadChunk(why)) => {
                            tracing::debug!(peer = %self.info.peer, why, "bad chunk in request body");
                            let metrics = self.vhost_metrics(host.as_ref());
                            self.refuse_for(&metrics, StatusCode::BAD_REQUEST, "malformed chunked body\n").await;
                            return Next::Close;
                        }
                        Err(ClientBodyError::Stalled) => {
                            self.body_stalled(host.as_ref()).await;
                            return Next::Close;
                        }
                        Err(_) => return Next::Close,
                    }
                }
            }
        };

        if resp.extensions().get::<Unanswered>().is_some() {
            tracing::debug!(peer = %self.info.peer, "closed unanswered: the client tries again");
            return Next::Close;
        }
        let body_unread = pump.as_ref().is_some_and(|p| !p.complete());
        // A client still waiting for `100 Continue` has not sent its body,
        // so the body cannot be read past; the connection must close.
        let may_read_body = !expect_continue || sent_continue;
        let gateway_close = resp
            .headers()
            .get(header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        // A body the upstream dropped unread cannot be read past either.
        let abandoned = pump.as_ref().is_some_and(|p| !p.active() && !p.complete());
        let mut close = !head.keep_alive
            || gateway_close
            || self.drain.is_cancelled()
            || abandoned
            || (body_unread && !may_read_body);

        let answered_by = resp
            .extensions_mut()
            .remove::<AnsweredBy>()
            .map_or_else(|| self.rt.unrouted.clone(), |a| a.0);
        let relayed_from = resp.extensions_mut().remove::<RelayedFrom>();
        let switching = |this: &Self| {
            answered_by.response(101, started.elapsed());
            gateway::log_access(
                this.info.peer,
                method.as_str(),
                &String::from_utf8_lossy(&head.target),
                101,
                0,
                started.elapsed(),
                true,
            );
        };
        if let Some(up) = resp.extensions_mut().remove::<WsUpgrade>() {
            switching(self);
            return Next::WebSocket(resp, up);
        }
        if head.upgrade && resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            switching(self);
            return Next::Upgrade(resp);
        }
        if let Some(handoff) = resp.extensions_mut().remove::<Handoff>() {
            if let Some(p) = pump.as_mut().filter(|p| !p.complete() && may_read_body) {
                // A body on a resume is discarded (SPEC 2); it must not
                // become channel data.
                let drained = p
                    .discard(&mut self.reader, &mut self.buf, stall, MAX_DISCARD)
                    .await;
                if drained.is_err() {
                    return Next::Close;
                }
            }
            answered_by.response(resp.status().as_u16(), started.elapsed());
            return Next::Persistent(resp, handoff);
        }
        let exact = http_body::Body::size_hint(resp.body()).exact();
        let status = resp.status();
        let framing = encode::choose_framing(&method, version, status, resp.headers_mut(), exact);
        if framing == OutFraming::UntilClose {
            close = true;
        }
        let connection = if close {
            Some("close")
        } else if version == Version::HTTP_10 {
            Some("keep-alive")
        } else {
            None
        };
        // A session's down channel (SPEC 13) may stay silent for long; the
        // client's FIN or reset must detach it now, not at the next write,
        // so the connection is read while it streams.
        let watch_client = matches!(resp.body(), Body::Sse(_));
        let (parts, mut body) = resp.into_parts();
        let status = parts.status;
        let mut body_bytes: u64 = 0;
        self.out.clear();
        encode::encode_head(
            &mut self.out,
            parts.status,
            &parts.headers,
            framing,
            connection,
        );

        // Write the body while still taking the request body, if the
        // origin answered before it read all of it.
        let mut body_done = framing == OutFraming::Bodyless;
        let mut head_flushed = false;
        let mut write_failed = false;
        while !body_done {
            let pumping = may_read_body && pump.as_ref().is_some_and(BodyPump::active);
            // Bytes a client sends after its request stay for the next
            // one; beyond a head's worth the connection is not read.
            let watching =
                watch_client && !pumping && self.buf.len() < self.rt.server.max_header_bytes;
            tokio::select! {
                frame = body.frame() => match frame {
                    None => {
                        if framing == OutFraming::Chunked {
                            encode::encode_last_chunk(&mut self.out, None);
                        }
                        body_done = true;
                    }
                    Some(Err(e)) => {
                        tracing::debug!(peer = %self.info.peer, error = %e, "upstream body failed mid-way");
                        if !head_flushed && framing != OutFraming::UntilClose {
                            // Nothing went out yet: a bad chunk or a cut
                            // body is still a clean 502 (SPEC 5).
                            self.out.clear();
                            let kind = upstream_body_error_kind(&*e);
                            match &relayed_from {
                                Some(from) => from.0.count(kind),
                                None => answered_by.upstream_error(kind),
                            }
                            self.answer_and_close(&answered_by, StatusCode::BAD_GATEWAY, "the origin server sent a broken answer\n").await;
                            return Next::Close;
                        }
                        write_failed = true;
                        break;
                    }
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => {
                            body_bytes += data.len() as u64;
                            match framing {
                                OutFraming::Chunked => encode::encode_chunk(&mut self.out, &data),
                                // A big piece goes out as it is, after
                                // what is pending, in one write.
                                _ if data.len() >= DIRECT_WRITE => {
                                    if !self.flush_out_then(&data, stall).await {
                                        write_failed = true;
                                        break;
                                    }
                                    head_flushed = true;
                                }
                                _ => self.out.extend_from_slice(&data),
                            }
                        }
                        Err(frame) => {
                            if framing == OutFraming::Chunked {
                                encode::encode_last_chunk(&mut self.out, frame.trailers_ref());
                            }
                            body_done = true;
                        }
                    },
                },
                // One branch reads the client, for its body or to watch it:
                // both borrow the reader.
                ev = async {
                    if pumping {
                        Ok(pump.as_mut().expect("pumping").step(&mut self.reader, &mut self.buf, stall).await)
                    } else {
                        Err(self.reader.read_buf(&mut self.buf).await)
                    }
                }, if pumping || watching => {
                    let ev = match ev {
                        Ok(ev) => ev,
                        Err(Ok(0) | Err(_)) => {
                            write_failed = true;
                            break;
                        }
                        Err(Ok(_)) => continue,
                    };
                    if let Err(e) = ev {
                        if !head_flushed && matches!(e, ClientBodyError::BadChunk(_)) {
                            // Nothing of the answer went out yet: the
                            // client still gets its 400 (SPEC 5).
                            self.out.clear();
                            let metrics = self.vhost_metrics(host.as_ref());
                            self.refuse_for(&metrics, StatusCode::BAD_REQUEST, "malformed chunked body\n").await;
                        } else if !head_flushed && matches!(e, ClientBodyError::Stalled) {
                            self.out.clear();
                            self.body_stalled(host.as_ref()).await;
                        }
                        // Otherwise the answer has started: the only way
                        // left to say the request was bad is to close.
                        return Next::Close;
                    }
                    continue;
                }
            }
            if !self.out.is_empty() {
                if !self.flush_out(stall).await {
                    write_failed = true;
                    break;
                }
                head_flushed = true;
            }
        }
        if !self.out.is_empty() && !self.flush_out(stall).await {
            write_failed = true;
        }
        let took = started.elapsed();
        answered_by.response(status.as_u16(), took);
        gateway::log_access(
            self.info.peer,
            method.as_str(),
            &String::from_utf8_lossy(&head.target),
            status.as_u16(),
            body_bytes,
            took,
            !write_failed,
        );
        if write_failed {
            return Next::Close;
        }
        if pump.as_ref().is_some_and(|p| !p.complete()) {
            // The upstream did not take the whole body: what is left of it
            // would be read as the next request.
            close = true;
        }
        if close {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }

    /// The families of the vhost a `Host` value routes to.
    fn vhost_metrics(&self, host: Option<&HeaderValue>) -> Arc<VhostMetrics> {
        self.rt
            .routes
            .find(host.and_then(|h| h.to_str().ok()))
            .map_or_else(|| self.rt.unrouted.clone(), |v| v.metrics().clone())
    }

    /// Writes `self.out`, then `data`, with vectored writes: one system
    /// call for both when the socket takes them.
    async fn flush_out_then(&mut self, data: &[u8], stall: Duration) -> bool {
        let (out, writer) = (&self.out, &mut self.writer);
        let write = async {
            let (mut first, mut second) = (&out[..], data);
            while !first.is_empty() || !second.is_empty() {
                let bufs = [std::io::IoSlice::new(first), std::io::IoSlice::new(second)];
                let n = writer.write_vectored(&bufs).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                let from_first = n.min(first.len());
                first = &first[from_first..];
                second = &second[n - from_first..];
            }
            Ok::<(), std::io::Error>(())
        };
        let ok = within(stall, write).await;
        self.out.clear();
        ok
    }

    async fn flush_out(&mut self, stall: Duration) -> bool {
        let ok = within(stall, self.writer.write_all(&self.out)).await;
        self.out.clear();
        ok
    }

    /// A persistent answer (SPEC 2): head with `Connection: Keep-Alive`,
    /// the initial body, then the socket goes to the session. Bytes read
    /// before the head was written are discarded, never counted.
    async fn hand_over(mut self, resp: Response<Body>, handoff: Handoff) {
        let (parts, body) = resp.into_parts();
        self.out.clear();
        encode::encode_head(
            &mut self.out,
            parts.status,
            &parts.headers,
            OutFraming::Length,
            Some("Keep-Alive"),
        );
        if let Body::Full(Some(initial)) = body {
            self.out.extend_from_slice(&initial);
        }
        let stall = self.rt.server.idle_timeout;
        if !self.flush_out(stall).await {
            // The client is gone before its head: the session starts
            // detached and its grace runs.
            return;
        }
        drop(self.buf);
        let io = self.reader.unsplit(self.writer);
        handoff.attach(Box::new(io));
    }

    /// A `101` for a persistent WebSocket session: bytes read past the
    /// upgrade request are the client's first frames and go with the
    /// connection (unlike a native answer's, SPEC 3 vs SPEC 2).
    async fn upgrade_session(mut self, resp: Response<Body>, up: WsUpgrade) {
        let (parts, _) = resp.into_parts();
        self.out.clear();
        encode::encode_head(
            &mut self.out,
            parts.status,
            &parts.headers,
            OutFraming::Bodyless,
            Some("Upgrade"),
        );
        let stall = self.rt.server.idle_timeout;
        if !self.flush_out(stall).await {
            return;
        }
        let io = self.reader.unsplit(self.writer);
        tokio::spawn(websocket::run(Box::new(io), self.buf, up));
    }

    /// After a `101` from the origin: write it, then relay bytes both ways.
    /// Only the sockets and unread bytes go on: the connection's `Runtime`
    /// (a whole config load) is released, so that a WebSocket relayed for
    /// hours does not keep old configurations alive across reloads.
    async fn relay_upgrade(self, resp: Response<Body>) {
        // Dropped now, not when the relay ends: a field left out of the
        // pattern would live as long as the function.
        let Http1Conn {
            reader,
            mut writer,
            buf,
            out,
            rt,
            path,
            drain,
            ..
        } = self;
        drop((out, rt, path, drain));
        let (mut parts, body) = resp.into_parts();
        // The relayed connection keeps its place under
        // `max_upstream_connections` for as long as it lives.
        let Body::Upstream(answer) = body else {
            return;
        };
        let Some((mut upstream, first, _permit)) = answer.into_upgraded() else {
            return;
        };
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        let mut head = Vec::new();
        encode::encode_head(
            &mut head,
            parts.status,
            &parts.headers,
            OutFraming::Bodyless,
            Some("upgrade"),
        );
        // What the origin sent right after its `101` is already the new
        // protocol: it follows the head.
        head.extend_from_slice(&first);
        // The answer's fields and buffers are not kept for the relay's
        // lifetime (hours, for a WebSocket): 1 KiB per idle relay.
        drop((parts, first));
        let written = writer.write_all(&head).await;
        drop(head);
        if written.is_err() {
            return;
        }
        let mut client = reader.unsplit(writer);
        if !buf.is_empty() && upstream.write_all(&buf).await.is_err() {
            return;
        }
        drop(buf);
        let _ = super::relay::relay(&mut client, &mut upstream).await;
    }
}

/// Whether `write` finishes within `stall`. The timer is set only when
/// the first try does not finish: most writes go out at once, and then
/// even the clock is not read.
async fn within<F>(stall: Duration, write: F) -> bool
where
    F: std::future::Future<Output = std::io::Result<()>>,
{
    let mut write = std::pin::pin!(write);
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(write.as_mut().poll(cx))).await;
    match first {
        std::task::Poll::Ready(done) => done.is_ok(),
        std::task::Poll::Pending => matches!(tokio::time::timeout(stall, write).await, Ok(Ok(()))),
    }
}

/// The `kind` of an upstream body that failed before any byte of its
/// answer was written: a framing error is `protocol`, a cut is `reset`.
fn upstream_body_error_kind(e: &(dyn std::error::Error + 'static)) -> UpstreamKind {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput => {
                    UpstreamKind::Protocol
                }
                _ => UpstreamKind::Reset,
            };
        }
        source = err.source();
    }
    UpstreamKind::Reset
}
