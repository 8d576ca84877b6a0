//! The cluster of SPEC 11 with real parts: a real `nats-server`, several
//! `tether` processes, the real `line_worker`. A session opened on one
//! instance is resumed, pushed and ended through the others; an instance
//! killed loses only its own sessions (410/4410 elsewhere, promptly); NATS
//! stopped mid-run leaves local work and relayed resumes working; the peer
//! listener refuses a wrong token and garbage.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tether_tests::nats::NatsServer;
use tether_tests::session::{
    delete, open, resume, resume_ok, session_vhost, without_date, LineWorker, Opened, HOST, WAIT,
};
use tether_tests::websocket::{OP_BINARY, OP_CLOSE, OP_TEXT};
use tether_tests::{free_port, metric, wait_for, RawConn, Response, Signal, Tether, WsClient};

const WORKER: &str = env!("CARGO_BIN_EXE_line_worker");
const TOKEN: &str = "admin-s3cret";
const PEER_TOKEN: &str = "the-cluster-s3cret";
/// SPEC 11: an instance silent for 5 s is gone; its sessions' resumes get
/// 410 "within a few seconds" once it is gone or unreachable.
const GONE_WITHIN: Duration = Duration::from_secs(10);

/// A config for instance `node` of a cluster on `nats`.
fn config(node: &str, nats: &str, worker: &LineWorker, peer_port: u16, peer_token: &str) -> String {
    config_with(node, nats, worker, peer_port, peer_token, "", "")
}

/// The same with `server_extra` lines in `[server]` and `vhost_extra` in
/// the session vhost's `[vhost.persistent]`.
fn config_with(
    node: &str,
    nats: &str,
    worker: &LineWorker,
    peer_port: u16,
    peer_token: &str,
    server_extra: &str,
    vhost_extra: &str,
) -> String {
    let cluster = format!(
        "[cluster]\nnode = \"{node}\"\nnats = [\"{nats}\"]\npeer_listen = \"127.0.0.1:{peer_port}\"\npeer_token = \"{peer_token}\"\n"
    );
    Tether::config(
        &format!("admin_token = \"{TOKEN}\"\norigin_connect_timeout = \"1s\"\n{server_extra}"),
        &[
            session_vhost(
                HOST,
                &worker.url(),
                &[worker.url()],
                &format!("resume_grace = \"60s\"\n{vhost_extra}"),
            ),
            cluster,
        ],
    )
}

struct Cluster {
    nats: NatsServer,
    worker: LineWorker,
    nodes: Vec<Tether>,
    peer_ports: Vec<u16>,
}

impl Cluster {
    /// NATS, one worker, and `n` instances `n0`, `n1`, ... that all see
    /// each other.
    fn start(n: usize) -> Cluster {
        Cluster::start_with(n, "", "")
    }

    /// [`Cluster::start`] with more settings for `[server]` and for the
    /// session vhost.
    fn start_with(n: usize, server_extra: &str, vhost_extra: &str) -> Cluster {
        let nats = NatsServer::start();
        let worker = LineWorker::start(WORKER, "w");
        let mut nodes = Vec::new();
        let mut peer_ports = Vec::new();
        for i in 0..n {
            let port = free_port();
            nodes.push(Tether::start(&config_with(
                &format!("n{i}"),
                &nats.url(),
                &worker,
                port,
                PEER_TOKEN,
                server_extra,
                vhost_extra,
            )));
            peer_ports.push(port);
        }
        let c = Cluster {
            nats,
            worker,
            nodes,
            peer_ports,
        };
        c.wait_nodes(n);
        c
    }

    fn admin(&self, i: usize) -> SocketAddr {
        self.nodes[i].admin_addr().expect("admin listener")
    }

    fn metric(&self, i: usize, series: &str) -> f64 {
        metric(self.admin(i), series).unwrap_or(0.0)
    }

    /// Waits until every running instance counts `n` nodes.
    fn wait_nodes(&self, n: usize) {
        for i in 0..self.nodes.len() {
            wait_for(&format!("instance {i} to see {n} nodes"), WAIT, || {
                (metric(self.admin(i), "tether_cluster_nodes") == Some(n as f64)).then_some(())
            });
        }
    }

    fn call(&self, i: usize, method: &str, path: &str, body: &[u8]) -> Response {
        let auth = format!("Bearer {TOKEN}");
        RawConn::connect(self.admin(i)).request(
            method,
            path,
            "admin",
            &[("Authorization", auth.as_str())],
            body,
        )
    }
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

#[test]
fn cluster_session_ids_end_with_the_owner_node() {
    let c = Cluster::start(2);
    for i in 0..2 {
        let o = open(c.nodes[i].addr(), "/echo.pphp");
        assert_eq!(o.sid.len(), 34, "{}", o.sid);
        assert!(o.sid.ends_with(&format!("n{i}")), "{}", o.sid);
    }
    assert_eq!(c.metric(0, "tether_cluster_nats_connected"), 1.0);
}

/// Native resumes land on every instance in turn, after clean reads and
/// after drops with a line in flight: every line once and in order both
/// ways, the worker sees one connection and no EOF.
#[test]
fn native_resumes_through_any_instance_are_served_by_the_owner() {
    let c = Cluster::start(3);
    let mut o = open(c.nodes[0].addr(), "/echo.pphp");
    let sid = o.sid.clone();
    let rounds = 30u64;
    for i in 1..=rounds {
        o.chan.send(format!("c{i}\n").as_bytes());
        let received = if i % 2 == 0 {
            assert_eq!(o.chan.line(), format!("{i} c{i}\n"));
            i
        } else {
            // The echo is in flight when the connection drops: replayed.
            c.worker
                .wait_event("the line", |e| e == format!("line {sid} {i}"));
            i - 1
        };
        o.chan.reset();
        let via = (i % 3) as usize;
        o = resume_ok(c.nodes[via].addr(), "/echo.pphp", &sid, received);
        assert_eq!(
            o.head.header("session-received"),
            Some(i.to_string().as_str()),
            "resume {i} via n{via}"
        );
        if received < i {
            assert_eq!(o.chan.line(), format!("{i} c{i}\n"), "replayed via n{via}");
        }
    }
    o.chan.send(b"last\n");
    assert_eq!(o.chan.line(), format!("{} last\n", rounds + 1));
    assert_eq!(c.worker.conns(&sid), 1, "{:#?}", c.worker.events_of(&sid));
    assert!(!c
        .worker
        .events_of(&sid)
        .iter()
        .any(|e| e.starts_with("eof ")));
    assert!(c.worker.errors().is_empty(), "{:#?}", c.worker.errors());
    // Counted by the owner as its resumes, by the others as relayed.
    assert_eq!(
        c.metric(0, "tether_resumes_total{vhost=\"sess.test\",result=\"ok\"}"),
        rounds as f64
    );
    for i in 1..3 {
        assert_eq!(
            c.metric(
                i,
                "tether_cluster_forwarded_total{kind=\"resume\",result=\"ok\"}"
            ),
            (rounds / 3) as f64,
            "n{i}"
        );
    }
}

fn ws_upgrade(addr: SocketAddr) -> WsClient {
    let (mut ws, _) = WsClient::connect(
        addr,
        HOST,
        "/echo.pphp?initial=0",
        &[("Sec-WebSocket-Protocol", "persistent")],
    )
    .unwrap_or_else(|r| panic!("no 101:\n{}{}", r.head_text(), r.body_text()));
    ws.conn().set_read_timeout(WAIT);
    ws
}

fn message(ws: &mut WsClient) -> (u8, Vec<u8>) {
    let f = ws.read_message().expect("a WebSocket message");
    (f.opcode, f.payload)
}

#[test]
fn websocket_resumes_through_any_instance_are_served_by_the_owner() {
    let c = Cluster::start(3);
    let mut ws = ws_upgrade(c.nodes[1].addr());
    ws.send_binary(b"");
    let (op, record) = message(&mut ws);
    assert_eq!(op, OP_BINARY);
    let record = String::from_utf8(record).unwrap();
    let sid = record
        .strip_prefix("sid=")
        .and_then(|r| r.split('&').next())
        .unwrap()
        .to_string();
    assert!(sid.ends_with("n1"), "{sid}");
    let rounds = 12u64;
    for i in 1..=rounds {
        ws.send_text(&format!("c{i}"));
        let received = if i % 2 == 0 {
            assert_eq!(
                message(&mut ws),
                (OP_TEXT, format!("{i} c{i}").into_bytes())
            );
            i
        } else {
            c.worker
                .wait_event("the line", |e| e == format!("line {sid} {i}"));
            i - 1
        };
        ws.reset();
        let via = ((i + 1) % 3) as usize;
        ws = ws_upgrade(c.nodes[via].addr());
        ws.send_binary(format!("sid={sid}&received={received}").as_bytes());
        let (op, record) = message(&mut ws);
        assert_eq!(
            (op, String::from_utf8_lossy(&record).into_owned()),
            (
                OP_BINARY,
                format!("sid={sid}&received={i}&status=200&initial=0")
            ),
            "resume {i} via n{via}"
        );
        if received < i {
            assert_eq!(
                message(&mut ws),
                (OP_TEXT, format!("{i} c{i}").into_bytes())
            );
        }
    }
    // A takeover through another instance closes the older relayed
    // connection with 4409, from the owner.
    let mut newer = ws_upgrade(c.nodes[0].addr());
    newer.send_binary(format!("sid={sid}&received={rounds}").as_bytes());
    assert_eq!(message(&mut newer).0, OP_BINARY);
    let (op, payload) = message(&mut ws);
    assert_eq!(op, OP_CLOSE);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 4409);
    newer.send_text("last");
    assert_eq!(
        message(&mut newer),
        (OP_TEXT, format!("{} last", rounds + 1).into_bytes())
    );
    assert_eq!(c.worker.conns(&sid), 1);
    assert!(c.worker.errors().is_empty(), "{:#?}", c.worker.errors());
}

#[test]
fn push_and_delete_through_a_non_owner_reach_the_owner() {
    let c = Cluster::start(3);
    let mut o = open(c.nodes[0].addr(), "/echo.pphp");
    let sid = o.sid.clone();
    let r = c.call(1, "POST", &format!("/v1/sessions/{sid}/lines"), b"pushed\n");
    assert_eq!(r.status, 204, "{}{}", r.head_text(), r.body_text());
    assert_eq!(o.chan.line(), "pushed\n");
    // An unknown session of a present owner: the owner's 404.
    let unknown = format!("{}n0", "A".repeat(32));
    assert_eq!(
        c.call(2, "POST", &format!("/v1/sessions/{unknown}/lines"), b"x\n")
            .status,
        404
    );
    // An owner that is not present: 404 too.
    let absent = format!("{}n9", "A".repeat(32));
    assert_eq!(
        c.call(2, "POST", &format!("/v1/sessions/{absent}/lines"), b"x\n")
            .status,
        404
    );
    // The push API's DELETE through n2 ends the worker side at n0.
    assert_eq!(
        c.call(2, "DELETE", &format!("/v1/sessions/{sid}"), b"")
            .status,
        204
    );
    c.worker.wait_eof(&sid);
    assert_eq!(
        c.call(1, "DELETE", &format!("/v1/sessions/{sid}"), b"")
            .status,
        404
    );

    // A client DELETE through n1 of a session of n2.
    let o2 = open(c.nodes[2].addr(), "/echo.pphp");
    let r = delete(c.nodes[1].addr(), HOST, "/echo.pphp", &o2.sid);
    assert_eq!(r.status, 204, "{}{}", r.head_text(), r.body_text());
    c.worker.wait_eof(&o2.sid);
    let again = delete(c.nodes[1].addr(), HOST, "/echo.pphp", &o2.sid);
    assert_eq!(again.status, 410);
    // On another vhost's host the owner does not know the session: 410.
    let o3 = open(c.nodes[2].addr(), "/echo.pphp");
    let other_host = delete(c.nodes[1].addr(), "other.test", "/echo.pphp", &o3.sid);
    assert_ne!(other_host.status, 204);
    assert!(
        c.metric(
            1,
            "tether_cluster_forwarded_total{kind=\"delete\",result=\"ok\"}"
        ) >= 1.0
    );
    assert!(
        c.metric(
            1,
            "tether_cluster_forwarded_total{kind=\"push\",result=\"ok\"}"
        ) >= 1.0
    );
}

/// SIGKILL one instance: its sessions get the identical 410 (and 4410)
/// through the others within a few seconds, never a hang; the others'
/// sessions lose nothing.
#[test]
fn a_killed_instance_loses_only_its_own_sessions() {
    let mut c = Cluster::start(3);
    let mut doomed = open(c.nodes[0].addr(), "/echo.pphp");
    doomed.chan.send(b"x\n");
    assert_eq!(doomed.chan.line(), "1 x\n");
    let doomed_sid = doomed.sid.clone();
    let mut kept = open(c.nodes[1].addr(), "/echo.pphp");
    let kept_sid = kept.sid.clone();
    kept.chan.send(b"a\n");
    assert_eq!(kept.chan.line(), "1 a\n");

    c.nodes[0].signal(Signal::Kill);
    let killed = Instant::now();
    // An unknown SessionID's 410 on n1, to compare with.
    let reference = gone(
        resume(c.nodes[1].addr(), "/echo.pphp", &"B".repeat(32), 0),
        "unknown",
    );
    for via in [1usize, 2] {
        let started = Instant::now();
        let r = gone(
            resume(c.nodes[via].addr(), "/echo.pphp", &doomed_sid, 1),
            "doomed",
        );
        assert!(started.elapsed() < Duration::from_secs(4), "a resume hung");
        assert_eq!(
            without_date(&r),
            without_date(&reference),
            "SPEC 4: one 410"
        );
    }
    // WebSocket: 4410 through a survivor.
    let mut ws = ws_upgrade(c.nodes[2].addr());
    ws.send_binary(format!("sid={doomed_sid}&received=1").as_bytes());
    let (op, payload) = message(&mut ws);
    assert_eq!(op, OP_CLOSE);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 4410);
    // Membership forgets it after its silence.
    c.nodes.remove(0);
    c.wait_nodes(2);
    assert!(killed.elapsed() < GONE_WITHIN, "{:?}", killed.elapsed());

    kept.chan.reset();
    let mut kept = resume_ok(c.nodes[1].addr(), "/echo.pphp", &kept_sid, 1);
    kept.chan.send(b"b\n");
    assert_eq!(kept.chan.line(), "2 b\n");
    assert_eq!(c.worker.conns(&kept_sid), 1);
}

/// NATS stopped mid-run: new sessions and local resumes go on, relayed
/// resumes go by the last membership, a remote push gets 503; NATS back:
/// remote pushes work again without restarting tether.
#[test]
fn nats_stopped_mid_run_then_back() {
    let mut c = Cluster::start(2);
    let mut remote = open(c.nodes[0].addr(), "/echo.pphp");
    let remote_sid = remote.sid.clone();
    c.nats.stop();
    wait_for("NATS seen down", WAIT, || {
        (c.metric(1, "tether_cluster_nats_connected") == 0.0).then_some(())
    });
    // New sessions and local resumes on n1.
    let mut local = open(c.nodes[1].addr(), "/echo.pphp");
    local.chan.send(b"a\n");
    assert_eq!(local.chan.line(), "1 a\n");
    local.chan.reset();
    let mut local = resume_ok(c.nodes[1].addr(), "/echo.pphp", &local.sid, 1);
    local.chan.send(b"b\n");
    assert_eq!(local.chan.line(), "2 b\n");
    // A relayed resume by the last membership, even past the 5 s silence.
    std::thread::sleep(Duration::from_secs(6));
    remote.chan.send(b"r\n");
    assert_eq!(remote.chan.line(), "1 r\n");
    remote.chan.reset();
    let mut remote = resume_ok(c.nodes[1].addr(), "/echo.pphp", &remote_sid, 1);
    remote.chan.send(b"s\n");
    assert_eq!(remote.chan.line(), "2 s\n");
    // A push for another instance's session: 503 with Retry-After: 1.
    let r = c.call(
        1,
        "POST",
        &format!("/v1/sessions/{remote_sid}/lines"),
        b"p\n",
    );
    assert_eq!(r.status, 503, "{}{}", r.head_text(), r.body_text());
    assert_eq!(r.header("retry-after"), Some("1"));
    // A local push does not wait on NATS.
    assert_eq!(
        c.call(
            1,
            "POST",
            &format!("/v1/sessions/{}/lines", local.sid),
            b"q\n"
        )
        .status,
        204
    );
    assert_eq!(local.chan.line(), "q\n");

    c.nats.restart();
    wait_for(
        "remote pushes to work again",
        Duration::from_secs(15),
        || {
            let r = c.call(
                1,
                "POST",
                &format!("/v1/sessions/{remote_sid}/lines"),
                b"p\n",
            );
            (r.status == 204).then_some(())
        },
    );
    assert_eq!(remote.chan.line(), "p\n");
    c.wait_nodes(2);
    wait_for("NATS seen up", WAIT, || {
        (c.metric(1, "tether_cluster_nats_connected") == 1.0).then_some(())
    });
}

/// A peer with a wrong token, and garbage, on the peer listener: refused,
/// counted, and nothing reaches a session.
#[test]
fn peer_listener_refuses_wrong_tokens_and_garbage() {
    let c = Cluster::start(1);
    let peer = SocketAddr::from(([127, 0, 0, 1], c.peer_ports[0]));
    // Garbage: closed, counted as protocol.
    let mut s = TcpStream::connect(peer).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut hello = [0u8; 46];
    s.read_exact(&mut hello).unwrap();
    assert!(hello.starts_with(b"TETHER-PEER/1\n"));
    s.write_all(b"GET / HTTP/1.1\r\nHost: sess.test\r\n\r\n")
        .unwrap();
    s.write_all(&[0u8; 64]).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "the peer listener answered garbage: {rest:?}"
    );
    wait_for("the refusal counted", WAIT, || {
        (c.metric(0, "tether_cluster_peer_refused_total{reason=\"protocol\"}") == 1.0).then_some(())
    });

    // An instance with another token: its relayed resumes are refused by
    // n0 (counted as token) and it answers 410.
    let mut o = open(c.nodes[0].addr(), "/echo.pphp");
    o.chan.send(b"a\n");
    assert_eq!(o.chan.line(), "1 a\n");
    let intruder = Tether::start(&config(
        "x1",
        &c.nats.url(),
        &c.worker,
        free_port(),
        "wrong-token",
    ));
    wait_for("the intruder to learn n0", WAIT, || {
        (metric(intruder.admin_addr().unwrap(), "tether_cluster_nodes") == Some(2.0)).then_some(())
    });
    gone(
        resume(intruder.addr(), "/echo.pphp", &o.sid, 1),
        "wrong token",
    );
    assert_eq!(
        c.metric(0, "tether_cluster_peer_refused_total{reason=\"token\"}"),
        1.0
    );
    // The session never saw it.
    o.chan.send(b"b\n");
    assert_eq!(o.chan.line(), "2 b\n");
    assert_eq!(
        c.metric(0, "tether_takeovers_total{vhost=\"sess.test\"}"),
        0.0
    );
}

/// SPEC 11: a second instance with a node name already running refuses to
/// start, exit 64.
#[test]
fn a_duplicate_node_refuses_to_start() {
    let c = Cluster::start(1);
    let dir = tether_tests::temp_dir();
    let path = dir.path().join("tether.toml");
    std::fs::write(
        &path,
        config("n0", &c.nats.url(), &c.worker, free_port(), PEER_TOKEN),
    )
    .unwrap();
    let out = std::process::Command::new(tether_tests::tether::tether_bin())
        .arg("run")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("n0"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// SPEC 11: "reached" means the owner completed the peer handshake. A
/// frozen owner (SIGSTOP: its kernel still accepts the connect) gives the
/// one 410 once `origin_connect_timeout` (1 s here) has run out, never a
/// hang; thawed, it serves the session again.
#[test]
fn a_frozen_owner_gives_410_after_the_connect_timeout() {
    let c = Cluster::start(2);
    let mut o = open(c.nodes[0].addr(), "/echo.pphp");
    o.chan.send(b"a\n");
    assert_eq!(o.chan.line(), "1 a\n");
    let sid = o.sid.clone();
    let pid = c.nodes[0].pid().to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, pid.as_str()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    let started = Instant::now();
    gone(
        resume(c.nodes[1].addr(), "/echo.pphp", &sid, 1),
        "frozen owner",
    );
    let took = started.elapsed();
    signal("-CONT");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "the 410 came after {took:?}, not after origin_connect_timeout"
    );
    assert_eq!(
        c.metric(
            1,
            "tether_cluster_forwarded_total{kind=\"resume\",result=\"error\"}"
        ),
        1.0
    );
    // The session itself is untouched: the client resumes it through n1.
    o.chan.reset();
    let mut o = resume_ok(c.nodes[1].addr(), "/echo.pphp", &sid, 1);
    o.chan.send(b"b\n");
    assert_eq!(o.chan.line(), "2 b\n");
}

/// SPEC 11: the owner applies its per-IP limits to the relayed client's
/// address. The owner allows 2 connections per address; the client holds
/// two to it already, so its resume through n1 is turned away by the
/// owner: `503` with `Retry-After: 1`, counted there.
#[test]
fn the_owner_applies_its_per_ip_limits_to_relayed_clients() {
    let nats = NatsServer::start();
    let worker = LineWorker::start(WORKER, "w");
    let owner = Tether::start(&config_with(
        "n0",
        &nats.url(),
        &worker,
        free_port(),
        PEER_TOKEN,
        "max_connections_per_ip = 2",
        "",
    ));
    let other = Tether::start(&config("n1", &nats.url(), &worker, free_port(), PEER_TOKEN));
    for t in [&owner, &other] {
        wait_for("the cluster to form", WAIT, || {
            (metric(t.admin_addr().unwrap(), "tether_cluster_nodes") == Some(2.0)).then_some(())
        });
    }
    let mut o = open(owner.addr(), "/echo.pphp");
    o.chan.send(b"a\n");
    assert_eq!(o.chan.line(), "1 a\n");
    let _second = TcpStream::connect(owner.addr()).unwrap();
    wait_for("two connections at the owner", WAIT, || {
        let series = format!("tether_connections_active{{listener=\"{}\"}}", owner.addr());
        (metric(owner.admin_addr().unwrap(), &series) == Some(2.0)).then_some(())
    });
    let r = match resume(other.addr(), "/echo.pphp", &o.sid, 1) {
        Ok(o) => panic!("resumed past the owner's limit:\n{}", o.head.head_text()),
        Err(r) => r,
    };
    assert_eq!(r.status, 503, "{}{}", r.head_text(), r.body_text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(
        metric(
            owner.admin_addr().unwrap(),
            "tether_limits_hit_total{kind=\"connections_per_ip\"}"
        ),
        Some(1.0)
    );
    // The session is untouched.
    o.chan.send(b"b\n");
    assert_eq!(o.chan.line(), "2 b\n");
}

/// Without `[cluster]` nothing changes: 32-character SessionIDs and no
/// cluster families. A bad `[cluster]` is a configuration error like any
/// other: `tether check` exit 1 and `run` exit 64, at FILE:LINE:COLUMN.
#[test]
fn no_cluster_table_means_a_single_instance_and_bad_ones_are_refused() {
    let worker = LineWorker::start(WORKER, "w");
    let single = Tether::start(&Tether::config(
        "",
        &[session_vhost(HOST, &worker.url(), &[worker.url()], "")],
    ));
    let o = open(single.addr(), "/echo.pphp");
    assert_eq!(o.sid.len(), 32, "{}", o.sid);
    assert_eq!(
        metric(single.admin_addr().unwrap(), "tether_cluster_nodes"),
        None
    );

    let dir = tether_tests::temp_dir();
    let path = dir.path().join("bad.toml");
    let text = config(
        "Node-1",
        "nats://127.0.0.1:4222",
        &worker,
        free_port(),
        PEER_TOKEN,
    );
    std::fs::write(&path, &text).unwrap();
    let line = text.lines().position(|l| l.starts_with("node =")).unwrap() + 1;
    let expected = format!("{}:{line}:8: node \"Node-1\"", path.display());
    for (command, code) in [("check", 1), ("run", 64)] {
        let out = std::process::Command::new(tether_tests::tether::tether_bin())
            .arg(command)
            .arg("-c")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{command}: {stderr}");
        assert!(stderr.contains(&expected), "{command}: {stderr}");
    }
}

/// SPEC 10 in a cluster: SIGUSR2 on the owner hands its sessions to a new
/// process of the same node (no duplicate-name refusal, the peer port
/// shared while both run); the attached client moves with its connection
/// and a later resume through another instance is relayed to the new
/// process.
#[test]
fn an_upgraded_owner_keeps_its_sessions_reachable_through_the_others() {
    let mut c = Cluster::start(2);
    let mut o = open(c.nodes[0].addr(), "/echo.pphp");
    o.chan.send(b"a\n");
    assert_eq!(o.chan.line(), "1 a\n");
    let sid = o.sid.clone();
    let up = c.nodes[0].upgrade(Duration::from_secs(30));
    assert!(up.old_exit.success(), "{:?}", up.old_exit);
    // The attached client moved with its connection.
    o.chan.send(b"b\n");
    assert_eq!(o.chan.line(), "2 b\n");
    o.chan.reset();
    let mut o = resume_ok(c.nodes[1].addr(), "/echo.pphp", &sid, 2);
    o.chan.send(b"c\n");
    assert_eq!(o.chan.line(), "3 c\n");
    assert_eq!(c.worker.conns(&sid), 1);
    assert!(!c
        .worker
        .events_of(&sid)
        .iter()
        .any(|e| e.starts_with("eof ")));
}

/// SPEC 10 and 11: resumes relayed by another instance while the owner
/// hands 3 000 sessions over are never `410`. The owner's old process hands
/// its peer listener over and accepts nothing on it once the new process
/// does; a relayed resume it reads for a session that has just left is
/// closed unanswered, and the relaying instance makes it again on a new
/// peer connection, which reaches the new process.
#[test]
fn resumes_relayed_during_the_owners_upgrade_are_never_410() {
    tether_tests::raise_fd_limit();
    let mut c = Cluster::start_with(
        2,
        "max_connections_per_ip = 30000",
        "max_sessions_per_ip = 30000\nmax_sessions_per_worker = 30000",
    );
    let owner = c.nodes[0].addr();
    let openers: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..750 {
                    open(owner, "/echo.pphp").chan.reset();
                }
            })
        })
        .collect();
    for t in openers {
        t.join().expect("opening idle sessions");
    }
    let mut o = open(owner, "/echo.pphp");
    o.chan.send(b"a\n");
    assert_eq!(o.chan.line(), "1 a\n");
    let sid = o.sid.clone();
    o.chan.reset();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let resumer = {
        let (via, sid, stop) = (c.nodes[1].addr(), sid.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match resume(via, "/echo.pphp", &sid, 1) {
                    Ok(o) => {
                        statuses.push(200);
                        o.chan.reset();
                    }
                    Err(r) => statuses.push(r.status),
                }
            }
            statuses
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let up = c.nodes[0].upgrade(Duration::from_secs(60));
    assert!(up.old_exit.success(), "{:?}", up.old_exit);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let statuses = resumer.join().expect("the resume loop");
    let refused: Vec<u16> = statuses.iter().copied().filter(|s| *s != 200).collect();
    assert!(
        refused.is_empty(),
        "relayed resumes across a handover of {:?} sessions: {} of {} not 200: {:?}",
        up.sessions(),
        refused.len(),
        statuses.len(),
        &refused[..refused.len().min(5)]
    );
    let mut o = resume_ok(c.nodes[1].addr(), "/echo.pphp", &sid, 1);
    o.chan.send(b"b\n");
    assert_eq!(o.chan.line(), "2 b\n");
    assert_eq!(c.worker.conns(&sid), 1, "one worker connection");
    eprintln!(
        "figures: {} resumes relayed during a handover of {:?} sessions, all 200",
        statuses.len(),
        up.sessions()
    );
}
