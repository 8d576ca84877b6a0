//! The deploy/cluster/ recipe as written (ports moved to free ones): a real
//! `nats-server`, three tether instances and HAProxy in TCP round robin in
//! front, the real `line_worker` behind. Native and WebSocket sessions are
//! opened through HAProxy and dropped (reset, or left half-open) and
//! resumed through it again and again, so that resumes land on every
//! instance; every line arrives exactly once and in order on both sides,
//! and each worker connection sees no second connection and no EOF. Then
//! the relayed-resume latency is measured against the owner's (printed,
//! never asserted).

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Instant;

use tether_tests::nats::NatsServer;
use tether_tests::process::{ChildGuard, StopWith};
use tether_tests::session::{open_with, resume, LineWorker, Opened, HOST, WAIT};
use tether_tests::websocket::{OP_BINARY, OP_TEXT};
use tether_tests::{
    free_port, metric, temp_dir, wait_for, wait_until_accepts, RawConn, Tether, WsClient,
    STARTUP_TIMEOUT,
};

const WORKER: &str = env!("CARGO_BIN_EXE_line_worker");
const INSTANCES: usize = 3;
const NATIVE_SESSIONS: usize = 6;
const WS_SESSIONS: usize = 4;
const ROUNDS: u64 = 9;

fn read_repo(path: &str) -> String {
    let file = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// `text` with each `(from, to)` replaced; a `from` missing from the file
/// fails the test, so that the recipe cannot drift from what is tested.
fn substitute(what: &str, text: &str, pairs: &[(String, String)]) -> String {
    let mut out = text.to_owned();
    for (from, to) in pairs {
        assert!(
            out.contains(from.as_str()),
            "{what} no longer holds {from:?}"
        );
        out = out.replace(from.as_str(), to);
    }
    out
}

struct Recipe {
    _nats: NatsServer,
    worker: LineWorker,
    nodes: Vec<Tether>,
    _haproxy: ChildGuard,
    _dir: tether_tests::TempDir,
    front: SocketAddr,
}

fn start_recipe() -> Recipe {
    let nats = NatsServer::start();
    let worker = LineWorker::start(WORKER, "w");
    let listen: Vec<u16> = (0..INSTANCES).map(|_| free_port()).collect();
    let mut nodes = Vec::new();
    for i in 1..=INSTANCES {
        let text = read_repo(&format!("deploy/cluster/gw{i}.toml"));
        let config = substitute(
            &format!("gw{i}.toml"),
            &text,
            &[
                (
                    format!("127.0.0.1:808{i}"),
                    format!("127.0.0.1:{}", listen[i - 1]),
                ),
                (
                    format!("127.0.0.1:990{i}"),
                    format!("127.0.0.1:{}", free_port()),
                ),
                (
                    format!("127.0.0.1:740{i}"),
                    format!("127.0.0.1:{}", free_port()),
                ),
                ("nats://127.0.0.1:4222".into(), nats.url()),
                ("http://127.0.0.1:9000".into(), worker.url()),
                ("example.test".into(), HOST.into()),
            ],
        );
        nodes.push(Tether::start(&config));
    }
    for n in &nodes {
        wait_for("the cluster to form", WAIT, || {
            (metric(n.admin_addr().unwrap(), "tether_cluster_nodes") == Some(INSTANCES as f64))
                .then_some(())
        });
    }
    let front = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut pairs = vec![("127.0.0.1:8080".to_string(), front.to_string())];
    for (i, port) in listen.iter().enumerate() {
        pairs.push((
            format!("127.0.0.1:808{}", i + 1),
            format!("127.0.0.1:{port}"),
        ));
    }
    let cfg = substitute(
        "haproxy.cfg",
        &read_repo("deploy/cluster/haproxy.cfg"),
        &pairs,
    );
    let dir = temp_dir();
    let file = dir.path().join("haproxy.cfg");
    std::fs::write(&file, cfg).unwrap();
    let bin = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
        .unwrap_or("haproxy");
    let mut cmd = Command::new(bin);
    cmd.arg("-db").arg("-f").arg(&file).stdout(Stdio::null());
    let mut haproxy = ChildGuard::spawn(
        "haproxy",
        cmd,
        &dir.path().join("haproxy.stderr"),
        StopWith::Kill,
    );
    wait_until_accepts(front, STARTUP_TIMEOUT, || haproxy.check_alive())
        .unwrap_or_else(|e| panic!("haproxy did not start: {e}"));
    Recipe {
        _nats: nats,
        worker,
        nodes,
        _haproxy: haproxy,
        _dir: dir,
        front,
    }
}

/// A native client doing what a client library does: it counts the echoes
/// it got, and after a resume resends its lines after the gateway's count.
struct Native {
    o: Opened,
    sid: String,
    sent: u64,
    got: u64,
    duplicates: u64,
    losses: u64,
}

impl Native {
    fn read_to(&mut self, n: u64) {
        while self.got < n {
            let line = self.o.chan.line();
            let k: u64 = line.split(' ').next().unwrap().parse().unwrap();
            if k <= self.got {
                self.duplicates += 1;
                continue;
            }
            if k != self.got + 1 || line != format!("{k} c{k}\n") {
                self.losses += 1;
            }
            self.got = k;
        }
    }

    fn resume(&mut self, front: SocketAddr, parked: &mut Vec<Opened>, half_open: bool) {
        let o = resume(front, "/echo.pphp", &self.sid, self.got).unwrap_or_else(|r| {
            panic!(
                "resume of {} at {}: {}{}",
                self.sid,
                self.got,
                r.head_text(),
                r.body_text()
            )
        });
        let old = std::mem::replace(&mut self.o, o);
        if half_open {
            parked.push(old);
        } else {
            old.chan.reset();
        }
        let delivered: u64 = self
            .o
            .head
            .header("session-received")
            .unwrap()
            .parse()
            .unwrap();
        for k in delivered + 1..=self.sent {
            self.o.chan.send(format!("c{k}\n").as_bytes());
        }
    }
}

struct Ws {
    ws: WsClient,
    sid: String,
    sent: u64,
    got: u64,
    duplicates: u64,
    losses: u64,
}

fn ws_connect(front: SocketAddr) -> WsClient {
    let (mut ws, _) = WsClient::connect(
        front,
        HOST,
        "/echo.pphp?initial=0",
        &[("Sec-WebSocket-Protocol", "persistent")],
    )
    .unwrap_or_else(|r| panic!("no 101:\n{}{}", r.head_text(), r.body_text()));
    ws.conn().set_read_timeout(WAIT);
    ws
}

fn ws_record(ws: &mut WsClient) -> String {
    let f = ws.read_message().expect("a WebSocket message");
    assert_eq!(
        f.opcode,
        OP_BINARY,
        "{:?}",
        String::from_utf8_lossy(&f.payload)
    );
    String::from_utf8(f.payload).unwrap()
}

impl Ws {
    fn read_to(&mut self, n: u64) {
        while self.got < n {
            let f = self.ws.read_message().expect("a text frame");
            assert_eq!(f.opcode, OP_TEXT);
            let text = String::from_utf8(f.payload).unwrap();
            let k: u64 = text.split(' ').next().unwrap().parse().unwrap();
            if k <= self.got {
                self.duplicates += 1;
                continue;
            }
            if k != self.got + 1 || text != format!("{k} c{k}") {
                self.losses += 1;
            }
            self.got = k;
        }
    }

    fn resume(&mut self, front: SocketAddr, parked: &mut Vec<WsClient>, half_open: bool) {
        let mut ws = ws_connect(front);
        ws.send_binary(format!("sid={}&received={}", self.sid, self.got).as_bytes());
        let record = ws_record(&mut ws);
        let delivered: u64 = record
            .strip_prefix(&format!("sid={}&received=", self.sid))
            .and_then(|r| r.split('&').next())
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("resume record {record:?}"));
        let old = std::mem::replace(&mut self.ws, ws);
        if half_open {
            parked.push(old);
        } else {
            old.reset();
        }
        for k in delivered + 1..=self.sent {
            self.ws.send_text(&format!("c{k}"));
        }
    }
}

#[test]
fn sessions_through_haproxy_round_robin_survive_drops_on_every_instance() {
    let r = start_recipe();
    let front = r.front;
    let mut natives: Vec<Native> = (0..NATIVE_SESSIONS)
        .map(|_| {
            let o = open_with(front, HOST, "/echo.pphp", &[])
                .unwrap_or_else(|r| panic!("open: {}{}", r.head_text(), r.body_text()));
            Native {
                sid: o.sid.clone(),
                o,
                sent: 0,
                got: 0,
                duplicates: 0,
                losses: 0,
            }
        })
        .collect();
    let mut wss: Vec<Ws> = (0..WS_SESSIONS)
        .map(|_| {
            let mut ws = ws_connect(front);
            ws.send_binary(b"");
            let record = ws_record(&mut ws);
            let sid = record
                .strip_prefix("sid=")
                .and_then(|r| r.split('&').next())
                .unwrap()
                .to_string();
            Ws {
                ws,
                sid,
                sent: 0,
                got: 0,
                duplicates: 0,
                losses: 0,
            }
        })
        .collect();
    // Round robin spreads the opens: every instance owns sessions.
    for i in 1..=INSTANCES {
        let owned = natives
            .iter()
            .map(|n| &n.sid)
            .chain(wss.iter().map(|w| &w.sid));
        assert!(
            owned.clone().any(|s| s.ends_with(&format!("gw{i}"))),
            "no session on gw{i}"
        );
    }
    let mut parked_native = Vec::new();
    let mut parked_ws = Vec::new();
    let mut drops = 0u64;
    for round in 1..=ROUNDS {
        for n in natives.iter_mut() {
            n.sent += 1;
            n.o.chan.send(format!("c{}\n", n.sent).as_bytes());
            if round % 3 == 0 {
                n.read_to(n.sent);
            }
            n.resume(front, &mut parked_native, round % 2 == 1);
            drops += 1;
        }
        for w in wss.iter_mut() {
            w.sent += 1;
            w.ws.send_text(&format!("c{}", w.sent));
            if round % 3 == 0 {
                w.read_to(w.sent);
            }
            w.resume(front, &mut parked_ws, round % 2 == 1);
            drops += 1;
        }
    }
    for n in natives.iter_mut() {
        n.read_to(n.sent);
    }
    for w in wss.iter_mut() {
        w.read_to(w.sent);
    }
    let sids: Vec<String> = natives
        .iter()
        .map(|n| n.sid.clone())
        .chain(wss.iter().map(|w| w.sid.clone()))
        .collect();
    let duplicates: u64 = natives.iter().map(|n| n.duplicates).sum::<u64>()
        + wss.iter().map(|w| w.duplicates).sum::<u64>();
    let losses: u64 =
        natives.iter().map(|n| n.losses).sum::<u64>() + wss.iter().map(|w| w.losses).sum::<u64>();

    // Each worker connection: one connection, no EOF, every client line
    // once and in order (echo numbers are the worker's own count).
    for sid in &sids {
        assert_eq!(
            r.worker.conns(sid),
            1,
            "{sid}: {:#?}",
            r.worker.events_of(sid)
        );
        assert!(
            !r.worker
                .events_of(sid)
                .iter()
                .any(|e| e.starts_with("eof ")),
            "{sid}"
        );
        r.worker
            .wait_event("the last line", |e| e == format!("line {sid} {ROUNDS}"));
    }
    assert!(r.worker.errors().is_empty(), "{:#?}", r.worker.errors());

    let admin = |i: usize| r.nodes[i].admin_addr().unwrap();
    let m = |i: usize, s: &str| metric(admin(i), s).unwrap_or(0.0);
    let mut relayed = Vec::new();
    let mut answered = Vec::new();
    for i in 0..INSTANCES {
        relayed.push(m(
            i,
            "tether_cluster_forwarded_total{kind=\"resume\",result=\"ok\"}",
        ));
        answered.push(m(
            i,
            "tether_resumes_total{vhost=\"sess.test\",result=\"ok\"}",
        ));
    }
    eprintln!(
        "cluster chaos: {INSTANCES} instances behind HAProxy round robin, {} sessions ({NATIVE_SESSIONS} native, {WS_SESSIONS} websocket), {drops} drops (half reset, half half-open), resumes answered by owner per instance {answered:?}, relayed from each instance to an owner {relayed:?}, losses {losses}, duplicates {duplicates}",
        sids.len()
    );
    assert_eq!(losses, 0);
    assert_eq!(duplicates, 0);
    assert_eq!(answered.iter().sum::<f64>(), drops as f64);
    for (i, n) in relayed.iter().enumerate() {
        assert!(
            *n > 0.0,
            "no resume landed on gw{} for another owner",
            i + 1
        );
    }

    // Push API and admin DELETE through every admin listener.
    let sid = &natives[0].sid.clone();
    for i in 0..INSTANCES {
        let resp = RawConn::connect(admin(i)).request(
            "POST",
            &format!("/v1/sessions/{sid}/lines"),
            "admin",
            &[("Authorization", "Bearer change-me-admin-token")],
            format!("pushed via gw{}\n", i + 1).as_bytes(),
        );
        assert_eq!(resp.status, 204, "{}{}", resp.head_text(), resp.body_text());
        assert_eq!(
            natives[0].o.chan.line(),
            format!("pushed via gw{}\n", i + 1)
        );
    }
    let owner = sid.chars().last().unwrap().to_digit(10).unwrap() as usize - 1;
    let other = (owner + 1) % INSTANCES;
    let resp = RawConn::connect(admin(other)).request(
        "DELETE",
        &format!("/v1/sessions/{sid}"),
        "admin",
        &[("Authorization", "Bearer change-me-admin-token")],
        b"",
    );
    assert_eq!(resp.status, 204);
    r.worker.wait_eof(sid);

    relayed_resume_latency(&r);
}

/// Resume latency (request sent to answer head read) straight to the
/// owner and through another instance; printed for docs/performance.md.
fn relayed_resume_latency(r: &Recipe) {
    let owner = r.nodes[0].addr();
    let other = r.nodes[1].addr();
    let o = tether_tests::session::open(owner, "/echo.pphp");
    let sid = o.sid.clone();
    let mut keep = o;
    let mut measure = |via: SocketAddr| {
        let mut times = Vec::new();
        for _ in 0..200 {
            let started = Instant::now();
            let next = resume(via, "/echo.pphp", &sid, 0)
                .unwrap_or_else(|r| panic!("resume: {}{}", r.head_text(), r.body_text()));
            times.push(started.elapsed());
            keep = next;
        }
        times.sort();
        (times[times.len() / 2], times[times.len() * 99 / 100])
    };
    let (own50, own99) = measure(owner);
    let (rel50, rel99) = measure(other);
    eprintln!(
        "resume latency on loopback (200 each, takeover of the previous connection included): via the owner p50 {own50:?} p99 {own99:?}; via another instance p50 {rel50:?} p99 {rel99:?}"
    );
    drop(keep);
    cpu_per_line(r);
}

/// CPU time (user + system) of a process so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which is in parentheses): utime is the
    // 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

/// tether CPU per echo round trip (one line each way), attached straight
/// to the owner and relayed through another instance: all three
/// instances' CPU together. Printed for docs/performance.md.
fn cpu_per_line(r: &Recipe) {
    const TRIPS: u64 = 3000;
    let ticks = || r.nodes.iter().map(|n| cpu_ticks(n.pid())).sum::<u64>();
    let mut o = tether_tests::session::open(r.nodes[0].addr(), "/echo.pphp");
    let sid = o.sid.clone();
    let trips = |o: &mut Opened, from: u64| {
        let before = ticks();
        for k in from..from + TRIPS {
            o.chan.send(format!("c{k}\n").as_bytes());
            assert_eq!(o.chan.line(), format!("{k} c{k}\n"));
        }
        // Clock ticks are 10 ms: microseconds per round trip.
        (ticks() - before) as f64 * 10_000.0 / TRIPS as f64
    };
    let local = trips(&mut o, 1);
    o.chan.reset();
    let mut o = resume(r.nodes[1].addr(), "/echo.pphp", &sid, TRIPS)
        .unwrap_or_else(|r| panic!("resume: {}{}", r.head_text(), r.body_text()));
    let relayed = trips(&mut o, TRIPS + 1);
    eprintln!(
        "tether CPU per echo round trip (one line each way, {TRIPS} trips, all instances): attached to the owner {local:.1} µs; relayed through another instance {relayed:.1} µs"
    );
}

#[test]
fn recipe_configs_pass_check() {
    for i in 1..=INSTANCES {
        let file = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../deploy/cluster/gw{i}.toml"));
        let out = Command::new(tether_tests::tether::tether_bin())
            .args(["check", "-c"])
            .arg(&file)
            .output()
            .expect("run tether check");
        assert!(
            out.status.success(),
            "gw{i}.toml: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
