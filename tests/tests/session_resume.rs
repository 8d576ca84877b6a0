//! Resume (SPEC 4) and the session's ends and limits (SPEC 2, 7), with raw
//! bytes against the real `tether` binary and real `line_worker` processes:
//! replay after a reset, 400 and the one 410, the replay window boundary,
//! takeover (also of a silent connection), `DELETE`, grace expiry, a worker
//! end while detached, `max_line` both ways, session limits and pinning.

use std::time::{Duration, Instant};

use tether_tests::session::{
    delete, open, open_with, resume, resume_ok, resume_with, session_vhost, start_session_tether,
    start_tether, wait_stable, without_date, End, LineWorker, Opened, HOST, WAIT,
};
use tether_tests::{assert_between, assert_within_deadline, Response, Tether};

const WORKER: &str = env!("CARGO_BIN_EXE_line_worker");
/// SPEC 4 "Takeover": answered within 1 s, whatever the older connection.
const TAKEOVER: Duration = Duration::from_secs(1);
/// SPEC 4 "Promptness": a detached session ends no later than 1 s after
/// its `resume_grace` has run out.
const GRACE_LATENESS: Duration = Duration::from_secs(1);

/// One worker, which is also the origin, behind tether with `extra` in
/// `[vhost.persistent]`.
fn setup(extra: &str) -> (LineWorker, Tether) {
    let worker = LineWorker::start(WORKER, "worker");
    let tether = start_session_tether(&worker.url(), &[worker.url()], extra);
    (worker, tether)
}

fn gone(r: Result<Opened, Box<Response>>, what: &str) -> Response {
    match r {
        Ok(o) => panic!("{what}: resumed:\n{}", o.head.head_text()),
        Err(r) => {
            assert_eq!(r.status, 410, "{what}:\n{}{}", r.head_text(), r.body_text());
            *r
        }
    }
}

/// Line `i` of `/count.pphp?size=S` (S > digits + 2).
fn count_line(i: u64, size: usize) -> String {
    let mut s = format!("{i} ");
    while s.len() < size - 1 {
        s.push('x');
    }
    s.push('\n');
    s
}

#[test]
fn echo_survives_resets_with_replay_and_no_duplicates() {
    let (worker, tether) = setup("");
    let addr = tether.addr();
    let mut o = open(addr, "/echo.pphp");
    let sid = o.sid.clone();
    o.chan.send(b"a\nb\n");
    assert_eq!(o.chan.line(), "1 a\n");
    assert_eq!(o.chan.line(), "2 b\n");
    // c is delivered, its echo not read by us: replayed after the reset.
    o.chan.send(b"c\n");
    worker.wait_event("line 3", |e| e == format!("line {sid} 3"));
    o.chan.reset();
    let mut r = resume_ok(addr, "/echo.pphp", &sid, 2);
    let h = &r.head;
    let text = h.head_text();
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert_eq!(h.header_all("sessionid"), [sid.as_str()], "{text}");
    assert_eq!(h.header_all("session-received"), ["3"], "{text}");
    assert_eq!(h.header_all("content-length"), ["0"], "{text}");
    assert!(
        h.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("keep-alive")),
        "{text}"
    );
    assert!(!h.has_token("connection", "close"), "{text}");
    assert!(r.initial.is_empty());
    assert_eq!(r.chan.line(), "3 c\n");
    r.chan.send(b"d\n");
    assert_eq!(r.chan.line(), "4 d\n");

    // Bytes after the last LF at a drop are not a line: discarded.
    r.chan.send(b"e\npartial-no-lf");
    worker.wait_event("line 5", |e| e == format!("line {sid} 5"));
    r.chan.reset();
    let mut r = resume_ok(addr, "/echo.pphp", &sid, 4);
    assert_eq!(r.head.header("session-received"), Some("5"));
    assert_eq!(r.chan.line(), "5 e\n");
    r.chan.send(b"f\n");
    assert_eq!(r.chan.line(), "6 f\n");

    // A resume that finds everything received replays nothing.
    r.chan.reset();
    let mut r = resume_ok(addr, "/echo.pphp", &sid, 6);
    assert_eq!(r.head.header("session-received"), Some("6"));
    r.chan.send(b"g\n");
    assert_eq!(r.chan.line(), "7 g\n");
    assert_eq!(worker.conns(&sid), 1, "{:#?}", worker.events_of(&sid));
    assert!(!worker.events_of(&sid).iter().any(|e| e.starts_with("eof ")));
    assert!(worker.errors().is_empty(), "{:#?}", worker.errors());
}

#[test]
fn resume_without_or_with_malformed_count_is_400() {
    let (worker, tether) = setup("");
    let addr = tether.addr();
    let mut o = open(addr, "/echo.pphp");
    let sid = o.sid.clone();
    o.chan.send(b"a\n");
    assert_eq!(o.chan.line(), "1 a\n");
    o.chan.reset();
    for count in [
        None,
        Some("-1"),
        Some("x"),
        Some("9223372036854775808"),
        Some("99999999999999999999"),
        Some("+1"),
        Some("1.0"),
        Some("0x1"),
        Some("1 2"),
        Some(""),
    ] {
        match resume_with(addr, HOST, "/echo.pphp", &sid, count) {
            Ok(o) => panic!("count {count:?} resumed:\n{}", o.head.head_text()),
            Err(r) => assert_eq!(r.status, 400, "count {count:?}:\n{}", r.head_text()),
        }
    }
    // A resume is a candidate request: without the capability, 406.
    let mut conn = tether_tests::RawConn::connect(addr);
    conn.send(&tether_tests::raw_http::request_bytes(
        "GET",
        "/echo.pphp",
        HOST,
        &[("SessionID", &sid), ("Session-Received", "1")],
        b"",
    ));
    let r = conn.read_response();
    assert_eq!(r.status, 406, "resume without Accept:\n{}", r.head_text());
    // Syntax is checked before the lookup: the session is untouched.
    let mut r = resume_ok(addr, "/echo.pphp", &sid, 1);
    assert_eq!(r.head.header("session-received"), Some("1"));
    r.chan.send(b"b\n");
    assert_eq!(r.chan.line(), "2 b\n");
    assert_eq!(worker.conns(&sid), 1);
}

#[test]
fn every_410_is_the_same_answer() {
    let worker = LineWorker::start(WORKER, "worker");
    let a = session_vhost(
        HOST,
        &worker.url(),
        &[worker.url()],
        "resume_grace = \"3s\"\nreplay_window = \"100B\"",
    );
    let b = session_vhost("other.test", &worker.url(), &[worker.url()], "");
    let tether = start_tether(&[a, b]);
    let addr = tether.addr();

    // Expired: started first, collected last. It carries a line, so that
    // its grace is `resume_grace` (a session that never carried one may be
    // given a shorter grace).
    let mut o = open(addr, "/echo.pphp");
    let expired = o.sid.clone();
    o.chan.send(b"a\n");
    assert_eq!(o.chan.line(), "1 a\n");
    let detached = Instant::now();
    o.chan.reset();

    let mut answers: Vec<(&str, Response)> = Vec::new();
    answers.push((
        "unknown",
        gone(resume(addr, "/echo.pphp", "does-not-exist", 0), "unknown"),
    ));
    let forged = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    answers.push((
        "forged",
        gone(resume(addr, "/echo.pphp", forged, 0), "forged"),
    ));
    // A live id with one character changed.
    let live = open(addr, "/echo.pphp");
    let mut tampered = live.sid.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    answers.push((
        "tampered",
        gone(resume(addr, "/echo.pphp", &tampered, 0), "tampered"),
    ));
    // Ended with DELETE.
    let o = open(addr, "/echo.pphp");
    assert_eq!(delete(addr, HOST, "/echo.pphp", &o.sid).status, 204);
    answers.push((
        "ended",
        gone(resume(addr, "/echo.pphp", &o.sid, 0), "ended"),
    ));
    // Created on the other vhost.
    let other = open_with(addr, "other.test", "/echo.pphp", &[]).unwrap_or_else(|r| {
        panic!("other vhost: {}", r.head_text());
    });
    answers.push((
        "other vhost",
        gone(resume(addr, "/echo.pphp", &other.sid, 0), "other vhost"),
    ));
    // Count beyond S (2 lines sent toward the client).
    let mut o = open(addr, "/echo.pphp");
    o.chan.send(b"a\nb\n");
    o.chan.line();
    o.chan.line();
    let beyond = o.sid.clone();
    o.chan.reset();
    answers.push((
        "beyond S",
        gone(resume(addr, "/echo.pphp", &beyond, 3), "beyond S"),
    ));
    // Count below the window: 10 lines of 32 bytes, 100 bytes of window
    // hold lines 8..=10, so o = 8 and o - 2 = 6 is too old.
    let mut o = open(addr, "/count.pphp?n=10&size=32");
    for i in 1..=10 {
        assert_eq!(o.chan.line(), count_line(i, 32));
    }
    let below = o.sid.clone();
    o.chan.reset();
    answers.push((
        "below window",
        gone(resume(addr, "/count.pphp", &below, 6), "below window"),
    ));
    // DELETE of an unknown id gets the same 410.
    answers.push(("DELETE unknown", delete(addr, HOST, "/echo.pphp", forged)));
    // Expired: the grace (3 s) runs out; the worker sees EOF.
    worker.wait_event_for("expiry", Duration::from_secs(20), |e| {
        e.starts_with(&format!("eof {expired} "))
    });
    let grace = Duration::from_secs(3);
    assert_between(
        "the detached session ends after resume_grace (3 s)",
        detached.elapsed(),
        grace,
        grace + GRACE_LATENESS,
    );
    answers.push((
        "expired",
        gone(resume(addr, "/echo.pphp", &expired, 0), "expired"),
    ));

    let (label0, first) = &answers[0];
    assert_eq!(first.status, 410);
    assert!(!first.body.is_empty(), "a 410 says why");
    for (label, r) in &answers[1..] {
        assert_eq!(r.status, 410, "{label}:\n{}", r.head_text());
        assert_eq!(
            without_date(r),
            without_date(first),
            "the 410 for {label} differs from the one for {label0}:\n{}{}\n---\n{}{}",
            r.head_text(),
            r.body_text(),
            first.head_text(),
            first.body_text()
        );
    }
    // A failed resume ends a live session: its worker connection is closed.
    worker.wait_eof(&beyond);
    worker.wait_eof(&below);
    // Nothing of the failures reached the worker.
    for sid in [&beyond, &below, &live.sid, &other.sid] {
        assert_eq!(worker.conns(sid), 1);
    }
    assert_eq!(worker.conns(&tampered), 0);
    assert_eq!(worker.conns(forged), 0);
}

#[test]
fn replay_window_boundary_o_minus_1_resumes_o_minus_2_is_gone() {
    // 10 lines of 32 bytes; 100 bytes of window hold lines 8, 9, 10: o = 8.
    let (worker, tether) = setup("replay_window = \"100B\"");
    let addr = tether.addr();
    let path = "/count.pphp?n=10&size=32";
    let read_all = |o: &mut Opened| {
        for i in 1..=10 {
            assert_eq!(o.chan.line(), count_line(i, 32));
        }
    };
    let mut o = open(addr, path);
    read_all(&mut o);
    let sid = o.sid.clone();
    o.chan.reset();
    let mut r = resume_ok(addr, path, &sid, 7);
    assert_eq!(r.head.header("session-received"), Some("0"));
    for i in 8..=10 {
        assert_eq!(r.chan.line(), count_line(i, 32), "replayed line {i}");
    }
    // Nothing more: the worker still reads, the session lives.
    r.chan.send(b"client line\n");
    worker.wait_event("line 1", |e| e == format!("line {sid} 1"));
    assert!(!worker.events_of(&sid).iter().any(|e| e.starts_with("eof ")));

    let mut o = open(addr, path);
    read_all(&mut o);
    let sid2 = o.sid.clone();
    o.chan.reset();
    gone(resume(addr, path, &sid2, 6), "o - 2");
    worker.wait_eof(&sid2);
}

#[test]
fn takeover_closes_the_older_connection_and_the_newest_wins() {
    let (worker, tether) = setup("");
    let addr = tether.addr();
    let mut a = open(addr, "/echo.pphp");
    let sid = a.sid.clone();
    a.chan.send(b"x\n");
    assert_eq!(a.chan.line(), "1 x\n");
    let started = Instant::now();
    let mut b = resume_ok(addr, "/echo.pphp", &sid, 1);
    assert_within_deadline("takeover answered", started.elapsed(), TAKEOVER);
    assert_eq!(b.head.header("session-received"), Some("1"));
    // SPEC 4 "Promptness": the older connection is closed before the
    // takeover is answered, so its end is already on its way.
    let answered = Instant::now();
    a.chan
        .expect_closed(WAIT)
        .expect("the older connection is closed");
    assert_within_deadline(
        "the older connection closed (before the takeover's answer)",
        answered.elapsed(),
        Duration::ZERO,
    );
    b.chan.send(b"y\n");
    assert_eq!(b.chan.line(), "2 y\n");
    let started = Instant::now();
    let mut c = resume_ok(addr, "/echo.pphp", &sid, 2);
    assert_within_deadline("second takeover answered", started.elapsed(), TAKEOVER);
    let answered = Instant::now();
    b.chan
        .expect_closed(WAIT)
        .expect("the older connection is closed");
    assert_within_deadline(
        "the older connection closed (before the second takeover's answer)",
        answered.elapsed(),
        Duration::ZERO,
    );
    c.chan.send(b"z\n");
    assert_eq!(c.chan.line(), "3 z\n");
    assert_eq!(worker.conns(&sid), 1);
}

#[test]
fn takeover_of_a_silent_connection_is_answered() {
    let (worker, tether) = setup("replay_window = \"32MiB\"");
    let addr = tether.addr();
    // Idle: the client stopped reading and writing, no FIN.
    let mut a = open(addr, "/echo.pphp");
    let sid = a.sid.clone();
    a.chan.send(b"x\n");
    assert_eq!(a.chan.line(), "1 x\n");
    let started = Instant::now();
    let mut b = resume_ok(addr, "/echo.pphp", &sid, 1);
    assert_within_deadline(
        "takeover of an idle connection answered",
        started.elapsed(),
        TAKEOVER,
    );
    b.chan.send(b"y\n");
    assert_eq!(b.chan.line(), "2 y\n");
    drop(a);

    // Output pending toward a client that stopped reading: the gateway's
    // writes to it are blocked when the takeover comes.
    let size = 100;
    let path = "/flood.pphp?size=100";
    let mut a = open(addr, path);
    let sid = a.sid.clone();
    for i in 1..=5 {
        assert_eq!(a.chan.line(), count_line(i, size));
    }
    wait_stable(
        "worker output",
        Duration::from_millis(500),
        Duration::from_secs(30),
        64 << 20,
        || worker.last_wrote(&sid).map_or(0, |w| w.1),
    );
    let started = Instant::now();
    let mut b = resume_ok(addr, path, &sid, 5);
    assert_within_deadline(
        "takeover of a connection with blocked writes answered",
        started.elapsed(),
        TAKEOVER,
    );
    for i in 6..=20_000 {
        assert_eq!(
            b.chan.line(),
            count_line(i, size),
            "line {i} after the takeover"
        );
    }
    // The older connection ends (what it had in flight is in order).
    let (lines, _) = a.chan.lines_until_end(WAIT);
    for (k, l) in lines.iter().enumerate() {
        assert_eq!(String::from_utf8_lossy(l), count_line(6 + k as u64, size));
    }
    assert_eq!(worker.conns(&sid), 1);
}

#[test]
fn delete_ends_the_session() {
    let (worker, tether) = setup("");
    let addr = tether.addr();
    // An attached, quiet client gets EOF.
    let mut a = open(addr, "/echo.pphp");
    let sid = a.sid.clone();
    a.chan.send(b"a\n");
    assert_eq!(a.chan.line(), "1 a\n");
    let r = delete(addr, HOST, "/echo.pphp", &sid);
    let answered = Instant::now();
    assert_eq!(r.status, 204, "{}", r.head_text());
    assert!(r.body.is_empty());
    assert_eq!(worker.wait_eof(&sid), format!("eof {sid} 1"));
    // SPEC 4 "Promptness": the worker connection is closed before the
    // answer.
    assert_within_deadline(
        "the worker connection closed (before DELETE's answer)",
        answered.elapsed(),
        Duration::ZERO,
    );
    let (lines, end) = a.chan.lines_until_end(WAIT);
    assert!(lines.is_empty(), "{lines:?}");
    assert_eq!(end, End::Eof);
    gone(resume(addr, "/echo.pphp", &sid, 1), "after DELETE");
    let again = delete(addr, HOST, "/echo.pphp", &sid);
    assert_eq!(again.status, 410, "second DELETE:\n{}", again.head_text());
    let unknown = delete(addr, HOST, "/echo.pphp", "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB");
    assert_eq!(unknown.status, 410, "{}", unknown.head_text());

    // An attached client with lines still owed gets them, then EOF.
    let size = 100;
    let path = "/count.pphp?n=1000000&size=100";
    let mut b = open(addr, path);
    let sid = b.sid.clone();
    for i in 1..=3 {
        assert_eq!(b.chan.line(), count_line(i, size));
    }
    let started = Instant::now();
    let r = delete(addr, HOST, "/count.pphp", &sid);
    assert_eq!(r.status, 204, "{}", r.head_text());
    // The answer does not wait for the attached client (which reads
    // nothing meanwhile) to take its remaining lines.
    assert_within_deadline(
        "DELETE answered with lines still owed to the client",
        started.elapsed(),
        Duration::ZERO,
    );
    let answered = Instant::now();
    worker.wait_eof(&sid);
    assert_within_deadline(
        "the worker connection closed (before DELETE's answer)",
        answered.elapsed(),
        Duration::ZERO,
    );
    let (lines, end) = b.chan.lines_until_end(WAIT);
    for (k, l) in lines.iter().enumerate() {
        assert_eq!(String::from_utf8_lossy(l), count_line(4 + k as u64, size));
    }
    assert_eq!(end, End::Eof, "after {} remaining lines", lines.len());
    assert!(b.chan.pending().is_empty(), "only whole lines are sent");
    gone(
        resume(addr, "/count.pphp", &sid, 3 + lines.len() as u64),
        "after DELETE",
    );
}

#[test]
fn resume_within_grace_then_expiry_gives_410() {
    let (worker, tether) = setup("resume_grace = \"2s\"");
    let addr = tether.addr();
    let mut a = open(addr, "/echo.pphp");
    let sid = a.sid.clone();
    a.chan.send(b"a\n");
    assert_eq!(a.chan.line(), "1 a\n");
    a.chan.reset();
    // Time passing within the grace (not synchronisation).
    std::thread::sleep(Duration::from_secs(1));
    let mut b = resume_ok(addr, "/echo.pphp", &sid, 1);
    b.chan.send(b"b\n");
    assert_eq!(b.chan.line(), "2 b\n");
    // The grace starts again at this drop (not at the first one), and
    // nothing arrives meanwhile: the gateway is idle.
    let detached = Instant::now();
    b.chan.reset();
    let eof = worker.wait_event_for("grace expiry", Duration::from_secs(20), |e| {
        e.starts_with(&format!("eof {sid} "))
    });
    let grace = Duration::from_secs(2);
    assert_between(
        "the detached session ends after resume_grace (2 s)",
        detached.elapsed(),
        grace,
        grace + GRACE_LATENESS,
    );
    assert!(eof.starts_with(&format!("eof {sid} 2")), "{eof}");
    gone(resume(addr, "/echo.pphp", &sid, 2), "after expiry");
    assert_eq!(worker.conns(&sid), 1);
}

#[test]
fn worker_end_while_detached_delivers_every_line_then_eof() {
    let (worker, tether) = setup("");
    let addr = tether.addr();
    // Attached: every line, then EOF; the session is over.
    let mut a = open(addr, "/end.pphp?n=5000");
    let (lines, end) = a.chan.lines_until_end(Duration::from_secs(30));
    assert_eq!(lines.len(), 5000, "lines of an attached worker end");
    assert!(lines
        .iter()
        .enumerate()
        .all(|(k, l)| *l == format!("{}\n", k + 1).as_bytes()));
    assert_eq!(end, End::Eof);
    gone(resume(addr, "/end.pphp", &a.sid, 5000), "after the end");

    // Detached: the worker waits a moment before it writes, so that the
    // gateway has seen the reset; if a loaded machine made the gateway
    // flush every line into the dead connection first (then it rightly
    // ended the session with EOF), the attempt does not count.
    let path = "/end.pphp?n=5000&delay_ms=300";
    let (sid, mut r) = (0..5)
        .find_map(|_| {
            let a = open(addr, path);
            let sid = a.sid.clone();
            a.chan.reset();
            worker.wait_event("end", |e| e == format!("end {sid}"));
            resume(addr, path, &sid, 0).ok().map(|r| (sid, r))
        })
        .expect("in five attempts the worker never ended while the client was detached");
    let (lines, end) = r.chan.lines_until_end(Duration::from_secs(30));
    assert_eq!(lines.len(), 5000, "lines after the worker end");
    for (k, l) in lines.iter().enumerate() {
        assert_eq!(String::from_utf8_lossy(l), format!("{}\n", k + 1));
    }
    assert_eq!(end, End::Eof);
    assert!(r.chan.pending().is_empty());
    gone(resume(addr, path, &sid, 5000), "after the end");
    assert_eq!(worker.conns(&sid), 1);
}

#[test]
fn client_line_over_max_line_ends_the_session() {
    let (worker, tether) = setup("max_line = \"1KiB\"");
    let addr = tether.addr();
    let mut o = open(addr, "/count.pphp?n=0");
    let sid = o.sid.clone();
    let mut line = vec![b'a'; 1023];
    line.push(b'\n');
    o.chan.send(&line);
    worker.wait_event("line 1", |e| e == format!("line {sid} 1"));
    let mut long = vec![b'b'; 1024];
    long.push(b'\n');
    let _ = o.chan.try_send(&long);
    o.chan
        .expect_closed(WAIT)
        .expect("the client connection is closed");
    assert_eq!(worker.wait_eof(&sid), format!("eof {sid} 1"));
    gone(resume(addr, "/count.pphp", &sid, 0), "after line_too_long");
}

#[test]
fn worker_line_over_max_line_ends_the_session() {
    let (worker, tether) = setup("max_line = \"1KiB\"");
    let addr = tether.addr();
    let mut ok = open(addr, "/longline.pphp?n=1024");
    assert_eq!(ok.chan.line().len(), 1024);
    let mut o = open(addr, "/longline.pphp?n=1025");
    let sid = o.sid.clone();
    let (lines, _) = o.chan.lines_until_end(WAIT);
    assert!(lines.is_empty(), "a line over max_line reached the client");
    worker.wait_eof(&sid);
    gone(
        resume(addr, "/longline.pphp", &sid, 0),
        "after line_too_long",
    );
}

#[test]
fn max_sessions_gives_503_with_retry_after() {
    let (worker, tether) = setup("max_sessions = 2");
    let addr = tether.addr();
    let a = open(addr, "/echo.pphp");
    let _b = open(addr, "/echo.pphp");
    let Err(r) = open_with(addr, HOST, "/echo.pphp", &[]) else {
        panic!("a third session opened with max_sessions = 2");
    };
    assert_eq!(r.status, 503, "{}", r.head_text());
    assert_eq!(r.header("retry-after"), Some("1"), "{}", r.head_text());
    assert_eq!(worker.all_conns(), 2, "{:#?}", worker.events());
    // Ending one makes room.
    assert_eq!(delete(addr, HOST, "/echo.pphp", &a.sid).status, 204);
    let deadline = Instant::now() + WAIT;
    loop {
        match open_with(addr, HOST, "/echo.pphp", &[]) {
            Ok(_) => break,
            Err(r) => {
                assert_eq!(r.status, 503);
                assert!(Instant::now() < deadline, "no room after DELETE");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[test]
fn max_sessions_per_ip_gives_429_with_retry_after() {
    let (worker, tether) = setup("max_sessions_per_ip = 1");
    let addr = tether.addr();
    let _a = open(addr, "/echo.pphp");
    let Err(r) = open_with(addr, HOST, "/echo.pphp", &[]) else {
        panic!("a second session from one IP opened with max_sessions_per_ip = 1");
    };
    assert_eq!(r.status, 429, "{}", r.head_text());
    assert_eq!(r.header("retry-after"), Some("1"), "{}", r.head_text());
    assert_eq!(worker.all_conns(), 1, "{:#?}", worker.events());
}

#[test]
fn sessions_stay_pinned_to_their_worker_across_resumes() {
    let alpha = LineWorker::start(WORKER, "alpha");
    let beta = LineWorker::start(WORKER, "beta");
    let tether = start_session_tether(&alpha.url(), &[alpha.url(), beta.url()], "");
    let addr = tether.addr();
    let path = "/echo.pphp?named=1";
    let mut sessions: Vec<(String, String, Opened)> = (0..6)
        .map(|_| {
            let o = open(addr, path);
            let text = String::from_utf8_lossy(&o.initial).into_owned();
            let name = text.split(' ').nth(1).unwrap_or("").to_string();
            assert_eq!(text, format!("hello {name} {}\n", o.sid));
            (o.sid.clone(), name, o)
        })
        .collect();
    let names: Vec<&str> = sessions.iter().map(|(_, n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"alpha") && names.contains(&"beta"),
        "least active sessions should spread 6 sessions on 2 workers: {names:?}"
    );
    for round in 1..=3u64 {
        for (sid, name, o) in sessions.iter_mut() {
            o.chan.send(format!("r{round}\n").as_bytes());
            assert_eq!(o.chan.line(), format!("{name} {round} r{round}\n"));
            let old = std::mem::replace(o, resume_ok(addr, path, sid, round));
            drop(old);
        }
    }
    for (sid, name, _) in &sessions {
        let (mine, other) = if name == "alpha" {
            (&alpha, &beta)
        } else {
            (&beta, &alpha)
        };
        assert_eq!(mine.conns(sid), 1, "{sid} on {name}");
        assert_eq!(other.conns(sid), 0, "{sid} reached the other worker");
    }
}

#[test]
fn after_delete_a_resume_is_gone_even_while_the_old_connection_drains() {
    // SPEC 2 "Explicit end": the session ends at DELETE; its attached
    // connection still gets what is left, but it is no longer live: a
    // resume gets the 410 of SPEC 4, not a takeover. The attached client
    // here does not read, so the gateway is still draining to it.
    let (worker, tether) = setup("");
    let addr = tether.addr();
    let admin = tether.admin_addr().expect("admin");
    let o = open(addr, "/flood.pphp?size=512");
    let sid = o.sid.clone();
    tether_tests::wait_for("output waiting for the client", WAIT, || {
        let m = tether_tests::raw_http::get(admin, "admin", "/metrics").body_text();
        m.lines()
            .find(|l| l.starts_with("tether_backlog_bytes{"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .filter(|b| *b > 0.0)
            .map(|_| ())
    });
    let started = Instant::now();
    assert_eq!(delete(addr, HOST, "/flood.pphp", &sid).status, 204);
    // SPEC 4 "Promptness": the answer does not wait for the client.
    assert_within_deadline(
        "DELETE answered while the client reads nothing",
        started.elapsed(),
        Duration::ZERO,
    );
    let answered = Instant::now();
    gone(resume(addr, "/flood.pphp", &sid, 0), "after DELETE");
    worker.wait_eof(&sid);
    assert_within_deadline(
        "the worker connection closed (before DELETE's answer)",
        answered.elapsed(),
        Duration::ZERO,
    );
    drop(o);
}
