//! `line_worker`: a real tether worker (SPEC 2 and 4, stream mode) for the
//! integration tests of persistent sessions.
//!
//! ```text
//! line_worker --listen 127.0.0.1:PORT [--events FILE] [--name NAME]
//! ```
//!
//! Once listening it prints `listening 127.0.0.1:N` as the first line on
//! stdout (port 0 is allowed; tests synchronise on that line). It is an
//! HTTP/1.1 server written with std only: one thread per connection, the
//! request head read up to the blank line, request bodies read by
//! `Content-Length` or chunked and discarded. Plain answers keep the
//! connection alive (unless `Connection: close` or HTTP/1.0). After a
//! persistent answer the connection is the session's line channel.
//!
//! # Paths (behaviour chosen by the path and query of the request)
//!
//! Query values are plain numbers or tokens (no percent-decoding). "Line `i`
//! of size S" (`i` from 1) means `<i>` and, when S leaves room, a space and
//! `x` padding, ending in LF, S bytes in all (`<i>\n` when S is 0 or too small).
//!
//! Every persistent path accepts `?initial=N`: an initial body of N bytes of
//! the pattern `PATTERN` (63 characters then LF, repeated; `initial=0`: none).
//! Without it the initial body is absent, except for `/echo.pphp`.
//!
//! - `/echo.pphp[?initial=N][&named=1]`: persistent. Default initial body
//!   `hello <name> <session-id>\n`. Echoes each client line as `<n> <line>`
//!   (`n` counts the session's client lines from 1; with `named=1`:
//!   `<name> <n> <line>`).
//! - `/count.pphp?n=N&size=S[&close=1]`: persistent; writes lines 1..=N of
//!   size S as fast as the socket takes them while reading (and recording)
//!   client lines; with `close=1` closes the connection after the N-th line
//!   (worker end), else keeps reading until the gateway closes.
//! - `/numbered.pphp[?every_ms=T][&n=N][&close=1]`: persistent, for fault
//!   injection. Writes `w<i>\n` (i from 1): with `every_ms` one line every T
//!   ms, otherwise one line as the reply to each client line. Stops after N
//!   lines when `n` is given (and then, with `close=1`, ends the session).
//!   Checks that client lines arrive as `c1`, `c2`, ... (the first
//!   space-separated word of the line), each exactly once and in order; any
//!   gap, duplicate or disorder is logged as `ERROR numbered <sid> expected
//!   c<k> got <word>` (then it expects the number after the one it got).
//! - `/flood.pphp[?size=S]`: persistent; writes lines of size S (default 64)
//!   forever, as fast as the socket accepts them. Progress is logged every
//!   50 ms while it changes as `wrote <sid> <lines> <bytes>`.
//! - `/blank.pphp?n=N`: persistent; writes N empty lines (`\n`, one byte
//!   each) in writes of up to 64 KiB, logs `wrote`, then reads until the
//!   gateway closes. For what many short lines cost the gateway.
//! - `/end.pphp?n=N[&size=S][&delay_ms=D]`: persistent; (waits D ms, then)
//!   writes lines 1..=N then closes the
//!   connection (worker end).
//! - `/bigbody.pphp?n=N`: persistent with an N-byte initial body of
//!   `PATTERN`, then echoes like `/echo.pphp`.
//! - `/longline.pphp?n=N`: persistent; writes one line of N bytes (LF
//!   included: N-1 `L` then LF), then reads until the gateway closes.
//! - `/binary.pphp[?badinitial=1]`: persistent; writes the line `ok\n`, then
//!   the line `\xff\xfe bad\n` (not UTF-8), then reads until the gateway
//!   closes. With `badinitial=1` the initial body is the 3 bytes
//!   `\xc3\x28\n` (not UTF-8) and no line is written.
//! - `/plain.pphp`: plain `200` with `Connection-Type: something-else`,
//!   `SessionID: bogus`, `Session-Received: 7`, `X-Worker: <name>` (the
//!   gateway must strip the first three) and a body `plain <name>\n` followed
//!   by the request head as received (request line and headers, LF-ended).
//! - `/chunked.pphp`: `200` + `Connection-Type: Persistent` with
//!   `Transfer-Encoding: chunked` (a worker protocol error: the gateway must
//!   answer 502); then waits for the gateway to close.
//! - `/status.pphp?code=C`: plain answer with status C, body `status C\n`
//!   (none for 1xx, 204 and 304).
//! - a `HEAD` to any path never opens a session: it is answered like
//!   `/plain.pphp`, without the body.
//! - any other path: plain `404`.
//!
//! Any path also accepts `headers=1`: each request header is logged as
//! `header <sid> <name>: <value>`.
//!
//! # Events file (`--events FILE`)
//!
//! Appended, one event a line, written with one `write` each (unbuffered).
//! `<sid>` is the request's `SessionID` header value or `-`.
//!
//! - `conn <sid> <peer>`: a request head arrived (peer = `ip:port` of the
//!   gateway's connection, so one session = one peer port);
//! - `header <sid> <name>: <value>`: with `headers=1` only;
//! - `req <sid> <method> <target> <status> <request-body-bytes>`: answered;
//! - `open <sid>`: a persistent answer (head and initial body) was written;
//! - `line <sid> <n>`: the n-th client line of the session was read;
//! - `wrote <sid> <lines> <bytes>`: lines and bytes written on the channel
//!   (after the initial body): at the end of every session (once more,
//!   after the `eof`, when a write in progress then completed), and
//!   periodically for `/flood.pphp`;
//! - `eof <sid> <lines-read>`: the gateway closed the connection (EOF), or
//!   `eof <sid> <lines-read> <error-kind>` when a read or write failed
//!   (e.g. `ConnectionReset`, `BrokenPipe`); bytes after the last LF are
//!   not a line and are ignored;
//! - `end <sid>`: the worker closed the connection (FIN after all data);
//! - `ERROR <text>`: a protocol surprise (malformed request, numbering
//!   error). A session logs exactly one of `eof` and `end`, and nothing but
//!   `line` events after it.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Initial bodies made with `?initial=N` repeat this, cut to N bytes.
const PATTERN: &[u8; 64] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.\n";
/// Longest request head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// How long a worker-ended session keeps draining the gateway's bytes.
const DRAIN_AFTER_END: Duration = Duration::from_secs(10);

fn main() {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("line_worker: {e}");
            eprintln!("usage: line_worker --listen ADDR [--events FILE] [--name NAME]");
            std::process::exit(64);
        }
    };
    let events = match Events::open(args.events.as_deref()) {
        Ok(events) => Arc::new(events),
        Err(e) => {
            eprintln!("line_worker: events file: {e}");
            std::process::exit(1);
        }
    };
    let listener = match TcpListener::bind(args.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("line_worker: bind {}: {e}", args.listen);
            std::process::exit(1);
        }
    };
    let local = listener.local_addr().expect("local addr");
    {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "listening {local}");
        let _ = out.flush();
    }
    serve(listener, Arc::new(args.name), events);
}

struct Args {
    listen: SocketAddr,
    events: Option<PathBuf>,
    name: String,
}

impl Args {
    fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut listen = None;
        let mut events = None;
        let mut name = "worker".to_string();
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--listen" => {
                    let v = value()?;
                    listen = Some(v.parse().map_err(|e| format!("--listen {v}: {e}"))?);
                }
                "--events" => events = Some(PathBuf::from(value()?)),
                "--name" => name = token(&value()?),
                other => return Err(format!("unknown argument {other}")),
            }
        }
        Ok(Args {
            listen: listen.ok_or("--listen is required")?,
            events,
            name,
        })
    }
}

/// Accepts forever, one thread per connection.
fn serve(listener: TcpListener, name: Arc<String>, events: Arc<Events>) {
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let name = Arc::clone(&name);
                let events = Arc::clone(&events);
                thread::spawn(move || handle_connection(stream, &name, &events));
            }
            Err(e) => {
                eprintln!("line_worker: accept: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// The events file; `None` when no file was given.
struct Events {
    file: Option<Mutex<File>>,
}

impl Events {
    fn open(path: Option<&std::path::Path>) -> io::Result<Events> {
        let file = match path {
            Some(p) => Some(Mutex::new(
                OpenOptions::new().create(true).append(true).open(p)?,
            )),
            None => None,
        };
        Ok(Events { file })
    }

    fn log(&self, event: &str) {
        if let Some(file) = &self.file {
            let mut line = String::with_capacity(event.len() + 1);
            line.push_str(event);
            line.push('\n');
            let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// Makes a value safe for a space-separated events line.
fn token(s: &str) -> String {
    if s.is_empty() {
        return "-".to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

struct Request {
    method: String,
    target: String,
    path: String,
    query: HashMap<String, String>,
    version_11: bool,
    headers: Vec<(String, String)>,
    /// The head as received, CRLFs turned into LFs.
    raw_head: String,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn param(&self, key: &str) -> Option<u64> {
        self.query.get(key).and_then(|v| v.parse().ok())
    }

    fn flag(&self, key: &str) -> bool {
        self.query.get(key).is_some_and(|v| v == "1" || v == "true")
    }

    fn keep_alive(&self) -> bool {
        let close = self
            .header("connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
        self.version_11 && !close
    }
}

enum HeadError {
    /// The connection closed (or failed) before a request started.
    Closed,
    Bad(String),
}

/// Reads one request head (up to the blank line).
fn read_head(reader: &mut BufReader<TcpStream>) -> Result<Request, HeadError> {
    let mut raw = Vec::new();
    let mut lines: Vec<String> = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|_| HeadError::Closed)?;
        if n == 0 {
            return if raw.is_empty() {
                Err(HeadError::Closed)
            } else {
                Err(HeadError::Bad(
                    "connection closed inside a request head".into(),
                ))
            };
        }
        raw.extend_from_slice(&line);
        if raw.len() > MAX_HEAD {
            return Err(HeadError::Bad("request head too long".into()));
        }
        if line.last() != Some(&b'\n') {
            return Err(HeadError::Bad(
                "connection closed inside a request head".into(),
            ));
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            if lines.is_empty() {
                continue; // tolerate blank lines before a request (RFC 9112 2.2)
            }
            break;
        }
        lines.push(text.to_string());
    }
    let mut parts = lines[0].split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Bad(format!("bad request line {:?}", lines[0])));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(HeadError::Bad(format!("bad version {version:?}")));
    }
    let mut headers = Vec::new();
    for l in &lines[1..] {
        let Some((name, value)) = l.split_once(':') else {
            return Err(HeadError::Bad(format!("bad header line {l:?}")));
        };
        headers.push((name.to_string(), value.trim().to_string()));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    let mut raw_head = String::new();
    for l in &lines {
        raw_head.push_str(l);
        raw_head.push('\n');
    }
    Ok(Request {
        method: method.to_string(),
        target: target.to_string(),
        path: path.to_string(),
        query,
        version_11: version == "HTTP/1.1",
        headers,
        raw_head,
    })
}

/// Reads and discards the request body; returns its length.
fn read_body(reader: &mut BufReader<TcpStream>, req: &Request) -> Result<u64, String> {
    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        let mut total = 0u64;
        loop {
            let mut size_line = String::new();
            reader
                .read_line(&mut size_line)
                .map_err(|e| format!("chunk size: {e}"))?;
            let hex = size_line.trim().split(';').next().unwrap_or("");
            let size = u64::from_str_radix(hex, 16)
                .map_err(|_| format!("bad chunk size {size_line:?}"))?;
            if size == 0 {
                // trailers up to the blank line
                loop {
                    let mut t = String::new();
                    if reader.read_line(&mut t).map_err(|e| e.to_string())? == 0
                        || t.trim().is_empty()
                    {
                        return Ok(total);
                    }
                }
            }
            discard(reader, size)?;
            total += size;
            let mut crlf = String::new();
            reader.read_line(&mut crlf).map_err(|e| e.to_string())?;
        }
    }
    match req.header("content-length") {
        None => Ok(0),
        Some(v) => {
            let len: u64 = v.parse().map_err(|_| format!("bad Content-Length {v:?}"))?;
            discard(reader, len)?;
            Ok(len)
        }
    }
}

fn discard(reader: &mut BufReader<TcpStream>, len: u64) -> Result<(), String> {
    let copied = io::copy(&mut reader.take(len), &mut io::sink()).map_err(|e| e.to_string())?;
    if copied != len {
        return Err(format!("body ended after {copied} of {len} bytes"));
    }
    Ok(())
}

fn handle_connection(stream: TcpStream, name: &str, events: &Arc<Events>) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let _ = stream.set_nodelay(true);
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    loop {
        let req = match read_head(&mut reader) {
            Ok(req) => req,
            Err(HeadError::Closed) => return,
            Err(HeadError::Bad(why)) => {
                events.log(&format!("ERROR {peer}: {why}"));
                let _ = writer.write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                return;
            }
        };
        let sid = token(req.header("sessionid").unwrap_or("-"));
        events.log(&format!("conn {sid} {peer}"));
        if req.flag("headers") {
            for (n, v) in &req.headers {
                events.log(&format!("header {sid} {n}: {v}"));
            }
        }
        let body_len = match read_body(&mut reader, &req) {
            Ok(n) => n,
            Err(why) => {
                events.log(&format!("ERROR {peer}: request body: {why}"));
                return;
            }
        };
        let persistent = req.method != "HEAD"
            && matches!(
                req.path.as_str(),
                "/echo.pphp"
                    | "/count.pphp"
                    | "/numbered.pphp"
                    | "/flood.pphp"
                    | "/blank.pphp"
                    | "/end.pphp"
                    | "/bigbody.pphp"
                    | "/longline.pphp"
                    | "/binary.pphp"
                    | "/chunked.pphp"
            );
        if !persistent {
            let status = answer_plain(&mut writer, &req, name);
            events.log(&format!(
                "req {sid} {} {} {status} {body_len}",
                req.method, req.target
            ));
            if !req.keep_alive() {
                return;
            }
            continue;
        }
        let session = Session {
            sid,
            name: name.to_string(),
            events: Arc::clone(events),
            stream: writer,
            finished: AtomicBool::new(false),
            lines_read: AtomicU64::new(0),
            lines_written: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
        };
        run_session(Arc::new(session), reader, &req, name, body_len);
        return;
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        410 => "Gone",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Writes a plain (non-persistent) answer; returns its status.
fn answer_plain(w: &mut TcpStream, req: &Request, name: &str) -> u16 {
    let head_only = req.method == "HEAD";
    let (status, extra, body): (u16, String, Vec<u8>) = if head_only || req.path == "/plain.pphp" {
        let mut body = format!("plain {name}\n").into_bytes();
        body.extend_from_slice(req.raw_head.as_bytes());
        (
            200,
            format!(
                "Content-Type: text/plain; charset=utf-8\r\nConnection-Type: something-else\r\n\
                 SessionID: bogus\r\nSession-Received: 7\r\nX-Worker: {name}\r\n"
            ),
            body,
        )
    } else if req.path == "/status.pphp" {
        let code = req
            .param("code")
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| (200..1000).contains(c))
            .unwrap_or(200);
        let body = if code == 204 || code == 304 {
            Vec::new()
        } else {
            format!("status {code}\n").into_bytes()
        };
        (
            code,
            "Content-Type: text/plain; charset=utf-8\r\n".into(),
            body,
        )
    } else {
        (
            404,
            "Content-Type: text/plain; charset=utf-8\r\n".into(),
            format!("no such path on {name}: {}\n", req.path).into_bytes(),
        )
    };
    let mut out = format!("HTTP/1.1 {status} {}\r\n{extra}", reason(status));
    if status != 204 && status != 304 {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if !req.keep_alive() {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(&body);
    }
    let _ = w.write_all(&bytes);
    status
}

/// The worker side of one session: the channel and its counters.
struct Session {
    sid: String,
    /// The worker's `--name`.
    name: String,
    events: Arc<Events>,
    /// The write side (a clone of the connection's socket).
    stream: TcpStream,
    /// Set once `eof` or `end` was logged.
    finished: AtomicBool,
    lines_read: AtomicU64,
    lines_written: AtomicU64,
    bytes_written: AtomicU64,
}

impl Session {
    fn log(&self, event: &str) {
        self.events.log(event);
    }

    /// Writes one line on the channel; an error finishes the session as `eof`.
    fn write_line(&self, line: &[u8]) -> bool {
        if self.finished.load(Ordering::SeqCst) {
            return false;
        }
        match (&self.stream).write_all(line) {
            Ok(()) => {
                self.lines_written.fetch_add(1, Ordering::SeqCst);
                self.bytes_written
                    .fetch_add(line.len() as u64, Ordering::SeqCst);
                if self.finished.load(Ordering::SeqCst) {
                    // The reader logged `eof` (and its `wrote`) while this
                    // line was being written: the last `wrote` counts it.
                    self.log_wrote();
                }
                true
            }
            Err(e) => {
                self.gateway_closed(Some(e.kind()));
                false
            }
        }
    }

    /// Writes `bytes`, which hold `lines` whole lines, in one go.
    fn write_lines(&self, bytes: &[u8], lines: u64) -> bool {
        if self.finished.load(Ordering::SeqCst) {
            return false;
        }
        match (&self.stream).write_all(bytes) {
            Ok(()) => {
                self.lines_written.fetch_add(lines, Ordering::Relaxed);
                self.bytes_written
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.gateway_closed(Some(e.kind()));
                false
            }
        }
    }

    fn log_wrote(&self) {
        self.log(&format!(
            "wrote {} {} {}",
            self.sid,
            self.lines_written.load(Ordering::SeqCst),
            self.bytes_written.load(Ordering::SeqCst)
        ));
    }

    /// The gateway closed the connection (EOF) or it failed.
    fn gateway_closed(&self, error: Option<io::ErrorKind>) {
        if self.finished.swap(true, Ordering::SeqCst) {
            return;
        }
        self.log_wrote();
        let n = self.lines_read.load(Ordering::SeqCst);
        match error {
            None => self.log(&format!("eof {} {n}", self.sid)),
            Some(kind) => self.log(&format!("eof {} {n} {kind:?}", self.sid)),
        }
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// The worker ends the session: FIN after everything written. The
    /// reader keeps draining (and logging lines) until the gateway closes.
    fn end(&self) {
        if self.finished.swap(true, Ordering::SeqCst) {
            return;
        }
        self.log_wrote();
        self.log(&format!("end {}", self.sid));
        let _ = self.stream.shutdown(Shutdown::Write);
        let _ = self.stream.set_read_timeout(Some(DRAIN_AFTER_END));
    }
}

/// Which writer runs beside the reader.
enum Pump {
    /// Writes happen only as replies (echo, numbered in reply mode).
    None,
    /// Lines 1..=n of `size` (after `delay`), then end when `close`.
    Count {
        n: u64,
        size: usize,
        close: bool,
        delay: Duration,
    },
    /// `w<i>` every `every`, at most `n`, then end when `close`.
    Ticks {
        every: Duration,
        n: Option<u64>,
        close: bool,
    },
    Flood {
        size: usize,
    },
    /// `n` empty lines, many per write.
    Blank {
        n: u64,
    },
    /// One line, then nothing.
    Once(Vec<u8>),
    /// These lines, then nothing.
    Lines(Vec<Vec<u8>>),
}

/// What the reader does with each client line.
enum OnLine {
    Record,
    Echo { named: bool },
    Numbered { n: Option<u64>, close: bool },
}

fn run_session(
    session: Arc<Session>,
    mut reader: BufReader<TcpStream>,
    req: &Request,
    name: &str,
    body_len: u64,
) {
    let sid = session.sid.clone();
    let log_req = |status: u16| {
        session.log(&format!(
            "req {sid} {} {} {status} {body_len}",
            req.method, req.target
        ));
    };
    if req.path == "/chunked.pphp" {
        let _ = (&session.stream).write_all(
            b"HTTP/1.1 200 OK\r\nConnection-Type: Persistent\r\nTransfer-Encoding: chunked\r\n\r\n\
              6\r\nhello\n\r\n0\r\n\r\n",
        );
        log_req(200);
        drain(&session, &mut reader, &OnLine::Record);
        return;
    }
    let initial: Vec<u8> = match (req.path.as_str(), req.param("initial")) {
        ("/bigbody.pphp", _) => pattern(req.param("n").unwrap_or(0)),
        ("/binary.pphp", _) if req.flag("badinitial") => b"\xc3\x28\n".to_vec(),
        (_, Some(n)) => pattern(n),
        ("/echo.pphp", None) => format!("hello {name} {sid}\n").into_bytes(),
        _ => Vec::new(),
    };
    let size = |default: usize| req.param("size").map(|s| s as usize).unwrap_or(default);
    let (pump, on_line) = match req.path.as_str() {
        "/echo.pphp" | "/bigbody.pphp" => (
            Pump::None,
            OnLine::Echo {
                named: req.flag("named"),
            },
        ),
        "/count.pphp" => (
            Pump::Count {
                n: req.param("n").unwrap_or(0),
                size: size(0),
                close: req.flag("close"),
                delay: Duration::ZERO,
            },
            OnLine::Record,
        ),
        "/end.pphp" => (
            Pump::Count {
                n: req.param("n").unwrap_or(0),
                size: size(0),
                close: true,
                delay: Duration::from_millis(req.param("delay_ms").unwrap_or(0)),
            },
            OnLine::Record,
        ),
        "/numbered.pphp" => match req.param("every_ms") {
            Some(ms) => (
                Pump::Ticks {
                    every: Duration::from_millis(ms.max(1)),
                    n: req.param("n"),
                    close: req.flag("close"),
                },
                // The clock writes the lines: no replies (`n: 0`).
                OnLine::Numbered {
                    n: Some(0),
                    close: false,
                },
            ),
            None => (
                Pump::None,
                OnLine::Numbered {
                    n: req.param("n"),
                    close: req.flag("close"),
                },
            ),
        },
        "/flood.pphp" => (Pump::Flood { size: size(64) }, OnLine::Record),
        "/blank.pphp" => (
            Pump::Blank {
                n: req.param("n").unwrap_or(0),
            },
            OnLine::Record,
        ),
        "/longline.pphp" => {
            let n = req.param("n").unwrap_or(1).max(1) as usize;
            let mut line = vec![b'L'; n - 1];
            line.push(b'\n');
            (Pump::Once(line), OnLine::Record)
        }
        "/binary.pphp" if req.flag("badinitial") => (Pump::None, OnLine::Record),
        "/binary.pphp" => (
            Pump::Lines(vec![b"ok\n".to_vec(), b"\xff\xfe bad\n".to_vec()]),
            OnLine::Record,
        ),
        _ => unreachable!("checked by the caller"),
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\nConnection-Type: Persistent\r\nContent-Type: text/plain; charset=utf-8\r\n\
         X-Worker: {name}\r\n{}\r\n",
        if initial.is_empty() {
            String::new()
        } else {
            format!("Content-Length: {}\r\n", initial.len())
        }
    );
    let mut first = head.into_bytes();
    first.extend_from_slice(&initial);
    if let Err(e) = (&session.stream).write_all(&first) {
        log_req(200);
        session.gateway_closed(Some(e.kind()));
        return;
    }
    log_req(200);
    session.log(&format!("open {sid}"));
    let writer = spawn_pump(&session, pump);
    drain(&session, &mut reader, &on_line);
    if let Some(w) = writer {
        let _ = w.join();
    }
}

fn pattern(n: u64) -> Vec<u8> {
    (0..n as usize)
        .map(|i| PATTERN[i % PATTERN.len()])
        .collect()
}

/// Line `i` of `size` bytes: `<i>`, a space and `x` padding, LF.
fn numbered_line(i: u64, size: usize) -> Vec<u8> {
    let mut line = i.to_string().into_bytes();
    if size > line.len() + 2 {
        line.push(b' ');
        line.resize(size - 1, b'x');
    }
    line.push(b'\n');
    line
}

fn spawn_pump(session: &Arc<Session>, pump: Pump) -> Option<thread::JoinHandle<()>> {
    let s = Arc::clone(session);
    let handle = match pump {
        Pump::None => return None,
        Pump::Once(line) => thread::spawn(move || {
            s.write_line(&line);
        }),
        Pump::Lines(lines) => thread::spawn(move || {
            for line in lines {
                if !s.write_line(&line) {
                    return;
                }
            }
        }),
        Pump::Count {
            n,
            size,
            close,
            delay,
        } => thread::spawn(move || {
            thread::sleep(delay);
            for i in 1..=n {
                if !s.write_line(&numbered_line(i, size)) {
                    return;
                }
            }
            if close {
                s.end();
            }
        }),
        Pump::Ticks { every, n, close } => thread::spawn(move || {
            let mut i = 0u64;
            loop {
                thread::sleep(every);
                if n.is_some_and(|n| i >= n) {
                    if close {
                        s.end();
                    }
                    return;
                }
                i += 1;
                if !s.write_line(format!("w{i}\n").as_bytes()) {
                    return;
                }
            }
        }),
        Pump::Blank { n } => thread::spawn(move || {
            let chunk = [b'\n'; 64 * 1024];
            let mut left = n;
            while left > 0 {
                let k = left.min(chunk.len() as u64);
                if !s.write_lines(&chunk[..k as usize], k) {
                    return;
                }
                left -= k;
            }
            s.log_wrote();
        }),
        Pump::Flood { size } => {
            let progress = Arc::clone(&s);
            thread::spawn(move || {
                let mut last = u64::MAX;
                while !progress.finished.load(Ordering::SeqCst) {
                    let now = progress.bytes_written.load(Ordering::Relaxed);
                    if now != last {
                        progress.log_wrote();
                        last = now;
                    }
                    thread::sleep(Duration::from_millis(50));
                }
            });
            thread::spawn(move || {
                let mut i = 0u64;
                loop {
                    i += 1;
                    if !s.write_line(&numbered_line(i, size)) {
                        return;
                    }
                }
            })
        }
    };
    Some(handle)
}

/// Reads client lines until the gateway closes the connection.
fn drain(session: &Session, reader: &mut BufReader<TcpStream>, on_line: &OnLine) {
    let sid = &session.sid;
    let mut expected = 1u64; // numbered: the next client line
    let mut replies = 0u64; // numbered: `w` lines written as replies
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => {
                session.gateway_closed(None);
                return;
            }
            Ok(_) if line.last() != Some(&b'\n') => {
                // bytes after the last LF: not a line
                session.gateway_closed(None);
                return;
            }
            Ok(_) => {}
            Err(e) => {
                session.gateway_closed(Some(e.kind()));
                return;
            }
        }
        let n = session.lines_read.fetch_add(1, Ordering::SeqCst) + 1;
        session.log(&format!("line {sid} {n}"));
        match on_line {
            OnLine::Record => {}
            OnLine::Echo { named } => {
                let mut out = if *named {
                    format!("{} {n} ", session.name).into_bytes()
                } else {
                    format!("{n} ").into_bytes()
                };
                out.extend_from_slice(&line);
                session.write_line(&out);
            }
            OnLine::Numbered { n: limit, close } => {
                let text = String::from_utf8_lossy(&line);
                let word = text.split([' ', '\r', '\n']).next().unwrap_or("");
                let got = word.strip_prefix('c').and_then(|d| d.parse::<u64>().ok());
                if got != Some(expected) {
                    session.log(&format!(
                        "ERROR numbered {sid} expected c{expected} got {}",
                        token(word)
                    ));
                }
                expected = got.map_or(expected + 1, |g| g + 1);
                if !limit.is_some_and(|l| replies >= l) {
                    replies += 1;
                    session.write_line(format!("w{replies}\n").as_bytes());
                    if *close && limit.is_some_and(|l| replies >= l) {
                        session.end();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    struct Worker {
        addr: SocketAddr,
        events: PathBuf,
    }

    fn start(name: &str) -> Worker {
        static N: AtomicUsize = AtomicUsize::new(0);
        let events = std::env::temp_dir().join(format!(
            "line_worker-{}-{}.events",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_file(&events);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Events::open(Some(&events)).unwrap());
        let name = Arc::new(name.to_string());
        thread::spawn(move || serve(listener, name, log));
        Worker { addr, events }
    }

    impl Worker {
        fn events(&self) -> Vec<String> {
            std::fs::read_to_string(&self.events)
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect()
        }

        /// Waits until an event equal to `want` is logged.
        fn wait_for(&self, want: &str) -> Vec<String> {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let ev = self.events();
                if ev.iter().any(|e| e == want) {
                    return ev;
                }
                assert!(Instant::now() < deadline, "no {want:?} in {ev:#?}");
                thread::sleep(Duration::from_millis(5));
            }
        }

        fn connect(&self, method: &str, target: &str, sid: &str) -> Conn {
            let stream = TcpStream::connect(self.addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut conn = Conn {
                w: stream.try_clone().unwrap(),
                r: BufReader::new(stream),
            };
            conn.send(method, target, sid);
            conn
        }
    }

    impl Drop for Worker {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.events);
        }
    }

    struct Conn {
        w: TcpStream,
        r: BufReader<TcpStream>,
    }

    impl Conn {
        fn send(&mut self, method: &str, target: &str, sid: &str) {
            let head = format!(
                "{method} {target} HTTP/1.1\r\nHost: example.test\r\nSessionID: {sid}\r\n\
                 X-Forwarded-For: 127.0.0.9\r\n\r\n"
            );
            self.w.write_all(head.as_bytes()).unwrap();
        }

        /// Reads a response head: status and headers.
        fn head(&mut self) -> (u16, Vec<(String, String)>) {
            let mut status = 0;
            let mut headers = Vec::new();
            loop {
                let line = self.line();
                let line = line.trim_end();
                if line.is_empty() {
                    return (status, headers);
                }
                if status == 0 {
                    status = line.split(' ').nth(1).unwrap().parse().unwrap();
                } else {
                    let (n, v) = line.split_once(':').unwrap();
                    headers.push((n.to_ascii_lowercase(), v.trim().to_string()));
                }
            }
        }

        fn line(&mut self) -> String {
            let mut s = String::new();
            self.r.read_line(&mut s).unwrap();
            s
        }

        fn bytes(&mut self, n: usize) -> Vec<u8> {
            let mut buf = vec![0; n];
            self.r.read_exact(&mut buf).unwrap();
            buf
        }

        fn write(&mut self, s: &str) {
            self.w.write_all(s.as_bytes()).unwrap();
        }
    }

    fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
        h.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn echo_session_counts_lines_and_logs_eof() {
        let w = start("alpha");
        let mut c = w.connect("GET", "/echo.pphp", "S1");
        let (status, h) = c.head();
        assert_eq!(status, 200);
        assert_eq!(header(&h, "connection-type"), Some("Persistent"));
        let len: usize = header(&h, "content-length").unwrap().parse().unwrap();
        assert_eq!(c.bytes(len), b"hello alpha S1\n");
        c.write("first\nsecond\n");
        assert_eq!(c.line(), "1 first\n");
        assert_eq!(c.line(), "2 second\n");
        c.write("partial");
        c.w.shutdown(Shutdown::Write).unwrap();
        let ev = w.wait_for("eof S1 2");
        let conn = ev
            .iter()
            .position(|e| e.starts_with("conn S1 127.0.0.1:"))
            .unwrap();
        let open = ev.iter().position(|e| e == "open S1").unwrap();
        assert!(conn < open);
        assert!(ev.contains(&"req S1 GET /echo.pphp 200 0".to_string()));
        assert!(ev.contains(&"line S1 2".to_string()));
        assert!(ev.contains(&"wrote S1 2 17".to_string()), "{ev:#?}");
        assert!(!ev.iter().any(|e| e.starts_with("end ")));
    }

    #[test]
    fn echo_named_and_initial_sizes() {
        let w = start("beta");
        let mut c = w.connect("GET", "/echo.pphp?initial=0&named=1", "S2");
        let (_, h) = c.head();
        assert_eq!(header(&h, "content-length"), None);
        c.write("x\n");
        assert_eq!(c.line(), "beta 1 x\n");

        let mut c = w.connect("GET", "/bigbody.pphp?n=130", "S3");
        let (_, h) = c.head();
        assert_eq!(header(&h, "content-length"), Some("130"));
        let body = c.bytes(130);
        assert_eq!(&body[..64], PATTERN);
        assert_eq!(body[129], PATTERN[1]);
        c.write("y\n");
        assert_eq!(c.line(), "1 y\n");
    }

    #[test]
    fn count_then_worker_end() {
        let w = start("w");
        let mut c = w.connect("GET", "/count.pphp?n=3&size=10&close=1", "S4");
        assert_eq!(c.head().0, 200);
        assert_eq!(c.line(), "1 xxxxxxx\n");
        assert_eq!(c.line(), "2 xxxxxxx\n");
        assert_eq!(c.line(), "3 xxxxxxx\n");
        assert_eq!(c.line(), ""); // FIN
        let ev = w.wait_for("end S4");
        assert!(ev.contains(&"wrote S4 3 30".to_string()), "{ev:#?}");
        c.write("late\n");
        drop(c);
        w.wait_for("line S4 1");
        thread::sleep(Duration::from_millis(50));
        assert!(!w.events().iter().any(|e| e.starts_with("eof S4")));

        let mut c = w.connect("GET", "/end.pphp?n=2", "S5");
        c.head();
        assert_eq!(c.line(), "1\n");
        assert_eq!(c.line(), "2\n");
        assert_eq!(c.line(), "");
        w.wait_for("end S5");
    }

    #[test]
    fn numbered_checks_order_and_replies() {
        let w = start("w");
        let mut c = w.connect("GET", "/numbered.pphp?n=3&close=1", "S6");
        c.head();
        c.write("c1\n");
        assert_eq!(c.line(), "w1\n");
        c.write("c2 payload\n");
        assert_eq!(c.line(), "w2\n");
        c.write("c2\n");
        assert_eq!(c.line(), "w3\n");
        assert_eq!(c.line(), "");
        let ev = w.wait_for("end S6");
        let errors: Vec<_> = ev.iter().filter(|e| e.starts_with("ERROR")).collect();
        assert_eq!(errors, ["ERROR numbered S6 expected c3 got c2"]);

        let mut c = w.connect("GET", "/numbered.pphp?every_ms=1&n=2&close=1", "S7");
        c.head();
        c.write("c1\n"); // checked, never answered: the clock writes
        assert_eq!(c.line(), "w1\n");
        assert_eq!(c.line(), "w2\n");
        assert_eq!(c.line(), "");
        let ev = w.wait_for("end S7");
        assert!(!ev.iter().any(|e| e.contains("S7 expected")));
    }

    #[test]
    fn flood_reports_progress_and_stops_on_close() {
        let w = start("w");
        let mut c = w.connect("GET", "/flood.pphp?size=100", "S8");
        c.head();
        assert_eq!(c.line().len(), 100);
        let deadline = Instant::now() + Duration::from_secs(10);
        // the socket buffers fill up and the worker's writes block
        loop {
            let ev = w.events();
            if ev.iter().any(|e| e.starts_with("wrote S8 ")) {
                break;
            }
            assert!(Instant::now() < deadline, "{ev:#?}");
            thread::sleep(Duration::from_millis(10));
        }
        drop(c);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !w.events().iter().any(|e| e.starts_with("eof S8 0")) {
            assert!(Instant::now() < deadline, "{:#?}", w.events());
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn longline_and_chunked() {
        let w = start("w");
        let mut c = w.connect("GET", "/longline.pphp?n=70000", "S9");
        c.head();
        let line = c.line();
        assert_eq!(line.len(), 70000);
        assert!(line.ends_with("LL\n"));

        let mut c = w.connect("GET", "/chunked.pphp", "S10");
        let (status, h) = c.head();
        assert_eq!(status, 200);
        assert_eq!(header(&h, "transfer-encoding"), Some("chunked"));
        drop(c);
        w.wait_for("eof S10 0");
    }

    #[test]
    fn plain_answers_keep_alive_and_head_never_opens() {
        let w = start("gamma");
        let mut c = w.connect("GET", "/plain.pphp?headers=1", "-");
        let (status, h) = c.head();
        assert_eq!(status, 200);
        assert_eq!(header(&h, "connection-type"), Some("something-else"));
        assert_eq!(header(&h, "sessionid"), Some("bogus"));
        let len: usize = header(&h, "content-length").unwrap().parse().unwrap();
        let body = String::from_utf8(c.bytes(len)).unwrap();
        assert!(body.starts_with("plain gamma\nGET /plain.pphp?headers=1 HTTP/1.1\n"));
        assert!(body.contains("X-Forwarded-For: 127.0.0.9\n"));

        // same connection: HEAD on a persistent path, then a status
        c.send("HEAD", "/echo.pphp", "S11");
        let (status, h) = c.head();
        assert_eq!(status, 200);
        assert_eq!(header(&h, "connection-type"), Some("something-else"));
        c.send("GET", "/status.pphp?code=503", "-");
        let (status, h) = c.head();
        assert_eq!(status, 503);
        assert_eq!(c.bytes(11), b"status 503\n");
        assert_eq!(header(&h, "content-length"), Some("11"));
        c.send("GET", "/status.pphp?code=204", "-");
        assert_eq!(c.head().0, 204);
        c.send("GET", "/nope", "-");
        assert_eq!(c.head().0, 404);

        let ev = w.wait_for("req - GET /nope 404 0");
        assert!(ev.contains(&"header - X-Forwarded-For: 127.0.0.9".to_string()));
        assert!(ev.contains(&"req S11 HEAD /echo.pphp 200 0".to_string()));
        assert!(!ev.iter().any(|e| e.starts_with("open")));
        let peers: Vec<_> = ev.iter().filter(|e| e.starts_with("conn ")).collect();
        assert_eq!(peers.len(), 5);
    }

    #[test]
    fn request_bodies_are_read_before_the_answer() {
        let w = start("w");
        let stream = TcpStream::connect(w.addr).unwrap();
        let mut c = Conn {
            w: stream.try_clone().unwrap(),
            r: BufReader::new(stream),
        };
        c.write(
            "POST /echo.pphp?initial=0 HTTP/1.1\r\nHost: h\r\nSessionID: S12\r\n\
             Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nearly\n",
        );
        assert_eq!(c.head().0, 200);
        assert_eq!(c.line(), "1 early\n");
        let ev = w.wait_for("line S12 1");
        assert!(ev.contains(&"req S12 POST /echo.pphp?initial=0 200 3".to_string()));
    }

    #[test]
    fn args_parse() {
        let a = Args::parse(
            [
                "--listen",
                "127.0.0.1:0",
                "--name",
                "a b",
                "--events",
                "/tmp/x",
            ]
            .into_iter()
            .map(String::from),
        )
        .unwrap();
        assert_eq!(a.name, "a_b");
        assert!(Args::parse(["--bogus"].into_iter().map(String::from)).is_err());
        assert!(Args::parse(std::iter::empty()).is_err());
    }

    #[test]
    fn numbered_line_sizes() {
        assert_eq!(numbered_line(7, 0), b"7\n");
        assert_eq!(numbered_line(7, 3), b"7\n");
        assert_eq!(numbered_line(7, 4), b"7 x\n");
        assert_eq!(numbered_line(7, 5), b"7 xx\n");
        assert_eq!(numbered_line(12, 8).len(), 8);
    }
}
