//! The push API on the admin listener (SPEC 7): bearer token, lines
//! appended as channel lines, limits, and `DELETE` ending the worker side.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tether_tests::raw_http::Response;
use tether_tests::session::{open, session_vhost, End, LineWorker, WAIT};
use tether_tests::{assert_within_deadline, RawConn, Tether};

const TOKEN: &str = "s3cret-token";

fn worker() -> LineWorker {
    LineWorker::start(env!("CARGO_BIN_EXE_line_worker"), "w")
}

fn start(worker: &LineWorker, token: Option<&str>, extra: &str) -> Tether {
    let server = token
        .map(|t| format!("admin_token = \"{t}\""))
        .unwrap_or_default();
    Tether::start(&Tether::config(
        &server,
        &[session_vhost(
            "sess.test",
            &worker.url(),
            &[worker.url()],
            extra,
        )],
    ))
}

fn admin(t: &Tether) -> SocketAddr {
    t.admin_addr().expect("admin listener")
}

fn call(t: &Tether, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = Vec::new();
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    RawConn::connect(admin(t)).request(method, path, "admin", &headers, body)
}

#[test]
fn without_a_token_configured_every_v1_path_is_404() {
    let w = worker();
    let t = start(&w, None, "");
    let s = open(t.addr(), "/count.pphp?n=0");
    let path = format!("/v1/sessions/{}/lines", s.sid);
    assert_eq!(call(&t, "POST", &path, Some(TOKEN), b"x\n").status, 404);
    assert_eq!(
        call(
            &t,
            "DELETE",
            &format!("/v1/sessions/{}", s.sid),
            Some(TOKEN),
            b""
        )
        .status,
        404
    );
}

#[test]
fn the_token_is_required() {
    let w = worker();
    let t = start(&w, Some(TOKEN), "");
    let s = open(t.addr(), "/count.pphp?n=0");
    let path = format!("/v1/sessions/{}/lines", s.sid);
    assert_eq!(call(&t, "POST", &path, None, b"x\n").status, 401);
    assert_eq!(call(&t, "POST", &path, Some("wrong"), b"x\n").status, 401);
    assert_eq!(
        call(&t, "POST", &path, Some("s3cret-toke"), b"x\n").status,
        401
    );
    assert_eq!(
        call(
            &t,
            "POST",
            "/v1/sessions/unknownunknownunknown123/lines",
            Some(TOKEN),
            b"x\n"
        )
        .status,
        404
    );
}

#[test]
fn pushed_lines_are_channel_lines() {
    let w = worker();
    let t = start(&w, Some(TOKEN), "max_line = \"16\"");
    let mut s = open(t.addr(), "/count.pphp?n=0");
    let path = format!("/v1/sessions/{}/lines", s.sid);
    let r = call(&t, "POST", &path, Some(TOKEN), b"one\ntwo\nthree");
    assert_eq!(r.status, 204, "{}", r.body_text());
    assert_eq!(s.chan.line(), "one\n");
    assert_eq!(s.chan.line(), "two\n");
    assert_eq!(s.chan.line(), "three\n", "a final line without LF gets one");
    // A line over max_line: 400 and nothing appended.
    let r = call(
        &t,
        "POST",
        &path,
        Some(TOKEN),
        b"ok\nthis line is far too long\n",
    );
    assert_eq!(r.status, 400);
    let r = call(&t, "POST", &path, Some(TOKEN), b"four\n");
    assert_eq!(r.status, 204);
    assert_eq!(
        s.chan.line(),
        "four\n",
        "nothing of the refused push arrived"
    );
}

#[test]
fn a_push_over_the_backlog_is_refused_whole() {
    let w = worker();
    let t = start(&w, Some(TOKEN), "detached_backlog = \"64\"");
    let s = open(t.addr(), "/count.pphp?n=0");
    let sid = s.sid.clone();
    drop(s); // detached: the pushed lines wait in the backlog
    tether_tests::wait_for("the session is detached", WAIT, || {
        let m = RawConn::connect(admin(&t))
            .request("GET", "/metrics", "admin", &[], b"")
            .body_text();
        m.contains("tether_sessions{vhost=\"sess.test\",state=\"detached\"} 1")
            .then_some(())
    });
    let path = format!("/v1/sessions/{sid}/lines");
    assert_eq!(
        call(&t, "POST", &path, Some(TOKEN), &[b'a'; 40]).status,
        204
    );
    let r = call(&t, "POST", &path, Some(TOKEN), &[b'b'; 40]);
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
}

#[test]
fn delete_ends_the_worker_side_and_the_client_gets_what_is_left() {
    let w = worker();
    let t = start(&w, Some(TOKEN), "");
    let mut s = open(t.addr(), "/count.pphp?n=0");
    let lines = format!("/v1/sessions/{}/lines", s.sid);
    assert_eq!(
        call(&t, "POST", &lines, Some(TOKEN), b"last words\n").status,
        204
    );
    let r = call(
        &t,
        "DELETE",
        &format!("/v1/sessions/{}", s.sid),
        Some(TOKEN),
        b"",
    );
    let answered = Instant::now();
    assert_eq!(r.status, 204);
    w.wait_eof(&s.sid);
    // SPEC 4 "Promptness": the worker connection is closed before the
    // answer.
    assert_within_deadline(
        "the worker connection closed (before the push API DELETE's answer)",
        answered.elapsed(),
        Duration::ZERO,
    );
    let (got, end) = s.chan.lines_until_end(WAIT);
    assert_eq!(got, vec![b"last words\n".to_vec()]);
    assert_eq!(end, End::Eof);
    assert_eq!(call(&t, "POST", &lines, Some(TOKEN), b"x\n").status, 404);
    assert_eq!(
        call(
            &t,
            "DELETE",
            &format!("/v1/sessions/{}", s.sid),
            Some(TOKEN),
            b""
        )
        .status,
        404
    );
    let metrics = RawConn::connect(admin(&t))
        .request("GET", "/metrics", "admin", &[], b"")
        .body_text();
    assert!(
        metrics.contains("tether_sessions_ended_total{vhost=\"sess.test\",reason=\"admin\"} 1"),
        "{metrics}"
    );
}
