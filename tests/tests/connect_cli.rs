//! `tether connect` as a terminal client (docs/client.md), run as a process
//! against the real tether and `line_worker`: `-H` fields and `--accept`
//! reach the worker, the SessionID is on stderr at open, `--resume ID
//! --received N` takes a session over by hand with the replay after N, and
//! an answer that opens no session is printed with its status and body.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use tether_tests::session::{open_with, session_vhost, start_tether, valid_sid, LineWorker};
use tether_tests::tether::tether_bin;
use tether_tests::Tether;

const WORKER: &str = env!("CARGO_BIN_EXE_line_worker");

/// A worker behind tether on a vhost for any Host, so that the URL can
/// name tether's address as a terminal user would.
fn setup() -> (LineWorker, Tether) {
    let worker = LineWorker::start(WORKER, "worker");
    let tether = start_tether(&[session_vhost("*", &worker.url(), &[worker.url()], "")]);
    (worker, tether)
}

/// `tether connect ARGS` with `stdin` written then closed.
fn connect(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(tether_bin())
        .arg("connect")
        .args(["--linger", "300ms"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tether connect");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The SessionID of `# session <id> ...` on stderr.
fn stderr_sid(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("# session ")?.split(' ').next())
        .unwrap_or_else(|| panic!("no SessionID on stderr:\n{stderr}"))
        .to_owned()
}

#[test]
fn header_options_and_accept_reach_the_worker_and_the_sessionid_is_on_stderr() {
    let (worker, tether) = setup();
    let url = format!("http://{}/echo.pphp?headers=1", tether.addr());
    let out = connect(
        &[
            "-H",
            "Cookie: user=42; theme=dark",
            "--header",
            "Authorization: Bearer t0k3n",
            "--accept",
            "text/plain;q=0.5, application/x-persistent",
            &url,
        ],
        "hi\n",
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let sid = stderr_sid(&stderr);
    assert!(valid_sid(&sid), "{stderr}");
    assert!(
        stderr.starts_with(&format!("# session {sid} opened\n")),
        "{stderr}"
    );
    assert_eq!(stdout, format!("hello worker {sid}\n1 hi\n"), "{stderr}");
    let headers: Vec<String> = worker
        .events_of(&sid)
        .into_iter()
        .filter_map(|e| {
            e.strip_prefix(&format!("header {sid} "))
                .map(str::to_ascii_lowercase)
        })
        .collect();
    for want in [
        "cookie: user=42; theme=dark",
        "authorization: bearer t0k3n",
        "accept: text/plain;q=0.5, application/x-persistent",
    ] {
        assert!(
            headers.iter().any(|h| h == want),
            "{want} not in {headers:?}"
        );
    }
}

#[test]
fn resume_takes_a_session_over_by_hand_with_the_replay_after_received() {
    let (worker, tether) = setup();
    let addr = tether.addr();
    let mut o = open_with(addr, &addr.to_string(), "/echo.pphp", &[])
        .unwrap_or_else(|r| panic!("not opened: {}", r.head_text()));
    let sid = o.sid.clone();
    o.chan.send(b"a\nb\n");
    assert_eq!(o.chan.line(), "1 a\n");
    assert_eq!(o.chan.line(), "2 b\n");
    worker.wait_event("line 2", |e| e == format!("line {sid} 2"));

    // As if this terminal had only seen "1 a": "2 b" comes again, then
    // the answer to its own line, numbered after the other client's.
    let url = format!("http://{addr}/echo.pphp");
    let out = connect(&["--resume", &sid, "--received", "1", &url], "c\n");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.starts_with(&format!("# session {sid} taken over (1 lines received)\n")),
        "{stderr}"
    );
    assert_eq!(
        stdout, "2 b\n3 c\n",
        "no initial body, the replay, then c: {stderr}"
    );
    // The first client was taken over, and the DELETE at the end of stdin
    // ended the session for the worker after three lines.
    o.chan
        .expect_closed(tether_tests::session::WAIT)
        .expect("the older connection is closed");
    assert_eq!(worker.wait_eof(&sid), format!("eof {sid} 3"));

    // The session is gone: a second take-over fails and says so.
    let out = connect(&["--resume", &sid, "--received", "3", &url], "");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("session lost"), "{stderr}");
}

#[test]
fn an_answer_that_opens_no_session_is_printed_with_its_status_and_body() {
    let (_worker, tether) = setup();
    let url = format!("http://{}/status.pphp?code=404", tether.addr());
    let out = connect(&[&url], "");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(stdout, "status 404\n", "{stderr}");
    assert!(
        stderr.starts_with("# not a persistent session: status 404\n"),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.eq_ignore_ascii_case("# content-length: 11")),
        "{stderr}"
    );

    // A plain 200 from the worker (no Connection-Type: Persistent).
    let url = format!("http://{}/plain.pphp", tether.addr());
    let out = connect(&[&url], "");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stdout.starts_with("plain worker\nGET /plain.pphp HTTP/1.1\n"),
        "{stdout}"
    );
    assert!(
        stderr.starts_with("# not a persistent session: status 200\n"),
        "{stderr}"
    );
}

#[test]
fn websocket_transport_sends_headers_echoes_and_ends_the_session() {
    let (worker, tether) = setup();
    let url = format!("http://{}/echo.pphp?headers=1", tether.addr());
    let out = connect(
        &["--transport", "websocket", "-H", "Cookie: user=42", &url],
        "one\ntwo\n",
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let sid = stderr_sid(&stderr);
    assert!(
        stderr.starts_with(&format!("# session {sid} opened\n")),
        "{stderr}"
    );
    assert!(stderr.contains("# session ended\n"), "{stderr}");
    assert_eq!(
        stdout,
        format!("hello worker {sid}\n1 one\n2 two\n"),
        "{stderr}"
    );
    let events = worker.events_of(&sid);
    assert!(
        events
            .iter()
            .any(|e| e.eq_ignore_ascii_case(&format!("header {sid} Cookie: user=42"))),
        "{events:?}"
    );
    // The close ended the session for the worker after the two lines.
    assert_eq!(worker.wait_eof(&sid), format!("eof {sid} 2"));
}

#[test]
fn websocket_transport_prints_an_answer_that_opens_no_session() {
    let (_worker, tether) = setup();
    let url = format!("http://{}/status.pphp?code=404", tether.addr());
    let out = connect(&["--transport", "websocket", &url], "");
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.starts_with("# not a persistent session: status 404\n"),
        "{stderr}"
    );
}

#[test]
fn websocket_sessions_resume_after_drops_with_every_line_once() {
    use tether_client::{ClientConfig, SessionEvent};
    let (worker, tether) = setup();
    let url = format!("http://{}/echo.pphp", tether.addr());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut handle = tether_client::ws::open(ClientConfig::new(&url), None)
            .await
            .expect("a WebSocket session");
        let sid = handle.id().to_string();
        assert_eq!(
            handle.initial_body(),
            format!("hello worker {sid}\n").as_bytes()
        );
        let mut seen = Vec::new();
        let mut resumes = 0;
        for round in 0..4u32 {
            for i in 0..25u32 {
                let n = round * 25 + i + 1;
                handle
                    .tx
                    .send_line(format!("line {n}").as_bytes())
                    .await
                    .unwrap();
            }
            // Drop the connection with lines in flight both ways.
            handle.tx.drop_connection_for_test().await;
            while seen.len() < ((round + 1) * 25) as usize {
                match tokio::time::timeout(tether_tests::session::WAIT, handle.rx.recv()).await {
                    Ok(Some(SessionEvent::Line(l))) => {
                        seen.push(String::from_utf8_lossy(&l).into_owned())
                    }
                    Ok(Some(SessionEvent::Resumed { .. })) => resumes += 1,
                    other => panic!("round {round}: {other:?} after {seen:?}"),
                }
            }
        }
        let expected: Vec<String> = (1..=100).map(|n| format!("{n} line {n}\n")).collect();
        assert_eq!(seen, expected, "every echo once, in order");
        assert!(resumes >= 4, "{resumes} resumes");
        handle.tx.close().await.unwrap();
        loop {
            match tokio::time::timeout(tether_tests::session::WAIT, handle.rx.recv()).await {
                Ok(Some(SessionEvent::Ended)) => break,
                Ok(Some(SessionEvent::Resumed { .. })) => {}
                other => panic!("after close: {other:?}"),
            }
        }
        assert_eq!(worker.wait_eof(&sid), format!("eof {sid} 100"));
        assert_eq!(
            worker.conns(&sid),
            1,
            "one worker connection for the session"
        );
    });
}

#[test]
fn websocket_transport_takes_a_session_over_by_hand() {
    let (worker, tether) = setup();
    let addr = tether.addr();
    let mut o = open_with(addr, &addr.to_string(), "/echo.pphp", &[])
        .unwrap_or_else(|r| panic!("not opened: {}", r.head_text()));
    let sid = o.sid.clone();
    o.chan.send(b"a\nb\n");
    assert_eq!(o.chan.line(), "1 a\n");
    assert_eq!(o.chan.line(), "2 b\n");
    let url = format!("http://{addr}/echo.pphp");
    let out = connect(
        &[
            "--transport",
            "websocket",
            "--resume",
            &sid,
            "--received",
            "1",
            &url,
        ],
        "c\n",
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.starts_with(&format!("# session {sid} taken over (1 lines received)\n")),
        "{stderr}"
    );
    assert_eq!(stdout, "2 b\n3 c\n", "{stderr}");
    o.chan
        .expect_closed(tether_tests::session::WAIT)
        .expect("the native client is taken over");
    assert_eq!(worker.wait_eof(&sid), format!("eof {sid} 3"));
}
