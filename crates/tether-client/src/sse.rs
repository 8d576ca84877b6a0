//! The HTTP transport (SPEC 13) for the same sessions, with the same resume
//! logic as the others: what `tether connect --transport http` speaks.
//!
//! [`open`] sends `GET <path>` with `Accept: text/event-stream` (plus
//! `SessionID` and `Session-Received` to take a session over) and reads the
//! answer as Server-Sent Events as it streams: `session` (the open record),
//! `initial` (the initial body, a JSON string), unnamed events (lines, JSON
//! strings), `end` and `error` (a WebSocket close code and reason). Lines
//! go up in `POST`s, one at a time, each carrying every line the gateway has
//! not confirmed, with `Session-Sent` set to the count it confirmed: the
//! gateway skips what it already has, so a POST whose answer was lost is
//! simply sent again. Acks ride on the next POST as `Session-Ack`.
//!
//! A down channel that ends without `end` or `error`, or with `error 1012`,
//! is resumed with the [`Backoff`](crate::Backoff) policy (the gateway
//! replays the lines after our count). Ends: `end` is
//! [`SessionEvent::Ended`]; other `error`s are
//! [`ClientError::WebSocketClosed`] with the code and reason; `410` on a
//! resume or a POST is [`ClientError::SessionLost`]. `close` is a `DELETE`.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tether_wire::{GatewayOpen, SessionId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

use crate::config::{ClientConfig, Target};
use crate::handle::{Command, SessionEvent, SessionHandle};
use crate::http::{self, SessionHeaders};
use crate::resend::ResendBuffer;
use crate::ClientError;

/// Received lines are acknowledged with the next POST at most this late.
const ACK_AFTER: Duration = Duration::from_millis(500);
/// Events read and not yet taken by the caller above which the down
/// channel is not read.
const READY_HIGH_WATER: usize = 256;
const CHANNEL: usize = 64;
/// POSTs failed in a row (no answer, or not 204/409) before the session is
/// given up.
const POST_ATTEMPTS: u32 = 5;

/// Opens a session over the HTTP transport, or takes over `resume` (a
/// SessionID and the count of lines already received), and runs it in a
/// task.
pub async fn open(
    config: ClientConfig,
    resume: Option<(SessionId, u64)>,
) -> Result<SessionHandle, ClientError> {
    let target = Target::parse(&config.url)?;
    let received = resume.as_ref().map_or(0, |r| r.1);
    let (mut down, hello) = Down::connect(&config, &target, resume.as_ref()).await?;
    let mut initial = Bytes::new();
    if hello.initial > 0 {
        initial = match timeout(config.response_timeout, down.next_event()).await {
            Ok(Ok(Some(Event::Initial(body)))) if body.len() as u64 == hello.initial => body,
            Err(_) => return Err(ClientError::Timeout("the initial body")),
            _ => {
                return Err(ClientError::PartialInitialBody {
                    expected: hello.initial,
                    got: 0,
                })
            }
        };
    }
    let resend = match resume {
        None => ResendBuffer::new(config.max_unacked_bytes),
        Some(_) => ResendBuffer::after(config.max_unacked_bytes, hello.received),
    };
    let (cmd_tx, cmd_rx) = mpsc::channel(CHANNEL);
    let (ev_tx, ev_rx) = mpsc::channel(CHANNEL);
    let handle = SessionHandle::new(cmd_tx, config.max_line, ev_rx, hello.sid.clone(), initial);
    let task = SseTask {
        config,
        target,
        id: hello.sid,
        down: Some(down),
        received,
        acked: received,
        resend,
        ready: VecDeque::new(),
        ack_due: None,
        resumes: 0,
        post_failures: 0,
    };
    tokio::spawn(task.run(cmd_rx, ev_tx));
    Ok(handle)
}

/// One event of the down channel.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Session(Bytes),
    Initial(Bytes),
    /// A line, without its LF.
    Line(Bytes),
    End,
    Error(u16, String),
    Comment,
}

/// The down channel: a streamed answer, de-chunked, cut into events.
struct Down {
    stream: TcpStream,
    /// Bytes as read, chunk framing included.
    raw: BytesMut,
    /// The answer body so far, not yet made into events.
    body: BytesMut,
    ended: bool,
}

impl Down {
    async fn connect(
        config: &ClientConfig,
        target: &Target,
        resume: Option<&(SessionId, u64)>,
    ) -> Result<(Down, GatewayOpen), ClientError> {
        let mut stream = connect(config, target).await?;
        let session = match resume {
            None => SessionHeaders::Open,
            Some((id, received)) => SessionHeaders::Resume {
                id: id.as_str(),
                received: *received,
            },
        };
        let head = http::request(target, "text/event-stream", &config.extra_headers, session);
        stream.write_all(&head).await?;
        let mut raw = BytesMut::with_capacity(4096);
        let answer = timeout(
            config.response_timeout,
            http::read_head(&mut stream, &mut raw),
        )
        .await
        .map_err(|_| ClientError::Timeout("the down channel's answer"))??;
        let event_stream = answer
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/event-stream"));
        if answer.status != 200 || !event_stream {
            let body = timeout(
                config.response_timeout,
                http::read_plain_body(&mut stream, &mut raw, &answer),
            )
            .await
            .unwrap_or_else(|_| Ok(Bytes::new()))
            .unwrap_or_default();
            if answer.status == 410 {
                return Err(ClientError::SessionLost {
                    reason: String::from_utf8_lossy(&body).trim().to_owned(),
                });
            }
            return Err(ClientError::NotPersistent {
                status: answer.status,
                headers: answer.headers,
                body,
            });
        }
        let chunked = answer
            .header("transfer-encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
        if !chunked {
            return Err(ClientError::Protocol(
                "the down channel is not chunked".into(),
            ));
        }
        let mut down = Down {
            stream,
            raw,
            body: BytesMut::new(),
            ended: false,
        };
        let hello = match timeout(config.response_timeout, down.next_event()).await {
            Ok(Ok(Some(Event::Session(record)))) => GatewayOpen::parse(&record)
                .map_err(|e| ClientError::Protocol(format!("bad session event: {e:?}")))?,
            Ok(Ok(Some(Event::Error(code, reason)))) => {
                return Err(ClientError::WebSocketClosed { code, reason })
            }
            Err(_) => return Err(ClientError::Timeout("the session event")),
            other => {
                return Err(ClientError::Protocol(format!(
                    "the down channel began with {other:?}"
                )))
            }
        };
        Ok((down, hello))
    }

    /// Moves whole chunks from `raw` to `body`.
    fn dechunk(&mut self) -> Result<(), ClientError> {
        while !self.ended {
            let Some(eol) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return Ok(());
            };
            let size = std::str::from_utf8(&self.raw[..eol])
                .ok()
                .map(|s| s.split(';').next().unwrap_or("").trim())
                .and_then(|s| usize::from_str_radix(s, 16).ok())
                .ok_or_else(|| ClientError::Protocol("bad chunk size".into()))?;
            if size == 0 {
                self.ended = true;
                return Ok(());
            }
            if self.raw.len() < eol + 2 + size + 2 {
                return Ok(());
            }
            self.raw.advance(eol + 2);
            self.body.extend_from_slice(&self.raw[..size]);
            self.raw.advance(size + 2);
        }
        Ok(())
    }

    /// The next event; `None` at the end of the answer.
    async fn next_event(&mut self) -> Result<Option<Event>, ClientError> {
        loop {
            self.dechunk()?;
            if let Some(event) = take_event(&mut self.body)? {
                return Ok(Some(event));
            }
            if self.ended {
                return Ok(None);
            }
            self.raw.reserve(16 * 1024);
            if self.stream.read_buf(&mut self.raw).await? == 0 {
                return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }
}

async fn connect(config: &ClientConfig, target: &Target) -> Result<TcpStream, ClientError> {
    let stream = timeout(
        config.connect_timeout,
        TcpStream::connect(&target.authority),
    )
    .await
    .map_err(|_| ClientError::Timeout("the TCP connect"))?
    .map_err(|source| ClientError::Connect {
        addr: target.authority.clone(),
        source,
    })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// One whole event off the front of `body` (the gateway ends lines with
/// LF alone).
fn take_event(body: &mut BytesMut) -> Result<Option<Event>, ClientError> {
    let Some(end) = body.windows(2).position(|w| w == b"\n\n") else {
        return Ok(None);
    };
    let block = body.split_to(end + 2);
    let mut name: &[u8] = b"";
    let mut data: &[u8] = b"";
    let mut comment = false;
    for line in block[..end].split(|&b| b == b'\n') {
        if line.starts_with(b":") {
            comment = true;
        } else if let Some(v) = line.strip_prefix(b"event: ") {
            name = v;
        } else if let Some(v) = line.strip_prefix(b"data: ") {
            data = v;
        }
    }
    let bad = |what: &str| ClientError::Protocol(format!("bad {what} event"));
    Ok(Some(match name {
        b"" if comment => Event::Comment,
        b"" => Event::Line(json_string(data).ok_or_else(|| bad("line"))?),
        b"session" => Event::Session(Bytes::copy_from_slice(data)),
        b"initial" => Event::Initial(json_string(data).ok_or_else(|| bad("initial"))?),
        b"end" => Event::End,
        b"error" => {
            let text = String::from_utf8_lossy(data);
            let (code, reason) = text.split_once(' ').unwrap_or((&text, ""));
            Event::Error(code.parse().map_err(|_| bad("error"))?, reason.to_owned())
        }
        _ => Event::Comment,
    }))
}

/// A JSON string (as the gateway writes them) decoded to its UTF-8 bytes.
fn json_string(text: &[u8]) -> Option<Bytes> {
    let inner = std::str::from_utf8(text.strip_prefix(b"\"")?.strip_suffix(b"\"")?).ok()?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'u' => {
                let hex: String = chars.by_ref().take(4).collect();
                let unit = u32::from_str_radix(&hex, 16).ok()?;
                let c = if (0xD800..0xDC00).contains(&unit) {
                    // A surrogate pair: the low half follows as \uXXXX.
                    let rest: String = chars.by_ref().take(6).collect();
                    let low = u32::from_str_radix(rest.strip_prefix("\\u")?, 16).ok()?;
                    char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low.checked_sub(0xDC00)?))?
                } else {
                    char::from_u32(unit)?
                };
                out.push(c);
            }
            other => out.push(other),
        }
    }
    Some(Bytes::from(out))
}

/// What a POST came back with: its status and `Session-Received`.
type PostResult = Result<(u16, Option<u64>), ClientError>;
type PostFuture = Pin<Box<dyn Future<Output = PostResult> + Send>>;

/// One POST of `body` on a connection of its own.
fn post(
    config: &ClientConfig,
    target: &Target,
    id: &SessionId,
    sent: u64,
    ack: Option<u64>,
    body: Vec<u8>,
) -> PostFuture {
    let config = config.clone();
    let target = target.clone();
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nSessionID: {}\r\nSession-Sent: {sent}\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        target.path,
        target.host_header,
        id.as_str(),
        body.len()
    );
    if let Some(n) = ack {
        head.push_str(&format!("Session-Ack: {n}\r\n"));
    }
    for (name, value) in &config.extra_headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    Box::pin(async move {
        let mut stream = connect(&config, &target).await?;
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        let mut buf = BytesMut::new();
        let answer = timeout(
            config.response_timeout,
            http::read_head(&mut stream, &mut buf),
        )
        .await
        .map_err(|_| ClientError::Timeout("a POST's answer"))??;
        let received = answer
            .header("session-received")
            .and_then(|v| v.trim().parse().ok());
        Ok((answer.status, received))
    })
}

/// The answer of the POST in flight (only polled while there is one).
async fn answer_of(posting: &mut Option<(PostFuture, Option<u64>, u64)>) -> PostResult {
    match posting {
        Some((fut, _, _)) => fut.as_mut().await,
        None => std::future::pending().await,
    }
}

/// The down channel's next event (only polled while there is one).
async fn event_of(down: &mut Option<Down>) -> Result<Option<Event>, ClientError> {
    match down {
        Some(down) => down.next_event().await,
        None => std::future::pending().await,
    }
}

struct SseTask {
    config: ClientConfig,
    target: Target,
    id: SessionId,
    down: Option<Down>,
    /// Lines received (handed to `ready`).
    received: u64,
    /// The count last acknowledged to the gateway.
    acked: u64,
    resend: ResendBuffer,
    ready: VecDeque<SessionEvent>,
    ack_due: Option<Instant>,
    resumes: u64,
    post_failures: u32,
}

impl SseTask {
    async fn run(mut self, mut cmds: mpsc::Receiver<Command>, events: mpsc::Sender<SessionEvent>) {
        let mut cmds_open = true;
        let mut closing = false;
        // The POST in flight: its answer, the ack it carried and the count
        // its lines reach.
        let mut posting: Option<(PostFuture, Option<u64>, u64)> = None;
        let mut post_after: Option<Instant> = None;
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let last = loop {
            // A POST when lines wait for confirmation, or an ack is due.
            let ack_now = self.ack_due.is_some_and(|t| t <= Instant::now());
            let wanted = !self.resend.is_empty() || (ack_now && self.received > self.acked);
            if posting.is_none() && wanted && !closing && post_after.is_none() {
                let ack = (self.received > self.acked).then_some(self.received);
                let body: Vec<u8> = self.resend.unacked().flat_map(|l| l.to_vec()).collect();
                let fut = post(
                    &self.config,
                    &self.target,
                    &self.id,
                    self.resend.acked(),
                    ack,
                    body,
                );
                posting = Some((fut, ack, self.resend.sent()));
            }
            let reading = self.down.is_some() && self.ready.len() < READY_HIGH_WATER;
            tokio::select! {
                biased;
                _ = events.closed() => return,
                permit = events.reserve(), if !self.ready.is_empty() => {
                    let Ok(permit) = permit else { return };
                    if let Some(event) = self.ready.pop_front() {
                        permit.send(event);
                    }
                }
                cmd = cmds.recv(), if cmds_open && !closing => match cmd {
                    None => cmds_open = false,
                    Some(Command::Line(line, reply)) => {
                        let _ = reply.send(self.resend.push(line));
                    }
                    Some(Command::Close(reply)) => {
                        closing = true;
                        let _ = reply.send(self.delete().await);
                    }
                    Some(Command::DropConnection) => {
                        if let Some(down) = self.down.take() {
                            let _ = down.stream.set_zero_linger();
                        }
                        if let Err(e) = self.resume().await {
                            break SessionEvent::Failed(e);
                        }
                    }
                },
                done = answer_of(&mut posting), if posting.is_some() => {
                    let (ack, reach) = posting.take().map_or((None, 0), |p| (p.1, p.2));
                    match done {
                        Ok((204 | 409, Some(d))) => {
                            self.post_failures = 0;
                            if let Some(n) = ack {
                                self.acked = self.acked.max(n);
                            }
                            if let Err(e) = self.resend.ack(d) {
                                break SessionEvent::Failed(e);
                            }
                            if d < reach {
                                // Not all taken (the worker's side has
                                // ended and `end` is on its way, or a 409):
                                // no tight loop of POSTs.
                                post_after = Some(Instant::now() + Duration::from_millis(250));
                            }
                        }
                        Ok((410, _)) => {
                            break SessionEvent::Failed(ClientError::SessionLost {
                                reason: "410 on a POST".into(),
                            })
                        }
                        other => {
                            self.post_failures += 1;
                            tracing::debug!(session = %self.id, ?other, "POST failed; sending it again");
                            if self.post_failures >= POST_ATTEMPTS {
                                break SessionEvent::Failed(ClientError::Protocol(format!(
                                    "{POST_ATTEMPTS} POSTs failed in a row: {other:?}"
                                )));
                            }
                            post_after = Some(Instant::now() + Duration::from_millis(200 * u64::from(self.post_failures)));
                        }
                    }
                }
                _ = tokio::time::sleep_until(post_after.unwrap_or(far)), if post_after.is_some() => {
                    post_after = None;
                }
                // Wakes the loop to send a due ack; not while no POST may
                // start (it would fire again at once).
                _ = tokio::time::sleep_until(self.ack_due.unwrap_or(far)), if self.ack_due.is_some() && posting.is_none() && !closing && post_after.is_none() => {
                    if self.received <= self.acked {
                        self.ack_due = None;
                    }
                }
                event = event_of(&mut self.down), if reading => {
                    match event {
                        Ok(Some(Event::Line(text))) => {
                            let mut line = BytesMut::with_capacity(text.len() + 1);
                            line.extend_from_slice(&text);
                            line.extend_from_slice(b"\n");
                            self.received += 1;
                            self.ready.push_back(SessionEvent::Line(line.freeze()));
                            if self.ack_due.is_none() {
                                self.ack_due = Some(Instant::now() + ACK_AFTER);
                            }
                        }
                        Ok(Some(Event::Comment | Event::Session(_) | Event::Initial(_))) => {}
                        Ok(Some(Event::End)) => break SessionEvent::Ended,
                        Ok(Some(Event::Error(code, reason))) if code != 1012 => {
                            break if closing {
                                SessionEvent::Ended
                            } else {
                                SessionEvent::Failed(ClientError::WebSocketClosed { code, reason })
                            };
                        }
                        // 1012, an end without an event, a failure: resume.
                        _ => {
                            self.down = None;
                            if closing {
                                break SessionEvent::Ended;
                            }
                            if let Err(e) = self.resume().await {
                                break SessionEvent::Failed(e);
                            }
                        }
                    }
                }
            }
            if self.ack_due.is_some() && self.received <= self.acked {
                self.ack_due = None;
            }
        };
        while let Some(event) = self.ready.pop_front() {
            if events.send(event).await.is_err() {
                return;
            }
        }
        let _ = events.send(last).await;
    }

    /// `DELETE`: the session ends; the down channel then says `end`.
    async fn delete(&mut self) -> Result<(), ClientError> {
        let mut stream = connect(&self.config, &self.target).await?;
        let head = http::request(
            &self.target,
            "text/event-stream",
            &self.config.extra_headers,
            SessionHeaders::End {
                id: self.id.as_str(),
            },
        );
        stream.write_all(&head).await?;
        let mut buf = BytesMut::new();
        let answer = timeout(
            self.config.response_timeout,
            http::read_head(&mut stream, &mut buf),
        )
        .await
        .map_err(|_| ClientError::Timeout("the DELETE answer"))??;
        match answer.status {
            204 | 410 => Ok(()),
            status => Err(ClientError::CloseFailed {
                status,
                body: Bytes::new(),
            }),
        }
    }

    /// Reconnects the down channel with the backoff policy and resumes;
    /// the POSTs carry on from the gateway's count.
    async fn resume(&mut self) -> Result<(), ClientError> {
        self.down = None;
        let policy = self.config.reconnect.clone();
        let attempts = policy.max_attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            let delay = policy.delay(attempt, attempt as u64 * 0x9E37_79B9_7F4A_7C15);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let resume = (self.id.clone(), self.received);
            match Down::connect(&self.config, &self.target, Some(&resume)).await {
                Ok((down, hello)) => {
                    self.resend.ack(hello.received)?;
                    self.acked = self.received;
                    self.down = Some(down);
                    self.resumes += 1;
                    self.ready.push_back(SessionEvent::Resumed {
                        resent: self.resend.sent() - self.resend.acked(),
                        resumes: self.resumes,
                    });
                    return Ok(());
                }
                Err(
                    e @ (ClientError::SessionLost { .. } | ClientError::WebSocketClosed { .. }),
                ) => return Err(e),
                Err(e) => {
                    tracing::debug!(attempt, error = %e, "down channel resume attempt failed");
                    last = e.to_string();
                }
            }
        }
        Err(ClientError::ReconnectFailed { attempts, last })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_json_strings() {
        let mut body = BytesMut::from(
            &b"event: session\ndata: sid=x\n\ndata: \"a\\rb \\\"q\\\" \\u00e9 \\ud83d\\ude00\"\n\n:\n\nevent: error\ndata: 4409 taken over\n\nevent: end\ndata: worker_end\n\n"[..],
        );
        let mut got = Vec::new();
        while let Some(ev) = take_event(&mut body).expect("event") {
            got.push(ev);
        }
        assert_eq!(
            got,
            [
                Event::Session(Bytes::from_static(b"sid=x")),
                Event::Line(Bytes::from("a\rb \"q\" é 😀")),
                Event::Comment,
                Event::Error(4409, "taken over".into()),
                Event::End,
            ]
        );
    }
}
