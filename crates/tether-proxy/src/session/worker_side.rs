//! The worker side of a session, whatever the mode (SPEC 2, SPEC 6). The
//! session task only asks it for worker lines and gives it client lines:
//!
//! - stream mode keeps the worker's connection as a line channel;
//! - message mode turns client lines into `POST`s to the pinned worker
//!   (`Session-Event: message`), one in flight at a time, and reads the
//!   lines of each answer.

use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response};
use http_body::Body as _;
use tether_wire::LineReader;
use tokio::io::{AsyncRead, AsyncWrite};

use super::balance::Worker;
use super::handover::{self, WorkerState};
use super::link::poll_read_lines;
use crate::body::Body;
use crate::config::OriginUrl;
use crate::forward::{UpstreamError, Upstreams};
use crate::metrics::VhostMetrics;

/// The first pause before a request the worker did not take is tried
/// again, and the longest (SPEC 6).
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Client lines queued for the worker before the task stops reading the
/// client.
const TO_WORKER_HIGH: usize = 64 * 1024;

static SESSION_EVENT: HeaderName = HeaderName::from_static("session-event");

/// Why the worker side is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WorkerGone {
    /// Stream mode: the worker closed or reset its connection.
    Closed,
    /// Message mode: a 2xx answer with `Session-Event: close`, its lines
    /// all returned.
    Ended,
    /// Message mode: the client ended the session and the request that
    /// was in flight then has been answered, its lines all returned.
    Drained,
    /// Message mode: a non-2xx answer.
    Status(u16),
    /// Message mode: the worker could not be reached.
    Unreachable,
    /// A worker line over `max_line`.
    LineTooLong,
}

pub(crate) enum WorkerSide {
    Stream(StreamSide),
    Message(MessageSide),
}

impl WorkerSide {
    /// The side as it moves on upgrade (SPEC 10), with the worker socket
    /// in stream mode; itself back while a message request is on its way
    /// (it completes here first) or when the socket cannot move.
    pub(crate) fn export(self) -> Result<(WorkerState, Option<OwnedFd>), Box<WorkerSide>> {
        match self {
            WorkerSide::Stream(mut s) => {
                let Some(fd) = s.stream.socket().and_then(|f| f.try_clone_to_owned().ok()) else {
                    return Err(Box::new(WorkerSide::Stream(s)));
                };
                let state = WorkerState::Stream {
                    input: s.input.buffer_mut().to_vec(),
                    out: s.out.to_vec(),
                    eof: s.eof,
                };
                Ok((state, Some(fd)))
            }
            WorkerSide::Message(mut m) => {
                if m.busy() || m.gone.is_some() {
                    return Err(Box::new(WorkerSide::Message(m)));
                }
                let state = WorkerState::Message {
                    queued: m.queued.to_vec(),
                    input: m.input.buffer_mut().to_vec(),
                    winding_down: m.winding_down,
                };
                Ok((state, None))
            }
        }
    }

    /// Whether [`WorkerSide::export`] would take the side now.
    pub(crate) fn can_move(&self) -> bool {
        match self {
            WorkerSide::Stream(_) => true,
            WorkerSide::Message(m) => !m.busy() && m.gone.is_none(),
        }
    }

    /// The next whole worker line (LF included). After `Err` the side is
    /// over; whole lines that came before it were all returned first.
    pub(crate) fn poll_line(&mut self, cx: &mut Context<'_>) -> Poll<Result<Bytes, WorkerGone>> {
        match self {
            WorkerSide::Stream(s) => s.poll_line(cx),
            WorkerSide::Message(m) => m.poll_line(cx),
        }
    }

    /// Whether more client lines may be queued now (backpressure).
    pub(crate) fn can_take(&self) -> bool {
        match self {
            WorkerSide::Stream(s) => s.out.len() < TO_WORKER_HIGH,
            WorkerSide::Message(m) => m.queued.len() < m.max_queued,
        }
    }

    /// Queues one client line: from here it is delivered (SPEC 4).
    pub(crate) fn deliver(&mut self, line: &[u8]) {
        match self {
            WorkerSide::Stream(s) => s.out.extend_from_slice(line),
            WorkerSide::Message(m) => m.queued.extend_from_slice(line),
        }
    }

    /// Moves queued client lines on; `Ok(true)` if anything moved.
    pub(crate) fn poll_send(&mut self, cx: &mut Context<'_>) -> Result<bool, WorkerGone> {
        match self {
            WorkerSide::Stream(s) => s.poll_send(cx),
            // Message mode sends from `poll_line`, which also reads the
            // answers: one request in flight per session.
            WorkerSide::Message(_) => Ok(false),
        }
    }
}

/// A stream-mode worker connection: TCP in the gateway, an in-memory pipe
/// in the session task's tests. Boxed, so a session pays one pointer and
/// one small allocation for not knowing which.
pub(crate) trait WorkerIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// The socket, which moves to the new process on upgrade (SPEC 10).
    fn socket(&self) -> Option<std::os::fd::BorrowedFd<'_>>;
}

impl WorkerIo for tokio::net::TcpStream {
    fn socket(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        Some(std::os::fd::AsFd::as_fd(self))
    }
}

/// In-memory pipes stand for worker sockets in tests.
#[cfg(test)]
impl WorkerIo for tokio::io::DuplexStream {
    fn socket(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
}

/// Stream mode: the worker's connection after its persistent answer.
pub(crate) struct StreamSide {
    stream: Box<dyn WorkerIo>,
    input: LineReader,
    out: BytesMut,
    eof: bool,
}

impl StreamSide {
    /// A stream side moved here from another process, on `socket`.
    pub(crate) fn restore(
        socket: tokio::net::TcpStream,
        input: &[u8],
        out: &[u8],
        eof: bool,
        max_line: usize,
    ) -> StreamSide {
        let mut side = StreamSide::new(Box::new(socket), input, max_line);
        side.out.extend_from_slice(out);
        side.eof = eof;
        side
    }

    /// `leftover`: worker bytes read past the initial body.
    pub(crate) fn new(stream: Box<dyn WorkerIo>, leftover: &[u8], max_line: usize) -> StreamSide {
        let mut input = LineReader::new(max_line);
        input.push(leftover);
        StreamSide {
            stream,
            input,
            out: BytesMut::new(),
            eof: false,
        }
    }

    fn poll_line(&mut self, cx: &mut Context<'_>) -> Poll<Result<Bytes, WorkerGone>> {
        loop {
            match self.input.next_line() {
                Ok(Some(line)) => return Poll::Ready(Ok(line)),
                Ok(None) => {}
                Err(_) => return Poll::Ready(Err(WorkerGone::LineTooLong)),
            }
            if self.eof {
                return Poll::Ready(Err(WorkerGone::Closed));
            }
            match poll_read_lines(&mut self.stream, cx, &mut self.input) {
                Poll::Ready(Ok(n)) if n > 0 => {}
                Poll::Ready(_) => {
                    // Bytes after the worker's last LF are not a line.
                    self.input.discard_partial();
                    self.input.shrink();
                    self.eof = true;
                }
                Poll::Pending => {
                    self.input.shrink();
                    return Poll::Pending;
                }
            }
        }
    }

    fn poll_send(&mut self, cx: &mut Context<'_>) -> Result<bool, WorkerGone> {
        let mut moved = false;
        while !self.out.is_empty() {
            match Pin::new(&mut self.stream).poll_write(cx, &self.out) {
                Poll::Ready(Ok(n)) if n > 0 => {
                    self.out.advance(n);
                    moved = true;
                }
                Poll::Ready(_) => return Err(WorkerGone::Closed),
                Poll::Pending => return Ok(moved),
            }
        }
        if self.out.capacity() > 0 {
            self.out = BytesMut::new();
        }
        Ok(moved)
    }
}

/// Where a message-mode session's requests go, and what they carry.
pub(crate) struct MessageTarget {
    pub(crate) upstreams: Upstreams,
    pub(crate) worker: OriginUrl,
    /// The pinned worker's health, marked down when it refuses (SPEC 7).
    pub(crate) health: Arc<Worker>,
    /// `worker_retry`.
    pub(crate) retry: Duration,
    pub(crate) metrics: Arc<VhostMetrics>,
    /// Path and query of the opening request.
    pub(crate) target: String,
    /// The opening request's end-to-end fields (Host, cookies, ...), its
    /// forwarding fields and `SessionID`; not its body's fields.
    pub(crate) headers: HeaderMap,
    /// `message_format = "form"`: one line per request, without its LF,
    /// as a form body (SPEC 12).
    pub(crate) form: bool,
}

impl MessageTarget {
    /// The fields a message-mode request keeps from the opening one
    /// (SPEC 6): all but the body's own, which each request sets.
    pub(crate) fn template(mut headers: HeaderMap) -> HeaderMap {
        for name in [
            header::CONTENT_LENGTH,
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
            header::TRANSFER_ENCODING,
            header::EXPECT,
        ] {
            headers.remove(name);
        }
        headers
    }

    /// Where requests go, as it moves on upgrade.
    pub(crate) fn export(&self) -> handover::MessageTarget {
        handover::MessageTarget {
            form: self.form,
            target: self.target.clone(),
            headers: self
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    /// The fields of a moved target; `None` if one is not a valid field.
    pub(crate) fn restore_headers(fields: &[(String, Vec<u8>)]) -> Option<HeaderMap> {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).ok()?,
                HeaderValue::from_bytes(value).ok()?,
            );
        }
        Some(headers)
    }

    fn request(&self, event: &'static str, body: Bytes) -> Request<Body> {
        let mut req = Request::new(if body.is_empty() {
            Body::Empty
        } else {
            Body::full(body)
        });
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self
            .target
            .parse()
            .unwrap_or_else(|_| "/".parse().expect("a path"));
        let h = req.headers_mut();
        *h = self.headers.clone();
        h.insert(&SESSION_EVENT, HeaderValue::from_static(event));
        if event == "message" {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(if self.form {
                    "application/x-www-form-urlencoded"
                } else {
                    "text/plain; charset=utf-8"
                }),
            );
        }
        req
    }

    /// Sends one request, again and again while the worker does not take
    /// the connection, for up to `worker_retry` (SPEC 6): a restarting
    /// Apache costs a wait, not the session. A request that may have been
    /// written is never sent twice, since the worker may have acted on it.
    /// An upstream error is counted once per request, however many tries
    /// it took (SPEC 9).
    async fn send(
        &self,
        event: &'static str,
        body: Bytes,
    ) -> Result<Response<Body>, UpstreamError> {
        let started = tokio::time::Instant::now();
        let give_up = started + self.retry;
        let mut pause = RETRY_FIRST;
        let mut counted = false;
        loop {
            let req = self.request(event, body.clone());
            let failed = match self.upstreams.send_once(&self.worker, req).await {
                Ok(resp) => {
                    self.metrics.message_request_took(started.elapsed());
                    return Ok(resp);
                }
                Err(f) => f,
            };
            if !counted {
                counted = true;
                if let Some(kind) = failed.kind.metric_kind() {
                    self.health.errors.count(kind);
                }
            }
            if !failed.unsent {
                tracing::warn!(worker = %self.worker.as_written, event, kind = failed.kind.as_str(), "worker failed a request it may have received; not sent again");
                return Err(failed.kind);
            }
            self.health.mark_down();
            let now = tokio::time::Instant::now();
            if now >= give_up {
                tracing::warn!(worker = %self.worker.as_written, event, "worker unreachable for worker_retry");
                return Err(failed.kind);
            }
            // The last try is at `worker_retry`, so that the wait is as
            // long as configured, not cut short by the doubling.
            tracing::debug!(worker = %self.worker.as_written, event, ?pause, "worker refused; retrying");
            tokio::time::sleep(pause.min(give_up - now)).await;
            pause = (pause * 2).min(RETRY_MAX);
        }
    }

    /// `Session-Event: close`, once, whatever ended the session (the
    /// worker's own `Session-Event: close` too: the script's clean-up has
    /// one place to run); its answer is ignored. A message request still
    /// in flight is let finish first (up to `origin_response_timeout`):
    /// dropping it could stop the script halfway, and the close event
    /// must not overtake it.
    pub(crate) fn send_close(self: Arc<Self>, unfinished: Option<Unfinished>) {
        tokio::spawn(async move {
            if let Some(unfinished) = unfinished {
                let limit = self.upstreams.response_timeout();
                let _ = tokio::time::timeout(limit, async {
                    let body = match unfinished {
                        Unfinished::Request(pending) => match pending.await {
                            Ok(resp) => resp.into_body(),
                            Err(_) => return,
                        },
                        Unfinished::Answer(body) => body,
                    };
                    drain(body).await;
                })
                .await;
            }
            if let Ok(resp) = self.send("close", Bytes::new()).await {
                drain(resp.into_body()).await;
            }
        });
    }
}

/// Reads a body to its end, for the connection's sake.
async fn drain(mut body: Body) {
    while let Some(Ok(_)) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {}
}

type Pending = Pin<Box<dyn Future<Output = Result<Response<Body>, UpstreamError>> + Send>>;

/// A message request that was still on its way when the session ended.
pub(crate) enum Unfinished {
    Request(Pending),
    Answer(Body),
}

/// Message mode: client lines become `POST`s; answers' lines come back.
pub(crate) struct MessageSide {
    target: Arc<MessageTarget>,
    /// Client lines for the next request.
    queued: BytesMut,
    /// `detached_backlog`: client lines waiting for a restarting worker
    /// are held up to this, then the client is read more slowly.
    max_queued: usize,
    /// The answer being read said `Session-Event: close`.
    closing: bool,
    /// The client ended the session: no request after the one in flight.
    winding_down: bool,
    in_flight: Option<Pending>,
    /// The body of a 2xx answer being read.
    answer: Option<Body>,
    input: LineReader,
    gone: Option<WorkerGone>,
}

impl MessageSide {
    /// A message side moved here from another process, between requests.
    pub(crate) fn restore(
        target: Arc<MessageTarget>,
        (queued, input, winding_down): (&[u8], &[u8], bool),
        max_line: usize,
        max_queued: usize,
    ) -> MessageSide {
        let mut side = MessageSide::new(target, max_line, max_queued);
        side.queued.extend_from_slice(queued);
        side.input.push(input);
        side.winding_down = winding_down;
        side
    }

    pub(crate) fn new(
        target: Arc<MessageTarget>,
        max_line: usize,
        max_queued: usize,
    ) -> MessageSide {
        MessageSide {
            target,
            queued: BytesMut::new(),
            max_queued,
            closing: false,
            winding_down: false,
            in_flight: None,
            answer: None,
            input: LineReader::new(max_line),
            gone: None,
        }
    }

    /// A request is in flight or its answer is being read.
    pub(crate) fn busy(&self) -> bool {
        self.in_flight.is_some() || self.answer.is_some()
    }

    /// The client ended the session (SPEC 6): client lines not yet sent
    /// are discarded, and the side ends ([`WorkerGone::Drained`]) once the
    /// answer in flight has given its lines.
    pub(crate) fn wind_down(&mut self) {
        self.queued = BytesMut::new();
        self.winding_down = true;
    }

    /// What is still on its way, for [`MessageTarget::send_close`].
    pub(crate) fn unfinished(self) -> Option<Unfinished> {
        if let Some(body) = self.answer {
            return Some(Unfinished::Answer(body));
        }
        self.in_flight.map(Unfinished::Request)
    }

    fn poll_line(&mut self, cx: &mut Context<'_>) -> Poll<Result<Bytes, WorkerGone>> {
        loop {
            match self.input.next_line() {
                Ok(Some(line)) => return Poll::Ready(Ok(line)),
                Ok(None) => {}
                Err(_) => return Poll::Ready(Err(WorkerGone::LineTooLong)),
            }
            if let Some(gone) = self.gone {
                return Poll::Ready(Err(gone));
            }
            if let Some(body) = &mut self.answer {
                match Pin::new(body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(data) = frame.data_ref() {
                            self.input.push(data);
                        }
                    }
                    Poll::Ready(None) => {
                        // A final line without LF gets one (SPEC 6).
                        if self.input.pending_partial() > 0 {
                            self.input.push(b"\n");
                        }
                        self.answer = None;
                        self.input.shrink();
                        if self.closing {
                            self.gone = Some(WorkerGone::Ended);
                        }
                    }
                    Poll::Ready(Some(Err(_))) => self.gone = Some(WorkerGone::Unreachable),
                    Poll::Pending => return Poll::Pending,
                }
                continue;
            }
            if let Some(pending) = &mut self.in_flight {
                match pending.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(resp)) if resp.status().is_success() => {
                        self.closing = resp
                            .headers()
                            .get(&SESSION_EVENT)
                            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                        self.answer = Some(resp.into_body());
                    }
                    // A non-2xx answer's body is discarded.
                    Poll::Ready(Ok(resp)) => {
                        self.gone = Some(WorkerGone::Status(resp.status().as_u16()))
                    }
                    Poll::Ready(Err(_)) => self.gone = Some(WorkerGone::Unreachable),
                }
                self.in_flight = None;
                continue;
            }
            if self.winding_down {
                self.gone = Some(WorkerGone::Drained);
                continue;
            }
            if self.queued.is_empty() {
                return Poll::Pending;
            }
            let batch = if self.target.form {
                // One form message per request, never batched.
                let end = self
                    .queued
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(self.queued.len(), |i| i + 1);
                let line = self.queued.split_to(end).freeze();
                if self.queued.is_empty() {
                    self.queued = BytesMut::new();
                }
                line.slice(..line.len() - usize::from(line.ends_with(b"\n")))
            } else {
                let batch = self.queued.split().freeze();
                self.queued = BytesMut::new();
                batch
            };
            let target = self.target.clone();
            self.in_flight = Some(Box::pin(async move { target.send("message", batch).await }));
        }
    }
}

#[cfg(test)]
mod tests {
    //! Message-mode requests against a scripted worker on a real socket
    //! (hyper's client needs one), in real time.

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::config::ServerConfig;
    use crate::metrics::Metrics;
    use crate::session::balance::{WorkerPin, WorkerPool, Workers};

    /// A port nothing listens on (yet).
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    struct Setup {
        side: MessageSide,
        pin: WorkerPin,
        metrics: Arc<Metrics>,
        _pool: WorkerPool,
    }

    fn setup(port: u16, retry: Duration) -> Setup {
        let url = OriginUrl {
            as_written: format!("http://127.0.0.1:{port}"),
            authority: format!("127.0.0.1:{port}"),
            host: "127.0.0.1".into(),
            port,
        };
        let pool = WorkerPool::default();
        let metrics = Arc::new(Metrics::default());
        let workers = Workers::new(
            "t.test",
            std::slice::from_ref(&url),
            &pool,
            &metrics.vhost("t.test"),
        );
        let Ok(pin) = workers.claim(&tether_wire::SessionId::from_random([1; 24]), 10) else {
            panic!("no worker");
        };
        let server = ServerConfig {
            origin_connect_timeout: Duration::from_secs(1),
            origin_response_timeout: Duration::from_secs(2),
            ..ServerConfig::default()
        };
        let target = Arc::new(MessageTarget {
            upstreams: Upstreams::new(&server, []),
            worker: url,
            health: pin.0.clone(),
            retry,
            metrics: metrics.vhost("t.test"),
            target: "/chat.pphp".into(),
            headers: HeaderMap::new(),
            form: false,
        });
        Setup {
            side: MessageSide::new(target, 1024, 64 * 1024),
            pin,
            metrics,
            _pool: pool,
        }
    }

    /// Serves `answers` requests, one per connection, each answered with
    /// `answer` (`None`: the connection is closed after the request was
    /// read, without an answer). Counts the requests read.
    async fn serve(listener: TcpListener, answer: Option<&'static str>, seen: Arc<AtomicUsize>) {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                seen.fetch_add(1, Ordering::SeqCst);
                if let Some(answer) = answer {
                    let _ = conn.write_all(answer.as_bytes()).await;
                }
            });
        }
    }

    async fn next(side: &mut MessageSide) -> Result<Bytes, WorkerGone> {
        std::future::poll_fn(|cx| side.poll_line(cx)).await
    }

    fn upstream_errors(m: &Metrics) -> String {
        m.render(&[])
            .lines()
            .filter(|l| l.starts_with("tether_upstream_errors_total{vhost=\"t.test\""))
            .collect::<Vec<_>>()
            .join("\n")
    }

    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\ngot a\n";

    #[tokio::test]
    async fn a_refused_request_waits_for_the_worker_and_goes_once() {
        let port = free_port();
        let mut s = setup(port, Duration::from_secs(10));
        s.side.queued.extend_from_slice(b"a\n");
        let seen = Arc::new(AtomicUsize::new(0));
        let later = seen.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
            serve(listener, Some(OK), later).await;
        });
        let started = Instant::now();
        assert_eq!(next(&mut s.side).await, Ok(Bytes::from_static(b"got a\n")));
        assert!(started.elapsed() >= Duration::from_millis(700));
        assert_eq!(seen.load(Ordering::SeqCst), 1, "sent once it could be");
        assert!(!s.pin.0.is_up(), "marked down at the first refusal");
        let errors = upstream_errors(&s.metrics);
        assert!(
            errors.contains("kind=\"connect\"} 1"),
            "one error for the request, whatever the tries: {errors}"
        );
        let by_worker = format!(
            "tether_upstream_errors_by_upstream_total{{vhost=\"t.test\",upstream=\"http://127.0.0.1:{port}\",kind=\"connect\"}} 1\n"
        );
        let text = s.metrics.render(&[]);
        assert!(text.contains(&by_worker), "{text}");
        assert!(
            text.contains("tether_message_request_duration_seconds_count{vhost=\"t.test\"} 1\n"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn worker_retry_bounds_the_wait_and_zero_turns_it_off() {
        let port = free_port();
        let mut s = setup(port, Duration::ZERO);
        s.side.queued.extend_from_slice(b"a\n");
        assert_eq!(next(&mut s.side).await, Err(WorkerGone::Unreachable));

        let mut s = setup(port, Duration::from_millis(1000));
        s.side.queued.extend_from_slice(b"a\n");
        let started = Instant::now();
        assert_eq!(next(&mut s.side).await, Err(WorkerGone::Unreachable));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(1000) && took < Duration::from_millis(1800),
            "the last try at worker_retry: {took:?}"
        );
        assert!(upstream_errors(&s.metrics).contains("kind=\"connect\"} 1"));
    }

    #[tokio::test]
    async fn a_written_request_is_never_sent_again() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(AtomicUsize::new(0));
        tokio::spawn(serve(listener, None, seen.clone()));
        let mut s = setup(port, Duration::from_secs(10));
        s.side.queued.extend_from_slice(b"a\n");
        assert_eq!(next(&mut s.side).await, Err(WorkerGone::Unreachable));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(seen.load(Ordering::SeqCst), 1);
        assert!(s.pin.0.is_up(), "a worker that took the connection is up");
    }

    #[tokio::test]
    async fn session_event_close_ends_the_side_after_the_answers_lines() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer =
            "HTTP/1.1 200 OK\r\nSession-Event: close\r\ntransfer-encoding: chunked\r\n\r\n\
                      4\r\none\n\r\n3\r\ntwo\r\n0\r\n\r\n";
        tokio::spawn(serve(listener, Some(answer), Arc::new(AtomicUsize::new(0))));
        let mut s = setup(port, Duration::from_secs(1));
        s.side.queued.extend_from_slice(b"bye\n");
        assert_eq!(next(&mut s.side).await, Ok(Bytes::from_static(b"one\n")));
        assert_eq!(next(&mut s.side).await, Ok(Bytes::from_static(b"two\n")));
        assert_eq!(next(&mut s.side).await, Err(WorkerGone::Ended));
    }
}
