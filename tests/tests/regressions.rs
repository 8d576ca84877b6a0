//! Regression tests for bugs found in review, one test per item, black-box
//! against the real `tether` binary (real `line_worker` workers, nginx and
//! WebSocket origins, raw sockets):
//!
//! 1. a body the gateway did not read is never parsed as a second request;
//! 2. a body on a resume request is discarded (SPEC 2);
//! 3. a silent HTTP/2 connection is closed after `header_read_timeout`, and
//!    does not hold up SIGTERM;
//! 4. sessions stay resumable after a SIGHUP that changed their vhost's
//!    first host (SPEC 8);
//! 5. a worker known to be down stays down across a SIGHUP (SPEC 7);
//! 6. SIGTERM is not held up by a connection with a partial request head;
//! 7. request trailers reach the origin (SPEC 5: bodies faithfully);
//! 8. access log lines exist for HTTP/2, 400, 408 and 101 (SPEC 8);
//! 9. only the gateway's own session fields are stripped from requests;
//!    a worker's plain answer still loses every `Session-*` (SPEC 2).
//!
//! Limits are hang guards, never timing assertions; synchronisation is by
//! polling for an observable state.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tether_tests::metric;
use tether_tests::raw_http::{find, read_raw_request, request_bytes};
use tether_tests::session::{
    head_or_plain, open_with, resume_with, tcp_queues, End, LineWorker, Opened, ACCEPT, HOST, WAIT,
};
use tether_tests::{
    free_port, wait_for, Nginx, RawConn, Response, Signal, Tether, WsClient, WsEcho,
};

const WORKER: &str = env!("CARGO_BIN_EXE_line_worker");
/// Hang guard for a close or an exit that must come well before a long
/// `header_read_timeout` / `drain_timeout` (20 s / 30 s in these tests).
const GUARD: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------- helpers

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A `[server]` table with one listener, the admin listener and `extra`.
fn server(listen: SocketAddr, admin: SocketAddr, extra: &str) -> String {
    format!("[server]\nlisten = [\"{listen}\"]\nadmin_listen = \"{admin}\"\n{extra}\n")
}

fn quoted(items: &[&str]) -> String {
    items
        .iter()
        .map(|h| format!("\"{h}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A `[[vhost]]` for `hosts` with a `[vhost.persistent]` table on `*.pphp`.
fn session_vhost(hosts: &[&str], origin: &str, workers: &[&str]) -> String {
    format!(
        "[[vhost]]\nhosts = [{}]\norigin = \"{origin}\"\n\n[vhost.persistent]\n\
         enabled = true\npaths = [\"*.pphp\"]\nworkers = [{}]\n",
        quoted(hosts),
        quoted(workers)
    )
}

/// A plain `[[vhost]]`.
fn plain_vhost(hosts: &[&str], origin: &str) -> String {
    format!(
        "[[vhost]]\nhosts = [{}]\norigin = \"{origin}\"\n",
        quoted(hosts)
    )
}

fn config(server: &str, vhosts: &[String]) -> String {
    let mut c = server.to_string();
    for v in vhosts {
        c.push('\n');
        c.push_str(v);
    }
    c
}

/// Starts tether on `text` and waits until it handles signals.
fn start(text: &str) -> Tether {
    let tether = Tether::start(text);
    tether.wait_signal_handlers();
    tether
}

fn write_config(tether: &Tether, text: &str) {
    std::fs::write(tether.dir().join("tether.toml"), text).expect("write tether.toml");
}

/// Waits until `tether_config_reloads_total{result="ok"}` reaches `n`.
fn wait_reloads_ok(admin: SocketAddr, n: f64) {
    wait_for("the reload to be applied (reloads ok)", WAIT, || {
        (metric(admin, "tether_config_reloads_total{result=\"ok\"}")? >= n).then_some(())
    });
}

/// Opens `target` on `host`; panics unless persistent.
fn open_ok(a: SocketAddr, host: &str, target: &str) -> Opened {
    open_with(a, host, target, &[]).unwrap_or_else(|r| {
        panic!(
            "open {target} on {host}: not persistent: {}{}",
            r.head_text(),
            r.body_text()
        )
    })
}

/// `line <sid> <n>` events of the worker for `sid`.
fn worker_lines(worker: &LineWorker, sid: &str) -> Vec<String> {
    worker
        .events_of(sid)
        .into_iter()
        .filter(|e| e.starts_with("line "))
        .collect()
}

/// Reads from `s` until EOF or reset; panics if neither comes within
/// `limit`. Returns the bytes read.
fn read_until_closed(s: &mut TcpStream, limit: Duration, what: &str) -> Vec<u8> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut b = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{what}: the connection was not closed within {limit:?} ({} bytes read)",
            got.len()
        );
        s.set_read_timeout(Some(left)).expect("set_read_timeout");
        match s.read(&mut b) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&b[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                return got
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("{what}: read failed: {e}"),
        }
    }
}

/// tether's access log lines (`tether::access` on stderr) written after
/// byte offset `mark`, escape sequences removed.
fn access_lines(tether: &Tether, mark: usize) -> Vec<String> {
    let text = tether.stderr_text();
    let new = text.get(mark..).unwrap_or("");
    new.lines()
        .map(strip_ansi)
        .filter(|l| l.contains("tether::access"))
        .collect()
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether an access line records status `code` (human `status=404` or
/// JSON `"status":404`).
fn has_status(line: &str, code: u16) -> bool {
    [format!("status={code}"), format!("\"status\":{code}")]
        .iter()
        .any(|pat| {
            line.match_indices(pat.as_str()).any(|(i, _)| {
                !line[i + pat.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_digit())
            })
        })
}

/// Waits (up to [`WAIT`]) for an access line after `mark` that satisfies
/// `pred`; `Err` with what was logged instead.
fn wait_access_line(
    tether: &Tether,
    mark: usize,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let lines = access_lines(tether, mark);
        if lines.iter().any(|l| pred(l)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no access log line (target tether::access) for {what}; access lines since \
                 its mark:\n{}",
                lines.join("\n")
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ------------------------------------------------- a raw-socket upstream

/// An upstream (origin or worker) written with raw sockets: it records each
/// request's bytes exactly as received (head, body, chunked framing and
/// trailers), and answers every request with the same fixed bytes.
struct RawUpstream {
    addr: SocketAddr,
    got: mpsc::Receiver<Vec<u8>>,
}

impl RawUpstream {
    fn start(response: &'static [u8]) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind raw upstream");
        let addr = listener.local_addr().expect("addr");
        let (tx, got) = mpsc::channel();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { continue };
                let tx = tx.clone();
                std::thread::spawn(move || serve_raw(s, &tx, response));
            }
        });
        RawUpstream { addr, got }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next request received, as raw bytes.
    fn next_request(&self) -> Vec<u8> {
        self.got
            .recv_timeout(WAIT)
            .expect("a request to reach the raw upstream")
    }
}

fn serve_raw(mut s: TcpStream, tx: &mpsc::Sender<Vec<u8>>, response: &[u8]) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    let mut buf = Vec::new();
    while let Some((_, req)) = read_raw_request(&mut s, &mut buf) {
        let _ = tx.send(req);
        if s.write_all(response).is_err() {
            return;
        }
    }
}

// ------------------------------------------------------------ 1. smuggling

/// Reads what follows a first response: responses until EOF or reset.
/// Panics on a hang (neither a response nor a close within the guard).
fn responses_until_close(conn: &mut RawConn, what: &str) -> Vec<Response> {
    conn.set_read_timeout(WAIT);
    let mut out = Vec::new();
    loop {
        match conn.read_final_response_to("GET") {
            Ok(r) => out.push(r),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("{what}: neither an answer nor a close within {WAIT:?}")
            }
            Err(_) => return out,
        }
        if out.len() > 3 {
            return out;
        }
    }
}

#[test]
fn unread_body_is_never_read_as_a_second_request() {
    let nginx = Nginx::standard();
    let origin = format!("http://{}", nginx.addr());
    let tether = start(&Tether::config(
        "",
        &[session_vhost(&["a.test"], &origin, &[&origin])],
    ));
    let smuggled: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n";
    let log = nginx.access_log();
    let cases: [(&str, &str, &str, u16); 2] = [
        ("candidate POST without Accept", "/x.pphp", "a.test", 406),
        ("POST with an unknown Host", "/x", "unknown.test", 421),
    ];
    let smuggled_entries = || -> Vec<String> {
        log.entries()
            .into_iter()
            .filter(|e| e.uri.starts_with("/smuggled"))
            .map(|e| e.raw)
            .collect()
    };
    // Every case runs; the failures of all are reported together.
    let mut problems = Vec::new();
    for (what, target, host, status) in cases {
        let seen_before = smuggled_entries().len();
        for i in 0..10 {
            let mut conn = RawConn::connect(tether.addr());
            conn.set_read_timeout(WAIT);
            // Head and body (itself a whole request) in one write.
            conn.send(&request_bytes("POST", target, host, &[], smuggled));
            let first = conn
                .read_final_response_to("POST")
                .unwrap_or_else(|e| panic!("{what} #{i}: no answer: {e}"));
            assert_eq!(
                first.status,
                status,
                "{what} #{i}: {}{}",
                first.head_text(),
                first.body_text()
            );
            // A sentinel that asks for the close: a gateway that read and
            // dropped the body answers it, one that closed does not; one
            // that took the body for a request answers twice more.
            let sentinel = format!("/sentinel-{status}-{i}");
            let _ = conn.try_send(&request_bytes(
                "GET",
                &sentinel,
                "a.test",
                &[("Connection", "close")],
                b"",
            ));
            let more = responses_until_close(&mut conn, what);
            if more.len() > 1 {
                problems.push(format!(
                    "{what} (attempt {i}): the body was answered as a request: {} more \
                     answers after the {status} (at most 1, the sentinel's, allowed):\n{}",
                    more.len(),
                    more.iter()
                        .map(|r| r.head_text())
                        .collect::<Vec<_>>()
                        .join("\n")
                ));
                break;
            }
        }
        // Flush the origin's log with a request straight to nginx, then
        // check that it did not see the smuggled request in this case.
        let flush = format!("/flush-{status}");
        let r = tether_tests::raw_http::get(nginx.addr(), "a.test", &flush);
        assert_eq!(r.status, 404);
        log.wait_for_uri(&flush, WAIT);
        let seen = smuggled_entries();
        if seen.len() > seen_before {
            problems.push(format!(
                "{what}: the origin received the body as a request:\n{}",
                seen[seen_before..].join("\n")
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n---\n"));
}

// ---------------------------------------------------- 2. resume body

#[test]
fn body_of_a_resume_request_is_discarded() {
    let worker = LineWorker::start(WORKER, "w");
    let url = worker.url();
    let tether = start(&Tether::config(
        "",
        &[session_vhost(&[HOST], &url, &[&url])],
    ));
    let a = tether.addr();
    let mut o = open_ok(a, HOST, "/echo.pphp");
    let sid = o.sid.clone();
    let junk = b"junk\n".repeat(2000);
    let mut sent = 0u64;
    for round in 1..=5u64 {
        o.chan.send(format!("r{round}\n").as_bytes());
        sent += 1;
        assert_eq!(
            o.chan.line(),
            format!("{sent} r{round}\n"),
            "round {round}: SPEC 2: the body of the previous resume must not reach the \
             worker (its echo numbering must not move); the worker has read {} lines, \
             {sent} sent",
            worker_lines(&worker, &sid).len()
        );
        o.chan.reset();
        // The resume's head and a body of lines, in one write.
        let mut conn = RawConn::connect(a);
        let count = sent.to_string();
        conn.send(&request_bytes(
            "GET",
            "/echo.pphp",
            HOST,
            &[
                ("Accept", ACCEPT),
                ("SessionID", &sid),
                ("Session-Received", &count),
            ],
            &junk,
        ));
        o = head_or_plain(conn, "GET").unwrap_or_else(|r| {
            panic!(
                "round {round}: resume with a body refused: {}{}",
                r.head_text(),
                r.body_text()
            )
        });
        assert_eq!(
            o.head.header("session-received"),
            Some(count.as_str()),
            "round {round}: SPEC 2: a body on a resume request is discarded, not delivered:\n{}",
            o.head.head_text()
        );
    }
    o.chan.send(b"last\n");
    sent += 1;
    assert_eq!(
        o.chan.line(),
        format!("{sent} last\n"),
        "SPEC 2: the resume body's lines must not reach the worker"
    );
    let lines = worker_lines(&worker, &sid);
    let expected: Vec<String> = (1..=sent).map(|n| format!("line {sid} {n}")).collect();
    assert_eq!(
        lines, expected,
        "the worker saw lines of a resume body (junk)"
    );
    assert!(worker.errors().is_empty(), "{:?}", worker.errors());
}

// ------------------------------------------------- 3. silent HTTP/2

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const H2_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// Connects, sends the preface and SETTINGS, and reads the server's first
/// frame header (so the connection is being served as HTTP/2); then the
/// client stays silent (never ACKs SETTINGS or PING).
fn silent_h2(a: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(a).expect("connect");
    s.write_all(&[H2_PREFACE, H2_SETTINGS].concat())
        .expect("send preface");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut frame = [0u8; 9];
    s.read_exact(&mut frame)
        .expect("the server's first HTTP/2 frame");
    assert_eq!(
        frame[3], 4,
        "the server's first frame is SETTINGS: {frame:?}"
    );
    s
}

#[test]
fn silent_http2_connection_is_closed_and_does_not_hold_sigterm() {
    let nginx = Nginx::standard();
    // After header_read_timeout (1 s) plus a grace, a connection that never
    // sent HEADERS (and never ACKs the server's PING) is closed.
    let tether = start(&Tether::config(
        "header_read_timeout = \"1s\"",
        &[plain_vhost(
            &["a.test"],
            &format!("http://{}", nginx.addr()),
        )],
    ));
    let mut s = silent_h2(tether.addr());
    read_until_closed(
        &mut s,
        GUARD,
        "SPEC 5: an HTTP/2 connection without HEADERS after header_read_timeout = 1s",
    );
    drop(tether);

    // SIGTERM with such a connection open (its header timeout far away):
    // tether exits well before drain_timeout.
    let listen = addr(free_port());
    let admin = addr(free_port());
    let mut tether = start(&config(
        &server(
            listen,
            admin,
            "header_read_timeout = \"20s\"\ndrain_timeout = \"30s\"",
        ),
        &[plain_vhost(
            &["a.test"],
            &format!("http://{}", nginx.addr()),
        )],
    ));
    let mut s = silent_h2(listen);
    tether.signal(Signal::Term);
    let status = tether.wait_exit(GUARD).unwrap_or_else(|| {
        panic!(
            "SPEC 8: tether did not exit within {GUARD:?} of SIGTERM (drain_timeout 30s) \
             with a silent HTTP/2 connection open; stderr:\n{}",
            tether.stderr_text()
        )
    });
    assert_eq!(status.code(), Some(0), "{}", tether.stderr_text());
    read_until_closed(&mut s, WAIT, "the HTTP/2 connection after the exit");
}

// ------------------------------------- 4. reload changes the first host

#[test]
fn session_resumes_after_reload_changed_its_vhosts_first_host() {
    let worker = LineWorker::start(WORKER, "w");
    let url = worker.url();
    let listen = addr(free_port());
    let admin = addr(free_port());
    let srv = server(listen, admin, "");
    let mut tether = start(&config(&srv, &[session_vhost(&["a.test"], &url, &[&url])]));

    let mut o = open_ok(listen, "a.test", "/echo.pphp");
    let sid = o.sid.clone();
    o.chan.send(b"a\n");
    assert_eq!(o.chan.line(), "1 a\n");
    // b is delivered, its echo not read: replayed on resume.
    o.chan.send(b"b\n");
    worker.wait_event("line 2", |e| e == format!("line {sid} 2"));
    o.chan.reset();

    write_config(
        &tether,
        &config(&srv, &[session_vhost(&["b.test", "a.test"], &url, &[&url])]),
    );
    tether.signal(Signal::Hup);
    wait_reloads_ok(admin, 1.0);
    // b.test is now known (the new config is in force).
    let r = tether_tests::raw_http::get(listen, "b.test", "/index.html");
    assert_ne!(r.status, 421, "b.test after the reload: {}", r.head_text());

    let mut r = resume_with(listen, "a.test", "/echo.pphp", &sid, Some("1")).unwrap_or_else(|r| {
        panic!(
            "SPEC 8: a session survives a reload (its vhost's first host changed \
             from a.test to b.test); resume via a.test got: {}{}",
            r.head_text(),
            r.body_text()
        )
    });
    assert_eq!(r.head.header("session-received"), Some("2"));
    assert_eq!(r.chan.line(), "2 b\n", "the replay after the reload");
    r.chan.send(b"c\n");
    assert_eq!(r.chan.line(), "3 c\n");
    assert_eq!(worker.conns(&sid), 1, "{:?}", worker.events_of(&sid));
    assert!(worker.errors().is_empty(), "{:?}", worker.errors());
    tether.signal(Signal::Term);
    tether.wait_exit(Duration::from_secs(60));
}

// ------------------------------------ 5. worker health across SIGHUP

#[test]
fn worker_known_down_stays_down_across_reload() {
    let alive = LineWorker::start(WORKER, "alive");
    let url = alive.url();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let listen = addr(free_port());
    let admin = addr(free_port());
    let text = config(
        &server(listen, admin, ""),
        &[session_vhost(&[HOST], &url, &[&url, &dead])],
    );
    let mut tether = start(&text);

    // Open sessions (kept open) until the dead worker is tried: a 502
    // marks it down (SPEC 7).
    let mut sessions = Vec::new();
    let mut got_502 = false;
    for _ in 0..10 {
        match open_with(listen, HOST, "/echo.pphp", &[]) {
            Ok(o) => sessions.push(o),
            Err(r) => {
                assert_eq!(r.status, 502, "{}{}", r.head_text(), r.body_text());
                got_502 = true;
                break;
            }
        }
    }
    assert!(
        got_502,
        "the worker with nothing listening was never tried in 10 opens"
    );
    let down = format!("tether_worker_up{{vhost=\"{HOST}\",worker=\"{dead}\"}}");
    wait_for("the dead worker reported down", WAIT, || {
        (metric(admin, &down)? == 0.0).then_some(())
    });

    // Reload with the same file.
    tether.signal(Signal::Hup);
    wait_reloads_ok(admin, 1.0);
    for i in 0..8 {
        match open_with(listen, HOST, "/echo.pphp", &[]) {
            Ok(o) => sessions.push(o),
            Err(r) => panic!(
                "SPEC 7: open #{i} after the reload got {} (a worker known to be down \
                 was tried again after SIGHUP): {}{}",
                r.status,
                r.head_text(),
                r.body_text()
            ),
        }
    }
    for (i, s) in sessions.iter_mut().enumerate() {
        s.chan.send(format!("s{i}\n").as_bytes());
        assert_eq!(s.chan.line(), format!("1 s{i}\n"));
    }
    tether.signal(Signal::Term);
    tether.wait_exit(Duration::from_secs(60));
}

// ------------------------------ 6. SIGTERM and a partial request head

#[test]
fn sigterm_is_not_held_by_a_partial_request_head() {
    let worker = LineWorker::start(WORKER, "w");
    let url = worker.url();
    let listen = addr(free_port());
    let admin = addr(free_port());
    let mut tether = start(&config(
        &server(
            listen,
            admin,
            "header_read_timeout = \"20s\"\ndrain_timeout = \"30s\"",
        ),
        &[session_vhost(&[HOST], &url, &[&url])],
    ));
    // An attached session with 19 lines waiting at the client.
    let mut s = open_ok(listen, HOST, "/count.pphp?n=20&size=50");
    assert_eq!(s.chan.line().split(' ').next(), Some("1"));
    let (local, peer) = (s.chan.local_addr(), s.chan.peer_addr());
    wait_for("19 lines queued at the client", WAIT, || {
        let (_, rx) = tcp_queues(local, peer)?;
        (rx as usize + s.chan.pending().len() >= 19 * 50).then_some(())
    });

    // A connection that sent part of a request head, accepted by tether.
    let gauge = format!("tether_connections_active{{listener=\"{listen}\"}}");
    let before = wait_for("the connections gauge", WAIT, || metric(admin, &gauge));
    let mut partial = RawConn::connect(listen);
    partial.send(b"GET / HTTP/1.1\r\n");
    wait_for("the partial connection accepted", WAIT, || {
        (metric(admin, &gauge)? >= before + 1.0).then_some(())
    });

    tether.signal(Signal::Term);
    let reader = std::thread::spawn(move || {
        let (lines, end) = s.chan.lines_until_end(Duration::from_secs(60));
        (lines, end)
    });
    let status = tether.wait_exit(GUARD).unwrap_or_else(|| {
        panic!(
            "SPEC 8: tether did not exit within {GUARD:?} of SIGTERM (drain_timeout 30s, \
             header_read_timeout 20s) with a partial request head open; stderr:\n{}",
            tether.stderr_text()
        )
    });
    assert_eq!(status.code(), Some(0), "{}", tether.stderr_text());
    let (lines, end) = reader.join().expect("session reader");
    let numbers: Vec<u64> = lines
        .iter()
        .map(|l| {
            String::from_utf8_lossy(l)
                .split([' ', '\n'])
                .next()
                .and_then(|w| w.parse().ok())
                .expect("a numbered line")
        })
        .collect();
    assert_eq!(
        numbers,
        (2..=20).collect::<Vec<u64>>(),
        "SPEC 8: the session client gets its remaining lines"
    );
    assert_eq!(end, End::Eof, "SPEC 8: then EOF");
    let mut stream = partial.stream().try_clone().expect("clone");
    read_until_closed(&mut stream, WAIT, "the partial-head connection");
}

// ------------------------------------------------------- 7. trailers

#[test]
fn request_trailers_reach_the_origin() {
    let origin = RawUpstream::start(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
    let tether = start(&Tether::config(
        "",
        &[plain_vhost(&["a.test"], &origin.url())],
    ));
    let mut conn = RawConn::connect(tether.addr());
    conn.set_read_timeout(WAIT);
    conn.send(
        b"POST /t HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n",
    );
    let r = conn.read_final_response_to("POST").expect("answer");
    assert_eq!(r.status, 200, "{}{}", r.head_text(), r.body_text());
    assert_eq!(r.body, b"ok\n");
    let raw = origin.next_request();
    let text = String::from_utf8_lossy(&raw).to_string();
    let head_end = find(&raw, b"\r\n\r\n", 0).expect("a head") + 4;
    let after_head = String::from_utf8_lossy(&raw[head_end..]).to_ascii_lowercase();
    assert!(
        text.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "the body went chunked: {text:?}"
    );
    assert!(
        after_head.contains("hello") && after_head.contains(" world"),
        "the body reached the origin: {text:?}"
    );
    assert!(
        after_head.contains("\r\nx-sum: 42\r\n"),
        "SPEC 5: the request's trailer field X-Sum: 42 must reach the origin; it received:\n{text:?}"
    );
}

// ------------------------------------------------------- 8. access log

#[test]
fn access_log_lines_for_http2_400_408_and_101() {
    let nginx = Nginx::standard();
    let echo = WsEcho::start();
    let tether = start(&Tether::config(
        "header_read_timeout = \"1s\"",
        &[
            plain_vhost(&["a.test"], &format!("http://{}", nginx.addr())),
            plain_vhost(&["ws.test"], &format!("http://{}", echo.addr())),
        ],
    ));
    let a = tether.addr();

    // Control: an ordinary HTTP/1.1 request is logged, and found by the
    // matching below.
    let mark = tether.stderr_text().len();
    let r = tether_tests::raw_http::get(a, "a.test", "/h1-access-probe");
    assert_eq!(r.status, 404, "{}", r.head_text());
    wait_access_line(&tether, mark, "an HTTP/1.1 request", |l| {
        l.contains("/h1-access-probe") && has_status(l, 404)
    })
    .unwrap_or_else(|e| panic!("{e}\nstderr:\n{}", tether.stderr_text()));

    // HTTP/2 with prior knowledge.
    let mark = tether.stderr_text().len();
    let out = Command::new("curl")
        .args(["-sS", "--http2-prior-knowledge", "--max-time", "10"])
        .args(["-H", "Host: a.test", "-o", "/dev/null"])
        .args(["-w", "%{http_version} %{http_code}"])
        .arg(format!("http://{a}/h2-access-probe"))
        .output()
        .expect("run curl");
    let got = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        got,
        "2 404",
        "curl over h2: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut missing = Vec::new();
    missing.extend(
        wait_access_line(&tether, mark, "an HTTP/2 request", |l| {
            l.contains("/h2-access-probe") && has_status(l, 404)
        })
        .err(),
    );

    // A 400 refusal (differing Content-Length values).
    let mark = tether.stderr_text().len();
    let mut conn = RawConn::connect(a);
    conn.set_read_timeout(WAIT);
    conn.send(
        b"POST /bad-400 HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    );
    let r = conn.read_final_response_to("POST").expect("answer");
    assert_eq!(r.status, 400, "{}", r.head_text());
    missing.extend(wait_access_line(&tether, mark, "a 400 refusal", |l| has_status(l, 400)).err());

    // A 408: the head never completes within header_read_timeout.
    let mark = tether.stderr_text().len();
    let mut conn = RawConn::connect(a);
    conn.set_read_timeout(WAIT);
    conn.send(b"GET /slow-head HTTP/1.1\r\nHost: a.test\r\n");
    let r = conn.read_final_response_to("GET").expect("answer");
    assert_eq!(r.status, 408, "{}", r.head_text());
    missing.extend(wait_access_line(&tether, mark, "a 408", |l| has_status(l, 408)).err());

    // A 101 (WebSocket upgrade relayed to the echo origin).
    let mark = tether.stderr_text().len();
    let (mut ws, resp) = WsClient::connect(a, "ws.test", "/ws-access-probe", &[])
        .unwrap_or_else(|r| panic!("no 101:\n{}{}", r.head_text(), r.body_text()));
    assert_eq!(resp.status, 101);
    ws.send_text("hi");
    assert_eq!(ws.read_message().expect("echo").payload, b"hi");
    let _ = ws.close(1000);
    drop(ws);
    missing.extend(wait_access_line(&tether, mark, "a 101 upgrade", |l| has_status(l, 101)).err());
    assert!(
        missing.is_empty(),
        "SPEC 8: an access log line per plain request:\n{}\n\ntether's stderr:\n{}",
        missing.join("\n"),
        tether.stderr_text()
    );
}

// -------------------------------------------- 9. Session-* application fields

#[test]
fn application_session_fields_reach_upstreams_and_plain_answers_lose_session_fields() {
    // Plain request: an origin that records what it receives.
    let origin = RawUpstream::start(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
    // Candidate request: a worker that answers plain 200 with session
    // fields, which the client must not see (SPEC 2 step 6).
    let worker = RawUpstream::start(
        b"HTTP/1.1 200 OK\r\nConnection-Type: not-persistent\r\nSessionID: bogus\r\n\
          Session-Received: 7\r\nSession-Foo: foo\r\nSession-Token: tok\r\nX-Kept: yes\r\n\
          Content-Length: 6\r\n\r\nplain\n",
    );
    let tether = start(&Tether::config(
        "",
        &[
            plain_vhost(&["a.test"], &origin.url()),
            session_vhost(&[HOST], &origin.url(), &[&worker.url()]),
        ],
    ));
    let a = tether.addr();
    let lower = |raw: &[u8]| String::from_utf8_lossy(raw).to_ascii_lowercase();
    let app_fields = [("Session-Token", "tok-1"), ("Session-Foo", "foo-1")];
    let own_fields = [
        ("SessionID", "client-sent-session-id-0123456789"),
        ("Session-Received", "3"),
        ("Session-Event", "message"),
        ("Connection-Type", "Persistent"),
    ];

    // Every violation is collected, so that one run reports them all.
    let mut problems: Vec<String> = Vec::new();

    // Plain requests: on a plain vhost, and to a non-candidate path of a
    // session vhost.
    for host in ["a.test", HOST] {
        let mut headers = app_fields.to_vec();
        headers.extend_from_slice(&own_fields);
        let r = RawConn::connect(a).request("GET", "/plain", host, &headers, b"");
        assert_eq!(r.status, 200, "{host}: {}", r.head_text());
        let seen = lower(&origin.next_request());
        for (name, value) in app_fields {
            if !seen.contains(&format!("\r\n{}: {value}\r\n", name.to_ascii_lowercase())) {
                problems.push(format!(
                    "plain request on {host}: the application field {name} did not reach \
                     the origin; it received:\n{seen}"
                ));
            }
        }
        for (name, _) in own_fields {
            if seen.contains(&format!("\r\n{}:", name.to_ascii_lowercase())) {
                problems.push(format!(
                    "plain request on {host}: the gateway's own field {name} was not \
                     stripped; the origin received:\n{seen}"
                ));
            }
        }
    }

    // A candidate request the worker answers as plain.
    let mut headers = vec![("Accept", ACCEPT)];
    headers.extend_from_slice(&app_fields);
    headers.extend_from_slice(&own_fields[1..]);
    let r = RawConn::connect(a).request("GET", "/x.pphp", HOST, &headers, b"");
    assert_eq!(r.status, 200, "{}{}", r.head_text(), r.body_text());
    assert_eq!(r.body, b"plain\n");
    assert_eq!(r.header("x-kept"), Some("yes"), "{}", r.head_text());
    for (name, _) in &r.headers {
        let n = name.to_ascii_lowercase();
        if n == "sessionid" || n == "connection-type" || n.starts_with("session-") {
            problems.push(format!(
                "SPEC 2 step 6: a worker's plain answer loses Connection-Type, SessionID \
                 and Session-*; the client got {name}:\n{}",
                r.head_text()
            ));
        }
    }
    let seen = lower(&worker.next_request());
    for (name, value) in app_fields {
        if !seen.contains(&format!("\r\n{}: {value}\r\n", name.to_ascii_lowercase())) {
            problems.push(format!(
                "candidate request: the application field {name} did not reach the \
                 worker; it received:\n{seen}"
            ));
        }
    }
    for (name, _) in &own_fields[1..] {
        if seen.contains(&format!("\r\n{}:", name.to_ascii_lowercase())) {
            problems.push(format!(
                "candidate request: the client's {name} was not stripped; the worker \
                 received:\n{seen}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n---\n"));
}
