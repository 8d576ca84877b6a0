//! The session task alone, in-process: links and worker sides over
//! `tokio::io::duplex` pipes, time paused so that timers are checked at
//! their exact instant (SPEC 2 and 4 through the task's own interface).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tether_wire::SessionId;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{spawn, Command, Gone, Opening, Resumed};
use crate::config::{OriginUrl, PersistentConfig};
use crate::metrics::Metrics;
use crate::session::balance::Workers;
use crate::session::link::Link;
use crate::session::native::NativeLink;
use crate::session::registry::{Registry, SessionHandle};
use crate::session::websocket::WsLink;
use crate::session::worker_side::{StreamSide, WorkerSide};

const HOST: &str = "t.test";
/// Room in each direction of a pipe: small, so that a client that does not
/// read is soon a full socket.
const PIPE: usize = 256;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Lets every task run until it waits; the clock does not move.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// `line 0007\n`: ten bytes each.
fn line(n: usize) -> String {
    format!("line {n:04}\n")
}

fn lines(from: usize, to: usize) -> String {
    (from..=to).map(line).collect()
}

/// A session as its task sees it, with the far ends of its pipes.
struct Session {
    metrics: Arc<Metrics>,
    handle: SessionHandle,
    /// The worker's end of its connection.
    worker: BufReader<DuplexStream>,
    max_line: usize,
    _registry: Arc<Registry>,
}

/// Small limits, so that each boundary is a few lines away.
fn config(adjust: impl FnOnce(&mut PersistentConfig)) -> PersistentConfig {
    let url = OriginUrl {
        as_written: "http://127.0.0.1:9".into(),
        authority: "127.0.0.1:9".into(),
        host: "127.0.0.1".into(),
        port: 9,
    };
    let mut c = PersistentConfig::with_defaults(&url);
    c.resume_grace = secs(30);
    c.unused_grace = secs(30);
    c.max_line = 64;
    c.replay_window = 4 * 1024;
    c.detached_backlog = 1024;
    c.max_lines_per_second = 10_000;
    adjust(&mut c);
    c
}

/// A session that just opened on a stream-mode worker, waiting for its
/// first link (generation 0).
fn open(config: PersistentConfig) -> Session {
    let metrics = Arc::new(Metrics::default());
    let registry = Arc::new(Registry::new(metrics.clone()));
    let vhost: Arc<str> = Arc::from(HOST);
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let slot = registry.admit(&vhost, ip, 10, 10).expect("a place");
    let id = SessionId::from_random([7; 24]);
    let workers = Workers::new(
        HOST,
        &config.workers,
        registry.workers(),
        &metrics.vhost(HOST),
    );
    let Ok(pin) = workers.claim(&id, 10) else {
        panic!("no worker place");
    };
    let (worker, gateway_end) = tokio::io::duplex(PIPE);
    let max_line = config.max_line;
    let handle = spawn(Opening {
        id,
        vhost: vhost.clone(),
        hosts: Arc::from(vec![HOST.to_owned()]),
        worker: WorkerSide::Stream(StreamSide::new(Box::new(gateway_end), b"", max_line)),
        config: Arc::new(config),
        peer: SocketAddr::new(ip, 40000),
        message: None,
        slot,
        pin,
        registry: registry.clone(),
        metrics: metrics.vhost(HOST),
    });
    Session {
        metrics,
        handle,
        worker: BufReader::new(worker),
        max_line,
        _registry: registry,
    }
}

impl Session {
    fn attach(&self, gen: u64, link: Link) {
        let cmd = Command::Attach {
            gen,
            link: Box::new(link),
        };
        assert!(self.handle.mailbox.send(cmd).is_ok(), "the session is live");
    }

    /// A native client attached as generation `gen`.
    fn native(&self, gen: u64) -> BufReader<DuplexStream> {
        let (client, gateway_end) = tokio::io::duplex(PIPE);
        let link = NativeLink::new(Box::new(gateway_end), self.max_line);
        self.attach(gen, Link::Native(link));
        BufReader::new(client)
    }

    /// A WebSocket client attached as generation `gen`.
    fn websocket(&self, gen: u64) -> DuplexStream {
        let (client, gateway_end) = tokio::io::duplex(PIPE);
        let link = WsLink::new(Box::new(gateway_end), BytesMut::new(), self.max_line);
        self.attach(gen, Link::WebSocket(link));
        client
    }

    async fn resume(&self, received: u64) -> Result<Resumed, Gone> {
        let (reply, answer) = oneshot::channel();
        let cmd = Command::Resume { received, reply };
        if self.handle.mailbox.send(cmd).is_err() {
            return Err(Gone);
        }
        let answer = tokio::time::timeout(STUCK, answer).await;
        answer.expect("answered in time").unwrap_or(Err(Gone))
    }

    /// A sample of the metrics as rendered, by its name and label pairs.
    fn sample(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self.metrics.render(&[]);
        let found = text.lines().find(|l| {
            l.starts_with(&format!("{name}{{"))
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        });
        let found = found.unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"));
        let value = found.rsplit(' ').next().expect("a value");
        value.parse().expect("a number")
    }

    /// The reason the session ended with, once it has.
    fn ended(&self) -> Option<String> {
        let text = self.metrics.render(&[]);
        let line = text
            .lines()
            .find(|l| l.starts_with("tether_sessions_ended_total{") && !l.ends_with(" 0"))?;
        let reason = line.split("reason=\"").nth(1)?.split('"').next()?;
        Some(reason.to_owned())
    }

    fn gauge(&self, state: &str) -> f64 {
        self.sample("tether_sessions", &[("vhost", HOST), ("state", state)])
    }

    async fn worker_line(&mut self) -> String {
        read_line(&mut self.worker).await
    }

    async fn worker_writes(&mut self, text: &str) {
        self.worker
            .get_mut()
            .write_all(text.as_bytes())
            .await
            .expect("the worker writes");
    }

    /// The worker's end, for a worker that runs on its own.
    fn take_worker(&mut self) -> DuplexStream {
        let none = BufReader::new(tokio::io::duplex(1).0);
        std::mem::replace(&mut self.worker, none).into_inner()
    }

    /// Whether the task has closed the worker's connection.
    async fn worker_closed(&mut self) -> bool {
        let mut rest = Vec::new();
        let read = self.worker.read_to_end(&mut rest);
        matches!(tokio::time::timeout(ms(1), read).await, Ok(Ok(_)))
    }
}

/// How long a test waits for what should come: time is paused, so a task
/// that is stuck fails the test at once instead of hanging it.
const STUCK: Duration = Duration::from_secs(600);

async fn read_line(r: &mut BufReader<DuplexStream>) -> String {
    let mut line = String::new();
    let read = tokio::time::timeout(STUCK, r.read_line(&mut line));
    read.await.expect("a line in time").expect("a line");
    line
}

/// Everything until EOF; panics if the stream does not end.
async fn read_to_end(r: &mut BufReader<DuplexStream>) -> String {
    let mut all = String::new();
    let read = tokio::time::timeout(STUCK, r.read_to_string(&mut all));
    read.await.expect("EOF").expect("text");
    all
}

/// A masked client frame (mask key 0).
fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n => {
            f.push(0x80 | 126);
            f.extend((n as u16).to_be_bytes());
        }
    }
    f.extend([0; 4]);
    f.extend(payload);
    f
}

/// The next server frame: opcode and payload.
async fn ws_read(c: &mut DuplexStream) -> (u8, Vec<u8>) {
    tokio::time::timeout(STUCK, ws_read_now(c))
        .await
        .expect("a frame in time")
}

async fn ws_read_now(c: &mut DuplexStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    c.read_exact(&mut head).await.expect("a frame");
    let len = match head[1] {
        126 => usize::from(c.read_u16().await.expect("length")),
        127 => c.read_u64().await.expect("length") as usize,
        n => usize::from(n),
    };
    let mut payload = vec![0; len];
    c.read_exact(&mut payload).await.expect("payload");
    (head[0] & 0x0F, payload)
}

/// Frames up to the close frame: the text frames, and the close's code.
async fn ws_until_close(c: &mut DuplexStream) -> (Vec<String>, u16) {
    let mut texts = Vec::new();
    loop {
        match ws_read(c).await {
            (0x1, text) => texts.push(String::from_utf8(text).expect("UTF-8")),
            (0x8, close) => return (texts, u16::from_be_bytes([close[0], close[1]])),
            _ => {}
        }
    }
}

#[tokio::test(start_paused = true)]
async fn grace_expires_at_its_exact_instant() {
    let mut s = open(config(|c| {
        c.resume_grace = secs(10);
        c.unused_grace = secs(2);
    }));
    let mut client = s.native(0);
    settle().await;
    assert_eq!(s.gauge("attached"), 1.0);
    client.get_mut().write_all(b"hello\n").await.unwrap();
    assert_eq!(s.worker_line().await, "hello\n");
    s.worker_writes("welcome\n").await;
    assert_eq!(read_line(&mut client).await, "welcome\n");

    // Attached, nothing runs out however long the client is quiet.
    tokio::time::sleep(secs(60)).await;
    assert_eq!(s.ended(), None);

    drop(client);
    settle().await;
    let dropped = Instant::now();
    assert_eq!((s.gauge("attached"), s.gauge("detached")), (0.0, 1.0));
    // The session carried lines: resume_grace, not unused_grace.
    tokio::time::sleep_until(dropped + secs(10) - ms(1)).await;
    settle().await;
    assert_eq!(s.ended(), None, "ended before resume_grace ran out");
    tokio::time::sleep_until(dropped + secs(10)).await;
    settle().await;
    assert_eq!(s.ended().as_deref(), Some("grace_expired"));
    assert_eq!(Instant::now(), dropped + secs(10));
    assert!(s.worker_closed().await, "the worker's connection is closed");
    assert_eq!(s.gauge("detached"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_session_that_never_carried_a_line_gets_unused_grace() {
    let short = |c: &mut PersistentConfig| {
        c.resume_grace = secs(60);
        c.unused_grace = secs(5);
    };
    // Never attached: from the open.
    let s = open(config(short));
    let opened = Instant::now();
    tokio::time::sleep_until(opened + secs(5) - ms(1)).await;
    settle().await;
    assert_eq!(s.ended(), None);
    tokio::time::sleep_until(opened + secs(5)).await;
    settle().await;
    assert_eq!(s.ended().as_deref(), Some("grace_expired"));

    // Attached, then dropped without a line either way: from the drop.
    let s = open(config(short));
    let client = s.native(0);
    tokio::time::sleep(secs(30)).await;
    assert_eq!(s.ended(), None, "no grace runs while attached");
    drop(client);
    settle().await;
    let dropped = Instant::now();
    tokio::time::sleep_until(dropped + secs(5) - ms(1)).await;
    settle().await;
    assert_eq!(s.ended(), None);
    tokio::time::sleep_until(dropped + secs(5)).await;
    settle().await;
    assert_eq!(s.ended().as_deref(), Some("grace_expired"));

    // unused_grace never lengthens resume_grace.
    let s = open(config(|c| {
        c.resume_grace = secs(3);
        c.unused_grace = secs(5);
    }));
    tokio::time::sleep(secs(3)).await;
    settle().await;
    assert_eq!(s.ended().as_deref(), Some("grace_expired"));
}

#[tokio::test(start_paused = true)]
async fn a_takeover_is_answered_at_once_while_the_old_client_is_silent() {
    let mut s = open(config(|_| {}));
    let mut old = s.native(0);
    // The old client reads nothing: its pipe fills, and the link holds
    // output it cannot write.
    s.worker_writes(&lines(1, 60)).await;
    settle().await;

    let asked = Instant::now();
    let resumed = s.resume(0).await.expect("the takeover succeeds");
    assert_eq!(Instant::now(), asked, "answered without waiting");
    assert_eq!((resumed.gen, resumed.delivered), (1, 0));
    // The old connection is closed (native: TCP close).
    let got = read_to_end(&mut old).await;
    assert!(lines(1, 60).starts_with(&got), "a prefix, in order");
    assert!(got.len() < lines(1, 60).len(), "it was not reading");

    let mut new = s.native(1);
    s.worker_writes(&lines(61, 62)).await;
    let mut all = String::new();
    for _ in 1..=62 {
        all.push_str(&read_line(&mut new).await);
    }
    assert_eq!(all, lines(1, 62), "every line once, in order");
    assert_eq!(s.sample("tether_takeovers_total", &[("vhost", HOST)]), 1.0);
    assert_eq!(s.ended(), None);
}

#[tokio::test(start_paused = true)]
async fn a_websocket_taken_over_is_closed_4409() {
    let mut s = open(config(|_| {}));
    let mut old = s.websocket(0);
    s.worker_writes("one\n").await;
    assert_eq!(ws_read(&mut old).await, (0x1, b"one".to_vec()));
    // Silent from here on.
    let asked = Instant::now();
    let resumed = s.resume(1).await.expect("the takeover succeeds");
    assert_eq!(Instant::now(), asked);
    assert_eq!(resumed.gen, 1);
    let (texts, code) = ws_until_close(&mut old).await;
    assert_eq!((texts.len(), code), (0, 4409));
    let mut new = s.websocket(1);
    s.worker_writes("two\n").await;
    assert_eq!(ws_read(&mut new).await, (0x1, b"two".to_vec()));
}

/// A session whose client has received lines 1..=10 (ten bytes each) with
/// a window of four lines: `S` = 10, `o` = 7.
async fn ten_lines_sent(window_lines: usize) -> (Session, BufReader<DuplexStream>) {
    let mut s = open(config(|c| c.replay_window = window_lines * 10));
    let mut client = s.native(0);
    s.worker_writes(&lines(1, 10)).await;
    for n in 1..=10 {
        assert_eq!(read_line(&mut client).await, line(n));
    }
    (s, client)
}

#[tokio::test(start_paused = true)]
async fn the_replay_window_boundary() {
    // c = o - 1: the oldest line held is replayed first.
    let (mut s, _old) = ten_lines_sent(4).await;
    let resumed = s.resume(6).await.expect("c = o - 1 resumes");
    let mut client = s.native(resumed.gen);
    for n in 7..=10 {
        assert_eq!(read_line(&mut client).await, line(n));
    }
    // c = S: nothing to replay, live lines follow.
    let resumed = s.resume(10).await.expect("c = S resumes");
    let mut client = s.native(resumed.gen);
    s.worker_writes(&line(11)).await;
    assert_eq!(read_line(&mut client).await, line(11));
    // c = S + 1: gone, and the session ends.
    assert!(s.resume(12).await.is_err(), "c = S + 1 is gone");
    settle().await;
    assert_eq!(s.ended().as_deref(), Some("resume_gone"));
    assert!(s.worker_closed().await);

    // c = o - 2: gone.
    let (mut s, _old) = ten_lines_sent(4).await;
    assert!(s.resume(5).await.is_err(), "c = o - 2 is gone");
    settle().await;
    assert_eq!(s.ended().as_deref(), Some("resume_gone"));
    assert!(s.worker_closed().await);
}

#[tokio::test(start_paused = true)]
async fn detached_backlog_blocks_the_worker() {
    let mut s = open(config(|c| c.detached_backlog = 1024));
    let written = Arc::new(AtomicUsize::new(0));
    let count = written.clone();
    let mut worker = s.take_worker();
    let writer = tokio::spawn(async move {
        for n in 1..=1000 {
            worker.write_all(line(n).as_bytes()).await.expect("write");
            count.fetch_add(10, Ordering::SeqCst);
        }
        worker
    });
    tokio::time::sleep(secs(5)).await;
    let held = s.sample("tether_backlog_bytes", &[("vhost", HOST)]) as usize;
    let sent = written.load(Ordering::SeqCst);
    // Lines are taken up to the backlog; beyond it only what one read
    // brought in (at most a pipe's worth) waits in the line reader, and
    // the rest in the pipe and the worker's blocked write.
    assert!((1024..1024 + PIPE).contains(&held), "{held} bytes held");
    assert!(sent <= held + 2 * PIPE, "{sent} bytes written, {held} held");
    assert!(!writer.is_finished(), "the worker's writes block");
    assert_eq!(s.ended(), None);

    let mut client = s.native(0);
    let mut all = String::new();
    for _ in 1..=1000 {
        all.push_str(&read_line(&mut client).await);
    }
    assert_eq!(all, lines(1, 1000));
    writer.await.expect("the worker wrote everything");
}

#[tokio::test(start_paused = true)]
async fn worker_end_attached_gets_every_queued_line_then_eof() {
    let mut s = open(config(|_| {}));
    let mut client = s.native(0);
    settle().await;
    // More than the pipes hold: most lines are still queued in the task
    // when the worker's end is seen.
    s.worker_writes(&lines(1, 20)).await;
    let mut worker = s.take_worker();
    let rest = tokio::spawn(async move {
        worker.write_all(lines(21, 200).as_bytes()).await.unwrap();
    });
    rest.await.unwrap();
    settle().await;
    assert_eq!(s.ended(), None, "finishing: lines are owed");
    assert_eq!(read_to_end(&mut client).await, lines(1, 200));
    settle().await;
    assert_eq!(s.ended().as_deref(), Some("worker_end"));
}

#[tokio::test(start_paused = true)]
async fn worker_end_detached_client_resumes_within_grace_for_the_rest() {
    let mut s = open(config(|c| c.resume_grace = secs(10)));
    let mut client = s.native(0);
    s.worker_writes(&lines(1, 2)).await;
    assert_eq!(read_line(&mut client).await, line(1));
    assert_eq!(read_line(&mut client).await, line(2));
    drop(client);
    settle().await;
    let dropped = Instant::now();
    s.worker_writes(&lines(3, 5)).await;
    s.worker_writes("partial, never a line").await;
    drop(s.take_worker());
    tokio::time::sleep_until(dropped + secs(10) - ms(1)).await;
    settle().await;
    assert_eq!(s.ended(), None, "the lines wait for a resume within grace");
    let resumed = s.resume(2).await.expect("a resume");
    let mut client = s.native(resumed.gen);
    assert_eq!(read_to_end(&mut client).await, lines(3, 5));
    settle().await;
    assert_eq!(s.ended().as_deref(), Some("worker_end"));

    // Nobody resumes: the end comes with the grace, still a worker end.
    let mut s = open(config(|c| c.resume_grace = secs(10)));
    s.worker_writes(&lines(1, 3)).await;
    drop(s.take_worker());
    settle().await;
    let ended = Instant::now();
    tokio::time::sleep_until(ended + secs(10) - ms(1)).await;
    settle().await;
    assert_eq!(s.ended(), None);
    tokio::time::sleep_until(ended + secs(10)).await;
    settle().await;
    assert_eq!(s.ended().as_deref(), Some("worker_end"));
}

#[tokio::test(start_paused = true)]
async fn a_client_line_too_long_ends_the_session() {
    // Native: max_line bytes without their LF are already too long.
    let mut s = open(config(|c| c.max_line = 64));
    let mut client = s.native(0);
    client.get_mut().write_all(&[b'x'; 64]).await.unwrap();
    settle().await;
    assert_eq!(s.ended().as_deref(), Some("line_too_long"));
    assert_eq!(read_to_end(&mut client).await, "");
    assert!(s.worker_closed().await);

    // WebSocket: a frame's payload plus one over max_line, closed 1009.
    let mut s = open(config(|c| c.max_line = 64));
    let mut client = s.websocket(0);
    let ok = ws_frame(0x1, &[b'y'; 63]);
    client.write_all(&ok).await.unwrap();
    assert_eq!(s.worker_line().await.len(), 64, "63 bytes and the LF fit");
    client.write_all(&ws_frame(0x1, &[b'x'; 64])).await.unwrap();
    let (_, code) = ws_until_close(&mut client).await;
    assert_eq!(code, 1009);
    settle().await;
    assert_eq!(s.ended().as_deref(), Some("line_too_long"));
    assert!(s.worker_closed().await);
}

#[tokio::test(start_paused = true)]
async fn a_worker_line_too_long_ends_the_session() {
    let mut s = open(config(|c| c.max_line = 64));
    let mut client = s.native(0);
    s.worker_writes(&"w".repeat(63)).await;
    s.worker_writes("\n").await;
    assert_eq!(
        read_line(&mut client).await.len(),
        64,
        "a line of max_line fits"
    );
    s.worker_writes(&"w".repeat(65)).await;
    assert_eq!(read_to_end(&mut client).await, "");
    settle().await;
    assert_eq!(s.ended().as_deref(), Some("line_too_long"));
    assert!(s.worker_closed().await);

    let mut s = open(config(|c| c.max_line = 64));
    let mut client = s.websocket(0);
    s.worker_writes(&"w".repeat(65)).await;
    let (_, code) = ws_until_close(&mut client).await;
    assert_eq!(code, 1009);
    settle().await;
    assert_eq!(s.ended().as_deref(), Some("line_too_long"));
}

#[tokio::test(start_paused = true)]
async fn the_line_rate_slows_reading_and_drops_nothing() {
    let mut s = open(config(|c| c.max_lines_per_second = 5));
    let mut client = s.native(0);
    settle().await;
    let start = Instant::now();

    // Client to worker: five lines a second, every one delivered.
    client
        .get_mut()
        .write_all(lines(1, 12).as_bytes())
        .await
        .unwrap();
    for n in 1..=12 {
        assert_eq!(s.worker_line().await, line(n));
        let second = (n as u64 - 1) / 5;
        assert_eq!(start.elapsed(), secs(second), "line {n}");
    }

    // Worker to client, likewise.
    let start = Instant::now();
    s.worker_writes(&lines(1, 12)).await;
    for n in 1..=12 {
        assert_eq!(read_line(&mut client).await, line(n));
        let second = (n as u64 - 1) / 5;
        assert_eq!(start.elapsed(), secs(second), "line {n}");
    }
    assert_eq!(s.ended(), None);
}

#[test]
fn a_session_without_a_link_does_not_carry_room_for_one() {
    // Idle sessions are the many (issue 17's budget): the attached link
    // stays in the box it came in.
    assert!(std::mem::size_of::<super::State>() <= 32);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_makes_no_write_progress_for_30_s_is_detached() {
    let mut s = open(config(|_| {}));
    let _client = s.native(0);
    s.worker_writes(&lines(1, 100)).await;
    settle().await;
    let stalled = Instant::now();
    tokio::time::sleep_until(stalled + secs(30) - ms(1)).await;
    settle().await;
    assert_eq!(s.gauge("attached"), 1.0);
    tokio::time::sleep_until(stalled + secs(30)).await;
    settle().await;
    assert_eq!((s.gauge("attached"), s.gauge("detached")), (0.0, 1.0));
    // Its lines were sent: a resume gets them again.
    let resumed = s.resume(0).await.expect("a resume");
    let mut client = s.native(resumed.gen);
    let mut all = String::new();
    for _ in 1..=100 {
        all.push_str(&read_line(&mut client).await);
    }
    assert_eq!(all, lines(1, 100));
}

#[tokio::test(start_paused = true)]
async fn a_websocket_silent_for_30_s_is_detached() {
    let s = open(config(|_| {}));
    let mut client = s.websocket(0);
    settle().await;
    let attached = Instant::now();
    assert_eq!(ws_read(&mut client).await, (0x9, Vec::new()), "a ping");
    assert_eq!(Instant::now(), attached + secs(15));
    tokio::time::sleep_until(attached + secs(30) - ms(1)).await;
    settle().await;
    assert_eq!(s.gauge("attached"), 1.0);
    tokio::time::sleep_until(attached + secs(30)).await;
    settle().await;
    assert_eq!((s.gauge("attached"), s.gauge("detached")), (0.0, 1.0));
}

#[tokio::test(start_paused = true)]
async fn delete_closes_the_worker_at_once_and_the_client_gets_its_lines() {
    let mut s = open(config(|_| {}));
    let mut client = s.native(0);
    s.worker_writes(&lines(1, 100)).await;
    settle().await;
    let (reply, done) = oneshot::channel();
    assert!(s.handle.mailbox.send(Command::End { reply }).is_ok());
    done.await.expect("answered");
    assert!(s.worker_closed().await, "before the answer");
    assert!(s.resume(0).await.is_err(), "no resume after DELETE");
    assert_eq!(read_to_end(&mut client).await, lines(1, 100));
    settle().await;
    assert_eq!(s.ended().as_deref(), Some("client_end"));

    // Detached: it ends at once.
    let mut s = open(config(|_| {}));
    let (reply, done) = oneshot::channel();
    assert!(s.handle.mailbox.send(Command::End { reply }).is_ok());
    done.await.expect("answered");
    settle().await;
    assert_eq!(s.ended().as_deref(), Some("client_end"));
    assert!(s.worker_closed().await);
}

#[tokio::test(start_paused = true)]
async fn shutdown_gives_an_attached_websocket_its_lines_then_1012() {
    let mut s = open(config(|_| {}));
    let mut client = s.websocket(0);
    s.worker_writes(&lines(1, 3)).await;
    settle().await;
    assert!(s.handle.mailbox.send(Command::Shutdown).is_ok());
    let (texts, code) = ws_until_close(&mut client).await;
    assert_eq!(texts, ["line 0001", "line 0002", "line 0003"]);
    assert_eq!(code, 1012);
    settle().await;
    assert_eq!(s.ended().as_deref(), Some("shutdown"));
    assert!(s.worker_closed().await);
}

#[tokio::test(start_paused = true)]
async fn a_slow_reader_that_makes_progress_stays_attached() {
    let mut s = open(config(|_| {}));
    let mut client = s.native(0);
    s.worker_writes(&lines(1, 200)).await;
    // One line every 20 s, read unbuffered: never 30 s without write
    // progress.
    let raw = client.get_mut();
    for n in 1..=10 {
        tokio::time::sleep(secs(20)).await;
        let mut got = [0u8; 10];
        raw.read_exact(&mut got).await.expect("a line");
        assert_eq!(got, line(n).as_bytes());
    }
    settle().await;
    assert_eq!(s.gauge("attached"), 1.0);
}

#[tokio::test(start_paused = true)]
async fn only_the_newest_generation_attaches() {
    let mut s = open(config(|_| {}));
    let first = s.resume(0).await.expect("a resume");
    let second = s.resume(0).await.expect("another");
    assert_eq!((first.gen, second.gen), (1, 2));
    // Overtaken before it could attach: closed, the session still waits.
    let mut late = s.native(first.gen);
    assert_eq!(read_to_end(&mut late).await, "");
    assert_eq!((s.gauge("attached"), s.gauge("detached")), (0.0, 1.0));
    let mut client = s.native(second.gen);
    s.worker_writes("hi\n").await;
    assert_eq!(read_line(&mut client).await, "hi\n");
    assert_eq!(s.gauge("attached"), 1.0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_while_finishing_is_said_as_shutdown() {
    let mut s = open(config(|_| {}));
    let mut client = s.websocket(0);
    // The worker's end with lines still owed to a client not reading yet,
    // more than its link takes at once.
    s.worker_writes(&lines(1, 2000)).await;
    drop(s.take_worker());
    settle().await;
    assert_eq!(s.ended(), None);
    assert!(s.handle.mailbox.send(Command::Shutdown).is_ok());
    let (texts, code) = ws_until_close(&mut client).await;
    assert_eq!(texts.len(), 2000, "every line first");
    assert_eq!(code, 1012);
    settle().await;
    assert_eq!(s.ended().as_deref(), Some("shutdown"));
}

/// Found by the soak: after a DELETE answered while attached, a client
/// that closed before its last lines were written left the session
/// detached for the whole grace, counted against `max_sessions_per_ip`,
/// though nothing could resume it any more.
#[tokio::test(start_paused = true)]
async fn a_deleted_session_whose_client_leaves_ends_at_once() {
    let mut s = open(config(|c| c.resume_grace = secs(120)));
    let client = s.native(0);
    s.worker_writes(&lines(1, 50)).await;
    settle().await;
    let (reply, done) = oneshot::channel();
    assert!(s.handle.mailbox.send(Command::End { reply }).is_ok());
    done.await.expect("answered");
    let started = tokio::time::Instant::now();
    drop(client);
    settle().await;
    assert_eq!(s.ended().as_deref(), Some("client_end"));
    assert_eq!(started.elapsed(), Duration::ZERO, "ended without waiting");
    assert_eq!(s.gauge("detached"), 0.0);
    assert!(s.worker_closed().await);
}
