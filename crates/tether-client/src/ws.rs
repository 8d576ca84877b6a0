//! The WebSocket transport (SPEC 3) for the same sessions, with the same
//! resume logic as the native one: what `tether connect --transport
//! websocket` and HTTPSocket speak.
//!
//! [`open`] upgrades `GET <path>` with subprotocol `persistent`, sends the
//! first control record (empty for a new session, `sid=..&received=n` to
//! take one over), reads the gateway's open record and the initial body,
//! and returns a [`SessionHandle`] whose task carries the session: lines
//! are text frames without their LF, received lines are acknowledged
//! (`ack=<n>`) within [`ACK_AFTER`], and a connection that goes away
//! without the session ending (no close frame, or 1001, 1006, 1011, 1012,
//! 1013, 1014) is resumed with the [`Backoff`](crate::Backoff) policy: the
//! gateway replays the lines after our count, its open record says how many
//! of ours it delivered, and the rest of ours are sent again.
//!
//! The gateway confirms client lines only when a connection opens, so when
//! the unconfirmed lines pass half of `max_unacked_bytes` the task detaches
//! (close 4000) and resumes at once to learn its count, as HTTPSocket does.
//!
//! Ends: close 1000 is the normal end ([`SessionEvent::Ended`]); 4409
//! (taken over), 4410 (resume impossible) and 4502 (the worker failed) are
//! [`ClientError::WebSocketClosed`] with the code and reason; before the
//! session opens, `4000 + status` (the worker's answer did not open one)
//! and a refused upgrade are [`ClientError::NotPersistent`].

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tether_wire::{ClientControl, GatewayOpen, SessionId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

use crate::config::{ClientConfig, Target};
use crate::handle::{Command, SessionEvent, SessionHandle};
use crate::http::{self, ResponseHead};
use crate::resend::ResendBuffer;
use crate::ClientError;

/// Lines received are acknowledged this long after the first one not yet
/// acknowledged (SPEC 3 asks for at least one ack a second).
pub const ACK_AFTER: Duration = Duration::from_millis(500);
const SUBPROTOCOL: &str = "persistent";
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Close codes after which the session may be resumed.
const RESUMABLE: [u16; 7] = [1001, 1005, 1006, 1011, 1012, 1013, 1014];
/// Lines read and not yet taken by the caller above which the task stops
/// reading (backpressure reaches the gateway).
const READY_HIGH_WATER: usize = 256;
/// Bytes queued for the connection above which no more lines are taken.
const OUT_HIGH_WATER: usize = 64 * 1024;
const CHANNEL: usize = 64;

const TEXT: u8 = 1;
const BINARY: u8 = 2;
const CLOSE: u8 = 8;
const PING: u8 = 9;
const PONG: u8 = 10;

/// Opens a session over WebSocket, or takes over `resume` (a SessionID and
/// the count of lines already received), and runs it in a task.
pub async fn open(
    config: ClientConfig,
    resume: Option<(SessionId, u64)>,
) -> Result<SessionHandle, ClientError> {
    let target = Target::parse(&config.url)?;
    let mut rng = Rng::new();
    let mut conn = Conn::connect(&config, &target, &mut rng).await?;
    let record = match &resume {
        None => ClientControl::New,
        Some((sid, received)) => ClientControl::Resume {
            sid: sid.clone(),
            received: *received,
        },
    };
    conn.queue(BINARY, &record.encode(), &mut rng);
    conn.flush().await?;
    let open = conn.read_open(&config, true).await?;
    let mut initial = Bytes::new();
    if open.initial > 0 {
        if open.initial > config.max_initial_body as u64 {
            return Err(ClientError::Protocol(format!(
                "initial body of {} bytes is over max_initial_body",
                open.initial
            )));
        }
        initial = match timeout(config.response_timeout, conn.next_message(&config)).await {
            Err(_) => return Err(ClientError::Timeout("the initial body")),
            Ok(Ok(Message::Text(body))) if body.len() as u64 == open.initial => body,
            Ok(Ok(_)) | Ok(Err(_)) => {
                return Err(ClientError::PartialInitialBody {
                    expected: open.initial,
                    got: 0,
                })
            }
        };
    }
    let (received, resend) = match resume {
        None => (0, ResendBuffer::new(config.max_unacked_bytes)),
        Some((_, received)) => (
            received,
            ResendBuffer::after(config.max_unacked_bytes, open.received),
        ),
    };
    let (cmd_tx, cmd_rx) = mpsc::channel(CHANNEL);
    let (ev_tx, ev_rx) = mpsc::channel(CHANNEL);
    let handle = SessionHandle::new(cmd_tx, config.max_line, ev_rx, open.sid.clone(), initial);
    let task = WsTask {
        config,
        target,
        id: open.sid,
        conn: Some(conn),
        received,
        acked: received,
        resend,
        rng,
        ready: VecDeque::new(),
        ack_due: None,
        resumes: 0,
    };
    tokio::spawn(task.run(cmd_rx, ev_tx));
    Ok(handle)
}

/// One WebSocket message.
#[derive(Debug)]
enum Message {
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Close(u16, String),
}

/// One upgraded connection: its halves' buffers and frame reassembly.
struct Conn {
    stream: TcpStream,
    input: BytesMut,
    out: BytesMut,
    /// A fragmented message being put together: its opcode and payload.
    partial: Option<(u8, BytesMut)>,
}

/// How a connection ended or failed.
enum Gone {
    /// Read or write error, EOF or a frame we cannot read: resume.
    Lost(String),
    /// A close frame.
    Closed(u16, String),
}

impl Conn {
    async fn connect(
        config: &ClientConfig,
        target: &Target,
        rng: &mut Rng,
    ) -> Result<Conn, ClientError> {
        let mut stream = timeout(
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
        let key = base64(&rng.bytes16());
        let mut head = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n",
            target.path, target.host_header
        );
        for (name, value) in &config.extra_headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        let mut input = BytesMut::with_capacity(4096);
        let answer = timeout(
            config.response_timeout,
            http::read_head(&mut stream, &mut input),
        )
        .await
        .map_err(|_| ClientError::Timeout("the upgrade answer"))??;
        if answer.status != 101 {
            let body = timeout(
                config.response_timeout,
                http::read_plain_body(&mut stream, &mut input, &answer),
            )
            .await
            .unwrap_or_else(|_| Ok(Bytes::new()))
            .unwrap_or_default();
            return Err(ClientError::NotPersistent {
                status: answer.status,
                headers: answer.headers,
                body,
            });
        }
        check_upgrade(&answer, &key)?;
        Ok(Conn {
            stream,
            input,
            out: BytesMut::new(),
            partial: None,
        })
    }

    /// Queues one masked frame (a client's frames are always masked).
    fn queue(&mut self, opcode: u8, payload: &[u8], rng: &mut Rng) {
        self.out.extend_from_slice(&[0x80 | opcode]);
        let len = payload.len();
        if len < 126 {
            self.out.extend_from_slice(&[0x80 | len as u8]);
        } else if len <= 0xFFFF {
            self.out.extend_from_slice(&[0x80 | 126]);
            self.out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            self.out.extend_from_slice(&[0x80 | 127]);
            self.out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let mask = rng.next().to_be_bytes();
        let mask = [mask[0], mask[1], mask[2], mask[3]];
        self.out.extend_from_slice(&mask);
        self.out
            .extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    }

    fn queue_close(&mut self, code: u16, rng: &mut Rng) {
        self.queue(CLOSE, &code.to_be_bytes(), rng);
    }

    async fn flush(&mut self) -> io::Result<()> {
        while !self.out.is_empty() {
            let n = self.stream.write(&self.out).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.out.advance(n);
        }
        Ok(())
    }

    /// The next whole message from the buffered input, if there is one.
    fn parse_message(&mut self, max: usize) -> Result<Option<Message>, Gone> {
        loop {
            let Some(frame) = parse_frame(&mut self.input, max).map_err(Gone::Lost)? else {
                return Ok(None);
            };
            let (fin, opcode, payload) = frame;
            match opcode {
                CLOSE => {
                    let (code, reason) = if payload.len() >= 2 {
                        (
                            u16::from_be_bytes([payload[0], payload[1]]),
                            String::from_utf8_lossy(&payload[2..]).into_owned(),
                        )
                    } else {
                        (1005, String::new())
                    };
                    return Ok(Some(Message::Close(code, reason)));
                }
                PING => return Ok(Some(Message::Ping(payload))),
                PONG => continue,
                0 => {
                    let Some((kind, mut data)) = self.partial.take() else {
                        return Err(Gone::Lost("a continuation frame out of place".into()));
                    };
                    if data.len() + payload.len() > max {
                        return Err(Gone::Lost("a message over max_line".into()));
                    }
                    data.extend_from_slice(&payload);
                    if fin {
                        return Ok(Some(whole(kind, data.freeze())));
                    }
                    self.partial = Some((kind, data));
                }
                TEXT | BINARY => {
                    if self.partial.is_some() {
                        return Err(Gone::Lost("a new message inside a fragmented one".into()));
                    }
                    if fin {
                        return Ok(Some(whole(opcode, payload)));
                    }
                    self.partial = Some((opcode, BytesMut::from(&payload[..])));
                }
                other => return Err(Gone::Lost(format!("unknown opcode {other}"))),
            }
        }
    }

    /// Reads until a whole message is there.
    async fn next_message(&mut self, config: &ClientConfig) -> Result<Message, Gone> {
        loop {
            if let Some(m) = self.parse_message(config.max_line)? {
                return Ok(m);
            }
            self.input.reserve(8192);
            match self.stream.read_buf(&mut self.input).await {
                Ok(0) => return Err(Gone::Lost("EOF".into())),
                Ok(_) => {}
                Err(e) => return Err(Gone::Lost(e.to_string())),
            }
        }
    }

    /// The gateway's open record, or why there is none. `opening`: a close
    /// with `4000 + status` means the worker's answer opened no session.
    async fn read_open(
        &mut self,
        config: &ClientConfig,
        opening: bool,
    ) -> Result<GatewayOpen, ClientError> {
        let first = match timeout(config.response_timeout, self.next_message(config)).await {
            Err(_) => return Err(ClientError::Timeout("the open record")),
            Ok(Err(Gone::Lost(why))) => return Err(ClientError::Io(io::Error::other(why))),
            Ok(Err(Gone::Closed(code, reason))) => return Err(closed(code, reason, opening)),
            Ok(Ok(m)) => m,
        };
        match first {
            Message::Binary(record) => GatewayOpen::parse(&record).map_err(|e| {
                ClientError::Protocol(format!(
                    "bad open record {:?}: {e}",
                    String::from_utf8_lossy(&record)
                ))
            }),
            Message::Close(code, reason) => Err(closed(code, reason, opening)),
            _ => Err(ClientError::Protocol(
                "the gateway's first message is not its open record".into(),
            )),
        }
    }
}

fn whole(opcode: u8, payload: Bytes) -> Message {
    if opcode == TEXT {
        Message::Text(payload)
    } else {
        Message::Binary(payload)
    }
}

/// A close before or instead of an open record, as an error. At open,
/// `4000 + status` is the worker's answer that opened no session (SPEC 3),
/// except the codes the gateway uses for its own refusals.
fn closed(code: u16, reason: String, opening: bool) -> ClientError {
    match code {
        4100..=4599
            if opening
                && !matches!(code, 4400 | 4406 | 4408 | 4409 | 4410 | 4429 | 4502 | 4503) =>
        {
            ClientError::NotPersistent {
                status: code - 4000,
                headers: Vec::new(),
                body: Bytes::from(reason),
            }
        }
        4410 => ClientError::SessionLost {
            reason: format!("4410 {reason}"),
        },
        _ => ClientError::WebSocketClosed { code, reason },
    }
}

/// One frame from the start of `buf`: `(fin, opcode, payload)`, or `None`
/// while incomplete. The gateway's frames are never masked.
fn parse_frame(buf: &mut BytesMut, max: usize) -> Result<Option<(bool, u8, Bytes)>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fin = buf[0] & 0x80 != 0;
    let opcode = buf[0] & 0x0F;
    if buf[1] & 0x80 != 0 {
        return Err("a masked frame from the gateway".into());
    }
    let (len, at) = match buf[1] & 0x7F {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().unwrap()), 10),
        126 | 127 => return Ok(None),
        n => (n as u64, 2),
    };
    // Control frames carry at most 125 bytes; a line at most max_line.
    if len > max as u64 + 16 {
        return Err(format!("a frame of {len} bytes, over max_line"));
    }
    let end = at + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    buf.advance(at);
    let payload = buf.split_to(len as usize).freeze();
    Ok(Some((fin, opcode, payload)))
}

/// The 101 must accept our key and choose our subprotocol.
fn check_upgrade(answer: &ResponseHead, key: &str) -> Result<(), ClientError> {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    let expected = base64(&sha.digest().bytes());
    if answer.header("Sec-WebSocket-Accept") != Some(expected.as_str()) {
        return Err(ClientError::Protocol(
            "the upgrade answer's Sec-WebSocket-Accept does not match our key".into(),
        ));
    }
    if !answer
        .header("Sec-WebSocket-Protocol")
        .is_some_and(|p| p.eq_ignore_ascii_case(SUBPROTOCOL))
    {
        return Err(ClientError::Protocol(
            "the upgrade answer did not choose the persistent subprotocol".into(),
        ));
    }
    Ok(())
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// xorshift64 for masks, keys and jitter: RFC 6455 masks defeat cache
/// poisoning by intermediaries, not eavesdroppers.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        Rng(h.finish() | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn bytes16(&mut self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.next().to_be_bytes());
        out[8..].copy_from_slice(&self.next().to_be_bytes());
        out
    }
}

/// The task that carries a WebSocket session.
struct WsTask {
    config: ClientConfig,
    target: Target,
    id: SessionId,
    conn: Option<Conn>,
    /// Lines received (handed to `ready`).
    received: u64,
    /// The count last acknowledged to the gateway.
    acked: u64,
    resend: ResendBuffer,
    rng: Rng,
    ready: VecDeque<SessionEvent>,
    ack_due: Option<Instant>,
    resumes: u64,
}

/// What one step of I/O did.
enum Step {
    Read,
    Wrote,
    Gone(Gone),
}

impl WsTask {
    async fn run(mut self, mut cmds: mpsc::Receiver<Command>, events: mpsc::Sender<SessionEvent>) {
        let mut cmds_open = true;
        let mut closing = false;
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let last = 'session: loop {
            // Whole messages already read, while the caller keeps up.
            while self.ready.len() < READY_HIGH_WATER {
                let Some(conn) = &mut self.conn else { break };
                let gone = match conn.parse_message(self.config.max_line) {
                    Ok(None) => break,
                    Ok(Some(message)) => match self.take(message) {
                        None => continue,
                        Some(gone) => gone,
                    },
                    Err(gone) => gone,
                };
                if let Some(end) = self.after(gone, closing).await {
                    break 'session end;
                }
            }
            let out_len = self.conn.as_ref().map_or(0, |c| c.out.len());
            let taking = cmds_open && !closing && out_len < OUT_HIGH_WATER;
            let reading = self.ready.len() < READY_HIGH_WATER;
            tokio::select! {
                biased;
                _ = events.closed() => return,
                permit = events.reserve(), if !self.ready.is_empty() => {
                    let Ok(permit) = permit else { return };
                    if let Some(event) = self.ready.pop_front() {
                        permit.send(event);
                    }
                }
                cmd = cmds.recv(), if taking => match cmd {
                    None => cmds_open = false,
                    Some(Command::Line(line, reply)) => {
                        let _ = reply.send(self.send_line(line));
                    }
                    Some(Command::Close(reply)) => {
                        // In band, after the lines queued before it; the
                        // gateway answers 1000 once the worker's side is
                        // closed, and its lines still come until then.
                        closing = true;
                        if let Some(conn) = &mut self.conn {
                            conn.queue_close(1000, &mut self.rng);
                        }
                        let _ = reply.send(Ok(()));
                    }
                    Some(Command::DropConnection) => {
                        if let Some(conn) = self.conn.take() {
                            let _ = conn.stream.set_zero_linger();
                        }
                        if let Some(end) = self.after(Gone::Lost("dropped for test".into()), closing).await {
                            break 'session end;
                        }
                    }
                },
                _ = tokio::time::sleep_until(self.ack_due.unwrap_or(far)), if self.ack_due.is_some() => {
                    self.ack_due = None;
                    if self.received > self.acked {
                        self.acked = self.received;
                        if let Some(conn) = &mut self.conn {
                            conn.queue(BINARY, &ClientControl::Ack(self.received).encode(), &mut self.rng);
                        }
                    }
                }
                step = step(&mut self.conn, reading) => match step {
                    Step::Read | Step::Wrote => {}
                    Step::Gone(gone) => {
                        if let Some(end) = self.after(gone, closing).await {
                            break 'session end;
                        }
                    }
                },
            }
        };
        while let Some(event) = self.ready.pop_front() {
            if events.send(event).await.is_err() {
                return;
            }
        }
        let _ = events.send(last).await;
    }

    /// Takes one message; a close is handed back as how the connection went.
    fn take(&mut self, message: Message) -> Option<Gone> {
        match message {
            Message::Text(line) => {
                let mut with_lf = BytesMut::with_capacity(line.len() + 1);
                with_lf.extend_from_slice(&line);
                with_lf.extend_from_slice(b"\n");
                self.received += 1;
                self.ready.push_back(SessionEvent::Line(with_lf.freeze()));
                if self.ack_due.is_none() {
                    self.ack_due = Some(Instant::now() + ACK_AFTER);
                }
                None
            }
            // The gateway sends no control record after its open record.
            Message::Binary(_) => None,
            Message::Ping(payload) => {
                if let Some(conn) = &mut self.conn {
                    conn.queue(PONG, &payload, &mut self.rng);
                }
                None
            }
            Message::Close(code, reason) => Some(Gone::Closed(code, reason)),
        }
    }

    /// After the connection went: the session's last event, or `None` once
    /// it was resumed.
    async fn after(&mut self, gone: Gone, closing: bool) -> Option<SessionEvent> {
        let code = match gone {
            Gone::Closed(code, reason) => {
                if let Some(mut conn) = self.conn.take() {
                    // Answer the close, as RFC 6455 asks, without waiting long.
                    if !closing {
                        conn.queue_close(1000, &mut self.rng);
                    }
                    let _ = timeout(Duration::from_secs(1), conn.flush()).await;
                }
                if closing || code == 1000 {
                    return Some(SessionEvent::Ended);
                }
                if !RESUMABLE.contains(&code) {
                    return Some(SessionEvent::Failed(closed(code, reason, false)));
                }
                code
            }
            Gone::Lost(why) => {
                self.conn = None;
                if closing {
                    return Some(SessionEvent::Ended);
                }
                tracing::debug!(session = %self.id, %why, "WebSocket connection lost");
                1006
            }
        };
        tracing::debug!(session = %self.id, code, "resuming");
        match self.resume().await {
            Ok(()) => None,
            Err(e) => Some(SessionEvent::Failed(e)),
        }
    }

    fn send_line(&mut self, line: Bytes) -> Result<(), ClientError> {
        self.resend.push(line.clone())?;
        let body = &line[..line.len() - 1];
        if let Some(conn) = &mut self.conn {
            conn.queue(TEXT, body, &mut self.rng);
        }
        if self.resend.bytes() > self.config.max_unacked_bytes / 2 {
            // Detach and resume to learn the gateway's count.
            if let Some(conn) = &mut self.conn {
                conn.queue_close(4000, &mut self.rng);
            }
        }
        Ok(())
    }

    /// Reconnects with the backoff policy and resumes; our lines the
    /// gateway lacks are queued again.
    async fn resume(&mut self) -> Result<(), ClientError> {
        self.conn = None;
        self.ack_due = None;
        let policy = self.config.reconnect.clone();
        let attempts = policy.max_attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            let delay = policy.delay(attempt, self.rng.next());
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            match self.try_resume().await {
                Ok(conn) => {
                    self.conn = Some(conn);
                    self.resumes += 1;
                    let resent = self.resend.sent() - self.resend.acked();
                    self.ready.push_back(SessionEvent::Resumed {
                        resent,
                        resumes: self.resumes,
                    });
                    return Ok(());
                }
                Err(
                    e @ (ClientError::SessionLost { .. } | ClientError::WebSocketClosed { .. }),
                ) => return Err(e),
                Err(ClientError::Protocol(why)) if why.starts_with("gateway says") => {
                    return Err(ClientError::Protocol(why))
                }
                Err(e) => {
                    tracing::debug!(attempt, error = %e, "WebSocket resume attempt failed");
                    last = e.to_string();
                }
            }
        }
        Err(ClientError::ReconnectFailed { attempts, last })
    }

    async fn try_resume(&mut self) -> Result<Conn, ClientError> {
        let mut conn = Conn::connect(&self.config, &self.target, &mut self.rng).await?;
        let record = ClientControl::Resume {
            sid: self.id.clone(),
            received: self.received,
        };
        conn.queue(BINARY, &record.encode(), &mut self.rng);
        conn.flush().await?;
        let open = conn.read_open(&self.config, false).await?;
        self.resend.ack(open.received)?;
        self.acked = self.received;
        for line in self.resend.unacked() {
            conn.queue(TEXT, &line[..line.len() - 1], &mut self.rng);
        }
        Ok(conn)
    }
}

/// Writes what is queued and reads (when `reading`), whichever is ready.
async fn step(conn: &mut Option<Conn>, reading: bool) -> Step {
    let Some(Conn {
        stream, input, out, ..
    }) = conn
    else {
        return std::future::pending().await;
    };
    let (mut rd, mut wr) = stream.split();
    input.reserve(8192);
    tokio::select! {
        n = rd.read_buf(input), if reading => match n {
            Ok(0) => Step::Gone(Gone::Lost("EOF".into())),
            Ok(_) => Step::Read,
            Err(e) => Step::Gone(Gone::Lost(e.to_string())),
        },
        w = wr.write(out), if !out.is_empty() => match w {
            Ok(0) => Step::Gone(Gone::Lost("write returned 0".into())),
            Ok(n) => {
                out.advance(n);
                Step::Wrote
            }
            Err(e) => Step::Gone(Gone::Lost(e.to_string())),
        },
        else => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_of_rfc_4648_vectors() {
        for (input, out) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), out);
        }
    }

    #[test]
    fn frames_are_read_whole_and_in_pieces() {
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&[0x81, 5]);
        wire.extend_from_slice(b"hello");
        let mut long = vec![0x82, 126];
        long.extend_from_slice(&300u16.to_be_bytes());
        long.extend(std::iter::repeat_n(b'x', 300));
        wire.extend_from_slice(&long);
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for b in wire.iter() {
            buf.extend_from_slice(&[*b]);
            while let Some(f) = parse_frame(&mut buf, 1024).unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames.len(), 2);
        assert_eq!(
            (frames[0].0, frames[0].1, &frames[0].2[..]),
            (true, TEXT, &b"hello"[..])
        );
        assert_eq!((frames[1].1, frames[1].2.len()), (BINARY, 300));
        let mut masked = BytesMut::from(&[0x81u8, 0x80 | 1, 0, 0, 0, 0, b'a'][..]);
        assert!(parse_frame(&mut masked, 1024).is_err());
    }

    #[test]
    fn closes_before_an_open_record_say_why() {
        assert!(matches!(
            closed(4404, "worker status 404".into(), true),
            ClientError::NotPersistent { status: 404, .. }
        ));
        assert!(matches!(
            closed(4410, "resume impossible".into(), false),
            ClientError::SessionLost { .. }
        ));
        assert!(matches!(
            closed(4409, "taken over".into(), false),
            ClientError::WebSocketClosed { code: 4409, .. }
        ));
        assert!(matches!(
            closed(4502, "worker unreachable".into(), true),
            ClientError::WebSocketClosed { code: 4502, .. }
        ));
    }
}
