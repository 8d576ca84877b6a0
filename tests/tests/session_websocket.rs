//! Persistent sessions over WebSocket (SPEC 3), black-box: the real `tether`
//! binary, real `line_worker` workers (and `ws_echo.py` where an upstream
//! must speak WebSocket), the harness's hand-written RFC 6455 client, and
//! once python3-websockets as an independent client.
//!
//! Covered: the handshake (101, subprotocol, accept key, the Origin rule,
//! upgrades without `persistent` and to non-candidate paths), the first
//! control record (open record, initial text frame, what the worker sees,
//! 4408, 4400), lines (text frames, fragments, 1007, 1009, 4502 `not
//! utf-8`), resume (replay, 4410, takeover 4409, native ↔ WebSocket, acks
//! and the window boundary), ends (1000 both ways, detach on other codes and
//! drops, grace expiry, worker end, `DELETE`, SIGTERM 1012, limits 4503 and
//! 4429, worker down 4502, non-persistent answers 4000 + status), pings and
//! metrics.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tether_tests::raw_http::{get, request_bytes};
use tether_tests::session::{
    delete, open, resume_ok, session_vhost, start_session_tether, start_tether, LineWorker, HOST,
    WAIT,
};
use tether_tests::websocket::{OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT};
use tether_tests::ws_echo::python;
use tether_tests::{
    assert_between, assert_within_deadline, fixture, free_port, wait_for, RawConn, Signal, Tether,
    WsClient, WsEcho,
};

const WORKER: &str = env!("CARGO_BIN_EXE_line_worker");
const PERSISTENT: (&str, &str) = ("Sec-WebSocket-Protocol", "persistent");
/// A SessionID of valid syntax that tether never issued.
const FORGED: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
/// SPEC 4 "Takeover": answered within 1 s, whatever the older connection.
const TAKEOVER: Duration = Duration::from_secs(1);

// ------------------------------------------------------------------ helpers

/// One worker, which is also the origin, behind tether with `extra` in
/// `[vhost.persistent]`.
fn setup(extra: &str) -> (LineWorker, Tether) {
    let worker = LineWorker::start(WORKER, "worker");
    let tether = start_session_tether(&worker.url(), &[worker.url()], extra);
    (worker, tether)
}

/// The upgrade with `persistent` offered (plus `extra` headers) on
/// [`HOST`]; panics unless `101` with `Sec-WebSocket-Protocol: persistent`
/// (the client checks `Sec-WebSocket-Accept`).
fn upgrade(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> WsClient {
    upgrade_on(addr, HOST, path, extra)
}

fn upgrade_on(addr: SocketAddr, host: &str, path: &str, extra: &[(&str, &str)]) -> WsClient {
    let mut headers = vec![PERSISTENT];
    headers.extend_from_slice(extra);
    let (mut ws, resp) = WsClient::connect(addr, host, path, &headers).unwrap_or_else(|r| {
        panic!(
            "upgrade {path} on {host} {extra:?}: no 101:\n{}{}",
            r.head_text(),
            r.body_text()
        )
    });
    assert_eq!(
        resp.header_all("sec-websocket-protocol"),
        ["persistent"],
        "SPEC 3: the 101 selects the subprotocol `persistent`:\n{}",
        resp.head_text()
    );
    ws.conn().set_read_timeout(WAIT);
    ws
}

/// A received data message or close frame.
#[derive(Debug, PartialEq, Eq)]
enum Msg {
    Text(String),
    Binary(Vec<u8>),
    Close(u16, String),
}

/// The next message (continuations joined, pings answered).
fn next(ws: &mut WsClient) -> Msg {
    let f = ws
        .read_message()
        .unwrap_or_else(|e| panic!("reading the next WebSocket message: {e}"));
    match f.opcode {
        OP_TEXT => Msg::Text(
            String::from_utf8(f.payload)
                .unwrap_or_else(|e| panic!("RFC 6455: a text frame that is not UTF-8: {e}")),
        ),
        OP_BINARY => Msg::Binary(f.payload),
        OP_CLOSE => Msg::Close(f.close_code().unwrap_or(1005), f.close_reason()),
        op => panic!("unexpected opcode {op:#x}"),
    }
}

/// The next message, which must be a text frame.
fn text(ws: &mut WsClient) -> String {
    match next(ws) {
        Msg::Text(t) => t,
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// Reads text frames until the gateway's close frame; answers the close and
/// checks that the gateway then closes the TCP connection. Returns the
/// texts, the code and the reason.
fn until_close(ws: &mut WsClient) -> (Vec<String>, u16, String) {
    let mut texts = Vec::new();
    loop {
        match next(ws) {
            Msg::Text(t) => texts.push(t),
            Msg::Binary(b) => panic!(
                "a binary frame {:?} before the close (texts so far {texts:?})",
                String::from_utf8_lossy(&b)
            ),
            Msg::Close(code, reason) => {
                let _ = ws.send_close(code, "");
                ws.conn()
                    .expect_closed(WAIT)
                    .unwrap_or_else(|e| panic!("TCP after the close {code}: {e}"));
                return (texts, code, reason);
            }
        }
    }
}

/// The gateway closes with `code` (and `reason` when given) before any
/// other message.
fn expect_close(ws: &mut WsClient, code: u16, reason: Option<&str>, what: &str) {
    let (texts, got, got_reason) = until_close(ws);
    assert!(
        texts.is_empty(),
        "{what}: text frames {texts:?} before close {got}"
    );
    assert_eq!(got, code, "{what}: close code (reason {got_reason:?})");
    if let Some(r) = reason {
        assert_eq!(got_reason, r, "{what}: close reason of {code}");
    }
}

/// A new session's open record: the gateway's first message must be
/// exactly `sid=<id>&received=0&status=<status>&initial=<k>`, binary.
/// Returns the id and `k`.
fn open_record(ws: &mut WsClient, status: u16, what: &str) -> (String, usize) {
    let bytes = match next(ws) {
        Msg::Binary(b) => b,
        other => panic!("{what}: the gateway's first message is not binary: {other:?}"),
    };
    let record = String::from_utf8(bytes).expect("the open record is ASCII");
    let sid = record
        .strip_prefix("sid=")
        .and_then(|r| r.split('&').next())
        .unwrap_or_else(|| panic!("{what}: open record {record:?} does not start with sid="))
        .to_string();
    assert!(
        tether_tests::session::valid_sid(&sid),
        "{what}: SPEC 7 SessionID syntax: {sid:?}"
    );
    let k: usize = record
        .rsplit_once("&initial=")
        .and_then(|(_, k)| k.parse().ok())
        .unwrap_or_else(|| panic!("{what}: open record {record:?} has no initial=<k> last"));
    assert_eq!(
        record,
        format!("sid={sid}&received=0&status={status}&initial={k}"),
        "{what}: SPEC 3 open record"
    );
    (sid, k)
}

/// A persistent WebSocket session.
struct WsSession {
    ws: WsClient,
    sid: String,
    /// The initial body's text frame, if the record announced one.
    initial: Option<String>,
}

/// Upgrades, sends the empty control record and reads the open record and
/// the initial body's text frame.
fn ws_open(addr: SocketAddr, path: &str) -> WsSession {
    let mut ws = upgrade(addr, path, &[]);
    ws.send_binary(b"");
    let (sid, k) = open_record(&mut ws, 200, path);
    let initial = (k > 0).then(|| {
        let t = text(&mut ws);
        assert_eq!(t.len(), k, "SPEC 3: the initial text frame has k bytes");
        t
    });
    WsSession { ws, sid, initial }
}

/// A resume over WebSocket: `Ok` with the client and the gateway's count
/// `m` after the exact record `sid=<id>&received=<m>&status=200&initial=0`;
/// `Err` with the close code and reason.
fn ws_resume(
    addr: SocketAddr,
    path: &str,
    sid: &str,
    received: u64,
) -> Result<(WsClient, u64), (u16, String)> {
    let mut ws = upgrade(addr, path, &[]);
    ws.send_binary(format!("sid={sid}&received={received}").as_bytes());
    match next(&mut ws) {
        Msg::Binary(b) => {
            let record = String::from_utf8(b).expect("ASCII record");
            let m: u64 = record
                .strip_prefix(&format!("sid={sid}&received="))
                .and_then(|r| r.split('&').next())
                .and_then(|m| m.parse().ok())
                .unwrap_or_else(|| panic!("resume record {record:?}"));
            assert_eq!(
                record,
                format!("sid={sid}&received={m}&status=200&initial=0"),
                "SPEC 3: the resume's first message"
            );
            Ok((ws, m))
        }
        Msg::Close(code, reason) => {
            let _ = ws.send_close(code, "");
            ws.conn()
                .expect_closed(WAIT)
                .unwrap_or_else(|e| panic!("TCP after the close {code}: {e}"));
            Err((code, reason))
        }
        Msg::Text(t) => panic!("resume: a text frame {t:?} before the record"),
    }
}

fn ws_resume_ok(addr: SocketAddr, path: &str, sid: &str, received: u64) -> (WsClient, u64) {
    ws_resume(addr, path, sid, received)
        .unwrap_or_else(|(c, r)| panic!("resume {sid} at {received}: close {c} {r:?}"))
}

fn ws_resume_gone(addr: SocketAddr, path: &str, sid: &str, received: u64, what: &str) {
    match ws_resume(addr, path, sid, received) {
        Ok((_, m)) => panic!("{what}: resumed (received={m}); SPEC 3/4 want close 4410"),
        Err((code, reason)) => assert_eq!(code, 4410, "{what}: close code ({reason:?})"),
    }
}

/// Sends a close frame with `code` and waits until the gateway has taken
/// it: its own close frame or the end of the connection.
fn close_and_wait(mut ws: WsClient, code: u16) -> Option<u16> {
    ws.send_close(code, "bye").expect("send close");
    loop {
        match ws.read_frame() {
            Ok(f) if f.opcode == OP_CLOSE => return f.close_code(),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// The sum of the samples of `name` whose labels include all of `labels`
/// on the admin listener (0 when none).
fn metric(admin: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    let r = get(admin, "admin", "/metrics");
    assert_eq!(r.status, 200, "/metrics");
    r.body_text()
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labelset, value) = rest.rsplit_once(' ')?;
            let inner = labelset.strip_prefix('{')?.strip_suffix('}')?;
            labels
                .iter()
                .all(|(k, v)| inner.split(',').any(|kv| kv == format!("{k}=\"{v}\"")))
                .then(|| value.trim().parse::<f64>().ok())?
        })
        .sum()
}

/// `header <sid> ...` events of the worker (with `?headers=1`), as
/// `(lower-case name, value)`.
fn worker_headers(worker: &LineWorker, sid: &str) -> Vec<(String, String)> {
    worker
        .events_of(sid)
        .iter()
        .filter_map(|e| e.strip_prefix(&format!("header {sid} ")))
        .filter_map(|h| h.split_once(": "))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
        .collect()
}

// ---------------------------------------------------------------- handshake

#[test]
fn handshake_is_101_with_the_subprotocol_and_the_right_accept() {
    let (worker, tether) = setup("");
    let (mut ws, resp) = WsClient::connect(tether.addr(), HOST, "/echo.pphp", &[PERSISTENT])
        .unwrap_or_else(|r| panic!("no 101:\n{}{}", r.head_text(), r.body_text()));
    // WsClient::connect checked Sec-WebSocket-Accept against the key.
    let head = resp.head_text();
    assert_eq!(resp.status, 101, "{head}");
    assert!(resp.has_token("connection", "upgrade"), "{head}");
    assert!(
        resp.header("upgrade")
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket")),
        "{head}"
    );
    assert_eq!(
        resp.header_all("sec-websocket-protocol"),
        ["persistent"],
        "{head}"
    );
    // Offered among others, `persistent` is still chosen.
    let (_, resp) = WsClient::connect(
        tether.addr(),
        HOST,
        "/echo.pphp",
        &[("Sec-WebSocket-Protocol", "chat, persistent")],
    )
    .unwrap_or_else(|r| panic!("no 101:\n{}", r.head_text()));
    assert_eq!(resp.header_all("sec-websocket-protocol"), ["persistent"]);
    // The session works on the first connection.
    ws.conn().set_read_timeout(WAIT);
    ws.send_binary(b"");
    let (sid, k) = open_record(&mut ws, 200, "new session");
    assert_eq!(text(&mut ws).len(), k);
    ws.send_text("hi");
    assert_eq!(text(&mut ws), "1 hi");
    assert_eq!(worker.conns(&sid), 1);
}

#[test]
fn origin_rule() {
    let (worker, tether) = setup("allowed_origins = [\"https://App.Example.test:8443\"]");
    let addr = tether.addr();
    let allowed: &[(&str, Option<&str>)] = &[
        ("sess.test", None),
        ("sess.test", Some("http://sess.test")),
        ("sess.test", Some("http://sess.test:80")),
        ("sess.test:80", Some("http://sess.test")),
        ("sess.test:80", Some("http://sess.test:80")),
        ("sess.test:8080", Some("http://sess.test:8080")),
        ("sess.test", Some("http://SESS.test")),
        ("sess.test", Some("https://app.example.test:8443")),
        ("sess.test", Some("HTTPS://APP.EXAMPLE.TEST:8443")),
    ];
    for (host, origin) in allowed {
        let extra: Vec<(&str, &str)> = origin.iter().map(|o| ("Origin", *o)).collect();
        let mut ws = upgrade_on(addr, host, "/echo.pphp", &extra);
        ws.send_binary(b"");
        open_record(&mut ws, 200, &format!("Host {host}, Origin {origin:?}"));
    }
    let refused: &[(&str, &str)] = &[
        ("sess.test", "http://evil.test"),
        ("sess.test", "http://sess.test:8080"),
        ("sess.test:8080", "http://sess.test"),
        ("sess.test", "https://sess.test"),
        ("sess.test", "https://app.example.test"),
        ("sess.test", "http://app.example.test:8443"),
        ("sess.test", "null"),
    ];
    let before = worker.all_conns();
    for (host, origin) in refused {
        let mut headers = vec![PERSISTENT, ("Origin", *origin)];
        headers.push(("Cookie", "a=b"));
        match WsClient::connect(addr, host, "/echo.pphp", &headers) {
            Ok((_, resp)) => panic!(
                "SPEC 3: Origin {origin} on Host {host} must be 403, got:\n{}",
                resp.head_text()
            ),
            Err(r) => {
                assert_eq!(
                    r.status,
                    403,
                    "Origin {origin}, Host {host}:\n{}",
                    r.head_text()
                );
                assert!(
                    r.header("upgrade").is_none() && r.header("sec-websocket-accept").is_none(),
                    "403 without an upgrade:\n{}",
                    r.head_text()
                );
            }
        }
    }
    assert_eq!(
        worker.all_conns(),
        before,
        "a refused Origin reaches no worker"
    );
}

#[test]
fn candidate_without_persistent_is_an_ordinary_websocket_to_a_worker() {
    // The worker speaks WebSocket; the origin is a line_worker that would
    // answer 404 to anything.
    let echo = WsEcho::start();
    let origin = LineWorker::start(WORKER, "origin");
    let worker_url = format!("http://{}", echo.addr());
    let tether = start_session_tether(&origin.url(), &[worker_url], "");
    let (mut ws, resp) = WsClient::connect(tether.addr(), HOST, "/headers.pphp?x=1", &[])
        .unwrap_or_else(|r| panic!("no 101:\n{}{}", r.head_text(), r.body_text()));
    assert!(
        resp.header("sec-websocket-protocol").is_none(),
        "{}",
        resp.head_text()
    );
    ws.conn().set_read_timeout(WAIT);
    let m = ws.read_message().expect("the echo's headers message");
    let info = String::from_utf8_lossy(&m.payload).to_string();
    assert!(info.contains("path: /headers.pphp?x=1\n"), "{info}");
    assert!(info.contains("upgrade: websocket\n"), "{info}");
    assert!(info.contains(&format!("host: {HOST}\n")), "{info}");
    assert!(
        !info.contains("sessionid:"),
        "SPEC 3: an ordinary proxied WebSocket has no SessionID:\n{info}"
    );
    ws.send_text("ordinary");
    let m = ws.read_message().expect("echo");
    assert_eq!((m.opcode, m.payload), (OP_TEXT, b"ordinary".to_vec()));
    // Binary frames are data here, not control records.
    ws.send_binary(b"sid=x&received=0");
    let m = ws.read_message().expect("echo");
    assert_eq!(
        (m.opcode, m.payload),
        (OP_BINARY, b"sid=x&received=0".to_vec())
    );
    // Another subprotocol, not `persistent`: relayed as well.
    let (mut ws, _) = WsClient::connect(
        tether.addr(),
        HOST,
        "/echo.pphp",
        &[("Sec-WebSocket-Protocol", "chat")],
    )
    .unwrap_or_else(|r| panic!("no 101:\n{}{}", r.head_text(), r.body_text()));
    ws.conn().set_read_timeout(WAIT);
    ws.send_text("chat line");
    assert_eq!(ws.read_message().expect("echo").payload, b"chat line");
    assert_eq!(origin.all_conns(), 0, "nothing reached the origin");
}

#[test]
fn websocket_to_a_non_candidate_path_goes_to_the_origin() {
    // The origin speaks WebSocket; the session worker is a line_worker.
    let echo = WsEcho::start();
    let worker = LineWorker::start(WORKER, "worker");
    let origin_url = format!("http://{}", echo.addr());
    let tether = start_session_tether(&origin_url, &[worker.url()], "");
    // Even offering `persistent`, a non-candidate path is an ordinary
    // WebSocket to the origin.
    for extra in [&[][..], &[PERSISTENT][..]] {
        let (mut ws, _) = WsClient::connect(tether.addr(), HOST, "/headers/plain?y=2", extra)
            .unwrap_or_else(|r| panic!("no 101:\n{}{}", r.head_text(), r.body_text()));
        ws.conn().set_read_timeout(WAIT);
        let m = ws.read_message().expect("the origin's headers message");
        let info = String::from_utf8_lossy(&m.payload).to_string();
        assert!(info.contains("path: /headers/plain?y=2\n"), "{info}");
        assert!(!info.contains("sessionid:"), "{info}");
        ws.send_text("to origin");
        assert_eq!(ws.read_message().expect("echo").payload, b"to origin");
    }
    assert_eq!(worker.all_conns(), 0, "nothing reached the worker");
}

// ------------------------------------------------------ first control record

#[test]
fn new_session_open_record_initial_text_and_what_the_worker_sees() {
    let (worker, tether) = setup("");
    let addr = tether.addr();
    let path = "/echo.pphp?headers=1&x=y";
    let mut ws = upgrade(
        addr,
        path,
        &[
            ("Cookie", "a=b; c=d"),
            ("X-Custom", "kept"),
            ("Sec-WebSocket-Extensions", "permessage-deflate"),
            ("Origin", "http://sess.test"),
        ],
    );
    ws.send_binary(b"");
    let (sid, k) = open_record(&mut ws, 200, "new session");
    let initial = format!("hello worker {sid}\n");
    assert_eq!(k, initial.len(), "k is the initial body's byte length");
    assert_eq!(
        next(&mut ws),
        Msg::Text(initial.clone()),
        "SPEC 3: one text frame with the initial body, byte-exact"
    );
    ws.send_text("first");
    assert_eq!(
        text(&mut ws),
        "1 first",
        "the line after the initial text frame"
    );

    // The worker got a plain GET with the same target, Host and cookies.
    worker.wait_event("the open request", |e| {
        e == format!("req {sid} GET {path} 200 0")
    });
    let headers = worker_headers(&worker, &sid);
    let value = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(value("host"), [HOST], "{headers:?}");
    assert_eq!(value("cookie"), ["a=b; c=d"], "{headers:?}");
    assert_eq!(value("x-custom"), ["kept"], "{headers:?}");
    assert_eq!(value("sessionid"), [sid.as_str()], "{headers:?}");
    assert_eq!(value("x-forwarded-for"), ["127.0.0.1"], "{headers:?}");
    assert_eq!(value("x-forwarded-proto"), ["http"], "{headers:?}");
    assert_eq!(value("x-forwarded-host"), [HOST], "{headers:?}");
    assert_eq!(value("via"), ["1.1 tether"], "{headers:?}");
    for (name, _) in &headers {
        assert!(
            name != "connection" && name != "upgrade" && !name.starts_with("sec-websocket-"),
            "SPEC 3: the worker must not see {name}: {headers:?}"
        );
    }
    assert_eq!(worker.conns(&sid), 1);

    // The initial text frame is never counted as a line: S = 1.
    ws.reset();
    let (mut ws, m) = ws_resume_ok(addr, "/echo.pphp", &sid, 1);
    assert_eq!(m, 1);
    ws.send_text("second");
    assert_eq!(text(&mut ws), "2 second");
    drop(ws);
    ws_resume_gone(addr, "/echo.pphp", &sid, 3, "count beyond S");
}

#[test]
fn no_initial_body_means_no_text_frame_and_big_ones_come_whole() {
    let (_worker, tether) = setup("");
    let addr = tether.addr();
    let mut ws = upgrade(addr, "/echo.pphp?initial=0", &[]);
    ws.send_binary(b"");
    let (_, k) = open_record(&mut ws, 200, "initial=0");
    assert_eq!(k, 0);
    ws.send_text("z");
    assert_eq!(
        next(&mut ws),
        Msg::Text("1 z".into()),
        "k = 0: no initial text frame"
    );

    let n = 100_000;
    let mut ws = upgrade(addr, &format!("/bigbody.pphp?n={n}"), &[]);
    ws.send_binary(b"");
    let (_, k) = open_record(&mut ws, 200, "bigbody");
    assert_eq!(k, n);
    let body = text(&mut ws);
    let expected: String = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.\n"
        .chars()
        .cycle()
        .take(n)
        .collect();
    assert!(body == expected, "the initial body, byte-exact ({n} bytes)");
    ws.send_text("after");
    assert_eq!(text(&mut ws), "1 after");
}

#[test]
fn no_control_record_in_time_is_4408() {
    let worker = LineWorker::start(WORKER, "worker");
    let tether = Tether::start(&Tether::config(
        "header_read_timeout = \"1s\"",
        &[session_vhost(HOST, &worker.url(), &[worker.url()], "")],
    ));
    let started = Instant::now();
    let mut ws = upgrade(tether.addr(), "/echo.pphp", &[]);
    expect_close(&mut ws, 4408, None, "no control record");
    let timeout = Duration::from_secs(1);
    assert_between(
        "4408 at header_read_timeout (1 s) after the upgrade",
        started.elapsed(),
        timeout,
        timeout,
    );
    assert_eq!(worker.all_conns(), 0, "nothing reached the worker");
}

#[test]
fn text_first_or_a_malformed_record_is_4400() {
    let (worker, tether) = setup("");
    let addr = tether.addr();
    let bad_records: &[&[u8]] = &[
        b"garbage",
        b"received=0",
        b"ack=1",
        b"sid=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        b"sid=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&received=x",
        b"sid=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&received=-1",
        b"sid=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&received=99999999999999999999",
        b"\xff\xfe",
    ];
    for record in bad_records {
        let mut ws = upgrade(addr, "/echo.pphp", &[]);
        ws.send_binary(record);
        expect_close(
            &mut ws,
            4400,
            None,
            &format!("record {:?}", String::from_utf8_lossy(record)),
        );
    }
    let mut ws = upgrade(addr, "/echo.pphp", &[]);
    ws.send_text("hello");
    expect_close(&mut ws, 4400, None, "a text frame first");
    assert_eq!(worker.all_conns(), 0, "nothing reached the worker");
}

// -------------------------------------------------------------------- lines

#[test]
fn lines_are_text_frames_both_ways_and_fragments_are_joined() {
    let (worker, tether) = setup("");
    let addr = tether.addr();
    let mut s = ws_open(addr, "/echo.pphp?initial=0");
    let ws = &mut s.ws;
    ws.send_text("a");
    assert_eq!(text(ws), "1 a", "worker lines arrive without their LF");
    ws.send_text("ünïcødé ✓");
    assert_eq!(text(ws), "2 ünïcødé ✓");
    ws.send_text("");
    assert_eq!(text(ws), "3 ", "an empty text frame is the line \"\\n\"");
    // A fragmented text message, with a ping between its fragments.
    ws.send_frame(false, OP_TEXT, b"frag").unwrap();
    ws.send_frame(false, OP_CONT, b"men").unwrap();
    ws.send_frame(true, OP_PING, b"p1").unwrap();
    ws.send_frame(true, OP_CONT, b"ted").unwrap();
    let pong = ws.read_frame().expect("pong");
    assert_eq!((pong.opcode, pong.payload), (OP_PONG, b"p1".to_vec()));
    assert_eq!(text(ws), "4 fragmented");
    worker.wait_event("4 lines", |e| e == format!("line {} 4", s.sid));
    assert!(worker.errors().is_empty(), "{:?}", worker.errors());

    // Lines the worker writes on its own: one text frame each, no LF.
    let mut c = ws_open(addr, "/count.pphp?n=3&size=10");
    assert_eq!(c.initial, None);
    for i in 1..=3 {
        assert_eq!(next(&mut c.ws), Msg::Text(format!("{i} xxxxxxx")));
    }
}

#[test]
fn a_text_frame_holding_an_lf_is_1007() {
    let (worker, tether) = setup("");
    let addr = tether.addr();
    let mut s = ws_open(addr, "/echo.pphp?initial=0");
    s.ws.send_text("ok");
    assert_eq!(text(&mut s.ws), "1 ok");
    s.ws.send_text("two\nlines");
    expect_close(
        &mut s.ws,
        1007,
        Some("protocol_error"),
        "LF in a text frame",
    );
    let eof = worker.wait_eof(&s.sid);
    assert!(
        eof.starts_with(&format!("eof {} 1", s.sid)),
        "the worker got only the first line: {eof}"
    );
    ws_resume_gone(addr, "/echo.pphp", &s.sid, 1, "after 1007");
}

#[test]
fn a_line_over_max_line_is_1009_either_way() {
    let (worker, tether) = setup("max_line = \"64B\"");
    let addr = tether.addr();
    // Client side: payload + 1 (the LF) is the line's length.
    let mut s = ws_open(addr, "/count.pphp?n=0");
    s.ws.send_text(&"a".repeat(63));
    worker.wait_event("the 64-byte line", |e| e == format!("line {} 1", s.sid));
    s.ws.send_text(&"b".repeat(64));
    expect_close(&mut s.ws, 1009, None, "a 65-byte client line");
    worker.wait_eof(&s.sid);
    ws_resume_gone(addr, "/count.pphp", &s.sid, 0, "after 1009");

    // The same over fragments: 40 + 24 bytes of payload.
    let mut s = ws_open(addr, "/count.pphp?n=0");
    s.ws.send_frame(false, OP_TEXT, &[b'c'; 40]).unwrap();
    s.ws.send_frame(true, OP_CONT, &[b'c'; 24]).unwrap();
    expect_close(&mut s.ws, 1009, None, "a 65-byte fragmented client line");
    worker.wait_eof(&s.sid);

    // Worker side: a 65-byte line (LF included).
    let mut s = ws_open(addr, "/longline.pphp?n=65");
    expect_close(&mut s.ws, 1009, None, "a 65-byte worker line");
    worker.wait_eof(&s.sid);
    // 64 bytes are fine.
    let mut s = ws_open(addr, "/longline.pphp?n=64");
    assert_eq!(text(&mut s.ws), "L".repeat(63));
}

#[test]
fn control_records_are_not_held_to_max_line() {
    // max_line bounds lines (SPEC 1, 2); a resume record of 45 bytes is a
    // control record, not a line, and must work with max_line = 16 B.
    let (worker, tether) = setup("max_line = \"16B\"");
    let addr = tether.addr();
    let mut s = ws_open(addr, "/echo.pphp?initial=0");
    s.ws.send_text("short");
    assert_eq!(text(&mut s.ws), "1 short");
    let sid = s.sid.clone();
    s.ws.reset();
    let (mut ws, m) = ws_resume_ok(addr, "/echo.pphp", &sid, 1);
    assert_eq!(m, 1);
    ws.send_text("again");
    assert_eq!(text(&mut ws), "2 again");
    assert_eq!(worker.conns(&sid), 1);
}

#[test]
fn worker_output_that_is_not_utf8_is_4502() {
    let (worker, tether) = setup("");
    let addr = tether.addr();
    let mut s = ws_open(addr, "/binary.pphp");
    let (texts, code, reason) = until_close(&mut s.ws);
    // The UTF-8 line before the bad one may or may not make it (the
    // session ends with an error); nothing else may.
    assert!(
        texts.is_empty() || texts == ["ok"],
        "texts before the close: {texts:?}"
    );
    assert_eq!((code, reason.as_str()), (4502, "not utf-8"));
    worker.wait_eof(&s.sid);

    // An initial body that is not UTF-8: no text frame, close 4502.
    let mut ws = upgrade(addr, "/binary.pphp?badinitial=1", &[]);
    ws.send_binary(b"");
    let mut sid = None;
    let (texts, code, reason) = loop {
        match next(&mut ws) {
            Msg::Binary(b) => {
                let record = String::from_utf8(b).expect("ASCII");
                let id = record
                    .strip_prefix("sid=")
                    .and_then(|r| r.split('&').next())
                    .unwrap_or_default()
                    .to_string();
                assert_eq!(
                    record,
                    format!("sid={id}&received=0&status=200&initial=3"),
                    "open record"
                );
                sid = Some(id);
            }
            Msg::Text(t) => panic!("a text frame {t:?} for an initial body that is not UTF-8"),
            Msg::Close(code, reason) => {
                let _ = ws.send_close(code, "");
                break (Vec::<String>::new(), code, reason);
            }
        }
    };
    assert!(texts.is_empty());
    assert_eq!((code, reason.as_str()), (4502, "not utf-8"));
    if let Some(sid) = sid {
        worker.wait_eof(&sid);
    }
}

// ------------------------------------------------------------------- resume

#[test]
fn resume_replays_the_lines_after_the_count() {
    let (worker, tether) = setup("");
    let addr = tether.addr();
    let mut s = ws_open(addr, "/echo.pphp");
    let sid = s.sid.clone();
    assert!(s.initial.is_some());
    s.ws.send_text("a");
    s.ws.send_text("b");
    assert_eq!(text(&mut s.ws), "1 a");
    assert_eq!(text(&mut s.ws), "2 b");
    // c is delivered; its echo, not read by us, is replayed.
    s.ws.send_text("c");
    worker.wait_event("line 3", |e| e == format!("line {sid} 3"));
    s.ws.reset();
    let (mut ws, m) = ws_resume_ok(addr, "/echo.pphp", &sid, 2);
    assert_eq!(
        m, 3,
        "received = the client's lines delivered to the worker"
    );
    assert_eq!(
        next(&mut ws),
        Msg::Text("3 c".into()),
        "replayed line, no initial body"
    );
    ws.send_text("d");
    assert_eq!(text(&mut ws), "4 d");
    // Nothing to replay.
    ws.reset();
    let (mut ws, m) = ws_resume_ok(addr, "/echo.pphp", &sid, 4);
    assert_eq!(m, 4);
    ws.send_text("e");
    assert_eq!(text(&mut ws), "5 e");
    assert_eq!(worker.conns(&sid), 1, "the worker saw one request");
    assert!(!worker.events_of(&sid).iter().any(|e| e.starts_with("eof ")));
    assert!(worker.errors().is_empty(), "{:?}", worker.errors());
}

#[test]
fn unknown_forged_and_ended_ids_are_4410() {
    // SPEC 4: unknown, expired, forged, ended and other-vhost SessionIDs all
    // get the same 410 (WebSocket: 4410). Every case is tried; the failures
    // are reported together.
    let (worker, tether) = setup("");
    let addr = tether.addr();
    let mut cases: Vec<(String, String, u64)> = Vec::new();
    cases.push(("unknown, 14 characters".into(), "does-not-exist".into(), 0));
    cases.push(("unknown, 70 characters".into(), "A".repeat(70), 0));
    cases.push(("forged".into(), FORGED.into(), 0));
    // A live id with one character changed.
    let live = ws_open(addr, "/echo.pphp");
    let mut tampered = live.sid.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    cases.push(("tampered".into(), tampered.clone(), 0));
    // Ended by the client's close 1000.
    let mut s = ws_open(addr, "/echo.pphp?initial=0");
    let code = s.ws.close(1000).expect("close answer").close_code();
    assert_eq!(code, Some(1000));
    worker.wait_eof(&s.sid);
    cases.push(("ended by close 1000".into(), s.sid.clone(), 0));
    // Ended by DELETE.
    let s = ws_open(addr, "/echo.pphp?initial=0");
    let sid = s.sid.clone();
    drop(s);
    assert_eq!(delete(addr, HOST, "/echo.pphp", &sid).status, 204);
    cases.push(("ended by DELETE".into(), sid, 0));
    let mut failures = Vec::new();
    for (what, sid, n) in &cases {
        match ws_resume(addr, "/echo.pphp", sid, *n) {
            Ok((_, m)) => failures.push(format!("{what} ({sid}): resumed with received={m}")),
            Err((4410, _)) => {}
            Err((code, reason)) => failures.push(format!(
                "{what} (sid={sid}&received={n}): close {code} {reason:?}, want 4410"
            )),
        }
    }
    assert!(failures.is_empty(), "SPEC 3/4:\n{}", failures.join("\n"));
    for sid in [FORGED, tampered.as_str()] {
        assert_eq!(worker.conns(sid), 0);
    }
}

#[test]
fn a_second_resume_takes_over_with_4409() {
    let (worker, tether) = setup("");
    let addr = tether.addr();
    let mut a = ws_open(addr, "/echo.pphp?initial=0");
    let sid = a.sid.clone();
    a.ws.send_text("x");
    assert_eq!(text(&mut a.ws), "1 x");
    let started = Instant::now();
    let (mut b, m) = ws_resume_ok(addr, "/echo.pphp", &sid, 1);
    assert_within_deadline("WebSocket takeover answered", started.elapsed(), TAKEOVER);
    assert_eq!(m, 1);
    // SPEC 4 "Promptness": the older connection is closed before the
    // takeover is answered.
    let answered = Instant::now();
    expect_close(&mut a.ws, 4409, Some("taken over"), "the older connection");
    assert_within_deadline(
        "4409 to the older connection (before the takeover's answer)",
        answered.elapsed(),
        Duration::ZERO,
    );
    b.send_text("y");
    assert_eq!(text(&mut b), "2 y");
    // A native resume takes over a WebSocket one, too.
    let started = Instant::now();
    let mut n = resume_ok(addr, "/echo.pphp", &sid, 2);
    assert_within_deadline("native takeover answered", started.elapsed(), TAKEOVER);
    let answered = Instant::now();
    expect_close(
        &mut b,
        4409,
        Some("taken over"),
        "WebSocket taken over natively",
    );
    assert_within_deadline(
        "4409 to the older WebSocket (before the native takeover's answer)",
        answered.elapsed(),
        Duration::ZERO,
    );
    n.chan.send(b"z\n");
    assert_eq!(n.chan.line(), "3 z\n");
    assert_eq!(worker.conns(&sid), 1);
}

#[test]
fn native_sessions_resume_over_websocket_and_back() {
    let (worker, tether) = setup("");
    let addr = tether.addr();
    let mut o = open(addr, "/echo.pphp");
    let sid = o.sid.clone();
    o.chan.send(b"n1\n");
    assert_eq!(o.chan.line(), "1 n1\n");
    o.chan.send(b"n2\n");
    worker.wait_event("line 2", |e| e == format!("line {sid} 2"));
    o.chan.reset();
    let (mut ws, m) = ws_resume_ok(addr, "/echo.pphp", &sid, 1);
    assert_eq!(m, 2);
    assert_eq!(text(&mut ws), "2 n2", "replayed over WebSocket");
    ws.send_text("w3");
    assert_eq!(text(&mut ws), "3 w3");
    ws.send_text("w4");
    worker.wait_event("line 4", |e| e == format!("line {sid} 4"));
    ws.reset();
    let mut r = resume_ok(addr, "/echo.pphp", &sid, 3);
    assert_eq!(r.head.header("session-received"), Some("4"));
    assert_eq!(r.chan.line(), "4 w4\n", "replayed natively");
    r.chan.send(b"n5\n");
    assert_eq!(r.chan.line(), "5 n5\n");
    assert_eq!(worker.conns(&sid), 1);
    assert!(worker.errors().is_empty(), "{:?}", worker.errors());
}

#[test]
fn acks_let_the_window_drop_lines() {
    // The default window holds all 10 lines; acks let the gateway drop
    // them, after which a count below the acked one is outside the window
    // (SPEC 4: a resume succeeds iff o - 1 <= c <= S).
    let (_worker, tether) = setup("");
    let addr = tether.addr();
    let path = "/count.pphp?n=10&size=32";
    let read_all = |s: &mut WsSession| {
        for i in 1..=10 {
            let t = text(&mut s.ws);
            assert!(t.starts_with(&format!("{i} ")), "line {i}: {t:?}");
        }
    };
    // No ack: everything can be replayed.
    let mut s = ws_open(addr, path);
    read_all(&mut s);
    let sid = s.sid.clone();
    close_and_wait(s.ws, 4000);
    let (mut ws, _) = ws_resume_ok(addr, path, &sid, 5);
    assert!(text(&mut ws).starts_with("6 "), "replay from line 6");

    // ack=8: o = 9, so 8 resumes and 7 is gone.
    let mut s = ws_open(addr, path);
    read_all(&mut s);
    s.ws.send_binary(b"ack=8");
    let sid = s.sid.clone();
    close_and_wait(s.ws, 4000);
    let (mut ws, _) = ws_resume_ok(addr, path, &sid, 8);
    assert!(text(&mut ws).starts_with("9 "), "replay from line 9");
    assert!(text(&mut ws).starts_with("10 "));

    let mut s = ws_open(addr, path);
    read_all(&mut s);
    s.ws.send_binary(b"ack=8");
    let sid = s.sid.clone();
    close_and_wait(s.ws, 4000);
    ws_resume_gone(addr, path, &sid, 7, "count below the acked lines");
}

// --------------------------------------------------------------------- ends

#[test]
fn client_close_1000_ends_the_session() {
    let (worker, tether) = setup("");
    let addr = tether.addr();
    let mut s = ws_open(addr, "/echo.pphp?initial=0");
    s.ws.send_text("a");
    assert_eq!(text(&mut s.ws), "1 a");
    let answer = s.ws.close(1000).expect("the gateway's close");
    assert_eq!(
        answer.close_code(),
        Some(1000),
        "SPEC 3: answered with close 1000"
    );
    s.ws.conn()
        .expect_closed(WAIT)
        .expect("TCP closed after the close handshake");
    let eof = worker.wait_eof(&s.sid);
    assert!(eof.starts_with(&format!("eof {} 1", s.sid)), "{eof}");
    ws_resume_gone(addr, "/echo.pphp", &s.sid, 1, "after close 1000");
}

#[test]
fn other_close_codes_and_drops_detach() {
    let (worker, tether) = setup("resume_grace = \"60s\"");
    let addr = tether.addr();
    let mut s = ws_open(addr, "/echo.pphp?initial=0");
    let sid = s.sid.clone();
    s.ws.send_text("a");
    assert_eq!(text(&mut s.ws), "1 a");
    assert_eq!(
        close_and_wait(s.ws, 4000),
        Some(4000),
        "RFC 6455 §5.5.1: the close is answered, with the client's code"
    );
    let (mut ws, m) = ws_resume_ok(addr, "/echo.pphp", &sid, 1);
    assert_eq!(m, 1, "close 4000 detached");
    ws.send_text("b");
    worker.wait_event("line 2", |e| e == format!("line {sid} 2"));
    // A close without a code detaches too.
    ws.send_frame(true, OP_CLOSE, b"").unwrap();
    let _ = ws.read_frame();
    let (mut ws, m) = ws_resume_ok(addr, "/echo.pphp", &sid, 1);
    assert_eq!(m, 2, "a close without a code detached");
    assert_eq!(text(&mut ws), "2 b");
    ws.send_text("c");
    worker.wait_event("line 3", |e| e == format!("line {sid} 3"));
    // A dropped TCP connection detaches.
    ws.reset();
    let (mut ws, m) = ws_resume_ok(addr, "/echo.pphp", &sid, 2);
    assert_eq!(m, 3);
    assert_eq!(text(&mut ws), "3 c");
    assert!(!worker.events_of(&sid).iter().any(|e| e.starts_with("eof ")));
    assert_eq!(worker.conns(&sid), 1);
}

#[test]
fn a_dropped_websocket_session_ends_within_1s_of_its_grace() {
    // SPEC 4 "Promptness": no later than 1 s after resume_grace, with no
    // traffic at all meanwhile; and not before the grace has run out.
    let (worker, tether) = setup("resume_grace = \"2s\"");
    let addr = tether.addr();
    let mut s = ws_open(addr, "/echo.pphp?initial=0");
    let sid = s.sid.clone();
    s.ws.send_text("a");
    assert_eq!(text(&mut s.ws), "1 a");
    let detached = Instant::now();
    s.ws.reset();
    let eof = worker.wait_event_for("grace expiry", Duration::from_secs(20), |e| {
        e.starts_with(&format!("eof {sid} "))
    });
    let grace = Duration::from_secs(2);
    assert_between(
        "a dropped WebSocket session ends after resume_grace (2 s)",
        detached.elapsed(),
        grace,
        grace + Duration::from_secs(1),
    );
    assert!(eof.starts_with(&format!("eof {sid} 1")), "{eof}");
    ws_resume_gone(addr, "/echo.pphp", &sid, 1, "after the grace");
}

#[test]
fn worker_end_sends_the_remaining_lines_then_1000() {
    let (worker, tether) = setup("");
    let addr = tether.addr();
    let mut s = ws_open(addr, "/end.pphp?n=3");
    let (texts, code, _) = until_close(&mut s.ws);
    assert_eq!(texts, ["1", "2", "3"]);
    assert_eq!(code, 1000, "SPEC 3: worker end closes with 1000");
    worker.wait_event("end", |e| e == format!("end {}", s.sid));
    ws_resume_gone(addr, "/end.pphp", &s.sid, 3, "after the worker end");
}

#[test]
fn delete_sends_the_remaining_lines_then_1000() {
    let (worker, tether) = setup("");
    let addr = tether.addr();
    let admin = tether.admin_addr().expect("admin");
    let mut s = ws_open(addr, "/count.pphp?n=5&size=10");
    // The gateway has taken the 5 lines from the worker (none read yet).
    wait_for("5 lines taken from the worker", WAIT, || {
        (metric(
            admin,
            "tether_lines_total",
            &[("vhost", HOST), ("direction", "to_client")],
        ) >= 5.0)
            .then_some(())
    });
    let r = delete(addr, HOST, "/count.pphp", &s.sid);
    let answered = Instant::now();
    assert_eq!(r.status, 204, "{}", r.head_text());
    worker.wait_eof(&s.sid);
    assert_within_deadline(
        "the worker connection closed (before DELETE's answer)",
        answered.elapsed(),
        Duration::ZERO,
    );
    let (texts, code, _) = until_close(&mut s.ws);
    let want: Vec<String> = (1..=5).map(|i| format!("{i} xxxxxxx")).collect();
    assert_eq!(texts, want, "the remaining lines");
    assert_eq!(code, 1000, "SPEC 3: DELETE closes with 1000");
}

#[test]
fn push_api_lines_are_text_frames_and_its_delete_closes_with_1000() {
    let worker = LineWorker::start(WORKER, "worker");
    let tether = Tether::start(&Tether::config(
        "admin_token = \"tok\"",
        &[session_vhost(HOST, &worker.url(), &[worker.url()], "")],
    ));
    let admin = tether.admin_addr().expect("admin");
    let call = |method: &str, path: &str, body: &[u8]| {
        RawConn::connect(admin).request(
            method,
            path,
            "admin",
            &[("Authorization", "Bearer tok")],
            body,
        )
    };
    let mut s = ws_open(tether.addr(), "/count.pphp?n=0");
    let r = call("POST", &format!("/v1/sessions/{}/lines", s.sid), b"p1\np2");
    assert_eq!(r.status, 204, "{}{}", r.head_text(), r.body_text());
    assert_eq!(text(&mut s.ws), "p1");
    assert_eq!(text(&mut s.ws), "p2", "a final line without LF gets one");
    let r = call("DELETE", &format!("/v1/sessions/{}", s.sid), b"");
    let answered = Instant::now();
    assert_eq!(r.status, 204, "{}{}", r.head_text(), r.body_text());
    let (texts, code, _) = until_close(&mut s.ws);
    assert!(texts.is_empty(), "{texts:?}");
    assert_eq!(code, 1000, "SPEC 3: a push-API DELETE closes with 1000");
    worker.wait_eof(&s.sid);
    assert_within_deadline(
        "the worker connection closed (before the push API DELETE's answer)",
        answered.elapsed(),
        Duration::ZERO,
    );
}

#[test]
fn sigterm_closes_websocket_sessions_with_1012() {
    let worker = LineWorker::start(WORKER, "worker");
    let drain_timeout = Duration::from_secs(3);
    let mut tether = Tether::start(&Tether::config(
        "drain_timeout = \"3s\"",
        &[session_vhost(HOST, &worker.url(), &[worker.url()], "")],
    ));
    tether.wait_signal_handlers();
    let mut s = ws_open(tether.addr(), "/echo.pphp?initial=0");
    s.ws.send_text("a");
    assert_eq!(text(&mut s.ws), "1 a");
    let signalled = Instant::now();
    tether.signal(Signal::Term);
    let (texts, code, _) = until_close(&mut s.ws);
    assert!(texts.is_empty(), "{texts:?}");
    assert_eq!(code, 1012, "SPEC 8: WebSocket clients get close 1012");
    assert_within_deadline(
        "close 1012 after SIGTERM",
        signalled.elapsed(),
        drain_timeout,
    );
    worker.wait_eof(&s.sid);
    assert_within_deadline(
        "the worker connection closed after SIGTERM",
        signalled.elapsed(),
        drain_timeout,
    );
    let status = tether
        .wait_exit(Duration::from_secs(60))
        .expect("tether exits after SIGTERM");
    assert_within_deadline("exit after SIGTERM", signalled.elapsed(), drain_timeout);
    assert!(status.success(), "exit status {status}");
}

#[test]
fn session_limits_are_4503_and_4429() {
    let (worker, tether) = setup("max_sessions = 1");
    let first = ws_open(tether.addr(), "/echo.pphp?initial=0");
    let mut ws = upgrade(tether.addr(), "/echo.pphp", &[]);
    ws.send_binary(b"");
    expect_close(&mut ws, 4503, None, "over max_sessions");
    assert_eq!(worker.all_conns(), 1, "nothing more reached the worker");
    drop(first);

    let (worker, tether) = setup("max_sessions_per_ip = 1");
    let _first = ws_open(tether.addr(), "/echo.pphp?initial=0");
    let mut ws = upgrade(tether.addr(), "/echo.pphp", &[]);
    ws.send_binary(b"");
    expect_close(&mut ws, 4429, None, "over max_sessions_per_ip");
    assert_eq!(worker.all_conns(), 1, "nothing more reached the worker");
}

#[test]
fn worker_down_is_4502_and_plain_answers_are_4000_plus_status() {
    let origin = LineWorker::start(WORKER, "origin");
    let down = format!("http://127.0.0.1:{}", free_port());
    let tether = start_session_tether(&origin.url(), &[down], "");
    let mut ws = upgrade(tether.addr(), "/echo.pphp", &[]);
    ws.send_binary(b"");
    expect_close(&mut ws, 4502, None, "no worker up");

    let (worker, tether) = setup("");
    for code in [404u16, 500, 302] {
        let mut ws = upgrade(tether.addr(), &format!("/status.pphp?code={code}"), &[]);
        ws.send_binary(b"");
        expect_close(
            &mut ws,
            4000 + code,
            None,
            &format!("a plain {code} from the worker"),
        );
        worker.wait_event("the plain answer", |e| {
            e.starts_with("req ") && e.contains(&format!(" GET /status.pphp?code={code} {code} "))
        });
    }
    // /plain.pphp answers 200 without Connection-Type: Persistent.
    let mut ws = upgrade(tether.addr(), "/plain.pphp", &[]);
    ws.send_binary(b"");
    expect_close(&mut ws, 4200, None, "a plain 200");
}

// -------------------------------------------------------------------- pings

#[test]
fn client_pings_are_answered_with_pongs() {
    // RFC 6455 5.5.2: a Pong in response, as soon as is practical. Here the
    // session is idle: nothing else is written that could carry the pong.
    let (_worker, tether) = setup("");
    let mut s = ws_open(tether.addr(), "/echo.pphp?initial=0");
    s.ws.send_frame(true, OP_PING, b"are you there").unwrap();
    let f =
        s.ws.read_frame()
            .unwrap_or_else(|e| panic!("no pong to an idle session's ping within {WAIT:?}: {e}"));
    assert_eq!((f.opcode, f.payload), (OP_PONG, b"are you there".to_vec()));
    s.ws.send_text("x");
    assert_eq!(text(&mut s.ws), "1 x");
    s.ws.send_frame(true, OP_PING, b"again").unwrap();
    let f = s
        .ws
        .read_frame()
        .unwrap_or_else(|e| panic!("no pong to an attached session's ping within {WAIT:?}: {e}"));
    assert_eq!((f.opcode, f.payload), (OP_PONG, b"again".to_vec()));
}

#[test]
fn the_gateway_pings_an_idle_client_every_15s() {
    let (_worker, tether) = setup("");
    let mut s = ws_open(tether.addr(), "/echo.pphp?initial=0");
    // Stay silent: a ping comes within 15 s (hang guard 40 s).
    s.ws.conn().set_read_timeout(Duration::from_secs(40));
    let ping = s.ws.read_frame().expect("a ping from the gateway");
    assert_eq!(ping.opcode, OP_PING, "the first frame while idle: {ping:?}");
    s.ws.send_frame(true, OP_PONG, &ping.payload).unwrap();
    s.ws.conn().set_read_timeout(WAIT);
    s.ws.send_text("still here");
    assert_eq!(text(&mut s.ws), "1 still here");
}

// ------------------------------------------------------------------ metrics

#[test]
fn sessions_opened_are_counted_by_transport() {
    let (_worker, tether) = setup("");
    let addr = tether.addr();
    let admin = tether.admin_addr().expect("admin");
    let opened = |transport: &str| {
        metric(
            admin,
            "tether_sessions_opened_total",
            &[("vhost", HOST), ("transport", transport)],
        )
    };
    assert_eq!(opened("websocket"), 0.0);
    let _a = ws_open(addr, "/echo.pphp");
    let _b = ws_open(addr, "/echo.pphp?initial=0");
    let n = open(addr, "/echo.pphp");
    // Failed opens are not sessions.
    let mut ws = upgrade(addr, "/status.pphp?code=404", &[]);
    ws.send_binary(b"");
    expect_close(&mut ws, 4404, None, "plain 404");
    // A resume is not an opening.
    let sid = n.sid.clone();
    n.chan.reset();
    let (_ws, _) = ws_resume_ok(addr, "/echo.pphp", &sid, 0);
    assert_eq!(opened("websocket"), 2.0);
    assert_eq!(opened("native"), 1.0);
}

// --------------------------------------------- an independent implementation

#[test]
fn python_websockets_client_opens_a_session() {
    let worker = LineWorker::start(WORKER, "worker");
    // The client's Host is 127.0.0.1:PORT: a vhost for it.
    let tether = start_tether(&[session_vhost(
        "127.0.0.1",
        &worker.url(),
        &[worker.url()],
        "",
    )]);
    let port = tether.addr().port();
    let out = Command::new(python())
        .arg(fixture("ws_session_client.py"))
        .arg(port.to_string())
        .arg("/echo.pphp?x=1")
        .arg(format!("http://127.0.0.1:{port}"))
        .arg("first line")
        .arg("ünï")
        .stdin(Stdio::null())
        .output()
        .expect("run ws_session_client.py");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "ws_session_client.py failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{stdout}");
    assert_eq!(lines[0], r#"{"subprotocol": "persistent"}"#, "{stdout}");
    let record = lines[1]
        .strip_prefix(r#"{"open": ""#)
        .and_then(|r| r.strip_suffix(r#""}"#))
        .unwrap_or_else(|| panic!("no binary open record: {stdout}"));
    let sid = record
        .strip_prefix("sid=")
        .and_then(|r| r.split('&').next())
        .unwrap_or_default();
    let initial = format!("hello worker {sid}\n");
    assert_eq!(
        record,
        format!("sid={sid}&received=0&status=200&initial={}", initial.len())
    );
    assert_eq!(
        lines[2],
        format!(r#"{{"initial": "hello worker {sid}\n", "binary": false}}"#),
        "{stdout}"
    );
    assert_eq!(
        lines[3], r#"{"message": "1 first line", "binary": false}"#,
        "{stdout}"
    );
    assert_eq!(
        lines[4], r#"{"message": "2 \u00fcn\u00ef", "binary": false}"#,
        "{stdout}"
    );
    assert!(
        lines[5].starts_with(r#"{"close_code": 1000, "#),
        "SPEC 3: close 1000 answered with 1000: {stdout}"
    );
    worker.wait_eof(sid);
}

/// Raw bytes check of the 101 head: `RawConn` directly, to see every header
/// line (no duplicate `Sec-WebSocket-Protocol`, no body).
#[test]
fn the_101_head_is_exact() {
    let (_worker, tether) = setup("");
    let mut conn = RawConn::connect(tether.addr());
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    conn.send(&request_bytes(
        "GET",
        "/echo.pphp",
        HOST,
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key),
            ("Sec-WebSocket-Version", "13"),
            PERSISTENT,
        ],
        b"",
    ));
    let resp = conn.read_head().expect("101 head");
    assert_eq!(resp.status, 101, "{}", resp.head_text());
    assert_eq!(
        resp.header_all("sec-websocket-accept"),
        ["s3pPLMBiTxaQ9kYGzzhZRbK+xOo="],
        "RFC 6455 1.3 example key"
    );
    assert_eq!(resp.header_all("sec-websocket-protocol"), ["persistent"]);
    assert!(resp.header("content-length").is_none_or(|v| v == "0"));
}
