//! Operations (SPEC 1 and 8, admin endpoints of SPEC 7), black-box against
//! the `tether` binary: SIGHUP reloads (vhosts, origins, limits and
//! listeners change for new connections; bad files and unbindable listeners
//! are refused and the old config stays; open sessions survive), SIGTERM
//! drains (`/readyz` 503, listeners closed, plain requests in flight
//! finish, sessions end with their remaining lines and EOF, exit 0), and
//! `tether check` / `tether run` on bad files.
//!
//! Origins are `line_worker`s (`/plain.pphp` on a plain vhost answers
//! `plain <name>`), or a raw listener in the test that holds its answer
//! until the test releases it. Everything synchronises by polling with
//! bounded loops; the limits are hang guards. The one timing assertion is
//! SPEC 8's: after SIGTERM, everything within `drain_timeout` (plus
//! [`DEADLINE_MARGIN`](tether_tests::DEADLINE_MARGIN)).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tether_tests::raw_http::{get, request_bytes};
use tether_tests::session::{
    open_with, resume_with, session_vhost, End, LineWorker, Opened, HOST, WAIT,
};
use tether_tests::tether::tether_bin;
use tether_tests::{
    assert_within_deadline, free_port, temp_dir, wait_for, RawConn, Response, Signal, Tether,
};

const WORKER: &str = env!("CARGO_BIN_EXE_line_worker");
/// Hang guard for a drain or an exit (well above any `drain_timeout` here).
const EXIT_GUARD: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------- helpers

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A `[server]` table with these listeners, the admin listener and `extra`
/// lines.
fn server(listen: &[SocketAddr], admin: SocketAddr, extra: &str) -> String {
    let listen: Vec<String> = listen.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[server]\nlisten = [{}]\nadmin_listen = \"{admin}\"\n{extra}\n",
        listen.join(", ")
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

/// A plain `[[vhost]]` for `hosts` → `origin` (`http://...`).
fn plain_vhost(hosts: &[&str], origin: &str) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    format!(
        "[[vhost]]\nhosts = [{}]\norigin = \"{origin}\"\n",
        hosts.join(", ")
    )
}

/// Starts tether on `text` and waits until it is ready for signals.
fn start(text: &str) -> Tether {
    let tether = Tether::start(text);
    tether.wait_signal_handlers();
    let admin = tether.admin_addr().expect("admin_listen");
    wait_for("/readyz 200 after the start", WAIT, || {
        (try_get(admin, "admin", "/readyz").map(|r| r.status) == Some(200)).then_some(())
    });
    tether
}

/// Rewrites tether's config file (the one it was started with).
fn write_config(tether: &Tether, text: &str) {
    std::fs::write(tether.dir().join("tether.toml"), text).expect("write tether.toml");
}

/// One `GET` on a new connection, `None` when the connection is refused
/// or closed without a whole answer.
fn try_get(a: SocketAddr, host: &str, target: &str) -> Option<Response> {
    let mut conn = RawConn::try_connect(a).ok()?;
    conn.set_read_timeout(WAIT);
    conn.try_send(&request_bytes("GET", target, host, &[], b""))
        .ok()?;
    conn.read_final_response_to("GET").ok()
}

/// `GET /plain.pphp` with `headers` on a new connection: the status and,
/// for a `line_worker` origin's `plain <name>` body, the origin's name.
fn plain_from(a: SocketAddr, host: &str, headers: &[(&str, &str)]) -> (u16, Option<String>) {
    let mut conn = RawConn::connect(a);
    conn.set_read_timeout(WAIT);
    conn.send(&request_bytes("GET", "/plain.pphp", host, headers, b""));
    let r = conn
        .read_final_response_to("GET")
        .unwrap_or_else(|e| panic!("GET /plain.pphp on {a} (Host {host}): {e}"));
    let name = r
        .body_text()
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("plain "))
        .map(str::to_string);
    (r.status, name)
}

/// `HEAD /x` (not a candidate path) on a new connection: the status and
/// the `line_worker` origin's name (`X-Worker`).
fn head_origin(a: SocketAddr, host: &str) -> (u16, Option<String>) {
    let r = RawConn::connect(a).request("HEAD", "/x", host, &[], b"");
    (r.status, r.header("x-worker").map(str::to_string))
}

/// Polls until a new connection to `a` is refused (the listener is gone)
/// or, if accepted, is closed without any answer byte.
fn wait_not_accepting(a: SocketAddr, what: &str) {
    wait_for(what, WAIT, || match TcpStream::connect(a) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Some(()),
        Err(_) => None,
        Ok(mut s) => {
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            let mut b = [0u8; 1];
            match s.read(&mut b) {
                Ok(0) => Some(()),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => Some(()),
                _ => None,
            }
        }
    })
}

/// Length of tether's stderr now: log lines after this offset are new.
fn log_mark(tether: &Tether) -> usize {
    tether.stderr_text().len()
}

/// Waits until tether logs an error after `mark` (a refused reload is
/// logged, SPEC 8); returns the new log text.
fn wait_logged_error(tether: &Tether, mark: usize, what: &str) -> String {
    wait_for(what, WAIT, || {
        let text = tether.stderr_text();
        let new = text.get(mark..).unwrap_or("").to_string();
        new.lines()
            .any(|l| l.contains("ERROR") || l.contains("\"level\":\"ERROR\""))
            .then_some(new)
    })
}

fn assert_exit_0(tether: &mut Tether) {
    let status = tether.wait_exit(EXIT_GUARD).unwrap_or_else(|| {
        panic!(
            "tether did not exit within {EXIT_GUARD:?} of SIGTERM; stderr:\n{}",
            tether.stderr_text()
        )
    });
    assert_eq!(
        status.code(),
        Some(0),
        "SPEC 8: exit 0 after the drain; got {status}; stderr:\n{}",
        tether.stderr_text()
    );
}

/// Opens `/echo.pphp` on `host`; panics unless persistent.
fn open_echo(a: SocketAddr, host: &str) -> Opened {
    open_with(a, host, "/echo.pphp", &[]).unwrap_or_else(|r| {
        panic!(
            "open on {host}: not persistent: {}{}",
            r.head_text(),
            r.body_text()
        )
    })
}

/// Whether the worker logged `eof` or `end` for `sid` (its connection
/// ended).
fn worker_conn_ended(worker: &LineWorker, sid: &str) -> Option<String> {
    worker
        .events_of(sid)
        .into_iter()
        .find(|e| e.starts_with("eof ") || e.starts_with("end "))
}

// ---------------------------------------------------------------- SIGHUP

#[test]
fn reload_changes_origin_for_new_connections() {
    let alpha = LineWorker::start(WORKER, "alpha");
    let beta = LineWorker::start(WORKER, "beta");
    let listen = addr(free_port());
    let admin = addr(free_port());
    let srv = server(&[listen], admin, "");
    let mut tether = start(&config(&srv, &[plain_vhost(&["one.test"], &alpha.url())]));

    let pad = "p".repeat(8 * 1024);
    let padded = [("X-Pad", pad.as_str())];
    assert_eq!(
        plain_from(listen, "one.test", &[]),
        (200, Some("alpha".into()))
    );
    assert_eq!(
        plain_from(listen, "one.test", &padded),
        (200, Some("alpha".into())),
        "an 8 KiB header is within the default max_header_bytes"
    );
    assert_eq!(plain_from(listen, "two.test", &[]).0, 421);
    // A keep-alive connection opened before the reload.
    let mut before = RawConn::connect(listen);
    assert_eq!(
        before
            .request("GET", "/plain.pphp", "one.test", &[], b"")
            .status,
        200
    );

    // Origin of one.test → beta, a new vhost two.test → alpha, and a
    // smaller max_header_bytes.
    let srv2 = server(&[listen], admin, "max_header_bytes = \"4KiB\"");
    write_config(
        &tether,
        &config(
            &srv2,
            &[
                plain_vhost(&["one.test"], &beta.url()),
                plain_vhost(&["two.test"], &alpha.url()),
            ],
        ),
    );
    tether.signal(Signal::Hup);
    wait_for("one.test to reach beta after SIGHUP", WAIT, || {
        (plain_from(listen, "one.test", &[]).1.as_deref() == Some("beta")).then_some(())
    });
    for _ in 0..5 {
        assert_eq!(
            plain_from(listen, "one.test", &[]),
            (200, Some("beta".into())),
            "SPEC 8: after SIGHUP new connections use the new origin"
        );
    }
    assert_eq!(
        plain_from(listen, "two.test", &[]),
        (200, Some("alpha".into())),
        "SPEC 8: a vhost added by SIGHUP serves new connections"
    );
    assert_eq!(
        plain_from(listen, "one.test", &padded).0,
        431,
        "SPEC 8: limits change for new connections (max_header_bytes = 4KiB)"
    );

    // Rename: one.test disappears (421), uno.test takes its place.
    write_config(
        &tether,
        &config(
            &srv2,
            &[
                plain_vhost(&["uno.test"], &beta.url()),
                plain_vhost(&["two.test"], &alpha.url()),
            ],
        ),
    );
    tether.signal(Signal::Hup);
    wait_for("one.test to be unknown after SIGHUP", WAIT, || {
        (plain_from(listen, "one.test", &[]).0 == 421).then_some(())
    });
    assert_eq!(
        plain_from(listen, "uno.test", &[]),
        (200, Some("beta".into()))
    );
    drop(before);

    tether.signal(Signal::Term);
    assert_exit_0(&mut tether);
}

#[test]
fn bad_reload_is_refused_and_old_config_kept() {
    let alpha = LineWorker::start(WORKER, "alpha");
    let beta = LineWorker::start(WORKER, "beta");
    let listen = addr(free_port());
    let admin = addr(free_port());
    let srv = server(&[listen], admin, "");
    let good = config(&srv, &[plain_vhost(&["one.test"], &alpha.url())]);
    let mut tether = start(&good);
    assert_eq!(
        plain_from(listen, "one.test", &[]),
        (200, Some("alpha".into()))
    );

    // The new origin would be beta, but the file has errors: an unknown
    // key and a bad duration.
    let bad = config(
        &format!("{srv}idle_timeout = \"soon\"\nbogus_key = 1\n"),
        &[plain_vhost(&["one.test"], &beta.url())],
    );
    for round in 0..2 {
        let mark = log_mark(&tether);
        write_config(&tether, &bad);
        tether.signal(Signal::Hup);
        let logged = wait_logged_error(&tether, mark, "the refused reload to be logged");
        tether.check_alive().unwrap_or_else(|e| {
            panic!("SPEC 8: a bad reload must leave tether serving (round {round}): {e}")
        });
        for _ in 0..5 {
            assert_eq!(
                plain_from(listen, "one.test", &[]),
                (200, Some("alpha".into())),
                "SPEC 8: a refused reload keeps the old config; log:\n{logged}"
            );
        }
        assert_eq!(
            try_get(admin, "admin", "/readyz").map(|r| r.status),
            Some(200),
            "still ready after a refused reload"
        );
    }

    // A good file afterwards is taken: the gateway still reloads.
    write_config(
        &tether,
        &config(&srv, &[plain_vhost(&["one.test"], &beta.url())]),
    );
    tether.signal(Signal::Hup);
    wait_for("one.test to reach beta after a good SIGHUP", WAIT, || {
        (plain_from(listen, "one.test", &[]).1.as_deref() == Some("beta")).then_some(())
    });

    tether.signal(Signal::Term);
    assert_exit_0(&mut tether);
}

#[test]
fn reload_adds_and_removes_listeners() {
    let alpha = LineWorker::start(WORKER, "alpha");
    let beta = LineWorker::start(WORKER, "beta");
    let (p1, p2, p3) = (addr(free_port()), addr(free_port()), addr(free_port()));
    let admin = addr(free_port());
    let mut tether = start(&config(
        &server(&[p1, p2], admin, ""),
        &[plain_vhost(&["*"], &alpha.url())],
    ));
    assert_eq!(plain_from(p1, "a.test", &[]), (200, Some("alpha".into())));
    assert_eq!(plain_from(p2, "a.test", &[]), (200, Some("alpha".into())));
    assert!(
        TcpStream::connect(p3).is_err(),
        "{p3} is not configured yet"
    );

    // p1 stays, p2 goes, p3 comes; the origin changes too.
    write_config(
        &tether,
        &config(
            &server(&[p1, p3], admin, ""),
            &[plain_vhost(&["*"], &beta.url())],
        ),
    );
    tether.signal(Signal::Hup);
    wait_for("the new listener to serve after SIGHUP", WAIT, || {
        try_get(p3, "a.test", "/plain.pphp").and_then(|r| (r.status == 200).then_some(()))
    });
    assert_eq!(
        plain_from(p3, "a.test", &[]),
        (200, Some("beta".into())),
        "SPEC 8: a listener added by SIGHUP accepts with the new config"
    );
    assert_eq!(
        plain_from(p1, "a.test", &[]),
        (200, Some("beta".into())),
        "a kept listener serves the new config"
    );
    wait_not_accepting(p2, "SPEC 8: the removed listener to stop accepting");
    // Its port is free again.
    wait_for("the removed listener's port to be bindable", WAIT, || {
        TcpListener::bind(p2).ok().map(drop)
    });

    tether.signal(Signal::Term);
    assert_exit_0(&mut tether);
}

#[test]
fn reload_with_unbindable_listener_keeps_old_config() {
    let alpha = LineWorker::start(WORKER, "alpha");
    let beta = LineWorker::start(WORKER, "beta");
    let p1 = addr(free_port());
    let admin = addr(free_port());
    let fresh = addr(free_port());
    // Another process' listener (here: the test's) holds this port.
    let holder = TcpListener::bind("127.0.0.1:0").expect("bind holder");
    let held = holder.local_addr().expect("holder addr");

    let mut tether = start(&config(
        &server(&[p1], admin, ""),
        &[plain_vhost(&["*"], &alpha.url())],
    ));
    assert_eq!(plain_from(p1, "a.test", &[]), (200, Some("alpha".into())));

    // A new origin, a free new listener (listed first) and the held one.
    let wanted = config(
        &server(&[p1, fresh, held], admin, ""),
        &[plain_vhost(&["*"], &beta.url())],
    );
    let mark = log_mark(&tether);
    write_config(&tether, &wanted);
    tether.signal(Signal::Hup);
    let logged = wait_logged_error(&tether, mark, "the failed reload to be logged");
    tether
        .check_alive()
        .unwrap_or_else(|e| panic!("SPEC 8: a failed reload must leave tether serving: {e}"));
    for _ in 0..5 {
        assert_eq!(
            plain_from(p1, "a.test", &[]),
            (200, Some("alpha".into())),
            "SPEC 8: a listener that cannot be bound fails the reload and the old \
             config is kept (origin alpha); log:\n{logged}"
        );
    }
    wait_not_accepting(
        fresh,
        "SPEC 8: no listener of the failed reload to stay bound",
    );
    holder.set_nonblocking(true).expect("holder nonblocking");
    match holder.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the holder's listener got a connection: {other:?}"),
    }

    // Once the port is free the same file reloads.
    drop(holder);
    tether.signal(Signal::Hup);
    wait_for("the held port to serve after the holder left", WAIT, || {
        try_get(held, "a.test", "/plain.pphp").and_then(|r| (r.status == 200).then_some(()))
    });
    assert_eq!(plain_from(held, "a.test", &[]), (200, Some("beta".into())));
    assert_eq!(plain_from(fresh, "a.test", &[]), (200, Some("beta".into())));
    assert_eq!(plain_from(p1, "a.test", &[]), (200, Some("beta".into())));

    tether.signal(Signal::Term);
    assert_exit_0(&mut tether);
}

#[test]
fn sessions_survive_reload() {
    let worker = LineWorker::start(WORKER, "w");
    let origin = LineWorker::start(WORKER, "origin");
    let other_origin = LineWorker::start(WORKER, "origin2");
    let listen = addr(free_port());
    let admin = addr(free_port());
    let srv = server(&[listen], admin, "");
    let (renamed, removed, kept) = ("a.sess.test", "b.sess.test", HOST);
    let w = [worker.url()];
    let mut tether = start(&config(
        &srv,
        &[
            session_vhost(renamed, &origin.url(), &w, ""),
            session_vhost(removed, &origin.url(), &w, ""),
            session_vhost(kept, &origin.url(), &w, ""),
        ],
    ));

    // Two attached sessions (their hosts will be renamed and removed) and
    // one detached before the reload (its vhost stays).
    let mut a = open_echo(listen, renamed);
    let mut b = open_echo(listen, removed);
    let mut c = open_echo(listen, kept);
    for (s, line) in [(&mut a, "a1"), (&mut b, "b1"), (&mut c, "c1")] {
        s.chan.send(format!("{line}\n").as_bytes());
        assert_eq!(s.chan.line(), format!("1 {line}\n"));
    }
    let c_sid = c.sid.clone();
    c.chan.reset();

    write_config(
        &tether,
        &config(
            &srv,
            &[
                session_vhost("a2.sess.test", &other_origin.url(), &w, ""),
                session_vhost(kept, &other_origin.url(), &w, ""),
            ],
        ),
    );
    tether.signal(Signal::Hup);
    wait_for("the reload (a.sess.test unknown)", WAIT, || {
        (plain_from(listen, renamed, &[]).0 == 421).then_some(())
    });
    assert_eq!(plain_from(listen, removed, &[]).0, 421);
    assert_eq!(
        head_origin(listen, kept),
        (200, Some("origin2".into())),
        "the kept vhost's new origin serves plain requests"
    );

    // The attached sessions keep flowing on their connections, to the same
    // worker connection.
    for (s, line) in [(&mut a, "a2"), (&mut b, "b2")] {
        s.chan.send(format!("{line}\n").as_bytes());
        assert_eq!(
            s.chan.line(),
            format!("2 {line}\n"),
            "SPEC 8: a session survives a reload that renamed or removed its host"
        );
    }
    // The detached one resumes on its (kept) vhost.
    let mut c = resume_with(listen, kept, "/echo.pphp", &c_sid, Some("1")).unwrap_or_else(|r| {
        panic!(
            "SPEC 8: a detached session must survive a reload and resume: {}{}",
            r.head_text(),
            r.body_text()
        )
    });
    assert_eq!(c.head.header("session-received"), Some("1"));
    c.chan.send(b"c2\n");
    assert_eq!(c.chan.line(), "2 c2\n");
    // A new session on the renamed host opens.
    let mut d = open_echo(listen, "a2.sess.test");
    d.chan.send(b"d1\n");
    assert_eq!(d.chan.line(), "1 d1\n");

    for sid in [&a.sid, &b.sid, &c_sid] {
        assert_eq!(
            worker.conns(sid),
            1,
            "SPEC 8: the session keeps its worker (one worker connection)"
        );
        assert_eq!(
            worker_conn_ended(&worker, sid),
            None,
            "SPEC 8: the worker saw no end of session {sid} across the reload"
        );
    }
    assert!(worker.errors().is_empty(), "{:?}", worker.errors());

    tether.signal(Signal::Term);
    assert_exit_0(&mut tether);
}

// ---------------------------------------------------------------- SIGTERM

/// An origin that answers its first request only when released.
struct SlowOrigin {
    addr: SocketAddr,
    got: mpsc::Receiver<String>,
    release: mpsc::Sender<()>,
}

const SLOW_BODY: &[u8] = b"slow answer, whole\n";

impl SlowOrigin {
    fn start() -> SlowOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind slow origin");
        let addr = listener.local_addr().expect("addr");
        let (got_tx, got) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            let _ = s.set_read_timeout(Some(EXIT_GUARD));
            let mut head = Vec::new();
            let mut b = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&b[..n]),
                }
            }
            let _ = got_tx.send(String::from_utf8_lossy(&head).into_owned());
            if release_rx.recv_timeout(EXIT_GUARD).is_err() {
                return;
            }
            let mut answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n",
                SLOW_BODY.len()
            )
            .into_bytes();
            answer.extend_from_slice(SLOW_BODY);
            let _ = s.write_all(&answer);
            // Keep the connection open until tether closes it.
            let _ = s.read(&mut b);
        });
        SlowOrigin { addr, got, release }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

#[test]
fn sigterm_readyz_turns_503_then_exits_0() {
    let slow = SlowOrigin::start();
    let listen = addr(free_port());
    let admin = addr(free_port());
    let mut tether = start(&config(
        &server(&[listen], admin, "drain_timeout = \"30s\""),
        &[plain_vhost(&["*"], &slow.url())],
    ));
    let ready = get(admin, "admin", "/readyz");
    assert_eq!(ready.status, 200, "SPEC 7: /readyz 200 once listening");
    assert_eq!(get(admin, "admin", "/healthz").status, 200);

    // A plain request in flight: the origin holds its answer.
    let mut client = RawConn::connect(listen);
    client.set_read_timeout(EXIT_GUARD);
    client.send(&request_bytes("GET", "/slow", "a.test", &[], b""));
    let head = slow
        .got
        .recv_timeout(WAIT)
        .expect("the slow request to reach the origin");
    assert!(head.starts_with("GET /slow "), "{head}");

    tether.signal(Signal::Term);
    wait_for("SPEC 8: /readyz 503 after SIGTERM", WAIT, || {
        (try_get(admin, "admin", "/readyz").map(|r| r.status) == Some(503)).then_some(())
    });
    assert_eq!(
        try_get(admin, "admin", "/healthz").map(|r| r.status),
        Some(200),
        "SPEC 7: /healthz 200 while the process runs (draining)"
    );
    wait_not_accepting(
        listen,
        "SPEC 8: the listener to stop accepting after SIGTERM",
    );
    tether.check_alive().unwrap_or_else(|e| {
        panic!("SPEC 8: tether must wait for the plain request in flight: {e}")
    });
    assert_eq!(
        try_get(admin, "admin", "/readyz").map(|r| r.status),
        Some(503),
        "still draining"
    );

    slow.release.send(()).expect("release the origin");
    let r = client
        .read_final_response_to("GET")
        .unwrap_or_else(|e| panic!("SPEC 8: the request in flight must finish: {e}"));
    assert_eq!(r.status, 200, "{}", r.head_text());
    assert_eq!(r.body, SLOW_BODY, "the answer in flight arrives whole");
    assert_exit_0(&mut tether);
}

#[test]
fn sigterm_drain_timeout_bounds_stuck_requests_and_sessions() {
    let slow = SlowOrigin::start();
    let worker = LineWorker::start(WORKER, "w");
    let listen = addr(free_port());
    let admin = addr(free_port());
    let drain_timeout = Duration::from_secs(2);
    let mut tether = start(&config(
        &server(&[listen], admin, "drain_timeout = \"2s\""),
        &[
            plain_vhost(&["plain.test"], &slow.url()),
            session_vhost(HOST, &worker.url(), &[worker.url()], ""),
        ],
    ));
    // A plain request whose origin never answers, and a flood session
    // whose client stops reading after one line.
    let mut client = RawConn::connect(listen);
    client.send(&request_bytes("GET", "/stuck", "plain.test", &[], b""));
    slow.got
        .recv_timeout(WAIT)
        .expect("the request reaches the origin");
    let mut flood = open_with(listen, HOST, "/flood.pphp?size=100", &[]).expect("open flood");
    flood.chan.line();
    worker.wait_event("flood progress", |e| {
        e.starts_with(&format!("wrote {} ", flood.sid))
    });

    let signalled = Instant::now();
    tether.signal(Signal::Term);
    wait_for("/readyz 503 after SIGTERM", WAIT, || {
        (try_get(admin, "admin", "/readyz").map(|r| r.status) == Some(503)).then_some(())
    });
    // SPEC 8: everything within drain_timeout, then exit 0, although the
    // origin never answers and the client never reads.
    assert_exit_0(&mut tether);
    assert_within_deadline(
        "exit after SIGTERM with a stuck request and a stuck session",
        signalled.elapsed(),
        drain_timeout,
    );
    worker.wait_eof(&flood.sid);
    // The cut request's connection ends (with or without a 5xx first).
    let mut stream = client.stream().try_clone().expect("clone");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the stuck request's connection did not end: {e}"),
    }
    drop(slow);
}

/// The number of a `line_worker` numbered line (`<i>` or `<i> xxx`).
fn line_number(line: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(line);
    text.split([' ', '\n'])
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("not a numbered line: {text:?}"))
}

/// Reads a channel to its end on a thread: the lines and how it ended.
fn read_to_end(mut s: Opened) -> std::thread::JoinHandle<(Vec<Vec<u8>>, End, Vec<u8>)> {
    std::thread::spawn(move || {
        let (lines, end) = s.chan.lines_until_end(EXIT_GUARD);
        (lines, end, s.chan.pending().to_vec())
    })
}

#[test]
fn sigterm_ends_sessions_with_remaining_lines_and_eof() {
    let worker = LineWorker::start(WORKER, "w");
    let listen = addr(free_port());
    let admin = addr(free_port());
    let drain_timeout = Duration::from_secs(5);
    let mut tether = start(&config(
        &server(&[listen], admin, "drain_timeout = \"5s\""),
        &[session_vhost(HOST, &worker.url(), &[worker.url()], "")],
    ));

    // Session A: 20 lines of 50 bytes written at once; the client reads the
    // first, the other 19 wait in its socket's receive queue.
    let mut a = open_with(listen, HOST, "/count.pphp?n=20&size=50", &[]).expect("open count");
    assert_eq!(line_number(a.chan.line().as_bytes()), 1);
    let (local, peer) = (a.chan.local_addr(), a.chan.peer_addr());
    wait_for("19 lines queued at the client", WAIT, || {
        let (_, rx) = tether_tests::session::tcp_queues(local, peer)?;
        (rx as usize + a.chan.pending().len() >= 19 * 50).then_some(())
    });
    // Session B: the worker floods; the client reads one line and stops,
    // so lines wait in the gateway and in the socket buffers.
    let mut b = open_with(listen, HOST, "/flood.pphp?size=100", &[]).expect("open flood");
    assert_eq!(line_number(b.chan.line().as_bytes()), 1);
    worker.wait_event("flood progress", |e| {
        e.starts_with(&format!("wrote {} ", b.sid))
    });
    // Session C: idle, attached.
    let c = open_with(listen, HOST, "/echo.pphp", &[]).expect("open echo");
    let sids = [a.sid.clone(), b.sid.clone(), c.sid.clone()];
    for sid in &sids {
        assert_eq!(worker_conn_ended(&worker, sid), None);
    }

    let signalled = Instant::now();
    tether.signal(Signal::Term);
    let (ra, rb, rc) = (read_to_end(a), read_to_end(b), read_to_end(c));

    let (lines, end, rest) = ra.join().expect("reader A");
    let numbers: Vec<u64> = lines.iter().map(|l| line_number(l)).collect();
    assert_eq!(
        numbers,
        (2..=20).collect::<Vec<_>>(),
        "SPEC 8: a native client gets its remaining lines, then EOF"
    );
    assert_eq!(
        end,
        End::Eof,
        "SPEC 8: native clients get EOF (not a reset)"
    );
    assert!(rest.is_empty(), "bytes after the last line: {rest:?}");

    let (lines, end, rest) = rb.join().expect("reader B");
    assert_eq!(
        end,
        End::Eof,
        "SPEC 8: native clients get EOF (not a reset)"
    );
    assert!(rest.is_empty(), "a partial line before the EOF: {rest:?}");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(
            line_number(l),
            i as u64 + 2,
            "SPEC 8: the remaining lines arrive in order without a gap"
        );
    }
    let flood_lines = lines.len() as u64 + 1;

    let (lines, end, rest) = rc.join().expect("reader C");
    assert!(lines.is_empty() && rest.is_empty(), "{lines:?} {rest:?}");
    assert_eq!(end, End::Eof, "SPEC 8: an idle native client gets EOF");

    for sid in &sids {
        worker.wait_eof(sid);
    }
    let (wrote, _) = worker
        .last_wrote(&sids[1])
        .expect("the flood's final wrote event");
    assert!(
        flood_lines <= wrote,
        "the client got {flood_lines} lines, the worker wrote {wrote}"
    );
    assert!(worker.errors().is_empty(), "{:?}", worker.errors());
    assert_exit_0(&mut tether);
    // SPEC 8: all of it (every client's remaining lines and EOF included)
    // within drain_timeout.
    assert_within_deadline(
        "sessions ended and exit after SIGTERM",
        signalled.elapsed(),
        drain_timeout,
    );
}

// ---------------------------------------------------------------- check / run

/// Runs `tether ARGS` to its exit (hang guard); status, stdout, stderr.
fn tether_cmd(args: &[&str], dir: &Path) -> (ExitStatus, String, String) {
    let mut child = Command::new(tether_bin())
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tether");
    let deadline = Instant::now() + EXIT_GUARD;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            let mut out = String::new();
            let mut err = String::new();
            child
                .stdout
                .take()
                .expect("stdout")
                .read_to_string(&mut out)
                .expect("read stdout");
            child
                .stderr
                .take()
                .expect("stderr")
                .read_to_string(&mut err)
                .expect("read stderr");
            return (status, out, err);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tether {args:?} did not exit within {EXIT_GUARD:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A file with six errors, one per line listed in [`BAD_LINES`].
fn bad_config(listen: SocketAddr, admin: SocketAddr, origin: SocketAddr) -> String {
    format!(
        "[server]\n\
         listen = [\"{listen}\"]\n\
         admin_listen = \"{admin}\"\n\
         idle_timeout = \"soon\"\n\
         bogus_key = 1\n\
         max_connections = \"many\"\n\
         \n\
         [[vhost]]\n\
         hosts = [\"a.test\"]\n\
         origin = \"http://{origin}\"\n\
         max_sessions = 5\n\
         \n\
         [vhost.persistent]\n\
         enabled = true\n\
         max_line = \"lots\"\n\
         \n\
         [[vhost]]\n\
         hosts = [\"b.test\", \"a.test\"]\n\
         origin = \"http://{origin}\"\n"
    )
}

/// Lines of [`bad_config`] that hold an error: a bad duration, an unknown
/// key, a wrong type, a key in the wrong table, a bad size, a duplicate
/// host.
const BAD_LINES: [u32; 6] = [4, 5, 6, 11, 15, 18];

/// The `FILE:LINE:COLUMN: sentence` lines of `stderr` for `file`: (line,
/// column, sentence).
fn error_lines(stderr: &str, file: &str) -> Vec<(u32, u32, String)> {
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(file)?.strip_prefix(':')?;
            let mut parts = rest.splitn(3, ':');
            let line = parts.next()?.parse().ok()?;
            let col = parts.next()?.parse().ok()?;
            let sentence = parts.next()?.strip_prefix(' ')?.trim().to_string();
            Some((line, col, sentence))
        })
        .collect()
}

#[test]
fn check_reports_every_error_and_exits_1() {
    let dir = temp_dir();
    let origin = TcpListener::bind("127.0.0.1:0").expect("bind origin");
    origin.set_nonblocking(true).expect("nonblocking");
    let (listen, admin) = (addr(free_port()), addr(free_port()));
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        bad_config(listen, admin, origin.local_addr().unwrap()),
    )
    .unwrap();
    let file_s = file.to_str().unwrap();

    let (status, out, err) = tether_cmd(&["check", "-c", file_s], dir.path());
    assert_eq!(
        status.code(),
        Some(1),
        "SPEC 1: exit 1 on errors; stderr:\n{err}"
    );
    assert!(!out.contains("ok"), "no ok on a bad file: {out}");
    let errors = error_lines(&err, file_s);
    let lines: Vec<u32> = errors.iter().map(|e| e.0).collect();
    assert_eq!(
        lines, BAD_LINES,
        "SPEC 1: every error as FILE:LINE:COLUMN: sentence, one per line; stderr:\n{err}"
    );
    for (line, col, sentence) in &errors {
        assert!(*col >= 1, "line {line}: column {col}");
        assert!(sentence.len() > 5, "line {line}: sentence {sentence:?}");
    }
    assert_eq!(
        err.lines().filter(|l| !l.trim().is_empty()).count(),
        errors.len(),
        "only error lines on stderr:\n{err}"
    );

    // After a TOML syntax error only that one is printed.
    let syntax = dir.path().join("syntax.toml");
    std::fs::write(
        &syntax,
        "[server]\nbogus = 1\nlisten = [\"127.0.0.1:1\"\n[[vhost]]\nhosts = 3\n",
    )
    .unwrap();
    let syntax_s = syntax.to_str().unwrap();
    let (status, _, err) = tether_cmd(&["check", "-c", syntax_s], dir.path());
    assert_eq!(status.code(), Some(1), "{err}");
    let errors = error_lines(&err, syntax_s);
    assert_eq!(
        errors.len(),
        1,
        "SPEC 1: after a TOML syntax error only that one is printed:\n{err}"
    );
    assert!((3..=4).contains(&errors[0].0), "{err}");

    // A good file: 0 and "ok", nothing bound, no upstream contacted.
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        config(
            &server(&[listen], admin, ""),
            &[plain_vhost(
                &["a.test"],
                &format!("http://{}", origin.local_addr().unwrap()),
            )],
        ),
    )
    .unwrap();
    let (status, out, err) = tether_cmd(&["check", "-c", good.to_str().unwrap()], dir.path());
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(
        out.contains("ok"),
        "SPEC 1: check prints ok: {out:?} {err:?}"
    );
    match origin.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("SPEC 1: check contacted the upstream: {other:?}"),
    }
    TcpListener::bind(listen).expect("the listen port is free after check");
}

#[test]
fn run_with_bad_config_exits_64_without_binding() {
    let dir = temp_dir();
    let origin = TcpListener::bind("127.0.0.1:0").expect("bind origin");
    origin.set_nonblocking(true).expect("nonblocking");
    // The listen port is held: had tether bound before checking, it would
    // fail on the bind instead of on the config.
    let holder = TcpListener::bind("127.0.0.1:0").expect("bind holder");
    holder.set_nonblocking(true).expect("nonblocking");
    let listen = holder.local_addr().unwrap();
    let admin = addr(free_port());
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        bad_config(listen, admin, origin.local_addr().unwrap()),
    )
    .unwrap();
    let file_s = file.to_str().unwrap();

    let (_, _, check_err) = tether_cmd(&["check", "-c", file_s], dir.path());
    let check_errors = error_lines(&check_err, file_s);
    assert_eq!(check_errors.len(), BAD_LINES.len(), "{check_err}");

    let (status, _, err) = tether_cmd(&["run", "-c", file_s], dir.path());
    assert_eq!(
        status.code(),
        Some(64),
        "SPEC 1: run refuses a bad file with exit 64; stderr:\n{err}"
    );
    assert_eq!(
        error_lines(&err, file_s),
        check_errors,
        "SPEC 1: run prints the same lines as check; stderr:\n{err}"
    );
    TcpListener::bind(admin).expect("SPEC 1: the admin port stays free");
    match holder.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("a connection reached the held listen port: {other:?}"),
    }
    match origin.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("run with a bad file contacted the upstream: {other:?}"),
    }

    // With the port free: same refusal, and the port is still free.
    drop(holder);
    let (status, _, err) = tether_cmd(&["run", "-c", file_s], dir.path());
    assert_eq!(status.code(), Some(64), "{err}");
    TcpListener::bind(listen).expect("SPEC 1: the listen port stays free");
}
