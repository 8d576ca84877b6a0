//! [`Session`]: one native persistent session with transparent resume.
//!
//! # Shape
//!
//! One struct owns the current `TcpStream`, the line reader for what the
//! gateway sends, the bytes still to write on this connection, the resend
//! buffer and the counters. Reading and writing happen in one
//! `Session::io_step`, which `select!`s between a read and a write on the
//! two halves of the stream, so a write that waits for the gateway never
//! stops the session from reading (and the other way round).
//!
//! The methods take `&mut self`, so they are sequential: a program that must
//! wait for lines and send lines at the same time (a terminal client) hands
//! the session to a task with [`Session::spawn`] and talks to it through a
//! [`SessionHandle`](crate::SessionHandle). The task is the chosen way to get
//! full duplex: a `split()` into two halves would have to share the resume
//! state (both halves are replaced on a resume, and a resume needs the
//! received count and the resend buffer at once).
//!
//! # Resume
//!
//! Any connection failure (read or write error, reset, EOF) makes the
//! session reconnect with the [`Backoff`](crate::Backoff) policy and send
//! `GET <path>` with `SessionID` and `Session-Received: <lines received>`.
//! On `200` the answer's `Session-Received: n` acknowledges our lines `1..=n`:
//! they leave the resend buffer and the rest is resent in order, after the
//! answer head (SPEC 2: nothing is sent before the head is read). The
//! gateway's replayed lines arrive first and are indistinguishable from live
//! ones. A `410` is [`ClientError::SessionLost`] — except right after an EOF.
//!
//! **EOF and 410.** After a worker end the gateway sends the remaining lines
//! and then EOF, and a later resume gets `410` (SPEC 2, 4). A plain EOF
//! cannot be told from a connection closed by something in between (a
//! middlebox, a takeover), so on EOF the session tries one resume: `200`
//! means the connection was lost and the session goes on; `410` means the
//! session ended normally, and `next_line` returns `Ok(None)`.
//!
//! Lines are counted when they are handed to the caller, not when they are
//! read: whole lines still buffered at a drop are dropped with the partial
//! line and replayed by the gateway.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tether_wire::{parse_session_received, LineReader, SessionId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::config::{ClientConfig, Target};
use crate::http::{self, ResponseHead, SessionHeaders};
use crate::resend::ResendBuffer;
use crate::ClientError;

/// How long a connection whose write side failed may keep delivering what
/// the gateway sent before it, before the session resumes.
const WRITE_FAILED_GRACE: Duration = Duration::from_secs(2);
/// Rounds of [`Session::sync`] before it gives up.
const SYNC_ROUNDS: u32 = 6;

/// Why the current connection is gone.
#[derive(Debug)]
pub(crate) enum ConnLost {
    /// The gateway closed it (FIN).
    Eof,
    /// Read or write error, reset, or no connection at all.
    Error(io::Error),
}

/// What a resume found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resumed {
    /// A new connection carries the session; `resent` of our lines went out
    /// again.
    Attached { resent: u64 },
    /// `410` after an EOF: the session ended normally.
    Ended,
}

/// One native persistent session (SPEC 2 and 4) over HTTP/1.1.
#[derive(Debug)]
pub struct Session {
    pub(crate) config: ClientConfig,
    target: Target,
    id: SessionId,
    initial_body: Bytes,
    conn: Option<TcpStream>,
    /// What the gateway sent: the partial line.
    reader: LineReader,
    /// Whole lines read and not yet handed out (not counted yet).
    ready: VecDeque<Bytes>,
    /// Bytes still to write on the current connection.
    pub(crate) out: BytesMut,
    resend: ResendBuffer,
    received: u64,
    resumes: u64,
    ended: bool,
    write_failed: Option<io::Error>,
    rng: u64,
}

impl Session {
    /// Opens a session: connects, sends `GET` with `Host` and `Accept`, reads
    /// the answer head and exactly `Content-Length` bytes of initial body.
    ///
    /// Any answer but `200` with `Connection-Type: Persistent` is
    /// [`ClientError::NotPersistent`] (with its body); a connection that ends
    /// inside the initial body is [`ClientError::PartialInitialBody`]. Open is
    /// not retried: a new session request is not idempotent.
    pub async fn open(config: ClientConfig) -> Result<Session, ClientError> {
        let target = Target::parse(&config.url)?;
        let mut stream = connect(&target, config.connect_timeout).await?;
        let request = http::request(
            &target,
            &config.accept,
            &config.extra_headers,
            SessionHeaders::Open,
        );
        stream.write_all(&request).await?;
        let mut buf = BytesMut::with_capacity(4096);
        let head = timeout(
            config.response_timeout,
            http::read_head(&mut stream, &mut buf),
        )
        .await
        .map_err(|_| ClientError::Timeout("the answer head"))??;
        if !head.is_persistent() {
            let body = timeout(
                config.response_timeout,
                http::read_plain_body(&mut stream, &mut buf, &head),
            )
            .await
            .map_err(|_| ClientError::Timeout("the answer body"))??;
            return Err(ClientError::NotPersistent {
                status: head.status,
                headers: head.headers,
                body,
            });
        }
        let id = session_id(&head)?;
        if head.header("Transfer-Encoding").is_some() {
            return Err(ClientError::Protocol(
                "persistent answer with Transfer-Encoding".into(),
            ));
        }
        let expected = head.content_length()?.unwrap_or(0);
        if expected > config.max_initial_body as u64 {
            return Err(ClientError::Protocol(format!(
                "initial body of {expected} bytes is over max_initial_body"
            )));
        }
        let expected_len = expected as usize;
        let body_read = timeout(config.response_timeout, async {
            while buf.len() < expected_len {
                buf.reserve(expected_len - buf.len());
                match stream.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return false,
                    Ok(_) => {}
                }
            }
            true
        })
        .await
        .map_err(|_| ClientError::Timeout("the initial body"))?;
        if !body_read {
            return Err(ClientError::PartialInitialBody {
                expected,
                got: buf.len() as u64,
            });
        }
        let initial_body = buf.split_to(expected_len).freeze();
        let mut reader = LineReader::new(config.max_line);
        reader.push(&buf);
        let resend = ResendBuffer::new(config.max_unacked_bytes);
        let mut session = Session {
            config,
            target,
            id,
            initial_body,
            conn: Some(stream),
            reader,
            ready: VecDeque::new(),
            out: BytesMut::new(),
            resend,
            received: 0,
            resumes: 0,
            ended: false,
            write_failed: None,
            rng: seed(),
        };
        session.take_whole_lines()?;
        Ok(session)
    }

    /// Takes over an existing session by hand (`tether connect --resume`):
    /// one resume with `SessionID: id` and `Session-Received: received`,
    /// the count of lines the caller already has (the gateway replays the
    /// later ones first). An attached connection of another client is
    /// closed by the gateway (SPEC 4 takeover). The lines that client sent
    /// are the gateway's to account for: this session's sent count starts
    /// at the gateway's `Session-Received`.
    ///
    /// Not retried: `410` is [`ClientError::SessionLost`], another answer
    /// [`ClientError::NotPersistent`] with its body, a failed connect its
    /// error. There is no initial body.
    pub async fn take_over(
        config: ClientConfig,
        id: SessionId,
        received: u64,
    ) -> Result<Session, ClientError> {
        let target = Target::parse(&config.url)?;
        let mut session = Session {
            reader: LineReader::new(config.max_line),
            resend: ResendBuffer::new(config.max_unacked_bytes),
            config,
            target,
            id,
            initial_body: Bytes::new(),
            conn: None,
            ready: VecDeque::new(),
            out: BytesMut::new(),
            received,
            resumes: 0,
            ended: false,
            write_failed: None,
            rng: seed(),
        };
        match session.try_resume().await? {
            Attempt::Attached {
                stream,
                rest,
                count,
            } => {
                session.resend = ResendBuffer::after(session.config.max_unacked_bytes, count);
                session.conn = Some(stream);
                session.reader.push(&rest);
                session.take_whole_lines()?;
                Ok(session)
            }
            Attempt::Gone { reason } => Err(ClientError::SessionLost { reason }),
            Attempt::Refused { status, body } => Err(ClientError::NotPersistent {
                status,
                headers: Vec::new(),
                body: Bytes::from(body),
            }),
        }
    }

    /// The session's ID, as the gateway issued it.
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// The initial body of the opening answer (never replayed, never
    /// counted).
    pub fn initial_body(&self) -> &[u8] {
        &self.initial_body
    }

    /// Successful resumes so far (reconnections after drops, and the resumes
    /// that [`Session::sync`] and [`Session::close`] make).
    pub fn resumes(&self) -> u64 {
        self.resumes
    }

    /// Lines handed out by [`Session::next_line`] (the `Session-Received`
    /// this client sends on a resume).
    pub fn lines_received(&self) -> u64 {
        self.received
    }

    /// Lines given to [`Session::send_line`].
    pub fn lines_sent(&self) -> u64 {
        self.resend.sent()
    }

    /// Bytes of sent lines the gateway has not acknowledged yet (bounded by
    /// `max_unacked_bytes`).
    pub fn unacked_bytes(&self) -> usize {
        self.resend.bytes()
    }

    /// Whether the session has ended (`next_line` returned `Ok(None)`, or it
    /// was closed).
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Sends one line. An LF is appended if missing; an LF inside the line,
    /// or a line longer than `max_line` (LF included), is refused with
    /// [`ClientError::InvalidLine`]. The line is kept for resending until a
    /// resume answer acknowledges it. Returns once the line is written to the
    /// socket, resuming as needed on the way.
    ///
    /// While it waits to write, it reads what the gateway sends, but only up
    /// to one batch of lines: a caller that sends many lines and never calls
    /// `next_line` can stall against a worker that only writes; use
    /// [`Session::spawn`] for full duplex.
    pub async fn send_line(&mut self, line: &[u8]) -> Result<(), ClientError> {
        self.queue_line(line)?;
        self.flush().await
    }

    /// The next line from the gateway, LF included, byte-exact; `Ok(None)`
    /// once the session has ended (EOF after the worker ended, see the module
    /// docs). Drops in between are resumed transparently.
    ///
    /// Cancel-safe in the sense that matters: a line is counted only when it
    /// is returned, and a resume cut short is started again by the next call.
    /// After an error the session is over: later calls return `Ok(None)`.
    pub async fn next_line(&mut self) -> Result<Option<Bytes>, ClientError> {
        loop {
            if let Some(line) = self.pop_line() {
                return Ok(Some(line));
            }
            if self.ended {
                return Ok(None);
            }
            if let Err(lost) = self.io_step().await {
                self.recover(lost).await?;
            } else {
                self.take_whole_lines()?;
            }
        }
    }

    /// Has the gateway acknowledge every line sent so far, by resuming (a
    /// takeover of our own connection): the answer's `Session-Received`
    /// tells what it delivered. Lines it had not read are resent and the
    /// resume repeated (a few rounds, with growing pauses). Each round counts
    /// as a resume. Use it to make room in the resend buffer, or before a
    /// `DELETE` (which [`Session::close`] does).
    pub async fn sync(&mut self) -> Result<(), ClientError> {
        self.flush().await?;
        let mut pause = Duration::from_millis(2);
        for round in 0..SYNC_ROUNDS {
            if self.resend.is_empty() || self.ended {
                return Ok(());
            }
            if round > 0 {
                tokio::time::sleep(pause).await;
                pause *= 3;
            }
            self.conn = None;
            self.recover(ConnLost::Error(io::ErrorKind::NotConnected.into()))
                .await?;
            self.flush().await?;
        }
        if self.resend.is_empty() || self.ended {
            Ok(())
        } else {
            Err(ClientError::Protocol(format!(
                "the gateway did not take {} sent lines",
                self.resend.sent() - self.resend.acked()
            )))
        }
    }

    /// Ends the session: makes sure the gateway has every line sent (see
    /// [`Session::sync`]), then sends `DELETE` with the `SessionID` on a
    /// fresh connection and expects `204` (anything else is
    /// [`ClientError::CloseFailed`]). Lines still on their way to this client
    /// are discarded.
    pub async fn close(mut self) -> Result<(), ClientError> {
        if self.ended {
            return Ok(());
        }
        self.sync().await?;
        self.set_ended();
        self.delete().await
    }

    /// **Test and fault-injection hook**: kills the current connection
    /// abruptly (`SO_LINGER` 0, then close: the gateway sees a reset). The
    /// next call resumes as after any drop. Not meant for applications.
    pub fn drop_connection_for_test(&mut self) {
        if let Some(stream) = self.conn.take() {
            let _ = stream.set_zero_linger();
            drop(stream);
        }
    }

    /// Checks a line and queues it for the current connection.
    pub(crate) fn queue_line(&mut self, line: &[u8]) -> Result<(), ClientError> {
        if self.ended {
            return Err(ClientError::Ended);
        }
        let line = checked_line(line, self.config.max_line)?;
        self.queue_checked(line)
    }

    /// Queues a line already checked by [`checked_line`].
    pub(crate) fn queue_checked(&mut self, line: Bytes) -> Result<(), ClientError> {
        if self.ended {
            return Err(ClientError::Ended);
        }
        self.resend.push(line.clone())?;
        self.out.extend_from_slice(&line);
        Ok(())
    }

    /// Writes everything queued, reading and resuming as needed.
    pub(crate) async fn flush(&mut self) -> Result<(), ClientError> {
        while !self.out.is_empty() {
            if self.ended {
                return Err(ClientError::Ended);
            }
            match self.io_step().await {
                Ok(()) => self.take_whole_lines()?,
                Err(lost) => {
                    self.recover(lost).await?;
                }
            }
        }
        Ok(())
    }

    /// The next whole line already read, counted as received.
    pub(crate) fn pop_line(&mut self) -> Option<Bytes> {
        let line = self.ready.pop_front()?;
        self.received += 1;
        Some(line)
    }

    pub(crate) fn has_line(&self) -> bool {
        !self.ready.is_empty()
    }

    pub(crate) fn ended(&self) -> bool {
        self.ended
    }

    pub(crate) fn set_ended(&mut self) {
        self.ended = true;
        self.conn = None;
    }

    /// Moves whole lines from the reader to `ready`.
    pub(crate) fn take_whole_lines(&mut self) -> Result<(), ClientError> {
        while let Some(line) = self
            .reader
            .next_line()
            .map_err(|e| ClientError::LineTooLong { max: e.max_line })?
        {
            self.ready.push_back(line);
        }
        Ok(())
    }

    /// One read or one write on the current connection, whichever is ready
    /// first; reads only while no whole line waits. Cancel-safe. Waits
    /// forever when there is nothing to do.
    pub(crate) async fn io_step(&mut self) -> Result<(), ConnLost> {
        let Some(stream) = self.conn.as_mut() else {
            return Err(ConnLost::Error(io::ErrorKind::NotConnected.into()));
        };
        let want_read = self.ready.is_empty();
        let want_write = !self.out.is_empty() && self.write_failed.is_none();
        let write_failed = self.write_failed.is_some();
        if want_read {
            self.reader.shrink();
            self.reader.buffer_mut().reserve(8192);
        }
        let (mut rd, mut wr) = stream.split();
        let reader = &mut self.reader;
        let out = &mut self.out;
        tokio::select! {
            res = rd.read_buf(reader.buffer_mut()), if want_read => match res {
                Ok(0) => Err(ConnLost::Eof),
                Ok(_) => Ok(()),
                Err(e) => Err(ConnLost::Error(e)),
            },
            res = wr.write(out), if want_write => match res {
                Ok(0) => {
                    self.write_failed = Some(io::ErrorKind::WriteZero.into());
                    Ok(())
                }
                Ok(n) => {
                    out.advance(n);
                    Ok(())
                }
                Err(e) => {
                    // Keep reading what the gateway sent before the failure
                    // (a worker end's last lines, then EOF) before resuming.
                    tracing::debug!(error = %e, "write failed; draining reads");
                    self.write_failed = Some(e);
                    Ok(())
                }
            },
            _ = tokio::time::sleep(WRITE_FAILED_GRACE), if write_failed => {
                Err(ConnLost::Error(self.write_failed.take().unwrap_or_else(|| io::ErrorKind::BrokenPipe.into())))
            },
            else => std::future::pending().await,
        }
    }

    /// Handles a drop: resumes, or records the normal end (EOF then 410).
    pub(crate) async fn recover(&mut self, lost: ConnLost) -> Result<Resumed, ClientError> {
        if let ConnLost::Error(e) = &lost {
            tracing::debug!(session = %self.id, error = %e, "connection lost");
        }
        let outcome = self.resume(matches!(lost, ConnLost::Eof)).await;
        if let Ok(Resumed::Ended) = outcome {
            self.set_ended();
        }
        if let Err(e) = &outcome {
            tracing::debug!(error = %e, "session could not be resumed");
            self.set_ended();
        }
        outcome
    }

    /// Reconnects and resumes (see the module docs).
    async fn resume(&mut self, after_eof: bool) -> Result<Resumed, ClientError> {
        match &after_eof {
            true => tracing::debug!(session = %self.id, "EOF; trying one resume"),
            false => tracing::debug!(session = %self.id, "connection lost; resuming"),
        }
        self.conn = None;
        self.ready.clear();
        self.reader.discard_partial();
        self.out.clear();
        self.write_failed = None;
        let policy = self.config.reconnect.clone();
        let attempts = policy.max_attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            let delay = policy.delay(attempt, self.random());
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            match self.try_resume().await {
                Ok(Attempt::Attached {
                    stream,
                    rest,
                    count,
                }) => {
                    self.resend.ack(count)?;
                    self.conn = Some(stream);
                    self.reader.push(&rest);
                    for line in self.resend.unacked() {
                        self.out.extend_from_slice(line);
                    }
                    let resent = self.resend.sent() - count;
                    self.resumes += 1;
                    self.take_whole_lines()?;
                    tracing::debug!(session = %self.id, count, resent, "resumed");
                    return Ok(Resumed::Attached { resent });
                }
                Ok(Attempt::Gone { reason }) if after_eof => {
                    tracing::debug!(session = %self.id, %reason, "410 after EOF: session ended");
                    return Ok(Resumed::Ended);
                }
                Ok(Attempt::Gone { reason }) => return Err(ClientError::SessionLost { reason }),
                Ok(Attempt::Refused { status, body }) => {
                    return Err(ClientError::SessionLost {
                        reason: format!("resume answered {status}: {body}"),
                    })
                }
                Err(e) => {
                    tracing::debug!(attempt, error = %e, "resume attempt failed");
                    last = e.to_string();
                }
            }
        }
        Err(ClientError::ReconnectFailed { attempts, last })
    }

    /// One resume attempt. `Err` is worth retrying.
    async fn try_resume(&self) -> Result<Attempt, ClientError> {
        let cfg = &self.config;
        let mut stream = connect(&self.target, cfg.connect_timeout).await?;
        let request = http::request(
            &self.target,
            &cfg.accept,
            &cfg.extra_headers,
            SessionHeaders::Resume {
                id: self.id.as_str(),
                received: self.received,
            },
        );
        stream.write_all(&request).await?;
        let mut buf = BytesMut::with_capacity(4096);
        let head = timeout(cfg.response_timeout, http::read_head(&mut stream, &mut buf))
            .await
            .map_err(|_| ClientError::Timeout("the resume answer"))??;
        if head.is_persistent() {
            if let Some(id) = head.header("SessionID") {
                if id != self.id.as_str() {
                    return Err(ClientError::Protocol(format!(
                        "resume answered for another SessionID {id:?}"
                    )));
                }
            }
            let count = head
                .header("Session-Received")
                .and_then(|v| parse_session_received(v.as_bytes()).ok())
                .ok_or_else(|| {
                    ClientError::Protocol("resume answer without a valid Session-Received".into())
                })?;
            // SPEC 4 says Content-Length: 0; skip a body if one is announced.
            let skip = head.content_length()?.unwrap_or(0);
            if skip > cfg.max_initial_body as u64 {
                return Err(ClientError::Protocol("resume answer with a body".into()));
            }
            let skip = skip as usize;
            while buf.len() < skip {
                buf.reserve(skip - buf.len());
                if stream.read_buf(&mut buf).await? == 0 {
                    return Err(ClientError::Io(io::ErrorKind::UnexpectedEof.into()));
                }
            }
            buf.advance(skip);
            return Ok(Attempt::Attached {
                stream,
                rest: buf,
                count,
            });
        }
        let body = timeout(
            cfg.response_timeout,
            http::read_plain_body(&mut stream, &mut buf, &head),
        )
        .await
        .unwrap_or_else(|_| Ok(Bytes::new()))
        .unwrap_or_default();
        let body = String::from_utf8_lossy(&body).trim().to_owned();
        match head.status {
            410 => Ok(Attempt::Gone {
                reason: if body.is_empty() {
                    "410 Gone".to_owned()
                } else {
                    body
                },
            }),
            408 | 429 | 500..=599 => Err(ClientError::Protocol(format!(
                "resume answered {}: {body}",
                head.status
            ))),
            status => Ok(Attempt::Refused { status, body }),
        }
    }

    /// Sends `DELETE` with the SessionID on a fresh connection.
    pub(crate) async fn delete(&self) -> Result<(), ClientError> {
        let cfg = &self.config;
        let mut stream = connect(&self.target, cfg.connect_timeout).await?;
        let request = http::request(
            &self.target,
            &cfg.accept,
            &cfg.extra_headers,
            SessionHeaders::End {
                id: self.id.as_str(),
            },
        );
        stream.write_all(&request).await?;
        let mut buf = BytesMut::new();
        let head = timeout(cfg.response_timeout, http::read_head(&mut stream, &mut buf))
            .await
            .map_err(|_| ClientError::Timeout("the DELETE answer"))??;
        if head.status == 204 {
            return Ok(());
        }
        let body = timeout(
            cfg.response_timeout,
            http::read_plain_body(&mut stream, &mut buf, &head),
        )
        .await
        .unwrap_or_else(|_| Ok(Bytes::new()))
        .unwrap_or_default();
        Err(ClientError::CloseFailed {
            status: head.status,
            body,
        })
    }

    fn random(&mut self) -> u64 {
        // xorshift64: jitter only, not security.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

/// One resume attempt's answer.
enum Attempt {
    Attached {
        stream: TcpStream,
        rest: BytesMut,
        count: u64,
    },
    Gone {
        reason: String,
    },
    Refused {
        status: u16,
        body: String,
    },
}

async fn connect(target: &Target, limit: Duration) -> Result<TcpStream, ClientError> {
    let stream = timeout(limit, TcpStream::connect(&target.authority))
        .await
        .map_err(|_| ClientError::Timeout("the TCP connect"))?
        .map_err(|source| ClientError::Connect {
            addr: target.authority.clone(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

fn session_id(head: &ResponseHead) -> Result<SessionId, ClientError> {
    let value = head
        .header("SessionID")
        .ok_or_else(|| ClientError::Protocol("persistent answer without SessionID".into()))?;
    SessionId::parse(value.as_bytes())
        .map_err(|_| ClientError::Protocol(format!("malformed SessionID {value:?}")))
}

/// The line with its LF, or why it is not one line.
pub(crate) fn checked_line(line: &[u8], max_line: usize) -> Result<Bytes, ClientError> {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    if body.contains(&b'\n') {
        return Err(ClientError::InvalidLine(
            "it holds an LF before its end".into(),
        ));
    }
    if body.len() + 1 > max_line {
        return Err(ClientError::InvalidLine(format!(
            "{} bytes with its LF, over max_line {max_line}",
            body.len() + 1
        )));
    }
    let mut full = BytesMut::with_capacity(body.len() + 1);
    full.extend_from_slice(body);
    full.extend_from_slice(b"\n");
    Ok(full.freeze())
}

fn seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() | 1
}
