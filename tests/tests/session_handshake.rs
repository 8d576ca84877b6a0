//! Opening a persistent session (SPEC 2), with raw bytes against the real
//! `tether` binary and real `line_worker` processes: the exact answer head,
//! the capability check (406), plain answers, HEAD, worker protocol errors
//! (502), header hygiene, keep-alive before a candidate, non-candidates,
//! HTTP/2 (505) and worker health (SPEC 7).

use std::process::Command;
use std::time::{Duration, Instant};

use tether_tests::raw_http::request_bytes;
use tether_tests::session::{
    head_or_plain, open, open_with, resume, start_session_tether, valid_sid, LineWorker, ACCEPT,
    HOST,
};
use tether_tests::{free_port, RawConn, Response, Tether};

const WORKER: &str = env!("CARGO_BIN_EXE_line_worker");

/// A worker, an origin (also a line_worker, named `origin`) and tether.
fn setup(extra: &str) -> (LineWorker, LineWorker, Tether) {
    let worker = LineWorker::start(WORKER, "worker");
    let origin = LineWorker::start(WORKER, "origin");
    let tether = start_session_tether(&origin.url(), &[worker.url()], extra);
    (worker, origin, tether)
}

/// One request on a new connection; the whole answer (a persistent one is
/// a panic).
fn plain(tether: &Tether, method: &str, target: &str, headers: &[(&str, &str)]) -> Response {
    let mut conn = RawConn::connect(tether.addr());
    conn.send(&request_bytes(method, target, HOST, headers, b""));
    match head_or_plain(conn, method) {
        Ok(o) => panic!("{method} {target} opened a session: {}", o.head.head_text()),
        Err(r) => *r,
    }
}

fn assert_no_session_headers(r: &Response) {
    for (name, _) in &r.headers {
        let n = name.to_ascii_lowercase();
        assert!(
            n != "connection-type" && n != "sessionid" && !n.starts_with("session-"),
            "plain answer carries {name}:\n{}",
            r.head_text()
        );
    }
}

#[test]
fn handshake_answer_head_is_exact() {
    let (worker, _origin, tether) = setup("");
    let mut o = open(tether.addr(), "/echo.pphp");
    let h = &o.head;
    let text = h.head_text();
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert_eq!(h.status, 200);
    let only = |name: &str| {
        let all = h.header_all(name);
        assert_eq!(all.len(), 1, "exactly one {name}:\n{text}");
        all[0].to_string()
    };
    assert!(
        only("connection").eq_ignore_ascii_case("keep-alive"),
        "{text}"
    );
    assert!(!h.has_token("connection", "close"), "{text}");
    assert!(
        only("connection-type").eq_ignore_ascii_case("persistent"),
        "{text}"
    );
    let sid = only("sessionid");
    assert!(
        valid_sid(&sid),
        "SessionID {sid:?} is not 22-64 of [A-Za-z0-9_-]"
    );
    assert_eq!(only("session-received"), "0", "{text}");
    assert!(h.header("transfer-encoding").is_none(), "{text}");
    let body = format!("hello worker {sid}\n");
    assert_eq!(only("content-length"), body.len().to_string(), "{text}");
    assert_eq!(String::from_utf8_lossy(&o.initial), body, "initial body");
    // The worker's other end-to-end headers are relayed.
    assert_eq!(only("x-worker"), "worker", "{text}");
    assert_eq!(
        h.header("content-type"),
        Some("text/plain; charset=utf-8"),
        "{text}"
    );
    // The channel works, and the worker saw the request once, with this id.
    o.chan.send(b"hi there\n");
    assert_eq!(o.chan.line(), "1 hi there\n");
    assert_eq!(worker.conns(&sid), 1);
    assert!(worker.events().contains(&format!("open {sid}")));

    // No initial body (the worker sent no Content-Length): Content-Length: 0.
    let mut o = open(tether.addr(), "/echo.pphp?initial=0");
    assert_eq!(
        o.head.header_all("content-length"),
        ["0"],
        "{}",
        o.head.head_text()
    );
    assert!(o.initial.is_empty());
    o.chan.send(b"x\n");
    assert_eq!(o.chan.line(), "1 x\n");
}

#[test]
fn bytes_sent_with_the_request_before_the_answer_are_discarded() {
    let (worker, _origin, tether) = setup("");
    let mut conn = RawConn::connect(tether.addr());
    let mut bytes = request_bytes("GET", "/echo.pphp", HOST, &[("Accept", ACCEPT)], b"");
    // Sent in the same write as the head: read by the gateway before it
    // writes the answer head, so not channel data (SPEC 2).
    bytes.extend_from_slice(b"early\n");
    conn.send(&bytes);
    let mut o = head_or_plain(conn, "GET").unwrap_or_else(|r| panic!("{}", r.head_text()));
    o.chan.send(b"late\n");
    assert_eq!(
        o.chan.line(),
        "1 late\n",
        "an early line reached the worker"
    );
    assert_eq!(worker.conns(&o.sid), 1);
}

const REFUSED: &[Option<&str>] = &[
    None,
    Some("*/*"),
    Some("application/*"),
    Some("text/html, */*;q=0.8"),
    Some("application/x-persistent;q=0"),
    Some("application/x-persistent; q=0.000"),
    Some("application/x-persistent;Q=0"),
    Some("application/x-persistent;q=0.0"),
    Some("text/html, application/x-persistent;q=0"),
    Some("application/x-persistent;q=1.5"),
    Some("application/x-persistent;q=abc"),
    Some("application/x-persistent;q=0.0001"),
    Some("application/x-persistent;q="),
    Some("application/x-persistent-not"),
    Some("application/x-persisten"),
];

#[test]
fn without_capability_406_and_nothing_reaches_the_worker() {
    let (worker, origin, tether) = setup("");
    for accept in REFUSED {
        let mut headers = Vec::new();
        if let Some(a) = accept {
            headers.push(("Accept", *a));
        }
        let r = plain(&tether, "GET", "/echo.pphp", &headers);
        assert_eq!(r.status, 406, "Accept {accept:?}:\n{}", r.head_text());
        assert_eq!(
            r.header("content-type"),
            Some("text/plain; charset=utf-8"),
            "Accept {accept:?}:\n{}",
            r.head_text()
        );
        assert!(
            r.body_text().contains(ACCEPT),
            "Accept {accept:?}: the body must name {ACCEPT}: {:?}",
            r.body_text()
        );
        assert_no_session_headers(&r);
    }
    assert_eq!(
        worker.events(),
        Vec::<String>::new(),
        "the worker was reached"
    );
    assert_eq!(
        origin.events(),
        Vec::<String>::new(),
        "the origin was reached"
    );
}

#[test]
fn accepted_capability_spellings_open_sessions() {
    let (worker, _origin, tether) = setup("");
    let accepted = [
        "application/x-persistent",
        "APPLICATION/X-Persistent",
        "application/x-persistent; charset=utf-8",
        "application/x-persistent;version=2;q=1",
        "application/x-persistent;q=0.5",
        "application/x-persistent; Q=0.001",
        "application/x-persistent;q=1.000",
        "text/html, application/x-persistent;q=0.9, */*;q=0.1",
        "text/html,application/x-persistent",
    ];
    for accept in accepted {
        let mut conn = RawConn::connect(tether.addr());
        conn.send(&request_bytes(
            "GET",
            "/echo.pphp",
            HOST,
            &[("Accept", accept)],
            b"",
        ));
        let o = head_or_plain(conn, "GET").unwrap_or_else(|r| {
            panic!(
                "Accept {accept:?} refused:\n{}{}",
                r.head_text(),
                r.body_text()
            )
        });
        assert!(valid_sid(&o.sid), "Accept {accept:?}");
        assert_eq!(worker.conns(&o.sid), 1);
    }
}

#[test]
fn plain_worker_answer_is_relayed_without_session_headers() {
    let (worker, _origin, tether) = setup("");
    let Err(r) = open_with(tether.addr(), HOST, "/plain.pphp", &[]) else {
        panic!("/plain.pphp opened a session");
    };
    assert_eq!(r.status, 200, "{}", r.head_text());
    assert_no_session_headers(&r);
    assert_eq!(r.header("x-worker"), Some("worker"), "{}", r.head_text());
    let body = r.body_text();
    assert!(
        body.starts_with("plain worker\nGET /plain.pphp HTTP/1.1\n"),
        "{body}"
    );
    // The worker got a minted SessionID and the forwarding headers (SPEC 2
    // step 5), and Accept as an end-to-end header.
    let sid = body
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(": ")?;
            name.eq_ignore_ascii_case("sessionid").then_some(value)
        })
        .unwrap_or_else(|| panic!("no SessionID reached the worker:\n{body}"))
        .to_string();
    assert!(valid_sid(&sid), "{sid:?}");
    for want in [
        format!("Host: {HOST}"),
        format!("Accept: {ACCEPT}"),
        "X-Forwarded-Proto: http".into(),
        format!("X-Forwarded-Host: {HOST}"),
        "Via: 1.1 tether".into(),
    ] {
        assert!(
            body.lines().any(|l| l.eq_ignore_ascii_case(&want)),
            "worker did not get {want:?}:\n{body}"
        );
    }
    assert!(
        body.lines()
            .any(|l| l.to_ascii_lowercase().starts_with("x-forwarded-for:")
                && l.contains("127.0.0.1")),
        "{body}"
    );
    // No session exists under that id.
    let gone = resume(tether.addr(), "/echo.pphp", &sid, 0)
        .err()
        .expect("resumed");
    assert_eq!(gone.status, 410, "{}", gone.head_text());

    // Other statuses are relayed as they are.
    for code in [201u16, 404, 500, 503] {
        let Err(r) = open_with(
            tether.addr(),
            HOST,
            &format!("/status.pphp?code={code}"),
            &[],
        ) else {
            panic!("status {code} opened a session");
        };
        assert_eq!(r.status, code);
        assert_eq!(r.body_text(), format!("status {code}\n"));
        assert_no_session_headers(&r);
    }
    assert!(!worker.events().iter().any(|e| e.starts_with("open ")));
}

#[test]
fn head_never_opens_a_session() {
    let (worker, _origin, tether) = setup("");
    let mut conn = RawConn::connect(tether.addr());
    conn.send(&request_bytes(
        "HEAD",
        "/echo.pphp",
        HOST,
        &[("Accept", ACCEPT)],
        b"",
    ));
    let r = conn.read_response_to("HEAD").expect("HEAD answer");
    assert_eq!(r.status, 200, "{}", r.head_text());
    assert_no_session_headers(&r);
    assert!(r.body.is_empty());
    // The connection is still HTTP: a GET on it opens a session.
    conn.send(&request_bytes(
        "GET",
        "/echo.pphp",
        HOST,
        &[("Accept", ACCEPT)],
        b"",
    ));
    let mut o =
        head_or_plain(conn, "GET").unwrap_or_else(|r| panic!("GET after HEAD:\n{}", r.head_text()));
    o.chan.send(b"x\n");
    assert_eq!(o.chan.line(), "1 x\n");
    worker.wait_event("the HEAD answered", |e| e.contains(" HEAD /echo.pphp 200"));
    let ev = worker.events();
    assert_eq!(ev.iter().filter(|e| e.starts_with("open ")).count(), 1);
}

#[test]
fn chunked_persistent_answer_is_502() {
    let (_worker, _origin, tether) = setup("");
    let Err(r) = open_with(tether.addr(), HOST, "/chunked.pphp", &[]) else {
        panic!("a chunked persistent answer opened a session");
    };
    assert_eq!(r.status, 502, "{}", r.head_text());
    assert_no_session_headers(&r);
}

#[test]
fn initial_body_over_max_initial_body_is_502() {
    let (_worker, _origin, tether) = setup("max_initial_body = \"1KiB\"");
    let Err(r) = open_with(tether.addr(), HOST, "/bigbody.pphp?n=1025", &[]) else {
        panic!("an initial body over max_initial_body opened a session");
    };
    assert_eq!(r.status, 502, "{}", r.head_text());
    assert_no_session_headers(&r);
    // Exactly at the limit is fine.
    let mut o = open(tether.addr(), "/bigbody.pphp?n=1024");
    assert_eq!(o.head.header("content-length"), Some("1024"));
    assert_eq!(o.initial.len(), 1024);
    assert_eq!(
        &o.initial[..64],
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.\n"
    );
    o.chan.send(b"y\n");
    assert_eq!(o.chan.line(), "1 y\n");
}

#[test]
fn client_session_headers_never_reach_worker_or_origin() {
    let (worker, origin, tether) = setup("");
    // A new session: the client's own Session-* and Connection-Type are
    // dropped, a SessionID is minted.
    let o = open_with(
        tether.addr(),
        HOST,
        "/echo.pphp?headers=1",
        &[
            ("Session-Received", "5"),
            ("Connection-Type", "Persistent"),
            ("Session-Event", "open"),
            ("X-Custom", "kept"),
        ],
    )
    .unwrap_or_else(|r| panic!("{}", r.head_text()));
    assert!(valid_sid(&o.sid));
    let headers: Vec<String> = worker
        .events_of(&o.sid)
        .into_iter()
        .filter_map(|e| e.splitn(3, ' ').nth(2).map(str::to_string))
        .filter(|e| e.contains(": "))
        .collect();
    let named = |n: &str| -> Vec<&String> {
        headers
            .iter()
            .filter(|h| h.to_ascii_lowercase().starts_with(&format!("{n}:")))
            .collect()
    };
    let sids = named("sessionid");
    assert_eq!(sids.len(), 1, "{headers:#?}");
    assert!(sids[0].ends_with(&format!(": {}", o.sid)), "{headers:#?}");
    for n in ["session-received", "connection-type", "session-event"] {
        assert!(named(n).is_empty(), "{n} reached the worker: {headers:#?}");
    }
    assert_eq!(named("x-custom").len(), 1, "{headers:#?}");
    assert_eq!(
        String::from_utf8_lossy(&o.initial),
        format!("hello worker {}\n", o.sid)
    );

    // A plain request to the origin: all four are removed.
    let r = plain(
        &tether,
        "GET",
        "/index.html?headers=1",
        &[
            ("SessionID", "abcdefghijklmnopqrstuvwxyz"),
            ("Session-Received", "5"),
            ("Connection-Type", "Persistent"),
            ("Session-Event", "open"),
        ],
    );
    assert_eq!(r.status, 404, "{}", r.head_text());
    assert!(r.body_text().contains("origin"), "{}", r.body_text());
    // `req` is logged after the answer is written: wait for it.
    origin.wait_event("req - GET /index.html", |e| {
        e.starts_with("req - GET /index.html")
    });
    let ev = origin.events();
    for e in &ev {
        let l = e.to_ascii_lowercase();
        assert!(
            !(l.starts_with("header ")
                && [
                    "sessionid:",
                    "session-received:",
                    "connection-type:",
                    "session-event:"
                ]
                .iter()
                .any(|n| l.split(' ').nth(2) == Some(n))),
            "reached the origin: {e}"
        );
    }
}

#[test]
fn plain_keep_alive_requests_before_a_candidate_on_one_connection() {
    let (worker, origin, tether) = setup("");
    let mut conn = RawConn::connect(tether.addr());
    let r = conn.request("GET", "/index.html", HOST, &[], b"");
    assert_eq!(r.status, 404);
    assert!(r.body_text().contains("origin"));
    let r = conn.request(
        "GET",
        "/status.pphp?code=201",
        HOST,
        &[("Accept", ACCEPT)],
        b"",
    );
    assert_eq!(r.status, 201);
    let r = conn.request("GET", "/plain.pphp", HOST, &[("Accept", ACCEPT)], b"");
    assert_eq!(r.status, 200);
    assert_no_session_headers(&r);
    conn.send(&request_bytes(
        "GET",
        "/echo.pphp",
        HOST,
        &[("Accept", ACCEPT)],
        b"",
    ));
    let mut o = head_or_plain(conn, "GET")
        .unwrap_or_else(|r| panic!("candidate after keep-alive:\n{}", r.head_text()));
    assert_eq!(o.head.header("session-received"), Some("0"));
    assert_eq!(
        String::from_utf8_lossy(&o.initial),
        format!("hello worker {}\n", o.sid)
    );
    o.chan.send(b"one\ntwo\n");
    assert_eq!(o.chan.line(), "1 one\n");
    assert_eq!(o.chan.line(), "2 two\n");
    assert_eq!(worker.conns(&o.sid), 1);
    assert_eq!(origin.all_conns(), 1);
}

#[test]
fn non_candidates_go_to_the_origin() {
    let (worker, origin, tether) = setup("");
    for target in [
        "/index.html",
        "/echo.pphpx",
        "/ECHO.PPHP",
        "/echo.php?x=.pphp",
    ] {
        let r = plain(&tether, "GET", target, &[("Accept", ACCEPT)]);
        assert_eq!(r.status, 404, "{target}: {}", r.head_text());
        assert!(
            r.body_text().starts_with("no such path on origin"),
            "{target}: {}",
            r.body_text()
        );
        assert_no_session_headers(&r);
    }
    // A deep path matches `*.pphp` and goes to the worker.
    let r = plain(&tether, "GET", "/app/x/unknown.pphp", &[("Accept", ACCEPT)]);
    assert_eq!(r.status, 404);
    assert!(
        r.body_text().starts_with("no such path on worker"),
        "{}",
        r.body_text()
    );
    assert_eq!(origin.all_conns(), 4);
    assert_eq!(worker.all_conns(), 1);
}

#[test]
fn http2_prior_knowledge_candidate_is_505() {
    let (worker, _origin, tether) = setup("");
    let curl = |target: &str| -> (String, String) {
        let out = Command::new("curl")
            .args(["-sS", "--http2-prior-knowledge", "--max-time", "10"])
            .args(["-H", &format!("Host: {HOST}")])
            .args(["-H", &format!("Accept: {ACCEPT}")])
            .args(["-w", "\n%{http_version} %{http_code}"])
            .arg(format!("http://{}{target}", tether.addr()))
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        (status.to_string(), body.to_string())
    };
    let (status, body) = curl("/echo.pphp");
    assert_eq!(status, "2 505", "body {body:?}");
    assert!(
        body.contains("HTTP/1.1"),
        "the 505 body must say HTTP/1.1 is required: {body:?}"
    );
    // Plain requests over h2 still work (sanity: curl spoke h2).
    let (status, _) = curl("/index.html");
    assert_eq!(status, "2 404");
    assert_eq!(
        worker.events(),
        Vec::<String>::new(),
        "the worker was reached"
    );
}

#[test]
fn worker_down_gives_502_then_a_worker_up_again_is_used() {
    let port = free_port();
    let origin = LineWorker::start(WORKER, "origin");
    let tether = start_session_tether(&origin.url(), &[format!("http://127.0.0.1:{port}")], "");
    let Err(r) = open_with(tether.addr(), HOST, "/echo.pphp", &[]) else {
        panic!("a session opened with no worker listening");
    };
    assert_eq!(r.status, 502, "{}", r.head_text());
    assert_no_session_headers(&r);

    let worker = LineWorker::start_on(WORKER, "back", port);
    let listening = Instant::now();
    // Health probes run every 5 s while a worker is down: poll, bounded.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut o = loop {
        match open_with(tether.addr(), HOST, "/echo.pphp", &[]) {
            Ok(o) => break o,
            Err(r) => {
                assert_eq!(r.status, 502, "{}", r.head_text());
                assert!(
                    Instant::now() < deadline,
                    "the worker is up again but sessions still get 502"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    // SPEC 7: the next probe, at most 5 s after the worker listens again,
    // finds it up.
    tether_tests::assert_within_deadline(
        "a worker back up is used again (probes every 5 s while down)",
        listening.elapsed(),
        Duration::from_secs(5),
    );
    assert_eq!(
        String::from_utf8_lossy(&o.initial),
        format!("hello back {}\n", o.sid)
    );
    o.chan.send(b"z\n");
    assert_eq!(o.chan.line(), "1 z\n");
    assert_eq!(worker.conns(&o.sid), 1);
}
