//! The WebSocket transport's link (SPEC 3): text frames carry lines (one
//! frame, one line, without its LF), binary frames carry control records;
//! the gateway pings every 15 s and a client silent for 30 s is gone.

use std::borrow::Cow;
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tether_wire::ClientControl;
use tokio::io::AsyncWrite;
use tokio::time::{Instant, Sleep};

use super::frame::{self, Frame};
use crate::session::end::{Closing, EndReason};
use crate::session::handover::LinkState;
use crate::session::link::{poll_read_with, poll_write_out, ClientIo, ClientRead, NotUtf8};

const PING_EVERY: Duration = Duration::from_secs(15);
/// The largest control record a client may send; records are not lines,
/// so `max_line` does not bound them.
const MAX_CONTROL: usize = 1024;
const DEAD_AFTER: Duration = Duration::from_secs(30);
/// Control frames (pongs, close answers) queued and not yet written beyond
/// which the client is not read: a client that pings without reading would
/// otherwise make the gateway queue pongs without limit.
const CONTROL_HIGH: usize = 4 * 1024;

/// A close frame's code and reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CloseWith {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
}

/// How a session's end, or a takeover, is said on a WebSocket (SPEC 3
/// "Close codes", SPEC 6); `failure` is what this link itself found wrong
/// (a frame the client broke, a line a browser cannot take), which is what
/// a protocol error is closed with.
pub(crate) fn close_for(why: Closing, failure: Option<CloseWith>) -> (u16, Cow<'static, str>) {
    let reason = match why {
        Closing::TakenOver => return (4409, Cow::Borrowed("taken over")),
        Closing::Ended(reason) => reason,
    };
    let (code, text) = match reason {
        EndReason::Shutdown => (1012, "shutdown"),
        EndReason::LineTooLong => (frame::CLOSE_TOO_BIG, "line_too_long"),
        EndReason::ProtocolError => failure
            .map_or((frame::CLOSE_INVALID_DATA, "protocol_error"), |f| {
                (f.code, f.reason)
            }),
        EndReason::ResumeGone => (4410, "resume impossible"),
        // Never 4000 + status mid-session: 4409, 4410 and 4429 are the
        // gateway's own (SPEC 6).
        EndReason::WorkerStatus(status) => {
            return (4502, Cow::Owned(format!("worker status {status}")))
        }
        EndReason::WorkerUnreachable => (4502, "worker unreachable"),
        _ => (frame::CLOSE_NORMAL, reason.as_str()),
    };
    (code, Cow::Borrowed(text))
}

pub(crate) struct WsLink {
    io: Box<dyn ClientIo>,
    /// Bytes of frames not yet whole.
    input: BytesMut,
    /// A fragmented message being put together: its opcode and bytes.
    message: Option<(u8, BytesMut)>,
    out: BytesMut,
    /// Bytes written to the client so far: with `control_end`, tells when
    /// every queued control frame is out.
    written: u64,
    /// Where the newest control frame ends, counted like `written`.
    control_end: u64,
    /// Control frame bytes queued since every control frame was last out:
    /// an upper bound of those still unsent, which is what reading waits
    /// on (exact counts would need a record per frame).
    control_unsent: usize,
    max_line: usize,
    eof: bool,
    close_sent: bool,
    /// Why this link broke its session, said when it is closed.
    failure: Option<CloseWith>,
    last_heard: Instant,
    ping: Option<Pin<Box<Sleep>>>,
}

impl WsLink {
    /// A link over an upgraded connection; `input` holds the bytes read
    /// past the upgrade request (the client's first frames).
    pub(crate) fn new(io: Box<dyn ClientIo>, input: BytesMut, max_line: usize) -> WsLink {
        io.tune_for_session();
        WsLink {
            io,
            input,
            message: None,
            out: BytesMut::new(),
            written: 0,
            control_end: 0,
            control_unsent: 0,
            max_line,
            eof: false,
            close_sent: false,
            failure: None,
            last_heard: Instant::now(),
            ping: None,
        }
    }

    /// The socket and the bytes read past the first control record: a
    /// resume relayed to its owner goes on as bytes (SPEC 11).
    pub(crate) fn into_relay(self) -> (Box<dyn ClientIo>, BytesMut) {
        (self.io, self.input)
    }

    pub(crate) fn pending(&self) -> usize {
        self.out.len()
    }

    /// The link as it moves on upgrade (SPEC 10): its bytes both ways,
    /// the message being put together and the control frames still owed,
    /// and a descriptor of its socket; itself back when the socket cannot
    /// move (TLS).
    pub(crate) fn export(self) -> Result<(LinkState, OwnedFd), Box<WsLink>> {
        let Some(fd) = self
            .io
            .plain_socket()
            .and_then(|s| s.try_clone_to_owned().ok())
        else {
            return Err(Box::new(self));
        };
        Ok((
            LinkState::WebSocket {
                input: self.input.to_vec(),
                message: self.message.map(|(op, bytes)| (op, bytes.to_vec())),
                out: self.out.to_vec(),
                control_unsent: self.control_unsent,
                control_end: self.control_end.saturating_sub(self.written) as usize,
                close_sent: self.close_sent,
            },
            fd,
        ))
    }

    /// A link moved here from another process; its liveness clock starts
    /// now.
    pub(crate) fn restore(io: Box<dyn ClientIo>, state: LinkState, max_line: usize) -> WsLink {
        let LinkState::WebSocket {
            input,
            message,
            out,
            control_unsent,
            control_end,
            close_sent,
        } = state
        else {
            unreachable!("a WebSocket link is restored from a WebSocket link's state");
        };
        let mut link = WsLink::new(io, BytesMut::from(&input[..]), max_line);
        link.message = message.map(|(op, bytes)| (op, BytesMut::from(&bytes[..])));
        link.out = BytesMut::from(&out[..]);
        link.control_unsent = control_unsent;
        link.control_end = control_end as u64;
        link.close_sent = close_sent;
        link
    }

    /// Queues a line as a text frame; lines must be UTF-8 for browsers.
    pub(crate) fn queue_line(&mut self, line: &[u8]) -> Result<(), NotUtf8> {
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        if std::str::from_utf8(text).is_err() {
            self.failure = Some(NOT_UTF8);
            return Err(NotUtf8);
        }
        frame::encode(&mut self.out, frame::OP_TEXT, text);
        Ok(())
    }

    /// Queues a text frame that is not a line (the initial body).
    pub(crate) fn queue_text(&mut self, text: &[u8]) -> Result<(), NotUtf8> {
        std::str::from_utf8(text).map_err(|_| NotUtf8)?;
        frame::encode(&mut self.out, frame::OP_TEXT, text);
        Ok(())
    }

    /// Queues a control record (a binary frame).
    pub(crate) fn queue_control(&mut self, record: &[u8]) {
        frame::encode(&mut self.out, frame::OP_BINARY, record);
    }

    /// Queues a control frame and counts it as unsent.
    fn queue_control_frame(&mut self, opcode: u8, payload: &[u8]) {
        let before = self.out.len();
        frame::encode(&mut self.out, opcode, payload);
        self.note_control(before);
    }

    /// Counts what was queued since `out` held `before` bytes as control.
    fn note_control(&mut self, before: usize) {
        self.control_unsent += self.out.len() - before;
        self.control_end = self.written + self.out.len() as u64;
    }

    /// The next whole data message, answering pings on the way.
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<(u8, Bytes), ClientRead>> {
        loop {
            // Backpressure on a client that does not read its pongs: no
            // frame is taken until they are out. Writing here, not only in
            // the session's write pass, also covers a link that has not
            // joined its session yet, and registers this task for the
            // socket becoming writable.
            while self.control_unsent > CONTROL_HIGH {
                match self.poll_write_some(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(_)) => return Poll::Ready(Err(ClientRead::Gone)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            match frame::decode(&mut self.input, self.max_line.max(MAX_CONTROL)) {
                Err(e) if e.code == frame::CLOSE_TOO_BIG => {
                    return Poll::Ready(Err(ClientRead::TooLong))
                }
                Err(e) => return Poll::Ready(Err(self.broken(e.code, e.reason))),
                Ok(Some(f)) => {
                    self.last_heard = Instant::now();
                    if let Some(done) = self.take_frame(f) {
                        return Poll::Ready(done);
                    }
                    continue;
                }
                Ok(None) => {}
            }
            if self.eof {
                return Poll::Ready(Err(ClientRead::Gone));
            }
            let input = &mut self.input;
            match poll_read_with(&mut self.io, cx, |data| input.extend_from_slice(data)) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => self.eof = true,
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => {
                    if self.input.is_empty() && self.input.capacity() > 0 {
                        self.input = BytesMut::new();
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Handles one frame; `Some` when a message is whole or the link ends.
    fn take_frame(&mut self, f: Frame) -> Option<Result<(u8, Bytes), ClientRead>> {
        match f.opcode {
            frame::OP_PING => {
                self.queue_control_frame(frame::OP_PONG, &f.payload);
                None
            }
            frame::OP_PONG => None,
            frame::OP_CLOSE => {
                let code = frame::close_code(&f.payload);
                if code == frame::CLOSE_NORMAL {
                    return Some(Err(ClientRead::End));
                }
                // Any other close detaches (SPEC 3); the answer echoes the
                // client's code unless that code may not be sent.
                if !self.close_sent {
                    let before = self.out.len();
                    frame::encode_close(&mut self.out, frame::close_answer(&f.payload), "");
                    self.note_control(before);
                    self.close_sent = true;
                }
                Some(Err(ClientRead::Gone))
            }
            frame::OP_CONTINUATION => {
                let Some((opcode, mut bytes)) = self.message.take() else {
                    return Some(Err(self.protocol("continuation without a message")));
                };
                if bytes.len() + f.payload.len() > self.max_line.max(MAX_CONTROL) {
                    return Some(Err(ClientRead::TooLong));
                }
                bytes.extend_from_slice(&f.payload);
                if f.fin {
                    Some(Ok((opcode, bytes.freeze())))
                } else {
                    self.message = Some((opcode, bytes));
                    None
                }
            }
            opcode => {
                if self.message.is_some() {
                    return Some(Err(self.protocol("new message inside a fragmented one")));
                }
                if f.fin {
                    Some(Ok((opcode, f.payload)))
                } else {
                    self.message = Some((opcode, BytesMut::from(&f.payload[..])));
                    None
                }
            }
        }
    }

    /// The first message of a connection: it must be a control record.
    pub(crate) fn poll_first(&mut self, cx: &mut Context<'_>) -> Poll<Result<Bytes, ()>> {
        match std::task::ready!(self.poll_message(cx)) {
            Ok((frame::OP_BINARY, payload)) => Poll::Ready(Ok(payload)),
            _ => Poll::Ready(Err(())),
        }
    }

    pub(crate) fn poll_line(&mut self, cx: &mut Context<'_>) -> Poll<ClientRead> {
        let (opcode, payload) = match std::task::ready!(self.poll_message(cx)) {
            Ok(m) => m,
            Err(read) => return Poll::Ready(read),
        };
        if opcode == frame::OP_BINARY {
            return Poll::Ready(match ClientControl::parse(&payload) {
                Ok(ClientControl::Ack(n)) => ClientRead::Ack(n),
                _ => self.broken(4400, "bad control record"),
            });
        }
        if std::str::from_utf8(&payload).is_err() {
            return Poll::Ready(self.broken(frame::CLOSE_INVALID_DATA, "invalid utf-8"));
        }
        if payload.contains(&b'\n') {
            return Poll::Ready(self.broken(frame::CLOSE_INVALID_DATA, "protocol_error"));
        }
        if payload.len() + 1 > self.max_line {
            return Poll::Ready(ClientRead::TooLong);
        }
        let mut line = BytesMut::with_capacity(payload.len() + 1);
        line.put_slice(&payload);
        line.put_u8(b'\n');
        Poll::Ready(ClientRead::Line(line.freeze()))
    }

    pub(crate) fn poll_write_some(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let before = self.out.len();
        let polled = poll_write_out(&mut self.io, cx, &mut self.out);
        self.written += (before - self.out.len()) as u64;
        if self.written >= self.control_end {
            self.control_unsent = 0;
        }
        polled
    }

    /// Writes everything queued; used before the link joins a session.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| {
            while !self.out.is_empty() {
                std::task::ready!(self.poll_write_some(cx))?;
            }
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// A client that broke the rules: the session ends, and this link is
    /// closed with `code` (the task only learns that it broke).
    fn broken(&mut self, code: u16, reason: &'static str) -> ClientRead {
        self.failure = Some(CloseWith { code, reason });
        ClientRead::Broken
    }

    /// A frame sequence RFC 6455 forbids (the why is for debugging only).
    fn protocol(&mut self, why: &'static str) -> ClientRead {
        tracing::debug!(why, "WebSocket protocol error");
        self.broken(frame::CLOSE_PROTOCOL, "protocol_error")
    }

    fn queue_close(&mut self, code: u16, reason: &str) {
        if !self.close_sent {
            frame::encode_close(&mut self.out, code, reason);
            self.close_sent = true;
        }
    }

    /// Everything queued is written, then the end of the stream.
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            std::task::ready!(self.poll_write_some(cx))?;
        }
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    /// Every queued line, then a close frame that says `why`.
    pub(crate) fn poll_finish(
        &mut self,
        cx: &mut Context<'_>,
        why: Closing,
    ) -> Poll<io::Result<()>> {
        if !self.close_sent {
            let (code, reason) = close_for(why, self.failure);
            self.queue_close(code, &reason);
        }
        self.poll_shutdown(cx)
    }

    /// Closes for `why` as far as the socket takes it at once.
    pub(crate) fn abort(mut self, why: Closing) {
        if !self.close_sent {
            // Unsent lines are not owed to a connection that is closed.
            self.out.clear();
            let (code, reason) = close_for(why, self.failure);
            self.queue_close(code, &reason);
        }
        let mut cx = Context::from_waker(Waker::noop());
        let _ = self.poll_write_some(&mut cx);
        let _ = Pin::new(&mut self.io).poll_shutdown(&mut cx);
    }

    /// Lets go of a link the client left: what is queued (a close answer)
    /// goes out if the socket takes it at once, nothing more is added.
    pub(crate) fn release(mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        let _ = self.poll_write_some(&mut cx);
        let _ = Pin::new(&mut self.io).poll_shutdown(&mut cx);
    }

    /// Closes a link that never joined a session, waiting at most a moment
    /// for the close frame to go out.
    pub(crate) async fn close(mut self, close: CloseWith) {
        self.queue_close(close.code, close.reason);
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = std::future::poll_fn(|cx| self.poll_shutdown(cx)).await;
        })
        .await;
    }

    /// Pings every 15 s; `Ready` once the client was silent for 30 s.
    pub(crate) fn poll_dead(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let ping = self
                .ping
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(PING_EVERY)));
            if ping.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if self.last_heard.elapsed() >= DEAD_AFTER {
                return Poll::Ready(());
            }
            ping.as_mut().reset(Instant::now() + PING_EVERY);
            self.queue_control_frame(frame::OP_PING, b"");
        }
    }
}

/// Worker output a browser cannot take (SPEC 3).
pub(crate) const NOT_UTF8: CloseWith = CloseWith {
    code: 4502,
    reason: "not utf-8",
};

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const PINGS: usize = 2000;
    const PONG: usize = 2 + 125;

    /// A masked ping with the largest payload (mask key 0).
    fn ping() -> Vec<u8> {
        let mut f = vec![0x89, 0x80 | 125, 0, 0, 0, 0];
        f.extend([b'p'; 125]);
        f
    }

    /// A masked close frame with `payload` (mask key 0).
    fn close_frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x88, 0x80 | payload.len() as u8, 0, 0, 0, 0];
        f.extend(payload);
        f
    }

    #[tokio::test]
    async fn a_reserved_close_code_is_answered_1002_never_echoed() {
        for (sent, answered) in [
            (&1005u16.to_be_bytes()[..], 1002),
            (&1006u16.to_be_bytes()[..], 1002),
            (&1015u16.to_be_bytes()[..], 1002),
            (&2999u16.to_be_bytes()[..], 1002),
            (&4001u16.to_be_bytes()[..], 4001),
            (&[][..], 1000),
        ] {
            let (mut client, server) = tokio::io::duplex(1024);
            let mut link = WsLink::new(Box::new(server), BytesMut::new(), 1024);
            client.write_all(&close_frame(sent)).await.expect("close");
            let read = std::future::poll_fn(|cx| link.poll_line(cx)).await;
            assert!(
                matches!(read, ClientRead::Gone),
                "a close that is not 1000 detaches"
            );
            link.release();
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.expect("answer");
            assert_eq!(answer[0], 0x88, "a close frame");
            let code = frame::close_code(&answer[2..]);
            assert_eq!(code, answered, "answer to {sent:?}");
        }
    }

    /// The close frame a link sends when closed for `why` after `setup`.
    async fn close_said(why: Closing, setup: impl FnOnce(&mut WsLink)) -> (u16, String) {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut link = WsLink::new(Box::new(server), BytesMut::new(), 1024);
        setup(&mut link);
        link.out.clear();
        std::future::poll_fn(|cx| link.poll_finish(cx, why))
            .await
            .expect("finish");
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.expect("close");
        assert_eq!(answer[0], 0x88, "a close frame");
        let payload = &answer[2..2 + usize::from(answer[1])];
        let reason = String::from_utf8(payload[2..].to_vec()).expect("UTF-8");
        (frame::close_code(payload), reason)
    }

    #[tokio::test]
    async fn close_codes_of_spec_3_and_6() {
        let ended = Closing::Ended;
        for (why, code, reason) in [
            (Closing::TakenOver, 4409, "taken over"),
            // SPEC v1.2 section 6: never 4000 + status mid-session.
            (
                ended(EndReason::WorkerStatus(500)),
                4502,
                "worker status 500",
            ),
            (
                ended(EndReason::WorkerStatus(409)),
                4502,
                "worker status 409",
            ),
            (
                ended(EndReason::WorkerUnreachable),
                4502,
                "worker unreachable",
            ),
            (ended(EndReason::ResumeGone), 4410, "resume impossible"),
            (ended(EndReason::Shutdown), 1012, "shutdown"),
            (ended(EndReason::LineTooLong), 1009, "line_too_long"),
            (ended(EndReason::ProtocolError), 1007, "protocol_error"),
            (ended(EndReason::WorkerEnd), 1000, "worker_end"),
            (ended(EndReason::GraceExpired), 1000, "grace_expired"),
            (ended(EndReason::Admin), 1000, "admin"),
        ] {
            assert_eq!(close_said(why, |_| {}).await, (code, reason.to_owned()));
        }
        // A protocol error is said the way this link found it.
        let said = close_said(ended(EndReason::ProtocolError), |link| {
            assert!(link.queue_line(b"\xff\n").is_err());
        });
        assert_eq!(said.await, (4502, "not utf-8".to_owned()));
        let said = close_said(ended(EndReason::ProtocolError), |link| {
            link.protocol("test");
        });
        assert_eq!(said.await, (1002, "protocol_error".to_owned()));
    }

    async fn poll_line_once(link: &mut WsLink) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(link.poll_line(cx).is_pending())).await
    }

    #[tokio::test]
    async fn unread_pongs_stop_reading_until_they_drain() {
        let (client, server) = tokio::io::duplex(16 * 1024);
        let (mut client_rd, mut client_wr) = tokio::io::split(client);
        let mut link = WsLink::new(Box::new(server), BytesMut::new(), 1024);
        let writer = tokio::spawn(async move {
            for _ in 0..PINGS {
                client_wr.write_all(&ping()).await.expect("ping");
            }
        });

        // The client reads nothing: once the pipe toward it is full, the
        // pongs queued stay under the bound and the pings wait.
        let mut most = 0;
        for _ in 0..500 {
            assert!(poll_line_once(&mut link).await, "pings are not messages");
            most = most.max(link.pending());
            tokio::task::yield_now().await;
        }
        assert!(most <= CONTROL_HIGH + PONG, "{most} bytes of pongs queued");
        assert!(link.control_unsent > CONTROL_HIGH, "reading is held back");
        assert!(link.pending() > 0);
        assert!(!writer.is_finished(), "the client's pings wait");

        // The client reads: every ping gets its pong.
        let mut got = 0;
        let mut buf = vec![0u8; 8192];
        while got < PINGS * PONG {
            assert!(poll_line_once(&mut link).await);
            if link.pending() > 0 {
                let _ = std::future::poll_fn(|cx| Poll::Ready(link.poll_write_some(cx))).await;
            }
            most = most.max(link.pending());
            let read = tokio::time::timeout(Duration::from_millis(20), client_rd.read(&mut buf));
            if let Ok(n) = read.await {
                got += n.expect("read");
            }
        }
        assert_eq!(got, PINGS * PONG);
        assert!(most <= CONTROL_HIGH + PONG, "{most}");
        writer.await.expect("writer");
    }
}
