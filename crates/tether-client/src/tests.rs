//! Session tests against an in-process fake gateway on 127.0.0.1 (port 0).
//! Each test scripts its gateway in a task; the client side runs in the test.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::connect::{run_connect_with, ConnectOptions};
use crate::{Backoff, ClientConfig, ClientError, Session, SessionEvent};

const SID: &str = "AAAAbbbbCCCCddddEEEEff";
const LIMIT: Duration = Duration::from_secs(10);

struct Req {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn gateway() -> (TcpListener, ClientConfig) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = ClientConfig::new(format!("http://{addr}/chat.pphp?room=1"));
    config.reconnect = Backoff {
        initial: Duration::from_millis(5),
        max: Duration::from_millis(20),
        max_attempts: 4,
    };
    (listener, config)
}

/// Accepts one connection and reads its request head (byte by byte, so
/// nothing after the head is consumed).
async fn accept(listener: &TcpListener) -> (TcpStream, Req) {
    let (mut stream, _) = listener.accept().await.unwrap();
    let req = read_req(&mut stream).await;
    (stream, req)
}

async fn read_req(stream: &mut TcpStream) -> Req {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "EOF in request head"
        );
        head.push(byte[0]);
    }
    let text = String::from_utf8(head).unwrap();
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap().split(' ');
    let method = first.next().unwrap().to_owned();
    let path = first.next().unwrap().to_owned();
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    Req {
        method,
        path,
        headers,
    }
}

async fn read_line(stream: &mut TcpStream) -> Vec<u8> {
    let mut line = Vec::new();
    while !line.ends_with(b"\n") {
        let mut byte = [0u8];
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "EOF in a line");
        line.push(byte[0]);
    }
    line
}

fn persistent(received: u64, body: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\nConnection-Type: Persistent\r\n\
         SessionID: {SID}\r\nSession-Received: {received}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    head.extend_from_slice(body);
    head
}

fn gone(reason: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 410 Gone\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{reason}",
        reason.len()
    )
    .into_bytes()
}

/// Opens a session whose gateway answers with `body` and then runs `rest`.
async fn with_gateway<F, Fut>(body: &'static [u8], rest: F) -> (Session, JoinHandle<()>)
where
    F: FnOnce(TcpListener, TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let (listener, config) = gateway().await;
    let task = tokio::spawn(async move {
        let (mut s, req) = accept(&listener).await;
        assert_eq!(req.method, "GET");
        assert!(req.header("SessionID").is_none());
        s.write_all(&persistent(0, body)).await.unwrap();
        rest(listener, s).await;
    });
    let session = tokio::time::timeout(LIMIT, Session::open(config))
        .await
        .unwrap()
        .unwrap();
    (session, task)
}

async fn next(session: &mut Session) -> Option<Bytes> {
    tokio::time::timeout(LIMIT, session.next_line())
        .await
        .expect("next_line timed out")
        .unwrap()
}

#[tokio::test]
async fn opens_reads_initial_body_and_exchanges_lines() {
    let (listener, mut config) = gateway().await;
    config
        .extra_headers
        .push(("Cookie".to_owned(), "u=1".to_owned()));
    let host = config.url[7..].split('/').next().unwrap().to_owned();
    let task = tokio::spawn(async move {
        let (mut s, req) = accept(&listener).await;
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/chat.pphp?room=1");
        assert_eq!(req.header("Host"), Some(host.as_str()));
        assert_eq!(req.header("Accept"), Some("application/x-persistent"));
        assert_eq!(req.header("Cookie"), Some("u=1"));
        // The initial body and the first line in one write.
        s.write_all(&[persistent(0, b"hello\n"), b"first\n".to_vec()].concat())
            .await
            .unwrap();
        assert_eq!(read_line(&mut s).await, b"ping\n");
        s.write_all(b"pong\r\n").await.unwrap();
        assert_eq!(read_line(&mut s).await, b"two\n");
    });
    let mut session = Session::open(config).await.unwrap();
    assert_eq!(session.id().as_str(), SID);
    assert_eq!(session.initial_body(), b"hello\n");
    assert_eq!(next(&mut session).await.unwrap(), &b"first\n"[..]);
    session.send_line(b"ping").await.unwrap();
    assert_eq!(next(&mut session).await.unwrap(), &b"pong\r\n"[..]);
    session.send_line(b"two\n").await.unwrap();
    assert_eq!(session.lines_received(), 2);
    assert_eq!(session.lines_sent(), 2);
    task.await.unwrap();
}

#[tokio::test]
async fn eof_then_410_is_the_normal_end() {
    let (mut session, task) = with_gateway(b"", |listener, mut s| async move {
        // The worker ended: last lines (and a partial one), then EOF.
        s.write_all(b"last\npartial").await.unwrap();
        drop(s);
        let (mut s, req) = accept(&listener).await;
        assert_eq!(req.header("SessionID"), Some(SID));
        assert_eq!(req.header("Session-Received"), Some("1"));
        s.write_all(&gone("no such session")).await.unwrap();
    })
    .await;
    assert_eq!(next(&mut session).await.unwrap(), &b"last\n"[..]);
    assert!(next(&mut session).await.is_none());
    assert!(next(&mut session).await.is_none());
    assert!(session.is_ended());
    assert!(matches!(
        session.send_line(b"x").await,
        Err(ClientError::Ended)
    ));
    task.await.unwrap();
}

#[tokio::test]
async fn eof_then_200_resumes_and_discards_the_partial_line() {
    let (mut session, task) = with_gateway(b"", |listener, mut s| async move {
        s.write_all(b"one\ntw").await.unwrap();
        drop(s); // FIN from something in between, not a session end
        let (mut s, req) = accept(&listener).await;
        assert_eq!(req.header("Session-Received"), Some("1"));
        s.write_all(&[persistent(0, b""), b"two\nthree\n".to_vec()].concat())
            .await
            .unwrap();
        let _ = s.read(&mut [0u8; 1]).await;
    })
    .await;
    assert_eq!(next(&mut session).await.unwrap(), &b"one\n"[..]);
    assert_eq!(next(&mut session).await.unwrap(), &b"two\n"[..]);
    assert_eq!(next(&mut session).await.unwrap(), &b"three\n"[..]);
    assert_eq!(session.resumes(), 1);
    drop(session);
    task.await.unwrap();
}

#[tokio::test]
async fn resume_after_a_drop_replays_and_resends() {
    let (mut session, task) = with_gateway(b"init", |listener, mut s| async move {
        for line in [&b"c1\n"[..], b"c2\n", b"c3\n"] {
            assert_eq!(read_line(&mut s).await, line);
        }
        // s2 is sent too but lost in flight (it never reaches the client).
        s.write_all(b"s1\n").await.unwrap();
        // The client drops; the gateway had delivered c1 only (c2 and c3
        // were, say, still in its socket buffer).
        let (mut s2, req) = accept(&listener).await;
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/chat.pphp?room=1");
        assert_eq!(req.header("SessionID"), Some(SID));
        assert_eq!(req.header("Session-Received"), Some("1"));
        drop(s);
        // Replay s2 (after the client's count), then a live line.
        s2.write_all(&[persistent(1, b""), b"s2\ns3\n".to_vec()].concat())
            .await
            .unwrap();
        assert_eq!(read_line(&mut s2).await, b"c2\n");
        assert_eq!(read_line(&mut s2).await, b"c3\n");
        // A second drop, from the gateway side (reset): nothing to resend.
        s2.set_zero_linger().unwrap();
        drop(s2);
        let (mut s3, req) = accept(&listener).await;
        assert_eq!(req.header("Session-Received"), Some("3"));
        s3.write_all(&[persistent(3, b""), b"s4\n".to_vec()].concat())
            .await
            .unwrap();
        assert_eq!(read_line(&mut s3).await, b"c4\n");
    })
    .await;
    assert_eq!(session.initial_body(), b"init");
    for line in [&b"c1"[..], b"c2", b"c3"] {
        session.send_line(line).await.unwrap();
    }
    assert_eq!(session.unacked_bytes(), 9);
    assert_eq!(next(&mut session).await.unwrap(), &b"s1\n"[..]);
    session.drop_connection_for_test();
    assert_eq!(next(&mut session).await.unwrap(), &b"s2\n"[..]);
    assert_eq!(session.resumes(), 1);
    assert_eq!(session.unacked_bytes(), 6, "c1 acknowledged by the resume");
    assert_eq!(next(&mut session).await.unwrap(), &b"s3\n"[..]);
    assert_eq!(next(&mut session).await.unwrap(), &b"s4\n"[..]);
    assert_eq!(session.resumes(), 2);
    assert_eq!(session.unacked_bytes(), 0);
    session.send_line(b"c4").await.unwrap();
    assert_eq!(session.lines_received(), 4);
    task.await.unwrap();
}

#[tokio::test]
async fn a_resume_retries_busy_answers_with_backoff() {
    let (mut session, task) = with_gateway(b"", |listener, s| async move {
        s.set_zero_linger().unwrap();
        drop(s);
        let (mut busy, _) = accept(&listener).await;
        busy.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 4\r\n\r\nbusy",
        )
        .await
        .unwrap();
        let (mut s, req) = accept(&listener).await;
        assert_eq!(req.header("Session-Received"), Some("0"));
        s.write_all(&[persistent(0, b""), b"back\n".to_vec()].concat())
            .await
            .unwrap();
        let _ = s.read(&mut [0u8; 1]).await;
    })
    .await;
    assert_eq!(next(&mut session).await.unwrap(), &b"back\n"[..]);
    assert_eq!(session.resumes(), 1);
    drop(session);
    task.await.unwrap();
}

#[tokio::test]
async fn a_410_after_a_reset_is_session_lost() {
    let (mut session, task) = with_gateway(b"", |listener, s| async move {
        s.set_zero_linger().unwrap();
        drop(s);
        let (mut s, _) = accept(&listener).await;
        s.write_all(&gone("session expired")).await.unwrap();
    })
    .await;
    let err = tokio::time::timeout(LIMIT, session.next_line())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::SessionLost { reason } if reason == "session expired"),
        "{err:?}"
    );
    task.await.unwrap();
}

#[tokio::test]
async fn an_unreachable_gateway_fails_after_max_attempts() {
    let (mut session, task) = with_gateway(b"", |listener, s| async move {
        drop(listener); // later connects are refused
        s.set_zero_linger().unwrap();
        drop(s);
    })
    .await;
    task.await.unwrap();
    let err = tokio::time::timeout(LIMIT, session.next_line())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, ClientError::ReconnectFailed { attempts: 4, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn partial_initial_body_loses_the_session() {
    let (listener, config) = gateway().await;
    let task = tokio::spawn(async move {
        let (mut s, _) = accept(&listener).await;
        let mut answer = persistent(0, b"0123456789");
        answer.truncate(answer.len() - 6);
        s.write_all(&answer).await.unwrap();
    });
    let err = Session::open(config).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::PartialInitialBody {
                expected: 10,
                got: 4
            }
        ),
        "{err:?}"
    );
    task.await.unwrap();
}

#[tokio::test]
async fn a_406_is_not_persistent() {
    let (listener, config) = gateway().await;
    let task = tokio::spawn(async move {
        let (mut s, _) = accept(&listener).await;
        let body =
            "a client supporting persistent connections is required (application/x-persistent)";
        s.write_all(
            format!(
                "HTTP/1.1 406 Not Acceptable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let (mut s, _) = accept(&listener).await;
        // A plain 200 (no Connection-Type), chunked.
        s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
            .await
            .unwrap();
    });
    match Session::open(config.clone()).await.unwrap_err() {
        ClientError::NotPersistent {
            status,
            headers,
            body,
        } => {
            assert_eq!(status, 406);
            assert!(headers.iter().any(|(n, _)| n == "Content-Type"));
            assert!(body.starts_with(b"a client supporting"));
        }
        other => panic!("{other:?}"),
    }
    match Session::open(config).await.unwrap_err() {
        ClientError::NotPersistent { status, body, .. } => {
            assert_eq!(status, 200);
            assert_eq!(body, &b"abc"[..]);
        }
        other => panic!("{other:?}"),
    }
    task.await.unwrap();
}

#[tokio::test]
async fn nothing_is_sent_before_the_answer_head() {
    // By construction: a Session exists only once the head was read. The
    // gateway checks that no byte follows the request head before it answers.
    let (listener, config) = gateway().await;
    let task = tokio::spawn(async move {
        let (mut s, _) = accept(&listener).await;
        let mut byte = [0u8; 1];
        let early = tokio::time::timeout(Duration::from_millis(100), s.read(&mut byte)).await;
        assert!(early.is_err(), "the client sent bytes before the head");
        s.write_all(&persistent(0, b"")).await.unwrap();
        assert_eq!(read_line(&mut s).await, b"after\n");
    });
    let mut session = Session::open(config).await.unwrap();
    session.send_line(b"after").await.unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn lines_are_checked_and_the_resend_buffer_is_bounded() {
    let (listener, mut config) = gateway().await;
    config.max_line = 8;
    config.max_unacked_bytes = 10;
    let task = tokio::spawn(async move {
        let (mut s, _) = accept(&listener).await;
        s.write_all(&persistent(0, b"")).await.unwrap();
        let _ = s.read(&mut [0u8; 64]).await;
    });
    let mut session = Session::open(config).await.unwrap();
    assert!(matches!(
        session.send_line(b"a\nb").await,
        Err(ClientError::InvalidLine(_))
    ));
    assert!(matches!(
        session.send_line(b"12345678").await,
        Err(ClientError::InvalidLine(_))
    ));
    session.send_line(b"1234567").await.unwrap();
    assert!(matches!(
        session.send_line(b"abc").await,
        Err(ClientError::ResendBufferFull {
            unacked: 8,
            max: 10
        })
    ));
    session.send_line(b"a").await.unwrap();
    drop(session);
    task.await.unwrap();
}

#[tokio::test]
async fn close_syncs_then_deletes() {
    let (session, task) = with_gateway(b"", |listener, mut s| async move {
        assert_eq!(read_line(&mut s).await, b"bye\n");
        // close() first resumes to learn what was delivered...
        let (mut s2, req) = accept(&listener).await;
        assert_eq!(req.header("Session-Received"), Some("0"));
        drop(s);
        s2.write_all(&persistent(1, b"")).await.unwrap();
        // ...then sends DELETE on a fresh connection.
        let (mut d, req) = accept(&listener).await;
        assert_eq!(req.method, "DELETE");
        assert_eq!(req.path, "/chat.pphp?room=1");
        assert_eq!(req.header("SessionID"), Some(SID));
        d.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .unwrap();
    })
    .await;
    let mut session = session;
    session.send_line(b"bye").await.unwrap();
    tokio::time::timeout(LIMIT, session.close())
        .await
        .unwrap()
        .unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn close_without_lines_only_deletes() {
    let (session, task) = with_gateway(b"", |listener, _s| async move {
        let (mut d, req) = accept(&listener).await;
        assert_eq!(req.method, "DELETE");
        d.write_all(b"HTTP/1.1 410 Gone\r\nContent-Length: 4\r\n\r\ngone")
            .await
            .unwrap();
    })
    .await;
    let err = session.close().await.unwrap_err();
    assert!(
        matches!(&err, ClientError::CloseFailed { status: 410, body } if body == &b"gone"[..]),
        "{err:?}"
    );
    task.await.unwrap();
}

async fn event(rx: &mut mpsc::Receiver<SessionEvent>) -> String {
    match tokio::time::timeout(LIMIT, rx.recv()).await.unwrap() {
        Some(SessionEvent::Line(l)) => format!("line {}", String::from_utf8_lossy(&l)),
        Some(SessionEvent::Resumed { resent, resumes }) => format!("resumed {resent} {resumes}"),
        Some(SessionEvent::Ended) => "ended".to_owned(),
        Some(SessionEvent::Failed(e)) => format!("failed {e}"),
        None => "none".to_owned(),
    }
}

#[tokio::test]
async fn the_handle_runs_full_duplex_and_reports_resumes() {
    let (session, task) = with_gateway(b"", |listener, mut s| async move {
        s.write_all(b"a\n").await.unwrap();
        assert_eq!(read_line(&mut s).await, b"x\n");
        // Lose the connection after having delivered x.
        let (mut s2, req) = accept(&listener).await;
        assert_eq!(req.header("Session-Received"), Some("1"));
        drop(s);
        s2.write_all(&[persistent(1, b""), b"b\n".to_vec()].concat())
            .await
            .unwrap();
        assert_eq!(read_line(&mut s2).await, b"y\n");
        // close(): a sync resume, then DELETE, then the last line and EOF.
        let (mut s3, req) = accept(&listener).await;
        assert_eq!(req.header("Session-Received"), Some("2"));
        drop(s2);
        s3.write_all(&persistent(2, b"")).await.unwrap();
        let (mut d, req) = accept(&listener).await;
        assert_eq!(req.method, "DELETE");
        d.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .unwrap();
        s3.write_all(b"last\n").await.unwrap();
    })
    .await;
    let handle = session.spawn();
    assert_eq!(handle.id().as_str(), SID);
    let tx = handle.tx.clone();
    let mut rx = handle.rx;
    assert_eq!(event(&mut rx).await, "line a\n");
    tx.send_line(b"x").await.unwrap();
    tx.drop_connection_for_test().await;
    assert_eq!(event(&mut rx).await, "resumed 0 1");
    assert_eq!(event(&mut rx).await, "line b\n");
    tx.send_line(b"y").await.unwrap();
    tx.close().await.unwrap();
    assert_eq!(event(&mut rx).await, "line last\n");
    assert_eq!(event(&mut rx).await, "ended");
    assert_eq!(event(&mut rx).await, "none");
    assert!(matches!(tx.send_line(b"z").await, Err(ClientError::Ended)));
    task.await.unwrap();
}

#[tokio::test]
async fn connect_prints_lines_and_closes_on_eof() {
    let (listener, config) = gateway().await;
    let task = tokio::spawn(async move {
        let (mut s, _) = accept(&listener).await;
        s.write_all(&[persistent(0, b"welcome\n"), b"hi\n".to_vec()].concat())
            .await
            .unwrap();
        assert_eq!(read_line(&mut s).await, b"typed\n");
        // A drop (reset by the gateway side); the resume resends nothing.
        s.set_zero_linger().unwrap();
        drop(s);
        let (mut s2, req) = accept(&listener).await;
        assert_eq!(req.header("Session-Received"), Some("1"));
        s2.write_all(&[persistent(1, b""), b"echo typed\n".to_vec()].concat())
            .await
            .unwrap();
        // Ctrl-D: every line is acknowledged, so DELETE at once, then EOF.
        let (mut d, req) = accept(&listener).await;
        assert_eq!(req.method, "DELETE");
        d.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .unwrap();
        drop(s2);
    });
    let (in_tx, in_rx) = mpsc::channel(4);
    let (out, mut out_reader) = tokio::io::duplex(4096);
    let (err, mut err_reader) = tokio::io::duplex(4096);
    let run = tokio::spawn(async move {
        run_connect_with(config, &ConnectOptions::default(), in_rx, out, err).await
    });
    let mut seen = Vec::new();
    while !seen.ends_with(b"hi\n") {
        let mut buf = [0u8; 64];
        let n = out_reader.read(&mut buf).await.unwrap();
        seen.extend_from_slice(&buf[..n]);
    }
    assert_eq!(seen, b"welcome\nhi\n");
    in_tx.send(b"typed\n".to_vec()).await.unwrap();
    seen.clear();
    while !seen.ends_with(b"echo typed\n") {
        let mut buf = [0u8; 64];
        let n = out_reader.read(&mut buf).await.unwrap();
        seen.extend_from_slice(&buf[..n]);
    }
    drop(in_tx);
    tokio::time::timeout(LIMIT, run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let mut notes = String::new();
    err_reader.read_to_string(&mut notes).await.unwrap();
    assert!(
        notes.contains(&format!("# session {SID} opened")),
        "{notes}"
    );
    assert!(
        notes.contains("# resumed after drop (0 lines replayed)"),
        "{notes}"
    );
    assert!(notes.ends_with("# session ended\n"), "{notes}");
    task.await.unwrap();
}
