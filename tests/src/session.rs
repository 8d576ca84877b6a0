//! Helpers for the persistent-session tests (SPEC 2 and 4): the
//! `line_worker` test worker as a child process, its events file, tether
//! configs with `[vhost.persistent]`, and a raw native client that speaks
//! the handshake, resume and `DELETE` byte by byte.
//!
//! The worker's binary path is only known to integration tests
//! (`env!("CARGO_BIN_EXE_line_worker")`), so tests pass it in.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::process::{ChildGuard, StopWith};
use crate::raw_http::{request_bytes, RawConn, Response};
use crate::{temp_dir, TempDir, Tether, STARTUP_TIMEOUT};

/// The host of the session vhost in the tests' configs.
pub const HOST: &str = "sess.test";
/// The capability media type tether accepts by default.
pub const ACCEPT: &str = "application/x-persistent";
/// Hang guard for anything a test waits for (never a timing assertion).
pub const WAIT: Duration = Duration::from_secs(10);

/// A running `line_worker` (see `tests/src/bin/line_worker.rs`).
pub struct LineWorker {
    child: ChildGuard,
    addr: SocketAddr,
    events: PathBuf,
    _dir: TempDir,
}

impl LineWorker {
    /// Starts `bin --listen 127.0.0.1:0 --name NAME` and waits for its
    /// `listening` line.
    pub fn start(bin: &str, name: &str) -> LineWorker {
        LineWorker::start_on(bin, name, 0)
    }

    /// Same, on a given port.
    pub fn start_on(bin: &str, name: &str, port: u16) -> LineWorker {
        let dir = temp_dir();
        let events = dir.path().join("events");
        let mut cmd = Command::new(bin);
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--events")
            .arg(&events)
            .arg("--name")
            .arg(name)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let stderr = dir.path().join("stderr");
        let mut child = ChildGuard::spawn("line_worker", cmd, &stderr, StopWith::Kill);
        let stdout = child.child_mut().stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(STARTUP_TIMEOUT)
            .unwrap_or_else(|_| panic!("line_worker printed nothing: {:?}", child.check_alive()));
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("line_worker said {line:?}: {:?}", child.check_alive()));
        LineWorker {
            child,
            addr,
            events,
            _dir: dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, for `workers` and `origin`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Every event so far, one a line.
    pub fn events(&self) -> Vec<String> {
        std::fs::read_to_string(&self.events)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Events of session `sid` (second word).
    pub fn events_of(&self, sid: &str) -> Vec<String> {
        self.events()
            .into_iter()
            .filter(|e| e.split(' ').nth(1) == Some(sid))
            .collect()
    }

    /// Polls until an event matches `pred`; panics after [`WAIT`].
    pub fn wait_event(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_event_for(what, WAIT, pred)
    }

    pub fn wait_event_for(
        &self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let ev = self.events();
            if let Some(e) = ev.iter().find(|e| pred(e)) {
                return e.clone();
            }
            assert!(
                Instant::now() < deadline,
                "worker: no event {what} within {limit:?}; events:\n{}",
                ev.join("\n")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the worker's `eof <sid> ...` (the gateway closed the
    /// session's connection).
    pub fn wait_eof(&self, sid: &str) -> String {
        let prefix = format!("eof {sid} ");
        self.wait_event(&prefix.clone(), |e| e.starts_with(&prefix))
    }

    /// `conn` events, i.e. request heads, carrying `SessionID: sid`.
    pub fn conns(&self, sid: &str) -> usize {
        self.events_of(sid)
            .iter()
            .filter(|e| e.starts_with("conn "))
            .count()
    }

    /// All `conn` events.
    pub fn all_conns(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| e.starts_with("conn "))
            .count()
    }

    /// `ERROR` events.
    pub fn errors(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter(|e| e.starts_with("ERROR"))
            .collect()
    }

    /// The last `wrote <sid> <lines> <bytes>`: (lines, bytes).
    pub fn last_wrote(&self, sid: &str) -> Option<(u64, u64)> {
        let prefix = format!("wrote {sid} ");
        self.events().iter().rev().find_map(|e| {
            let rest = e.strip_prefix(&prefix)?;
            let (l, b) = rest.split_once(' ')?;
            Some((l.parse().ok()?, b.parse().ok()?))
        })
    }

    /// The gateway's address of the session's worker connection (the
    /// `conn <sid> <peer>` event).
    pub fn peer_of(&self, sid: &str) -> Option<SocketAddr> {
        let prefix = format!("conn {sid} ");
        self.events()
            .iter()
            .find_map(|e| e.strip_prefix(&prefix)?.parse().ok())
    }
}

/// A `[[vhost]]` for `host` with plain requests to `origin` and a
/// `[vhost.persistent]` table (paths `*.pphp`) on `workers`, plus `extra`
/// lines in that table (e.g. `resume_grace = "2s"`).
pub fn session_vhost(host: &str, origin: &str, workers: &[String], extra: &str) -> String {
    let workers: Vec<String> = workers.iter().map(|w| format!("\"{w}\"")).collect();
    format!(
        "[[vhost]]\nhosts = [\"{host}\"]\norigin = \"{origin}\"\n\n[vhost.persistent]\n\
         enabled = true\npaths = [\"*.pphp\"]\nworkers = [{}]\n{extra}\n",
        workers.join(", ")
    )
}

/// Starts tether with these vhosts (see [`session_vhost`]).
pub fn start_tether(vhosts: &[String]) -> Tether {
    Tether::start(&Tether::config("", vhosts))
}

/// Starts tether with one session vhost [`HOST`]: plain requests to
/// `origin`, sessions to `workers`, `extra` in `[vhost.persistent]`.
pub fn start_session_tether(origin: &str, workers: &[String], extra: &str) -> Tether {
    start_tether(&[session_vhost(HOST, origin, workers, extra)])
}

/// Whether `r` opens a session: 200 and `Connection-Type: Persistent`.
pub fn is_persistent(r: &Response) -> bool {
    r.status == 200
        && r.header("connection-type")
            .is_some_and(|v| v.eq_ignore_ascii_case("persistent"))
}

/// Whether `s` is a valid SessionID (SPEC 7): 22 to 64 of `[A-Za-z0-9_-]`.
pub fn valid_sid(s: &str) -> bool {
    (22..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The session's line channel after a persistent answer head.
pub struct Channel {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// How a channel ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// FIN.
    Eof,
    /// Reset or aborted.
    Reset,
}

impl Channel {
    fn new(conn: &mut RawConn, initial_len: usize) -> (Vec<u8>, Channel) {
        let stream = conn.stream().try_clone().expect("clone stream");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut buf = conn.take_pending();
        let mut ch = Channel {
            stream,
            buf: Vec::new(),
        };
        while buf.len() < initial_len {
            let mut chunk = vec![0u8; 64 * 1024];
            let n = ch.stream.read(&mut chunk).expect("read initial body");
            assert!(n > 0, "EOF inside the initial body");
            buf.extend_from_slice(&chunk[..n]);
        }
        ch.buf = buf.split_off(initial_len);
        (buf, ch)
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local_addr")
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.stream.peer_addr().expect("peer_addr")
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).expect("timeout");
    }

    /// Writes bytes (lines) exactly; panics on error.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send on channel");
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// The next line (LF included); `Ok(None)` at EOF (bytes after the last
    /// LF stay in [`Channel::pending`]).
    pub fn try_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                return Ok(Some(self.buf.drain(..=i).collect()));
            }
            if self.fill()? == 0 {
                return Ok(None);
            }
        }
    }

    /// The next line as text; panics at EOF or error.
    pub fn line(&mut self) -> String {
        match self.try_line() {
            Ok(Some(l)) => String::from_utf8_lossy(&l).into_owned(),
            Ok(None) => panic!(
                "EOF on the channel; partial: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Err(e) => panic!("reading a line: {e}"),
        }
    }

    /// Bytes read but not consumed.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Reads whole lines until the connection ends (or `limit` passes:
    /// panic). Returns the lines and how it ended; bytes after the last LF
    /// stay in [`Channel::pending`].
    pub fn lines_until_end(&mut self, limit: Duration) -> (Vec<Vec<u8>>, End) {
        let deadline = Instant::now() + limit;
        let mut lines = Vec::new();
        loop {
            self.set_read_timeout(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            );
            match self.try_line() {
                Ok(Some(l)) => lines.push(l),
                Ok(None) => return (lines, End::Eof),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    return (lines, End::Reset)
                }
                Err(e) => panic!(
                    "channel did not end within {limit:?} ({e}); {} lines read",
                    lines.len()
                ),
            }
        }
    }

    /// `Ok` when the gateway closes (FIN or reset) within `limit` without
    /// sending another byte.
    pub fn expect_closed(&mut self, limit: Duration) -> Result<End, String> {
        let (lines, end) = self.lines_until_end(limit);
        if !lines.is_empty() || !self.buf.is_empty() {
            return Err(format!(
                "unexpected bytes before the close: {:?} {:?}",
                lines
                    .iter()
                    .map(|l| String::from_utf8_lossy(l).into_owned())
                    .collect::<Vec<_>>(),
                String::from_utf8_lossy(&self.buf)
            ));
        }
        Ok(end)
    }

    /// Kills the connection abruptly: `SO_LINGER` 0, then close (the
    /// gateway sees a reset).
    pub fn reset(self) {
        let sock = socket2::SockRef::from(&self.stream);
        let _ = sock.set_linger(Some(Duration::ZERO));
        drop(self);
    }
}

/// A session opened by [`open`].
pub struct Opened {
    pub head: Response,
    pub sid: String,
    pub initial: Vec<u8>,
    pub chan: Channel,
}

/// Sends `GET target` with `Accept: application/x-persistent` and `headers`
/// on a new connection; the persistent session, or the plain answer (with
/// its body).
pub fn open_with(
    addr: SocketAddr,
    host: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Result<Opened, Box<Response>> {
    let mut conn = RawConn::connect(addr);
    let mut h = vec![("Accept", ACCEPT)];
    h.extend_from_slice(headers);
    conn.send(&request_bytes("GET", target, host, &h, b""));
    head_or_plain(conn, "GET")
}

/// Reads an answer head on `conn`: a persistent one gives its channel, any
/// other is read whole.
pub fn head_or_plain(mut conn: RawConn, method: &str) -> Result<Opened, Box<Response>> {
    let mut head = conn
        .read_head()
        .unwrap_or_else(|e| panic!("reading the answer head: {e}"));
    if !is_persistent(&head) || method.eq_ignore_ascii_case("HEAD") {
        let mut body = Vec::new();
        head.framing = conn
            .read_body_into(&head, method, &mut |b| body.extend_from_slice(b))
            .unwrap_or_else(|e| panic!("reading the body of {}: {e}", head.head_text()));
        head.body = body;
        return Err(Box::new(head));
    }
    let sid = head.header("sessionid").unwrap_or("").to_string();
    let len: usize = head
        .header("content-length")
        .map(|v| v.parse().expect("Content-Length"))
        .unwrap_or(0);
    let (initial, chan) = Channel::new(&mut conn, len);
    Ok(Opened {
        head,
        sid,
        initial,
        chan,
    })
}

/// Opens a session on [`HOST`]; panics if the answer is not persistent.
pub fn open(addr: SocketAddr, target: &str) -> Opened {
    open_with(addr, HOST, target, &[]).unwrap_or_else(|r| {
        panic!(
            "{target}: not persistent: {}{}",
            r.head_text(),
            r.body_text()
        )
    })
}

/// Sends a native resume (`GET target` with `SessionID` and, unless
/// `received` is `None`, `Session-Received`).
pub fn resume_with(
    addr: SocketAddr,
    host: &str,
    target: &str,
    sid: &str,
    received: Option<&str>,
) -> Result<Opened, Box<Response>> {
    let mut h = vec![("SessionID", sid)];
    if let Some(r) = received {
        h.push(("Session-Received", r));
    }
    open_with(addr, host, target, &h)
}

/// A resume on [`HOST`] with count `received`.
pub fn resume(
    addr: SocketAddr,
    target: &str,
    sid: &str,
    received: u64,
) -> Result<Opened, Box<Response>> {
    resume_with(addr, HOST, target, sid, Some(&received.to_string()))
}

/// A resume on [`HOST`] that must succeed.
pub fn resume_ok(addr: SocketAddr, target: &str, sid: &str, received: u64) -> Opened {
    resume(addr, target, sid, received).unwrap_or_else(|r| {
        panic!(
            "resume {sid} at {received}: {}{}",
            r.head_text(),
            r.body_text()
        )
    })
}

/// `DELETE target` with `SessionID` on a new connection.
pub fn delete(addr: SocketAddr, host: &str, target: &str, sid: &str) -> Response {
    let mut conn = RawConn::connect(addr);
    conn.send(&request_bytes(
        "DELETE",
        target,
        host,
        &[("SessionID", sid)],
        b"",
    ));
    conn.read_final_response_to("DELETE")
        .unwrap_or_else(|e| panic!("DELETE {sid}: {e}"))
}

/// A response's head without its `Date` line, and its body: what must be
/// identical between any two `410`s (SPEC 4).
pub fn without_date(r: &Response) -> (String, Vec<u8>) {
    let head = String::from_utf8_lossy(&r.raw_head)
        .split_inclusive('\n')
        .filter(|l| !l.to_ascii_lowercase().starts_with("date:"))
        .collect();
    (head, r.body.clone())
}

/// Send and receive queues (`tx_queue`, `rx_queue` of `/proc/net/tcp`) of
/// the established IPv4 TCP socket `local` ↔ `remote`.
pub fn tcp_queues(local: SocketAddr, remote: SocketAddr) -> Option<(u64, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let hex = |a: SocketAddr| -> Option<String> {
        let SocketAddr::V4(v4) = a else { return None };
        let o = v4.ip().octets();
        Some(format!(
            "{:02X}{:02X}{:02X}{:02X}:{:04X}",
            o[3],
            o[2],
            o[1],
            o[0],
            v4.port()
        ))
    };
    let (l, r) = (hex(local)?, hex(remote)?);
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 || f[1] != l || f[2] != r || f[3] != "01" {
            return None;
        }
        let (tx, rx) = f[4].split_once(':')?;
        Some((
            u64::from_str_radix(tx, 16).ok()?,
            u64::from_str_radix(rx, 16).ok()?,
        ))
    })
}

/// Polls `value` until it has not changed for `quiet` (so the system has
/// reached a steady state, e.g. writes blocked by backpressure); panics
/// after `limit` or when `value` passes `ceiling`. Returns the value.
pub fn wait_stable(
    what: &str,
    quiet: Duration,
    limit: Duration,
    ceiling: u64,
    mut value: impl FnMut() -> u64,
) -> u64 {
    let deadline = Instant::now() + limit;
    let mut last = value();
    let mut since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(25));
        let v = value();
        assert!(v <= ceiling, "{what} grew to {v}, over {ceiling}");
        if v != last {
            last = v;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what} still changing after {limit:?} (now {v})"
        );
    }
}
