//! The HTTP transport of persistent sessions (SPEC 13), for browsers whose
//! network refuses WebSocket upgrades: a down channel of Server-Sent Events
//! (`GET` with `Accept: text/event-stream`) and an up channel of `POST`s
//! that carry `Session-Sent`.
//!
//! The down channel is one more client link ([`SseLink`]): it opens or
//! resumes through the same `open_session` / `resume_session` as the
//! other transports and attaches with `Command::Attach`, so takeover,
//! replay and detach are the session task's, not this module's. The
//! link writes its events into a small pipe whose other end is the
//! answer's body ([`SseBody`]), so the same code serves HTTP/1.1 (the
//! connection's own loop writes it chunked) and HTTP/2 (hyper streams it);
//! the end of the answer, or of its connection, drops the body, which the
//! link reports as the client gone (detach).
//!
//! The up channel is a `Command::Post` to the session task, which takes a
//! POST's lines by count (SPEC 13: exactly once) through the same delivery
//! path, rate gate and worker backpressure as a link's lines.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tether_wire::{accepts_persistent, encode_open, parse_session_received, SessionId};
use tokio::sync::oneshot;
use tokio::time::Sleep;

use super::end::{Closing, EndReason};
use super::link::{ClientRead, Link, NotUtf8};
use super::task::{Command, Posted};
use super::websocket::{close_for, CloseWith, NOT_UTF8};
use super::{
    absent, open_session, origin_refusal, resume_session, session_received, PersistentRoute,
    SessionEnv, Transport, VhostScope,
};
use crate::body::Body;
use crate::exchange::{text_response, ConnInfo};
use crate::headers;
use crate::metrics::ResumeResult;

/// The down channel's capability (SPEC 13: it stands in for the
/// persistent media type, so a `GET` with it is never a `406`).
const EVENT_STREAM: &str = "text/event-stream";
/// A comment goes down after this much silence, so that proxies keep the
/// stream open (SPEC 13).
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Bytes in the pipe toward the answer body beyond which the link stops
/// moving events into it: with hyper's own buffer and the socket's, what a
/// client that does not read makes the gateway hold, and what the write
/// stall of the session task then notices.
const PIPE_HIGH: usize = 16 * 1024;

pub(crate) static SESSION_SENT: HeaderName = HeaderName::from_static("session-sent");
pub(crate) static SESSION_ACK: HeaderName = HeaderName::from_static("session-ack");

/// Whether `req` opens or resumes a down channel: a `GET` that accepts
/// `text/event-stream` and not the persistent media type (which would make
/// it a native request).
pub(crate) fn is_down(req: &Request<Body>, accept: &[String]) -> bool {
    if req.method() != Method::GET {
        return false;
    }
    let values: Vec<&[u8]> = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    accepts_persistent(&values, &[EVENT_STREAM.to_owned()]) && !accepts_persistent(&values, accept)
}

/// Whether `req` is an up channel POST (recognised by `Session-Sent`).
pub(crate) fn is_up(req: &Request<Body>) -> bool {
    req.method() == Method::POST && req.headers().contains_key(&SESSION_SENT)
}

// ------------------------------------------------------------ the pipe

/// Between the link (in the session task) and the answer body (in the
/// connection's task): bytes of events, and who has left.
#[derive(Default)]
struct Pipe {
    buf: BytesMut,
    /// The link wrote its last event (or was dropped): the body ends once
    /// `buf` is taken.
    writer_done: bool,
    /// The body was dropped: the answer or its connection ended.
    reader_gone: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

fn wake(w: &mut Option<Waker>) {
    if let Some(w) = w.take() {
        w.wake();
    }
}

fn lock(p: &Mutex<Pipe>) -> std::sync::MutexGuard<'_, Pipe> {
    // A panic while holding it loses nothing worth refusing the rest for.
    p.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The server's drain (SIGTERM, upgrade), put in a request's extensions by
/// the connection that read it.
#[derive(Clone)]
pub(crate) struct Draining(pub(crate) tokio_util::sync::CancellationToken);

/// The down channel's answer body.
pub(crate) struct SseBody {
    pipe: Arc<Mutex<Pipe>>,
    /// Fires when the server drains. The down channel is an answer in
    /// flight that the drain would wait for, and it cannot move to a new
    /// process with its session: it ends at once with `1012 shutdown`
    /// (the WebSocket close of SPEC 8 and 10), and the client resumes.
    drain: Option<Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>>,
    done: bool,
}

/// The last event of a down channel the server drains.
const SHUTDOWN_EVENT: &[u8] = b"event: error\ndata: 1012 shutdown\n\n";

impl crate::body::EventSource for SseBody {
    fn poll_events(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(drain) = &mut self.drain {
            if drain.as_mut().poll(cx).is_ready() {
                // What the pipe holds is whole events; they go first (with
                // the link's own last event, if it wrote one: then that
                // one is the last).
                self.done = true;
                let mut p = lock(&self.pipe);
                let mut data = p.buf.split();
                p.buf = BytesMut::new();
                if !p.writer_done {
                    data.extend_from_slice(SHUTDOWN_EVENT);
                }
                return Poll::Ready(Some(data.freeze()));
            }
        }
        let mut p = lock(&self.pipe);
        if !p.buf.is_empty() {
            let data = p.buf.split().freeze();
            p.buf = BytesMut::new();
            wake(&mut p.writer);
            return Poll::Ready(Some(data));
        }
        if p.writer_done {
            return Poll::Ready(None);
        }
        p.reader = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        let mut p = lock(&self.pipe);
        p.reader_gone = true;
        wake(&mut p.writer);
    }
}

// ------------------------------------------------------------ the link

/// The down channel as a client link: lines out as `data:` events, nothing
/// in (the up channel is not a link: its POSTs go to the session task
/// whether or not a down channel is attached).
pub(crate) struct SseLink {
    pipe: Arc<Mutex<Pipe>>,
    /// Events not yet moved into the pipe.
    out: BytesMut,
    /// Why this link broke its session (a line a browser cannot take).
    failure: Option<CloseWith>,
    /// The final event is queued.
    finished: bool,
    silence: Pin<Box<Sleep>>,
}

impl SseLink {
    fn new(drain: Option<&Draining>) -> (SseLink, SseBody) {
        let pipe = Arc::new(Mutex::new(Pipe::default()));
        let link = SseLink {
            pipe: pipe.clone(),
            out: BytesMut::new(),
            failure: None,
            finished: false,
            silence: Box::pin(tokio::time::sleep(KEEPALIVE)),
        };
        let body = SseBody {
            pipe,
            drain: drain.map(|d| Box::pin(d.0.clone().cancelled_owned())),
            done: false,
        };
        (link, body)
    }

    pub(crate) fn pending(&self) -> usize {
        self.out.len()
    }

    fn event(&mut self, name: Option<&str>, data: &[u8]) {
        if let Some(name) = name {
            self.out.put_slice(b"event: ");
            self.out.put_slice(name.as_bytes());
            self.out.put_u8(b'\n');
        }
        self.out.put_slice(b"data: ");
        self.out.put_slice(data);
        self.out.put_slice(b"\n\n");
        let next = tokio::time::Instant::now() + KEEPALIVE;
        self.silence.as_mut().reset(next);
    }

    /// Queues a channel line as one `data:` event holding the line without
    /// its LF as a JSON string (a CR inside the line survives SSE parsing).
    pub(crate) fn queue_line(&mut self, line: &[u8]) -> Result<(), NotUtf8> {
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        if std::str::from_utf8(text).is_err() {
            self.failure = Some(NOT_UTF8);
            return Err(NotUtf8);
        }
        let json = json_string(text);
        self.event(None, &json);
        Ok(())
    }

    pub(crate) fn poll_line(&mut self, cx: &mut Context<'_>) -> Poll<ClientRead> {
        let mut p = lock(&self.pipe);
        if p.reader_gone {
            return Poll::Ready(ClientRead::Gone);
        }
        p.writer = Some(cx.waker().clone());
        Poll::Pending
    }

    pub(crate) fn poll_write_some(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut p = lock(&self.pipe);
        if p.reader_gone {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if p.buf.len() >= PIPE_HIGH {
            p.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        p.buf.unsplit(self.out.split());
        self.out = BytesMut::new();
        wake(&mut p.reader);
        Poll::Ready(Ok(()))
    }

    /// A `:` comment after 15 s of silence; the down channel's liveness is
    /// its answer's (a dropped body detaches) and the write stall's.
    pub(crate) fn poll_dead(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while self.silence.as_mut().poll(cx).is_ready() {
            self.out.put_slice(b":\n\n");
            let next = tokio::time::Instant::now() + KEEPALIVE;
            self.silence.as_mut().reset(next);
        }
        Poll::Pending
    }

    /// The last event: `end` for a normal end, else `error` with the
    /// WebSocket close code and reason of SPEC 3 (4409 on takeover).
    fn queue_final(&mut self, why: Closing) {
        if self.finished {
            return;
        }
        self.finished = true;
        let (code, reason) = close_for(why, self.failure);
        if code == super::websocket::frame::CLOSE_NORMAL {
            self.event(Some("end"), reason.as_bytes());
        } else {
            self.event(Some("error"), format!("{code} {reason}").as_bytes());
        }
    }

    /// Every queued line, the last event, then the end of the answer.
    pub(crate) fn poll_finish(
        &mut self,
        cx: &mut Context<'_>,
        why: Closing,
    ) -> Poll<io::Result<()>> {
        self.queue_final(why);
        while !self.out.is_empty() {
            std::task::ready!(self.poll_write_some(cx))?;
        }
        self.end();
        Poll::Ready(Ok(()))
    }

    /// Moves what is queued (the hello, the initial body) into the answer
    /// body before the link joins its session, as a WebSocket flushes its
    /// open record first: an abort that drops unsent lines must never drop
    /// these.
    fn commit(&mut self) {
        let mut p = lock(&self.pipe);
        p.buf.unsplit(self.out.split());
        self.out = BytesMut::new();
    }

    /// Closes now (takeover, errors): unsent lines are not owed to an
    /// answer that ends, the last event goes whatever the pipe holds.
    pub(crate) fn abort(mut self, why: Closing) {
        self.out.clear();
        self.queue_final(why);
        self.close_now();
    }

    /// Everything queued goes into the pipe whatever it holds, then the
    /// answer ends.
    fn close_now(mut self) {
        let mut p = lock(&self.pipe);
        if !p.reader_gone {
            p.buf.unsplit(self.out.split());
        }
        drop(p);
        self.end();
    }

    fn end(&mut self) {
        let mut p = lock(&self.pipe);
        p.writer_done = true;
        wake(&mut p.reader);
    }
}

impl Drop for SseLink {
    fn drop(&mut self) {
        self.end();
    }
}

/// `text` (UTF-8) as a JSON string: quotes, backslashes and control
/// characters escaped, the rest as is.
fn json_string(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 2);
    out.push(b'"');
    for &b in text {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f | 0x7f => {
                let _ = std::io::Write::write_fmt(&mut out, format_args!("\\u{b:04x}"));
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
    out
}

// ------------------------------------------------------------ down channel

/// The down channel's answer: `200` with the events already queued.
fn stream_answer(body: SseBody) -> Response<Body> {
    let mut resp = Response::new(Body::Sse(Box::new(body)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // nginx in front of tether would otherwise buffer the stream.
    h.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    resp
}

/// Answers a down channel `GET`: a resume with `SessionID` and
/// `Session-Received`, else a new session (SPEC 2 order; the Origin rule
/// of SPEC 3).
pub(crate) async fn down(
    env: &SessionEnv,
    vhost: &Arc<VhostScope>,
    route: &PersistentRoute,
    conn: ConnInfo,
    req: Request<Body>,
) -> Response<Body> {
    let metrics = &vhost.metrics;
    let sid = req.headers().get(&headers::SESSION_ID).cloned();
    let drain = req.extensions().get::<Draining>().cloned();
    if let Some(refusal) = origin_refusal(req.headers(), &route.config, conn) {
        if sid.is_some() {
            metrics.resume(ResumeResult::BadRequest);
        }
        return refusal;
    }
    if let Some(sid) = sid {
        let received = match session_received(req.headers(), metrics) {
            Ok(n) => n,
            Err(refusal) => return *refusal,
        };
        let started = std::time::Instant::now();
        let Some((handle, resumed)) = resume_session(env, vhost, sid.as_bytes(), received).await
        else {
            return absent(env);
        };
        metrics.resume_took(started.elapsed());
        let (mut link, body) = SseLink::new(drain.as_ref());
        link.event(
            Some("session"),
            &encode_open(&handle.id, resumed.delivered, 200, 0),
        );
        link.commit();
        let _ = handle.mailbox.send(Command::Attach {
            gen: resumed.gen,
            link: Box::new(Link::Sse(link)),
        });
        return stream_answer(body);
    }
    // The worker cannot tell the transport (SPEC 13): it sees the Accept
    // of a native open, not the event stream's.
    let mut req = req;
    if let Some(accept) = route.config.accept.first() {
        if let Ok(value) = HeaderValue::from_str(accept) {
            req.headers_mut().insert(header::ACCEPT, value);
        }
    }
    let opened = match open_session(env, vhost, route, conn, req, Transport::Http).await {
        Ok(opened) => opened,
        Err(not) => return not.into_response(),
    };
    let handle = opened.handle;
    let (mut link, body) = SseLink::new(drain.as_ref());
    let initial = opened.initial;
    link.event(
        Some("session"),
        &encode_open(&handle.id, 0, opened.status.as_u16(), initial.len() as u64),
    );
    if !initial.is_empty() {
        if std::str::from_utf8(&initial).is_err() {
            // As for WebSocket: a browser cannot take it (4502 not utf-8).
            let _ = handle.mailbox.send(Command::Fail(EndReason::ProtocolError));
            // The hello stays: the client learns its session, then why it
            // ended.
            link.failure = Some(NOT_UTF8);
            link.queue_final(Closing::Ended(EndReason::ProtocolError));
            link.close_now();
            return stream_answer(body);
        }
        link.event(Some("initial"), &json_string(&initial));
    }
    link.commit();
    // Attached before the head is written: the first events wait in the
    // pipe, and a client gone before the head drops the body (detach).
    let _ = handle.mailbox.send(Command::Attach {
        gen: 0,
        link: Box::new(Link::Sse(link)),
    });
    stream_answer(body)
}

// ------------------------------------------------------------ up channel

fn counted(status: StatusCode, received: u64) -> Response<Body> {
    let mut resp = Response::new(Body::Empty);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(&headers::SESSION_RECEIVED, HeaderValue::from(received));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status != StatusCode::NO_CONTENT {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    }
    resp
}

fn count_header(h: &HeaderMap, name: &HeaderName) -> Result<Option<u64>, ()> {
    let mut values = h.get_all(name).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(());
    }
    parse_session_received(v.as_bytes())
        .map(Some)
        .map_err(|_| ())
}

/// Answers an up channel `POST`: its lines are taken by count (SPEC 13).
pub(crate) async fn up(
    env: &SessionEnv,
    vhost: &Arc<VhostScope>,
    route: &PersistentRoute,
    conn: ConnInfo,
    req: Request<Body>,
) -> Response<Body> {
    let config = &route.config;
    if let Some(refusal) = origin_refusal(req.headers(), config, conn) {
        return refusal;
    }
    let h = req.headers();
    let (Some(sid), Ok(Some(sent)), Ok(ack)) = (
        h.get(&headers::SESSION_ID).cloned(),
        count_header(h, &SESSION_SENT),
        count_header(h, &SESSION_ACK),
    ) else {
        return text_response(
            StatusCode::BAD_REQUEST,
            "a POST of lines needs SessionID, Session-Sent and at most one Session-Ack, as counts\n",
        );
    };
    let Some(handle) = (match SessionId::parse(sid.as_bytes()) {
        Ok(id) => env.sessions.find_or_wait(&id, vhost).await,
        Err(_) => None,
    }) else {
        return absent(env);
    };
    // A POST holds at most a backlog's worth of lines: the session's memory
    // stays bounded by its config, whatever the client sends.
    let limit = config.detached_backlog.max(config.max_line);
    let body = match http_body_util::Limited::new(req.into_body(), limit)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return text_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too many lines in one POST; send them in several\n",
            )
        }
        Err(_) => return text_response(StatusCode::BAD_REQUEST, "the body did not arrive whole\n"),
    };
    let Some(split) = tether_wire::split_lines(&body) else {
        return text_response(
            StatusCode::BAD_REQUEST,
            "a POST carries whole lines: its body must end with LF\n",
        );
    };
    let lines: Vec<Bytes> = split.map(|l| body.slice_ref(l)).collect();
    if lines.iter().any(|l| l.len() > config.max_line) {
        // As on the other transports, a line over max_line ends the session.
        let _ = handle.mailbox.send(Command::Fail(EndReason::LineTooLong));
        return text_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "a line is longer than max_line; the session has ended\n",
        );
    }
    let (reply, answer) = oneshot::channel();
    let cmd = Command::Post {
        sent,
        lines,
        ack,
        reply,
    };
    if handle.mailbox.send(cmd).is_err() {
        return absent(env);
    }
    match answer.await {
        Ok(Posted::Taken(d)) => counted(StatusCode::NO_CONTENT, d),
        Ok(Posted::Gap(d)) => counted(StatusCode::CONFLICT, d),
        Ok(Posted::Busy) => {
            let mut resp = text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many POSTs waiting for this session; try again soon\n",
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            resp
        }
        // The session ended, or left in an upgrade, before it answered.
        Err(_) => absent(env),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_keep_cr_quotes_and_utf8() {
        assert_eq!(json_string(b"a\rb"), b"\"a\\rb\"");
        assert_eq!(json_string(b"\"\\\t"), b"\"\\\"\\\\\\t\"");
        assert_eq!(json_string(b"\x01\x7f"), b"\"\\u0001\\u007f\"");
        assert_eq!(json_string("é€".as_bytes()), "\"é€\"".as_bytes());
    }

    #[tokio::test]
    async fn a_dropped_body_is_a_client_gone_and_takeover_says_4409() {
        let (mut link, body) = SseLink::new(None);
        assert!(link.queue_line(b"x\n").is_ok());
        drop(body);
        let read = std::future::poll_fn(|cx| Poll::Ready(link.poll_line(cx))).await;
        assert!(matches!(read, Poll::Ready(ClientRead::Gone)));

        let (link, mut body) = SseLink::new(None);
        link.abort(Closing::TakenOver);
        let mut got = Vec::new();
        while let Some(d) =
            std::future::poll_fn(|cx| crate::body::EventSource::poll_events(&mut body, cx)).await
        {
            got.extend_from_slice(&d);
        }
        assert_eq!(got, b"event: error\ndata: 4409 taken over\n\n");
    }
}
