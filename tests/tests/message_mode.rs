//! Message mode (SPEC 6) with real Apache + PHP: a plain PHP script serves a
//! persistent session through `Session-Event: open`, `message` and `close`
//! requests, answering with chunked bodies.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tether_tests::apache::Apache;
use tether_tests::session::{delete, open_with, resume_ok, session_vhost, End, HOST, WAIT};
use tether_tests::tether::tether_bin;
use tether_tests::websocket::{OP_BINARY, OP_CLOSE, OP_TEXT};
use tether_tests::{assert_between, wait_for, RawConn, Tether, WsClient};

const CHAT: &str = r#"<?php
$event = $_SERVER['HTTP_SESSION_EVENT'] ?? '-';
$sid = $_SERVER['HTTP_SESSIONID'] ?? '-';
$type = $_SERVER['CONTENT_TYPE'] ?? '-';
$user = $_COOKIE['user'] ?? '-';
$uri = $_SERVER['REQUEST_URI'];
file_put_contents(__DIR__ . '/events.log',
    "$event $sid {$_SERVER['REQUEST_METHOD']} $uri type=$type user=$user\n", FILE_APPEND | LOCK_EX);
if ($event === 'open') {
    header('Connection-Type: Persistent');
    echo "welcome $user\n";
    flush();
    exit;
}
if ($event === 'message') {
    $body = file_get_contents('php://input');
    foreach (explode("\n", rtrim($body, "\n")) as $line) {
        file_put_contents(__DIR__ . '/events.log', "line $sid $line\n", FILE_APPEND | LOCK_EX);
        if ($line === 'fail') { http_response_code(500); echo "not for the client\n"; exit; }
        if ($line === 'gone') { http_response_code(410); exit; }
        if ($line === 'slow') {
            usleep(500000);
            file_put_contents(__DIR__ . '/events.log', "slept $sid\n", FILE_APPEND | LOCK_EX);
        }
        if ($line === 'bye') { header('Session-Event: close'); echo "goodbye\n"; exit; }
        if ($line === 'partial') { echo "partial-without-lf"; flush(); continue; }
        echo "php says: $line\n";
        flush();
    }
    exit;
}
if ($event === 'close') { exit; }
http_response_code(400);
"#;

fn start() -> (Apache, Tether) {
    start_with("resume_grace = \"30s\"")
}

/// Apache with the chat script, tether in front with `extra` in the
/// message-mode `[vhost.persistent]`.
fn start_with(extra: &str) -> (Apache, Tether) {
    start_on(HOST, extra)
}

/// [`start_with`] on a vhost of `host` (`"*"`: every Host).
fn start_on(host: &str, extra: &str) -> (Apache, Tether) {
    // Enough idle children that no request of the restart tests waits in
    // the listen queue (tether's pool keeps connections alive, and each
    // idle one holds a prefork child).
    let apache = Apache::start(
        "<FilesMatch \"\\.pphp$\">\n    SetHandler application/x-httpd-php\n</FilesMatch>\n\
         StartServers 24\nMinSpareServers 24\nMaxSpareServers 48\nMaxRequestWorkers 64\n\
         Timeout 5\n",
    );
    apache.put_file("chat.pphp", CHAT.as_bytes());
    std::fs::write(apache.root().join("events.log"), "").unwrap();
    tether_tests::set_mode(&apache.root().join("events.log"), 0o666);
    let url = format!("http://{}", apache.addr());
    let tether = Tether::start(&Tether::config(
        "",
        &[session_vhost(
            host,
            &url,
            std::slice::from_ref(&url),
            &format!("mode = \"message\"\n{extra}"),
        )],
    ));
    (apache, tether)
}

fn events(apache: &Apache) -> Vec<String> {
    std::fs::read_to_string(apache.root().join("events.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn metrics(t: &Tether) -> String {
    let admin: SocketAddr = t.admin_addr().expect("admin");
    RawConn::connect(admin)
        .request("GET", "/metrics", "admin", &[], b"")
        .body_text()
}

#[test]
fn a_php_script_serves_a_session_through_events() {
    let (apache, tether) = start();
    let mut s = open_with(
        tether.addr(),
        HOST,
        "/chat.pphp?room=1",
        &[("Cookie", "user=ana")],
    )
    .unwrap_or_else(|r| panic!("not persistent: {}{}", r.head_text(), r.body_text()));
    assert_eq!(
        s.initial, b"welcome ana\n",
        "the chunked open answer is the initial body"
    );
    assert_eq!(s.head.header("content-length"), Some("12"));

    s.chan.send(b"hello\n");
    assert_eq!(s.chan.line(), "php says: hello\n");
    s.chan.send(b"a\nb\npartial\n");
    assert_eq!(s.chan.line(), "php says: a\n");
    assert_eq!(s.chan.line(), "php says: b\n");
    assert_eq!(
        s.chan.line(),
        "partial-without-lf\n",
        "a final line without LF gets one"
    );

    // A drop and a resume: the PHP script notices nothing.
    let sid = s.sid.clone();
    s.chan.reset();
    let mut s = resume_ok(tether.addr(), "/chat.pphp?room=1", &sid, 4);
    assert_eq!(s.head.header("session-received"), Some("4"));
    s.chan.send(b"again\n");
    assert_eq!(s.chan.line(), "php says: again\n");

    // A non-2xx answer ends the session: remaining lines, then EOF.
    s.chan.send(b"fail\n");
    let (lines, end) = s.chan.lines_until_end(WAIT);
    assert!(
        lines.is_empty(),
        "the failed answer's body is discarded: {lines:?}"
    );
    assert_eq!(end, End::Eof);
    wait_for("the close event", WAIT, || {
        events(&apache)
            .iter()
            .any(|e| e.starts_with("close "))
            .then_some(())
    });

    let ev = events(&apache);
    let opens: Vec<_> = ev.iter().filter(|e| e.starts_with("open ")).collect();
    let messages: Vec<_> = ev.iter().filter(|e| e.starts_with("message ")).collect();
    let closes: Vec<_> = ev.iter().filter(|e| e.starts_with("close ")).collect();
    assert_eq!(opens.len(), 1, "{ev:?}");
    assert_eq!(closes.len(), 1, "close is sent once: {ev:?}");
    assert!(!messages.is_empty(), "{ev:?}");
    for m in messages.iter().chain(closes.iter()) {
        assert!(m.contains(&sid), "every request carries the SessionID: {m}");
        assert!(
            m.contains("POST /chat.pphp?room=1 "),
            "to the opening path and query: {m}"
        );
        assert!(
            m.contains("user=ana"),
            "with the opening request's cookies: {m}"
        );
    }
    for m in &messages {
        assert!(m.contains("type=text/plain; charset=utf-8"), "{m}");
    }
    let lines: Vec<_> = ev.iter().filter(|e| e.starts_with("line ")).collect();
    let got: Vec<&str> = lines
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(
        got,
        ["hello", "a", "b", "partial", "again", "fail"],
        "each line once, in order"
    );

    let m = metrics(&tether);
    assert!(
        m.contains(&format!(
            "tether_sessions_ended_total{{vhost=\"{HOST}\",reason=\"worker_status\"}} 1"
        )),
        "{m}"
    );
}

#[test]
fn an_unreachable_worker_ends_the_session() {
    let (apache, tether) = start_with("worker_retry = \"0s\"");
    let mut s = open_with(tether.addr(), HOST, "/chat.pphp", &[])
        .unwrap_or_else(|r| panic!("not persistent: {}", r.head_text()));
    s.chan.send(b"hello\n");
    assert_eq!(s.chan.line(), "php says: hello\n");
    drop(apache);
    s.chan.send(b"anyone?\n");
    let (_, end) = s.chan.lines_until_end(Duration::from_secs(30));
    assert_eq!(end, End::Eof);
    // Counted as the task ends, just after the client's EOF.
    wait_for("the end counted", WAIT, || {
        (ended(&tether, "worker_unreachable") == "1").then_some(())
    });
}

#[test]
fn a_detached_session_ends_with_a_close_event_within_1s_of_its_grace() {
    // SPEC 4 "Promptness" in message mode: the end is the close event
    // (SPEC 6), no later than 1 s after resume_grace, and not before it.
    let (apache, tether) = start_with("resume_grace = \"2s\"");
    let mut s = open_with(tether.addr(), HOST, "/chat.pphp", &[])
        .unwrap_or_else(|r| panic!("not persistent: {}", r.head_text()));
    s.chan.send(b"hello\n");
    assert_eq!(s.chan.line(), "php says: hello\n");
    let sid = s.sid.clone();
    let detached = Instant::now();
    s.chan.reset();
    wait_for("the close event", Duration::from_secs(20), || {
        events(&apache)
            .iter()
            .any(|e| e.starts_with(&format!("close {sid} ")))
            .then_some(())
    });
    let grace = Duration::from_secs(2);
    assert_between(
        "the close event of a detached message-mode session after resume_grace (2 s)",
        detached.elapsed(),
        grace,
        grace + Duration::from_secs(1),
    );
}

/// `clients` sessions each send `lines` numbered lines, one every `every`,
/// without waiting for answers, while Apache is stopped completely for
/// `down` after `down_after` and started again on the same port. Gives
/// back each session's SessionID, what its client read until the end (or
/// `limit`), and how the channel ended (`None`: still open).
struct Restart {
    sid: String,
    got: Vec<String>,
    end: Option<End>,
}

fn numbered_lines_across_a_restart(
    apache: &mut Apache,
    tether: &Tether,
    clients: usize,
    lines: usize,
    down: Duration,
) -> Vec<Restart> {
    let every = Duration::from_millis(100);
    let addr = tether.addr();
    let opened: Vec<_> = (0..clients)
        .map(|_| {
            open_with(addr, HOST, "/chat.pphp", &[])
                .unwrap_or_else(|r| panic!("not persistent: {}{}", r.head_text(), r.body_text()))
        })
        .collect();
    let warm = std::sync::Arc::new(std::sync::Barrier::new(clients + 1));
    let quiet = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handles: Vec<_> = opened
        .into_iter()
        .enumerate()
        .map(|(c, mut s)| {
            let warm = warm.clone();
            let quiet = quiet.clone();
            let sent = sent.clone();
            std::thread::spawn(move || {
                // One exchange before Apache stops, so that every session
                // has its connection and its PHP child.
                s.chan.send(format!("c{c}-0\n").as_bytes());
                let mut got = vec![s.chan.line()];
                warm.wait();
                for n in 1..lines {
                    while quiet.load(std::sync::atomic::Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    if s.chan.try_send(format!("c{c}-{n}\n").as_bytes()).is_err() {
                        break;
                    }
                    sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    std::thread::sleep(every);
                }
                let mut end = None;
                let deadline = Instant::now() + Duration::from_secs(30);
                while got.len() < lines && Instant::now() < deadline {
                    s.chan.set_read_timeout(Duration::from_secs(10));
                    match s.chan.try_line() {
                        Ok(Some(l)) => got.push(String::from_utf8_lossy(&l).into_owned()),
                        Ok(None) => {
                            end = Some(End::Eof);
                            break;
                        }
                        Err(_) => {
                            end = Some(End::Reset);
                            break;
                        }
                    }
                }
                Restart {
                    sid: s.sid.clone(),
                    got,
                    end,
                }
            })
        })
        .collect();
    warm.wait();
    std::thread::sleep(Duration::from_secs(1));
    // `apachectl stop` (SIGTERM) kills the children at once: a request
    // PHP is running is lost, and until the parent has exited (about
    // 100 ms) the port still completes TCP handshakes that no child will
    // accept and resets them, a request written there included. A written
    // request is never sent again (SPEC 6: PHP may have acted on it), so
    // such a session would end; no client can tell those apart from a
    // request PHP took. The clients hold their lines around the signal
    // (300 ms before, for requests in flight to finish, and 300 ms after)
    // and send throughout the 5 s the port refuses, which is what
    // `worker_retry` is about: sessions whose kept-alive connections were
    // closed, and requests refused, all go on.
    quiet.store(true, std::sync::atomic::Ordering::SeqCst);
    // Every line sent so far has had its answer back in tether: no
    // request is in flight when Apache stops, however loaded the machine.
    std::thread::sleep(Duration::from_millis(50));
    let sent_now = sent.load(std::sync::atomic::Ordering::SeqCst) + clients;
    let admin = tether.admin_addr().expect("admin");
    let answers = format!("tether_lines_total{{vhost=\"{HOST}\",direction=\"to_client\"}}");
    wait_for("an answer to every line sent so far", WAIT, || {
        let back = tether_tests::metric(admin, &answers).unwrap_or(0.0) as usize;
        (back >= sent_now).then_some(())
    });
    std::thread::sleep(Duration::from_millis(100));
    let stopping = Instant::now();
    apache.stop_now();
    let stop_took = stopping.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    quiet.store(false, std::sync::atomic::Ordering::SeqCst);
    std::thread::sleep(down);
    apache.start_again();
    eprintln!(
        "apache down for {:?} (graceful stop {stop_took:?}, then refusing while clients send)",
        stopping.elapsed(),
    );
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn sessions_wait_for_an_apache_that_stops_and_starts_again() {
    // SPEC 6 `worker_retry`: Apache fully stopped for 5 s (the port
    // refuses) while 20 clients keep sending: no session ends, every line
    // reaches PHP once and in order, every answer reaches its client.
    let (mut apache, tether) = start();
    const CLIENTS: usize = 20;
    const LINES: usize = 80;
    let results = numbered_lines_across_a_restart(
        &mut apache,
        &tether,
        CLIENTS,
        LINES,
        Duration::from_secs(5),
    );
    let ev = events(&apache);
    let mut lost = 0;
    let mut duplicated = 0;
    for (c, r) in results.iter().enumerate() {
        let want: Vec<String> = (0..LINES)
            .map(|n| format!("php says: c{c}-{n}\n"))
            .collect();
        assert_eq!(
            r.end,
            None,
            "session {c} ended after {} answers; tether:\n{}\n{}",
            r.got.len(),
            tether.stderr_text(),
            metrics(&tether)
        );
        assert_eq!(r.got, want, "client {c} gets every answer, in order");
        let at_php: Vec<&str> = ev
            .iter()
            .filter(|e| e.starts_with(&format!("line {} ", r.sid)))
            .map(|e| e.rsplit(' ').next().unwrap())
            .collect();
        let sent: Vec<String> = (0..LINES).map(|n| format!("c{c}-{n}")).collect();
        lost += sent
            .iter()
            .filter(|l| !at_php.contains(&l.as_str()))
            .count();
        duplicated += at_php.len().saturating_sub(LINES);
        assert_eq!(at_php, sent, "every line reaches PHP once, in order");
    }
    eprintln!(
        "{CLIENTS} sessions, {} lines, apache down 5 s: {lost} lost, {duplicated} duplicated",
        CLIENTS * LINES
    );
    let m = metrics(&tether);
    assert!(
        m.lines()
            .filter(|l| l.starts_with("tether_sessions_ended_total{"))
            .all(|l| l.ends_with(" 0")),
        "no session ended: {m}"
    );
    // Each session had one request refused, however often it was tried.
    assert!(
        m.contains(&format!(
            "tether_upstream_errors_total{{vhost=\"{HOST}\",kind=\"connect\"}} {CLIENTS}"
        )),
        "a refused request is counted once: {m}"
    );
}

#[test]
fn sessions_end_when_apache_stays_away_longer_than_worker_retry() {
    let (mut apache, tether) = start_with("resume_grace = \"30s\"\nworker_retry = \"2s\"");
    const CLIENTS: usize = 20;
    let results =
        numbered_lines_across_a_restart(&mut apache, &tether, CLIENTS, 40, Duration::from_secs(5));
    for (c, r) in results.iter().enumerate() {
        assert_eq!(r.end, Some(End::Eof), "session {c}: {} lines", r.got.len());
    }
    wait_for("the ends counted", WAIT, || {
        (ended(&tether, "worker_unreachable") == CLIENTS.to_string()).then_some(())
    });
}

/// A WebSocket session on `path`: the upgrade, the empty control record,
/// the open record and the initial body's text frame.
fn ws_open(addr: SocketAddr, path: &str) -> WsClient {
    let (mut ws, _) = WsClient::connect(
        addr,
        HOST,
        path,
        &[("Sec-WebSocket-Protocol", "persistent")],
    )
    .unwrap_or_else(|r| panic!("no 101: {}", r.head_text()));
    ws.conn().set_read_timeout(WAIT);
    ws.send_binary(b"");
    let record = ws.read_message().expect("the open record");
    assert_eq!(record.opcode, OP_BINARY);
    let record = String::from_utf8(record.payload).unwrap();
    if !record.ends_with("&initial=0") {
        let initial = ws.read_message().expect("the initial text frame");
        assert_eq!(initial.opcode, OP_TEXT, "{record}");
    }
    ws
}

/// Text frames until the gateway's close frame; the close is answered.
fn ws_until_close(ws: &mut WsClient) -> (Vec<String>, u16, String) {
    let mut texts = Vec::new();
    loop {
        let f = ws.read_message().expect("a message or the close");
        match f.opcode {
            OP_TEXT => texts.push(String::from_utf8(f.payload).unwrap()),
            OP_CLOSE => {
                let code = f.close_code().unwrap_or(1005);
                let reason = f.close_reason();
                let _ = ws.send_close(code, "");
                return (texts, code, reason);
            }
            op => panic!("opcode {op:#x} before the close"),
        }
    }
}

fn ended(t: &Tether, reason: &str) -> String {
    let m = metrics(t);
    m.lines()
        .find(|l| {
            l.starts_with(&format!(
                "tether_sessions_ended_total{{vhost=\"{HOST}\",reason=\"{reason}\"}}"
            ))
        })
        .map(|l| l.rsplit(' ').next().unwrap().to_owned())
        .unwrap_or_default()
}

#[test]
fn a_php_script_ends_the_session_with_session_event_close() {
    // SPEC 6: a 2xx answer with `Session-Event: close`: its lines, then a
    // worker end (native EOF, WebSocket 1000), and the close event once.
    let (apache, tether) = start();
    let mut s = open_with(tether.addr(), HOST, "/chat.pphp", &[])
        .unwrap_or_else(|r| panic!("not persistent: {}", r.head_text()));
    s.chan.send(b"hello\n");
    assert_eq!(s.chan.line(), "php says: hello\n");
    s.chan.send(b"bye\n");
    let (lines, end) = s.chan.lines_until_end(WAIT);
    assert_eq!(
        lines,
        [b"goodbye\n".to_vec()],
        "the answer's line, then the end"
    );
    assert_eq!(end, End::Eof);
    wait_for("the session's end", WAIT, || {
        (ended(&tether, "worker_end") == "1").then_some(())
    });

    let mut ws = ws_open(tether.addr(), "/chat.pphp");
    ws.send_text("bye");
    let (texts, code, reason) = ws_until_close(&mut ws);
    assert_eq!(texts, ["goodbye"]);
    assert_eq!(code, 1000, "{reason}");
    wait_for("both ends", WAIT, || {
        (ended(&tether, "worker_end") == "2").then_some(())
    });

    // The close event still goes, once per session: the script's clean-up
    // has one place whoever ended the session.
    std::thread::sleep(Duration::from_millis(500));
    let ev = events(&apache);
    let closes: Vec<_> = ev.iter().filter(|e| e.starts_with("close ")).collect();
    assert_eq!(closes.len(), 2, "{ev:?}");
    assert!(closes.iter().any(|c| c.contains(&s.sid)), "{ev:?}");
}

#[test]
fn a_mid_session_status_over_websocket_is_4502_with_the_status() {
    let (_apache, tether) = start();
    let mut ws = ws_open(tether.addr(), "/chat.pphp");
    ws.send_text("hello");
    let f = ws.read_message().unwrap();
    assert_eq!(String::from_utf8(f.payload).unwrap(), "php says: hello");
    // Alone in its request: PHP cannot set a status after output.
    ws.send_text("gone");
    let (texts, code, reason) = ws_until_close(&mut ws);
    assert!(texts.is_empty(), "{texts:?}");
    assert_eq!((code, reason.as_str()), (4502, "worker status 410"));
    wait_for("the end counted", WAIT, || {
        (ended(&tether, "worker_status") == "1").then_some(())
    });
}

#[test]
fn a_websocket_client_learns_that_the_worker_stayed_away() {
    let (mut apache, tether) = start_with("worker_retry = \"1s\"");
    let mut ws = ws_open(tether.addr(), "/chat.pphp");
    ws.send_text("hello");
    let f = ws.read_message().unwrap();
    assert_eq!(String::from_utf8(f.payload).unwrap(), "php says: hello");
    apache.stop();
    let sent = Instant::now();
    ws.send_text("anyone?");
    let (texts, code, reason) = ws_until_close(&mut ws);
    assert!(texts.is_empty(), "{texts:?}");
    assert_eq!((code, reason.as_str()), (4502, "worker unreachable"));
    assert_between(
        "the end after worker_retry",
        sent.elapsed(),
        Duration::from_millis(900),
        Duration::from_secs(4),
    );
    wait_for("the end counted", WAIT, || {
        (ended(&tether, "worker_unreachable") == "1").then_some(())
    });
}

#[test]
fn a_client_end_lets_the_answer_in_flight_reach_the_client() {
    // SPEC 6: a DELETE while a message request is in flight: its lines
    // still reach the attached native client, then EOF; the close event
    // comes after that request, once.
    let (apache, tether) = start();
    let mut s = open_with(tether.addr(), HOST, "/chat.pphp", &[])
        .unwrap_or_else(|r| panic!("not persistent: {}", r.head_text()));
    s.chan.send(b"slow\n");
    wait_for("the request in flight", WAIT, || {
        events(&apache)
            .iter()
            .any(|e| e.starts_with(&format!("line {} slow", s.sid)))
            .then_some(())
    });
    let resp = delete(tether.addr(), HOST, "/chat.pphp", &s.sid);
    assert_eq!(resp.status, 204, "{}", resp.head_text());
    let (lines, end) = s.chan.lines_until_end(WAIT);
    assert_eq!(lines, [b"php says: slow\n".to_vec()]);
    assert_eq!(end, End::Eof);
    wait_for("the end counted", WAIT, || {
        (ended(&tether, "client_end") == "1").then_some(())
    });

    // WebSocket close 1000 with a request in flight: the request finishes
    // (the script is not cut off) before the close event.
    let mut ws = ws_open(tether.addr(), "/chat.pphp");
    ws.send_text("slow");
    std::thread::sleep(Duration::from_millis(100));
    let _ = ws.send_close(1000, "");
    let ev = wait_for("two close events", WAIT, || {
        let ev = events(&apache);
        (ev.iter().filter(|e| e.starts_with("close ")).count() == 2).then_some(ev)
    });
    let order: Vec<&str> = ev
        .iter()
        .filter(|e| e.starts_with("slept ") || e.starts_with("close "))
        .map(|e| e.split(' ').next().unwrap())
        .collect();
    assert_eq!(order, ["slept", "close", "slept", "close"], "{ev:?}");
}

#[test]
fn tether_connect_prints_the_answer_to_a_last_line_every_time() {
    // `printf 'back\n' | tether connect URL`: stdin ends right after the
    // line, before PHP answered; the answer must still be printed.
    let (_apache, tether) = start_on("*", "");
    let url = format!("http://{}/chat.pphp", tether.addr());
    for run in 0..50 {
        let mut child = std::process::Command::new(tether_bin())
            .args(["connect", "--linger", "300ms", &url])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("tether connect");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(format!("back{run}\n").as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "run {run}: {stderr}");
        assert_eq!(
            stdout,
            format!("welcome -\nphp says: back{run}\n"),
            "run {run}: {stderr}"
        );
    }
}

#[test]
fn tether_connect_exits_non_zero_with_the_reason_when_the_session_is_refused() {
    let (apache, tether) = start_on("*", "worker_retry = \"0s\"");
    drop(apache);
    let url = format!("http://{}/chat.pphp", tether.addr());
    let out = std::process::Command::new(tether_bin())
        .args(["connect", &url])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("tether connect");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("502"), "{stderr}");
}

#[test]
fn the_php_walkthrough_script_works_as_documented() {
    // docs/php.md's script, taken from the page itself.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/php.md"))
        .expect("docs/php.md");
    let script = doc
        .split("```php\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a php block in docs/php.md");
    let (apache, tether) = start();
    apache.put_file("walkthrough.pphp", script.as_bytes());
    let mut s = open_with(tether.addr(), HOST, "/walkthrough.pphp", &[])
        .unwrap_or_else(|r| panic!("not persistent: {}{}", r.head_text(), r.body_text()));
    assert_eq!(s.initial, b"welcome, say something\n");
    s.chan.send(b"hello\n");
    assert_eq!(s.chan.line(), "you said: hello\n");
    s.chan.send(b"bye\n");
    let (lines, end) = s.chan.lines_until_end(WAIT);
    assert_eq!(lines, [b"goodbye after 2 lines\n".to_vec()]);
    assert_eq!(end, End::Eof);
}
